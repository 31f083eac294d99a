/**
 * Typed QAPI without QEMU: the generated tables, reply and event decoding,
 * the argument validator (on the committed introspection snapshot; the same
 * checks run against the live schema in Qapi.live.test.ts), and the guest
 * agent schema reader.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Schema } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseQapiSource, toSchemaInfo } from "../scripts/qapi/qgaSource.js"
import { QmpArgumentError, QmpProtocolError } from "../src/Errors.js"
import * as Qga from "../src/generated/qga.js"
import { forVersion } from "../src/internal/qapi/decode.js"
import { isSchemaInfoList } from "../src/internal/qapi/schemaInfo.js"
import * as Validate from "../src/internal/qapi/validate.js"
import * as Qapi from "../src/Qapi.js"

type Snapshot = { version: { qemu: { major: number; minor: number; micro: number } }; schema: unknown }
const readSnapshot = (version: string): Snapshot =>
  JSON.parse(
    fs.readFileSync(path.join(import.meta.dirname, "..", "src", "generated", `qmp-schema-${version}.json`), "utf8")
  ) as Snapshot
const snapshots = ["7.2", "10.0", "11.1"].map(readSnapshot)
const snapshot = snapshots[0]!
const entries = isSchemaInfoList(snapshot.schema) ? snapshot.schema : []
const entriesOf = (s: Snapshot) => (isSchemaInfoList(s.schema) ? s.schema : [])
const validator = Validate.make(entries)
const versionOf = (s: Snapshot) => `${s.version.qemu.major}.${s.version.qemu.minor}.${s.version.qemu.micro}`

/** A connection's checks for a QEMU of this version (warnings collected). */
const decodersFor = (version: string, warnings: Array<string> = []) => {
  const [major, minor, micro] = version.split(".").map(Number)
  return Effect.runPromise(forVersion({ major: major!, minor: minor!, micro: micro! }, (m) => warnings.push(m)))
}

