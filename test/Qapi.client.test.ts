/**
 * The typed QAPI layer inside the client, against a counting fake server:
 * `validateArgs` refuses bad arguments before anything is sent, typed replies
 * that do not match their Schema fail with the path, typed events are checked
 * against the greeting version's schema (strictly for one of `Qapi.versions`,
 * leniently, with one warning per name, for any other).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Logger } from "effect"
import * as Qapi from "../src/Qapi.js"
import * as QmpClient from "../src/QmpClient.js"
import { fakeServer, schemaAnswering } from "./helpers/fakeQmp.js"

// Each: a command, arguments QEMU 7.2 would refuse, and the path the error must name.
const bad: ReadonlyArray<readonly [string, Record<string, unknown>, string]> = [
  ["blockdev-add", {}, "arguments.driver"],
  ["blockdev-add", { driver: "no-such-driver", "node-name": "n" }, "arguments.driver"],
  ["blockdev-add", { driver: "file", "node-name": "n" }, "arguments.filename"],
  ["blockdev-add", { driver: "file", "node-name": "n", filename: 5 }, "arguments.filename"],
  ["blockdev-add", { driver: "file", "node-name": "n", filename: "/x", bogus: true }, "arguments.bogus"],
  ["blockdev-add", { driver: "null-co", "node-name": "n", size: "1M" }, "arguments.size"],
  ["blockdev-add", { driver: "null-co", "node-name": "n", size: 1.5 }, "arguments.size"],
  ["blockdev-add", { driver: "qcow2", "node-name": "n", file: 7 }, "arguments.file"],
  ["blockdev-add", { driver: "qcow2", "node-name": "n", file: { driver: "file" } }, "arguments.file.filename"],
  ["blockdev-add", { driver: "raw", "node-name": 3, file: "f" }, "arguments.node-name"],
  ["blockdev-add", { driver: "file", filename: "/x", "read-only": "yes" }, "arguments.read-only"],
  ["blockdev-add", { driver: "file", filename: "/x", cache: { direct: 1 } }, "arguments.cache.direct"],
  ["migrate-set-capabilities", {}, "arguments.capabilities"],
  ["migrate-set-capabilities", { capabilities: {} }, "arguments.capabilities"],
  ["migrate-set-capabilities", { capabilities: [{ capability: "no-such", state: true }] }, "arguments.capabilities[0].capability"],
  ["migrate-set-capabilities", { capabilities: [{ capability: "xbzrle" }] }, "arguments.capabilities[0].state"],
  ["migrate-set-capabilities", { capabilities: [{ capability: "xbzrle", state: "on" }] }, "arguments.capabilities[0].state"],
  ["object-add", { id: "o" }, "arguments.qom-type"],
  ["object-add", { "qom-type": "no-such-type", id: "o" }, "arguments.qom-type"],
  ["object-add", { "qom-type": "secret", id: "o", format: "hex" }, "arguments.format"],
  ["object-add", { "qom-type": "memory-backend-ram", id: "m", size: "1G" }, "arguments.size"],
  ["object-add", { "qom-type": "secret" }, "arguments.id"],
  ["device_add", {}, "arguments.driver"],
  ["device_add", { driver: 5 }, "arguments.driver"],
  ["device_add", { driver: "virtio-net-pci", id: [] }, "arguments.id"],
  ["no-such-command", {}, "execute"]
]

const good: ReadonlyArray<readonly [string, Record<string, unknown>]> = [
  ["blockdev-add", { driver: "null-co", "node-name": "n0", size: 1048576 }],
  ["blockdev-add", { driver: "qcow2", "node-name": "q", file: { driver: "file", filename: "/tmp/x.qcow2" } }],
  ["migrate-set-capabilities", { capabilities: [{ capability: "xbzrle", state: true }] }],
  ["object-add", { "qom-type": "secret", id: "s", data: "c2VjcmV0", format: "base64" }],
  ["device_add", { driver: "virtio-net-pci", id: "net0", "any-property": "passes" }]
]

describe("typed QAPI in the client (fake server)", () => {
  it.scopedLive("validateArgs refuses 20+ bad argument shapes with the path, and none of them reaches the server", () =>
    Effect.gen(function*() {
      const received: Array<string> = []
      const server = yield* fakeServer(schemaAnswering(received))
      const qmp = yield* QmpClient.connect({ address: server.path, validateArgs: true })
      for (const [command, args, path] of bad) {
        const error = yield* Effect.flip(qmp.execute(command as string, args))
        expect(error._tag, `${command} ${JSON.stringify(args)}`).toBe("QmpArgumentError")
        if (error._tag !== "QmpArgumentError") continue
        expect(error.command).toBe(command)
        expect(error.path, `${command} ${JSON.stringify(args)}: ${error.message}`).toBe(path)
      }
      // Only the schema was fetched (once): no bad command was sent.
      expect(received).toEqual(["query-qmp-schema"])
      for (const [command, args] of good) yield* qmp.execute(command as string, args)
      expect(received).toEqual(["query-qmp-schema", ...good.map(([c]) => c)])
    }))

  it.scopedLive("without validateArgs the same bad arguments are sent, and QEMU is left to judge them", () =>
    Effect.gen(function*() {
      const received: Array<string> = []
      const server = yield* fakeServer(schemaAnswering(received))
      const qmp = yield* QmpClient.connect({ address: server.path })
      yield* qmp.execute("blockdev-add" as string, { driver: "no-such-driver" })
      expect(received).toEqual(["blockdev-add"])
    }))

  it.scopedLive("a typed reply that does not match its Schema fails with QmpProtocolError naming the path", () =>
    Effect.gen(function*() {
      const server = yield* fakeServer((conn) =>
        Effect.gen(function*() {
          yield* conn.negotiate()
          const command = yield* conn.nextCommand
          yield* conn.reply(command.id, { status: 5, running: true, singlestep: false })
          yield* conn.closed
        }).pipe(Effect.ignore)
      )
      const qmp = yield* QmpClient.connect({ address: server.path })
      const error = yield* Effect.flip(qmp.execute("query-status"))
      expect(error._tag).toBe("QmpProtocolError")
      expect(error.message).toContain("query-status")
      expect(error.message).toContain(".status")
    }))

  /** A server greeting as `version`, that answers one command and then sends two SHUTDOWNs with a string `guest`. */
  const twoBadShutdowns = (greeting: string) =>
    fakeServer((conn) =>
      Effect.gen(function*() {
        yield* conn.negotiate(greeting)
        const trigger = yield* conn.nextCommand
        yield* conn.reply(trigger.id, {})
        yield* conn.event("SHUTDOWN", { guest: "yes", reason: "host-qmp-quit" })
        yield* conn.event("SHUTDOWN", { guest: "no", reason: "host-qmp-quit" })
        yield* conn.closed
      }).pipe(Effect.ignore)
    )

  const greetingOf = (major: number, minor: number, micro: number) =>
    JSON.stringify({ QMP: { version: { qemu: { major, minor, micro }, package: "" }, capabilities: [] } })

  it.scopedLive("from a QEMU of one of Qapi.versions, an event its own schema forbids fails the typed waiter with the path", () =>
    Effect.gen(function*() {
      const server = yield* twoBadShutdowns(greetingOf(10, 0, 2))
      const qmp = yield* QmpClient.connect({ address: server.path })
      const waiting = yield* Effect.fork(qmp.eventsWait([["SHUTDOWN"]], { timeout: "5 seconds" }))
      yield* Effect.yieldNow()
      yield* qmp.executeRaw("trigger")
      const error = yield* Effect.flip(Fiber.join(waiting))
      expect(error).toMatchObject({ _tag: "QmpProtocolError", path: "data.guest" })
      expect(error.message).toContain("event SHUTDOWN does not match QEMU 10.0.13's schema")
      // the event stream itself is untyped: it is not checked there
    }))

  it.scopedLive("from a newer QEMU, an event that does not match is delivered, marked unchecked, one warning per event name", () =>
    Effect.gen(function*() {
      const warnings: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Warning") warnings.push(String(message))
      })
      const server = yield* twoBadShutdowns(greetingOf(12, 0, 0))
      const program = Effect.gen(function*() {
        const qmp = yield* QmpClient.connect({ address: server.path })
        const waiting = yield* Effect.fork(Effect.all([
          qmp.eventsWait([["SHUTDOWN"]], { timeout: "5 seconds" }),
          qmp.eventsWait([["SHUTDOWN"]], { timeout: "5 seconds" })
        ]))
        yield* Effect.yieldNow()
        yield* qmp.executeRaw("trigger")
        const [first, second] = yield* Fiber.join(waiting)
        expect(first.data).toEqual({ guest: "yes", reason: "host-qmp-quit" })
        expect(second.data).toEqual({ guest: "no", reason: "host-qmp-quit" })
        expect(Qapi.isUnchecked(first)).toBe(true)
        expect(Qapi.isUnchecked(second)).toBe(true)
        yield* Effect.sleep("20 millis")
      })
      yield* program.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      const about = warnings.filter((w) => w.includes("SHUTDOWN"))
      expect(about.length).toBe(1)
      expect(about[0]).toContain("from QEMU 12.0.0")
      expect(about[0]).toContain("data.guest")
    }))
})
