/**
 * The guest agent service on a synced channel: typed `execute` and the
 * helpers built from the agent's commands (exec with output capture and
 * status polling, chunked file transfer that always closes its handle,
 * shutdown that succeeds when the guest goes away).
 */
import { Duration, Effect, Either, ExecutionStrategy, Exit, Fiber, Scope } from "effect"
import { GuestAgentError, QmpTimeoutError } from "../../Errors.js"
import type { QmpError, QmpProtocolError } from "../../Errors.js"
import type * as Api from "../../GuestAgent.js"
import * as Client from "./client.js"
import * as Commands from "./commands.js"

export const TypeId: Api.TypeId = Symbol.for("effect-qemu/GuestAgent") as Api.TypeId

/** Bytes per `guest-file-read` / `guest-file-write`. */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024
const MAX_POLL_DELAY = 100

type Failure = GuestAgentError | QmpError

const toBytes = (data: string | Uint8Array): Uint8Array => typeof data === "string" ? Buffer.from(data, "utf8") : data
const toBase64 = (data: Uint8Array): string => Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString("base64")
const fromBase64 = (text: string | undefined): Uint8Array => text === undefined ? new Uint8Array(0) : new Uint8Array(Buffer.from(text, "base64"))

/** Typed `call` of a known command: its reply checked against the command's result Schema. */
type Call = <N extends Commands.Name>(
  command: N,
  args: Exclude<Commands.Args<N>, void> | undefined,
  callOptions?: Client.CallOptions
) => Effect.Effect<Commands.Result<N>, Failure>

const makeCall = (channel: Client.Channel): Call => (command, args, callOptions) =>
  Effect.flatMap(
    channel.call(command, args as Readonly<Record<string, unknown>> | undefined, callOptions),
    (value) => Commands.decodeResult(command, value) as Either.Either<Commands.Result<typeof command>, QmpProtocolError>
  )

/** `guest-exec` with output captured, then `guest-exec-status` polled (2 ms doubling to 100 ms) until it exited. */
const makeExec = (channel: Client.Channel, call: Call): Api.GuestAgent.Service["exec"] => (path, execOptions = {}) => {
  const timeout = Duration.decode(execOptions.timeout ?? channel.commandTimeout)
  const poll = (pid: number, delay: number): Effect.Effect<Commands.Result<"guest-exec-status">, Failure> =>
    Effect.flatMap(call("guest-exec-status", { pid }), (status) =>
      status.exited
        ? Effect.succeed(status)
        : Effect.zipRight(Effect.sleep(Duration.millis(delay)), poll(pid, Math.min(delay * 2, MAX_POLL_DELAY))))
  return Effect.gen(function*() {
    const { pid } = yield* call("guest-exec", {
      path,
      ...(execOptions.args ? { arg: execOptions.args } : {}),
      ...(execOptions.env ? { env: execOptions.env } : {}),
      ...(execOptions.input !== undefined ? { "input-data": toBase64(toBytes(execOptions.input)) } : {}),
      "capture-output": true
    })
    const status = yield* poll(pid, 2)
    return {
      pid,
      exitCode: status.signal !== undefined ? -status.signal : status.exitcode ?? 0,
      stdout: fromBase64(status["out-data"]),
      stderr: fromBase64(status["err-data"]),
      truncated: status["out-truncated"] === true || status["err-truncated"] === true
    }
  }).pipe(
    // The process keeps running in the guest: a timeout only stops waiting for it.
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () => new QmpTimeoutError({ operation: `guest agent exec ${path}`, timeout, channel: "agent" })
    }),
    Effect.withSpan("GuestAgent.exec", { attributes: { path } })
  )
}

/** Opens a guest file for the duration of `use`; the handle is closed on every path. */
const withFile = <A>(call: Call, path: string, mode: string, use: (handle: number) => Effect.Effect<A, Failure>) =>
  Effect.acquireUseRelease(
    call("guest-file-open", { path, mode }),
    use,
    (handle) => Effect.ignore(call("guest-file-close", { handle }, { timeout: Duration.seconds(10) }))
  )

const makeReadFile = (call: Call): Api.GuestAgent.Service["readFile"] => (path, fileOptions = {}) => {
  const count = fileOptions.chunkSize ?? DEFAULT_CHUNK_SIZE
  return withFile(call, path, "r", (handle) =>
    Effect.gen(function*() {
      const chunks: Array<Buffer> = []
      let total = 0
      for (;;) {
        const read = yield* call("guest-file-read", { handle, count })
        const chunk = Buffer.from(read["buf-b64"], "base64")
        chunks.push(chunk)
        total += chunk.length
        if (read.eof || read.count === 0) break
      }
      return new Uint8Array(Buffer.concat(chunks, total))
    })).pipe(Effect.withSpan("GuestAgent.readFile", { attributes: { path } }))
}

