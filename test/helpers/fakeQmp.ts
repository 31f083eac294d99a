/**
 * A scripted fake QMP server on a unix socket, for the faults real QEMU will
 * not produce on demand: no greeting, malformed or oversized lines, replies
 * split into single bytes, unknown ids, replies that never come.
 *
 * `fakeServer(handler)` listens in a fresh temp dir and runs `handler` once
 * per accepted connection. The handler scripts the server side: send bytes,
 * read the client's commands, reply, stall (`yield* conn.closed`), close.
 * Everything (handler fibers, accepted sockets, the server, the temp dir) is
 * released with the scope that created the server.
 *
 * A handler that fails is logged and its connection destroyed, so the client
 * under test sees a lost connection rather than a silent pass.
 */
import { Cause, Data, Deferred, Duration, Effect, Exit, FiberId, FiberSet, Queue, Scope } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

/** A QMP greeting as QEMU 7.2 sends it, offering `capabilities`. */
export const makeGreeting = (capabilities: ReadonlyArray<string>): string =>
  JSON.stringify({
    QMP: {
      version: { qemu: { micro: 0, minor: 2, major: 7 }, package: "Debian 1:7.2+dfsg-7+deb12u7" },
      capabilities
    }
  })

/** A valid QEMU 7.2 greeting with capabilities `["oob"]`. */
export const standardGreeting: string = makeGreeting(["oob"])

/** An event line as QEMU writes it. */
export const eventJson = (name: string, data?: Readonly<Record<string, unknown>>): string =>
  JSON.stringify({
    event: name,
    ...(data === undefined ? {} : { data }),
    timestamp: { seconds: 1_700_000_000, microseconds: 123_456 }
  })

/** A command the client sent, as parsed by the fake server. */
export interface ReceivedCommand {
  readonly id: unknown
  /** The command name, whether sent as `execute` or `exec-oob`. */
  readonly execute: string
  readonly oob: boolean
  readonly arguments: Readonly<Record<string, unknown>> | undefined
  /** The line exactly as received (without the newline). */
  readonly raw: string
}

/** Why `nextCommand` could not produce a command. */
export class FakeQmpError extends Data.TaggedError("FakeQmpError")<{
  readonly reason: "Closed" | "Malformed"
  readonly detail: string
}> {}

export interface FakeConnection {
  /** Writes `text` and QEMU's "\r\n" terminator; completes once handed to the kernel (or the peer is gone). */
  readonly send: (text: string) => Effect.Effect<void>
  /** Writes exactly these bytes, no terminator: partial lines, several messages at once. */
  readonly sendRaw: (bytes: string | Uint8Array) => Effect.Effect<void>
  /** Writes `text` in separate writes of `size` bytes, pausing between them so each is its own read. */
  readonly sendInChunks: (text: string, size: number, pause?: Duration.DurationInput) => Effect.Effect<void>
  /** The next command line from the client; fails once the client has gone and nothing is left. */
  readonly nextCommand: Effect.Effect<ReceivedCommand, FakeQmpError>
  /** Sends `{"return": value, "id": id}`. */
  readonly reply: (id: unknown, value: unknown) => Effect.Effect<void>
  /** Sends `{"error": {"class", "desc"}, "id": id}`. */
  readonly replyError: (id: unknown, errorClass: string, desc: string) => Effect.Effect<void>
  /** Sends an event line (see `eventJson`). */
  readonly event: (name: string, data?: Readonly<Record<string, unknown>>) => Effect.Effect<void>
  /** Sends the greeting, answers `qmp_capabilities` with `{}`, and returns that command. */
  readonly negotiate: (greeting?: string) => Effect.Effect<ReceivedCommand, FakeQmpError>
  /** Completes when the socket has closed (the client hung up, or we closed it). Also the way to stall. */
  readonly closed: Effect.Effect<void>
  /** Half-closes after flushing what was written (the client sees EOF). */
  readonly close: Effect.Effect<void>
  /** Drops the socket at once. */
  readonly destroy: Effect.Effect<void>
}

export interface FakeServer {
  /** The unix socket path to give `QmpClient.connect`. */
  readonly path: string
}

const isRecord = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const parseCommand = (raw: string): ReceivedCommand | FakeQmpError => {
  let json: unknown
  try {
    json = JSON.parse(raw)
  } catch (e) {
    return new FakeQmpError({ reason: "Malformed", detail: `not JSON (${String(e)}): ${raw.slice(0, 200)}` })
  }
  if (!isRecord(json)) return new FakeQmpError({ reason: "Malformed", detail: `not an object: ${raw.slice(0, 200)}` })
  const oob = typeof json["exec-oob"] === "string"
  const execute = oob ? json["exec-oob"] : json.execute
  if (typeof execute !== "string") {
    return new FakeQmpError({ reason: "Malformed", detail: `no command name: ${raw.slice(0, 200)}` })
  }
  const args = json.arguments
  if (args !== undefined && !isRecord(args)) {
    return new FakeQmpError({ reason: "Malformed", detail: `arguments is not an object: ${raw.slice(0, 200)}` })
  }
  return { id: json.id, execute, oob, arguments: args, raw }
}

/**
 * Wires an accepted socket up synchronously (inside the `connection`
 * callback), so that no data or close event can be missed before the handler
 * fiber starts.
 */
