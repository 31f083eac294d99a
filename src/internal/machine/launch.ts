/**
 * `QemuMachine.launch`: prepare, start, then hand out the machine, whose
 * lifetime is a child scope of the caller's. Closing that scope runs the
 * shutdown ladder (unless a shutdown already ran) and releases everything.
 */
import { Effect, ExecutionStrategy, Exit, Option, Scope } from "effect"
import type { LaunchFailure } from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"
import * as Proc from "../process.js"
import * as Client from "../qmp/client.js"
import * as Redact from "../redact.js"
import * as Scoped from "../scoped.js"
import { withSpanIfTraced } from "../span.js"
import * as Accel from "./accel.js"
import * as Handle from "./handle.js"
import * as Lifecycle from "./lifecycle.js"
import { prepare } from "./prepare.js"
import { readText, start } from "./start.js"
import * as State from "./state.js"

const build = (config: Api.Config, scope: Scope.CloseableScope, recorded: Api.Config) =>
  Effect.gen(function*() {
    const prepared = yield* prepare(config, scope)
    const { child, killAndFail, qmp } = yield* start(config, prepared)
    // Connected: what this machine keeps open is counted by the next launch's look at /proc.
    prepared.releaseFds()
    const state = State.unsafeMake()
    // QEMU exiting by itself (guest power-off) is a state change too.
    child.onExit((exit) => void state.unsafeExited(Proc.exitCodeOf(exit)))

    let shutdown: Lifecycle.Shutdown | undefined
    const console = Handle.makeConsole(config, prepared, scope, () => shutdown?.started() ?? false)
    if (config.console && config.drainConsole) {
      yield* console.get.pipe(Effect.catchAll((e) => killAndFail("QmpFailed", e, e.message)))
    }

    // Warnings about this machine carry its name (annotated here only: an annotation
    // around the whole close would be a FiberRef update on every close)
    const warn = (message: string) => Effect.logWarning(message).pipe(Effect.annotateLogs("machine", prepared.name))

    let log = Option.none<string>()
    const release = Effect.suspend(() => {
      const exit = child.exitInfo()
      // Sync on purpose: open/read/close of a small cached file are microseconds on the event loop,
      // while the async read is four threadpool hops queued behind every other machine's cleanup.
      if (Option.isNone(log)) log = Option.some(readText(prepared.logFile))
      const closed = Scope.close(scope, Exit.void)
      return exit?.signal && !child.sentSignals.has(exit.signal)
        ? Effect.zipRight(closed, warn(`QEMU received signal ${exit.signal}; command: ${Redact.redactArgs(prepared.args).join(" ")}`))
        : closed
    })
    const cleanup = Effect.zipRight(qmp ? Effect.zipRight(qmp.close, console.close) : console.close, release)
    // The ladder's `quit` needs no typed reply: the raw one, failing only on `{ error }`.
    const monitor: Lifecycle.Monitor | undefined = qmp && {
      execute: (command) => Effect.flatMap(qmp.executeRaw(command), Client.unwrap(command)),
      isConnected: qmp.isConnected,
      closed: qmp.closed,
      close: qmp.close,
      callbacks: Client.callbacksOf(qmp)
    }
    const ladder = Lifecycle.make({ process: child, monitor, state, closeConsole: console.close, cleanup })
    shutdown = ladder

    // The scope's own finalizer: callers who care about a failure call shutdown themselves.
    // When shutdown already ran, it is what is closing this scope: nothing to wait for.
    yield* Scoped.addTo(
      scope,
      Effect.suspend(() => ladder.started() ? Effect.void : ladder.run()).pipe(
        Effect.catchAll((e) => warn(`shutdown of ${prepared.name} was not graceful: ${e.message}`))
      )
    )
    const guestAgent = Handle.makeGuestAgent(prepared, scope, child, qmp, ladder.started)
    return Handle.make({ prepared, child, qmp, state, shutdown: ladder, console, guestAgent, log: () => log, recorded })
  })

/** `recorded`: what `vm.snapshot()` saves as the machine's configuration (a restore launches with more). */
export const launch = (
  config: Api.Config,
  recorded: Api.Config = config
): Effect.Effect<Api.Machine, LaunchFailure, Scope.Scope> =>
  Effect.gen(function*() {
    // `setAccel("auto")` becomes the accelerator the probe found (probed once per binary).
    const resolved = yield* Accel.resolve(config)
    const parent = yield* Effect.scope
    const scope = yield* Scope.fork(parent, ExecutionStrategy.sequential)
    // Everything the machine acquires goes to its scope: one Scope.extend here, not one per resource.
    return yield* build(resolved, scope, recorded).pipe(
      Scope.extend(scope),
      Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
    )
  }).pipe(
    // No call-site stack: it is an Error captured on every launch, and the span's name says where it is.
    withSpanIfTraced("QemuMachine.launch", { attributes: { binary: config.binary }, captureStackTrace: false })
  )
