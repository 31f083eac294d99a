/**
 * The byte side of a guest agent channel: the unix socket of QEMU's chardev,
 * line framing with the agent's 0xFF sync delimiter, and one idempotent close
 * path where the first cause wins. The socket stays connected across agent
 * restarts inside the guest (it is QEMU's), so nothing here knows about the
 * agent's own life: the client re-syncs over the same socket.
 *
 * Kept to this one file so it can move onto the shared session core.
 */
import { Deferred, Duration, Effect, Exit, FiberId, Schedule, Scope } from "effect"
import type * as net from "node:net"
import { QmpConnectionError } from "../../Errors.js"
import { LineDecoder } from "../lineDecoder.js"
import * as Net from "../net.js"

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
 * Splits the stream into lines; a 0xFF byte drops any partial line before
 * it, since the agent sends it exactly where a fresh message starts.
 */
export const makeFramer = (maxLineBytes: number, handlers: Pick<Handlers, "onLine" | "onOversized">) => {
  let decoder = new LineDecoder(maxLineBytes)
  const feed = (data: Buffer) => {
    if (data.length === 0) return
    const oversized = decoder.push(data, handlers.onLine)
    if (oversized) {
      decoder = new LineDecoder(maxLineBytes)
      handlers.onOversized(oversized.size, oversized.head)
    }
  }
  return (chunk: Buffer): void => {
    let start = 0
    let at = chunk.indexOf(DELIMITER)
    while (at !== -1) {
      feed(chunk.subarray(start, at))
      decoder = new LineDecoder(maxLineBytes)
      start = at + 1
      at = chunk.indexOf(DELIMITER, start)
    }
    feed(start === 0 ? chunk : chunk.subarray(start))
  }
}

/** Wraps a connected socket; nothing else may listen to its events. */
export const fromSocket = (socket: net.Socket, maxLineBytes: number, handlers: Handlers): Transport => {
  let closeCause: QmpConnectionError | undefined
  const closed = Deferred.unsafeMake<QmpConnectionError>(FiberId.none)
  const close = (cause: QmpConnectionError) => {
    if (closeCause !== undefined) return
    closeCause = cause
    socket.destroy()
    Deferred.unsafeDone(closed, Exit.succeed(cause))
    handlers.onClose(cause)
  }
  const push = makeFramer(maxLineBytes, handlers)
  socket.on("data", (chunk: Buffer) => {
    if (closeCause !== undefined) return
    try {
      push(chunk)
    } catch (e) {
      close(new QmpConnectionError({ reason: "ProtocolError", cause: e, detail: "guest agent reader failed" }))
    }
  })
  socket.on("end", () => close(new QmpConnectionError({ reason: "Eof", detail: "QEMU closed the guest agent socket" })))
  socket.on("error", (err) => close(new QmpConnectionError({ reason: "SocketError", cause: err })))
  socket.on("close", () => close(new QmpConnectionError({ reason: "Eof", detail: "guest agent socket closed" })))
  if (socket.destroyed) close(new QmpConnectionError({ reason: "Eof", detail: "guest agent socket already closed" }))

  const write = (data: string | Uint8Array) =>
    Effect.suspend(() =>
      closeCause !== undefined
        ? Effect.fail(closeCause)
        : Effect.async<void, QmpConnectionError>((resume) => {
          socket.write(data, (err) => {
            if (!err) return resume(Effect.void)
            const cause = new QmpConnectionError({ reason: "SocketError", cause: err })
            close(cause)
            resume(Effect.fail(closeCause ?? cause))
          })
        })
    )

  return { write, cause: () => closeCause, closed: Deferred.await(closed), close }
}

/**
 * Connects to the chardev socket, retrying while QEMU has not created it yet
 * (the caller bounds the wait). The socket belongs to the caller's scope.
 */
export const connect = (address: Net.Address): Effect.Effect<net.Socket, QmpConnectionError, Scope.Scope> =>
  Net.connect(address).pipe(
    Effect.retry({
      schedule: Schedule.exponential(Duration.millis(10), 2).pipe(Schedule.union(Schedule.spaced("250 millis"))),
      while: (e) => e.reason === "Refused"
    })
  )
