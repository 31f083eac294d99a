/**
 * One QMP connection on the session core: line framing, message decoding,
 * an explicit connection state (awaiting greeting → negotiating → ready →
 * closed), the pending-command map keyed by numeric id, and events handed to
 * the event router. Everything that ends the connection goes through the
 * session's single close path; the first cause wins.
 */
import { Deferred, Duration, Effect, Either, Exit, FiberId, FiberRef, FiberRefs, LogLevel, Runtime } from "effect"
import type * as net from "node:net"
import { QmpConnectionError, QmpProtocolError, QmpTimeoutError } from "../../Errors.js"
import type { QmpError } from "../../Errors.js"
import * as QmpMessage from "../../QmpMessage.js"
import * as LineFramer from "../lineFramer.js"
import * as Session from "../session.js"
import * as Events from "./events.js"

export type CloseCause = Events.CloseCause

/** The connection's run state. Only `transition` changes it. */
export type State =
  | { readonly _tag: "AwaitingGreeting" }
  | { readonly _tag: "Negotiating"; readonly greeting: QmpMessage.Greeting }
  | { readonly _tag: "Ready" }
  | { readonly _tag: "Closed"; readonly cause: CloseCause }

export interface Options {
  readonly commandTimeout?: Duration.DurationInput | undefined
  readonly maxMessageSize?: number | undefined
  readonly eventCacheSize?: number | undefined
  readonly eventCacheBytes?: number | undefined
  readonly eventStreamBuffer?: number | undefined
  readonly name?: string | undefined
}

export interface ExecuteOptions {
  readonly timeout?: Duration.DurationInput | undefined
  readonly oob?: boolean | undefined
}

/** A command and its arguments, as `sendAll` takes them. */
export type Call = readonly [command: string, args?: Readonly<Record<string, unknown>> | undefined]

export interface Connection {
  readonly session: Session.Session<CloseCause>
  readonly events: Events.Router
  readonly greeting: Effect.Effect<QmpMessage.Greeting, CloseCause>
  readonly ready: () => void
  readonly executeRaw: (
    command: string,
    args?: Readonly<Record<string, unknown>>,
    options?: ExecuteOptions
  ) => Effect.Effect<QmpMessage.Response, QmpError>
  /**
   * Sends a command and hands its reply (or the connection's end) to `onReply`, in the
   * reply's own callback, without an Effect; returns the cancel (the late reply is dropped).
   */
  readonly request: (
    command: string,
    args: Readonly<Record<string, unknown>> | undefined,
    options: ExecuteOptions | undefined,
    onReply: (reply: Exit.Exit<QmpMessage.Response, CloseCause>) => void
  ) => () => void
  /**
   * `request` for many commands at once, with one handler for all of them: `onReply` gets the
   * command's position in `calls`, or -1 with the connection's end. Returns the cancel of the lot.
   * (A batch of thousands keeps no closure per command while it waits for the replies.)
   */
  readonly requestMany: (
    calls: ReadonlyArray<Call>,
    options: ExecuteOptions | undefined,
    onReply: (index: number, reply: Exit.Exit<QmpMessage.Response, CloseCause>) => void
  ) => () => void
  /**
   * `executeRaw` whose reply is turned into the result by `onReply`, in the
   * reply's own callback: the typed path takes no extra step per command.
   */
  readonly send: <A, E>(
    command: string,
    args: Readonly<Record<string, unknown>> | undefined,
    options: ExecuteOptions | undefined,
    onReply: (response: QmpMessage.Response) => Exit.Exit<A, E>
  ) => Effect.Effect<A, E | QmpError>
  /**
   * `send` for many commands in one async step: written together and in order, the
   * results in order once every reply is in; the first failure by position otherwise.
   */
  readonly sendAll: <A, E>(
    commands: ReadonlyArray<Call>,
    options: ExecuteOptions | undefined,
    onReply: (command: string, response: QmpMessage.Response) => Exit.Exit<A, E>
  ) => Effect.Effect<Array<A>, E | QmpError>
  /** Writes the commands not yet written (they go out after this turn of the event loop otherwise). */
  readonly flush: () => void
  readonly close: () => void
  readonly log: (level: "Debug" | "Warning", message: string, annotations?: Record<string, unknown>) => void
}

