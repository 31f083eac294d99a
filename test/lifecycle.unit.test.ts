/**
 * The shutdown ladder and the run state, driven by a fake process and a fake
 * QMP monitor under `TestClock`: no QEMU, no real waiting.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Exit, Fiber, FiberId, Stream, TestClock } from "effect"
import { QmpConnectionError } from "../src/Errors.js"
import * as Lifecycle from "../src/internal/machine/lifecycle.js"
import * as State from "../src/internal/machine/state.js"
import type { ExitInfo } from "../src/internal/process.js"
import { MachineState } from "../src/QemuMachine.js"

interface FakeOptions {
  /** What QEMU does when it gets `quit`: exit cleanly, ignore it, or die from a foreign SIGKILL. */
  readonly onQuit?: "exit" | "ignore" | "foreign-kill"
  /** Whether SIGTERM makes it exit. */
  readonly onTerm?: "exit" | "ignore"
  readonly qmp?: boolean
  /**
   * Give the process `onExit` and the monitor callbacks, as real ones have: on the live
   * clock the ladder then runs as plain callbacks under one timer.
   */
  readonly onExit?: boolean
  /** QEMU's QMP connection outlives its exit by this long (the ladder reads it to its end). */
  readonly closeAfterExit?: number
}

const fake = (options: FakeOptions = {}) => {
  const exitDeferred = Deferred.unsafeMake<ExitInfo>(FiberId.none)
  const closedDeferred = Deferred.unsafeMake<QmpConnectionError>(FiberId.none)
  let info: ExitInfo | undefined
  let connected = true
  const sent = new Set<NodeJS.Signals>()
  const log: Array<string> = []
  const exitListeners = new Set<(info: ExitInfo) => void>()
  const closedListeners = new Set<() => void>()
  const disconnect = () => {
    if (!connected) return
    connected = false
    Deferred.unsafeDone(closedDeferred, Exit.succeed(new QmpConnectionError({ reason: "Eof" })))
    for (const f of closedListeners) f()
    closedListeners.clear()
  }
  const exit = (exitInfo: ExitInfo) => {
    if (info) return
    info = exitInfo
    if (options.closeAfterExit === undefined) disconnect()
    else setTimeout(disconnect, options.closeAfterExit)
    for (const f of exitListeners) f(exitInfo)
    Deferred.unsafeDone(exitDeferred, Exit.succeed(exitInfo))
  }
  const quit = () => {
    log.push("quit")
    if (options.onQuit === "foreign-kill") exit({ code: null, signal: "SIGKILL" })
    else if (options.onQuit !== "ignore") exit({ code: 0, signal: null })
  }
  const process: Lifecycle.Process = {
    exited: Deferred.await(exitDeferred),
    exitInfo: () => info,
    sentSignals: sent,
    signal: (signal) => {
      if (info) return false
      sent.add(signal)
      log.push(signal)
      if (signal === "SIGKILL") exit({ code: null, signal: "SIGKILL" })
      if (signal === "SIGTERM" && options.onTerm !== "ignore") exit({ code: 0, signal: null })
      return true
    },
    ...(options.onExit
      ? {
        onExit: (f: (info: ExitInfo) => void) => {
          if (info) {
            f(info)
            return () => {}
          }
          exitListeners.add(f)
          return () => exitListeners.delete(f)
        }
      }
      : {})
  }
  const monitor: Lifecycle.Monitor = {
    execute: (command) =>
      Effect.sync(() => {
        if (command === "quit") quit()
        else log.push(command)
        return {}
      }),
    isConnected: Effect.sync(() => connected),
    closed: Deferred.await(closedDeferred),
    close: Effect.sync(disconnect),
    callbacks: options.onExit
      ? {
        quit: (done) => {
          quit()
          done(undefined)
        },
        connected: () => connected,
        onClosed: (f) => {
          if (!connected) {
            f()
            return () => {}
          }
          closedListeners.add(f)
          return () => void closedListeners.delete(f)
        },
        close: disconnect
      }
      : undefined
  }
  return { process, monitor: options.qmp === false ? undefined : monitor, exit, log }
}

/** Runs `changes` in a fiber and returns once it has seen the current state. */
const collect = <A>(changes: Stream.Stream<A>) =>
  Effect.gen(function*() {
    const started = yield* Deferred.make<void>()
    const fiber = yield* Effect.fork(Stream.runCollect(Stream.tap(changes, () => Deferred.succeed(started, undefined))))
    yield* Deferred.await(started)
    return fiber
  })

