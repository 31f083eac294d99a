/**
 * The guest agent protocol over a transport: one request in flight at a time
 * (the agent is sequential; a semaphore keeps concurrent callers safe), ids
 * from a random base so stale replies (an interrupted call, a previous
 * client, requests buffered while the agent was down) are dropped by id, and
 * `guest-sync-delimited` with the 0xFF flush whenever the channel's state is
 * unknown: at connect, after garbage, after a timeout.
 *
 * There is no greeting: until the agent answers a sync, requests wait in
 * QEMU's socket buffer and are answered when the agent opens its port.
 */
import { Deferred, Duration, Effect, Either, FiberId, Runtime, Schema } from "effect"
import type { Scope } from "effect"
import { GuestAgentError, QmpConnectionError, QmpProtocolError, QmpTimeoutError } from "../../Errors.js"
import type { QmpError } from "../../Errors.js"
import * as Net from "../net.js"
import * as Transport from "./transport.js"

export const DEFAULT_CONNECT_TIMEOUT = Duration.seconds(60)
export const DEFAULT_COMMAND_TIMEOUT = Duration.seconds(60)
/** Replies hold file chunks and captured output in base64 (the agent caps captured output at 16 MiB). */
export const DEFAULT_MAX_MESSAGE = 64 * 1024 * 1024
/** The longest wait for one sync attempt before another is sent. */
const MAX_SYNC_ATTEMPT = 2000

export interface Options {
  readonly address: Net.Address
  readonly timeout?: Duration.DurationInput | undefined
  readonly commandTimeout?: Duration.DurationInput | undefined
  readonly maxMessageSize?: number | undefined
}

export interface CallOptions {
  readonly timeout?: Duration.DurationInput | undefined
}

type Failure = GuestAgentError | QmpError

interface Pending {
  readonly id: number
  readonly sync: boolean
  readonly command: string
  readonly deferred: Deferred.Deferred<unknown, Failure>
}

const Reply = Schema.Struct({
  return: Schema.optional(Schema.Unknown),
  error: Schema.optional(Schema.Struct({ class: Schema.String, desc: Schema.String })),
  id: Schema.optional(Schema.Unknown)
})
type Reply = Schema.Schema.Type<typeof Reply>
const decodeReply = Schema.decodeUnknownEither(Reply)

/** A deadline on this channel passed: `operation` is what the agent was asked (`sync`, a command name). */
const timedOut = (operation: string, timeout: Duration.Duration) =>
  new QmpTimeoutError({ operation: `guest agent ${operation}`, timeout, channel: "agent" })

const truncate = (s: string) => s.length > 256 ? `${s.slice(0, 256)}…` : s

const parse = (line: string): Either.Either<Reply, QmpProtocolError> => {
  let json: unknown
  try {
    json = JSON.parse(line)
  } catch (e) {
    return Either.left(new QmpProtocolError({ message: `guest agent sent invalid JSON: ${String(e)}`, raw: truncate(line) }))
  }
  const reply = decodeReply(json)
  if (Either.isLeft(reply) || (!("return" in reply.right) && reply.right.error === undefined)) {
    return Either.left(new QmpProtocolError({ message: "guest agent sent a message that is not a reply", raw: truncate(line) }))
  }
  return Either.right(reply.right)
}

export interface Channel {
  /** Sends one command and waits for its reply (syncing first when needed), under the lock. */
  readonly call: (command: string, args: Readonly<Record<string, unknown>> | undefined, options?: CallOptions) => Effect.Effect<unknown, Failure>
  /** Syncs now, under the lock. */
  readonly sync: (timeout: Duration.Duration) => Effect.Effect<void, QmpError>
  /**
   * Sends a command that gets no reply on success; completes when the wait
   * that `watch` returns does, or the channel closes. `watch` runs before the
   * command is sent, in a scope that ends with the call.
   */
  readonly callNoReply: (
    command: string,
    args: Readonly<Record<string, unknown>> | undefined,
    watch: Effect.Effect<Effect.Effect<void>, never, Scope.Scope>,
    options?: CallOptions
  ) => Effect.Effect<void, Failure>
  readonly transport: Transport.Transport
  readonly commandTimeout: Duration.Duration
}

/**
 * The request in flight and whether the channel is synced, and the routing of
 * each received line to that request. Only this router settles requests.
 */
