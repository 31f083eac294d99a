/**
 * One entity's VM: a slot (empty, held, or lost with a dead runner) behind a
 * lock, and the launch / state / shutdown steps the `Vm` entity's RPCs use.
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import * as QemuMachine from "../../QemuMachine.js"
import * as FleetErrors from "../FleetErrors.js"
import * as MachineSpec from "../MachineSpec.js"
import type * as Registry from "./registry.js"
import * as Sweep from "./sweep.js"

export type Slot =
  | { readonly _tag: "Empty" }
  /** `relaunchable`: released by a live runner (idle, shutdown), not lost with a dead one. */
  | { readonly _tag: "Lost"; readonly runner: string; readonly detail: string; readonly relaunchable: boolean }
  | Held

export interface Held {
  readonly _tag: "Held"
  readonly vm: QemuMachine.Machine
  readonly scope: Scope.CloseableScope
}

export interface Context {
  readonly id: string
  readonly runner: string
  readonly host: string
  readonly registry: Registry.Service
  readonly entityScope: Scope.Scope
  readonly slot: Ref.Ref<Slot>
  readonly lock: Effect.Semaphore
}

export interface Launched {
  readonly runner: string
  readonly name: string
  readonly pid: number | undefined
}

const registryFailure = (cause: unknown) => new FleetErrors.MachineError({ message: `fleet registry: ${String(cause)}` })

/** The slot of a new entity, from what the registry remembers of the id. */
export const make = (options: Omit<Context, "slot" | "lock">): Effect.Effect<Context> =>
  Effect.gen(function*() {
    const prior = yield* Effect.orDie(options.registry.get(options.id))
    if (Option.isSome(prior) && prior.value.status === "running") {
      yield* Effect.forkIn(Sweep.leftovers(prior.value), options.entityScope)
    }
    const slot = yield* Ref.make<Slot>(Option.match(prior, {
      onNone: () => ({ _tag: "Empty" }),
      onSome: (record) =>
        record.status === "released"
          ? {
            _tag: "Lost",
            runner: record.runner,
            detail: "stopped by its runner (no heartbeat from its client, the runner shut down, or its shard moved)",
            relaunchable: true
          }
          : { _tag: "Lost", runner: record.runner, detail: "its runner stopped or died", relaunchable: false }
    }))
    const context: Context = { ...options, slot, lock: yield* Effect.makeSemaphore(1) }
    // The entity stops (idle, runner shutdown, shard moved): the VM goes with
    // it, recorded as released so that later calls say VmLost instead of nothing.
    yield* Scope.addFinalizer(
      options.entityScope,
      Effect.flatMap(Ref.get(slot), (current) =>
        current._tag === "Held"
          ? Scope.close(current.scope, Exit.void).pipe(
            Effect.zipRight(Effect.ignore(options.registry.put({
              id: options.id,
              runner: options.runner,
              status: "released",
              host: options.host
            })))
          )
          : Effect.void)
    )
    return context
  })

export const held = (ctx: Context): Effect.Effect<Held, FleetErrors.VmLost | FleetErrors.VmNotFound> =>
  Effect.flatMap(Ref.get(ctx.slot), (current): Effect.Effect<Held, FleetErrors.VmLost | FleetErrors.VmNotFound> => {
    switch (current._tag) {
      case "Held":
        return Effect.succeed(current)
      case "Lost":
        return Effect.fail(new FleetErrors.VmLost({ id: ctx.id, runner: current.runner, detail: current.detail }))
      case "Empty":
        return Effect.fail(new FleetErrors.VmNotFound({ id: ctx.id }))
    }
  })

export const describe = (ctx: Context, vm: QemuMachine.Machine): Effect.Effect<Launched> =>
  Effect.map(vm.pid, (pid) => ({ runner: ctx.runner, name: vm.name, pid: Option.getOrUndefined(pid) }))

export const launch = (
  ctx: Context,
  spec: MachineSpec.MachineSpec
): Effect.Effect<
  Launched,
  FleetErrors.LaunchFailure | FleetErrors.VmLost | FleetErrors.VmAlreadyLaunched | FleetErrors.MachineError
> =>
  ctx.lock.withPermits(1)(Effect.gen(function*() {
    const { id, registry, runner, host } = ctx
    const current = yield* Ref.get(ctx.slot)
    if (current._tag === "Held") {
      // a VM that ended by itself (guest power-off, quit) makes room for a new one
      if (yield* current.vm.isRunning) return yield* new FleetErrors.VmAlreadyLaunched({ id, runner })
      yield* Scope.close(current.scope, Exit.void)
    }
    if (current._tag === "Lost" && !current.relaunchable) {
      return yield* new FleetErrors.VmLost({ id, runner: current.runner, detail: current.detail })
    }
    // Recorded before QEMU starts: if this runner dies in between, the id is lost, not forgotten.
    yield* registry.put({ id, runner, status: "running", host }).pipe(Effect.mapError(registryFailure))
    const scope = yield* Scope.fork(ctx.entityScope, ExecutionStrategy.sequential)
    const vm = yield* QemuMachine.launch(MachineSpec.toConfig(spec)).pipe(
      Scope.extend(scope),
      Effect.onError(() =>
        Scope.close(scope, Exit.void).pipe(
          Effect.zipRight(Ref.set(ctx.slot, { _tag: "Empty" })),
          Effect.zipRight(Effect.ignore(registry.remove(id, runner)))
        )
      )
    )
    yield* Ref.set(ctx.slot, { _tag: "Held", vm, scope })
    // …and where its files are, for a runner on this host that finds it lost
    yield* Effect.ignore(registry.put({ id, runner, status: "running", host, tempDir: vm.tempDir }))
    return yield* describe(ctx, vm)
  }))

export const shutdown = (
  ctx: Context,
  options: { readonly hard?: boolean | undefined; readonly timeout?: Duration.Duration | undefined }
): Effect.Effect<void, FleetErrors.AbnormalShutdown> =>
  ctx.lock.withPermits(1)(Effect.gen(function*() {
    const current = yield* Ref.get(ctx.slot)
    if (current._tag === "Empty") return
    if (current._tag === "Lost") {
      yield* Effect.ignore(ctx.registry.remove(ctx.id, current.runner))
      yield* Ref.set(ctx.slot, { _tag: "Empty" })
      return
    }
    // The machine's own state says ShuttingDown from here (vm.shutdown moves it first).
    const result = yield* Effect.exit(current.vm.shutdown({ hard: options.hard, timeout: options.timeout }))
    yield* Scope.close(current.scope, Exit.void)
    yield* Ref.set(ctx.slot, { _tag: "Empty" })
    yield* Effect.ignore(ctx.registry.remove(ctx.id, ctx.runner))
    if (Exit.isFailure(result)) {
      return yield* result
    }
  }))
