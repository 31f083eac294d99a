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
import * as Exit from "effect/Exit"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Os from "node:os"
import * as QemuMachine from "../QemuMachine.js"
import * as QmpMessage from "../QmpMessage.js"
import * as FleetErrors from "./FleetErrors.js"
import { Registry } from "./internal/registry.js"
import * as Sweep from "./internal/sweep.js"
import * as MachineSpec from "./MachineSpec.js"

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
  FleetErrors.VmLost,
  FleetErrors.VmNotFound
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
    FleetErrors.MachineError
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
export const State = Rpc.make("State", { success: MachineState, error: Gone })

/**
 * @since 0.2.0
 * @category rpcs
 */
export const Shutdown = Rpc.make("Shutdown", {
  payload: { hard: Schema.optional(Schema.Boolean), timeout: Schema.optional(Schema.DurationFromMillis) },
  error: FleetErrors.AbnormalShutdown
})

/**
 * The client's heartbeat (and what `attach` asks): an entity that hears
 * nothing for the runner's `vmIdleTimeout` stops, and its VM is shut down.
 *
 * @since 0.2.0
 * @category rpcs
 */
export const Touch = Rpc.make("Touch", { success: Launched, error: Gone })

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

type Slot =
  | { readonly _tag: "Empty" }
  | { readonly _tag: "Lost"; readonly runner: string; readonly detail: string }
  | {
    readonly _tag: "Held"
    readonly vm: QemuMachine.Machine
    readonly scope: Scope.CloseableScope
    readonly shuttingDown: boolean
  }

const registryFailure = (cause: unknown) =>
  new FleetErrors.MachineError({ message: `fleet registry: ${String(cause)}` })

/**
 * The handlers of one entity. Built once per entity id on the runner that
 * owns it; the VM lives in the entity's scope.
 */
