/**
 * A QMP (QEMU Machine Protocol) client as an Effect service.
 *
 * A connection is obtained either by *accepting* (we listen, QEMU connects to
 * us: what `QemuMachine` does) or by *connecting* to a QEMU started with
 * `-qmp unix:PATH,server=on,wait=off`. The greeting is decoded and
 * capabilities negotiated before the client is handed out.
 *
 * Many fibers may execute commands at once: each command carries a unique
 * `id` and its reply is routed back by it. Events are published to every
 * `events` stream and also kept in a bounded buffer for `pullEvent` /
 * `getEvents` style draining.
 *
 * Every way a connection can end (EOF, socket error, malformed or oversized
 * message, `close`) goes through one idempotent path that fails every pending
 * caller at once with the first cause.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { QmpClient } from "effect-qemu"
 *
 * const program = Effect.gen(function*() {
 *   const qmp = yield* QmpClient.connect({ address: "/tmp/qmp.sock" })
 *   console.log(qmp.greeting.QMP.version.qemu)
 *   console.log(yield* qmp.execute("query-status"))
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import {
  Context,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  FiberId,
  FiberRef,
  FiberRefs,
  Layer,
  LogLevel,
  Option,
  PubSub,
  Queue,
  Runtime,
  Scope,
  Stream
} from "effect"
import type * as net from "node:net"
import { MachineError, QmpCommandError, QmpConnectionError, QmpProtocolError, QmpTimeoutError } from "./Errors.js"
import type { QmpError } from "./Errors.js"
import * as fdpass from "./internal/fdpass.js"
import { LineDecoder } from "./internal/lineDecoder.js"
import * as Net from "./internal/net.js"
import * as QmpMessage from "./QmpMessage.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-qemu/QmpClient")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * A unix socket path, or a TCP host and port.
 *
 * @since 0.1.0
 * @category models
 */
export type Address = Net.Address

/**
 * Arguments of a QMP command.
 *
 * @since 0.1.0
 * @category models
 */
export type Arguments = Readonly<Record<string, unknown>>

/**
 * @since 0.1.0
 * @category models
 */
