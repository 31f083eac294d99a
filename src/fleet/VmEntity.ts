/**
 * The `Vm` entity of `@effect/cluster`: one QEMU machine per entity id, held by
 * whichever runner owns the id's shard. Its RPCs are the wire protocol between
 * a client (`Fleet.Fleet`) and the runner (`Fleet.runnerLayer`).
 *
 * A runner records every launch in the fleet's registry table. An entity that
 * starts for an id recorded as running (its runner died, or restarted) does not
 * relaunch: every call answers `VmLost { id, runner }` until the id is shut
 * down explicitly.
 *
 * @since 0.2.0
 */
import * as Entity from "@effect/cluster/Entity"
import type { RunnerAddress } from "@effect/cluster/RunnerAddress"
import * as Rpc from "@effect/rpc/Rpc"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Os from "node:os"
import * as QmpMessage from "../QmpMessage.js"
import * as FleetErrors from "./FleetErrors.js"
import { Registry } from "./internal/registry.js"
import * as VmSlot from "./internal/vm.js"
import * as MachineSpec from "./MachineSpec.js"
import * as Policy from "./Policy.js"

/**
 * The run state of a remote machine (the same tags as `QemuMachine`'s `MachineState`).
 *
 * @since 0.2.0
 * @category schemas
 */
export const MachineState = Schema.Union(
  Schema.TaggedStruct("Running", {}),
  Schema.TaggedStruct("QuitIssued", {}),
  Schema.TaggedStruct("ExpectingExit", {}),
  Schema.TaggedStruct("ShuttingDown", {}),
  Schema.TaggedStruct("Exited", { exitCode: Schema.Number, expected: Schema.Boolean })
)

/**
 * @since 0.2.0
 * @category models
 */
export type MachineState = Schema.Schema.Type<typeof MachineState>

/**
 * What a runner answers to a launch.
 *
 * @since 0.2.0
 * @category schemas
 */
export const Launched = Schema.Struct({
  /** The runner's address, `host:port`. */
  runner: Schema.String,
  name: Schema.String,
  pid: Schema.optional(Schema.Number)
})

/**
 * @since 0.2.0
 * @category models
 */
export interface Launched extends Schema.Schema.Type<typeof Launched> {}

const Arguments = Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown }))

/** Errors of any call on an id that runs (or ran) a VM. */
const Gone = Schema.Union(FleetErrors.VmLost, FleetErrors.VmNotFound)

const CallError = Schema.Union(
  FleetErrors.QmpCommandError,
  FleetErrors.QmpConnectionError,
  FleetErrors.QmpProtocolError,
  FleetErrors.QmpTimeoutError,
  FleetErrors.MachineError,
  FleetErrors.QmpArgumentError,
  FleetErrors.VmLost,
  FleetErrors.VmNotFound,
  FleetErrors.PolicyDenied
)

/**
 * @since 0.2.0
 * @category rpcs
 */
export const Launch = Rpc.make("Launch", {
  payload: { spec: MachineSpec.MachineSpec },
  success: Launched,
  error: Schema.Union(
    FleetErrors.LaunchFailure,
    FleetErrors.VmLost,
    FleetErrors.VmAlreadyLaunched,
    FleetErrors.MachineError,
    FleetErrors.PolicyDenied
  )
})

/**
 * @since 0.2.0
 * @category rpcs
 */
export const Command = Rpc.make("Command", {
  payload: { command: Schema.String, args: Arguments },
  success: Schema.Unknown,
  error: CallError
})

/**
 * @since 0.2.0
 * @category rpcs
 */
export const Qmp = Rpc.make("Qmp", {
  payload: { command: Schema.String, args: Arguments },
  success: QmpMessage.Response,
  error: CallError
})

/**
 * @since 0.2.0
 * @category rpcs
 */
export const EventWait = Rpc.make("EventWait", {
  payload: {
    name: Schema.String,
    match: Schema.optional(Schema.Unknown),
    timeout: Schema.optional(Schema.DurationFromMillis)
  },
  success: QmpMessage.Event,
  error: CallError
})

/**
 * @since 0.2.0
 * @category rpcs
 */
