/**
 * The byte side of a guest agent channel on the shared session core: the
 * socket of QEMU's chardev, line framing with the agent's 0xFF sync
 * delimiter, and the session's one idempotent close path (first cause
 * wins). The socket stays connected across agent restarts inside the guest
 * (it is QEMU's), so nothing here knows about the agent's own life: the
 * client re-syncs over the same socket.
 */
import { Duration, Effect, Schedule, Scope } from "effect"
import type * as net from "node:net"
import { QmpConnectionError } from "../../Errors.js"
import * as LineFramer from "../lineFramer.js"
import * as Net from "../net.js"
import * as Session from "../session.js"

/** The byte the agent sends before a `guest-sync-delimited` reply, and the client sends to flush the agent's parser. */
export const DELIMITER = 0xff

export interface Handlers {
  /** A complete line (without its terminator). */
  readonly onLine: (line: string) => void
  /** A line grew past the limit; what was buffered is dropped. */
  readonly onOversized: (size: number, head: string) => void
  /** Runs once, with the first cause, when the channel has closed. */
  readonly onClose: (cause: QmpConnectionError) => void
}

export interface Transport {
  /** Queues bytes; fails with the close cause once closed. */
  readonly write: (data: string | Uint8Array) => Effect.Effect<void, QmpConnectionError>
  /** The first cause, once closed. */
  readonly cause: () => QmpConnectionError | undefined
  /** Completes with the first cause when the channel has closed. */
  readonly closed: Effect.Effect<QmpConnectionError>
  /** Closes the channel (idempotent; the first cause wins). */
  readonly close: (cause: QmpConnectionError) => void
}

/**
 * The agent's framing: the shared line framer with 0xFF as the delimiter (the
 * agent sends it exactly where a fresh message starts, so a partial line
 * before it is dropped). A line over the limit is reported once and skipped up
 * to its newline; what follows is read as usual.
 */
export const makeFramer = (maxLineBytes: number, handlers: Pick<Handlers, "onLine" | "onOversized">) =>
  LineFramer.make({ maxLineBytes, delimiter: DELIMITER }, handlers)

/**
 * Wraps a connected socket on the session core; nothing else may listen to
 * its events. The session's close path is the channel's: the first cause
 * wins, and a closed channel fails every write with it.
 */
export const fromSocket = (socket: net.Socket, maxLineBytes: number, handlers: Handlers): Transport => {
  const session = Session.make<QmpConnectionError>(socket, {
    onData: makeFramer(maxLineBytes, handlers),
    onClose: handlers.onClose,
    eof: (detail) => new QmpConnectionError({ reason: "Eof", detail, channel: "agent" }),
    error: (err) => new QmpConnectionError({ reason: "SocketError", cause: err, channel: "agent" }),
    crashed: (e) => new QmpConnectionError({ reason: "ProtocolError", cause: e, detail: "the reader failed", channel: "agent" })
  })

  // Unlike QMP's, these writes wait for the flush: a file chunk is a megabyte or more of base64,
  // and the next chunk should not queue behind it in memory.
  const write = (data: string | Uint8Array) =>
    Effect.suspend(() => {
      const closedBy = session.cause()
      if (closedBy) return Effect.fail(closedBy)
      return Effect.async<void, QmpConnectionError>((resume) => {
        session.socket.write(data, (err) => {
          if (!err) return resume(Effect.void)
          session.end(() => new QmpConnectionError({ reason: "SocketError", cause: err, channel: "agent" }))
          resume(Effect.fail(session.cause()!))
        })
      })
    })

  return { write, cause: session.cause, closed: session.closed, close: (cause) => session.end(() => cause) }
}

/**
 * Connects to the chardev socket, retrying while QEMU has not created it yet
 * (the caller bounds the wait). The socket belongs to the caller's scope.
 */
export const connect = (address: Net.Address): Effect.Effect<net.Socket, QmpConnectionError, Scope.Scope> =>
  Net.connect(address, "agent").pipe(
    Effect.retry({
      schedule: Schedule.exponential(Duration.millis(10), 2).pipe(Schedule.union(Schedule.spaced("250 millis"))),
      while: (e) => e.reason === "Refused"
    })
  )
