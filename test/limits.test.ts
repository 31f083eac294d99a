/**
 * Limits users hit first with many machines in one process, each a clear
 * `LaunchFailure` `InvalidConfig` instead of a hang: too few file descriptors
 * (a child process under a lowered `ulimit -n`), and a full file system under
 * the temp dir base (a tiny tmpfs; skipped where mounting is not permitted).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as QemuMachine from "../src/QemuMachine.js"
import { QEMU, tempDir } from "./helpers/qemu.js"

const root = path.resolve(import.meta.dirname, "..")

/** A tmpfs of `inodes` inodes at a fresh dir, unmounted with the scope; undefined where mount is refused. */
const tinyTmpfs = (inodes: number) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eq-full-"))
      try {
        cp.execFileSync("mount", ["-t", "tmpfs", "-o", `size=64k,nr_inodes=${inodes},mode=0700`, "tmpfs", dir], { stdio: "ignore" })
        return { dir, mounted: true }
      } catch {
        return { dir, mounted: false }
      }
    }),
    ({ dir, mounted }) =>
      Effect.sync(() => {
        if (mounted) cp.execFileSync("umount", [dir], { stdio: "ignore" })
        fs.rmSync(dir, { recursive: true, force: true })
      })
  )

const canMount = (() => {
  if (process.getuid?.() !== 0) return false
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eq-mount-probe-"))
  try {
    cp.execFileSync("mount", ["-t", "tmpfs", "-o", "size=4k", "tmpfs", dir], { stdio: "ignore" })
    cp.execFileSync("umount", [dir], { stdio: "ignore" })
    return true
  } catch {
    return false
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
})()

const config = (baseTempDir: string) =>
  QemuMachine.make({ binary: QEMU, baseTempDir }).pipe(QemuMachine.setMachine("none"))

describe("limits", () => {
  it.scopedLive("launching more machines than `ulimit -n` allows fails the extra launches with InvalidConfig naming the limit", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      // 160 launches holding 2 descriptors each while they wait cannot all fit under 256 (module loading needs room too); the first ones do.
      const out = yield* Effect.async<string, Error>((resume) => {
        const child = cp.execFile(
          "bash",
          ["-c", `ulimit -n 256 && exec "${process.execPath}" --import tsx test/fixtures/fd-limit-child.ts "$0" 160`, base],
          { cwd: root, encoding: "utf8", timeout: 120_000, killSignal: "SIGKILL" },
          (error, stdout, stderr) => resume(error ? Effect.fail(new Error(`${error.message}\n${stderr}`)) : Effect.succeed(stdout))
        )
        return Effect.sync(() => child.kill("SIGKILL"))
      })
      const outcomes = JSON.parse(out.trim().split("\n").pop()!) as Array<
        { ok: true } | { ok: false; tag: string; reason: string; detail: string }
      >
      expect(outcomes).toHaveLength(160)
      const failed = outcomes.filter((o) => !o.ok)
      expect(outcomes.some((o) => o.ok)).toBe(true)
      expect(failed.length).toBeGreaterThan(0)
      for (const f of failed) {
        expect(f).toMatchObject({ tag: "LaunchFailure", reason: "InvalidConfig" })
        expect(f.detail).toContain("RLIMIT_NOFILE")
        expect(f.detail).toContain("is 256")
      }
      // Every machine that launched was closed: its temp dir is gone.
      expect(fs.readdirSync(base)).toEqual([])
    }), 150_000)

  it.scopedLive.skipIf(!canMount)("a temp dir base with no room left fails with InvalidConfig saying the file system is full", () =>
    Effect.gen(function*() {
      // The root inode is the only one: mkdtemp gets ENOSPC.
      const { dir } = yield* tinyTmpfs(1)
      const result = yield* Effect.either(Effect.scoped(QemuMachine.launch(config(dir))))
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left).toMatchObject({ _tag: "LaunchFailure", reason: "InvalidConfig" })
        expect(result.left.detail).toContain(`cannot create a temp dir under ${dir}`)
        expect(result.left.detail).toContain("full (ENOSPC)")
      }
    }))

  it.scopedLive.skipIf(!canMount)("a log file that cannot be created for lack of space fails with InvalidConfig, and nothing is left", () =>
    Effect.gen(function*() {
      // Root, the temp dir, its owner record and the monitor socket fit; the log file does not.
      const { dir } = yield* tinyTmpfs(4)
      const result = yield* Effect.either(Effect.scoped(QemuMachine.launch(config(dir))))
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left).toMatchObject({ _tag: "LaunchFailure", reason: "InvalidConfig" })
        expect(result.left.detail).toMatch(/cannot create the log file .*full \(ENOSPC\)/)
      }
      expect(fs.readdirSync(dir)).toEqual([])
    }))
})
