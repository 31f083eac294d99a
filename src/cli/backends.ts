/**
 * What the shell talks to: a QEMU over QMP (`QmpClient.connect`), raw JSON
 * lines without negotiation (`-N`), a machine we launch (`run`), or a guest
 * agent socket (`ga`).
 *
 * @since 0.2.0
 */
import { type Duration, Effect, Option, Scope, Stream } from "effect"
import type { GuestAgentError, QmpError } from "../Errors.js"
import * as GuestAgent from "../GuestAgent.js"
import { QemuMachine, QmpClient } from "../index.js"
import * as Catalog from "./catalog.js"
import { CliFailure, EXIT_FATAL, EXIT_OK, fatal } from "./errors.js"
import * as LineClient from "./lineClient.js"
import * as Schema from "./schema.js"
import type * as Parse from "./parse.js"
import type * as Shell from "./shell.js"

const asRecord = (u: unknown): Record<string, unknown> => u as Record<string, unknown>

const fromClient = (qmp: QmpClient.QmpClient.Service): Effect.Effect<Shell.Backend, never, Scope.Scope> =>
  Effect.map(qmp.subscribe, (events) => ({
    execute: (command: Parse.Command) =>
      qmp.executeRaw(command.execute, command.arguments).pipe(Effect.map(asRecord), Effect.mapError(fatal)),
    unsolicited: events,
    closed: Effect.map(qmp.closed, fatal),
    catalog: qmp.execute("query-qmp-schema").pipe(Effect.map(Catalog.fromSchema), Effect.orElseSucceed(() => Catalog.empty))
  }))

/**
 * QMP through the library's client: negotiated, events subscribed before the
 * first command.
 *
 * @since 0.2.0
 * @category constructors
 */
export const qmp = (address: QmpClient.Address): Effect.Effect<Shell.Backend, CliFailure, Scope.Scope> =>
  QmpClient.connect({ address, connectTimeout: "10 seconds" }).pipe(
    Effect.mapError(fatal),
    Effect.flatMap(fromClient)
  )

/**
 * `-N`: raw lines, no negotiation; the greeting is printed like an event.
 * Completion knows the command names of the generated types (`Qapi`).
 *
 * @since 0.2.0
 * @category constructors
 */
export const raw = (address: QmpClient.Address): Effect.Effect<Shell.Backend, CliFailure, Scope.Scope> =>
  Effect.map(LineClient.connect(address), (client) => ({
    execute: (command: Parse.Command) => client.request({ ...command }),
    unsolicited: client.unsolicited,
    closed: client.closed,
    // Before negotiation QEMU answers nothing but qmp_capabilities: names come from the generated types.
    catalog: Schema.loadGenerated.pipe(
      Effect.map((names) => Catalog.fromNames(["qmp_capabilities", ...names.commands])),
      Effect.orElseSucceed(() => Catalog.empty)
    )
  }))

// Agent commands that never answer on success.
const GA_NO_REPLY: ReadonlySet<string> = new Set([
  "guest-shutdown",
  "guest-suspend-disk",
  "guest-suspend-ram",
  "guest-suspend-hybrid"
])

/**
 * A guest agent socket, through `GuestAgent.connect` (resynchronised with
 * `guest-sync-delimited`); command names for completion from `guest-info`.
 * The agent's `{ error }` is printed as a reply like QMP's.
 *
 * @since 0.2.0
 * @category constructors
 */
export const guestAgent = (
  address: QmpClient.Address,
  timeout: Duration.DurationInput
): Effect.Effect<Shell.Backend, CliFailure, Scope.Scope> =>
  Effect.map(
    Effect.mapError(GuestAgent.connect({ address, timeout }), fatal),
    (agent) => ({
      execute: (command: Parse.Command): Effect.Effect<Record<string, unknown>, CliFailure> =>
        (agent.execute(command.execute as string, command.arguments) as Effect.Effect<unknown, GuestAgentError | QmpError>).pipe(
          Effect.map((value): Record<string, unknown> => ({ return: value })),
          Effect.catchTag("GuestAgentError", (e) => Effect.succeed({ error: { class: e.errorClass, desc: e.desc } })),
          Effect.mapError(fatal)
        ),
      unsolicited: Stream.empty,
      closed: Effect.map(agent.closed, fatal),
      catalog: agent.info.pipe(
        Effect.map((info) =>
          Catalog.fromNames(info.supported_commands.flatMap((c) => c.enabled ? [c.name] : []))
        ),
        Effect.orElseSucceed(() => Catalog.empty)
      ),
      noReply: GA_NO_REPLY
    })
  )

/**
 * @since 0.2.0
 * @category models
 */
export interface MachineOptions {
  readonly binary: string
  readonly args: ReadonlyArray<string>
  readonly console: boolean
  readonly baseTempDir?: string | undefined
}

/**
 * Launches a machine, mirrors its console to stdout when asked, runs `use`
 * on it, then shuts it down (soft, then hard). An interruption (Ctrl-C) closes
 * the scope, which shuts it down the same way.
 *
 * @since 0.2.0
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
    if (options.console) {
      const console = yield* vm.console.pipe(Effect.mapError(fatal))
      yield* console.stream.pipe(
        Stream.runForEach((bytes) => Effect.sync(() => process.stdout.write(bytes))),
        Effect.forkScoped
      )
    }
    const client = yield* Option.match(vm.qmpClient, {
      onNone: () => Effect.fail(new CliFailure({ message: "the machine has no QMP monitor", exitCode: EXIT_FATAL })),
      onSome: Effect.succeed
    })
    const backend = yield* fromClient(client)
    // Commands go through the machine, so that `quit` counts as issued and its EOF is success.
    const result = yield* use({
      ...backend,
      execute: (command) =>
        vm.qmp(command.execute, command.arguments).pipe(Effect.map(asRecord), Effect.mapError(fatal)),
      // QEMU ending the connection (guest power-off, `quit`) ends the shell normally; how QEMU
      // ended is judged below.
      closed: Effect.as(client.closed, new CliFailure({ message: "", exitCode: EXIT_OK }))
    })
    // Exited by itself (power-off, `quit`): collect it; still running: soft, then hard.
    const running = yield* vm.isRunning
    yield* (running ? vm.shutdown() : vm.wait({ timeout: "10 seconds" })).pipe(Effect.mapError(fatal))
    return result
  })
