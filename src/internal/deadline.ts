/**
 * Deadlines without racing fibers. `Effect.timeout` forks two fibers (the
 * effect and a sleep) and interrupts the loser; on the paths every launch and
 * every close take, that was a tenth of the library's overhead over bare
 * Node (bench/README.md). Under the live clock the launch and the shutdown
 * ladder arm one plain timer instead, whose expiry makes the awaited I/O end
 * (QEMU killed, the monitor closed); under any other clock (`TestClock`) they
 * keep Effect's combinators, so virtual time still drives them.
 */
import { Clock, Context, DefaultServices, Duration, Effect } from "effect"

const liveClock = Context.get(DefaultServices.liveServices, Clock.Clock)

/** `live()` when the fiber runs on the live clock, else `other()` (each built only when taken). */
export const onLiveClock = <A, E, R, A2, E2, R2>(
  live: () => Effect.Effect<A, E, R>,
  other: () => Effect.Effect<A2, E2, R2>
): Effect.Effect<A | A2, E | E2, R | R2> =>
  Effect.clockWith((clock): Effect.Effect<A | A2, E | E2, R | R2> => (clock === liveClock ? live() : other()))

// setTimeout fires at once for delays past 2^31 - 1 ms (~24.8 days).
const MAX_TIMER = 2 ** 31 - 1

/** Calls `expire` once `duration` has passed (never for an infinite one); returns the disarm. */
export const arm = (duration: Duration.Duration, expire: () => void): () => void => {
  if (!Duration.isFinite(duration)) return () => {}
  const timer = setTimeout(expire, Math.min(Duration.toMillis(duration), MAX_TIMER))
  return () => clearTimeout(timer)
}
