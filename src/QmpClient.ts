/**
 * A QMP (QEMU Machine Protocol) client as an Effect service.
 *
 * A connection is obtained either by *accepting* (we listen, QEMU connects to
 * us: what `QemuMachine` does) or by *connecting* to a QEMU started with
 * `-qmp unix:PATH,server=on,wait=off`. The greeting is decoded and
 * capabilities negotiated before the client is handed out.
 *
 * Many fibers may execute commands at once: each command carries a unique
 * `id` and its reply is routed back by it. Events take one path: every
 * `events` stream sees every event; waiters (`eventsWait`, `pullEvent`) each
 * take the first event in arrival order that matches and nobody else took;
 * the rest are cached, bounded by count and bytes, for later calls.
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
import type { Duration, Effect, Option, Scope, Stream } from "effect"
import { Context, Layer } from "effect"
import type { QmpArgumentError, QmpCommandError, QmpConnectionError, QmpError, QmpProtocolError } from "./Errors.js"
import type * as EventMatch from "./EventMatch.js"
import * as internal from "./internal/qmp/client.js"
import type * as Net from "./internal/net.js"
import type * as net from "node:net"
import type * as Qapi from "./Qapi.js"
import type * as QmpMessage from "./QmpMessage.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = internal.TypeId

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
  /**
   * Enable the `oob` capability when the server offers it. Default true, as
   * QEMU's own Python client does. QEMU then reads ahead up to 8 commands
   * while one runs (commands still run, and are answered, in order), so
   * commands in flight overlap: 100 at once take about half as long as
   * without it on QEMU 7.2 (bench/README.md). It also allows
   * `{ oob: true }` per command (`exec-oob`). `false` enables nothing.
   */
  readonly oob?: boolean | undefined
  /**
   * Events no waiter took, kept for later `eventsWait`/`pullEvent`/`getEvents`
   * calls, at most this many; the oldest are dropped (one warning per overflow).
   * Default 10,000.
   */
  readonly eventCacheSize?: number | undefined
  /** The same bound in bytes (as received). Default 64 MiB. */
  readonly eventCacheBytes?: number | undefined
  /**
   * Events an `events` stream subscriber may fall behind before it loses the
   * oldest (with a warning that gives the count, once per subscriber). Each
   * subscriber holds its own buffer of this size. Default 4,096.
   */
  readonly eventStreamBuffer?: number | undefined
  /**
   * Largest message accepted, in bytes; a longer line (or bytes without a
   * newline past this size) ends the connection with `QmpProtocolError`.
   * It bounds what one message, or a peer that never sends a newline, can make
   * us buffer. Default 16 MiB (QEMU's largest reply, `query-qmp-schema`, is
   * about 200 KiB).
   */
  readonly maxMessageSize?: number | undefined
  /** A label for logs and spans. */
  readonly name?: string | undefined
  /**
   * Check every `execute`'s arguments against the live schema (fetched once,
   * on first use) before sending; a mismatch fails with `QmpArgumentError` and
   * nothing is sent. Default false.
   *
   * Checked: the command exists; required members are present and unknown
   * ones absent (`device_add` takes any device property); JSON types, enum
   * values, union branches and alternates, at every depth; an integer is a
   * finite whole number within ±(2^53 − 1), since values above 2^53 cannot
   * be represented exactly as JS numbers (they would reach QEMU as another
   * integer); a `number` is finite. Not checked: the range of each QAPI
   * integer type (`uint8`, `int64`, `size`, …: introspection reports all of
   * them as `int`, so QEMU judges the range), values inside `any` members
   * (`qom-set`), and whatever QEMU validates beyond the schema (ids in use,
   * paths that exist).
   */
  readonly validateArgs?: boolean | undefined
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
 * One entry of QEMU's `query-qmp-schema` (type names are masked as numbers on
 * the wire).
 *
 * @since 0.2.0
 * @category models
 */
