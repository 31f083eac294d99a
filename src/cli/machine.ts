/**
 * The backend of `run`: a machine launched through `QemuMachine` (loaded
 * only by `run`: the library's machine code is the larger part of it).
 *
 * @since 0.3.0
 */
import { Effect, Either, Fiber, Option, type Scope } from "effect"
import { QmpTimeoutError } from "../Errors.js"
import * as Proc from "../internal/process.js"
import * as QemuMachine from "../QemuMachine.js"
import { asRecord, fromClient } from "./backends.js"
import { CliFailure, EXIT_FATAL, EXIT_OK, fatal } from "./errors.js"
import type * as Shell from "./shell.js"

/**
 * @since 0.3.0
 * @category models
 */
export interface MachineOptions {
  readonly binary: string
  readonly args: ReadonlyArray<string>
  readonly console: boolean
  readonly baseTempDir?: string | undefined
}

/**
 * Launches a machine, hands its console to the shell when asked, runs `use`
 * on it, then shuts it down (soft, then hard). An interruption (Ctrl-C) closes
 * the scope, which shuts it down the same way.
 *
 * @since 0.3.0
 * @category constructors
 */
export const machine = <A>(
  options: MachineOptions,
  use: (backend: Shell.Backend) => Effect.Effect<A, CliFailure, Scope.Scope>
): Effect.Effect<A, CliFailure, Scope.Scope> =>
  Effect.gen(function*() {
    const base = QemuMachine.make({ binary: options.binary, args: options.args, baseTempDir: options.baseTempDir })
    const config = options.console ? QemuMachine.setConsole()(base) : base
    const vm = yield* QemuMachine.launch(config).pipe(Effect.mapError(fatal))
    // The shell prints the console: stdout carries replies and events only.
    const console = options.console ? Option.some(yield* vm.console.pipe(Effect.mapError(fatal))) : Option.none()
    const client = yield* Option.match(vm.qmpClient, {
      onNone: () => Effect.fail(new CliFailure({ message: "the machine has no QMP monitor", exitCode: EXIT_FATAL })),
      onSome: Effect.succeed
    })
    const backend = yield* fromClient(client)
    const gone = yield* Effect.forkScoped(client.closed)
    // Commands go through the machine, so that `quit` counts as issued and its EOF is success.
    const result = yield* use({
      ...backend,
      ...(Option.isSome(console) ? { console: console.value.stream } : {}),
      execute: (command) =>
        vm.qmp(command.execute, command.arguments).pipe(Effect.map(asRecord), Effect.mapError(fatal)),
      // QEMU ending the connection (guest power-off, `quit`) ends the shell normally; how QEMU
      // ended is judged below.
      closed: Effect.as(client.closed, new CliFailure({ message: "", exitCode: EXIT_OK }))
    })
    // Exited by itself (power-off, `quit`, killed): collect it; still running: soft, then hard.
    const closed = Option.isSome(yield* Fiber.poll(gone))
    const running = yield* vm.isRunning
    if (running && !closed) {
      const shut = yield* Effect.either(vm.shutdown())
      if (Either.isRight(shut)) return result
      // Killed from outside just before the shutdown (its death not yet seen when input ended):
      // the same report as when it was seen first. A timed-out soft step's SIGKILL is ours.
      if (shut.left.cause instanceof QmpTimeoutError) return yield* Effect.fail(fatal(shut.left))
      return yield* Effect.fail(killedBy(yield* vm.exitCode) ?? fatal(shut.left))
    }
    const waited = yield* Effect.either(vm.wait({ timeout: "10 seconds" }))
    const killed = killedBy(yield* vm.exitCode)
    if (killed) return yield* Effect.fail(killed)
    if (Either.isLeft(waited)) return yield* Effect.fail(fatal(waited.left))
    return result
  })

/** "QEMU was killed by SIGKILL" for an exit by a signal (a negative exit code). */
const killedBy = (exitCode: Option.Option<number>): CliFailure | undefined => {
  const code = Option.getOrUndefined(exitCode)
  if (code === undefined || code >= 0) return undefined
  return new CliFailure({ message: `QEMU was killed by ${Proc.describeSignal(-code)}`, exitCode: EXIT_FATAL })
}
