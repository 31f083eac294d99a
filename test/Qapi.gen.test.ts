/**
 * `npm run qapi:gen` is deterministic and the committed `src/generated/` is
 * what the installed QEMU gives: regenerate into a temp dir (introspection
 * from the real QEMU; the guest agent's schema from its snapshot, since the
 * tests have no apt) and compare byte for byte.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { tempDir } from "./helpers/qemu.js"

const root = path.join(import.meta.dirname, "..")
const generated = path.join(root, "src", "generated")

/** Runs the generator; the child is killed if the test ends first. */
const generate = (out: string) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      cp.spawn(
        process.execPath,
        [
          path.join(root, "node_modules", "tsx", "dist", "cli.mjs"),
          path.join(root, "scripts", "qapi-gen.ts"),
          "--out",
          out,
          "--qga-schema",
          path.join(generated, "qga-schema.json")
        ],
        { cwd: root, stdio: ["ignore", "pipe", "pipe"] }
      )
    ),
    (child) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGTERM"))
  ).pipe(
    Effect.flatMap((child) =>
      Effect.async<{ code: number | null; output: string }>((resume) => {
        let output = ""
        child.stdout!.on("data", (d: Buffer) => (output += d.toString()))
        child.stderr!.on("data", (d: Buffer) => (output += d.toString()))
        child.on("close", (code) => resume(Effect.succeed({ code, output })))
      })
    )
  )

const versionOf = (snapshot: string): { qemu: string; package: string } => {
  const { version } = JSON.parse(fs.readFileSync(snapshot, "utf8")) as {
    version: { qemu: { major: number; minor: number; micro: number }; package: string }
  }
  return { qemu: `${version.qemu.major}.${version.qemu.minor}.${version.qemu.micro}`, package: version.package }
}

describe("qapi:gen", { timeout: 120_000 }, () => {
  it.scopedLive("regenerating from the installed QEMU gives byte-identical src/generated/", () =>
    Effect.gen(function*() {
      const out = yield* tempDir
      const { code, output } = yield* generate(out)
      expect(code, output).toBe(0)
      expect(output).toMatch(/216 commands, 52 events/)
      const committed = fs.readdirSync(generated).sort()
      expect(fs.readdirSync(out).sort()).toEqual(committed)
      expect(committed).toEqual(["qga-schema.json", "qga.ts", "qmp-names.json", "qmp-schema.json", "qmp.ts"])
      // A distribution update of the same QEMU (7.2.22 -> 7.2.23) changes only the
      // version strings; any other difference means src/generated/ is stale.
      const was = versionOf(path.join(generated, "qmp-schema.json"))
      const now = versionOf(path.join(out, "qmp-schema.json"))
      const normalize = (text: string) =>
        text.split(now.package).join(was.package).split(now.qemu).join(was.qemu)
      for (const file of committed) {
        const fresh = fs.readFileSync(path.join(out, file), "utf8")
        const same = (was.package === now.package ? fresh : normalize(fresh)) ===
          fs.readFileSync(path.join(generated, file), "utf8")
        expect(same, `${file} differs from a fresh generation (QEMU ${now.package}): run npm run qapi:gen`).toBe(true)
      }
    }))
})
