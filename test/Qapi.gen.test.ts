/**
 * `npm run qapi:gen` is deterministic and the committed `src/generated/` is
 * what the saved introspections of every version give: regenerate from the
 * snapshots into a temp dir (the guest agent's schema from its snapshot too,
 * since the tests have no apt) and compare byte for byte. And the snapshot of
 * the QEMU on PATH (whichever of the versions it is) is what that QEMU says
 * today.
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
const generate = (out: string, ...options: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      cp.spawn(
        process.execPath,
        [
          path.join(root, "node_modules", "tsx", "dist", "cli.mjs"),
          path.join(root, "scripts", "qapi-gen.ts"),
          "--out",
          out,
          ...options
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

const VERSIONS = ["7.2", "10.0", "11.1"]

describe("qapi:gen", { timeout: 120_000 }, () => {
  it.scopedLive("regenerating from the saved snapshots of every version gives byte-identical src/generated/", () =>
    Effect.gen(function*() {
      const out = yield* tempDir
      const { code, output } = yield* generate(out, "--snapshots", "--qga-schema", path.join(generated, "qga-schema.json"))
      expect(code, output).toBe(0)
      expect(output).toMatch(/QMP 7\.2\.\d+ \+ 10\.0\.\d+ \+ 11\.1\.\d+: \d+ commands, \d+ events/)
      const committed = fs.readdirSync(generated).sort()
      expect(fs.readdirSync(out).sort()).toEqual(committed)
      expect(committed).toEqual(
        [
          "qga-schema.json",
          "qga.ts",
          "qmp.ts",
          ...VERSIONS.flatMap((v) => [`qmp-${v}.ts`, `qmp-names-${v}.json`, `qmp-schema-${v}.json`])
        ].sort()
      )
      for (const file of committed) {
        const same = fs.readFileSync(path.join(out, file), "utf8") === fs.readFileSync(path.join(generated, file), "utf8")
        expect(same, `${file} differs from a fresh generation: run npm run qapi:gen`).toBe(true)
      }
    }))

  it.scopedLive("the QEMU on PATH says what its saved snapshot says", () =>
    Effect.gen(function*() {
      const out = yield* tempDir
      const { code, output } = yield* generate(out, "--introspect", "qemu-system-x86_64")
      expect(code, output).toBe(0)
      const [file] = fs.readdirSync(out)
      expect(VERSIONS.map((v) => `qmp-schema-${v}.json`), `QEMU on PATH: ${output}`).toContain(file)
      // A distribution update of the same QEMU (7.2.22 -> 7.2.23) changes only the
      // version strings; any other difference means src/generated/ is stale.
      const was = versionOf(path.join(generated, file!))
      const now = versionOf(path.join(out, file!))
      const fresh = fs.readFileSync(path.join(out, file!), "utf8").split(now.package).join(was.package).split(now.qemu)
        .join(was.qemu)
      expect(fresh === fs.readFileSync(path.join(generated, file!), "utf8"), `${file}: run npm run qapi:gen`).toBe(true)
    }))
})