export const DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024
export const DEFAULT_EVENT_CACHE = 10_000
export const DEFAULT_EVENT_CACHE_BYTES = 64 * 1024 * 1024
export const DEFAULT_STREAM_BUFFER = 4096
const MAX_ABANDONED = 4096
/**
 * Batched commands of one connection written at once, without waiting for the end of the
 * turn: a burst (`Effect.forEach` over thousands of commands) reaches QEMU while the rest
 * are still being made, instead of all of them after the last (bench/README.md, events).
 */
const FLUSH_LINES = 64

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

const protocolError = (message: string, line: string) =>
  new QmpProtocolError({ message, raw: QmpMessage.truncateRaw(line) })

/** Logs from socket callbacks need a fiber; a level that is filtered out forks none. */
const makeLog = (runtime: Runtime.Runtime<never>, label: string) => {
  const minimumLevel = FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentMinimumLogLevel)
  return (level: "Debug" | "Warning", message: string, annotations: Record<string, unknown> = {}) => {
    if (LogLevel.lessThan(level === "Debug" ? LogLevel.Debug : LogLevel.Warning, minimumLevel)) return
    Runtime.runFork(runtime)(
      (level === "Debug" ? Effect.logDebug(message) : Effect.logWarning(message)).pipe(
        Effect.annotateLogs({ qmp: label, ...annotations })
      )
    )
  }
}

type Resume = (reply: Exit.Exit<QmpMessage.Response, CloseCause>) => void

/**
 * Connections of this process with a command awaiting its reply. While another is busy, a
 * command waits for the batched write (see `enqueue`); when none is, it is written at once.
 */
let busyConnections = 0

/** Waiting commands by id; the ids of those whose caller gave up, whose late replies are expected. */
const makeReplies = (log: ReturnType<typeof makeLog>) => {
  const pending = new Map<number, Resume>()
  const abandoned = new Set<number>()
  const settled = () => {
    if (pending.size === 0) busyConnections--
  }
  return {
    expect: (id: number, resume: Resume) => {
      if (pending.size === 0) busyConnections++
      pending.set(id, resume)
    },
    abandon: (id: number) => {
      if (!pending.delete(id)) return
      settled()
      // Bounded: a server that never answers must not grow this forever.
      if (abandoned.size >= MAX_ABANDONED) abandoned.delete(abandoned.values().next().value!)
      abandoned.add(id)
    },
    resolve: (response: QmpMessage.Response) => {
      const id = response.id
      const resume = typeof id === "number" ? pending.get(id) : undefined
      if (resume) {
        pending.delete(id as number)
        settled()
        return resume(Exit.succeed(response))
      }
      if (typeof id === "number" && abandoned.delete(id)) {
        return log("Debug", "dropping the late reply of an abandoned QMP command", { id: String(id) })
      }
      log("Warning", "dropping QMP reply with an unknown id", { id: describeId(id) })
    },
    failAll: (failure: Exit.Exit<never, CloseCause>) => {
      if (pending.size === 0) return
      const waiting = [...pending.values()]
      pending.clear()
      busyConnections--
      for (const resume of waiting) resume(failure)
    }
  }
}

const wire = (command: string, args: Readonly<Record<string, unknown>> | undefined, oob: boolean, id: number) => {
  const verb = oob ? "exec-oob" : "execute"
  return args === undefined
    ? `{"${verb}":${JSON.stringify(command)},"id":${id}}\n`
    : `{"${verb}":${JSON.stringify(command)},"arguments":${JSON.stringify(args)},"id":${id}}\n`
}

const timeoutOf = (executeOptions: ExecuteOptions | undefined, defaultTimeout: Duration.Duration | undefined) =>
  executeOptions?.timeout === undefined ? defaultTimeout : Duration.decode(executeOptions.timeout)

