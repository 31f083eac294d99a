/**
 * The serial console on the session core: every byte is read as it arrives
 * (QEMU stalls the guest when the socket buffer fills), kept in a bounded
 * text buffer for `expect`, written to the log file when asked, and fanned out
 * to byte streams.
 */
import { Deferred, Duration, Effect, Exit, FiberId, Schedule, Scope, Stream } from "effect"
import * as fs from "node:fs"
import type * as net from "node:net"
import { StringDecoder } from "node:string_decoder"
import type * as Api from "../ConsoleSocket.js"
import { describeCause, MachineError, QmpConnectionError, QmpTimeoutError } from "../Errors.js"
import * as FanOut from "./fanOut.js"
import * as Net from "./net.js"
import * as Session from "./session.js"

export const TypeId: Api.TypeId = Symbol.for("effect-qemu/ConsoleSocket") as Api.TypeId

const DEFAULT_BUFFER = 1024 * 1024
const DEFAULT_EXPECT_TIMEOUT = Duration.seconds(60)
const STREAM_BUFFER = 1024

/** Opens (truncating) a console log file, or says why it cannot. */
export const openLog = (path: string): Effect.Effect<number, MachineError> =>
  Effect.try({
    try: () => fs.openSync(path, "w", 0o600),
    catch: (e) => new MachineError({ message: `cannot open the console log ${path}: ${describeCause(e)}`, cause: e })
  })

/** Index just past the first match of `pattern` in `text`, or -1. */
const search = (text: string, pattern: string | RegExp): number => {
  if (typeof pattern === "string") {
    const i = text.indexOf(pattern)
    return i < 0 ? -1 : i + pattern.length
  }
  const re = new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ""))
  const m = re.exec(text)
  return m ? m.index + m[0].length : -1
}

/** Reads `socket` as a console, writing to `logFd` (closed with the console) when given. */
export const fromSocketWithLog = (
  socket: net.Socket,
  logFd: number | undefined,
  options: Api.Options = {}
): Effect.Effect<Api.ConsoleSocket, never, Scope.Scope> =>
  Effect.gen(function*() {
    const bufferSize = options.bufferSize ?? DEFAULT_BUFFER
    const decoder = new StringDecoder("utf8")
    const fanOut = FanOut.make<Uint8Array>({ capacity: STREAM_BUFFER, onDrop: () => {} })
    let text = ""
    let received = 0
    let waiters: Array<Deferred.Deferred<void>> = []

    const wake = () => {
      if (waiters.length === 0) return
      const woken = waiters
      waiters = []
      for (const w of woken) Deferred.unsafeDone(w, Exit.void)
    }

    const session = Session.make<QmpConnectionError>(socket, {
      onData: (chunk) => {
        received += chunk.length
        if (logFd !== undefined) {
          try {
            fs.writeSync(logFd, chunk)
          } catch {
            // A full disk must not stall the guest; the in-memory buffer still has it.
          }
        }
        text += decoder.write(chunk)
        if (text.length > bufferSize) text = text.slice(text.length - bufferSize)
        fanOut.publish(chunk)
        wake()
      },
      onClose: () => {
        text += decoder.end()
        if (logFd !== undefined) {
          try {
            fs.closeSync(logFd)
          } catch {
            // already closed
          }
        }
        fanOut.end()
        wake()
      },
      eof: (detail) => new QmpConnectionError({ reason: "Eof", detail, channel: "console" }),
      error: (err) => new QmpConnectionError({ reason: "SocketError", cause: err, channel: "console" }),
      crashed: (err) => new QmpConnectionError({ reason: "SocketError", cause: err, channel: "console" })
    })
    const close = Effect.sync(() =>
      session.end(() => new QmpConnectionError({ reason: "Closed", detail: "closed by the client", channel: "console" }))
    )
    yield* Effect.addFinalizer(() => close)

    const expect = (pattern: string | RegExp, expectOptions?: Api.ExpectOptions) => {
      const timeout = Duration.decode(expectOptions?.timeout ?? DEFAULT_EXPECT_TIMEOUT)
      const attempt: Effect.Effect<string, QmpConnectionError> = Effect.suspend(() => {
        const end = search(text, pattern)
        if (end >= 0) {
          const matched = text.slice(0, end)
          text = text.slice(end)
          return Effect.succeed(matched)
        }
        const cause = session.cause()
        if (cause) return Effect.fail(cause)
        const waiter = Deferred.unsafeMake<void>(FiberId.none)
        waiters.push(waiter)
        return Effect.zipRight(Deferred.await(waiter), attempt)
      })
      return Effect.timeoutFail(attempt, {
        duration: timeout,
        onTimeout: () => new QmpTimeoutError({ operation: `console expect ${String(pattern)}`, timeout, channel: "console" })
      })
    }

    const write = (data: string | Uint8Array) =>
      Effect.suspend(() => {
        const cause = session.cause()
        if (cause) return Effect.fail(cause)
        return Effect.async<void, QmpConnectionError>((resume) => {
          socket.write(data, (err) =>
            resume(
              err
                ? Effect.fail(new QmpConnectionError({ reason: "SocketError", cause: err, channel: "console" }))
                : Effect.void
            ))
        })
      })

    const stream = Stream.unwrapScoped(fanOut.subscribe)
    return {
      [TypeId]: TypeId,
      stream,
      lines: stream.pipe(Stream.decodeText(), Stream.splitLines),
      write,
      expect,
      pending: Effect.sync(() => text),
      received: Effect.sync(() => received),
      isConnected: Effect.sync(() => session.cause() === undefined),
      close
    } satisfies Api.ConsoleSocket
  })

export const fromSocket = (
  socket: net.Socket,
  options: Api.Options = {}
): Effect.Effect<Api.ConsoleSocket, MachineError, Scope.Scope> =>
  Effect.flatMap(
    options.logFile === undefined ? Effect.succeed(undefined) : openLog(options.logFile),
    (logFd) => fromSocketWithLog(socket, logFd, options)
  )

/** Connects, retrying while QEMU has not created the socket yet. */
export const connectSocket = (
  path: string,
  options: Api.Options = {}
): Effect.Effect<net.Socket, QmpConnectionError, Scope.Scope> => {
  const deadline = Duration.decode(options.connectTimeout ?? Duration.seconds(10))
  return Net.connect(path, "console").pipe(
    Effect.retry({
      schedule: Schedule.spaced("10 millis").pipe(Schedule.upTo(deadline)),
      while: (e) => e.detail === undefined || !e.detail.includes("AF_UNIX limit")
    })
  )
}

export const connect = (
  path: string,
  options: Api.Options = {}
): Effect.Effect<Api.ConsoleSocket, QmpConnectionError | MachineError, Scope.Scope> =>
  Effect.flatMap(connectSocket(path, options), (socket) => fromSocket(socket, options))