const makeRouter = (log: (level: "Debug" | "Warning", message: string) => void) => {
  const state: { current: Pending | undefined; synced: boolean } = { current: undefined, synced: false }

  const settle = (pending: Pending, result: Either.Either<unknown, Failure>) => {
    if (state.current === pending) state.current = undefined
    Deferred.unsafeDone(pending.deferred, Either.isRight(result) ? Effect.succeed(result.right) : Effect.fail(result.left))
  }

  const agentError = (pending: Pending, error: { readonly class: string; readonly desc: string }) =>
    new GuestAgentError({ command: pending.command, errorClass: error.class, desc: error.desc })

  const onProtocolError = (error: QmpProtocolError) => {
    // The channel's state is unknown: the next call re-syncs (the flush resets the agent's parser too).
    state.synced = false
    // A sync in progress is how the channel recovers from garbage (what a previous client or a dying
    // agent left behind): it keeps waiting.
    if (state.current?.sync) log("Debug", `dropped while syncing: ${error.message}`)
    else if (state.current) settle(state.current, Either.left(error))
    else log("Warning", `${error.message}: ${error.raw}`)
  }

  const onLine = (line: string) => {
    const parsed = parse(line)
    if (Either.isLeft(parsed)) return onProtocolError(parsed.left)
    const reply = parsed.right
    const pending = state.current
    if (pending === undefined) return
    if (pending.sync) {
      // Everything before our latest sync reply is stale, the flush's parse error included.
      if (reply.id === undefined && reply.return === pending.id) settle(pending, Either.right(undefined))
      return
    }
    if (reply.id === pending.id) {
      return settle(pending, reply.error ? Either.left(agentError(pending, reply.error)) : Either.right(reply.return))
    }
    if (reply.id === undefined && reply.error) {
      // An id-less error after a completed sync: the agent could not parse what it read (a request
      // cut by an agent restart), so ours is lost.
      state.synced = false
      settle(pending, Either.left(agentError(pending, reply.error)))
    }
    // Any other id: a stale reply to a call that was interrupted or timed out.
  }

  const onClose = (cause: QmpConnectionError) => {
    state.synced = false
    if (state.current) settle(state.current, Either.left(cause))
  }

  return { state, onLine, onProtocolError, onClose }
}

const request = (command: string, args: Readonly<Record<string, unknown>> | undefined) => (id: number) =>
  JSON.stringify(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id }) + "\n"

const syncRequest = (id: number) =>
  Buffer.concat([Buffer.of(Transport.DELIMITER), Buffer.from(JSON.stringify({ execute: "guest-sync-delimited", arguments: { id } }) + "\n")])

type Router = ReturnType<typeof makeRouter>
type RoundTrip = (command: string, sync: boolean, payload: (id: number) => Uint8Array | string) => Effect.Effect<unknown, Failure>

/**
 * Sends one message and waits for its reply; an interrupted wait leaves the
 * reply to be dropped by id. Ids start from a random base, so replies meant
 * for a previous client on the same chardev are stale too.
 */
const makeRoundTrip = (transport: Transport.Transport, state: Router["state"]): RoundTrip => {
  let nextId = 1 + Math.floor(Math.random() * 2 ** 30)
  return (command, sync, payload) =>
    Effect.suspend(() => {
      const closedBy = transport.cause()
      if (closedBy) return Effect.fail(closedBy)
      const id = nextId++
      const pending: Pending = { id, sync, command, deferred: Deferred.unsafeMake<unknown, Failure>(FiberId.none) }
      state.current = pending
      return transport.write(payload(id)).pipe(
        Effect.zipRight(Deferred.await(pending.deferred)),
        Effect.ensuring(Effect.sync(() => {
          if (state.current === pending) state.current = undefined
        }))
      )
    })
}

/** Each attempt waits a little longer; replies to earlier attempts are dropped, the latest one counts. */
const syncAttempts = (roundTrip: RoundTrip, state: Router["state"], wait: number): Effect.Effect<void, QmpError> =>
  roundTrip("guest-sync-delimited", true, syncRequest).pipe(
    Effect.timeout(Duration.millis(wait)),
    Effect.catchTag("TimeoutException", () => syncAttempts(roundTrip, state, Math.min(Math.round(wait * 1.5), MAX_SYNC_ATTEMPT))),
    Effect.catchTag("GuestAgentError", (e) => Effect.die(e)),
    Effect.tap(() =>
      Effect.sync(() => {
        state.synced = true
      })
    )
  )