const handlers = Effect.gen(function*() {
  const address = yield* Entity.CurrentAddress
  const runner = formatRunner(yield* Entity.CurrentRunnerAddress)
  const host = Os.hostname()
  const registry = yield* Registry
  const entityScope = yield* Scope.Scope
  const id = address.entityId
  const lock = yield* Effect.makeSemaphore(1)

  const prior = yield* Effect.orDie(registry.get(id))
  if (Option.isSome(prior) && prior.value.status === "running") {
    yield* Effect.forkIn(Sweep.leftovers(prior.value), entityScope)
  }
  const slot = yield* Ref.make<Slot>(
    Option.match(prior, {
      onNone: () => ({ _tag: "Empty" }),
      onSome: (record) => ({
        _tag: "Lost",
        runner: record.runner,
        detail: record.status === "released"
          ? "shut down: no heartbeat from its client"
          : "its runner stopped or died"
      })
    })
  )

  // The entity stops (idle, runner shutdown, shard moved): the VM goes with
  // it, recorded as released so that later calls say VmLost instead of nothing.
  yield* Scope.addFinalizer(
    entityScope,
    Effect.flatMap(Ref.get(slot), (current) =>
      current._tag === "Held"
        ? Scope.close(current.scope, Exit.void).pipe(
          Effect.zipRight(Effect.ignore(registry.put({ id, runner, status: "released", host })))
        )
        : Effect.void)
  )

  type Held = Extract<Slot, { _tag: "Held" }>
  const whenHeld = (current: Slot): Effect.Effect<Held, FleetErrors.VmLost | FleetErrors.VmNotFound> => {
    switch (current._tag) {
      case "Held":
        return Effect.succeed(current)
      case "Lost":
        return Effect.fail(new FleetErrors.VmLost({ id, runner: current.runner, detail: current.detail }))
      case "Empty":
        return Effect.fail(new FleetErrors.VmNotFound({ id }))
    }
  }
  const held = Effect.flatMap(Ref.get(slot), whenHeld)

  const launch = (spec: MachineSpec.MachineSpec) =>
    lock.withPermits(1)(Effect.gen(function*() {
      const current = yield* Ref.get(slot)
      if (current._tag === "Held") return yield* new FleetErrors.VmAlreadyLaunched({ id, runner })
      if (current._tag === "Lost" && current.detail === "its runner stopped or died") {
        return yield* new FleetErrors.VmLost({ id, runner: current.runner, detail: current.detail })
      }
      // Recorded before QEMU starts: if this runner dies in between, the id is lost, not forgotten.
      yield* registry.put({ id, runner, status: "running", host }).pipe(Effect.mapError(registryFailure))
      const scope = yield* Scope.fork(entityScope, ExecutionStrategy.sequential)
      const vm = yield* QemuMachine.launch(MachineSpec.toConfig(spec)).pipe(
        Scope.extend(scope),
        Effect.mapError(FleetErrors.fromLaunchFailure),
        Effect.onError(() =>
          Scope.close(scope, Exit.void).pipe(Effect.zipRight(Effect.ignore(registry.remove(id, runner))))
        )
      )
      yield* Ref.set(slot, { _tag: "Held", vm, scope, shuttingDown: false })
      // …and where its files are, for the runner that finds it lost
      yield* Effect.ignore(registry.put({ id, runner, status: "running", host, tempDir: vm.tempDir }))
      const pid = yield* vm.pid
      return { runner, name: vm.name, pid: Option.getOrUndefined(pid) }
    }))

  const state = Effect.flatMap(held, (current) =>
    Effect.map(current.vm.state, (local): MachineState =>
      local._tag === "Exited"
        ? { _tag: "Exited", exitCode: local.exitCode, expected: local.expected }
        : current.shuttingDown && local._tag === "Running"
        ? { _tag: "ShuttingDown" }
        : { _tag: local._tag }))

  const shutdown = (options: { readonly hard?: boolean | undefined; readonly timeout?: Duration.Duration | undefined }) =>
    lock.withPermits(1)(Effect.gen(function*() {
      const current = yield* Ref.get(slot)
      if (current._tag === "Empty") return
      if (current._tag === "Lost") {
        yield* Effect.ignore(registry.remove(id, current.runner))
        yield* Ref.set(slot, { _tag: "Empty" })
        return
      }
      yield* Ref.set(slot, { ...current, shuttingDown: true })
      const result = yield* Effect.exit(current.vm.shutdown({ hard: options.hard, timeout: options.timeout }))
      yield* Scope.close(current.scope, Exit.void)
      yield* Ref.set(slot, { _tag: "Empty" })
      yield* Effect.ignore(registry.remove(id, runner))
      if (Exit.isFailure(result)) {
        return yield* Effect.mapError(result, FleetErrors.fromAbnormalShutdown)
      }
    }))

  return Vm.of({
    Launch: ({ payload }) => launch(payload.spec),
    Command: ({ payload }) =>
      Effect.flatMap(held, ({ vm }) =>
        Effect.mapError(vm.command(payload.command, payload.args), FleetErrors.fromQmpError)),
    Qmp: ({ payload }) =>
      Effect.flatMap(held, ({ vm }) => Effect.mapError(vm.qmp(payload.command, payload.args), FleetErrors.fromQmpError)),
    EventWait: ({ payload }) =>
      Effect.flatMap(held, ({ vm }) =>
        Effect.mapError(
          vm.eventWait(payload.name, { match: payload.match, timeout: payload.timeout }),
          FleetErrors.fromQmpError
        )),
    State: () => state,
    Shutdown: ({ payload }) => shutdown(payload),
    Touch: () =>
      Effect.flatMap(held, ({ vm }) =>
        Effect.map(vm.pid, (pid) => ({ runner, name: vm.name, pid: Option.getOrUndefined(pid) })))
  })
})

/**
 * Registers the `Vm` entity with this runner's `Sharding`.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: { readonly maxIdleTime: Duration.DurationInput }) =>
  Vm.toLayer(handlers, { maxIdleTime: options.maxIdleTime, concurrency: "unbounded" })
