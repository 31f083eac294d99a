/**
 * The socket core shared by QMP, the serial console and the guest agent: one
 * open socket, one idempotent close path where the first cause wins, writes
 * that fail with that cause once closed, and a `FanOut` that hands every
 * published item to every subscriber through its own bounded `Mailbox`.
 */
import { Deferred, Effect, Exit, FiberId, Mailbox, Scope, Stream } from "effect"
import type * as net from "node:net"

export interface SessionHandlers<C> {
  /** Bytes that arrived, only while the session is open. Throwing ends the session with `crashed`. */
  readonly onData: (chunk: Buffer) => void
  /** Runs once, after the socket is destroyed, with the first cause. */
  readonly onClose: (cause: C) => void
  /** The cause for the peer closing the connection. */
  readonly eof: (detail: string) => C
  /** The cause for a socket error. */
  readonly error: (err: Error) => C
  /** The cause for `onData` throwing (a bug in a decoder must not become an uncaught exception). */
  readonly crashed: (err: unknown) => C
}

export interface Session<C> {
  readonly socket: net.Socket
  /** The first cause, once closed. */
  readonly cause: () => C | undefined
  /** Closes the session; the cause is built only when this call is the first. */
  readonly end: (makeCause: () => C) => void
  /** Completes with the first cause when the session has ended. */
  readonly closed: Effect.Effect<C>
  /** Writes while open (false once ended); does not wait for the flush. */
  readonly write: (data: string | Uint8Array) => boolean
}

/** Wraps an open socket. Nothing else may listen to its `data`, `end`, `error` or `close` events. */
export const make = <C>(socket: net.Socket, handlers: SessionHandlers<C>): Session<C> => {
  let closeCause: C | undefined
  const closed = Deferred.unsafeMake<C>(FiberId.none)

  const end = (makeCause: () => C) => {
    if (closeCause !== undefined) return
    const cause = makeCause()
    closeCause = cause
    socket.destroy()
    Deferred.unsafeDone(closed, Exit.succeed(cause))
    handlers.onClose(cause)
  }

  socket.on("data", (chunk: Buffer) => {
    if (closeCause !== undefined) return
    try {
      handlers.onData(chunk)
    } catch (e) {
      end(() => handlers.crashed(e))
    }
  })
  socket.on("end", () => end(() => handlers.eof("the peer closed the connection")))
  socket.on("error", (err) => end(() => handlers.error(err)))
  socket.on("close", () => end(() => handlers.eof("socket closed")))
  if (socket.destroyed) end(() => handlers.eof("socket already closed"))

  return {
    socket,
    cause: () => closeCause,
    end,
    closed: Deferred.await(closed),
    write: (data) => {
      if (closeCause !== undefined) return false
      socket.write(data)
      return true
    }
  }
}

/** Ends the session when the scope closes. */
export const endWithScope = <C>(session: Session<C>, makeCause: () => C): Effect.Effect<void, never, Scope.Scope> =>
  Effect.addFinalizer(() => Effect.sync(() => session.end(makeCause)))

export interface FanOut<A> {
  /** Hands `a` to every current subscriber; never blocks. */
  readonly publish: (a: A) => void
  /** Ends every subscriber's stream (after what it has buffered), and every later one at once. */
  readonly end: () => void
  /** Subscribes now, so nothing published after this point is missed; the stream ends with `end`. */
  readonly subscribe: Effect.Effect<Stream.Stream<A>, never, Scope.Scope>
  readonly subscribers: () => number
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
export const makeFanOut = <A>(options: {
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
    }),
    subscribers: () => mailboxes.size
  }
}
