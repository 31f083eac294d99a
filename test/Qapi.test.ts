/**
 * Typed QAPI without QEMU: the generated tables, reply and event decoding,
 * the argument validator (on the committed introspection snapshot; the same
 * checks run against the live schema in Qapi.live.test.ts), and the guest
 * agent schema reader.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseQapiSource, toSchemaInfo } from "../scripts/qapi/qgaSource.js"
import { QmpArgumentError, QmpProtocolError } from "../src/Errors.js"
import * as Qga from "../src/generated/qga.js"
import { decodeEvent, decodeResult, makeEventDecoder } from "../src/internal/qapi/decode.js"
import { isSchemaInfoList } from "../src/internal/qapi/schemaInfo.js"
import * as Validate from "../src/internal/qapi/validate.js"
import * as Qapi from "../src/Qapi.js"

const snapshot = JSON.parse(
  fs.readFileSync(path.join(import.meta.dirname, "..", "src", "generated", "qmp-schema.json"), "utf8")
) as { version: { qemu: { major: number; minor: number; micro: number } }; schema: unknown }
const entries = isSchemaInfoList(snapshot.schema) ? snapshot.schema : []
const validator = Validate.make(entries)

describe("Qapi tables", () => {
  it("has every command and event of the snapshot, and its version", () => {
    const v = snapshot.version.qemu
    expect(Qapi.schemaVersion).toBe(`${v.major}.${v.minor}.${v.micro}`)
    const commands = entries.filter((e) => e["meta-type"] === "command").map((e) => e.name)
    const events = entries.filter((e) => e["meta-type"] === "event").map((e) => e.name)
    expect(Object.keys(Qapi.commands)).toEqual(commands)
    expect(Object.keys(Qapi.events)).toEqual(events)
    expect(Qapi.isCommandName("query-status")).toBe(true)
    expect(Qapi.isCommandName("toString")).toBe(false)
    expect(Qapi.isEventName("SHUTDOWN")).toBe(true)
  })

  it("carries allow-oob and features", () => {
    const oob = Object.entries(Qapi.commands).filter(([, c]) => c.allowOob).map(([n]) => n).sort()
    expect(oob).toEqual(["migrate-pause", "migrate-recover", "query-yank", "yank"])
    expect(Qapi.commands["x-query-irq"].features).toContain("unstable")
    expect(Qapi.commands["drive-backup"].features).toContain("deprecated")
    expect(Qapi.events.MEM_UNPLUG_ERROR.features).toContain("deprecated")
  })

  it("builds each Schema once, on first use", () => {
    expect(Qapi.commands["query-status"]).toBe(Qapi.commands["query-status"])
    expect(Qapi.commands["query-status"].result).toBe(Qapi.schema("StatusInfo"))
    expect(Qapi.commands["blockdev-add"].args).toBe(Qapi.schema("BlockdevOptions"))
  })

  it("decodes a recursive flat union (blockdev-add's BlockdevOptions)", () => {
    const decode = Schema.decodeUnknownEither(Qapi.schema("BlockdevOptions"))
    const nested = {
      driver: "qcow2",
      "node-name": "top",
      file: { driver: "file", filename: "/tmp/top.qcow2" },
      backing: { driver: "raw", file: { driver: "null-co", size: 4096 } }
    }
    expect(Either.isRight(decode(nested))).toBe(true)
    expect(Either.isLeft(decode({ ...nested, backing: { driver: "raw", file: { driver: "file" } } }))).toBe(true)
    expect(Either.isLeft(decode({ driver: "no-such-driver" }))).toBe(true)
  })
})

describe("decodeResult", () => {
  it("returns a matching reply as it came, extra members included", () => {
    const reply = { running: true, singlestep: false, status: "running", "from-a-newer-qemu": 1 }
    expect(decodeResult("query-status", reply)).toEqual(Either.right(reply))
    expect(Either.getOrThrow(decodeResult("query-status", reply))).toBe(reply)
  })

  it("passes replies to unknown commands through", () => {
    const reply = { anything: [1, 2] }
    expect(Either.getOrThrow(decodeResult("x-vendor-command", reply))).toBe(reply)
    expect(Either.getOrThrow(decodeResult("toString", reply))).toBe(reply)
  })

  it("fails with QmpProtocolError naming the path of the bad member", () => {
    const bad = decodeResult("query-status", { running: true, singlestep: false, status: "sleeping" })
    expect(Either.isLeft(bad)).toBe(true)
    const error = Either.flip(bad).pipe(Either.getOrThrow)
    expect(error).toBeInstanceOf(QmpProtocolError)
    expect(error.message).toContain("query-status")
    expect(error.message).toContain("return.status")
    expect(error.raw).toContain("sleeping")

    const cpus = [{ "cpu-index": 0, "qom-path": "/machine/unattached/device[0]", "thread-id": "12", target: "x86_64" }]
    const message = Either.flip(decodeResult("query-cpus-fast", cpus)).pipe(Either.getOrThrow).message
    expect(message).toContain("return[0].thread-id")
    expect(Either.flip(decodeResult("query-status", "no")).pipe(Either.getOrThrow).message).toContain("return")
  })

  it("fails with QmpProtocolError, not a stack overflow, on a reply nested 100k levels deep", () => {
    const deep = JSON.parse("[".repeat(100_000) + "]".repeat(100_000))
    const error = Either.flip(decodeResult("query-status", deep)).pipe(Either.getOrThrow)
    expect(error).toBeInstanceOf(QmpProtocolError)
    expect(error.message).toContain("too deeply nested")
    const warned = new Set<string>()
    expect(decodeEvent({ event: "BLOCK_JOB_READY", data: deep }, warned).typed).toBe(false)
    expect(warned.has("BLOCK_JOB_READY")).toBe(true)
  })
})

describe("decodeEvent", () => {
  const shutdown = (data: unknown) => ({ event: "SHUTDOWN", data, timestamp: { seconds: 1, microseconds: 2 } }) as {
    event: string
    data?: unknown
  }

  it("types an event whose data matches, and one without data", () => {
    const event = shutdown({ guest: true, reason: "guest-shutdown" })
    expect(decodeEvent(event, new Set())).toEqual({ event, typed: true, warning: undefined })
    const stop = { event: "STOP", timestamp: { seconds: 1, microseconds: 2 } }
    expect(decodeEvent(stop, new Set()).typed).toBe(true)
  })

  it("delivers an event that does not decode untyped, with one warning per event name", () => {
    const decode = makeEventDecoder()
    const first = decode(shutdown({ guest: "yes", reason: "guest-shutdown" }))
    expect(first.typed).toBe(false)
    expect(first.event.data).toEqual({ guest: "yes", reason: "guest-shutdown" })
    expect(first.warning).toContain("SHUTDOWN")
    expect(first.warning).toContain("data.guest")
    const second = decode(shutdown({ guest: true, reason: "a-reason-from-qemu-9" }))
    expect(second).toMatchObject({ typed: false, warning: undefined })
    expect(decode({ event: "RESET", data: { guest: 1, reason: "x" } }).warning).toContain("RESET")
    // another connection warns again
    expect(makeEventDecoder()(shutdown({ guest: 1 })).warning).toBeDefined()
  })

  it("leaves unknown events alone", () => {
    const event = { event: "X_VENDOR_EVENT", data: { a: 1 } }
    expect(decodeEvent(event, new Set())).toEqual({ event, typed: false, warning: undefined })
  })
})

describe("the validator (snapshot schema)", () => {
  const check = (command: string, args: unknown) => validator.validate(command, args)

  it("accepts well-formed arguments, including omitted ones for commands without required members", () => {
    expect(check("query-status", undefined)).toBeUndefined()
    expect(check("query-status", {})).toBeUndefined()
    expect(check("query-named-block-nodes", { flat: true })).toBeUndefined()
    expect(check("blockdev-add", { driver: "raw", "node-name": "r", file: { driver: "qcow2", file: "f" } }))
      .toBeUndefined()
    expect(check("device_add", { driver: "e1000e", id: "n", netdev: "x", "romfile": "" })).toBeUndefined()
    expect(check("qom-set", { path: "/machine", property: "p", value: { any: ["json"] } })).toBeUndefined()
  })

  it("reports the path and what is wrong", () => {
    const error = check("blockdev-add", { driver: "raw", "node-name": "r", file: { driver: "file", filename: 1 } })
    expect(error).toBeInstanceOf(QmpArgumentError)
    expect(error).toMatchObject({ command: "blockdev-add", path: "arguments.file.filename" })
    expect(error?.message).toBe("expected a string, got integer 1")
    expect(check("query-status", { verbose: true })).toMatchObject({ path: "arguments.verbose", message: "unknown member" })
    expect(check("no-such-command", {})).toMatchObject({ path: "execute" })
    expect(check("blockdev-add", undefined)).toMatchObject({ path: "arguments.driver", message: "missing required member" })
    expect(check("blockdev-add", [])).toMatchObject({ path: "arguments" })
    expect(check("object-add", { "qom-type": "no-such-type", id: "o" })?.message).toMatch(
      /^unknown union branch "no-such-type"; expected one of .*memory-backend-ram/
    )
    expect(check("migrate-set-capabilities", { capabilities: [{ capability: "warp", state: true }] })).toMatchObject({
      path: "arguments.capabilities[0].capability",
      message: expect.stringMatching(/^expected one of xbzrle, .*, got "warp"$/)
    })
  })

  it("tells int from number", () => {
    expect(check("block_resize", { "node-name": "n", size: 1.5 })).toMatchObject({ path: "arguments.size" })
    expect(check("block_resize", { "node-name": "n", size: 1 << 30 })).toBeUndefined()
    expect(check("migrate-set-parameters", { "throttle-trigger-threshold": 50 })).toBeUndefined()
    expect(check("migrate-set-parameters", { "cpu-throttle-initial": 1.5 })).toMatchObject({
      path: "arguments.cpu-throttle-initial"
    })
  })

  it("follows alternates by JSON type", () => {
    // BlockdevRef: an object (BlockdevOptions) or a string (a node name)
    expect(check("blockdev-add", { driver: "raw", "node-name": "r", file: true })).toMatchObject({
      path: "arguments.file",
      message: "expected one of object | str, got boolean true"
    })
    // StrOrNull: a string or null
    expect(check("blockdev-add", { driver: "qcow2", "node-name": "q", file: "f", backing: null })).toBeUndefined()
    expect(check("blockdev-add", { driver: "qcow2", "node-name": "q", file: "f", backing: 3 })).toMatchObject({
      path: "arguments.backing"
    })
  })
})

describe("the guest agent schema", () => {
  it("reads QAPI source: single quotes, comments, optional members, conditions, unions", () => {
    const exprs = parseQapiSource(`
# a comment with 'quotes' and { braces }
{ 'enum': 'Kind', 'data': [ 'a', { 'name': 'b', 'if': 'CONFIG_WIN32' } ] }
{ 'struct': 'Base', 'data': { 'kind': 'Kind' } }
{ 'struct': 'A', 'data': { 'x': 'int', '*y': ['str'] } }
{ 'union': 'U', 'base': 'Base', 'discriminator': 'kind', 'data': { 'a': 'A' } }
{ 'command': 'do-it', 'data': { 'u': 'U', '*n': 'uint64' }, 'returns': [ 'A' ], 'success-response': false }
{ 'command': 'windows-only', 'if': 'CONFIG_WIN32' }
`)
    expect(exprs).toHaveLength(6)
    const { entries: converted, noSuccessResponse, realNames } = toSchemaInfo(exprs, new Set(["CONFIG_POSIX"]))
    const byName = new Map(converted.map((e) => [e.name, e]))
    expect(byName.has("windows-only")).toBe(false)
    expect(byName.get("Kind")).toMatchObject({ "meta-type": "enum", values: ["a"] })
    expect(byName.get("U")).toMatchObject({ tag: "kind", variants: [{ case: "a", type: "A" }] })
    expect(byName.get("do-it")).toMatchObject({ "arg-type": "q_obj_do-it-arg", "ret-type": "[A]" })
    expect(byName.get("q_obj_do-it-arg")).toMatchObject({
      members: [{ name: "u", type: "U" }, { name: "n", type: "int", default: null }]
    })
    expect([...noSuccessResponse]).toEqual(["do-it"])
    expect(realNames.has("q_obj_do-it-arg")).toBe(false)
  })

  it("generates the agent's commands with the same shape as Qapi's", () => {
    expect(Qga.commands["guest-shutdown"].successResponse).toBe(false)
    expect(Qga.commands["guest-ping"].successResponse).toBe(true)
    expect(Schema.decodeUnknownSync(Qga.commands["guest-sync-delimited"].args)({ id: 7 })).toEqual({ id: 7 })
    expect(Schema.decodeUnknownSync(Qga.commands["guest-sync-delimited"].result)(7)).toBe(7)
    const info = { version: "7.2.0", supported_commands: [{ name: "guest-ping", enabled: true, "success-response": true }] }
    expect(Schema.is(Qga.commands["guest-info"].result)(info)).toBe(true)
    expect(Schema.is(Qga.commands["guest-exec-status"].result)({ exited: true, exitcode: 0, "out-data": "aGk=" })).toBe(
      true
    )
  })
})