export interface ExecuteOptions {
  /** Fail with `QmpTimeoutError` when no reply came within this time. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Send as `exec-oob` (needs the `oob` capability to have been negotiated). */
  readonly oob?: boolean | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface WaitOptions {
  /**
   * `false` (the default) returns at once; `true` waits until an event arrives
   * or the connection ends; a duration waits at most that long, then fails with
   * `QmpTimeoutError`.
   */
  readonly wait?: boolean | Duration.DurationInput | undefined
}

/**
 * Options shared by every way of obtaining a client.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Deadline for the greeting and capabilities negotiation. Default 15 seconds. */
  readonly negotiationTimeout?: Duration.DurationInput | undefined
  /** Default deadline of every command. Default: none, like QEMU's Python client. */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /** Ask for out-of-band execution when the server offers it. Default false. */
  readonly oob?: boolean | undefined
  /** Events kept for `pullEvent`/`getEvents` before the oldest are dropped. Default 10,000. */
  readonly eventBufferSize?: number | undefined
  /**
   * Largest message accepted, in bytes; a longer line (or bytes without a
   * newline past this size) ends the connection with `QmpProtocolError`.
   * It bounds what one message, or a peer that never sends a newline, can make
   * us buffer. Default 16 MiB (QEMU's largest reply, `query-qmp-schema`, is
   * about 200 KiB). Buffered events are bounded by count (`eventBufferSize`),
   * not bytes.
   */
  readonly maxMessageSize?: number | undefined
  /** A label for logs and spans. */
  readonly name?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ConnectOptions extends Options {
  /** Where QEMU's QMP server listens. */
  readonly address: Address
  /** Deadline for establishing the socket connection. Default 15 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
}

/**
 * A socket we listen on, for QEMU to connect to (`-chardev socket,...` without
 * `server=on`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Listener {
  /** The bound address (for TCP port 0, the port the kernel chose). */
  readonly address: Address
  /** Waits for QEMU to connect, then negotiates. The client lives in the caller's scope. */
  readonly accept: (options?: Options) => Effect.Effect<QmpClient.Service, QmpError, Scope.Scope>
  /** Stops listening and removes the unix socket file. Idempotent. */
  readonly close: Effect.Effect<void>
}

/**
 * The QMP client service.
 *
 * @since 0.1.0
 * @category tags
 */
export class QmpClient extends Context.Tag("effect-qemu/QmpClient")<QmpClient, QmpClient.Service>() {}

/**
 * @since 0.1.0
 * @category models
 */
export declare namespace QmpClient {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    readonly [TypeId]: TypeId
    /** The greeting QEMU sent when the connection opened. */
    readonly greeting: QmpMessage.Greeting
    /** Capabilities enabled by negotiation (e.g. `["oob"]`). */
    readonly capabilities: ReadonlyArray<string>
    /**
     * Runs a command and returns its `return` value; QEMU's `{ error }`
     * answer becomes a `QmpCommandError`.
     */
    readonly execute: (
      command: string,
      args?: Arguments,
      options?: ExecuteOptions
    ) => Effect.Effect<unknown, QmpCommandError | QmpError>
    /** Runs a command and returns the raw response, `{ return }` or `{ error }`. */
    readonly executeRaw: (
      command: string,
      args?: Arguments,
      options?: ExecuteOptions
    ) => Effect.Effect<QmpMessage.Response, QmpError>
    /** Every event received from the moment the stream runs; ends when the connection does. */
    readonly events: Stream.Stream<QmpMessage.Event>
    /** Subscribes now, so that no event after this point is missed, and streams later. */
    readonly subscribe: Effect.Effect<Stream.Stream<QmpMessage.Event>, never, Scope.Scope>
    /** Takes the oldest buffered event. */
    readonly pullEvent: (options?: WaitOptions) => Effect.Effect<Option.Option<QmpMessage.Event>, QmpError>
    /** Takes every buffered event (waiting for at least one when `wait` is set). */
    readonly getEvents: (options?: WaitOptions) => Effect.Effect<ReadonlyArray<QmpMessage.Event>, QmpError>
    /** Drops every buffered event. */
    readonly clearEvents: Effect.Effect<void>
    /** Sends a file descriptor over the (unix) QMP socket with SCM_RIGHTS, for `getfd` / `add-fd`. */
    readonly sendFdScm: (fd: number) => Effect.Effect<void, QmpConnectionError | MachineError>
    /** Whether the connection is still open. */
    readonly isConnected: Effect.Effect<boolean>
    /** Completes, with the cause, when the connection has ended. */
    readonly closed: Effect.Effect<QmpConnectionError | QmpProtocolError>
    /** Closes the connection; pending callers fail with `QmpConnectionError`. Idempotent. */
    readonly close: Effect.Effect<void>
  }
}

const DEFAULT_NEGOTIATION_TIMEOUT = Duration.seconds(15)
const DEFAULT_EVENT_BUFFER = 10_000
const DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
const STREAM_BUFFER = 4096
const MAX_ABANDONED = 4096

type CloseCause = QmpConnectionError | QmpProtocolError

// An id comes from the server and may be any JSON value, nested 100k levels
// deep: `String()` on that overflows the stack.
const describeId = (id: unknown): string => {
  if (typeof id === "string") return QmpMessage.truncateRaw(id)
  try {
    return QmpMessage.truncateRaw(JSON.stringify(id) ?? String(id))
  } catch {
    return "(too deeply nested to print)"
  }
}

