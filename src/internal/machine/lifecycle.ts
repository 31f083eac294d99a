/**
 * The shutdown ladder: soft (`quit`, or SIGTERM without QMP; nothing when the
 * guest is expected to exit by itself), then hard (SIGKILL), then cleanup.
 * What the soft step does is decided by the run state it starts from, not by
 * flags. Built from Effect combinators so that it can be driven by a fake
 * process and `TestClock` in tests.
 */
import { Cause, Deferred, Duration, Effect, Exit, FiberId } from "effect"
import { AbnormalShutdown, describeCause, MachineError, QmpTimeoutError } from "../../Errors.js"
import type {
  QmpArgumentError,
  QmpCommandError,
  QmpConnectionError,
  QmpError,
  QmpProtocolError,
  ShutdownStep
} from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"
import * as Deadline from "../deadline.js"
import * as Proc from "../process.js"
import type * as Client from "../qmp/client.js"
import { withSpanIfTraced } from "../span.js"
import * as State from "./state.js"

/** The part of a child process the ladder uses. */
export type Process =
  & Pick<Proc.Child, "exited" | "exitInfo" | "signal" | "sentSignals">
  & Partial<Pick<Proc.Child, "onExit">>

/** The part of a QMP connection the ladder uses. */
export interface Monitor {
  readonly execute: (command: string) => Effect.Effect<unknown, QmpCommandError | QmpArgumentError | QmpError>
  readonly isConnected: Effect.Effect<boolean>
  readonly closed: Effect.Effect<QmpConnectionError | QmpProtocolError>
  readonly close: Effect.Effect<void>
  /** The same at callback level (real connections): the live-clock soft step then takes no Effect step. */
  readonly callbacks?: Client.Callbacks | undefined
}

export interface Deps {
  readonly process: Process
  readonly monitor: Monitor | undefined
  readonly state: State.StateRef
  /** Closes the console (when one is connected). */
  readonly closeConsole: Effect.Effect<void>
  /** Releases everything else the machine holds (its scope, temp dir, ...). */
  readonly cleanup: Effect.Effect<void>
}

export const DEFAULT_SHUTDOWN_TIMEOUT = Duration.seconds(30)
const KILL_WAIT = Duration.seconds(60)
const QMP_DRAIN_WAIT = Duration.seconds(1)

