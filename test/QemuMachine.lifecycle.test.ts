/**
 * The machine's lifetime against a real QEMU (`-machine none`): what a scope
 * leaves behind (nothing), every way a launch fails, the shutdown ladder when
 * QEMU will not cooperate, interruption in the middle of launch, descriptor
 * leaks over many cycles, and QEMU dying with a SIGKILLed parent.
 *
 * Each test roots its machines in a private base temp dir, so leftover checks
 * (files, and processes whose command line names that dir) see only its own.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit, Fiber, Option } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { QemuMachine } from "../src/index.js"
import * as Proc from "../src/internal/process.js"
import { captureLogs, leftovers, noneConfig, pollUntil, processesMentioning } from "./helpers/machine.js"
import { tempDir } from "./helpers/qemu.js"

const launchFailure = (config: QemuMachine.Config) =>
  QemuMachine.launch(config).pipe(
    Effect.scoped,
    Effect.flip,
    Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error("launch did not end") })
  )

describe("QemuMachine lifecycle", () => {
  it.scopedLive("closing the scope ends QEMU with exit code 0 and removes its temp dir, sockets and log", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const { during, vm } = yield* Effect.gen(function*() {
        const vm = yield* QemuMachine.launch(noneConfig(base).pipe(QemuMachine.setConsole()))
        yield* vm.console
        const pid = Option.getOrThrow(yield* vm.pid)
        const during = {
          pid,
          alive: Proc.isAlive(pid),
          isRunning: yield* vm.isRunning,
          exitCode: yield* vm.exitCode,
          log: yield* vm.log,
          base: leftovers(base),
          files: fs.readdirSync(vm.tempDir).sort()
        }
        return { during, vm }
      }).pipe(Effect.scoped)

      expect(during.alive).toBe(true)
      expect(during.isRunning).toBe(true)
      expect(during.exitCode).toEqual(Option.none())
      expect(during.log).toEqual(Option.none())
      expect(during.base).toEqual([path.basename(vm.tempDir)])
      // The monitor socket is unlinked once QEMU connected; the console socket, the log and the
      // owner record (for a sweep after a SIGKILL) remain.
      expect(during.files).toEqual([`${vm.name}-console.sock`, `${vm.name}.log`, "owner"].sort())

      expect(Proc.isAlive(during.pid)).toBe(false)
      expect(yield* vm.pid).toEqual(Option.none())
      expect(yield* vm.isRunning).toBe(false)
      expect(yield* vm.exitCode).toEqual(Option.some(0))
      expect(Option.isSome(yield* vm.log)).toBe(true)
      expect(fs.existsSync(vm.tempDir)).toBe(false)
      expect(leftovers(base)).toEqual([])
      expect(processesMentioning(base)).toEqual([])
    }))

  it.scopedLive("removes sockets placed in a sockDir outside the temp dir", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const sockDir = yield* tempDir
      const vm = yield* QemuMachine.launch(noneConfig(base, { sockDir }).pipe(QemuMachine.setConsole())).pipe(
        Effect.tap((vm) => vm.console),
        Effect.tap(() => Effect.sync(() => expect(fs.readdirSync(sockDir)).not.toEqual([]))),
        Effect.scoped
      )
      expect(vm.sockDir).toBe(sockDir)
      expect(fs.readdirSync(sockDir)).toEqual([])
      expect(leftovers(base)).toEqual([])
    }))
})

describe("QemuMachine launch failures", () => {
  it.scopedLive("a bad option fails fast with ExitedEarly, exit code 1 and QEMU's message", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const error = yield* launchFailure(noneConfig(base).pipe(QemuMachine.addArgs("-bogus-option")))
      expect(error._tag).toBe("LaunchFailure")
      if (error._tag !== "LaunchFailure") return
      expect(error.reason).toBe("ExitedEarly")
      expect(error.exitCode).toBe(1)
      expect(error.output).toContain("-bogus-option")
      expect(error.command).toContain("-bogus-option")
      // qmpTimeout is 30 s: ExitedEarly (not Timeout) means the exit was raced against the accept.
      expect(leftovers(base)).toEqual([])
    }))

  it.scopedLive("a missing binary fails with SpawnFailed", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const error = yield* launchFailure(
        QemuMachine.make({ binary: path.join(base, "no-such-qemu"), baseTempDir: base }).pipe(
          QemuMachine.setMachine("none")
        )
      )
      expect(error._tag).toBe("LaunchFailure")
      if (error._tag !== "LaunchFailure") return
      expect(error.reason).toBe("SpawnFailed")
      expect(error.message).toContain("ENOENT")
      expect(leftovers(base)).toEqual([])
    }))

  it.scopedLive("QEMU exiting before it connects fails with ExitedEarly and its exit code", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const error = yield* launchFailure(
        QemuMachine.make({
          binary: "qemu-system-x86_64",
          baseTempDir: base,
          wrapper: ["sh", "-c", "echo about to fail >&2; exit 3", "--"]
        })
      )
      expect(error._tag).toBe("LaunchFailure")
      if (error._tag !== "LaunchFailure") return
      expect(error.reason).toBe("ExitedEarly")
      expect(error.exitCode).toBe(3)
      expect(error.signal).toBeUndefined()
      expect(error.output).toContain("about to fail")
      expect(leftovers(base)).toEqual([])
    }))

  it.scopedLive("qmpTimeout passing with no connection fails with Timeout and kills what was started", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      // A unique duration tells this sleep apart from any other on the machine.
      const sleep = `sleep 29.${Math.floor(Math.random() * 1e9)}`
      const config = QemuMachine.make({
        binary: "qemu-system-x86_64",
        baseTempDir: base,
        wrapper: ["sh", "-c", sleep, "--"],
        qmpTimeout: "500 millis"
      })
      const error = yield* launchFailure(config)
      expect(error._tag).toBe("LaunchFailure")
      if (error._tag !== "LaunchFailure") return
      expect(error.reason).toBe("Timeout")
      expect(processesMentioning(sleep)).toEqual([])
      expect(processesMentioning(base)).toEqual([])
      expect(leftovers(base)).toEqual([])
    }))

  /** Launches with a wrapper that would leave a marker file: the marker proves whether anything ran. */
  const refusedBeforeSpawn = (options: (base: string) => Partial<QemuMachine.Options>, says = "107") =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const marker = path.join(base, "spawned")
      const error = yield* launchFailure(
        QemuMachine.make({
          binary: "qemu-system-x86_64",
          baseTempDir: base,
          wrapper: ["sh", "-c", `touch ${marker}; exec "$@"`, "--"],
          ...options(base)
        })
      )
      expect(error._tag).toBe("LaunchFailure")
      if (error._tag !== "LaunchFailure") return
      expect(error.reason).toBe("InvalidConfig")
      expect(error.message).toContain(says)
      expect(fs.existsSync(marker)).toBe(false)
      expect(leftovers(base)).toEqual([])
    })

  it.scopedLive("a monitor path over 107 bytes fails with InvalidConfig before anything is spawned", () =>
    refusedBeforeSpawn(() => ({ monitorAddress: "/tmp/" + "x".repeat(120) })))

  it.scopedLive("a sockDir too long for AF_UNIX fails with InvalidConfig before anything is spawned", () =>
    refusedBeforeSpawn((base) => ({ sockDir: path.join(base, "s".repeat(100)) })))

  it.scopedLive("a consoleLog in a missing directory fails with InvalidConfig (not a defect) before anything is spawned", () =>
    refusedBeforeSpawn((base) => ({ consoleLog: path.join(base, "missing", "console.log") }), "cannot write the console log"))

  it.scopedLive("a logDir that does not exist fails with InvalidConfig before anything is spawned", () =>
    refusedBeforeSpawn((base) => ({ logDir: path.join(base, "missing") }), "not a writable directory"))
})