const makeConnection = (socket: net.Socket): FakeConnection => {
  // `null` marks the end of the client's input; it is put back when taken so every later take sees it.
  const inbox = Effect.runSync(Queue.unbounded<ReceivedCommand | FakeQmpError | null>())
  const closedDeferred = Deferred.unsafeMake<void>(FiberId.none)
  let tail = ""

  socket.setEncoding("utf8")
  socket.on("data", (chunk: string) => {
    tail += chunk
    let nl = tail.indexOf("\n")
    while (nl !== -1) {
      const line = tail.slice(0, nl).trim()
      tail = tail.slice(nl + 1)
      if (line.length > 0) inbox.unsafeOffer(parseCommand(line))
      nl = tail.indexOf("\n")
    }
  })
  // Write errors (EPIPE after the client hung up) are part of the faults under test.
  socket.on("error", () => {})
  socket.on("close", () => {
    inbox.unsafeOffer(null)
    Deferred.unsafeDone(closedDeferred, Exit.void)
  })

  const sendRaw = (bytes: string | Uint8Array): Effect.Effect<void> =>
    Effect.async<void>((resume) => {
      if (socket.destroyed || !socket.writable) return resume(Effect.void)
      socket.write(bytes, () => resume(Effect.void))
    })

  const send = (text: string) => sendRaw(`${text}\r\n`)

  const sendInChunks = (text: string, size: number, pause: Duration.DurationInput = "2 millis") => {
    const bytes = Buffer.from(text, "utf8")
    const chunks: Array<Buffer> = []
    for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size))
    return Effect.forEach(chunks, (chunk) => Effect.zipRight(sendRaw(chunk), Effect.sleep(pause)), { discard: true })
  }

  const nextCommand: Effect.Effect<ReceivedCommand, FakeQmpError> = Effect.flatMap(Queue.take(inbox), (item) => {
    if (item === null) {
      return Effect.zipRight(
        Queue.offer(inbox, null),
        Effect.fail(new FakeQmpError({ reason: "Closed", detail: "the client closed the connection" }))
      )
    }
    return item instanceof FakeQmpError ? Effect.fail(item) : Effect.succeed(item)
  })

  const reply = (id: unknown, value: unknown) => send(JSON.stringify({ return: value, id }))
  const replyError = (id: unknown, errorClass: string, desc: string) =>
    send(JSON.stringify({ error: { class: errorClass, desc }, id }))
  const event = (name: string, data?: Readonly<Record<string, unknown>>) => send(eventJson(name, data))

  const negotiate = (greeting: string = standardGreeting) =>
    Effect.gen(function*() {
      yield* send(greeting)
      const command = yield* nextCommand
      if (command.execute !== "qmp_capabilities") {
        return yield* Effect.fail(
          new FakeQmpError({ reason: "Malformed", detail: `expected qmp_capabilities, got ${command.raw}` })
        )
      }
      yield* reply(command.id, {})
      return command
    })

  return {
    send,
    sendRaw,
    sendInChunks,
    nextCommand,
    reply,
    replyError,
    event,
    negotiate,
    closed: Deferred.await(closedDeferred),
    close: Effect.sync(() => {
      socket.end()
    }),
    destroy: Effect.sync(() => {
      socket.destroy()
    })
  }
}

/**
 * Starts a fake QMP server; `handler` scripts each accepted connection.
 */
export const fakeServer = (
  handler: (conn: FakeConnection) => Effect.Effect<void, unknown>
): Effect.Effect<FakeServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "eq-fake-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const sockPath = path.join(dir, "qmp.sock")

    const server = yield* Effect.acquireRelease(
      Effect.async<net.Server, Error>((resume) => {
        const srv = net.createServer()
        srv.once("error", (err) => resume(Effect.fail(err)))
        srv.listen(sockPath, () => resume(Effect.succeed(srv)))
      }).pipe(Effect.orDie),
      (srv) =>
        Effect.async<void>((resume) => {
          srv.close(() => resume(Effect.void))
        })
    )

    // Released before the server, whose close waits for its connections to end.
    const sockets = new Set<net.Socket>()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const socket of sockets) socket.destroy()
        sockets.clear()
      })
    )

    // Released first: handler fibers are interrupted before their sockets go.
    const fibers = yield* FiberSet.make<void, never>()
    const run = yield* FiberSet.runtime(fibers)<never>()

    server.on("connection", (socket) => {
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
      const conn = makeConnection(socket)
      run(
        handler(conn).pipe(
          Effect.catchAllCause((cause) =>
            Cause.isInterruptedOnly(cause)
              ? Effect.void
              : Effect.zipRight(Effect.logError("fake QMP handler failed", cause), conn.destroy)
          )
        )
      )
    })

    return { path: sockPath }
  })

/** The introspection snapshot the generated types came from (QEMU 7.2's `query-qmp-schema`). */
export const schemaSnapshot: ReadonlyArray<unknown> = (JSON.parse(
  fs.readFileSync(new URL("../../src/generated/qmp-schema-7.2.json", import.meta.url), "utf8")
) as { readonly schema: ReadonlyArray<unknown> }).schema

/**
 * A handler that negotiates, then answers `query-qmp-schema` with the
 * snapshot, a command named in `answers` with its value, and `{}` to anything
 * else; every command name it receives is pushed to `received`.
 */
export const schemaAnswering = (
  received: Array<string>,
  answers: Readonly<Record<string, unknown>> = {}
) =>
(conn: FakeConnection): Effect.Effect<void> =>
  Effect.gen(function*() {
    yield* conn.negotiate()
    for (;;) {
      const command = yield* conn.nextCommand
      received.push(command.execute)
      const reply = command.execute === "query-qmp-schema"
        ? schemaSnapshot
        : Object.prototype.hasOwnProperty.call(answers, command.execute)
        ? answers[command.execute]
        : {}
      yield* conn.reply(command.id, reply)
    }
  }).pipe(Effect.ignore)