export const State = Rpc.make("State", { success: MachineState, error: Schema.Union(Gone, FleetErrors.MachineError) })

/**
 * @since 0.2.0
 * @category rpcs
 */
export const Shutdown = Rpc.make("Shutdown", {
  payload: { hard: Schema.optional(Schema.Boolean), timeout: Schema.optional(Schema.DurationFromMillis) },
  error: Schema.Union(FleetErrors.AbnormalShutdown, FleetErrors.MachineError)
})

/**
 * The client's heartbeat (and what `attach` asks): an entity that hears
 * nothing for the runner's `vmIdleTimeout` stops, and its VM is shut down.
 *
 * @since 0.2.0
 * @category rpcs
 */
export const Touch = Rpc.make("Touch", { success: Launched, error: Schema.Union(Gone, FleetErrors.MachineError) })

/**
 * @since 0.2.0
 * @category entities
 */
export const Vm = Entity.make("Vm", [Launch, Command, Qmp, EventWait, State, Shutdown, Touch])

/**
 * A runner as `host:port`.
 *
 * @since 0.2.0
 * @category utils
 */
export const formatRunner = (address: RunnerAddress): string => `${address.host}:${address.port}`

/**
 * A defect in a handler would make the cluster restart the entity and replay
 * the request, forever: the caller gets a `MachineError` instead.
 */
const answer = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | FleetErrors.MachineError> =>
  Effect.catchAllDefect(effect, (defect) =>
    Effect.zipRight(
      Effect.logError("fleet: defect in a Vm handler", defect),
      Effect.fail(new FleetErrors.MachineError({ message: `defect on the runner: ${String(defect)}` }))
    ))

/**
 * The handlers of one entity. Built once per entity id on the runner that
 * owns it; the VM lives in the entity's scope.
 */
const handlers = (policy: Policy.Policy) => Effect.gen(function*() {
  const ctx = yield* VmSlot.make({
    id: (yield* Entity.CurrentAddress).entityId,
    runner: formatRunner(yield* Entity.CurrentRunnerAddress),
    host: Os.hostname(),
    registry: yield* Registry,
    entityScope: yield* Scope.Scope
  })
  const held = VmSlot.held(ctx)

  const state = Effect.flatMap(held, (current) =>
    Effect.map(current.vm.state, (local): MachineState =>
      local._tag === "Exited"
        ? { _tag: "Exited", exitCode: local.exitCode, expected: local.expected }
        : { _tag: local._tag }))

  return Vm.of({
    // the policy first: a refused launch or command runs and writes nothing
    Launch: ({ payload }) =>
      answer(Effect.flatMap(Policy.checkSpec(policy, ctx.id, payload.spec), (spec) =>
        VmSlot.launch(ctx, { ...spec, args: [...(spec.args ?? []), ...Policy.sandboxArgs(policy)] }))),
    Command: ({ payload }) =>
      answer(Effect.zipRight(
        Policy.checkCommand(policy, ctx.id, payload.command, payload.args),
        Effect.flatMap(held, ({ vm }) => vm.command(payload.command, payload.args))
      )),
    Qmp: ({ payload }) =>
      answer(Effect.zipRight(
        Policy.checkCommand(policy, ctx.id, payload.command, payload.args),
        Effect.flatMap(held, ({ vm }) => vm.qmp(payload.command, payload.args))
      )),
    EventWait: ({ payload }) =>
      answer(Effect.flatMap(held, ({ vm }) =>
        vm.eventWait(payload.name, { match: payload.match, timeout: payload.timeout }))),
    State: () => answer(state),
    Shutdown: ({ payload }) => answer(VmSlot.shutdown(ctx, payload)),
    Touch: () => answer(Effect.flatMap(held, ({ vm }) => VmSlot.describe(ctx, vm)))
  })
})

/**
 * Registers the `Vm` entity with this runner's `Sharding`; every launch and
 * command passes `policy` (default: `Policy.make()`, strict) first.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: { readonly maxIdleTime: Duration.DurationInput; readonly policy?: Policy.Policy | undefined }) =>
  Vm.toLayer(handlers(options.policy ?? Policy.make()), { maxIdleTime: options.maxIdleTime, concurrency: "unbounded" })
