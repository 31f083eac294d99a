import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Address from "../src/cli/address.js"
import * as Argv from "../src/cli/argv.js"
import * as Errors from "../src/cli/errors.js"
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

  it("reads QEMU's unix:PATH and tcp:HOST:PORT, options after a comma ignored", () => {
    expect(Address.parse("unix:/tmp/q.sock,server=on,wait=off")).toEqual(Either.right("/tmp/q.sock"))
    expect(Address.parse("tcp:localhost:4444")).toEqual(Either.right({ host: "localhost", port: 4444 }))
    expect(Address.parse("tcp:[::1]:4444,server=on")).toEqual(Either.right({ host: "::1", port: 4444 }))
    expect(Either.isLeft(Address.parse("tcp:/tmp/q.sock"))).toBe(true)
    expect(Either.isLeft(Address.parse("unix:"))).toBe(true)
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

describe("cli command line before @effect/cli", () => {
  const argv = (...args: Array<string>) => Argv.prepare(["node", "main.js", ...args])

  it("reports an option the subcommand does not know, not the address after it", () => {
    expect(argv("shell", "--bogus", "/tmp/q.sock")).toEqual(
      Either.left("unknown option '--bogus' for 'shell' (see effect-qemu shell --help)")
    )
    expect(argv("shell", "-pX", "/tmp/q.sock")).toEqual(Either.left(expect.stringContaining("'-pX'")))
    expect(argv("shell", "-pv", "/tmp/q.sock")).toEqual(Either.right(["node", "main.js", "shell", "-pv", "/tmp/q.sock"]))
    expect(argv("schema", "-H")).toEqual(Either.left(expect.stringContaining("'-H' for 'schema'")))
    expect(argv("run", "-machine", "none")).toEqual(Either.left(expect.stringMatching(/^unknown option '-machine' for 'run' .*QEMU's own options go after --/)))
  })

  it("passes known options, values of valued options, and everything after --", () => {
    expect(argv("shell", "-l", "--odd-file-name", "-H", "/tmp/q.sock")).toEqual(
      Either.right(["node", "main.js", "shell", "-l", "--odd-file-name", "-H", "/tmp/q.sock"])
    )
    expect(argv("run", "--binary=/usr/bin/qemu", "--", "-machine", "none")).toEqual(
      Either.right(["node", "main.js", "run", "--binary=/usr/bin/qemu", "--", "-machine", "none"])
    )
    expect(argv("--help")).toEqual(Either.right(["node", "main.js", "--help"]))
  })

  it("gives run --console alone the value that means the default place, keeps --console=FILE", () => {
    expect(argv("run", "--console", "--", "-S")).toEqual(
      Either.right(["node", "main.js", "run", `--console=${Argv.CONSOLE_DEFAULT}`, "--", "-S"])
    )
    expect(argv("run", "--console=/tmp/c.log", "--", "-S")).toEqual(
      Either.right(["node", "main.js", "run", "--console=/tmp/c.log", "--", "-S"])
    )
  })
})

describe("cli messages", () => {
  it("escapes what a peer sent: control characters as \\xNN, a backslash doubled", () => {
    expect(Errors.escape("a\x01\x1b[31mb\x07\\c\u0085")).toBe("a\\x01\\x1b[31mb\\x07\\\\c\\x85")
    expect(Errors.escape("plain text, é")).toBe("plain text, é")
  })

  it("says what failed without the library's reason tags", () => {
    const error = (fields: Record<string, unknown>) => ({ message: "QMP connection Eof", ...fields })
    expect(Errors.describe(error({ _tag: "QmpConnectionError", reason: "Eof" }))).toBe("QEMU closed the connection")
    expect(Errors.describe(error({
      _tag: "QmpConnectionError",
      reason: "Refused",
      detail: "cannot connect to /x: connect ECONNREFUSED /x"
    }))).toBe("cannot connect to /x: connection refused (ECONNREFUSED)")
    const enoent = Object.assign(new Error("spawn /nope ENOENT"), { code: "ENOENT" })
    expect(Errors.describe({
      _tag: "LaunchFailure",
      message: "QEMU launch failed: SpawnFailed",
      reason: "SpawnFailed",
      command: ["/nope", "-machine", "none"],
      output: "",
      cause: enoent
    })).toBe("cannot start QEMU: /nope: no such file")
  })
})

describe("cli help and HMP completion", () => {
  it("describes a command: arguments with types, optional ones marked, enum values, the return type", () => {
    const text = catalog.help("blockdev-backup")!
    expect(text).toContain("command blockdev-backup")
    expect(text).toMatch(/^ {2}device: str$/m)
    expect(text).toMatch(/^ {2}speed: int \(optional\)$/m)
    expect(text).toMatch(/^ {2}sync: enum \(top \| full \| none \| incremental \| bitmap\)$/m)
    expect(catalog.help("query-status")).toMatch(/returns: object:\n {2}running: bool/)
    expect(catalog.help("SHUTDOWN")).toContain("event SHUTDOWN")
    expect(catalog.help("no-such-command")).toBeUndefined()
    expect(catalog.help()).toMatch(/^commands \(\d+\)/)
  })

  it("reads HMP's help output: names, aliases, info subcommands", () => {
    const hmp = Catalog.fromHmpHelp(
      "info [subcommand] -- show various information\r\nq|quit  -- quit the emulator\r\nstop  -- stop emulation\r\n",
      "info status  -- show the current VM status\r\ninfo stats target [names] -- show statistics\r\n"
    )
    expect(hmp.commands).toEqual(["info", "q", "quit", "stop"])
    expect(Catalog.completeHmp(hmp, "st")).toEqual([["stop"], "st"])
    expect(Catalog.completeHmp(hmp, "info stat")).toEqual([["stats", "status"], "stat"])
    expect(Catalog.completeHmp(hmp, "stop x")).toEqual([[], "x"])
  })
})
