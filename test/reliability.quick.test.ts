/**
 * Runs the reliability harness in its quick form (`npm run reliability:quick`)
 * as part of `npm test`: every case must survive every try with nothing
 * leaked. The harness runs in its own process, so its leak probes (fds,
 * children, heap) see only what it did itself.
 */
import { describe, expect, it } from "@effect/vitest"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { Summary } from "./reliability/index.js"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")

const runQuick = (jsonFile: string) =>
  new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = cp.spawn(
      path.join(root, "node_modules", ".bin", "tsx"),
      ["test/reliability/index.ts", "--quick", `--json=${jsonFile}`],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] }
    )
    let output = ""
    child.stdout.on("data", (d) => (output += d))
    child.stderr.on("data", (d) => (output += d))
    const timer = setTimeout(() => child.kill("SIGTERM"), 170_000)
    child.on("close", (code) => {
      clearTimeout(timer)
      resolve({ code, output })
    })
  })

describe("reliability harness (quick)", () => {
  it("every case survives every try and leaks nothing", { timeout: 180_000 }, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eq-relq-"))
    try {
      const jsonFile = path.join(dir, "summary.json")
      const { code, output } = await runQuick(jsonFile)
      // The harness's own report is the most useful failure message.
      if (code !== 0 || !fs.existsSync(jsonFile)) expect.fail(`harness exited with ${code}:\n${output.slice(-6000)}`)
      const summary = JSON.parse(fs.readFileSync(jsonFile, "utf8")) as Summary
      expect(summary.ok).toBe(true)
      expect(summary.cases.map((c) => c.name)).toHaveLength(7)
      for (const c of summary.cases) {
        expect({ case: c.name, survived: c.survived, leaked: c.leaked, failures: c.failures }).toEqual({
          case: c.name,
          survived: c.tried,
          leaked: 0,
          failures: []
        })
        expect(c.tried).toBeGreaterThan(0)
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
