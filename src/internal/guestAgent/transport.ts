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
 * Splits the stream into lines (blank lines skipped, a trailing `\r` kept for
 * JSON to ignore). A 0xFF byte drops any partial line before it, since the
 * agent sends it exactly where a fresh message starts. A line over the limit
 * is reported once and skipped up to its newline; what follows is read as usual.
 */
export const makeFramer = (maxLineBytes: number, handlers: Pick<Handlers, "onLine" | "onOversized">) => {
  let parts: Array<Buffer> = []
  let pending = 0
  let skipping = false
  const reset = () => {
    parts = []
    pending = 0
    skipping = false
  }
  const append = (data: Buffer) => {
    if (skipping || data.length === 0) return
    if (pending + data.length > maxLineBytes) {
      handlers.onOversized(pending + data.length, Buffer.concat([...parts, data]).subarray(0, 256).toString("utf8"))
      parts = []
      pending = 0
      skipping = true
      return
    }
    parts.push(data)
    pending += data.length
  }
  const feed = (data: Buffer) => {
    let start = 0
    let nl = data.indexOf(10)
    while (nl !== -1) {
      append(data.subarray(start, nl))
      const line = skipping ? "" : Buffer.concat(parts, pending).toString("utf8")
      reset()
      if (line.length > 0 && line !== "\r") handlers.onLine(line)
      start = nl + 1
      nl = data.indexOf(10, start)
    }
    append(data.subarray(start))
  }
  return (chunk: Buffer): void => {
    let start = 0
    let at = chunk.indexOf(DELIMITER)
    while (at !== -1) {
      feed(chunk.subarray(start, at))
      reset()
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