const makeWriteFile = (call: Call): Api.GuestAgent.Service["writeFile"] => (path, data, fileOptions = {}) => {
  const bytes = toBytes(data)
  const size = fileOptions.chunkSize ?? DEFAULT_CHUNK_SIZE
  return withFile(call, path, fileOptions.append ? "a" : "w", (handle) =>
    Effect.gen(function*() {
      let offset = 0
      while (offset < bytes.length) {
        const chunk = bytes.subarray(offset, Math.min(offset + size, bytes.length))
        const written = yield* call("guest-file-write", { handle, "buf-b64": toBase64(chunk) })
        if (written.count <= 0) {
          return yield* Effect.fail(
            new GuestAgentError({ command: "guest-file-write", errorClass: "GenericError", desc: `wrote nothing at offset ${offset} of ${path}` })
          )
        }
        offset += Math.min(written.count, chunk.length)
      }
    })).pipe(Effect.withSpan("GuestAgent.writeFile", { attributes: { path, bytes: bytes.length } }))
}

/**
 * Starts watching for the guest's shutdown and returns the wait; it runs
 * before `guest-shutdown` is sent, in a scope that ends with the call, so a
 * shutdown faster than the reply path is not missed.
 */
export type ShutdownWatch = Effect.Effect<Effect.Effect<void>, never, Scope.Scope>

const makeShutdown = (channel: Client.Channel, watch: ShutdownWatch | undefined): Api.GuestAgent.Service["shutdown"] =>
(shutdownOptions = {}) =>
  channel.callNoReply(
    "guest-shutdown",
    shutdownOptions.mode ? { mode: shutdownOptions.mode } : {},
    watch ?? Effect.succeed(Effect.never),
    { timeout: shutdownOptions.timeout }
  ).pipe(Effect.withSpan("GuestAgent.shutdown"))

/** A caller's completion signal as a watch: started (forked) before the command is sent. */
const watchOf = (complete: Effect.Effect<unknown, unknown>): ShutdownWatch =>
  Effect.map(
    // A signal that fails never completes: the call then ends with the socket or its deadline.
    Effect.zipLeft(Effect.forkScoped(Effect.orElse(Effect.asVoid(complete), () => Effect.never)), Effect.yieldNow()),
    (fiber) => Fiber.join(fiber)
  )

export const make = (channel: Client.Channel, options: { readonly shutdownWatch?: ShutdownWatch | undefined } = {}): Api.GuestAgent.Service => {
  const call = makeCall(channel)
  return {
    [TypeId]: TypeId,
    // the same call, its types loosened to accept any command name (unknown ones stay untyped)
    execute: call as unknown as Api.GuestAgent.Service["execute"],
    ping: Effect.asVoid(call("guest-ping", undefined)),
    info: call("guest-info", undefined),
    exec: makeExec(channel, call),
    readFile: makeReadFile(call),
    writeFile: makeWriteFile(call),
    shutdown: makeShutdown(channel, options.shutdownWatch),
    sync: (syncOptions) => channel.sync(Duration.decode(syncOptions?.timeout ?? Client.DEFAULT_CONNECT_TIMEOUT)),
    isConnected: Effect.sync(() => channel.transport.cause() === undefined),
    closed: channel.transport.closed
  }
}

/** `connect`'s options, and the machine's own shutdown watch (see {@link ShutdownWatch}). */
export interface ConnectOptions extends Api.ConnectOptions {
  readonly shutdownWatch?: ShutdownWatch | undefined
}

/**
 * Connects to an agent socket, syncs, and returns the service; everything ends
 * with the scope. A failed or interrupted connect releases its socket at once,
 * even when the caller's scope lives on: QEMU serves one client per chardev,
 * so a socket left open would starve the next attempt.
 */
export const connect = (options: ConnectOptions): Effect.Effect<Api.GuestAgent.Service, QmpError, Scope.Scope> =>
  Effect.flatMap(Effect.scope, (parent) =>
    Effect.flatMap(Scope.fork(parent, ExecutionStrategy.sequential), (child) =>
      Client.open(options).pipe(
        Scope.extend(child),
        Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(child, exit) : Effect.void),
        Effect.map((channel) =>
          make(channel, {
            shutdownWatch: options.shutdownWatch ??
              (options.shutdownComplete === undefined ? undefined : watchOf(options.shutdownComplete))
          })
        )
      ))).pipe(Effect.withSpan("GuestAgent.connect"))