describe("Qapi tables", () => {
  it("has every command and event of every version's snapshot, and the versions", () => {
    expect(Qapi.versions).toEqual(snapshots.map(versionOf))
    expect(Qapi.schemaVersion).toBe(versionOf(snapshots[2]!))
    const names = (kind: string) =>
      new Set(snapshots.flatMap((s) => entriesOf(s).filter((e) => e["meta-type"] === kind).map((e) => e.name)))
    expect(new Set(Object.keys(Qapi.commands))).toEqual(names("command"))
    expect(new Set(Object.keys(Qapi.events))).toEqual(names("event"))
    expect(Qapi.isCommandName("query-status")).toBe(true)
    expect(Qapi.isCommandName("toString")).toBe(false)
    expect(Qapi.isEventName("SHUTDOWN")).toBe(true)
  })

  it("carries allow-oob (from any version) and features", () => {
    const oob = Object.entries(Qapi.commands).filter(([, c]) => c.allowOob).map(([n]) => n).sort()
    const expected = new Set(
      snapshots.flatMap((s) => entriesOf(s).filter((e) => e["meta-type"] === "command" && e["allow-oob"]).map((e) => e.name))
    )
    expect(oob).toEqual([...expected].sort())
    expect(oob).toContain("migrate-pause")
    expect(Qapi.commands["x-query-irq"].features).toContain("unstable")
    expect(Qapi.commands["drive-backup"].features).toContain("deprecated")
  })

  it("builds each Schema once, on first use", () => {
    expect(Qapi.commands["query-status"]).toBe(Qapi.commands["query-status"])
    expect(Qapi.commands["query-status"].result).toBe(Qapi.schema("StatusInfo"))
    expect(Qapi.commands["blockdev-add"].args).toBe(Qapi.schema("BlockdevOptions"))
  })

  it("merges the versions: a member some lack is optional, enums are the union", () => {
    const status = Schema.is(Qapi.schema("StatusInfo"))
    expect(status({ running: true, status: "running" })).toBe(true) // 10.0+: no singlestep
    expect(status({ running: true, singlestep: false, status: "running" })).toBe(true) // 7.2
    expect(status({ running: true })).toBe(false)
  })

  it("takes integers above 2^53 (uint64 values QEMU sends), refuses fractions", () => {
    const balloon = Schema.is(Qapi.commands["query-balloon"].result)
    expect(balloon({ actual: 2 ** 64 })).toBe(true)
    expect(balloon({ actual: 18446744073709551615 })).toBe(true)
    expect(balloon({ actual: 1.5 })).toBe(false)
    expect(Schema.is(Qga.commands["guest-get-time"].result)(1_796_220_108_453_195_000)).toBe(true)
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

describe("replies, checked against the connected QEMU's own schema", () => {
  it("returns a matching reply as it came, extra members included", async () => {
    const d = await decodersFor("7.2.22")
    expect(d).toMatchObject({ version: "7.2.22", known: true })
    const reply = { running: true, singlestep: false, status: "running", "from-a-newer-qemu": 1 }
    expect(Either.getOrThrow(d.result("query-status", reply))).toBe(reply)
  })

  it("passes replies to unknown commands through", async () => {
    const d = await decodersFor("7.2.22")
    const reply = { anything: [1, 2] }
    expect(Either.getOrThrow(d.result("x-vendor-command", reply))).toBe(reply)
    expect(Either.getOrThrow(d.result("toString", reply))).toBe(reply)
  })

  it("is each version's own: 7.2 requires query-status's singlestep, 10.0 and 11.1 do not have it", async () => {
    const modern = { running: true, status: "running" }
    const old = await decodersFor("7.2.0")
    const error = Either.flip(old.result("query-status", modern)).pipe(Either.getOrThrow)
    expect(error).toBeInstanceOf(QmpProtocolError)
    expect(error.path).toBe("return.singlestep")
    expect(error.message).toBe("reply to query-status does not match QEMU 7.2.22's schema at return.singlestep: is missing")
    for (const version of ["10.0.2", "11.1.3"]) {
      const d = await decodersFor(version)
      expect(d.known).toBe(true)
      expect(Either.getOrThrow(d.result("query-status", modern))).toBe(modern)
      // a known version that sends what its own schema forbids is still an error
      expect(Either.isLeft(d.result("query-status", { running: "yes", status: "running" }))).toBe(true)
    }
  })

  it("fails with QmpProtocolError naming the path of the bad member", async () => {
    const d = await decodersFor("7.2.22")
    const bad = d.result("query-status", { running: true, singlestep: false, status: "sleeping" })
    const error = Either.flip(bad).pipe(Either.getOrThrow)
    expect(error).toBeInstanceOf(QmpProtocolError)
    expect(error.path).toBe("return.status")
    expect(error.message).toContain("query-status")
    expect(error.raw).toContain("sleeping")

    const cpus = [{ "cpu-index": 0, "qom-path": "/machine/unattached/device[0]", "thread-id": "12", target: "x86_64" }]
    expect(Either.flip(d.result("query-cpus-fast", cpus)).pipe(Either.getOrThrow).path).toBe("return[0].thread-id")
    expect(Either.flip(d.result("query-status", "no")).pipe(Either.getOrThrow).path).toBe("return")
  })

  it("fails with QmpProtocolError, not a stack overflow, on a reply nested 100k levels deep", async () => {
    const deep = JSON.parse("[".repeat(100_000) + "]".repeat(100_000))
    const d = await decodersFor("7.2.22")
    const error = Either.flip(d.result("query-status", deep)).pipe(Either.getOrThrow)
    expect(error).toBeInstanceOf(QmpProtocolError)
    expect(error.message).toContain("too deeply nested")
    expect(Either.isLeft(d.event({ event: "BLOCK_JOB_READY", data: deep }))).toBe(true)
    const warnings: Array<string> = []
    const newer = await decodersFor("12.0.0", warnings)
    expect(Either.isRight(newer.event({ event: "BLOCK_JOB_READY", data: deep }))).toBe(true)
    expect(warnings).toHaveLength(1)
  })

  // A bare array fails an object Schema at once; only a recursive type (ImageInfo's
  // backing-image) followed 100k levels down makes the check itself overflow the stack,
  // and that must count as a mismatch, not as a match.
  it("fails with QmpProtocolError on a reply whose recursive member is nested 100k levels deep inside objects", async () => {
    const image = (depth: number) => {
      let info: Record<string, unknown> = { filename: "base.qcow2", format: "qcow2", "virtual-size": 1 }
      for (let i = 0; i < depth; i++) info = { filename: `o${i}.qcow2`, format: "qcow2", "virtual-size": 1, "backing-image": info }
      return info
    }
    const node = (depth: number) => [{
      file: "top.qcow2",
      ro: false,
      drv: "qcow2",
      backing_file_depth: depth,
      encrypted: false,
      detect_zeroes: "off",
      bps: 0,
      bps_rd: 0,
      bps_wr: 0,
      iops: 0,
      iops_rd: 0,
      iops_wr: 0,
      image: image(depth),
      cache: { writeback: true, direct: false, "no-flush": false },
      write_threshold: 0
    }]
    const d = await decodersFor("7.2.22")
    const shallow = node(3)
    expect(Either.getOrThrow(d.result("query-named-block-nodes", shallow))).toBe(shallow)
    const error = Either.flip(d.result("query-named-block-nodes", node(100_000))).pipe(Either.getOrThrow)
    expect(error).toBeInstanceOf(QmpProtocolError)
    expect(error.message).toContain("query-named-block-nodes")
  })

  it("on a QEMU newer than the types: checks against the merged types, delivers a mismatch with one warning per name", async () => {
    const warnings: Array<string> = []
    const d = await decodersFor("12.0.1", warnings)
    expect(d).toMatchObject({ version: "12.0.1", known: false })
    const fine = { running: true, status: "running" }
    expect(Either.getOrThrow(d.result("query-status", fine))).toBe(fine)
    expect(Qapi.isUnchecked(fine)).toBe(false)
    const odd = { running: true, status: "hibernating-on-the-moon" }
    expect(Either.getOrThrow(d.result("query-status", odd))).toBe(odd)
    expect(Qapi.isUnchecked(odd)).toBe(true)
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toContain("reply to query-status from QEMU 12.0.1 does not match the types of QEMU 7.2.22")
    expect(warnings[0]).toContain("return.status")
    d.result("query-status", { running: 1 })
    expect(warnings).toHaveLength(1)
    // another connection warns again
    const again: Array<string> = []
    ;(await decodersFor("12.0.1", again)).result("query-status", { running: 1 })
    expect(again).toHaveLength(1)
  })

  it("older versions than the types (Ubuntu's 8.2) are checked leniently too", async () => {
    const d = await decodersFor("8.2.2")
    expect(d.known).toBe(false)
  })
})

describe("events, checked against the connected QEMU's own schema", () => {
  const shutdown = (data: unknown) => ({ event: "SHUTDOWN", data, timestamp: { seconds: 1, microseconds: 2 } }) as {
    event: string
    data?: unknown
  }

  it("passes an event whose data matches, and one without data", async () => {
    const d = await decodersFor("10.0.13")
    const event = shutdown({ guest: true, reason: "guest-shutdown" })
    expect(Either.getOrThrow(d.event(event))).toBe(event)
    const stop = { event: "STOP", timestamp: { seconds: 1, microseconds: 2 } }
    expect(Either.isRight(d.event(stop))).toBe(true)
  })

  it("a known version's event that does not match is a QmpProtocolError with its path", async () => {
    const d = await decodersFor("7.2.22")
    const error = Either.flip(d.event(shutdown({ guest: "yes", reason: "guest-shutdown" }))).pipe(Either.getOrThrow)
    expect(error.path).toBe("data.guest")
    expect(error.message).toContain("event SHUTDOWN does not match QEMU 7.2.22's schema")
  })

  it("an unknown version's event that does not match is delivered, marked unchecked, warned once per name", async () => {
    const warnings: Array<string> = []
    const d = await decodersFor("13.1.0", warnings)
    const first = shutdown({ guest: "yes", reason: "guest-shutdown" })
    expect(Either.getOrThrow(d.event(first))).toBe(first)
    expect(Qapi.isUnchecked(first)).toBe(true)
    expect(warnings[0]).toContain("data.guest")
    d.event(shutdown({ guest: true, reason: "a-reason-from-qemu-13" }))
    expect(warnings).toHaveLength(1)
    d.event({ event: "RESET", data: { guest: 1, reason: "x" } })
    expect(warnings).toHaveLength(2)
    expect(warnings[1]).toContain("RESET")
  })

  it("leaves unknown events alone", async () => {
    const d = await decodersFor("7.2.22")
    const event = { event: "X_VENDOR_EVENT", data: { a: 1 } }
    expect(Either.getOrThrow(d.event(event))).toBe(event)
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
