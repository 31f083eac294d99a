/**
 * `scripts/qapi/manpage.ts` reads both layouts of the QMP reference man page:
 * the old one (QEMU before 10.0, `.SS \fBName\fP (Object)`) and the one of the
 * Sphinx qapidoc rewrite (10.0 on, `.B Object Name (Since: x)`). Small
 * excerpts of each, describing the same schema, must give the same facts; the
 * real pages (Debian 12's 7.2, and the 10.0 / 11.1 trees under `.cache/qemu`)
 * are checked when present.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import * as zlib from "node:zlib"
import type { DocEntry, DocFacts } from "../scripts/qapi/manpage.js"
import { parseManPage, readManPage } from "../scripts/qapi/manpage.js"

/** The old layout, as Debian 12's QEMU 7.2 page writes it. */
const OLD = String.raw`.TH "QEMU-QMP-REF" "7" "2022" "7.2.0" "QEMU"
.SH VM RUN STATE
.SS \fBRunState\fP (Enum)
.sp
An enumeration of VM run states.
.SS Values
.INDENT 0.0
.TP
.B \fBdebug\fP
QEMU is running on a debugger
.TP
.B \fBfinish\-migrate\fP
guest is paused to finish the migration process
.UNINDENT
.SS Since
.sp
0.14
.SS \fBStatusInfo\fP (Object)
.sp
Information about VM run state
.SS Members
.INDENT 0.0
.TP
.B \fBrunning\fP: \fBboolean\fP
true if all VCPUs are runnable, false if not runnable
.TP
.B \fBstatus\fP: \fBRunState\fP
the virtual machine \fBRunState\fP
.UNINDENT
.SS \fBquery\-status\fP (Command)
.sp
Query the run status of the VM
.SS Returns
.sp
\fBStatusInfo\fP reflecting the VM
.SS Since
.sp
0.14
.SS \fBStrOrNull\fP (Alternate)
.SS Members
.INDENT 0.0
.TP
.B \fBs\fP: \fBstring\fP
the string value
.TP
.B \fBn\fP: \fBnull\fP
no string value
.UNINDENT
.SS \fBInetSocketAddress\fP (Object)
.SS Members
.INDENT 0.0
.TP
.B \fBnumeric\fP: \fBboolean\fP (optional)
true if the host/port are guaranteed to be numeric
.TP
.B \fBkeep\-alive\fP: \fBvalue\fP (optional)
.TP
.B The members of \fBInetSocketAddressBase\fP
.UNINDENT
.SS \fBSocketAddress\fP (Object)
.SS Members
.INDENT 0.0
.TP
.B \fBtype\fP: \fBSocketAddressType\fP
Transport type
.TP
.B The members of \fBInetSocketAddress\fP when \fBtype\fP is \fB\(dqinet\(dq\fP
.TP
.B The members of \fBFdSocketAddress\fP when \fBtype\fP is \fB\(dqfd\(dq\fP
.UNINDENT
.SS \fBCpuInfoFast\fP (Object)
.SS Members
.INDENT 0.0
.TP
.B \fBcpu\-index\fP: \fBint\fP
index of the virtual CPU
.TP
.B \fBdeprecated\-props\fP: \fBarray of string\fP (optional)
.TP
.B \fBpaths\fP: \fBarray of SocketAddress\fP
.UNINDENT
.SS \fBquery\-cpus\-fast\fP (Command)
.SS Returns
.sp
list of \fBCpuInfoFast\fP
.SS \fBobject\-add\fP (Command)
.SS Arguments
.INDENT 0.0
.TP
.B The members of \fBObjectOptions\fP
.UNINDENT
.SS \fBSHUTDOWN\fP (Event)
.SS Arguments
.INDENT 0.0
.TP
.B \fBguest\fP: \fBboolean\fP
If true, the shutdown was triggered by a guest request
.TP
.B \fBreason\fP: \fBRunState\fP
.UNINDENT
`

const newHeader = (kind: string, name: string, since?: string) =>
  `.INDENT 0.0\n.TP\n.B ${kind} ${name}${since ? ` (Since: ${since})` : ""}\n`