describe("QemuMachine shutdown when QEMU misbehaves", () => {
  it.scopedLive("a SIGSTOPped QEMU makes shutdown fail with AbnormalShutdown after killing it", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const vm = yield* QemuMachine.launch(noneConfig(base))
      const pid = Option.getOrThrow(yield* vm.pid)
      process.kill(pid, "SIGSTOP")
      const result = yield* Effect.either(vm.shutdown({ timeout: "1 second" }))
      expect(Either.isLeft(result)).toBe(true)
      if (Either.isRight(result)) return
      expect(result.left._tag).toBe("AbnormalShutdown")
      expect(result.left.steps.map(({ outcome, step }) => ({ step, outcome }))).toEqual([
        { step: "soft", outcome: "failed" },
        { step: "hard", outcome: "ok" }
      ])
      expect(result.left.steps[1]!.detail).toBe("SIGKILL, QEMU exited")
      expect(Proc.isAlive(pid)).toBe(false)
      expect(yield* vm.exitCode).toEqual(Option.some(-9))
      expect(leftovers(base)).toEqual([])
    }))

  it.scopedLive("an external SIGKILL fails commands with QmpConnectionError, logs a warning, and shutdown cleans up", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const base = yield* tempDir
      const vm = yield* QemuMachine.launch(noneConfig(base))
      const pid = Option.getOrThrow(yield* vm.pid)
      process.kill(pid, "SIGKILL")
      expect(yield* pollUntil(() => !Proc.isAlive(pid), "10 seconds")).toBe(true)
      const error = yield* Effect.flip(vm.command("query-status")).pipe(Effect.timeout("10 seconds"))
      expect(error._tag).toBe("QmpConnectionError")
      const shutdown = yield* Effect.either(vm.shutdown({ timeout: "5 seconds" })).pipe(Effect.timeout("20 seconds"))
      // QEMU was gone before quit could be sent: not a graceful shutdown.
      expect(Either.isLeft(shutdown) && shutdown.left._tag).toBe("AbnormalShutdown")
      expect(yield* vm.exitCode).toEqual(Option.some(-9))
      expect(logs.messages.some((m) => m.startsWith("WARN") && m.includes("SIGKILL"))).toBe(true)
      expect(leftovers(base)).toEqual([])
    }).pipe(Effect.provide(logs.layer))
  })

  it.scopedLive("a shutdown we asked for logs no foreign-signal warning", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const base = yield* tempDir
      const vm = yield* QemuMachine.launch(noneConfig(base))
      yield* vm.shutdown({ hard: true })
      expect(yield* vm.exitCode).toEqual(Option.some(-9))
      expect(logs.messages.filter((m) => m.startsWith("WARN"))).toEqual([])
    }).pipe(Effect.provide(logs.layer))
  })
})

