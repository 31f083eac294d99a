/**
 * Spares: values built ahead in the background, each in a scope of its own, for
 * a template's clones (`TemplateOptions.spares`: a QEMU started, paused and
 * waiting for its state). `take` hands the oldest to the caller, whose scope
 * then closes it (one still being built is waited for), and `refill` starts
 * the next. A spare that could not be built is `None` (the caller builds one
 * itself, and sees the error then). Those not taken end with the scope that
 * built them, and none is started after.
 */
import { Effect, Exit, Fiber, Option, Scope } from "effect"

export interface Spares<A> {
  /** The next spare, now owned by the caller's scope, or `None` when there is none to give. */
  readonly take: Effect.Effect<Option.Option<A>, never, Scope.Scope>
  /**
   * Starts building spares until there are as many as asked for again. Called once the
   * taken one is in use: building the next meanwhile would slow down the one being used.
   */
  readonly refill: Effect.Effect<void>
}

interface Made<A> {
  readonly value: A
  readonly scope: Scope.CloseableScope
}

const none: Spares<never> = { take: Effect.succeedNone, refill: Effect.void }

/** Builds `make` in a scope of its own, closed at once if it fails or is interrupted. */
const inOwnScope = <A, E>(make: Effect.Effect<A, E, Scope.Scope>): Effect.Effect<Made<A>, E> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const exit = yield* Effect.exit(restore(Scope.extend(make, scope)))
      if (Exit.isSuccess(exit)) return { value: exit.value, scope }
      yield* Scope.close(scope, exit)
      return yield* Effect.failCause(exit.cause)
    })
  )

/** Ends a spare nobody will take: stopped while being built, or closed once built. */
const discard = <A, E>(fiber: Fiber.RuntimeFiber<Made<A>, E>) =>
  Effect.flatMap(Fiber.interrupt(fiber), (exit) => Exit.isSuccess(exit) ? Scope.close(exit.value.scope, Exit.void) : Effect.void)

export const make = <A, E>(
  count: number,
  build: Effect.Effect<A, E, Scope.Scope>
): Effect.Effect<Spares<A>, never, Scope.Scope> =>
  Effect.gen(function*() {
    if (count <= 0) return none
    const owner = yield* Effect.scope
    const queue: Array<Fiber.RuntimeFiber<Made<A>, E>> = []
    let closed = false
    // Added before the first fork: it runs after the forks are interrupted with the scope.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closed = true
        return Effect.forEach(queue.splice(0), discard, { discard: true, concurrency: "unbounded" })
      })
    )
    const refill = Effect.suspend(function loop(): Effect.Effect<void> {
      if (closed || queue.length >= count) return Effect.void
      return Effect.flatMap(Effect.forkIn(inOwnScope(build), owner), (fiber) => (queue.push(fiber), loop()))
    })
    yield* refill

    const take: Spares<A>["take"] = Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const next = queue.shift()
        if (next === undefined) return Effect.succeedNone
        return restore(Fiber.await(next)).pipe(
          Effect.onInterrupt(() => discard(next)),
          Effect.flatMap((exit) =>
            Exit.isSuccess(exit)
              ? Effect.as(Effect.addFinalizer((end) => Scope.close(exit.value.scope, end)), Option.some(exit.value.value))
              : Effect.as(Effect.logDebug("a spare could not be built", exit.cause), Option.none())
          )
        )
      })
    )
    return { take, refill }
  })