const setup = (options: FakeOptions = {}) =>
  Effect.gen(function*() {
    const f = fake(options)
    const state = yield* State.make
    let cleanups = 0
    let consoleCloses = 0
    const shutdown = Lifecycle.make({
      process: f.process,
      monitor: f.monitor,
      state,
      closeConsole: Effect.sync(() => void consoleCloses++),
      cleanup: Effect.sync(() => void cleanups++)
    })
    return { ...f, state, shutdown, cleanups: () => cleanups, consoleCloses: () => consoleCloses }
  })

describe("shutdown ladder", () => {
  it.effect("a soft shutdown sends quit, waits for the exit, and moves Running → ShuttingDown → Exited", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      const changes = yield* collect(t.state.changes)
      yield* t.shutdown.run()
      expect(t.log).toEqual(["quit"])
      expect(t.cleanups()).toBe(1)
      expect(t.consoleCloses()).toBeGreaterThan(0)
      expect(t.state.current()).toEqual(MachineState.Exited({ exitCode: 0, expected: true }))
      const seen = Chunk.toReadonlyArray(yield* Fiber.join(changes)).map((s) => s._tag)
      expect(seen).toEqual(["Running", "ShuttingDown", "Exited"])
    }))

  it.effect("when QEMU ignores quit, the soft step times out at its deadline, then SIGKILL; AbnormalShutdown lists both", () =>
    Effect.gen(function*() {
      const t = yield* setup({ onQuit: "ignore" })
      const fiber = yield* Effect.fork(Effect.flip(t.shutdown.run({ timeout: "5 seconds" })))
      yield* TestClock.adjust("4999 millis")
      expect(t.log).toEqual(["quit"])
      expect(fiber.unsafePoll()).toBeNull()
      yield* TestClock.adjust("1 millis")
      const error = yield* Fiber.join(fiber)
      expect(error._tag).toBe("AbnormalShutdown")
      expect(error.steps.map((s) => `${s.step}:${s.outcome}`)).toEqual(["soft:failed", "hard:ok"])
      expect(error.steps[0]!.detail).toContain("graceful shutdown timed out")
      expect(t.log).toEqual(["quit", "SIGKILL"])
      expect(t.state.current()).toEqual(MachineState.Exited({ exitCode: -9, expected: true }))
      expect(t.cleanups()).toBe(1)
    }))

  it.effect("hard skips quit and kills at once", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.shutdown.run({ hard: true })
      expect(t.log).toEqual(["SIGKILL"])
      expect(t.state.current()._tag).toBe("Exited")
    }))

  it.effect("after wait() (ExpectingExit) no quit is sent and the console stays open until QEMU exits", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      expect(yield* t.state.transition(MachineState.ExpectingExit())).toBe(true)
      const fiber = yield* Effect.fork(t.shutdown.run())
      yield* TestClock.adjust("10 seconds")
      expect(t.log).toEqual([])
      expect(t.consoleCloses()).toBe(0)
      t.exit({ code: 0, signal: null })
      yield* Fiber.join(fiber)
      expect(t.state.current()).toEqual(MachineState.Exited({ exitCode: 0, expected: true }))
    }))

  it.effect("after a quit sent by the user (QuitIssued) the ladder does not send another", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.state.transition(MachineState.QuitIssued())
      const fiber = yield* Effect.fork(t.shutdown.run())
      yield* Effect.yieldNow()
      t.exit({ code: 0, signal: null })
      yield* Fiber.join(fiber)
      expect(t.log).toEqual([])
    }))

  it.effect("a QEMU that died by itself before shutdown gives AbnormalShutdown, not a quit", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      t.exit({ code: 1, signal: null })
      yield* t.state.exited(1)
      expect(t.state.current()).toEqual(MachineState.Exited({ exitCode: 1, expected: false }))
      const error = yield* Effect.flip(t.shutdown.run())
      expect(error.steps[0]!.detail).toContain("already exited (exit code 1)")
      // Nothing left to kill: the hard step says so instead of claiming a SIGKILL.
      expect(error.steps[1]).toEqual({ step: "hard", outcome: "ok", detail: "nothing to kill: QEMU had exited" })
      expect(t.log).toEqual([])
    }))

  it.effect("after an expected exit (quit sent by the user, QEMU gone) shutdown succeeds without quit and cleans up", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.state.transition(MachineState.QuitIssued())
      t.exit({ code: 0, signal: null })
      yield* t.state.exited(0)
      expect(t.state.current()).toEqual(MachineState.Exited({ exitCode: 0, expected: true }))
      yield* t.shutdown.run()
      expect(t.log).toEqual([])
      expect(t.cleanups()).toBe(1)
      expect(t.state.current()).toEqual(MachineState.Exited({ exitCode: 0, expected: true }))
    }))

  it.effect("after the guest powered off while expected to (ExpectingExit, then Exited), shutdown succeeds, also without QMP", () =>
    Effect.gen(function*() {
      for (const qmp of [true, false]) {
        const t = yield* setup({ qmp })
        yield* t.state.transition(MachineState.ExpectingExit())
        t.exit({ code: 0, signal: null })
        yield* t.state.exited(0)
        const result = yield* Effect.either(t.shutdown.run())
        expect(result._tag).toBe("Right")
        expect(t.log).toEqual([])
        expect(t.cleanups()).toBe(1)
      }
    }))

  it.effect("shutdown after wait() returned succeeds and does not run the ladder again", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      // what vm.wait does: expect the exit, then run the ladder
      yield* t.state.transition(MachineState.ExpectingExit())
      const waiting = yield* Effect.fork(t.shutdown.run())
      yield* Effect.yieldNow()
      t.exit({ code: 0, signal: null })
      yield* Fiber.join(waiting)
      expect((yield* Effect.either(t.shutdown.run()))._tag).toBe("Right")
      expect(t.log).toEqual([])
      expect(t.cleanups()).toBe(1)
    }))

  it.effect("wait() called after the guest already powered QEMU off (seen as an exit from Running) succeeds", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      t.exit({ code: 0, signal: null })
      yield* t.state.exited(0)
      // the state says what happened: nobody had asked for that exit yet
      expect(t.state.current()).toEqual(MachineState.Exited({ exitCode: 0, expected: false }))
      expect((yield* Effect.either(t.shutdown.wait()))._tag).toBe("Right")
      expect(t.log).toEqual([])
      expect(t.cleanups()).toBe(1)
    }))

  it.effect("wait() moves Running to ExpectingExit and succeeds once QEMU exits by itself", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      const fiber = yield* Effect.fork(t.shutdown.wait())
      yield* Effect.yieldNow()
      expect(t.state.current()._tag).toBe("ShuttingDown")
      t.exit({ code: 0, signal: null })
      yield* Fiber.join(fiber)
      expect(t.log).toEqual([])
      expect(t.state.current()).toEqual(MachineState.Exited({ exitCode: 0, expected: true }))
    }))

  it.effect("a foreign SIGKILL while quitting is not a graceful exit", () =>
    Effect.gen(function*() {
      const t = yield* setup({ onQuit: "foreign-kill" })
      const error = yield* Effect.flip(t.shutdown.run())
      expect(error.steps[0]!.detail).toContain("killed by SIGKILL instead of quitting")
    }))

  it.effect("without QMP the soft step is SIGTERM", () =>
    Effect.gen(function*() {
      const t = yield* setup({ qmp: false })
      yield* t.shutdown.run()
      expect(t.log).toEqual(["SIGTERM"])
    }))

  it.effect("a second shutdown waits for the first one's outcome and cleans up once", () =>
    Effect.gen(function*() {
      const t = yield* setup({ onQuit: "ignore" })
      const first = yield* Effect.fork(Effect.either(t.shutdown.run({ timeout: "1 second" })))
      const second = yield* Effect.fork(Effect.either(t.shutdown.run()))
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(first))._tag).toBe("Left")
      // Later callers get the ladder's end, not its failure a second time.
      expect((yield* Fiber.join(second))._tag).toBe("Right")
      expect(t.cleanups()).toBe(1)
      expect(t.log).toEqual(["quit", "SIGKILL"])
    }))
})