describe("QemuMachine under stress", () => {
  it.scopedLive("launches interrupted at random moments leave no process, socket or temp dir", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const config = noneConfig(base).pipe(QemuMachine.setConsole())
      let interrupted = 0
      for (let run = 0; run < 50; run++) {
        const fiber = yield* Effect.fork(
          Effect.scoped(Effect.flatMap(QemuMachine.launch(config), (vm) => vm.command("query-status")))
        )
        yield* Effect.sleep(Math.floor(Math.random() * 150))
        const exit = yield* Fiber.interrupt(fiber).pipe(Effect.timeout("30 seconds"))
        if (Exit.isInterrupted(exit)) interrupted++
        else expect(Exit.isSuccess(exit)).toBe(true)
        expect({ run, processes: processesMentioning(base), files: leftovers(base) }).toEqual({
          run,
          processes: [],
          files: []
        })
      }
      // Some runs must actually have been cut short for this to test anything.
      expect(interrupted).toBeGreaterThan(0)
    }), 120_000)

  it.scopedLive("100 launch/shutdown cycles leave the open descriptor count unchanged", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const config = noneConfig(base)
      const cycle = Effect.scoped(Effect.flatMap(QemuMachine.launch(config), (vm) => vm.command("query-status")))
      // Warm up: lazily loaded modules and the like open their descriptors once.
      yield* cycle
      const openFds = () => fs.readdirSync("/proc/self/fd").length
      const before = openFds()
      for (let i = 0; i < 100; i++) yield* cycle
      const after = openFds()
      expect(after - before).toBeLessThanOrEqual(2)
      expect(leftovers(base)).toEqual([])
    }), 120_000)
})

