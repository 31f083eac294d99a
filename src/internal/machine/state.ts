/**
 * The machine's run state: one variable, changed only by `transition`, which
 * refuses moves the lifecycle does not allow (a `quit` sent while shutting
 * down does not make the machine "quit issued" again, and nothing leaves
 * `Exited`). A move is synchronous and tells the `changes` streams at once, in
 * order: no semaphore, no PubSub, no fiber on the paths every launch and close
 * take (a `SubscriptionRef` was a tenth of a millisecond per move there).
 */
import { Data, Effect, Stream } from "effect"
import type * as Api from "../../QemuMachine.js"

export const MachineState = Data.taggedEnum<Api.MachineState>()

type Tag = Api.MachineState["_tag"]

const allowed: Record<Tag, ReadonlyArray<Tag>> = {
  Running: ["QuitIssued", "ExpectingExit", "ShuttingDown", "Exited"],
  QuitIssued: ["ExpectingExit", "ShuttingDown", "Exited"],
  ExpectingExit: ["ShuttingDown", "Exited"],
  ShuttingDown: ["Exited"],
  Exited: []
}

export interface StateRef {
  /** The state now, as an Effect (`vm.state`). */
  readonly get: Effect.Effect<Api.MachineState>
  /** The state now, without a fiber. */
  readonly current: () => Api.MachineState
  /** Moves to `next` when the lifecycle allows it; says whether it did. */
  readonly transition: (next: Api.MachineState) => Effect.Effect<boolean>
  /** `transition`, from plain code. */
  readonly unsafeTransition: (next: Api.MachineState) => boolean
  /** Moves to `Exited`, remembering whether the exit was asked for. */
  readonly exited: (exitCode: number) => Effect.Effect<boolean>
  /** `exited`, from a callback. */
  readonly unsafeExited: (exitCode: number) => boolean
  /** The current state, then every change; ends after `Exited`. */
  readonly changes: Stream.Stream<Api.MachineState>
}

export const canMove = (from: Api.MachineState, to: Api.MachineState): boolean => allowed[from._tag].includes(to._tag)

/** Whether an exit from this state was asked for: after `quit`, `wait()` or a shutdown. */
export const exitExpected = (from: Api.MachineState): boolean => from._tag !== "Running"

export const unsafeMake = (): StateRef => {
  let current: Api.MachineState = MachineState.Running()
  const listeners = new Set<(state: Api.MachineState) => void>()
  const move = (next: (from: Api.MachineState) => Api.MachineState): boolean => {
    const to = next(current)
    if (!canMove(current, to)) return false
    current = to
    for (const listener of listeners) listener(to)
    return true
  }
  const exitedFrom = (exitCode: number) => (from: Api.MachineState) =>
    MachineState.Exited({ exitCode, expected: exitExpected(from) })
  // The current state and the listener are taken in one synchronous step: no move can fall between.
  const changes = Stream.async<Api.MachineState>((emit) => {
    const listener = (state: Api.MachineState) => {
      void emit.single(state)
      if (state._tag === "Exited") void emit.end()
    }
    listener(current)
    if (current._tag === "Exited") return
    listeners.add(listener)
    return Effect.sync(() => void listeners.delete(listener))
  }, "unbounded")
  return {
    get: Effect.sync(() => current),
    current: () => current,
    transition: (next) => Effect.sync(() => move(() => next)),
    unsafeTransition: (next) => move(() => next),
    exited: (exitCode) => Effect.sync(() => move(exitedFrom(exitCode))),
    unsafeExited: (exitCode) => move(exitedFrom(exitCode)),
    changes
  }
}

export const make: Effect.Effect<StateRef> = Effect.sync(unsafeMake)