// What the tests above check under TestClock (Effect's race against the clock), on the live
// clock: there the ladder arms one plain timer, which kills QEMU and closes the monitor.
describe("shutdown ladder on the live clock", () => {
  it.live("a soft shutdown sends quit, waits for the exit, and cleans up once", () =>
    Effect.gen(function*() {
      const t = yield* setup({ onExit: true })
      yield* t.shutdown.run()
      expect(t.log).toEqual(["quit"])
      expect(t.cleanups()).toBe(1)
      expect(t.state.current()).toEqual(MachineState.Exited({ exitCode: 0, expected: true }))
    }))

  it.live("when QEMU ignores quit, the deadline kills it; AbnormalShutdown lists the timeout and the hard step", () =>
    Effect.gen(function*() {
      const t = yield* setup({ onQuit: "ignore", onExit: true })
      const started = Date.now()
      const error = yield* Effect.flip(t.shutdown.run({ timeout: "150 millis" }))
      expect(Date.now() - started).toBeGreaterThanOrEqual(140)
      expect(error.steps.map((s) => `${s.step}:${s.outcome}`)).toEqual(["soft:failed", "hard:ok"])
      expect(error.steps[0]!.detail).toContain("graceful shutdown timed out")
      expect(t.log).toEqual(["quit", "SIGKILL"])
      expect(t.state.current()).toEqual(MachineState.Exited({ exitCode: -9, expected: true }))
      expect(t.cleanups()).toBe(1)
    }))

  it.live("a quit that never gets an answer is ended by the deadline too", () =>
    Effect.gen(function*() {
      const t = yield* setup({ onExit: true })
      // A monitor whose quit is never answered, as a stuck QEMU's is.
      let closes = 0
      const hanging = Lifecycle.make({
        process: t.process,
        monitor: {
          execute: () => Effect.never,
          isConnected: Effect.succeed(true),
          closed: Effect.never,
          close: Effect.void,
          callbacks: { quit: () => {}, connected: () => true, onClosed: () => () => {}, close: () => void closes++ }
        },
        state: t.state,
        closeConsole: Effect.void,
        cleanup: Effect.void
      })
      const error = yield* Effect.flip(hanging.run({ timeout: "100 millis" }))
      expect(error.steps.map((s) => `${s.step}:${s.outcome}`)).toEqual(["soft:failed", "hard:ok"])
      expect(error.steps[0]!.detail).toContain("graceful shutdown timed out")
      expect(t.log).toEqual(["SIGKILL"])
      expect(closes).toBeGreaterThan(0)
    }))

  it.live("after the exit QMP is read to its end: the ladder waits for the connection to close", () =>
    Effect.gen(function*() {
      const t = yield* setup({ onExit: true, closeAfterExit: 60 })
      const started = Date.now()
      yield* t.shutdown.run()
      expect(Date.now() - started).toBeGreaterThanOrEqual(55)
      expect(yield* t.monitor!.isConnected).toBe(false)
      expect(t.cleanups()).toBe(1)
    }))

  it.live("a connection that outlives the exit is waited for a second at most", () =>
    Effect.gen(function*() {
      const t = yield* setup({ onExit: true, closeAfterExit: 5_000 })
      const started = Date.now()
      yield* t.shutdown.run()
      const took = Date.now() - started
      expect(took).toBeGreaterThanOrEqual(950)
      expect(took).toBeLessThan(4_000)
      expect(t.cleanups()).toBe(1)
    }))

  it.live("a foreign SIGKILL while quitting is not a graceful exit", () =>
    Effect.gen(function*() {
      const t = yield* setup({ onQuit: "foreign-kill", onExit: true })
      const error = yield* Effect.flip(t.shutdown.run())
      expect(error.steps[0]!.detail).toContain("killed by SIGKILL instead of quitting")
    }))

  it.live("without QMP the soft step is SIGTERM, and an expected exit is waited for", () =>
    Effect.gen(function*() {
      const t = yield* setup({ qmp: false, onExit: true })
      yield* t.shutdown.run()
      expect(t.log).toEqual(["SIGTERM"])
      const u = yield* setup({ onExit: true })
      const waiting = yield* Effect.fork(u.shutdown.wait())
      yield* Effect.sleep("20 millis")
      expect(waiting.unsafePoll()).toBeNull()
      u.exit({ code: 0, signal: null })
      yield* Fiber.join(waiting)
      expect(u.log).toEqual([])
      expect(u.state.current()).toEqual(MachineState.Exited({ exitCode: 0, expected: true }))
    }))
})

