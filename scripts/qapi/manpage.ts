/**
 * Recovers QAPI type *names* (and only names: no prose is kept) from the QMP
 * reference man page that Debian ships in qemu-system-common
 * (`/usr/share/man/man7/qemu-qmp-ref.7.gz`). The introspection masks type
 * names as numbers; the man page lists every named type with its members, so
 * matching member names gives the real names back.
 */
import * as fs from "node:fs"
import * as zlib from "node:zlib"

export interface DocMember {
  readonly name: string
  /** The man page's type notation: `string`, `int`, `RunState`, `array of X`... */
  readonly type: string
  readonly optional: boolean
}

export interface DocVariant {
  readonly tag: string
  readonly case: string
  readonly type: string
}

export interface DocEntry {
  readonly kind: "Object" | "Enum" | "Alternate" | "Command" | "Event"
  readonly name: string
  readonly members: Array<DocMember>
  /** `The members of X` without a condition: a base type, or a boxed argument type. */
  readonly bases: Array<string>
  readonly variants: Array<DocVariant>
  readonly values: Array<string>
  /** Words of the "Returns" section that may name a type (checked structurally later). */
  readonly returnWords: Array<string>
}

/** The facts kept in the snapshot: names and member names, no descriptions. */
export interface DocFacts {
  readonly source: string
  readonly entries: ReadonlyArray<DocEntry>
}

export const DEFAULT_MAN_PAGE = "/usr/share/man/man7/qemu-qmp-ref.7.gz"

const unescape = (s: string): string =>
  s.replace(/\\-/g, "-").replace(/\\\(dq/g, "\"").replace(/\\\(aq/g, "'").replace(/\\e/g, "\\").replace(/\\&/g, "")

const HEADER = /^\.SS \\fB(.+?)\\fP \((Object|Enum|Alternate|Command|Event)\)\s*$/
const SUBSECTION = /^\.SS (.+)$/
const MEMBER = /^\\fB([^\\]+(?:\\-[^\\]+)*)\\fP: \\fB(.+?)\\fP( \(optional\))?/
const VARIANT = /^The members of \\fB(.+?)\\fP when \\fB(.+?)\\fP is \\fB\\\(dq(.+?)\\\(dq\\fP/
const BASE = /^The members of \\fB(.+?)\\fP\s*(?:\(|$)/
const VALUE = /^\\fB(.+?)\\fP/

export const parseManPage = (text: string, source: string): DocFacts => {
  const entries: Array<DocEntry> = []
  let current: DocEntry | undefined
  let section = ""
  let afterTP = false
  for (const raw of text.split("\n")) {
    const header = HEADER.exec(raw)
    if (header) {
      current = {
        kind: header[2] as DocEntry["kind"],
        name: unescape(header[1]!),
        members: [],
        bases: [],
        variants: [],
        values: [],
        returnWords: []
      }
      entries.push(current)
      section = ""
      afterTP = false
      continue
    }
    const sub = SUBSECTION.exec(raw)
    if (sub) {
      section = sub[1]!.trim()
      afterTP = false
      continue
    }
    if (!current) continue
    if (raw === ".TP") {
      afterTP = true
      continue
    }
    if (section === "Returns") {
      for (const word of unescape(raw.replace(/\\f[BPIR]/g, " ")).split(/[^A-Za-z0-9_-]+/)) {
        if (/^[A-Z][A-Za-z0-9_]*$/.test(word)) current.returnWords.push(word)
      }
      continue
    }
    if (!afterTP) continue
    afterTP = false
    const line = raw.startsWith(".B ") ? raw.slice(3) : raw
    if (section === "Members" || section === "Arguments") {
      const variant = VARIANT.exec(line)
      if (variant) {
        current.variants.push({ type: unescape(variant[1]!), tag: unescape(variant[2]!), case: unescape(variant[3]!) })
        continue
      }
      const base = BASE.exec(line)
      if (base) {
        current.bases.push(unescape(base[1]!))
        continue
      }
      const member = MEMBER.exec(line)
      if (member) current.members.push({ name: unescape(member[1]!), type: unescape(member[2]!), optional: !!member[3] })
    } else if (section === "Values") {
      const value = VALUE.exec(line)
      if (value) current.values.push(unescape(value[1]!))
    }
  }
  return { source, entries }
}

export const readManPage = (file: string): DocFacts | undefined => {
  if (!fs.existsSync(file)) return undefined
  const buf = fs.readFileSync(file)
  const text = file.endsWith(".gz") ? zlib.gunzipSync(buf).toString("utf8") : buf.toString("utf8")
  return parseManPage(text, file.split("/").pop() ?? file)
}
