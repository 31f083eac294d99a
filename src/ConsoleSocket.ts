/**
 * A guest's serial console over QEMU's socket chardev
 * (`-chardev socket,id=console,path=P,server=on,wait=off`).
 *
 * QEMU writes serial output a byte at a time and blocks the guest when the
 * socket buffer is full, so the console is read from the moment it is
 * connected, always, pushed by the socket (never polled). What arrives goes
 * into a bounded in-memory buffer and, when asked, a log file; `expect`,
 * `stream` and `lines` read from there.
 *
 * @example
 * ```ts
 * const console = yield* vm.console
 * yield* console.write("uname -a\n")
 * const text = yield* console.expect(/Linux \S+/, { timeout: "10 seconds" })
 * ```
 *
 * @since 0.1.0
 */
import { Deferred, Duration, Effect, Exit, FiberId, PubSub, Schedule, Scope, Stream } from "effect"
import * as fs from "node:fs"
import type * as net from "node:net"
import { StringDecoder } from "node:string_decoder"
import { QmpConnectionError, QmpTimeoutError } from "./Errors.js"
import * as Net from "./internal/net.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-qemu/ConsoleSocket")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * @since 0.1.0
 * @category models
 */
export interface ExpectOptions {
  /** Default 60 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ConsoleSocket {
  readonly [TypeId]: TypeId
  /** Bytes from the guest, from the moment the stream runs; ends when the console closes. */
  readonly stream: Stream.Stream<Uint8Array>
  /** Text lines from the guest (without line terminators), from the moment the stream runs. */
  readonly lines: Stream.Stream<string>
  /** Sends bytes (or UTF-8 text) to the guest. */
  readonly write: (data: string | Uint8Array) => Effect.Effect<void, QmpConnectionError>
  /**
   * Waits until the text received since the previous `expect` (or since
   * connecting) matches `pattern`; returns that text up to and including the
   * match and consumes it.
   */
  readonly expect: (
    pattern: string | RegExp,
    options?: ExpectOptions
  ) => Effect.Effect<string, QmpTimeoutError | QmpConnectionError>
  /** Text received and not yet consumed by `expect`. */
  readonly pending: Effect.Effect<string>
  /** Every byte received so far (the in-memory buffer keeps at most `bufferSize` bytes). */
  readonly received: Effect.Effect<number>
  /** Whether the console is still connected. */
  readonly isConnected: Effect.Effect<boolean>
  /** Closes the console (and flushes the log file). Idempotent. */
  readonly close: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Also write everything received to this file (truncated first). */
  readonly logFile?: string | undefined
  /** Most text kept for `expect`; older unconsumed text is dropped. Default 1 MiB. */
  readonly bufferSize?: number | undefined
  /** Retry connecting this long while QEMU creates the socket. Default 10 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
}

const DEFAULT_BUFFER = 1024 * 1024
const DEFAULT_EXPECT_TIMEOUT = Duration.seconds(60)

/**
 * Reads a connected socket as a console. The socket belongs to the caller's
 * scope; closing the scope closes the console.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromSocket = (
  socket: net.Socket,
  options: Options = {}
): Effect.Effect<ConsoleSocket, never, Scope.Scope> =>
  Effect.gen(function*() {
    const bufferSize = options.bufferSize ?? DEFAULT_BUFFER
    const pubsub = yield* PubSub.sliding<Uint8Array | null>(1024)
    const decoder = new StringDecoder("utf8")
    const logFd = options.logFile === undefined ? undefined : fs.openSync(options.logFile, "w", 0o600)
    let text = ""
    let received = 0
    let closed: QmpConnectionError | undefined
    let waiters: Array<Deferred.Deferred<void>> = []

    const wake = () => {
      if (waiters.length === 0) return
      const woken = waiters
      waiters = []
      for (const w of woken) Deferred.unsafeDone(w, Exit.void)
    }

    const finish = (cause: QmpConnectionError) => {
      if (closed) return
      closed = cause
      socket.destroy()
      text += decoder.end()
      if (logFd !== undefined) {
        try {
          fs.closeSync(logFd)
        } catch {
          // already closed
        }
      }
      pubsub.unsafeOffer(null)
      wake()
    }

    socket.on("data", (chunk: Buffer) => {
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
      pubsub.unsafeOffer(chunk)
      wake()
    })
    socket.on("end", () => finish(new QmpConnectionError({ reason: "Eof", detail: "console closed by QEMU" })))
    socket.on("close", () => finish(new QmpConnectionError({ reason: "Eof", detail: "console closed" })))
    socket.on("error", (err) => finish(new QmpConnectionError({ reason: "SocketError", cause: err })))

    const close = Effect.sync(() => finish(new QmpConnectionError({ reason: "Closed", detail: "console closed by the client" })))
    yield* Effect.addFinalizer(() => close)

    const search = (pattern: string | RegExp): number => {
      if (typeof pattern === "string") {
        const i = text.indexOf(pattern)
        return i < 0 ? -1 : i + pattern.length
      }
      const re = new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ""))
      const m = re.exec(text)
      return m ? m.index + m[0].length : -1
    }

    const expect = (pattern: string | RegExp, expectOptions?: ExpectOptions) => {
      const timeout = Duration.decode(expectOptions?.timeout ?? DEFAULT_EXPECT_TIMEOUT)
      const attempt: Effect.Effect<string, QmpConnectionError> = Effect.suspend(() => {
        const end = search(pattern)
        if (end >= 0) {
          const matched = text.slice(0, end)
          text = text.slice(end)
          return Effect.succeed(matched)
        }
        if (closed) return Effect.fail(closed)
        const waiter = Deferred.unsafeMake<void>(FiberId.none)
        waiters.push(waiter)
        return Effect.zipRight(Deferred.await(waiter), attempt)
      })
      return Effect.timeoutFail(attempt, {
        duration: timeout,
        onTimeout: () => new QmpTimeoutError({ operation: `console expect ${String(pattern)}`, timeout })
      })
    }

    const write = (data: string | Uint8Array) =>
      Effect.suspend(() =>
        closed
          ? Effect.fail(closed)
          : Effect.async<void, QmpConnectionError>((resume) => {
            socket.write(data, (err) =>
              resume(err ? Effect.fail(new QmpConnectionError({ reason: "SocketError", cause: err })) : Effect.void))
          })
      )

    const stream = Stream.unwrapScoped(
      Effect.map(PubSub.subscribe(pubsub), (queue) =>
        closed
          ? Stream.empty
          : (Stream.fromQueue(queue).pipe(
            Stream.takeWhile((chunk) => chunk !== null)
          ) as Stream.Stream<Uint8Array>))
    )

    return {
      [TypeId]: TypeId,
      stream,
      lines: stream.pipe(Stream.decodeText(), Stream.splitLines),
      write,
      expect,
      pending: Effect.sync(() => text),
      received: Effect.sync(() => received),
      isConnected: Effect.sync(() => closed === undefined),
      close
    } satisfies ConsoleSocket
  })

/**
 * Connects to QEMU's console socket, retrying while QEMU has not created it
 * yet, and starts reading at once.
 *
 * @since 0.1.0
 * @category constructors
 */
export const connect = (
  path: string,
  options: Options = {}
): Effect.Effect<ConsoleSocket, QmpConnectionError, Scope.Scope> => {
  const deadline = Duration.decode(options.connectTimeout ?? Duration.seconds(10))
  return Net.connect(path).pipe(
    Effect.retry({
      schedule: Schedule.spaced("10 millis").pipe(Schedule.upTo(deadline)),
      while: (e) => e.detail === undefined || !e.detail.includes("AF_UNIX limit")
    }),
    Effect.flatMap((socket) => fromSocket(socket, options))
  )
}

/**
 * @since 0.1.0
 * @category refinements
 */
export const isConsoleSocket = (u: unknown): u is ConsoleSocket => typeof u === "object" && u !== null && TypeId in u
