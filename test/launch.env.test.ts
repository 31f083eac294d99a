/**
 * QEMU's environment: ours, plus glibc's huge-page heap unless the user set
 * `GLIBC_TUNABLES` (to anything, even empty), read back from the running
 * QEMU's /proc/PID/environ.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as fs from "node:fs"
import { QemuMachine } from "../src/index.js"
import { noneConfig } from "./helpers/machine.js"
import { tempDir } from "./helpers/qemu.js"

/** QEMU's environment as it was exec'd. */
const environ = (pid: number): Array<string> => fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter(Boolean)

/** Runs `body` with `GLIBC_TUNABLES` as given (undefined: unset), then puts ours back. */
const withTunables = <A, E, R>(value: string | undefined, body: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => {
      const saved = process.env.GLIBC_TUNABLES
      if (value === undefined) delete process.env.GLIBC_TUNABLES
      else process.env.GLIBC_TUNABLES = value
      process.env.EQ_ENV_MARKER = "passed-through"
      return saved
    }),
    () => body,
    (saved) =>
      Effect.sync(() => {
        if (saved === undefined) delete process.env.GLIBC_TUNABLES
        else process.env.GLIBC_TUNABLES = saved
        delete process.env.EQ_ENV_MARKER
      })
  )

const qemuEnviron = Effect.gen(function*() {
  const base = yield* tempDir
  const vm = yield* QemuMachine.launch(noneConfig(base))
  const pid = Option.getOrThrow(yield* vm.pid)
  return environ(pid)
})

describe("QEMU's environment", () => {
  it.scopedLive("without GLIBC_TUNABLES, QEMU gets glibc's huge-page heap and the rest of ours", () =>
    withTunables(undefined, Effect.gen(function*() {
      const env = yield* qemuEnviron
      expect(env).toContain("GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
      expect(env).toContain("EQ_ENV_MARKER=passed-through")
    })), 30_000)

  for (const value of ["", "glibc.malloc.check=0"]) {
    it.scopedLive(`GLIBC_TUNABLES=${JSON.stringify(value)} of ours reaches QEMU as it is`, () =>
      withTunables(value, Effect.gen(function*() {
        const env = yield* qemuEnviron
        expect(env.filter((line) => line.startsWith("GLIBC_TUNABLES="))).toEqual([`GLIBC_TUNABLES=${value}`])
        expect(env).toContain("EQ_ENV_MARKER=passed-through")
      })), 30_000)
  }
})
