import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Address from "../src/cli/address.js"
import * as Catalog from "../src/cli/catalog.js"
import * as Schema from "../src/cli/schema.js"
import { root } from "./helpers/cli.js"

// The introspection snapshot qapi:gen keeps: QEMU's real query-qmp-schema reply.
const snapshot = JSON.parse(fs.readFileSync(path.join(root, "src", "generated", "qmp-schema-7.2.json"), "utf8")) as unknown
const schemaEntries = Array.isArray(snapshot) ? snapshot : (snapshot as { schema?: unknown; return?: unknown }).schema ??
  (snapshot as { return?: unknown }).return
const catalog = Catalog.fromSchema(schemaEntries)

describe("cli completion from the live schema", () => {
  it("knows the commands and events", () => {
    expect(catalog.commands).toContain("query-status")
    expect(catalog.commands).toContain("blockdev-add")
    expect(catalog.events).toContain("SHUTDOWN")
  })

  it("completes a command name", () => {
    expect(Catalog.complete(catalog, "query-statu")).toEqual([["query-status"], "query-statu"])
  })

  it("completes argument names, objects with a dot, through flat unions", () => {
    const [names] = Catalog.complete(catalog, "blockdev-add driver=qcow2 fi")
    // `file` is a member of the qcow2 variant (an alternate of an object and a node name).
    expect(names).toEqual(expect.arrayContaining(["file=", "file."]))
    expect(Catalog.complete(catalog, "blockdev-add node-na")[0]).toEqual(["node-name="])
  })

  it("follows dotted paths and leaves out keys already given", () => {
    const [names] = Catalog.complete(catalog, "blockdev-add driver=raw file.filen")
    expect(names).toEqual(["file.filename="])
    expect(Catalog.complete(catalog, "blockdev-add node-name=x node-na")[0]).toEqual([])
  })

  it("narrows a union to the variant its tag selects", () => {
    expect(Catalog.complete(catalog, "blockdev-add driver=null-co node-name=d re")[0]).toEqual(["read-only=", "read-zeroes="])
    expect(Catalog.complete(catalog, "blockdev-add driver=raw file.driver=null-co file.re")[0])
      .toEqual(["file.read-only=", "file.read-zeroes="])
  })

  it("completes enum values and booleans", () => {
    expect(Catalog.complete(catalog, "blockdev-add driver=qco")[0]).toEqual(["driver=qcow", "driver=qcow2"])
    expect(Catalog.complete(catalog, "blockdev-add read-only=t")[0]).toEqual(["read-only=true"])
  })

  it("gives nothing for unknown commands or garbage", () => {
    expect(Catalog.complete(catalog, "no-such-cmd a")[0]).toEqual([])
    expect(Catalog.fromSchema({ not: "a list" }).commands).toEqual([])
  })
})

describe("cli addresses", () => {
  it("reads unix paths and host:port", () => {
    expect(Address.parse("/tmp/q.sock")).toEqual(Either.right("/tmp/q.sock"))
    expect(Address.parse("q.sock")).toEqual(Either.right("q.sock"))
    expect(Address.parse("localhost:4444")).toEqual(Either.right({ host: "localhost", port: 4444 }))
    expect(Address.parse("[::1]:4444")).toEqual(Either.right({ host: "::1", port: 4444 }))
    expect(Address.format({ host: "::1", port: 4444 })).toBe("[::1]:4444")
  })

  it("rejects bad ports, empty addresses and over-long paths", () => {
    expect(Either.isLeft(Address.parse("host:0"))).toBe(true)
    expect(Either.isLeft(Address.parse("host:65536"))).toBe(true)
    expect(Either.isLeft(Address.parse(""))).toBe(true)
    expect(Address.parse(`/tmp/${"x".repeat(120)}`)).toEqual(Either.left(expect.stringContaining("107-byte")))
  })
})

describe("cli schema comparison", () => {
  it("lists what each side lacks", () => {
    const diff = Schema.compare(
      { version: "9.0.0", commands: ["a", "b", "new"], events: ["E"] },
      { version: "7.2.0", commands: ["a", "b", "old"], events: ["E", "GONE"] }
    )
    expect(diff.commands).toEqual({ onlyLive: ["new"], onlyGenerated: ["old"] })
    expect(diff.events).toEqual({ onlyLive: [], onlyGenerated: ["GONE"] })
    expect(Schema.isSame(diff)).toBe(false)
    const text = Schema.render(diff)
    expect(text).toContain("commands the live QEMU has and the generated types lack (1):\n  new\n")
    expect(text).toContain("events in the generated types that the live QEMU lacks (1):\n  GONE\n")
  })
})
