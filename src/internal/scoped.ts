/**
 * Resources released by plain scope finalizers. `Effect.acquireRelease` and
 * `Effect.addFinalizer` restore the acquiring fiber's FiberRefs around the
 * release: a diff and a patch of every FiberRef, ~0.04 ms each, paid at every
 * machine's close for each of the half-dozen resources a machine holds. The
 * releases below read no FiberRef set at acquisition (no log annotations, no
 * services of their own), so they run in the closing fiber as they are.
 * Acquisition stays uninterruptible, as with `Effect.acquireRelease`.
 * Registered with `Scope.addFinalizerExit`, which takes the finalizer as it is
 * (`Scope.addFinalizer` wraps each in an `asVoid`: two more steps per release).
 */
import { Effect, Scope } from "effect"

/** `Effect.addFinalizer` without the FiberRefs restore. */
export const addFinalizer = (finalizer: Effect.Effect<unknown>): Effect.Effect<void, never, Scope.Scope> =>
  Effect.flatMap(Effect.scope, (scope) => addTo(scope, finalizer))

/** `Scope.addFinalizer` without the `asVoid` around the finalizer. */
export const addTo = (scope: Scope.Scope, finalizer: Effect.Effect<unknown>): Effect.Effect<void> =>
  Scope.addFinalizerExit(scope, () => finalizer)

/** `Effect.acquireRelease` without the FiberRefs restore. */
export const acquireRelease = <A, E, R>(
  acquire: Effect.Effect<A, E, R>,
  release: (a: A) => Effect.Effect<unknown>
): Effect.Effect<A, E, R | Scope.Scope> =>
  Effect.uninterruptible(
    Effect.flatMap(Effect.scope, (scope) => Effect.tap(acquire, (a) => Scope.addFinalizerExit(scope, () => release(a))))
  )