/** Connects (retrying while QEMU has not created the socket) within `timeout`; the transport closes with the scope. */
const connectTransport = (options: Options, router: Router, timeout: Duration.Duration, address: string) =>
  Effect.gen(function*() {
    const socket = yield* Transport.connect(options.address).pipe(
      Effect.timeoutFail({ duration: timeout, onTimeout: () => timedOut(`connect ${address}`, timeout) })
    )
    const transport = Transport.fromSocket(socket, options.maxMessageSize ?? DEFAULT_MAX_MESSAGE, {
      onLine: router.onLine,
      onOversized: (size, head) =>
        router.onProtocolError(new QmpProtocolError({ message: `guest agent message of ${size} bytes is over the limit`, raw: truncate(head) })),
      onClose: router.onClose
    })
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => transport.close(new QmpConnectionError({ reason: "Closed", detail: "client closed", channel: "agent" })))
    )
    return transport
  })

/** The calls of a connected channel: one at a time under `lock`, synced first, each within its deadline. */
const makeChannel = (
  transport: Transport.Transport,
  state: Router["state"],
  lock: Effect.Semaphore,
  address: string,
  commandTimeout: Duration.Duration
): Channel => {
  const roundTrip = makeRoundTrip(transport, state)
  const ensureSynced = Effect.suspend(() => state.synced ? Effect.void : syncAttempts(roundTrip, state, 200))

  /** Under the lock, synced first, within the call's deadline; a timeout leaves the channel to re-sync. */
  const locked = <A, E>(command: string, callOptions: CallOptions | undefined, self: Effect.Effect<A, E>) => {
    const limit = callOptions?.timeout === undefined ? commandTimeout : Duration.decode(callOptions.timeout)
    return lock.withPermits(1)(Effect.zipRight(ensureSynced, self)).pipe(
      Effect.timeoutFail({ duration: limit, onTimeout: () => timedOut(command, limit) }),
      Effect.tapErrorTag("QmpTimeoutError", () =>
        Effect.sync(() => {
          state.synced = false
        })),
      Effect.withSpan("GuestAgent.execute", { attributes: { command } })
    )
  }

  // A reply is an error (or an agent that does reply); the channel closing is the success.
  const noReply = (command: string, args: Readonly<Record<string, unknown>> | undefined, done: Effect.Effect<void>) =>
    Effect.suspend(() => {
      const closedBefore = transport.cause()
      if (closedBefore) return Effect.fail(closedBefore)
      const reply = roundTrip(command, false, request(command, args)).pipe(
        Effect.asVoid,
        Effect.catchTag("QmpConnectionError", (e) => transport.cause() !== undefined ? Effect.void : Effect.fail(e))
      )
      return Effect.raceFirst(reply, done)
    })

  return {
    call: (command, args, callOptions) => locked(command, callOptions, roundTrip(command, false, request(command, args))),
    callNoReply: (command, args, watch, callOptions) =>
      locked(command, callOptions, Effect.scoped(Effect.flatMap(watch, (done) => noReply(command, args, done)))),
    sync: (limit) =>
      lock.withPermits(1)(syncAttempts(roundTrip, state, 200)).pipe(
        Effect.timeoutFail({ duration: limit, onTimeout: () => timedOut(`sync ${address}`, limit) })
      ),
    transport,
    commandTimeout
  }
}

/** Connects and syncs within `timeout`. */
export const open = (options: Options) =>
  Effect.gen(function*() {
    const timeout = Duration.decode(options.timeout ?? DEFAULT_CONNECT_TIMEOUT)
    if (typeof options.address === "string") {
      const tooLong = Net.checkUnixPath(options.address)
      if (tooLong) return yield* Effect.fail(new QmpConnectionError({ reason: "Refused", detail: tooLong, channel: "agent" }))
    }
    const address = Net.formatAddress(options.address)
    const runtime = yield* Effect.runtime<never>()
    const router = makeRouter((level, message) =>
      Runtime.runFork(runtime)((level === "Debug" ? Effect.logDebug : Effect.logWarning)(`guest agent ${address}: ${message}`))
    )
    const transport = yield* connectTransport(options, router, timeout, address)
    const lock = yield* Effect.makeSemaphore(1)
    const channel = makeChannel(transport, router.state, lock, address, Duration.decode(options.commandTimeout ?? DEFAULT_COMMAND_TIMEOUT))
    yield* channel.sync(timeout)
    return channel
  })