export interface SchemaInfo {
  readonly name: string
  readonly "meta-type": "builtin" | "enum" | "array" | "object" | "alternate" | "command" | "event"
  readonly features?: ReadonlyArray<string>
  readonly [key: string]: unknown
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
     *
     * For a command of the generated schema (`Qapi.CommandName`) the
     * arguments are typed, and the reply is checked against its Schema (a reply
     * that does not match fails with `QmpProtocolError` naming the path). Any
     * other name is sent as it is and returns `unknown`. With `validateArgs`,
     * arguments are checked against the live schema first: a mismatch fails
     * with `QmpArgumentError` and nothing is sent.
     *
     * Commands go out in the order they were made. One made while no QMP
     * connection of this process waits for a reply is written at once; while
     * others wait, commands are written after the current turn of the event
     * loop, those made in the same turn together in one write.
     * A command given up (a timeout, a lost race, an interrupted fiber) is
     * still answered by QEMU: that late reply is expected and dropped once the
     * fiber that gave up has ended.
     */
    readonly execute: Qapi.Execute<ExecuteOptions, QmpCommandError | QmpArgumentError | QmpError, never>
    /**
     * Runs a batch of commands pipelined: all written at once and in order
     * (QEMU runs them in that order), in one Effect step for the lot, which
     * is cheaper than a fiber per command. Succeeds with every result, in
     * order, once every reply is in; fails with the first failure by position
     * (the commands after it still ran). Each call is typed and checked as
     * with `execute`; with `validateArgs`, all are validated before any is
     * sent. The timeout (`options.timeout`, else `commandTimeout`) is for the
     * whole batch. An empty batch succeeds with `[]` and sends nothing.
     *
     * @example
     * ```ts
     * import { Effect } from "effect"
     * import { QmpClient } from "effect-qemu"
     *
     * const pauseAndLook = Effect.gen(function*() {
     *   const qmp = yield* QmpClient.QmpClient
     *   const [, status] = yield* qmp.executeAll([["stop"], ["query-status"]])
     *   return status.status // "paused"
     * })
     * ```
     *
     * @since 0.3.0
     */
    readonly executeAll: Qapi.ExecuteAll<ExecuteOptions, QmpCommandError | QmpArgumentError | QmpError, never>
    /** Runs a command and returns the raw response, `{ return }` or `{ error }`. */
    readonly executeRaw: (
      command: string,
      args?: Arguments,
      options?: ExecuteOptions
    ) => Effect.Effect<QmpMessage.Response, QmpError>
    /**
     * Every event received from the moment the stream runs; ends when the connection does.
     *
     * Each run of the stream (and each `subscribe`) is a subscriber with its
     * own buffer of up to `eventStreamBuffer` events, and every event is
     * offered to every subscriber. One that falls that far behind loses its
     * oldest events: a warning (`Effect.logWarning`) names the subscriber and
     * the count once, after that burst, and what it lost later is reported
     * once when it unsubscribes. More than 1,024 live subscribers on one
     * connection log one warning with the count (again only after they fell
     * back to 512): memory is subscribers × buffer and every event costs one
     * offer per subscriber, so share one stream (`Stream.broadcast`) rather
     * than subscribing per consumer.
     */
    readonly events: Stream.Stream<QmpMessage.Event>
    /** Subscribes now, so that no event after this point is missed, and streams later. */
    readonly subscribe: Effect.Effect<Stream.Stream<QmpMessage.Event>, never, Scope.Scope>
    /**
     * Waits for the first event, in arrival order, matching any `[name, match]`
     * pair that no other caller took (a cached one first). Without a timeout it
     * waits until the connection ends.
     */
    readonly eventsWait: (
      events: ReadonlyArray<readonly [string, EventMatch.Match?]>,
      options?: { readonly timeout?: Duration.DurationInput | undefined }
    ) => Effect.Effect<QmpMessage.Event, QmpError>
    /**
     * The live `query-qmp-schema` entries, fetched on first use and kept for
     * the connection.
     */
    readonly introspect: Effect.Effect<ReadonlyArray<SchemaInfo>, QmpCommandError | QmpError>
    /** Whether the live QEMU has this command (from {@link introspect}). */
    readonly supports: (command: string) => Effect.Effect<boolean, QmpCommandError | QmpError>
    /** Takes the oldest buffered event. */
    readonly pullEvent: (options?: WaitOptions) => Effect.Effect<Option.Option<QmpMessage.Event>, QmpError>
    /** Takes every buffered event (waiting for at least one when `wait` is set). */
    readonly getEvents: (options?: WaitOptions) => Effect.Effect<ReadonlyArray<QmpMessage.Event>, QmpError>
    /** Drops every buffered event. */
    readonly clearEvents: Effect.Effect<void>
    /**
     * Sends a file descriptor over the (unix) QMP socket with SCM_RIGHTS, for `getfd` / `add-fd`.
     * Pass one at a time: QEMU keeps the last descriptor it received until a `getfd` /
     * `add-fd` takes it, and a second one sent before that replaces the first (with `oob`,
     * QEMU reads ahead of the command that runs, so this holds for commands in flight too).
     */
    readonly sendFdScm: (fd: number) => Effect.Effect<void, QmpConnectionError>
    /** Whether the connection is still open. */
    readonly isConnected: Effect.Effect<boolean>
    /** Completes, with the cause, when the connection has ended. */
    readonly closed: Effect.Effect<QmpConnectionError | QmpProtocolError>
    /** Closes the connection; pending callers fail with `QmpConnectionError`. Idempotent. */
    readonly close: Effect.Effect<void>
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
export const fromSocket: (
  socket: net.Socket,
  options?: Options
) => Effect.Effect<QmpClient.Service, QmpError, Scope.Scope> = internal.fromSocket

/**
 * Connects to a QEMU that listens for QMP (`-qmp unix:PATH,server=on,wait=off`
 * or `-qmp tcp:HOST:PORT,server=on,wait=off`).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { QmpClient } from "effect-qemu"
 *
 * const program = Effect.gen(function*() {
 *   const qmp = yield* QmpClient.connect({ address: { host: "127.0.0.1", port: 4444 }, connectTimeout: "5 seconds" })
 *   const status = yield* qmp.execute("query-status")
 *   return status.running
 * }).pipe(Effect.scoped) // the connection closes with the scope
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const connect: (options: ConnectOptions) => Effect.Effect<QmpClient.Service, QmpError, Scope.Scope> =
  internal.connect

/**
 * Listens on an address for QEMU to connect to (what `QemuMachine` does: the
 * listener must exist before QEMU starts). The listener closes, and a unix
 * socket file is removed, when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const listen: (address: Address) => Effect.Effect<Listener, QmpConnectionError, Scope.Scope> = internal.listen

/**
 * A layer that connects to a running QEMU and provides `QmpClient`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { QmpClient } from "effect-qemu"
 *
 * const program = Effect.flatMap(QmpClient.QmpClient, (qmp) => qmp.execute("query-version"))
 * const main = program.pipe(Effect.provide(QmpClient.layer({ address: "/tmp/qmp.sock" })))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: ConnectOptions): Layer.Layer<QmpClient, QmpError> =>
  Layer.scoped(QmpClient, internal.connect(options))

/**
 * @since 0.1.0
 * @category refinements
 */
export const isQmpClient = (u: unknown): u is QmpClient.Service =>
  typeof u === "object" && u !== null && TypeId in u
