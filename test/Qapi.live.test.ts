/**
 * Typed QAPI against a real QEMU: the booted test guest (q35, TCG) answers
 * every query-* command that takes no arguments, and every reply decodes with
 * the generated Schemas; the events it produces decode too; and the validator
 * built from its live `query-qmp-schema` rejects bad argument shapes with the
 * right path (QEMU rejects the same shapes) and passes good ones (QEMU
 * accepts them).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Option, Schema } from "effect"
import { QmpCommandError } from "../src/Errors.js"
import * as Generated from "../src/generated/qmp.js"
import { forVersion } from "../src/internal/qapi/decode.js"
import { isSchemaInfoList } from "../src/internal/qapi/schemaInfo.js"
import * as Validate from "../src/internal/qapi/validate.js"
import * as Qapi from "../src/Qapi.js"
import { guestTemplate } from "./support/clones.js"

const snapshot = Generated.commands // touch the table: the names below must be generated ones
const noArgQueries = Object.keys(snapshot).filter((name) =>
  name.startsWith("query-") || name.startsWith("x-query-")
)

interface Shape {
  readonly command: string
  readonly args: Record<string, unknown>
  /** The path the validator must report. */
  readonly path: string
}

const bad: ReadonlyArray<Shape> = [
  // blockdev-add: a flat union on `driver`, nested BlockdevRef alternates
  { command: "blockdev-add", args: { "node-name": "n1" }, path: "arguments.driver" },
  { command: "blockdev-add", args: { driver: "no-such-driver", "node-name": "n1" }, path: "arguments.driver" },
  { command: "blockdev-add", args: { driver: 3, "node-name": "n1" }, path: "arguments.driver" },
  { command: "blockdev-add", args: { driver: "null-co", "node-name": 5 }, path: "arguments.node-name" },
  { command: "blockdev-add", args: { driver: "null-co", "node-name": "n1", size: 1.5 }, path: "arguments.size" },
  { command: "blockdev-add", args: { driver: "null-co", "node-name": "n1", sise: 1024 }, path: "arguments.sise" },
  { command: "blockdev-add", args: { driver: "null-co", "node-name": "n1", filename: "/x" }, path: "arguments.filename" },
  { command: "blockdev-add", args: { driver: "file", "node-name": "n1" }, path: "arguments.filename" },
  {
    command: "blockdev-add",
    args: { driver: "raw", "node-name": "n1", file: { driver: "file" } },
    path: "arguments.file.filename"
  },
  {
    command: "blockdev-add",
    args: { driver: "raw", "node-name": "n1", file: { driver: "nope", filename: "/x" } },
    path: "arguments.file.driver"
  },
  { command: "blockdev-add", args: { driver: "raw", "node-name": "n1", file: 42 }, path: "arguments.file" },
  {
    command: "blockdev-add",
    args: { driver: "null-co", "node-name": "n1", cache: { direct: "yes" } },
    path: "arguments.cache.direct"
  },
  {
    command: "blockdev-add",
    args: { driver: "null-co", "node-name": "n1", "detect-zeroes": "sometimes" },
    path: "arguments.detect-zeroes"
  },
  // migrate-set-capabilities: an array of structs with an enum
  { command: "migrate-set-capabilities", args: {}, path: "arguments.capabilities" },
  { command: "migrate-set-capabilities", args: { capabilities: "xbzrle" }, path: "arguments.capabilities" },
  {
    command: "migrate-set-capabilities",
    args: { capabilities: [{ capability: "xbzrle", state: true }, { capability: "warp-drive", state: true }] },
    path: "arguments.capabilities[1].capability"
  },
  {
    command: "migrate-set-capabilities",
    args: { capabilities: [{ capability: "xbzrle", state: 1 }] },
    path: "arguments.capabilities[0].state"
  },
  {
    command: "migrate-set-capabilities",
    args: { capabilities: [{ capability: "xbzrle" }] },
    path: "arguments.capabilities[0].state"
  },
  {
    command: "migrate-set-capabilities",
    args: { capabilities: [{ capability: "xbzrle", state: true, extra: 1 }] },
    path: "arguments.capabilities[0].extra"
  },
  // object-add: a flat union on `qom-type`
  { command: "object-add", args: { id: "o1" }, path: "arguments.qom-type" },
  { command: "object-add", args: { "qom-type": "no-such-object", id: "o1" }, path: "arguments.qom-type" },
  { command: "object-add", args: { "qom-type": "memory-backend-ram", id: "o1" }, path: "arguments.size" },
  {
    command: "object-add",
    args: { "qom-type": "memory-backend-ram", id: "o1", size: "1M" },
    path: "arguments.size"
  },
  {
    command: "object-add",
    args: { "qom-type": "memory-backend-ram", id: "o1", size: 1048576, policy: "everywhere" },
    path: "arguments.policy"
  },
  { command: "object-add", args: { "qom-type": "iothread", id: "o1", "poll-max-ns": "1" }, path: "arguments.poll-max-ns" },
  { command: "object-add", args: { "qom-type": "iothread" }, path: "arguments.id" },
  // device_add: driver/bus/id are checked, device properties are QEMU's business
  { command: "device_add", args: { id: "d1" }, path: "arguments.driver" },
  { command: "device_add", args: { driver: 7 }, path: "arguments.driver" },
  { command: "device_add", args: { driver: "virtio-rng-pci", id: false }, path: "arguments.id" },
  { command: "device_add", args: { driver: "virtio-rng-pci", bus: ["pcie.0"] }, path: "arguments.bus" }
]