const withTimeout = <A, E>(
  effect: Effect.Effect<A, E>,
  timeout: Duration.Duration | undefined,
  operation: () => string
): Effect.Effect<A, E | QmpTimeoutError> =>
  timeout === undefined || !Duration.isFinite(timeout)
    ? effect
    : Effect.timeoutFail(effect, { duration: timeout, onTimeout: () => new QmpTimeoutError({ operation: operation(), timeout }) })

/** `Connection.send` over `request`: one async step, and a timeout race only when a timeout is set. */
const makeSend = (request: Connection["request"], defaultTimeout: Duration.Duration | undefined): Connection["send"] =>
<A, E>(
  command: string,
  args: Readonly<Record<string, unknown>> | undefined,
  executeOptions: ExecuteOptions | undefined,
  onReply: (response: QmpMessage.Response) => Exit.Exit<A, E>
): Effect.Effect<A, E | QmpError> => {
  // One async step per command, this being the per-command hot path: the id and the wire
  // are made when it runs, and the reply becomes the result in its own callback. A caller
  // that gives up (interrupted: a timeout, a race, a closing scope) is seen when its fiber
  // ends, by an observer removed with the reply: the late reply is then expected and dropped.
  // (A canceler returned to `Effect.async` is an `onInterrupt`: half a dozen more Effect
  // steps on every command, for the rare one that is given up.)
  const awaited = Effect.withFiberRuntime<A, E | QmpError>((fiber) =>
    Effect.async<A, E | QmpError>((resume) => {
      let replied = false
      // Called only once it is registered below, after `cancel` is set.
      const gaveUp = () => cancel()
      const cancel = request(command, args, executeOptions, (reply) => {
        replied = true
        fiber.removeObserver(gaveUp)
        resume(Exit.isSuccess(reply) ? onReply(reply.value) : Exit.failCause(reply.cause))
      })
      if (!replied) fiber.addObserver(gaveUp)
    })
  )
  return withTimeout(awaited, timeoutOf(executeOptions, defaultTimeout), () => `QMP command '${command}'`)
}

/** In order, the first failure by position, else every value. */
const collect = <A, E>(exits: ReadonlyArray<Exit.Exit<A, E>>): Exit.Exit<Array<A>, E> => {
  const values: Array<A> = new Array(exits.length)
  for (let i = 0; i < exits.length; i++) {
    const exit = exits[i]!
    if (Exit.isFailure(exit)) return Exit.failCause(exit.cause)
    values[i] = exit.value
  }
  return Exit.succeed(values)
}

/**
 * `Connection.sendAll` over `requestMany` and `flush`: one async step for the lot, the lines
 * written as one burst (in FLUSH_LINES chunks), the late replies of a batch given up dropped.
 */
const makeSendAll = (
  requestMany: Connection["requestMany"],
  flush: () => void,
  defaultTimeout: Duration.Duration | undefined
): Connection["sendAll"] =>
<A, E>(
  commands: ReadonlyArray<Call>,
  executeOptions: ExecuteOptions | undefined,
  onReply: (command: string, response: QmpMessage.Response) => Exit.Exit<A, E>
): Effect.Effect<Array<A>, E | QmpError> => {
  if (commands.length === 0) return Effect.succeed([])
  const awaited = Effect.withFiberRuntime<Array<A>, E | QmpError>((fiber) =>
    Effect.async<Array<A>, E | QmpError>((resume) => {
      const exits: Array<Exit.Exit<A, E>> = new Array(commands.length)
      let left = commands.length
      let done = false
      const end = (exit: Exit.Exit<Array<A>, E | QmpError>) => {
        done = true
        fiber.removeObserver(gaveUp)
        resume(exit)
      }
      const cancel = requestMany(commands, executeOptions, (index, reply) => {
        if (done) return
        // The connection ended: it failed every pending command at once (none of the batch is
        // left in its map to give up), and later requests fail at once; the first failure ends it.
        if (Exit.isFailure(reply)) return end(Exit.failCause(reply.cause))
        exits[index] = onReply(commands[index]![0], reply.value)
        if (--left === 0) end(collect(exits))
      })
      function gaveUp() {
        cancel()
      }
      if (!done) {
        fiber.addObserver(gaveUp)
        flush()
      }
    })
  )
  return withTimeout(awaited, timeoutOf(executeOptions, defaultTimeout), () =>
    `QMP commands ${commands.slice(0, 3).map(([c]) => `'${c}'`).join(", ")}${commands.length > 3 ? ` and ${commands.length - 3} more` : ""}`)
}

