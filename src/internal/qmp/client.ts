/**
 * The QMP client service over a connection: negotiation, commands, the event
 * path (streams, waiters, cache), fd passing, and the live schema.
 */
import { Duration, Effect, Either, Exit, Option, Scope, Stream } from "effect"
import type * as net from "node:net"
import { QmpCommandError, QmpConnectionError, QmpProtocolError, QmpTimeoutError } from "../../Errors.js"
import type { QmpArgumentError } from "../../Errors.js"
import type { QmpError } from "../../Errors.js"
import * as EventMatch from "../../EventMatch.js"
import type * as Api from "../../QmpClient.js"
import * as QmpMessage from "../../QmpMessage.js"
import * as fdpass from "../fdpass.js"
import * as QapiDecode from "../qapi/decode.js"
import type { SchemaInfo } from "../qapi/schemaInfo.js"
import * as QapiValidate from "../qapi/validate.js"
import * as Net from "../net.js"
import { withSpanIfTraced } from "../span.js"
import * as Scoped from "../scoped.js"
import * as Connection from "./connection.js"

export const TypeId: Api.TypeId = Symbol.for("effect-qemu/QmpClient") as Api.TypeId

const DEFAULT_NEGOTIATION_TIMEOUT = Duration.seconds(15)

type Service = Api.QmpClient.Service

const anyEvent = () => true

/** Fails with a QMP command error when the response is `{ error }`. */
export const unwrap = (command: string) => (response: QmpMessage.Response): Effect.Effect<unknown, QmpCommandError> =>
  QmpMessage.isErrorResponse(response) ? Effect.fail(commandError(command, response)) : Effect.succeed(response.return)

const commandError = (command: string, response: QmpMessage.ErrorResponse): QmpCommandError =>
  new QmpCommandError({ command, errorClass: response.error.class, desc: response.error.desc })

const waitDeadline = (wait: boolean | Duration.DurationInput | undefined): Duration.Duration | undefined =>
  wait === true || wait === undefined || wait === false ? undefined : Duration.decode(wait)

/** Matches an event against any of `[name, match]` pairs. */
export const matchesAny = (pairs: ReadonlyArray<readonly [string, EventMatch.Match?]>) => (event: QmpMessage.Event) =>
  pairs.some(([name, match]) => event.event === name && EventMatch.eventMatch(event, match))

