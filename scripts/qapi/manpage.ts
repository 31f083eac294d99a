/**
 * Recovers QAPI type *names* (and only names: no prose is kept) from the QMP
 * reference man page that Debian ships in qemu-system-common
 * (`/usr/share/man/man7/qemu-qmp-ref.7.gz`). The introspection masks type
 * names as numbers; the man page lists every named type with its members, so
 * matching member names gives the real names back.
 *
 * Two layouts are read: the old one (QEMU before 10.0, e.g. Debian 12's 7.2:
 * `.SS \fBName\fP (Object)` headers, `.TP` items `\fBname\fP: \fBint\fP (optional)`)
 * and the one of the Sphinx qapidoc rewrite (QEMU 10.0 on: `.B Object Name (Since: x)`
 * headers, `.B Members` with bullet items `\fBname\fP (\fBint\fP, \fIoptional\fP) \-\- text`).
 * (11.x writes type names `\fBX\fP` where 10.0 writes `\fI\%X\fP`.) Both layouts
 * give the same facts, in the old layout's notation.
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

export const parseManPage = (text: string, source: string): DocFacts =>
  NEW_HEADER_LINE.test(text) ? parseNewManPage(text, source) : parseOldManPage(text, source)

const parseOldManPage = (text: string, source: string): DocFacts => {
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

// ---- the Sphinx qapidoc layout (QEMU 10.0 on) ----

const NEW_HEADER = /^\.B (Object|Enum|Alternate|Command|Event) (\S+)(?: \(.*\))?\s*$/
const NEW_HEADER_LINE = /^\.B (?:Object|Enum|Alternate|Command|Event) \S+(?: \(Since: [^)]*\))?\s*$/m
const NEW_SECTION = /^\.B (Members|Arguments|Alternatives|Values|Return|Features|Errors)\s*$/
/** `\fBname\fP (TYPE)` or `\fBname\fP (TYPE, \fIoptional\fP)`, then ` \-\- text` or nothing. */
const NEW_MEMBER = /^\\fB([^\\]+(?:\\-[^\\]+)*)\\fP \((.+?)(, \\fIoptional\\fP)?\)(?: \\-\\-|\s*$)/
/** A type name is `\fI\%X\fP` (a cross-reference, 10.0) or `\fBX\fP` (11.x). */
const NEW_VARIANT = /^When \\fB(.+?)\\fP is \\fB(.+?)\\fP: The members of \\f[BI](?:\\%)?(.+?)\\fP/
const NEW_BASE = /^The members of \\f[BI](?:\\%)?(.+?)\\fP(?:\\&)?\.?\s*$/
const NEW_VALUE = /^\\fB([^\\]+(?:\\-[^\\]+)*)\\fP(?: \\-\\-|\s*$)/
const GLUED_INDENT = /.\.INDENT [0-9.]+\s*$/
/** One type reference: `\fBint\fP` (built-in) or `\fI\%RunState\fP` (named). */
const NEW_TYPE_REF = /^\\f[BI](?:\\%)?([^\\]+(?:\\-[^\\]+)*)\\fP$/

/**
 * A type as the new layout writes it, in the old layout's notation:
 * `\fBboolean\fP` is `boolean`, `\fI\%RunState\fP` is `RunState`,
 * `\fB[\fP\fI\%X\fP\fB]\fP` is `array of X`; undefined for anything else.
 */
const newType = (s: string): string | undefined => {
  if (s.startsWith("\\fB[\\fP") && s.endsWith("\\fB]\\fP")) {
    const inner = newType(s.slice("\\fB[\\fP".length, -"\\fB]\\fP".length))
    return inner === undefined ? undefined : `array of ${inner}`
  }
  const ref = NEW_TYPE_REF.exec(s)
  return ref ? unescape(ref[1]!) : undefined
}

/** The type at the head of a "Return" line: `\fI\%StatusInfo\fP \-\- text`, `\fB[\fP\fI\%X\fP\fB]\fP \-\- text`. */
const RETURN_TYPE = /^((?:\\f[BI](?:\\%)?[^\\]*(?:\\-[^\\]*)*\\fP)+)(?: \\-\\-|\s*$)/

const parseNewManPage = (text: string, source: string): DocFacts => {
  const entries: Array<DocEntry> = []
  let current: DocEntry | undefined
  let section = ""
  // `.INDENT` depth: a section lasts while the depth stays at or above the
  // one of its `.B` line; its items are the bullets one level deeper (deeper
  // bullets belong to a member's own description)
  let depth = 0
  let sectionDepth = 0
  let bullet = false
  for (const raw of text.split("\n")) {
    if (raw.startsWith(".INDENT")) {
      depth++
      continue
    }
    if (raw.startsWith(".UNINDENT")) {
      depth = Math.max(0, depth - 1)
      if (depth < sectionDepth) section = ""
      continue
    }
    // the man writer sometimes glues a request to the end of a text line
    // (`\fBtype\fP (\fI\%TpmType\fP) \-\- .INDENT 2.0`); such a line is
    // neither a section nor a bullet, so counting it now is counting it after
    if (GLUED_INDENT.test(raw)) depth++
    const header = NEW_HEADER.exec(raw)
    if (header) {
      current = {
        kind: header[1] as DocEntry["kind"],
        name: unescape(header[2]!),
        members: [],
        bases: [],
        variants: [],
        values: [],
        returnWords: []
      }
      entries.push(current)
      section = ""
      bullet = false
      continue
    }
    if (!current) continue
    const sub = NEW_SECTION.exec(raw)
    if (sub) {
      section = sub[1]!
      sectionDepth = depth
      bullet = false
      continue
    }
    if (section === "") continue
    if (section === "Return") {
      if (raw.startsWith(".")) continue
      const type = RETURN_TYPE.exec(raw)
      const notation = type ? newType(type[1]!) : undefined
      const named = notation?.replace(/^(array of )+/, "")
      if (named && /^[A-Z][A-Za-z0-9_]*$/.test(named) && !current.returnWords.includes(named)) {
        current.returnWords.push(named)
      }
      for (const word of unescape(raw.replace(/\\f[BPIR]/g, " ").replace(/\\%/g, "")).split(/[^A-Za-z0-9_-]+/)) {
        if (/^[A-Z][A-Za-z0-9_]*$/.test(word) && !current.returnWords.includes(word)) current.returnWords.push(word)
      }
      continue
    }
    if (raw.startsWith(".IP \\(bu")) {
      bullet = depth === sectionDepth + 1
      continue
    }
    if (!bullet) continue
    bullet = false
    if (section === "Members" || section === "Arguments" || section === "Alternatives") {
      const variant = NEW_VARIANT.exec(raw)
      if (variant) {
        current.variants.push({ tag: unescape(variant[1]!), case: unescape(variant[2]!), type: unescape(variant[3]!) })
        continue
      }
      const base = NEW_BASE.exec(raw)
      if (base) {
        current.bases.push(unescape(base[1]!))
        continue
      }
      const member = NEW_MEMBER.exec(raw)
      const type = member ? newType(member[2]!) : undefined
      if (member && type !== undefined) {
        current.members.push({ name: unescape(member[1]!), type, optional: !!member[3] })
      }
    } else if (section === "Values") {
      const value = NEW_VALUE.exec(raw)
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