/**
 * The lines of one connection waiting for their write. While other connections wait for
 * replies, commands go out together after the I/O callbacks of this turn of the event loop
 * (`setImmediate`): each write wakes a QEMU, which takes a CPU from this process, so the next
 * command of every machine whose reply came in this turn is made first, and commands in flight
 * on one connection share one write. (A command made while no connection waits, one machine
 * driven one command at a time, is written at once by the caller: the turn of the event loop
 * was 14-22 us of its round trip, bench/README.md.) A non-empty outbox has its flush queued:
 * the first line queues it. A burst does not wait for the end of the turn: every FLUSH_LINES
 * lines go out as they are made.
 */
const makeOutbox = (write: (data: string) => void) => {
  let lines: Array<string> = []
  const flush = () => {
    if (lines.length === 0) return
    const data = lines.length === 1 ? lines[0]! : lines.join("")
    lines = []
    write(data)
  }
  return {
    isEmpty: () => lines.length === 0,
    enqueue: (line: string) => {
      const queued = lines.push(line)
      if (queued === 1) setImmediate(flush)
      else if (queued >= FLUSH_LINES) flush()
    },
    flush
  }
}

/**
 * Commands out, replies routed back: ids from one counter, each awaited in `replies`, its line
 * written at once when no connection waits for a reply, else through the outbox (`makeOutbox`).
 * A request made once the connection has ended fails at once, writing nothing.
 */
const makeRequests = (deps: {
  readonly closed: () => CloseCause | undefined
  readonly replies: ReturnType<typeof makeReplies>
  readonly outbox: ReturnType<typeof makeOutbox>
  readonly write: (data: string) => void
}): Pick<Connection, "request" | "requestMany"> => {
  const { outbox, replies } = deps
  let counter = 0
  const post = (
    command: string,
    args: Readonly<Record<string, unknown>> | undefined,
    oob: boolean,
    resume: Resume
  ): number => {
    const id = ++counter
    const alone = busyConnections === 0 && outbox.isEmpty()
    replies.expect(id, resume)
    const line = wire(command, args, oob, id)
    if (alone) deps.write(line)
    else outbox.enqueue(line)
    return id
  }
  return {
    request: (command, args, executeOptions, onReply) => {
      const cause = deps.closed()
      if (cause) {
        onReply(Exit.fail(cause))
        return () => {}
      }
      const id = post(command, args, executeOptions?.oob === true, onReply)
      return () => replies.abandon(id)
    },
    requestMany: (calls, executeOptions, onReply) => {
      const cause = deps.closed()
      if (cause) {
        onReply(-1, Exit.fail(cause))
        return () => {}
      }
      // Consecutive ids: a reply's id says its position, so one handler serves the whole batch.
      const first = counter + 1
      const resume: Resume = (reply) =>
        onReply(Exit.isSuccess(reply) ? (reply.value.id as number) - first : -1, reply)
      const oob = executeOptions?.oob === true
      let last = first - 1
      for (const [command, args] of calls) {
        // A write that fails at once ends the session, and with it the batch (failed by `failAll`).
        if (deps.closed()) break
        last = post(command, args, oob, resume)
      }
      return () => {
        for (let id = first; id <= last; id++) replies.abandon(id)
      }
    }
  }
}