const sendFd = (connection: Connection.Connection, fd: number): Effect.Effect<void, QmpConnectionError> =>
  Effect.suspend(() => {
    const cause = connection.session.cause()
    if (cause) {
      return Effect.fail(
        cause._tag === "QmpConnectionError" ? cause : new QmpConnectionError({ reason: "ProtocolError", cause })
      )
    }
    const binding = fdpass.loadFdPass()
    if (typeof binding === "string") {
      return Effect.fail(
        new QmpConnectionError({ reason: "Unsupported", detail: `SCM_RIGHTS fd passing is unavailable: ${binding}` })
      )
    }
    const socket = connection.session.socket
    const sockFd = fdpass.socketFd(socket)
    if (sockFd === undefined) {
      return Effect.fail(
        new QmpConnectionError({ reason: "Unsupported", detail: "the QMP socket has no file descriptor (not a unix socket?)" })
      )
    }
    // Let queued writes reach the kernel first, so the fd travels in order.
    connection.flush()
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

/**
 * `Effect.cached`, made when first run: most connections never introspect, and
 * making a cached effect is a Ref, a Deferred and a dozen Effect steps on every
 * connect. Callers racing to be first share the one made first.
 */
const cachedOnFirstUse = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E> => {
  let memo: Effect.Effect<A, E> | undefined
  return Effect.suspend(() => memo ?? Effect.flatMap(Effect.cached(effect), (made) => (memo ??= made)))
}

/** Until the greeting names the QEMU version, nothing is checked (no typed call can be made before it). */
const unchecked: QapiDecode.Decoders = {
  version: "unknown",
  known: false,
  result: (_, value) => Either.right(value),
  event: (event) => Either.right(event)
}

/** The connection's checks: set once the greeting says which QEMU it is. */
interface DecoderRef {
  current: QapiDecode.Decoders
}

const makeService = (
  connection: Connection.Connection,
  options: Api.Options,
  decoders: DecoderRef
): Service => {
  const { events } = connection
  const executeRaw = connection.executeRaw
  // The `return` of a known command is checked against the connected QEMU's schema (see
  // internal/qapi/decode): one step after the reply, no Effect in between when it passes.
  const returnedOf = (command: string, response: QmpMessage.Response): Exit.Exit<unknown, QmpCommandError | QmpProtocolError> => {
    if (QmpMessage.isErrorResponse(response)) return Exit.fail(commandError(command, response))
    const decoded = decoders.current.result(command, response.return)
    return decoded._tag === "Right" ? Exit.succeed(decoded.right) : Exit.fail(decoded.left)
  }
  const returned = (command: string) => (response: QmpMessage.Response) => returnedOf(command, response)
  const run = (command: string, args?: Api.Arguments, executeOptions?: Api.ExecuteOptions) =>
    connection.send(command, args, executeOptions, returned(command))

  // Fetched once per connection, when first asked for.
  const introspect = cachedOnFirstUse(
    Effect.flatMap(run("query-qmp-schema"), (schema) =>
      Array.isArray(schema)
        ? Effect.succeed(schema as ReadonlyArray<Api.SchemaInfo>)
        : Effect.fail(new QmpProtocolError({ message: "query-qmp-schema did not return an array", raw: "" })))
  )
  const validator = cachedOnFirstUse(
    Effect.map(introspect, (schema) => QapiValidate.make(schema as ReadonlyArray<SchemaInfo>))
  )
  const validated = (command: string, args: Api.Arguments | undefined) =>
    Effect.flatMap(validator, (v): Effect.Effect<void, QmpArgumentError> => {
      const problem = v.validate(command, args ?? {})
      return problem ? Effect.fail(problem) : Effect.void
    })
  const execute = (options.validateArgs
    ? (command: string, args?: Api.Arguments, executeOptions?: Api.ExecuteOptions) =>
      Effect.zipRight(validated(command, args), run(command, args, executeOptions))
    : run) as Service["execute"]
  const runAll = (calls: ReadonlyArray<Connection.Call>, executeOptions?: Api.ExecuteOptions) =>
    connection.sendAll(calls, executeOptions, returnedOf)
  // With `validateArgs`, every call is checked before any is sent.
  const executeAll = (options.validateArgs
    ? (calls: ReadonlyArray<Connection.Call>, executeOptions?: Api.ExecuteOptions) =>
      Effect.zipRight(Effect.forEach(calls, ([command, args]) => validated(command, args), { discard: true }), runAll(calls, executeOptions))
    : runAll) as Service["executeAll"]

  // Typed waiters check an event's data against the connected QEMU's schema.
  const checked = (event: QmpMessage.Event): Effect.Effect<QmpMessage.Event, QmpProtocolError> => {
    const decoded = decoders.current.event(event)
    return decoded._tag === "Right" ? Effect.succeed(decoded.right) : Effect.fail(decoded.left)
  }

  const pullEvent = (options?: Api.WaitOptions) =>
    Effect.suspend(() => {
      const polled = events.poll(anyEvent)
      if (Option.isSome(polled) || !options?.wait) return Effect.succeed(polled)
      return Effect.asSome(events.take(anyEvent, waitDeadline(options.wait), "waiting for a QMP event"))
    })

  const commandNames = cachedOnFirstUse(
    Effect.map(introspect, (schema) =>
      new Set(schema.filter((info) => info["meta-type"] === "command").map((info) => info.name)))
  )

  const service: Omit<Service, "greeting" | "capabilities"> = {
    [TypeId]: TypeId,
    execute,
    executeAll,
    executeRaw,
    events: Stream.unwrapScoped(events.subscribe),
    subscribe: events.subscribe,
    pullEvent,
    getEvents: (options) =>
      Effect.suspend(() => {
        const taken = events.takeAll()
        if (taken.length > 0 || !options?.wait) return Effect.succeed(taken)
        return Effect.map(pullEvent(options), (first) => [...Option.toArray(first), ...events.takeAll()])
      }),
    clearEvents: Effect.sync(() => void events.takeAll()),
    eventsWait: (pairs, options) => {
      const timeout = options?.timeout === undefined ? undefined : Duration.decode(options.timeout)
      return Effect.flatMap(
        events.take(matchesAny(pairs), timeout, `waiting for event ${pairs.map(([n]) => n).join(" | ")}`),
        checked
      )
    },
    sendFdScm: (fd) => sendFd(connection, fd),
    introspect,
    supports: (command) => Effect.map(commandNames, (names) => names.has(command)),
    isConnected: Effect.sync(() => connection.session.cause() === undefined),
    closed: connection.session.closed,
    close: Effect.sync(connection.close)
  }
  return service as Service
}

/** Waits for the greeting, negotiates, and marks the connection ready. */
const negotiate = (connection: Connection.Connection, service: Service, options: Api.Options, decoders: DecoderRef) =>
  Effect.gen(function*() {
    const greeting = yield* connection.greeting
    decoders.current = yield* QapiDecode.forVersion(
      greeting.QMP.version?.qemu,
      (message) => connection.log("Warning", message)
    )
    // Out-of-band when offered, unless turned off (as QEMU's own Python client does): the server
    // then reads commands ahead while one runs, instead of one command per read-run-reply turn.
    const enable = options.oob !== false && greeting.QMP.capabilities.includes("oob") ? ["oob"] : []
    yield* connection.executeRaw("qmp_capabilities", enable.length > 0 ? { enable } : undefined).pipe(
      Effect.flatMap(unwrap("qmp_capabilities")),
      Effect.catchTag("QmpCommandError", (e) =>
        Effect.fail(new QmpProtocolError({ message: `capabilities negotiation refused: ${e.message}`, raw: "" })))
    )
    connection.ready()
    const ready = { ...service, greeting, capabilities: enable } satisfies Service
    callbacks.set(ready, {
      quit: (done) =>
        void connection.request("quit", undefined, undefined, (reply) =>
          done(Exit.isSuccess(reply) && QmpMessage.isErrorResponse(reply.value) ? commandError("quit", reply.value) : undefined)),
      connected: () => connection.session.cause() === undefined,
      onClosed: connection.session.onEnd,
      close: connection.close
    })
    return ready
  })

/**
 * A connection at callback level, for the shutdown ladder on the live clock: `quit`,
 * its end, and closing it, with no Effect per step (internal/machine/lifecycle.ts).
 */
export interface Callbacks {
  /** Sends `quit`; `done` gets the error of an `{ error }` reply, else nothing (a reply, or the end first). */
  readonly quit: (done: (error: QmpCommandError | undefined) => void) => void
  readonly connected: () => boolean
  /** Calls `f` once the connection has ended (at once if it has); returns the unsubscribe. */
  readonly onClosed: (f: () => void) => () => void
  readonly close: () => void
}

const callbacks = new WeakMap<Service, Callbacks>()

/** The callbacks of a client this module made (undefined for any other `Service`). */
export const callbacksOf = (service: Service): Callbacks | undefined => callbacks.get(service)

export const fromSocket = (
  socket: net.Socket,
  options: Api.Options = {}
): Effect.Effect<Service, QmpError, Scope.Scope> =>
  Effect.gen(function*() {
    const connection = Connection.open(socket, options, yield* Effect.runtime<never>())
    yield* Scoped.addFinalizer(Effect.sync(connection.close))
    const decoders: DecoderRef = { current: unchecked }
    const service = makeService(connection, options, decoders)
    const timeout = Duration.decode(options.negotiationTimeout ?? DEFAULT_NEGOTIATION_TIMEOUT)
    const negotiated = Duration.isFinite(timeout)
      ? Effect.timeoutFail(negotiate(connection, service, options, decoders), {
        duration: timeout,
        onTimeout: () => new QmpTimeoutError({ operation: "QMP greeting and negotiation", timeout })
      })
      : negotiate(connection, service, options, decoders)
    return yield* Effect.tapError(negotiated, () => Effect.sync(connection.close))
  }).pipe(withSpanIfTraced("QmpClient.negotiate"))

export const connect = (options: Api.ConnectOptions): Effect.Effect<Service, QmpError, Scope.Scope> => {
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

export const listen = (address: Api.Address): Effect.Effect<Api.Listener, QmpConnectionError, Scope.Scope> =>
  Effect.map(Net.listen(address), (listener) => ({
    address: listener.address,
    close: listener.close,
    accept: (options?: Api.Options) => Effect.flatMap(listener.accept, (socket) => fromSocket(socket, options))
  }))
