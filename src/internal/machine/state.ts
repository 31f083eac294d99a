/**
 * The machine's run state: one `SubscriptionRef`, changed only by
 * `transition`, which refuses moves the lifecycle does not allow (a `quit`
 * sent while shutting down does not make the machine "quit issued" again, and
 * nothing leaves `Exited`).
 */
import { Data, Effect, Stream, SubscriptionRef } from "effect"
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
  readonly ref: SubscriptionRef.SubscriptionRef<Api.MachineState>
  /** The state now, without a fiber. */
  readonly current: () => Api.MachineState
  /** Moves to `next` when the lifecycle allows it; says whether it did. */
  readonly transition: (next: Api.MachineState) => Effect.Effect<boolean>
  /** Moves to `Exited`, remembering whether the exit was asked for. */
  readonly exited: (exitCode: number) => Effect.Effect<boolean>
  /** The current state, then every change; ends after `Exited`. */
  readonly changes: Stream.Stream<Api.MachineState>
}

export const canMove = (from: Api.MachineState, to: Api.MachineState): boolean => allowed[from._tag].includes(to._tag)

/** Whether an exit from this state was asked for: after `quit`, `wait()` or a shutdown. */
export const exitExpected = (from: Api.MachineState): boolean => from._tag !== "Running"

export const make: Effect.Effect<StateRef> = Effect.map(
  SubscriptionRef.make<Api.MachineState>(MachineState.Running()),
  (ref) => {
    let current: Api.MachineState = MachineState.Running()
    const move = (next: (from: Api.MachineState) => Api.MachineState) =>
      SubscriptionRef.modify(ref, (state): [boolean, Api.MachineState] => {
        const to = next(state)
        if (!canMove(state, to)) return [false, state]
        current = to
        return [true, to]
      })
    return {
      ref,
      current: () => current,
      transition: (next) => move(() => next),
      exited: (exitCode) => move((from) => MachineState.Exited({ exitCode, expected: exitExpected(from) })),
      changes: ref.changes.pipe(Stream.takeUntil((state) => state._tag === "Exited"))
    }
  }
)