/**
 * Speaks QMP over an already open socket: waits for the greeting, negotiates
 * capabilities, and returns the client. The socket is owned by the client from
 * here on and destroyed when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromSocket = (
  socket: net.Socket,
  options: Options = {}
): Effect.Effect<QmpClient.Service, QmpError, Scope.Scope> =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    const maxMessage = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE
    const decoder = new LineDecoder(maxMessage)
    // A waiting command's resume callback, by id.
    const pending = new Map<number, (reply: Effect.Effect<QmpMessage.Response, QmpError>) => void>()
    const buffer = yield* Queue.sliding<QmpMessage.Event>(options.eventBufferSize ?? DEFAULT_EVENT_BUFFER)
    // `null` marks the end of the connection for every stream. Made by the first subscriber:
    // it costs more to build than the rest of the client (on the launch path), and what is
    // published while nobody subscribes is dropped anyway.
    let pubsub: PubSub.PubSub<QmpMessage.Event | null> | undefined
    const greetingDeferred = Deferred.unsafeMake<QmpMessage.Greeting, CloseCause>(FiberId.none)
    const closedDeferred = Deferred.unsafeMake<CloseCause>(FiberId.none)
    const defaultTimeout = options.commandTimeout === undefined ? undefined : Duration.decode(options.commandTimeout)
    const label = options.name ?? "qmp"
    let counter = 0
    // Ids of commands whose caller gave up (timeout, interruption): their late replies are expected.
    const abandoned = new Set<number>()
    let closeCause: CloseCause | undefined
    let greeted = false

    // Logs from socket callbacks need a fiber; skip forking one for a level that is filtered out.
    const minimumLevel = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentMinimumLogLevel)
    const log = (level: "Debug" | "Warning", message: string, annotations: Record<string, unknown> = {}) => {
      if (LogLevel.lessThan(level === "Debug" ? LogLevel.Debug : LogLevel.Warning, minimumLevel)) return
      Runtime.runFork(runtime)(
        (level === "Debug" ? Effect.logDebug(message) : Effect.logWarning(message)).pipe(
          Effect.annotateLogs({ qmp: label, ...annotations })
        )
      )
    }

    // The single disconnect path: first cause wins, everything waiting is failed. The cause is
    // built lazily: later ones (usually end, close, ...) would each capture a stack trace for nothing.
    const disconnect = (makeCause: () => CloseCause) => {
      if (closeCause) return
      const cause = makeCause()
      closeCause = cause
      socket.destroy()
      const failure = Exit.fail(cause)
      for (const resume of pending.values()) resume(failure)
      pending.clear()
      Deferred.unsafeDone(greetingDeferred, failure)
      Deferred.unsafeDone(closedDeferred, Exit.succeed(cause))
      pubsub?.unsafeOffer(null)
      log("Debug", `QMP connection ended: ${cause.message}`)
    }

    const onMessage = (line: string) => {
      // Lines that follow a fatal one in the same read come from a stream already declared broken.
      if (closeCause) return
      const decoded = QmpMessage.decode(line)
      if (Either.isLeft(decoded)) return disconnect(() => decoded.left)
      const message = decoded.right
      if (!greeted) {
        if (message._tag !== "Greeting") {
          return disconnect(() => new QmpProtocolError({ message: "expected the QMP greeting", raw: QmpMessage.truncateRaw(line) }))
        }
        greeted = true
        return Deferred.unsafeDone(greetingDeferred, Exit.succeed(message.value))
      }
      switch (message._tag) {
        case "Event": {
          buffer.unsafeOffer(message.value)
          pubsub?.unsafeOffer(message.value)
          return
        }
        case "Response": {
          const id = message.value.id
          if (id === undefined) {
            // QEMU answers without an id only when it could not parse what we sent.
            return disconnect(() =>
              new QmpProtocolError({ message: "response without id", raw: QmpMessage.truncateRaw(line) })
            )
          }
          const resume = typeof id === "number" ? pending.get(id) : undefined
          if (!resume && typeof id === "number" && abandoned.delete(id)) {
            log("Debug", "dropping the late reply of an abandoned QMP command", { id: String(id) })
            return
          }
          if (!resume) {
            log("Warning", "dropping QMP reply with an unknown id", { id: describeId(id) })
            return
          }
          pending.delete(id as number)
          resume(Exit.succeed(message.value))
          return
        }
        case "Greeting":
          return disconnect(() =>
            new QmpProtocolError({ message: "unexpected second greeting", raw: QmpMessage.truncateRaw(line) })
          )
      }
    }

    socket.setNoDelay?.(true)
    socket.on("data", (data: Buffer) => {
      if (closeCause) return
      let oversized: ReturnType<LineDecoder["push"]>
      try {
        oversized = decoder.push(data, onMessage)
      } catch (e) {
        // A throw here would be an uncaught exception in the user's process: end the connection instead.
        return disconnect(() => new QmpProtocolError({ message: `cannot handle a QMP message: ${String(e)}`, raw: "" }))
      }
      if (oversized) {
        disconnect(() =>
          new QmpProtocolError({
            message: `QMP message exceeds ${maxMessage} bytes (${oversized.size} so far)`,
            raw: QmpMessage.truncateRaw(oversized.head)
          })
        )
      }
    })
    socket.on("end", () => disconnect(() => new QmpConnectionError({ reason: "Eof", detail: "QMP server closed the connection" })))
    socket.on("error", (err) => disconnect(() => new QmpConnectionError({ reason: "SocketError", cause: err })))
    socket.on("close", () => disconnect(() => new QmpConnectionError({ reason: "Eof", detail: "QMP socket closed" })))
    if (socket.destroyed) disconnect(() => new QmpConnectionError({ reason: "Eof", detail: "QMP socket already closed" }))

    const close = Effect.sync(() =>
      disconnect(() => new QmpConnectionError({ reason: "Closed", detail: "connection closed by the client" }))
    )
    yield* Effect.addFinalizer(() => close)

    const executeRaw = (
      command: string,
      args?: Arguments,
      executeOptions?: ExecuteOptions
    ): Effect.Effect<QmpMessage.Response, QmpError> =>
      Effect.suspend(() => {
        if (closeCause) return Effect.fail(closeCause)
        const id = ++counter
        const verb = executeOptions?.oob ? "exec-oob" : "execute"
        const wire = args === undefined
          ? `{"${verb}":${JSON.stringify(command)},"id":${id}}\n`
          : `{"${verb}":${JSON.stringify(command)},"arguments":${JSON.stringify(args)},"id":${id}}\n`
        const timeout = executeOptions?.timeout === undefined ? defaultTimeout : Duration.decode(executeOptions.timeout)
        // A plain async callback rather than a Deferred: this is the per-command hot path.
        const awaited = Effect.async<QmpMessage.Response, QmpError>((resume) => {
          pending.set(id, resume)
          socket.write(wire)
          // Runs only when the caller gives up (timeout, interruption): a reply that comes
          // after that is expected and dropped.
          return Effect.sync(() => {
            if (!pending.delete(id)) return
            // Bounded: a server that never answers must not grow this forever.
            if (abandoned.size >= MAX_ABANDONED) abandoned.delete(abandoned.values().next().value!)
            abandoned.add(id)
          })
        })
        return timeout === undefined || !Duration.isFinite(timeout)
          ? awaited
          : Effect.timeoutFail(awaited, {
            duration: timeout,
            onTimeout: () => new QmpTimeoutError({ operation: `QMP command '${command}'`, timeout })
          })
      })

    const execute = (
      command: string,
      args?: Arguments,
      executeOptions?: ExecuteOptions
    ): Effect.Effect<unknown, QmpCommandError | QmpError> =>
      Effect.flatMap(executeRaw(command, args, executeOptions), (response) =>
        QmpMessage.isErrorResponse(response)
          ? Effect.fail(
            new QmpCommandError({ command, errorClass: response.error.class, desc: response.error.desc })
          )
          : Effect.succeed(response.return))

    const closedFailure = Effect.suspend(() => Effect.fail(closeCause!))

    const takeEvent = Effect.raceFirst(
      Queue.take(buffer),
      Effect.zipRight(Deferred.await(closedDeferred), closedFailure)
    )

    const pullEvent = (waitOptions?: WaitOptions): Effect.Effect<Option.Option<QmpMessage.Event>, QmpError> =>
      Effect.flatMap(Queue.poll(buffer), (polled) => {
        const wait = waitOptions?.wait ?? false
        if (Option.isSome(polled) || wait === false) return Effect.succeed(polled)
        if (wait === true) return Effect.asSome(takeEvent)
        const timeout = Duration.decode(wait)
        return takeEvent.pipe(
          Effect.timeoutFail({
            duration: timeout,
            onTimeout: () => new QmpTimeoutError({ operation: "waiting for a QMP event", timeout })
          }),
          Effect.asSome
        )
      })

    const getEvents = (waitOptions?: WaitOptions): Effect.Effect<ReadonlyArray<QmpMessage.Event>, QmpError> =>
      Effect.flatMap(Queue.takeAll(buffer), (taken) => {
        if (taken.length > 0 || !waitOptions?.wait) return Effect.succeed(Array.from(taken))
        return Effect.flatMap(pullEvent(waitOptions), (first) =>
          Effect.map(Queue.takeAll(buffer), (rest) => [...Option.toArray(first), ...rest]))
      })

    const getPubSub = Effect.suspend(() =>
      pubsub
        ? Effect.succeed(pubsub)
        : Effect.map(PubSub.sliding<QmpMessage.Event | null>(STREAM_BUFFER), (made) => (pubsub ??= made))
    )

    const subscribe = Effect.map(Effect.flatMap(getPubSub, PubSub.subscribe), (queue) =>
      closeCause
        ? Stream.empty
        : Stream.fromQueue(queue).pipe(
          Stream.takeWhile((event): event is QmpMessage.Event => event !== null)
        ) as Stream.Stream<QmpMessage.Event>)

    const sendFdScm = (fd: number): Effect.Effect<void, QmpConnectionError | MachineError> =>
      Effect.suspend((): Effect.Effect<void, QmpConnectionError | MachineError> => {
        if (closeCause) {
          return Effect.fail(
            closeCause._tag === "QmpConnectionError"
              ? closeCause
              : new QmpConnectionError({ reason: "ProtocolError", cause: closeCause })
          )
        }
        const binding = fdpass.loadFdPass()
        if (typeof binding === "string") {
          return Effect.fail(new MachineError({ message: `SCM_RIGHTS fd passing is unavailable: ${binding}` }))
        }
        const sockFd = fdpass.socketFd(socket)
        if (sockFd === undefined) {
          return Effect.fail(new MachineError({ message: "the QMP socket has no file descriptor (not a unix socket?)" }))
        }
        // Let queued writes reach the kernel first, so the fd travels in order.
        const flushed = socket.writableLength === 0
          ? Effect.void
          : Effect.async<void>((resume) => {
            socket.write("", () => resume(Effect.void))
          })
        return Effect.flatMap(flushed, () => {
          // A lone space is JSON whitespace to QEMU; the fd rides along with it.
          const result = fdpass.sendFds(sockFd, [fd], Buffer.from(" "))
          return result._tag === "Ok"
            ? Effect.void
            : Effect.fail(new QmpConnectionError({ reason: "SocketError", detail: `sendmsg: ${result.message}`, cause: result }))
        })
      })

    const service: QmpClient.Service = {
      [TypeId]: TypeId,
      greeting: undefined as unknown as QmpMessage.Greeting,
      capabilities: [],
      execute,
      executeRaw,
      events: Stream.unwrapScoped(subscribe),
      subscribe,
      pullEvent,
      getEvents,
      clearEvents: Effect.asVoid(Queue.takeAll(buffer)),
      sendFdScm,
      isConnected: Effect.sync(() => closeCause === undefined),
      closed: Deferred.await(closedDeferred),
      close
    }

    // Negotiate before handing the client out.
    const negotiationTimeout = Duration.decode(options.negotiationTimeout ?? DEFAULT_NEGOTIATION_TIMEOUT)
    const negotiate = Effect.gen(function*() {
      const greeting = yield* Deferred.await(greetingDeferred)
      const enable = options.oob && greeting.QMP.capabilities.includes("oob") ? ["oob"] : []
      yield* execute("qmp_capabilities", enable.length > 0 ? { enable } : undefined).pipe(
        Effect.catchTag("QmpCommandError", (e) =>
          Effect.fail(new QmpProtocolError({ message: `capabilities negotiation refused: ${e.message}`, raw: "" })))
      )
      return { ...service, greeting, capabilities: enable }
    })
    const bounded = Duration.isFinite(negotiationTimeout)
      ? Effect.timeoutFail(negotiate, {
        duration: negotiationTimeout,
        onTimeout: () => new QmpTimeoutError({ operation: "QMP greeting and negotiation", timeout: negotiationTimeout })
      })
      : negotiate
    return yield* Effect.tapError(bounded, () => close)
  }).pipe(Effect.withSpan("QmpClient.negotiate"))

/**
 * Connects to a QEMU that listens for QMP (`-qmp unix:PATH,server=on,wait=off`
 * or `-qmp tcp:HOST:PORT,server=on,wait=off`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const connect = (options: ConnectOptions): Effect.Effect<QmpClient.Service, QmpError, Scope.Scope> => {
  const timeout = Duration.decode(options.connectTimeout ?? DEFAULT_NEGOTIATION_TIMEOUT)
  return Net.connect(options.address).pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () =>
        new QmpTimeoutError({ operation: `connecting to QMP at ${Net.formatAddress(options.address)}`, timeout })
    }),
    Effect.flatMap((socket) => fromSocket(socket, options))
  )
}

/**
 * Listens on an address for QEMU to connect to (what `QemuMachine` does: the
 * listener must exist before QEMU starts). The listener closes, and a unix
 * socket file is removed, when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const listen = (address: Address): Effect.Effect<Listener, QmpConnectionError, Scope.Scope> =>
  Effect.map(Net.listen(address), (listener) => ({
    address: listener.address,
    close: listener.close,
    accept: (options?: Options) => Effect.flatMap(listener.accept, (socket) => fromSocket(socket, options))
  }))

/**
 * A layer that connects to a running QEMU and provides `QmpClient`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: ConnectOptions): Layer.Layer<QmpClient, QmpError> =>
  Layer.scoped(QmpClient, connect(options))

/**
 * @since 0.1.0
 * @category refinements
 */
export const isQmpClient = (u: unknown): u is QmpClient.Service =>
  typeof u === "object" && u !== null && TypeId in u