describe("run state transitions", () => {
  it.effect("nothing leaves Exited, and quit during a shutdown does not go back to QuitIssued", () =>
    Effect.gen(function*() {
      const state = yield* State.make
      expect(yield* state.transition(MachineState.ShuttingDown())).toBe(true)
      expect(yield* state.transition(MachineState.QuitIssued())).toBe(false)
      expect(yield* state.transition(MachineState.ExpectingExit())).toBe(false)
      expect(yield* state.exited(0)).toBe(true)
      for (const next of [MachineState.Running(), MachineState.ShuttingDown(), MachineState.QuitIssued()]) {
        expect(yield* state.transition(next)).toBe(false)
      }
      expect(yield* state.exited(-9)).toBe(false)
      expect(state.current()).toEqual(MachineState.Exited({ exitCode: 0, expected: true }))
    }))

  it.effect("an exit straight from Running is unexpected", () =>
    Effect.gen(function*() {
      const state = yield* State.make
      yield* state.exited(-11)
      expect(yield* state.get).toEqual(MachineState.Exited({ exitCode: -11, expected: false }))
    }))

  it.effect("stateChanges starts with the current state and ends after Exited", () =>
    Effect.gen(function*() {
      const state = yield* State.make
      yield* state.transition(MachineState.QuitIssued())
      const fiber = yield* collect(state.changes)
      yield* state.exited(0)
      const seen = Chunk.toReadonlyArray(yield* Fiber.join(fiber)).map((s) => s._tag)
      expect(seen).toEqual(["QuitIssued", "Exited"])
    }))
})
