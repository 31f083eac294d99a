/**
 * The socket core shared by QMP, the serial console, the guest agent and the
 * CLI's line client: one open socket, one idempotent close path where the
 * first cause wins, and writes that stop once closed. Handing what arrives to
 * many readers is `fanOut.ts`'s job.
 */
import { Deferred, Effect, Exit, FiberId } from "effect"
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
  /** Calls `f` once the session has ended (at once if it has); returns the unsubscribe. */
  readonly onEnd: (f: () => void) => () => void
}

/**
 * Builds a close cause without capturing a stack: it is built in a socket
 * callback or a finalizer, where the stack names only the event loop, and
 * capturing it is most of an error's cost (one is built at every close).
 */
const withoutStack = <A>(make: () => A): A => {
  const limit = Error.stackTraceLimit
  Error.stackTraceLimit = 0
  try {
    return make()
  } finally {
    Error.stackTraceLimit = limit
  }
}

/** Wraps an open socket. Nothing else may listen to its `data`, `end`, `error` or `close` events. */
export const make = <C>(socket: net.Socket, handlers: SessionHandlers<C>): Session<C> => {
  let closeCause: C | undefined
  const closed = Deferred.unsafeMake<C>(FiberId.none)
  const endListeners = new Set<() => void>()

  const end = (makeCause: () => C) => {
    if (closeCause !== undefined) return
    const cause = withoutStack(makeCause)
    closeCause = cause
    socket.destroy()
    Deferred.unsafeDone(closed, Exit.succeed(cause))
    handlers.onClose(cause)
    for (const f of endListeners) f()
    endListeners.clear()
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
    },
    onEnd: (f) => {
      if (closeCause !== undefined) {
        f()
        return () => {}
      }
      endListeners.add(f)
      return () => void endListeners.delete(f)
    }
  }
}