/** Starts reading QMP from an open socket. The greeting is awaited with `greeting`. */
export const open = (socket: net.Socket, options: Options, runtime: Runtime.Runtime<never>): Connection => {
  const maxMessage = options.maxMessageSize ?? DEFAULT_MAX_MESSAGE
  const log = makeLog(runtime, options.name ?? "qmp")
  const replies = makeReplies(log)
  const greeting = Deferred.unsafeMake<QmpMessage.Greeting, CloseCause>(FiberId.none)
  const defaultTimeout = options.commandTimeout === undefined ? undefined : Duration.decode(options.commandTimeout)
  let state: State = { _tag: "AwaitingGreeting" }

  const transition = (next: State) => {
    if (state._tag === "Closed") return
    state = next
    if (next._tag === "Negotiating") Deferred.unsafeDone(greeting, Exit.succeed(next.greeting))
  }

  const events = Events.make({
    cacheSize: options.eventCacheSize ?? DEFAULT_EVENT_CACHE,
    cacheBytes: options.eventCacheBytes ?? DEFAULT_EVENT_CACHE_BYTES,
    streamBuffer: options.eventStreamBuffer ?? DEFAULT_STREAM_BUFFER,
    warn: (message) => log("Warning", message)
  })

  const onLine = (line: string) => {
    // Lines that follow a fatal one in the same read come from a stream already declared broken.
    if (state._tag === "Closed") return
    const decoded = QmpMessage.decode(line)
    if (Either.isLeft(decoded)) return session.end(() => decoded.left)
    const message = decoded.right
    if (state._tag === "AwaitingGreeting") {
      if (message._tag !== "Greeting") return session.end(() => protocolError("expected the QMP greeting", line))
      return transition({ _tag: "Negotiating", greeting: message.value })
    }
    switch (message._tag) {
      case "Event":
        return events.publish(message.value, line.length)
      case "Response":
        // QEMU answers without an id only when it could not parse what we sent.
        if (message.value.id === undefined) return session.end(() => protocolError("response without id", line))
        return replies.resolve(message.value)
      case "Greeting":
        return session.end(() => protocolError("unexpected second greeting", line))
    }
  }

  const session: Session.Session<CloseCause> = Session.make<CloseCause>(socket, {
    // An oversized message is fatal; lines after it in the same read find the state closed.
    onData: LineFramer.make({ maxLineBytes: maxMessage }, {
      onLine,
      onOversized: (size, head) =>
        session.end(() => protocolError(`QMP message exceeds ${maxMessage} bytes (${size} so far)`, head))
    }),
    onClose: (cause) => {
      state = { _tag: "Closed", cause }
      const failure = Exit.fail(cause)
      replies.failAll(failure)
      Deferred.unsafeDone(greeting, failure)
      events.close(cause)
      log("Debug", `QMP connection ended: ${cause.message}`)
    },
    eof: (detail) => new QmpConnectionError({ reason: "Eof", detail: `QMP: ${detail}` }),
    error: (err) => new QmpConnectionError({ reason: "SocketError", cause: err }),
    crashed: (e) => new QmpProtocolError({ message: `cannot handle a QMP message: ${String(e)}`, raw: "" })
  })
  socket.setNoDelay?.(true)

  const outbox = makeOutbox(session.write)

  const { request, requestMany } = makeRequests({
    closed: () => (state._tag === "Closed" ? state.cause : undefined),
    replies,
    outbox,
    write: session.write
  })

  const send = makeSend(request, defaultTimeout)
  const sendAll = makeSendAll(requestMany, outbox.flush, defaultTimeout)

  return {
    session,
    events,
    greeting: Deferred.await(greeting),
    ready: () => transition({ _tag: "Ready" }),
    executeRaw: (command, args, executeOptions) => send(command, args, executeOptions, Exit.succeed),
    request,
    requestMany,
    send,
    sendAll,
    flush: outbox.flush,
    close: () =>
      session.end(() => new QmpConnectionError({ reason: "Closed", detail: "connection closed by the client" })),
    log
  }
}
