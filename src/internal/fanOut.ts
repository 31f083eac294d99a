/**
 * Hands every published item to every subscriber, each through its own
 * bounded sliding `Mailbox`, so a slow subscriber loses its oldest items
 * (counted, never silently) instead of slowing the publisher or the others.
 * Used by the QMP event router (`qmp/events.ts`) for event streams and by the
 * serial console for byte streams. `publish` is plain synchronous code: it
 * runs once per event or read.
 */
import { Effect, Exit, Mailbox, Scope, Stream } from "effect"

export interface FanOut<A> {
  /** Hands `a` to every current subscriber; never blocks. */
  readonly publish: (a: A) => void
  /** Ends every subscriber's stream (after what it has buffered), and every later one at once. */
  readonly end: () => void
  /** Subscribes now, so nothing published after this point is missed; the stream ends with `end`. */
  readonly subscribe: Effect.Effect<Stream.Stream<A>, never, Scope.Scope>
}

/**
 * Every subscriber has its own mailbox of `capacity` items: one that falls
 * behind loses its oldest items, and `onDrop` is told how many and whose
 * (subscribers are numbered from 1 in the order they came), never silently,
 * while the publisher and the other subscribers go on unslowed. Each
 * subscriber costs one offer per item and up to `capacity` items of memory, so
 * `crowded.warn` is told once the live subscribers exceed `crowded.above`
 * (again only after they have fallen back to half of it).
 */
export const make = <A>(options: {
  readonly capacity: number
  readonly onDrop: (dropped: number, subscriber: number) => void
  /** Runs when a subscriber's scope closes. */
  readonly onUnsubscribe?: ((subscriber: number) => void) | undefined
  readonly crowded?: { readonly above: number; readonly warn: (subscribers: number) => void } | undefined
}): FanOut<A> => {
  const mailboxes = new Map<Mailbox.Mailbox<A>, number>()
  let ended = false
  let numbered = 0
  let crowdedWarned = false
  const checkCrowded = () => {
    const crowded = options.crowded
    if (crowded === undefined) return
    if (!crowdedWarned && mailboxes.size > crowded.above) {
      crowdedWarned = true
      crowded.warn(mailboxes.size)
    } else if (crowdedWarned && mailboxes.size <= crowded.above / 2) {
      crowdedWarned = false
    }
  }
  return {
    publish: (a) => {
      mailboxes.forEach((subscriber, mailbox) => {
        // A sliding mailbox drops its oldest item to make room: count it.
        const size = mailbox.unsafeSize()
        if (size._tag === "Some" && size.value >= options.capacity) options.onDrop(1, subscriber)
        mailbox.unsafeOffer(a)
      })
    },
    end: () => {
      if (ended) return
      ended = true
      for (const mailbox of mailboxes.keys()) mailbox.unsafeDone(Exit.void)
      mailboxes.clear()
    },
    subscribe: Effect.suspend(() => {
      if (ended) return Effect.succeed(Stream.empty)
      const subscriber = ++numbered
      return Effect.acquireRelease(
        Effect.tap(
          Mailbox.make<A>({ capacity: options.capacity, strategy: "sliding" }),
          (mailbox) =>
            Effect.sync(() => {
              mailboxes.set(mailbox, subscriber)
              checkCrowded()
            })
        ),
        (mailbox) =>
          Effect.sync(() => {
            mailboxes.delete(mailbox)
            checkCrowded()
            options.onUnsubscribe?.(subscriber)
          })
      ).pipe(Effect.map(Mailbox.toStream))
    })
  }
}
