/**
 * QmpClient against a scripted fake server, for the faults real QEMU will not
 * produce: silence, garbage, unknown ids, stalls, half messages, odd framing.
 * Commands are named `fake-*` so that the replies skip typed decoding (see
 * Qapi.client.test.ts for that).
 */
import { describe, expect, it } from "@effect/vitest"
import * as net from "node:net"
import { Chunk, Deferred, Duration, Effect, Fiber, HashMap, Logger, LogLevel, Option, Stream } from "effect"
import type { QmpConnectionError } from "../src/Errors.js"
import * as QmpClient from "../src/QmpClient.js"
import { eventJson, fakeServer, type FakeQmpError, makeGreeting, type ReceivedCommand, schemaAnswering, standardGreeting } from "./helpers/fakeQmp.js"

type Tagged = { readonly _tag: string }

/** Asserts the tag and narrows to it. */
const expectTag = <E extends Tagged, T extends E["_tag"]>(error: E, tag: T): Extract<E, { readonly _tag: T }> => {
  expect(error._tag).toBe(tag)
  return error as Extract<E, { readonly _tag: T }>
}

/** Bounds a wait that must not hang, so a regression fails fast instead of at the vitest timeout. */
const within = <A, E, R>(effect: Effect.Effect<A, E, R>, duration: Duration.DurationInput = "10 seconds") =>
  Effect.timeoutFail(effect, { duration, onTimeout: () => new Error(`did not complete within ${Duration.format(duration)}`) })

const connect = (path: string, options: Omit<QmpClient.ConnectOptions, "address"> = {}) =>
  QmpClient.connect({ address: path, negotiationTimeout: "1 second", ...options })

/** The client's writes of `fake-*` commands, counted at the socket (the fake server, in this process, would read writes made in one turn as one chunk anyway). */
const countWrites = Effect.acquireRelease(
  Effect.sync(() => {
    const writes: Array<string> = []
    const write = net.Socket.prototype.write
    net.Socket.prototype.write = function(this: net.Socket, data: unknown, ...rest: Array<unknown>) {
      if (typeof data === "string" && data.includes("\"execute\":\"fake-")) writes.push(data)
      return (write as (...args: Array<unknown>) => boolean).call(this, data, ...rest)
    } as typeof write
    return { writes, write }
  }),
  ({ write }) => Effect.sync(() => void (net.Socket.prototype.write = write))
).pipe(Effect.map(({ writes }) => writes))

/** The command names in one write. */
const executed = (write: string): Array<string> => write.trim().split("\n").map((line) => JSON.parse(line).execute)