export const describeExit = (exit: Proc.ExitInfo): string =>
  exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.code}`

/** The exit QEMU was expected to make by itself, given the state the ladder started from. */
const expectsExit = (before: Api.MachineState): boolean =>
  before._tag === "QuitIssued" || before._tag === "ExpectingExit" || (before._tag === "Exited" && before.expected)

const timeoutError = (timeout: Duration.Duration) =>
  new QmpTimeoutError({ operation: "graceful shutdown", timeout, channel: "process" })

const alreadyExited = (process: Process) =>
  new MachineError({ message: `QEMU had already exited (${describeExit(process.exitInfo()!)})` })

// A dropped connection after our quit is success only if QEMU quit: a foreign
// signal (e.g. an external SIGKILL racing this shutdown) is not a graceful exit.
const foreignDeath = (process: Process, exit: Proc.ExitInfo): MachineError | undefined =>
  exit.signal !== null && !process.sentSignals.has(exit.signal)
    ? new MachineError({ message: `QEMU was ${describeExit(exit)} instead of quitting` })
    : undefined

const softDone = (expecting: boolean, exit: Proc.ExitInfo, quit: boolean) =>
  expecting ? `QEMU exited by itself (${describeExit(exit)})` : `QEMU exited after ${quit ? "quit" : "SIGTERM"}`

/**
 * The soft step in Effect steps, raced against the clock's deadline: under
 * `TestClock`, and for a monitor without callbacks.
 */
const softRaced = (deps: Deps, before: Api.MachineState, timeout: Duration.Duration) =>
  Effect.gen(function*() {
    const { monitor, process } = deps
    const expecting = expectsExit(before)
    // The console is always drained, so it cannot block QEMU; when the guest is
    // expected to exit by itself, it keeps reading (the last words, input in flight).
    if (!expecting) yield* deps.closeConsole
    if (before._tag === "Exited" && !expecting) return yield* Effect.fail(alreadyExited(process))
    const sendQuit = monitor !== undefined && !expecting
    if (monitor) {
      if (sendQuit) yield* monitor.execute("quit").pipe(Effect.catchTag("QmpConnectionError", () => Effect.void))
      // Read QMP to its end, so every event QEMU sent before exiting is kept.
      yield* process.exited
      if (yield* monitor.isConnected) yield* monitor.closed.pipe(Effect.timeout(QMP_DRAIN_WAIT), Effect.ignore)
      yield* monitor.close
    } else if (!expecting) {
      process.signal("SIGTERM")
    }
    const exit = yield* process.exited
    const foreign = sendQuit ? foreignDeath(process, exit) : undefined
    if (foreign) return yield* Effect.fail(foreign)
    return softDone(expecting, exit, monitor !== undefined)
  }).pipe(Effect.timeoutFail({ duration: timeout, onTimeout: () => timeoutError(timeout) }))

/**
 * The soft step on the live clock, as plain callbacks in one async step: the
 * same steps as `softRaced`, bounded by one timer (see deadline.ts). At the
 * deadline QEMU is sent SIGKILL and the monitor closed, and the step fails
 * with the timeout at once (the hard step then waits for the exit).
 */
const softFast = (
  deps: Deps,
  before: Api.MachineState,
  timeout: Duration.Duration,
  onExit: NonNullable<Process["onExit"]>,
  monitor: Client.Callbacks | undefined
) =>
  Effect.async<string, MachineError | QmpTimeoutError | QmpCommandError>((resume) => {
    const { process } = deps
    const expecting = expectsExit(before)
    if (before._tag === "Exited" && !expecting) return resume(Effect.fail(alreadyExited(process)))
    const sendQuit = monitor !== undefined && !expecting
    const offs: Array<() => void> = []
    let finished = false
    const stop = () => {
      finished = true
      for (const off of offs) off()
    }
    const finish = (result: Effect.Effect<string, MachineError | QmpTimeoutError | QmpCommandError>) => {
      if (finished) return
      stop()
      resume(result)
    }
    offs.push(Deadline.arm(timeout, () => {
      // Failed first: the exit the SIGKILL brings must not read as a graceful one.
      finish(Effect.fail(timeoutError(timeout)))
      process.signal("SIGKILL")
      monitor?.close()
    }))
    const exited = (exit: Proc.ExitInfo) => {
      const done = () => {
        monitor?.close()
        const foreign = sendQuit ? foreignDeath(process, exit) : undefined
        finish(foreign ? Effect.fail(foreign) : Effect.succeed(softDone(expecting, exit, monitor !== undefined)))
      }
      // Read QMP to its end (a second at most), so every event QEMU sent before exiting is kept.
      if (monitor === undefined || !monitor.connected()) return done()
      const offClosed = monitor.onClosed(done)
      if (!finished) offs.push(offClosed, Deadline.arm(QMP_DRAIN_WAIT, done))
    }
    if (sendQuit) monitor.quit((error) => error && finish(Effect.fail(error)))
    else if (monitor === undefined && !expecting) process.signal("SIGTERM")
    if (!finished) offs.push(onExit(exited))
    // Interrupted (the ladder's caller gave up): the timers and listeners go, the hard step follows.
    return Effect.sync(() => {
      if (!finished) stop()
    })
  })

const soft = (deps: Deps, before: Api.MachineState, timeout: Duration.Duration) => {
  const onExit = deps.process.onExit
  const monitor = deps.monitor
  if (onExit === undefined || (monitor !== undefined && monitor.callbacks === undefined)) {
    return softRaced(deps, before, timeout)
  }
  return Deadline.onLiveClock(
    () =>
      expectsExit(before)
        ? softFast(deps, before, timeout, onExit, monitor?.callbacks)
        : Effect.zipRight(deps.closeConsole, softFast(deps, before, timeout, onExit, monitor?.callbacks)),
    () => softRaced(deps, before, timeout)
  )
}

/** SIGKILL, unless QEMU has exited already; the step's detail says which. */
const hard = (deps: Deps): Effect.Effect<ShutdownStep> =>
  Effect.gen(function*() {
    yield* deps.closeConsole
    if (deps.process.exitInfo()) return { step: "hard", outcome: "ok", detail: "nothing to kill: QEMU had exited" } as const
    deps.process.signal("SIGKILL")
    yield* deps.process.exited.pipe(
      Effect.timeoutFail({
        duration: KILL_WAIT,
        onTimeout: () => new QmpTimeoutError({
          operation: "waiting for QEMU to die after SIGKILL",
          timeout: KILL_WAIT,
          channel: "process"
        })
      }),
      Effect.orDie
    )
    return { step: "hard", outcome: "ok", detail: "SIGKILL, QEMU exited" } as const
  })

/** Runs the ladder from `before`; the steps taken are pushed to `steps`. */
const ladder = (
  deps: Deps,
  before: Api.MachineState,
  options: Api.ShutdownOptions | undefined,
  restore: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
): Effect.Effect<void, AbnormalShutdown> => {
  const steps: Array<ShutdownStep> = []
  if (options?.hard) return Effect.asVoid(hard(deps))
  const timeout = Duration.decode(options?.timeout ?? DEFAULT_SHUTDOWN_TIMEOUT)
  return Effect.matchCauseEffect(restore(soft(deps, before, timeout)), {
    onSuccess: (detail) => {
      steps.push({ step: "soft", outcome: "ok", detail })
      return Effect.void
    },
    onFailure: (cause) => {
      const error = Cause.squash(cause)
      steps.push({ step: "soft", outcome: "failed", detail: describeCause(error) })
      return Effect.flatMap(hard(deps), (hardStep) => {
        steps.push(hardStep)
        return Effect.fail(new AbnormalShutdown({ cause: error, steps: [...steps] }))
      })
    }
  })
}

export interface Shutdown {
  /** Stops QEMU and cleans up; every later call waits for the first one's outcome. */
  readonly run: (options?: Api.ShutdownOptions) => Effect.Effect<void, AbnormalShutdown>
  /**
   * `vm.wait`: expects QEMU to exit by itself, then runs the ladder. An exit
   * that came before the call (a guest power-off seen first) is the exit it
   * waits for, not a failure.
   */
  readonly wait: (options?: { readonly timeout?: Duration.DurationInput | undefined }) => Effect.Effect<void, AbnormalShutdown>
  /** Whether a shutdown has started. */
  readonly started: () => boolean
}

let shuttingDown = 0

/** How many shutdowns are under way in this process. */
export const inFlight = (): number => shuttingDown

export const make = (deps: Deps): Shutdown => {
  let done: Deferred.Deferred<void, AbnormalShutdown> | undefined
  const start = (options: Api.ShutdownOptions | undefined, waiting: boolean): Effect.Effect<void, AbnormalShutdown> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        if (done) return Effect.ignore(restore(Deferred.await(done)))
        const result = Deferred.unsafeMake<void, AbnormalShutdown>(FiberId.none)
        done = result
        const current = deps.state.current()
        const before = waiting && current._tag === "Exited" ? { ...current, expected: true } : current
        shuttingDown++
        deps.state.unsafeTransition(State.MachineState.ShuttingDown())
        // Whatever the ladder's outcome: the exit state, then the cleanup, then the outcome told to
        // every later caller, in one step each (two ensurings and an onExit were a dozen steps per close).
        return Effect.flatMap(Effect.exit(ladder(deps, before, options, restore)), (exit) => {
          const info = deps.process.exitInfo()
          if (info) deps.state.unsafeExited(Proc.exitCodeOf(info))
          return Effect.flatMap(Effect.exit(deps.cleanup), (cleaned) => {
            const outcome = Exit.isSuccess(cleaned)
              ? exit
              : Exit.isFailure(exit)
              ? Exit.failCause(Cause.sequential(exit.cause, cleaned.cause))
              : cleaned
            shuttingDown--
            Deferred.unsafeDone(result, Exit.asVoid(outcome))
            return outcome
          })
        }).pipe(withSpanIfTraced("QemuMachine.shutdown", { captureStackTrace: false }))
      })
    )
  return {
    run: (options) => start(options, false),
    wait: (options) =>
      Effect.zipRight(
        deps.state.transition(State.MachineState.ExpectingExit()),
        start({ timeout: options?.timeout }, true)
      ),
    started: () => done !== undefined
  }
}
