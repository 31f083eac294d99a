/**
 * The child process layer under QEMU, on both ways of starting a child: the
 * posix_spawn addon (native/spawn.cc, the default where it is built) and
 * Node's child_process (the fallback). Real programs, no QEMU.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Proc from "../src/internal/process.js"

const openFds = () => fs.readdirSync("/proc/self/fd").length

const withLog = <A, E>(f: (logFile: string) => Effect.Effect<A, E, Scope.Scope>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "eq-proc-"))),
    (dir) => Effect.scoped(f(path.join(dir, "out.log"))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe.each([["posix_spawn", true], ["node", false]] as const)("Proc.spawn through %s", (_name, native) => {
  const spawn = (command: ReadonlyArray<string>, options?: Proc.SpawnOptions) =>
    Effect.suspend(() => {
      Proc.useNativeSpawn(native)
      return Proc.spawn(command, options)
    })

  it.live("uses the way it says", () =>
    Effect.sync(() => {
      Proc.useNativeSpawn(native)
      expect(Proc.spawnsNatively()).toBe(native)
    }))

  it.live("stdout and stderr go to the log file; the exit code is reported", () =>
    withLog((logFile) =>
      Effect.gen(function*() {
        const child = yield* spawn(["sh", "-c", "echo out; echo err >&2; exit 3"], { logFile })
        expect(yield* child.exited).toEqual({ code: 3, signal: null })
        expect(fs.readFileSync(logFile, "utf8")).toBe("out\nerr\n")
        expect(child.exitInfo()).toEqual({ code: 3, signal: null })
      })
    ))

  it.live("a signal death is reported by name; stdin is empty; the environment is the one given", () =>
    withLog((logFile) =>
      Effect.gen(function*() {
        const child = yield* spawn(["sh", "-c", "cat; echo \"$EQ_TEST\"; kill -TERM $$"], {
          logFile,
          env: { PATH: process.env.PATH, EQ_TEST: "given" }
        })
        expect(yield* child.exited).toEqual({ code: null, signal: "SIGTERM" })
        expect(fs.readFileSync(logFile, "utf8")).toBe("given\n")
      })
    ))

  it.live("the child leads a new session, with no signal ignored or blocked (Node ignores SIGPIPE)", () =>
    withLog((logFile) =>
      Effect.gen(function*() {
        const child = yield* spawn(["cat", "/proc/self/stat", "/proc/self/status"], { logFile })
        yield* child.exited
        const text = fs.readFileSync(logFile, "utf8")
        const stat = text.slice(text.indexOf(")") + 2).split(" ")
        // After "pid (comm) ": state, ppid, pgrp, session.
        expect(Number(stat[2])).toBe(child.pid)
        expect(Number(stat[3])).toBe(child.pid)
        // Signals 1-31 at their default; glibc's posix_spawn leaves its two internal real-time
        // signals (32, 33: SIGCANCEL, SIGSETXID) ignored, which the child's own glibc takes over.
        const ignored = BigInt(`0x${/^SigIgn:\s+([0-9a-f]+)$/m.exec(text)![1]}`)
        expect(ignored & 0x7fffffffn).toBe(0n)
        expect(text).toMatch(/^SigBlk:\s+0+$/m)
      })
    ))

  it.live("signal reaches the whole process group, and the signals sent are remembered", () =>
    withLog((logFile) =>
      Effect.gen(function*() {
        const child = yield* spawn(["sh", "-c", "sleep 30 & echo $!; wait"], { logFile })
        let background = 0
        while (background === 0) {
          background = Number(fs.readFileSync(logFile, "utf8").trim() || 0)
          if (background === 0) yield* Effect.sleep("5 millis")
        }
        expect(child.signal("SIGKILL")).toBe(true)
        expect(yield* child.exited).toEqual({ code: null, signal: "SIGKILL" })
        expect(child.sentSignals.has("SIGKILL")).toBe(true)
        while (alive(background)) yield* Effect.sleep("5 millis")
        expect(child.signal("SIGTERM")).toBe(false)
      })
    ))

  it.live("a missing program is a SpawnError naming ENOENT", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(spawn(["/nonexistent/effect-qemu-test"])))
      expect(error._tag).toBe("SpawnError")
      expect((error.cause as NodeJS.ErrnoException).code).toBe("ENOENT")
      expect(error.message).toContain("/nonexistent/effect-qemu-test")
    }))

  it.live("closing the scope kills a running child and waits for it; nothing is left open", () =>
    Effect.gen(function*() {
      // Warm up (the addon and its first uses open what they keep).
      yield* Effect.scoped(Effect.flatMap(spawn(["true"]), (c) => c.exited))
      const before = openFds()
      const pids: Array<number> = []
      for (let i = 0; i < 20; i++) {
        const scope = yield* Scope.make()
        const child = yield* spawn(["sleep", "30"]).pipe(Scope.extend(scope))
        pids.push(child.pid)
        yield* Scope.close(scope, Exit.void)
        expect(child.exitInfo()).toEqual({ code: null, signal: "SIGKILL" })
      }
      expect(pids.filter(alive)).toEqual([])
      expect(openFds()).toBe(before)
    }))

  it.live("many children exiting at once are each reported once, with their own code", () =>
    Effect.gen(function*() {
      const codes = yield* Effect.scoped(Effect.forEach(
        Array.from({ length: 24 }, (_, i) => i),
        (i) => Effect.flatMap(spawn(["sh", "-c", `exit ${i}`]), (c) => c.exited),
        { concurrency: "unbounded" }
      ))
      expect(codes.map((c) => c.code)).toEqual(Array.from({ length: 24 }, (_, i) => i))
    }))
})