const good: ReadonlyArray<{ readonly command: string; readonly args: Record<string, unknown>; readonly send: boolean }> = [
  { command: "blockdev-add", args: { driver: "null-co", "node-name": "good1", size: 1048576 }, send: true },
  {
    command: "blockdev-add",
    args: { driver: "raw", "node-name": "good2", file: "good1", "read-only": true, cache: { "no-flush": true } },
    send: true
  },
  {
    command: "migrate-set-capabilities",
    args: { capabilities: [{ capability: "xbzrle", state: true }, { capability: "events", state: false }] },
    send: true
  },
  { command: "object-add", args: { "qom-type": "memory-backend-ram", id: "good3", size: 1048576 }, send: true },
  { command: "object-add", args: { "qom-type": "iothread", id: "good4", "poll-max-ns": 1000 }, send: true },
  // extra device properties are allowed; not sent (q35's root bus takes no hotplug)
  { command: "device_add", args: { driver: "virtio-rng-pci", id: "good5", "max-bytes": 1024 }, send: false },
  { command: "query-status", args: {}, send: true }
]

describe("typed QAPI on a booted guest (q35, TCG)", { timeout: 180_000 }, () => {
  it.scopedLive("every no-argument query-* reply, and every event, decodes; the live validator agrees with QEMU", () =>
    Effect.gen(function*() {
      // A clone: the machine is what matters here, not its boot.
      const guest = yield* Effect.flatMap(guestTemplate(), (tpl) => tpl.clone())
      const vm = guest.vm
      // untyped calls on purpose (names as plain strings): this test checks the decoders themselves
      const call = (name: string, args?: Record<string, unknown>) => vm.command(name, args)
      // the checks of this connection: the QEMU on PATH is one of the versions we generated from
      const client = Option.getOrThrow(vm.qmpClient)
      const warnings: Array<string> = []
      const own = yield* forVersion(client.greeting.QMP.version.qemu, (m) => warnings.push(m))
      expect(own.known, `QEMU ${own.version} is not one of ${Qapi.versions.join(", ")}`).toBe(true)
      const merged = (name: string) => Schema.is(Qapi.commands[name as Qapi.CommandName].result as Schema.Schema<unknown>)

      // -- query-* without arguments
      const live = yield* call("query-qmp-schema")
      expect(isSchemaInfoList(live)).toBe(true)
      const entries = isSchemaInfoList(live) ? live : []
      const argsOf = new Map(entries.filter((e) => e["meta-type"] === "command").map((e) => [e.name, e]))
      const emptyArgs = new Set(
        entries.filter((e) => e["meta-type"] === "object" && e.members.length === 0 && !e.variants).map((e) => e.name)
      )
      const queries = noArgQueries.filter((name) => {
        const c = argsOf.get(name)
        return c !== undefined && c["meta-type"] === "command" && emptyArgs.has(c["arg-type"])
      })
      expect(queries.length).toBeGreaterThan(60)
      const answered: Array<string> = []
      const refused: Array<string> = []
      for (const name of queries) {
        const reply = yield* call(name).pipe(Effect.either)
        if (Either.isLeft(reply)) {
          // some queries need hardware this machine lacks (SEV, SGX, ...): QEMU says so
          expect(reply.left).toBeInstanceOf(QmpCommandError)
          refused.push(name)
          continue
        }
        const decoded = own.result(name, reply.right)
        if (Either.isLeft(decoded)) expect.fail(`${name}: ${decoded.left.message}`)
        expect(Either.getOrThrow(decoded)).toBe(reply.right)
        // and the types merged across the versions accept it too
        expect(merged(name)(reply.right), `${name} against the merged types`).toBe(true)
        answered.push(name)
      }
      expect(answered).toContain("query-status")
      expect(answered).toContain("query-qmp-schema")
      expect(answered).toContain("query-cpus-fast")
      expect(answered.length).toBeGreaterThan(50)
      expect(refused.length).toBeLessThan(answered.length)

      // -- the validator from the live schema
      const validator = Validate.make(entries)
      for (const shape of bad) {
        const error = validator.validate(shape.command, shape.args)
        expect(error, `${shape.command} ${JSON.stringify(shape.args)}`).toBeDefined()
        expect({ path: error?.path, command: error?.command }, error?.message).toEqual({
          path: shape.path,
          command: shape.command
        })
        // QEMU refuses the same shape
        const sent = yield* call(shape.command, shape.args).pipe(Effect.either)
        expect(Either.isLeft(sent) && sent.left instanceof QmpCommandError, `QEMU took ${JSON.stringify(shape.args)}`)
          .toBe(true)
      }
      for (const shape of good) {
        expect(validator.validate(shape.command, shape.args)?.message).toBeUndefined()
        if (shape.send) yield* call(shape.command, shape.args)
      }
      // the generated argument Schemas agree with the live schema on every shape
      const argsIs = (command: string) =>
        Schema.is(Qapi.commands[command as Qapi.CommandName].args as Schema.Schema<unknown>, {
          onExcessProperty: "error"
        })
      for (const shape of bad) expect(argsIs(shape.command)(shape.args), JSON.stringify(shape.args)).toBe(false)
      for (const shape of good) expect(argsIs(shape.command)(shape.args), JSON.stringify(shape.args)).toBe(true)
      expect(validator.validate("no-such-command", {})?.path).toBe("execute")
      expect(validator.supports("query-status")).toBe(true)
      expect(validator.supports("no-such-command")).toBe(false)

      // -- events: a block job (JOB_STATUS_CHANGE, BLOCK_JOB_READY, BLOCK_JOB_COMPLETED),
      // STOP/RESUME, then a guest power-off (POWERDOWN, SHUTDOWN)
      yield* call("blockdev-add", { driver: "null-co", "node-name": "target", size: 1048576 })
      yield* call("blockdev-mirror", { "job-id": "mirror0", device: "good2", target: "target", sync: "full" })
      yield* vm.eventWait("BLOCK_JOB_READY", { timeout: "60 seconds" })
      yield* call("block-job-complete", { device: "mirror0" })
      const completed = yield* vm.eventWait("BLOCK_JOB_COMPLETED", { timeout: "60 seconds" })
      yield* call("stop")
      yield* call("cont")
      yield* call("system_powerdown")
      const shutdown = yield* vm.eventWait("SHUTDOWN", { timeout: "60 seconds" })
      yield* vm.wait({ timeout: "60 seconds" })
      const events = [...(yield* vm.getQmpEvents()), completed, shutdown]
      const names = new Set(events.map((e) => e.event))
      for (const name of ["JOB_STATUS_CHANGE", "BLOCK_JOB_COMPLETED", "STOP", "RESUME", "POWERDOWN", "SHUTDOWN"]) {
        expect(names).toContain(name)
      }
      for (const event of events) {
        expect(Either.isRight(own.event(event)), event.event).toBe(true)
        if (Qapi.isEventName(event.event)) {
          expect(Schema.is(Qapi.events[event.event].data as Schema.Schema<unknown>)(event.data), event.event).toBe(true)
        }
      }
      expect(warnings).toEqual([])
    }))
})