describe("QmpClient against a fake QMP server", () => {
  describe("negotiation", () => {
    it.scopedLive("fails with QmpTimeoutError after negotiationTimeout when the server never greets, and closes its socket", () =>
      Effect.gen(function*() {
        const hungUp = yield* Deferred.make<void>()
        const server = yield* fakeServer((conn) => Deferred.complete(hungUp, conn.closed))
        const error = yield* Effect.flip(connect(server.path, { negotiationTimeout: "200 millis" }))
        const timeout = expectTag(error, "QmpTimeoutError")
        expect(Duration.toMillis(timeout.timeout)).toBe(200)
        expect(timeout.operation).toContain("greeting")
        yield* within(Deferred.await(hungUp))
      }))

    it.scopedLive("fails with QmpProtocolError when the first message is not a greeting", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) => Effect.zipRight(conn.send(eventJson("STOP")), conn.closed))
        const error = expectTag(yield* Effect.flip(connect(server.path)), "QmpProtocolError")
        expect(error.message).toContain("greeting")
        expect(error.raw).toContain("STOP")
      }))

    it.scopedLive("fails with QmpProtocolError when the greeting has the wrong shape", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) =>
          Effect.zipRight(conn.send(JSON.stringify({ QMP: { version: "7.2", capabilities: [] } })), conn.closed)
        )
        const error = expectTag(yield* Effect.flip(connect(server.path)), "QmpProtocolError")
        expect(error.message).toContain("invalid greeting")
      }))

    it.scopedLive("enables oob in qmp_capabilities by default when the greeting offers it", () =>
      Effect.gen(function*() {
        const negotiated = yield* Deferred.make<ReceivedCommand, FakeQmpError>()
        const oobCommand = yield* Deferred.make<ReceivedCommand>()
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* Deferred.complete(negotiated, conn.negotiate(standardGreeting))
            const command = yield* conn.nextCommand
            yield* Deferred.succeed(oobCommand, command)
            yield* conn.reply(command.id, { status: "running" })
          })
        )
        const qmp = yield* connect(server.path)
        const capabilities = yield* Deferred.await(negotiated)
        expect(capabilities.arguments).toEqual({ enable: ["oob"] })
        expect(qmp.capabilities).toEqual(["oob"])
        expect(yield* qmp.execute("fake-status", undefined, { oob: true })).toEqual({ status: "running" })
        const sent = yield* Deferred.await(oobCommand)
        expect(sent.oob).toBe(true)
        expect(JSON.parse(sent.raw)).toHaveProperty("exec-oob", "fake-status")
      }))

    it.scopedLive("sends qmp_capabilities without enable when oob is not offered", () =>
      Effect.gen(function*() {
        const negotiated = yield* Deferred.make<ReceivedCommand, FakeQmpError>()
        const server = yield* fakeServer((conn) => Deferred.complete(negotiated, conn.negotiate(makeGreeting([]))))
        const qmp = yield* connect(server.path)
        const capabilities = yield* Deferred.await(negotiated)
        expect(capabilities.arguments).toBeUndefined()
        expect(JSON.parse(capabilities.raw)).not.toHaveProperty("arguments")
        expect(qmp.capabilities).toEqual([])
      }))

    it.scopedLive("sends qmp_capabilities without enable when oob is offered but turned off", () =>
      Effect.gen(function*() {
        const negotiated = yield* Deferred.make<ReceivedCommand, FakeQmpError>()
        const server = yield* fakeServer((conn) => Deferred.complete(negotiated, conn.negotiate(standardGreeting)))
        const qmp = yield* connect(server.path, { oob: false })
        expect((yield* Deferred.await(negotiated)).arguments).toBeUndefined()
        expect(qmp.capabilities).toEqual([])
        expect(qmp.greeting.QMP.capabilities).toEqual(["oob"])
        expect(qmp.greeting.QMP.version.qemu).toEqual({ major: 7, minor: 2, micro: 0 })
      }))
  })

  describe("fatal messages", () => {
    it.scopedLive("fails 3 pending commands, and every later one, with the same QmpProtocolError on malformed JSON", () =>
      Effect.gen(function*() {
        const hungUp = yield* Deferred.make<void>()
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            for (let i = 0; i < 3; i++) yield* conn.nextCommand
            yield* conn.send(`{"return": {}, "id": oops}`)
            yield* Deferred.complete(hungUp, conn.closed)
          })
        )
        const qmp = yield* connect(server.path)
        const results = yield* within(
          Effect.forEach([1, 2, 3], (n) => Effect.flip(qmp.execute("fake-status", { n })), { concurrency: "unbounded" })
        )
        const first = expectTag(results[0]!, "QmpProtocolError")
        expect(first.message).toContain("malformed JSON")
        expect(first.raw).toContain("oops")
        for (const error of results) expect(error).toBe(first)
        expect(yield* within(qmp.closed)).toBe(first)
        expect(yield* qmp.isConnected).toBe(false)
        expect(yield* Effect.flip(qmp.execute("fake-status"))).toBe(first)
        yield* within(Deferred.await(hungUp))
      }))

    it.scopedLive("delivers nothing that follows a fatal message in the same read", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const command = yield* conn.nextCommand
            yield* conn.sendRaw(
              `not json\r\n${eventJson("STOP")}\r\n${JSON.stringify({ return: "late", id: command.id })}\r\n`
            )
            yield* conn.closed
          })
        )
        const qmp = yield* connect(server.path)
        const error = yield* Effect.flip(qmp.execute("fake-status"))
        expect(error._tag).toBe("QmpProtocolError")
        expect(yield* qmp.getEvents()).toEqual([])
      }))

    it.scopedLive("ends the connection with QmpProtocolError on an error response without id", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            yield* conn.nextCommand
            yield* conn.send(JSON.stringify({ error: { class: "GenericError", desc: "JSON parse error, invalid literal" } }))
            yield* conn.closed
          })
        )
        const qmp = yield* connect(server.path)
        const error = expectTag(yield* Effect.flip(qmp.execute("fake-status")), "QmpProtocolError")
        expect(error.message).toContain("without id")
        expect(error.raw).toContain("JSON parse error")
        expect(yield* qmp.isConnected).toBe(false)
        expect(yield* qmp.closed).toBe(error)
      }))

    it.scopedLive("fails pending commands with QmpConnectionError when the server closes in the middle of a reply", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            yield* conn.nextCommand
            yield* conn.nextCommand
            yield* conn.sendRaw(`{"return": {"status": "runn`)
            yield* Effect.sleep("20 millis")
            yield* conn.close
          })
        )
        const qmp = yield* connect(server.path)
        const errors = yield* within(
          Effect.forEach(["fake-status", "fake-name"], (command) => Effect.flip(qmp.execute(command)), {
            concurrency: "unbounded"
          })
        )
        for (const error of errors) expect(expectTag(error, "QmpConnectionError").reason).toBe("Eof")
        expect(errors[1]).toBe(errors[0])
        expect(expectTag(yield* within(qmp.closed), "QmpConnectionError").reason).toBe("Eof")
        expect(yield* qmp.isConnected).toBe(false)
      }))
  })

  describe("replies", () => {
    it.scopedLive("a command made while no connection waits goes out at once; those made with it share the next write", () =>
      Effect.gen(function*() {
        const writes = yield* countWrites
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate(standardGreeting)
            const commands = yield* Effect.forEach([1, 2, 3, 4, 5], () => conn.nextCommand)
            // answered out of order: each caller still gets its own
            for (const command of [...commands].reverse()) yield* conn.reply(command.id, { name: command.execute })
            yield* conn.closed
          })
        )
        const qmp = yield* connect(server.path)
        const names = ["fake-a", "fake-b", "fake-c", "fake-d", "fake-e"]
        const results = yield* within(Effect.forEach(names, (name) => qmp.execute(name), { concurrency: "unbounded" }))
        expect(results).toEqual(names.map((name) => ({ name })))
        // the first alone (nothing else waited), the four made in the same turn together
        expect(writes.map(executed)).toEqual([["fake-a"], ["fake-b", "fake-c", "fake-d", "fake-e"]])
      }))

    it.scopedLive("while another connection waits for a reply, commands made in one turn go out in one write", () =>
      Effect.gen(function*() {
        const writes = yield* countWrites
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate(standardGreeting)
            const commands = yield* Effect.forEach([1, 2, 3], () => conn.nextCommand)
            for (const command of commands) yield* conn.reply(command.id, { name: command.execute })
            yield* conn.closed
          })
        )
        // Never answered: this connection waits for as long as the test runs.
        const silent = yield* fakeServer((conn) => Effect.zipRight(conn.negotiate(standardGreeting), conn.closed))
        const waiting = yield* connect(silent.path)
        yield* Effect.forkScoped(waiting.execute("fake-never"))
        const qmp = yield* connect(server.path)
        const names = ["fake-a", "fake-b", "fake-c"]
        const results = yield* within(Effect.forEach(names, (name) => qmp.execute(name), { concurrency: "unbounded" }))
        expect(results).toEqual(names.map((name) => ({ name })))
        expect(writes.map(executed)).toEqual([["fake-never"], names])
      }))

    it.scopedLive("a burst of commands goes out 64 lines at a time as it is made, not all at the end of the turn", () =>
      Effect.gen(function*() {
        const writes = yield* countWrites
        const names = Array.from({ length: 1 + 64 * 2 + 10 }, (_, i) => `fake-${i}`)
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate(standardGreeting)
            const commands = yield* Effect.forEach(names, () => conn.nextCommand)
            for (const command of commands) yield* conn.reply(command.id, { name: command.execute })
            yield* conn.closed
          })
        )
        const qmp = yield* connect(server.path)
        const results = yield* within(Effect.forEach(names, (name) => qmp.execute(name), { concurrency: "unbounded" }))
        expect(results).toEqual(names.map((name) => ({ name })))
        // the first alone, then full batches as they fill, then the rest at the end of the turn; in order
        expect(writes.map((write) => executed(write).length)).toEqual([1, 64, 64, 10])
        expect(writes.flatMap(executed)).toEqual(names)
      }))

    it.scopedLive("drops and logs a reply with an unknown id, and routes the real reply to its caller", () =>
      Effect.gen(function*() {
        const logs: Array<{ level: string; message: string; id: unknown }> = []
        const capture = Logger.make(({ annotations, logLevel, message }) => {
          const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
          logs.push({ level: logLevel.label, message: text, id: Option.getOrUndefined(HashMap.get(annotations, "id")) })
        })
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const command = yield* conn.nextCommand
            yield* conn.reply("eq-no-such-id", "wrong")
            yield* conn.reply(42, "also wrong")
            yield* conn.reply(command.id, "right")
            const next = yield* conn.nextCommand
            yield* conn.reply(next.id, "still working")
          })
        )
        const result = yield* Effect.gen(function*() {
          const qmp = yield* connect(server.path)
          const first = yield* qmp.execute("fake-name")
          const second = yield* qmp.execute("fake-name")
          return { first, second, connected: yield* qmp.isConnected }
        }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)))
        expect(result).toEqual({ first: "right", second: "still working", connected: true })
        const dropped = logs.filter((l) => l.message.includes("unknown id"))
        expect(dropped.map((l) => l.id)).toEqual(["eq-no-such-id", "42"])
        for (const l of dropped) expect(l.level).toBe("WARN")
      }))

    it.scopedLive("fails a stalled command with QmpTimeoutError naming it, ignores the late reply, and keeps working", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const stalled = yield* conn.nextCommand
            // The client only sends the next command once the first has timed out.
            const next = yield* conn.nextCommand
            yield* conn.reply(stalled.id, "late")
            yield* conn.reply(next.id, "on time")
          })
        )
        const qmp = yield* connect(server.path)
        const error = expectTag(
          yield* Effect.flip(qmp.execute("fake-status", undefined, { timeout: "100 millis" })),
          "QmpTimeoutError"
        )
        expect(error.operation).toContain("fake-status")
        expect(Duration.toMillis(error.timeout)).toBe(100)
        expect(yield* within(qmp.execute("fake-name"))).toBe("on time")
        expect(yield* qmp.isConnected).toBe(true)
      }))

    it.scopedLive("expects the late replies of commands given up by a timeout and by an interrupted fiber", () =>
      Effect.gen(function*() {
        const logs: Array<{ level: string; message: string }> = []
        const capture = Logger.make(({ logLevel, message }) => {
          logs.push({ level: logLevel.label, message: Array.isArray(message) ? message.map(String).join(" ") : String(message) })
        })
        const interruptedSent = yield* Deferred.make<void>()
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const timedOut = yield* conn.nextCommand
            const interrupted = yield* conn.nextCommand
            yield* Deferred.succeed(interruptedSent, undefined)
            const next = yield* conn.nextCommand
            yield* conn.reply(timedOut.id, "late")
            yield* conn.reply(interrupted.id, "late too")
            yield* conn.reply(next.id, "on time")
          })
        )
        const result = yield* Effect.gen(function*() {
          const qmp = yield* connect(server.path)
          const timedOut = yield* Effect.flip(qmp.execute("fake-timed-out", undefined, { timeout: "100 millis" }))
          const fiber = yield* Effect.fork(qmp.execute("fake-interrupted"))
          yield* within(Deferred.await(interruptedSent))
          yield* Fiber.interrupt(fiber)
          return { timedOut: timedOut._tag, next: yield* within(qmp.execute("fake-next")) }
        }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)), Logger.withMinimumLogLevel(LogLevel.Debug))
        expect(result).toEqual({ timedOut: "QmpTimeoutError", next: "on time" })
        // Both late replies are recognised as given up, none is an unknown id.
        expect(logs.filter((l) => l.message.includes("late reply of an abandoned")).map((l) => l.level)).toEqual(["DEBUG", "DEBUG"])
        expect(logs.filter((l) => l.message.includes("unknown id"))).toEqual([])
      }))

    it.scopedLive("applies the commandTimeout option when no per-call timeout is given", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            yield* conn.nextCommand
            const slow = yield* conn.nextCommand
            yield* Effect.sleep("250 millis")
            yield* conn.reply(slow.id, "slow but allowed")
          })
        )
        const qmp = yield* connect(server.path, { commandTimeout: "100 millis" })
        const error = expectTag(yield* Effect.flip(qmp.execute("stall-me")), "QmpTimeoutError")
        expect(error.operation).toContain("stall-me")
        expect(Duration.toMillis(error.timeout)).toBe(100)
        // A per-call timeout overrides the default.
        expect(yield* qmp.execute("slow", undefined, { timeout: "2 seconds" })).toBe("slow but allowed")
      }))

    it.scopedLive("gives 1,000 concurrent commands unique ids and routes replies sent in reverse order", () =>
      Effect.gen(function*() {
        const count = 1000
        const seen = yield* Deferred.make<ReadonlyArray<unknown>>()
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const commands: Array<ReceivedCommand> = []
            for (let i = 0; i < count; i++) commands.push(yield* conn.nextCommand)
            yield* Deferred.succeed(seen, commands.map((c) => c.id))
            const replies = commands.reverse().map((c) => JSON.stringify({ return: c.arguments?.n, id: c.id }))
            yield* conn.sendRaw(replies.join("\r\n") + "\r\n")
          })
        )
        const qmp = yield* connect(server.path)
        const results = yield* within(
          Effect.forEach(Array.from({ length: count }, (_, n) => n), (n) => qmp.execute("echo", { n }), {
            concurrency: "unbounded"
          })
        )
        expect(results).toEqual(Array.from({ length: count }, (_, n) => n))
        const ids = yield* Deferred.await(seen)
        expect(new Set(ids).size).toBe(count)
        // Plain numbers: QEMU reads QMP a byte at a time, so short ids are cheaper for it.
        for (const id of ids) expect(Number.isInteger(id)).toBe(true)
      }))
  })

  describe("executeAll", () => {
    it.scopedLive("writes a batch at once and in order, before any reply, and returns the results in order", () =>
      Effect.gen(function*() {
        const writes = yield* countWrites
        const names = Array.from({ length: 1 + 64 + 20 }, (_, i) => `fake-${i}`)
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate(standardGreeting)
            // Nothing is answered before the whole batch has arrived: a client that waited for
            // each reply before sending the next would time out here.
            const commands = yield* Effect.forEach(names, () => conn.nextCommand)
            for (const command of [...commands].reverse()) yield* conn.reply(command.id, { name: command.execute, n: command.arguments?.n })
            yield* conn.closed
          })
        )
        const qmp = yield* connect(server.path)
        const results = yield* within(qmp.executeAll(names.map((name, n) => [name, { n }] as const)))
        expect(results).toEqual(names.map((name, n) => ({ name, n })))
        // The first at once, then full batches of 64 as they filled, then the rest: in order.
        expect(writes.map((write) => executed(write).length)).toEqual([1, 64, 20])
        expect(writes.flatMap(executed)).toEqual(names)
      }))

    it.scopedLive("fails with the first failure by position, once every reply is in", () =>
      Effect.gen(function*() {
        const replied = yield* Deferred.make<number>()
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const [a, b, c, d] = yield* Effect.forEach([1, 2, 3, 4], () => conn.nextCommand)
            // The later failure is answered first: the batch still reports the earlier one.
            yield* conn.replyError(d!.id, "GenericError", "fourth failed")
            yield* conn.reply(a!.id, "first")
            yield* conn.replyError(b!.id, "DeviceNotFound", "second failed")
            yield* Deferred.succeed(replied, 3)
            yield* Effect.sleep("100 millis")
            yield* conn.reply(c!.id, "third")
            const next = yield* conn.nextCommand
            yield* conn.reply(next.id, "next")
          })
        )
        const qmp = yield* connect(server.path)
        const fiber = yield* Effect.fork(qmp.executeAll([["fake-a"], ["fake-b"], ["fake-c"], ["fake-d"]]))
        yield* within(Deferred.await(replied))
        // Three replies in, one to come: not failed yet.
        yield* Effect.sleep("20 millis")
        expect(fiber.unsafePoll()).toBe(null)
        const error = expectTag(yield* within(Effect.flip(Fiber.join(fiber))), "QmpCommandError")
        expect(error.command).toBe("fake-b")
        expect(error.errorClass).toBe("DeviceNotFound")
        // The third reply was expected, not an unknown id; the connection goes on.
        expect(yield* within(qmp.execute("fake-next"))).toBe("next")
      }))

    it.scopedLive("an empty batch succeeds with [] and sends nothing", () =>
      Effect.gen(function*() {
        const received: Array<string> = []
        const server = yield* fakeServer(schemaAnswering(received))
        const qmp = yield* connect(server.path)
        expect(yield* qmp.executeAll([])).toEqual([])
        yield* qmp.execute("fake-after")
        expect(received).toEqual(["fake-after"])
      }))

    it.scopedLive("with validateArgs, one bad call fails the batch with QmpArgumentError and sends none of it", () =>
      Effect.gen(function*() {
        const received: Array<string> = []
        const server = yield* fakeServer(schemaAnswering(received))
        const qmp = yield* connect(server.path, { validateArgs: true })
        const error = expectTag(
          yield* Effect.flip(qmp.executeAll([["stop"], ["blockdev-add", { driver: "null-co", "node_name": "n" }], ["cont"]] as never)),
          "QmpArgumentError"
        )
        expect(error.command).toBe("blockdev-add")
        expect(received).toEqual(["query-qmp-schema"])
        expect(yield* qmp.executeAll([["stop"], ["cont"]])).toEqual([{}, {}])
        expect(received).toEqual(["query-qmp-schema", "stop", "cont"])
      }))

    it.scopedLive("times out as a whole, naming the commands; the late replies are expected and dropped", () =>
      Effect.gen(function*() {
        const logs: Array<string> = []
        const capture = Logger.make(({ message }) => void logs.push(Array.isArray(message) ? message.map(String).join(" ") : String(message)))
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const batch = yield* Effect.forEach([1, 2, 3, 4, 5], () => conn.nextCommand)
            yield* conn.reply(batch[0]!.id, "one in time")
            const next = yield* conn.nextCommand
            for (const command of batch.slice(1)) yield* conn.reply(command.id, "late")
            yield* conn.reply(next.id, "on time")
          })
        )
        const result = yield* Effect.gen(function*() {
          const qmp = yield* connect(server.path)
          const error = yield* Effect.flip(
            qmp.executeAll([["fake-a"], ["fake-b"], ["fake-c"], ["fake-d"], ["fake-e"]], { timeout: "100 millis" })
          )
          return { error, next: yield* within(qmp.execute("fake-next")) }
        }).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)), Logger.withMinimumLogLevel(LogLevel.Debug))
        const timeout = expectTag(result.error, "QmpTimeoutError")
        expect(timeout.operation).toBe("QMP commands 'fake-a', 'fake-b', 'fake-c' and 2 more")
        expect(Duration.toMillis(timeout.timeout)).toBe(100)
        expect(result.next).toBe("on time")
        expect(logs.filter((l) => l.includes("late reply of an abandoned"))).toHaveLength(4)
        expect(logs.filter((l) => l.includes("unknown id"))).toEqual([])
      }))

    it.scopedLive("fails with QmpConnectionError when the connection ends mid-batch", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const [first] = yield* Effect.forEach([1, 2, 3], () => conn.nextCommand)
            yield* conn.reply(first!.id, "one")
            yield* conn.destroy
          })
        )
        const qmp = yield* connect(server.path)
        const error = yield* within(Effect.flip(qmp.executeAll([["fake-a"], ["fake-b"], ["fake-c"]])))
        expect(error._tag).toBe("QmpConnectionError")
        // And a batch made after the end fails at once, sending nothing.
        expect((yield* within(Effect.flip(qmp.executeAll([["fake-d"]]))))._tag).toBe("QmpConnectionError")
      }))
  })

  describe("framing", () => {
    it.scopedLive("reassembles a reply sent one byte at a time, multi-byte characters included", () =>
      Effect.gen(function*() {
        const text = "état → ✓ 🚀"
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const command = yield* conn.nextCommand
            yield* conn.sendInChunks(`${JSON.stringify({ return: text, id: command.id })}\r\n`, 1, "1 millis")
          })
        )
        const qmp = yield* connect(server.path)
        expect(yield* within(qmp.execute("fake-name"))).toBe(text)
      }))

    it.scopedLive("splits many events and a reply arriving in one write, in order", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const command = yield* conn.nextCommand
            // Mixed terminators and blank lines, as a sloppy peer might send.
            yield* conn.sendRaw(
              [
                eventJson("E1"),
                eventJson("E2", { n: 2 }),
                "",
                eventJson("E3"),
                JSON.stringify({ return: { ok: true }, id: command.id }),
                eventJson("E4"),
                eventJson("E5")
              ].join("\r\n") + "\n\n"
            )
          })
        )
        const qmp = yield* connect(server.path)
        const events = yield* qmp.subscribe
        const collected = yield* Effect.fork(Stream.runCollect(Stream.take(events, 5)))
        expect(yield* qmp.execute("trigger")).toEqual({ ok: true })
        const names = Chunk.toArray(yield* within(Fiber.join(collected))).map((e) => e.event)
        expect(names).toEqual(["E1", "E2", "E3", "E4", "E5"])
      }))

    it.scopedLive("decodes a single reply of about 5 MiB", () =>
      Effect.gen(function*() {
        const big = "x".repeat(5 * 1024 * 1024)
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const command = yield* conn.nextCommand
            yield* conn.reply(command.id, { big })
          })
        )
        const qmp = yield* connect(server.path)
        const result = yield* within(qmp.execute("fake-schema"))
        expect(result).toEqual({ big })
      }))

    it.scopedLive("ends the connection with a QmpProtocolError naming the limit on a message over maxMessageSize", () =>
      Effect.gen(function*() {
        const hungUp = yield* Deferred.make<void>()
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const command = yield* conn.nextCommand
            yield* conn.reply(command.id, "y".repeat(100 * 1024))
            yield* Deferred.complete(hungUp, conn.closed)
          })
        )
        const qmp = yield* connect(server.path, { maxMessageSize: 64 * 1024 })
        const error = expectTag(yield* within(Effect.flip(qmp.execute("fake-schema"))), "QmpProtocolError")
        expect(error.message).toContain(String(64 * 1024))
        expect(error.raw.length).toBeLessThan(1024)
        expect(yield* qmp.isConnected).toBe(false)
        yield* within(Deferred.await(hungUp))
      }))
  })

  describe("events", () => {
    it.scopedLive("publishes events to subscribed streams and buffers them for getEvents", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            const command = yield* conn.nextCommand
            yield* conn.event("STOP")
            yield* conn.event("RESUME")
            yield* conn.event("SHUTDOWN", { guest: true, reason: "guest-shutdown" })
            yield* conn.reply(command.id, {})
          })
        )
        const qmp = yield* connect(server.path)
        const streams = [yield* qmp.subscribe, yield* qmp.subscribe]
        const collectors = yield* Effect.forEach(streams, (s) => Effect.fork(Stream.runCollect(Stream.take(s, 3))))
        yield* qmp.execute("stop")
        for (const collector of collectors) {
          const events = Chunk.toArray(yield* within(Fiber.join(collector)))
          expect(events.map((e) => e.event)).toEqual(["STOP", "RESUME", "SHUTDOWN"])
          expect(events[2]!.data).toEqual({ guest: true, reason: "guest-shutdown" })
        }
        const buffered = yield* qmp.getEvents()
        expect(buffered.map((e) => e.event)).toEqual(["STOP", "RESUME", "SHUTDOWN"])
        expect(buffered[0]!.timestamp).toEqual({ seconds: 1_700_000_000, microseconds: 123_456 })
        expect(yield* qmp.pullEvent()).toEqual(Option.none())
      }))

    it.scopedLive("fails pullEvent with QmpTimeoutError when nothing arrives within its wait", () =>
      Effect.gen(function*() {
        const server = yield* fakeServer((conn) => Effect.zipRight(conn.negotiate(), conn.closed))
        const qmp = yield* connect(server.path)
        const error = expectTag(yield* Effect.flip(qmp.pullEvent({ wait: "100 millis" })), "QmpTimeoutError")
        expect(error.operation).toContain("event")
        expect(Duration.toMillis(error.timeout)).toBe(100)
        expect(yield* qmp.isConnected).toBe(true)
      }))

    it.scopedLive("fails a waiting pullEvent with QmpConnectionError, and ends event streams, when the server closes", () =>
      Effect.gen(function*() {
        const go = yield* Deferred.make<void>()
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            yield* Deferred.await(go)
            yield* conn.close
          })
        )
        const qmp = yield* connect(server.path)
        const events = yield* qmp.subscribe
        const waiting = yield* Effect.fork(qmp.pullEvent({ wait: true }))
        const streamed = yield* Effect.fork(Stream.runCollect(events))
        yield* Effect.sleep("20 millis")
        yield* Deferred.succeed(go, undefined)
        const error = expectTag(yield* within(Effect.flip(Fiber.join(waiting))), "QmpConnectionError")
        expect(error.reason).toBe("Eof")
        expect(Chunk.size(yield* within(Fiber.join(streamed)))).toBe(0)
        const later = yield* Effect.flip(qmp.getEvents({ wait: true }))
        expect(later._tag).toBe("QmpConnectionError")
      }))
  })

  describe("close", () => {
    it.scopedLive("is idempotent and fails pending commands with QmpConnectionError reason Closed", () =>
      Effect.gen(function*() {
        const received = yield* Deferred.make<void>()
        const hungUp = yield* Deferred.make<void>()
        const server = yield* fakeServer((conn) =>
          Effect.gen(function*() {
            yield* conn.negotiate()
            yield* conn.nextCommand
            yield* Deferred.succeed(received, undefined)
            yield* Deferred.complete(hungUp, conn.closed)
          })
        )
        const qmp = yield* connect(server.path)
        const pending = yield* Effect.fork(qmp.execute("fake-status"))
        yield* within(Deferred.await(received))
        yield* qmp.close
        yield* qmp.close
        const closedError: QmpConnectionError = expectTag(
          yield* within(Effect.flip(Fiber.join(pending))),
          "QmpConnectionError"
        )
        expect(closedError.reason).toBe("Closed")
        expect(yield* qmp.closed).toBe(closedError)
        const later = yield* Effect.flip(qmp.execute("fake-status"))
        expect(later).toBe(closedError)
        expect(yield* qmp.isConnected).toBe(false)
        yield* within(Deferred.await(hungUp))
      }))
  })
})