/** A Node process holding a guestless machine under `base` (test/fixtures/orphan-child.ts), killed with the scope. */
const orphanChild = (base: string) =>
  Effect.gen(function*() {
    const fixture = fileURLToPath(new URL("./fixtures/orphan-child.ts", import.meta.url))
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        cp.spawn(process.execPath, ["--import", "tsx", fixture, base], { stdio: ["ignore", "pipe", "inherit"] })
      ),
      (child) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
    )
    const held = yield* Effect.async<{ pid: number; tempDir: string }, Error>((resume) => {
      const lines = readline.createInterface({ input: child.stdout! })
      lines.once("line", (line) => resume(Effect.try(() => JSON.parse(line) as { pid: number; tempDir: string })))
      child.once("exit", (code) => resume(Effect.fail(new Error(`orphan-child exited early (${code})`))))
      return Effect.sync(() => lines.close())
    }).pipe(Effect.timeout("30 seconds"))
    // Whatever happens below, never leave that QEMU behind.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (Proc.isAlive(held.pid)) process.kill(held.pid, "SIGKILL")
      })
    )
    return { child, ...held }
  })

describe("QemuMachine and a dying parent", () => {
  it.scopedLive("QEMU dies within a second of its SIGKILLed parent Node process", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const { child, pid } = yield* orphanChild(base)
      expect(Proc.isAlive(pid)).toBe(true)

      child.kill("SIGKILL")
      const gone = yield* pollUntil(() => !Proc.isAlive(pid), "5 seconds")
      expect(gone).toBe(true)
    }), 60_000)

  it.scopedLive("the next launch under the same base dir removes the temp dir a SIGKILLed process left, and only that", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const killed = yield* orphanChild(base)
      const alive = yield* orphanChild(base)
      killed.child.kill("SIGKILL")
      expect(yield* pollUntil(() => !Proc.isAlive(killed.pid), "5 seconds")).toBe(true)
      // No finalizer ran in the killed process: its dir is there, with its owner record.
      expect(fs.existsSync(path.join(killed.tempDir, "owner"))).toBe(true)

      const record = JSON.parse(fs.readFileSync(path.join(alive.tempDir, "owner"), "utf8")) as Record<string, unknown>
      const fake = (name: string, owner?: Record<string, unknown>) => {
        const dir = path.join(base, `qemu-machine-${name}`)
        fs.mkdirSync(dir)
        fs.writeFileSync(path.join(dir, "qemu.log"), "left\n")
        if (owner) fs.writeFileSync(path.join(dir, "owner"), JSON.stringify(owner))
        return dir
      }
      // A live pid reused by another process (its start time differs): the owner is gone.
      const reused = fake("reused", { ...record, start: "1" })
      // Another pid namespace's pid means nothing here; an unmarked dir (an older version) is
      // not ours to judge; nor is a record that is not one.
      const foreign = fake("foreign", { ...record, pid: 999_999_999, pidns: "pid:[1]" })
      const unmarked = fake("unmarked")
      const garbled = fake("garbled", { pid: "x" })

      const vm = yield* QemuMachine.launch(noneConfig(base))
      expect(fs.existsSync(killed.tempDir)).toBe(false)
      expect(fs.existsSync(reused)).toBe(false)
      for (const kept of [alive.tempDir, foreign, unmarked, garbled, vm.tempDir]) expect(fs.existsSync(kept)).toBe(true)
      expect(Proc.isAlive(alive.pid)).toBe(true)
    }), 90_000)
})