const section = (title: string, lines: ReadonlyArray<string>) =>
  `.INDENT 7.0\n.TP\n.B ${title}\n.INDENT 7.0\n${lines.map((l) => `.IP \\(bu 2\n${l}\n`).join("")}.UNINDENT\n`
const CLOSE = `.UNINDENT\n.UNINDENT\n`

/** The same schema in the Sphinx layout of QEMU 10.0 (type names as `\fI\%X\fP`), with its traps. */
const NEW = [
  String.raw`.TH "QEMU-QMP-REF" "7" "2025" "10.0.0" "QEMU"
.SH CONTENTS
.INDENT 0.0
.IP \(bu 2
\fI\%Introduction\fP
.UNINDENT
`,
  newHeader("Enum", "RunState", "0.14"),
  "An enumeration of VM run states.\n",
  section("Values", [
    String.raw`\fBdebug\fP \-\- QEMU is running on a debugger`,
    String.raw`\fBfinish\-migrate\fP \-\- guest is paused to finish the migration process`
  ]),
  CLOSE,
  newHeader("Object", "StatusInfo", "0.14"),
  // a bullet list in the description, before any section: not a member
  String.raw`Information about VM run state, which may be:
.INDENT 7.0
.IP \(bu 2
\fBfoo\fP (\fBint\fP) \-\- a bullet of the description
.UNINDENT
`,
  section("Members", [
    String.raw`\fBrunning\fP (\fBboolean\fP) \-\- true if all VCPUs are runnable, false if not runnable`,
    String.raw`\fBstatus\fP (\fI\%RunState\fP) \-\- the virtual machine \fBRunState\fP`
  ]),
  CLOSE,
  newHeader("Command", String.raw`query\-status`, "0.14"),
  String.raw`Query the run status of the VM
.INDENT 7.0
.TP
.B Return
\fI\%StatusInfo\fP \-\- \fBStatusInfo\fP reflecting the VM
.UNINDENT
.INDENT 7.0
.INDENT 3.5
.IP "Example:"
.INDENT 0.0
.INDENT 3.5
.sp
.EX
\-> { \(dqexecute\(dq: \(dqquery\-status\(dq }
.EE
.UNINDENT
.UNINDENT
.UNINDENT
.UNINDENT
.UNINDENT
`,
  newHeader("Alternate", "StrOrNull", "2.10"),
  section("Alternatives", [
    String.raw`\fBs\fP (\fBstring\fP) \-\- the string value`,
    String.raw`\fBn\fP (\fBnull\fP) \-\- no string value`
  ]),
  CLOSE,
  newHeader("Object", "InetSocketAddress", "1.3"),
  section("Members", [
    String.raw`\fBnumeric\fP (\fBboolean\fP, \fIoptional\fP) \-\- true if the host/port are guaranteed to be numeric`,
    String.raw`\fBkeep\-alive\fP (\fBvalue\fP, \fIoptional\fP) \-\- `,
    String.raw`The members of \fI\%InetSocketAddressBase\fP\&.`
  ]),
  CLOSE,
  newHeader("Object", "SocketAddress", "2.9"),
  // the man writer glues a nested list's `.INDENT` to the member's line
  String.raw`.INDENT 7.0
.TP
.B Members
.INDENT 7.0
.IP \(bu 2
\fBtype\fP (\fI\%SocketAddressType\fP) \-\- .INDENT 2.0
.IP \(bu 2
\fBinet\fP (\fBstring\fP) \-\- not a member: part of the description
.UNINDENT

.IP \(bu 2
When \fBtype\fP is \fBinet\fP: The members of \fI\%InetSocketAddress\fP\&.
.IP \(bu 2
When \fBtype\fP is \fBfd\fP: The members of \fI\%FdSocketAddress\fP\&.
.UNINDENT
.UNINDENT
`,
  section("Features", [String.raw`\fBdeprecated\fP \-\- Member \fBfd\fP is deprecated.`]),
  CLOSE,
  newHeader("Object", "CpuInfoFast", "2.12"),
  section("Members", [
    String.raw`\fBcpu\-index\fP (\fBint\fP) \-\- index of the virtual CPU`,
    String.raw`\fBdeprecated\-props\fP (\fB[\fP\fBstring\fP\fB]\fP, \fIoptional\fP) \-\- `,
    String.raw`\fBpaths\fP (\fB[\fP\fI\%SocketAddress\fP\fB]\fP)`
  ]),
  CLOSE,
  newHeader("Command", String.raw`query\-cpus\-fast`, "2.12"),
  String.raw`.INDENT 7.0
.TP
.B Return
\fB[\fP\fI\%CpuInfoFast\fP\fB]\fP \-\- list of \fBCpuInfoFast\fP
.UNINDENT
.UNINDENT
.UNINDENT
`,
  newHeader("Command", String.raw`object\-add`, "2.0"),
  section("Arguments", [String.raw`The members of \fI\%ObjectOptions\fP\&.`]),
  String.raw`.TP
.B Errors
.INDENT 7.0
.IP \(bu 2
Error if \fBqom\-type\fP is not a valid class name
.UNINDENT
`,
  CLOSE,
  newHeader("Event", "SHUTDOWN", "0.12"),
  section("Members", [
    String.raw`\fBguest\fP (\fBboolean\fP) \-\- If true, the shutdown was triggered by a guest request`,
    String.raw`\fBreason\fP (\fI\%RunState\fP) \-\- `
  ]),
  CLOSE
].join("")

/** QEMU 11.x writes type names in bold, not as cross-references. */
const NEW_11 = NEW.replace(/\\fI\\%([A-Za-z0-9_]+)\\fP/g, "\\fB$1\\fP")

const entry = (facts: DocFacts, name: string): DocEntry | undefined => facts.entries.find((e) => e.name === name)

describe("parseManPage", () => {
  it("reads the old layout", () => {
    const facts = parseManPage(OLD, "old")
    expect(facts.entries.map((e) => `${e.kind} ${e.name}`)).toEqual([
      "Enum RunState",
      "Object StatusInfo",
      "Command query-status",
      "Alternate StrOrNull",
      "Object InetSocketAddress",
      "Object SocketAddress",
      "Object CpuInfoFast",
      "Command query-cpus-fast",
      "Command object-add",
      "Event SHUTDOWN"
    ])
    expect(entry(facts, "RunState")?.values).toEqual(["debug", "finish-migrate"])
    expect(entry(facts, "StatusInfo")?.members).toEqual([
      { name: "running", type: "boolean", optional: false },
      { name: "status", type: "RunState", optional: false }
    ])
    // every capitalised word of "Returns" (qapi-gen keeps those that name a type)
    expect(entry(facts, "query-status")?.returnWords).toEqual(["StatusInfo", "VM"])
    expect(entry(facts, "InetSocketAddress")).toMatchObject({
      members: [
        { name: "numeric", type: "boolean", optional: true },
        { name: "keep-alive", type: "value", optional: true }
      ],
      bases: ["InetSocketAddressBase"]
    })
    expect(entry(facts, "SocketAddress")?.variants).toEqual([
      { tag: "type", case: "inet", type: "InetSocketAddress" },
      { tag: "type", case: "fd", type: "FdSocketAddress" }
    ])
    expect(entry(facts, "CpuInfoFast")?.members.map((m) => m.type)).toEqual(["int", "array of string", "array of SocketAddress"])
    expect(entry(facts, "query-cpus-fast")?.returnWords).toEqual(["CpuInfoFast"])
    expect(entry(facts, "object-add")?.bases).toEqual(["ObjectOptions"])
  })

  it("reads the Sphinx layout of 10.0 as the same facts", () => {
    const old = parseManPage(OLD, "old")
    const facts = parseManPage(NEW, "new")
    expect(facts.source).toBe("new")
    expect(facts.entries).toEqual(old.entries)
  })

  it("reads the Sphinx layout of 11.x as the same facts", () => {
    expect(NEW_11).not.toContain("\\%")
    expect(parseManPage(NEW_11, "new").entries).toEqual(parseManPage(OLD, "old").entries)
  })
})

// ---- the real pages, when installed ----

const root = path.join(import.meta.dirname, "..")
const PAGES = {
  "7.2": "/usr/share/man/man7/qemu-qmp-ref.7.gz",
  "10.0": path.join(root, ".cache/qemu/10.0/root/usr/share/man/man7/qemu-qmp-ref.7.gz"),
  "11.1": path.join(root, ".cache/qemu/11.1/root/usr/share/man/man7/qemu-qmp-ref.7.gz")
} as const

const has = (file: string) => fs.existsSync(file)
const isType = (e: DocEntry) => e.kind !== "Command" && e.kind !== "Event"
const key = (e: DocEntry) => `${isType(e) ? "type" : e.kind}:${e.name}`
const shape = (e: DocEntry) =>
  JSON.stringify([e.members.map((m) => m.name).sort(), [...e.values].sort(), e.variants.map((v) => v.case).sort()])

/** How many entries of `b` have the same name and member names / values / variant cases as in `a`. */
const agreement = (a: DocFacts, b: DocFacts) => {
  const byKey = new Map(b.entries.map((e) => [key(e), e] as const))
  let both = 0
  let same = 0
  for (const e of a.entries) {
    const other = byKey.get(key(e))
    if (!other) continue
    both++
    if (shape(e) === shape(other)) same++
  }
  return { both, same }
}

const pageText = (file: string) => zlib.gunzipSync(fs.readFileSync(file)).toString("utf8")
/** Lines of the page's own text that match, to count against the parsed entries. */
const countLines = (text: string, re: RegExp) => text.split("\n").filter((l) => re.test(l)).length

describe("real QMP reference pages", () => {
  it.skipIf(!has(PAGES["7.2"]))("7.2 (old layout): every header is an entry", () => {
    const facts = readManPage(PAGES["7.2"])!
    expect(facts.entries.length).toBe(countLines(pageText(PAGES["7.2"]), /^\.SS \\fB.+\\fP \((Object|Enum|Alternate|Command|Event)\)\s*$/))
    expect(entry(facts, "StatusInfo")?.members.map((m) => m.name)).toEqual(["running", "singlestep", "status"])
  })

  for (const version of ["10.0", "11.1"] as const) {
    it.skipIf(!has(PAGES[version]))(`${version} (Sphinx layout): every header and member is read`, () => {
      const facts = readManPage(PAGES[version])!
      const text = pageText(PAGES[version])
      expect(facts.entries.length).toBe(countLines(text, /^\.B (Object|Enum|Alternate|Command|Event) /))
      const count = (f: (e: DocEntry) => number) => facts.entries.reduce((n, e) => n + f(e), 0)
      const lines = text.split("\n")
      const after = (re: RegExp) => lines.filter((l, i) => i > 0 && lines[i - 1]!.startsWith(".IP \\(bu") && re.test(l)).length
      expect(count((e) => e.variants.length)).toBe(after(/^When \\fB.+: The members of /))
      expect(count((e) => e.bases.length)).toBe(after(/^The members of /))
      expect(count((e) => e.members.length)).toBe(after(/^\\fB[^\\]+(\\-[^\\]+)*\\fP \(/))
      const status = entry(facts, "StatusInfo")
      expect(status?.members).toEqual([
        { name: "running", type: "boolean", optional: false },
        { name: "status", type: "RunState", optional: false }
      ])
      expect(entry(facts, "query-status")?.returnWords[0]).toBe("StatusInfo")
      expect(entry(facts, "query-cpus-fast")?.returnWords[0]).toBe("CpuInfoFast")
      expect(entry(facts, "query-block")?.returnWords[0]).toBe("BlockInfo")
      expect(entry(facts, "object-add")?.bases).toEqual(["ObjectOptions"])
      expect(entry(facts, "StrOrNull")?.members.map((m) => m.type)).toEqual(["string", "null"])
      expect(entry(facts, "BlockDeviceInfo")?.members.find((m) => m.name === "backing_file")).toEqual({
        name: "backing_file",
        type: "string",
        optional: true
      })
      expect(entry(facts, "BlockInfo")?.members.find((m) => m.name === "inserted")?.type).toBe("BlockDeviceInfo")
      expect(entry(facts, "SocketAddress")?.variants.map((v) => v.case)).toEqual(["inet", "unix", "vsock", "fd"])
    })

    it.skipIf(!has(PAGES[version]) || !has(PAGES["7.2"]))(`${version} agrees with 7.2 on the types both have`, () => {
      const { both, same } = agreement(readManPage(PAGES["7.2"])!, readManPage(PAGES[version])!)
      // the differences are real schema changes (StatusInfo lost `singlestep` in 9.0, enums grew...)
      expect(both).toBeGreaterThan(850)
      expect(same / both).toBeGreaterThan(0.85)
    })
  }
})
