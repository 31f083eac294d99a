/**
 * Turns a list of QAPI `SchemaInfo` entries (QEMU's introspection, or the
 * guest agent's schema converted to the same shape) into one TypeScript module:
 * a type and an `effect/Schema` per named type, then the `Commands` / `Events`
 * tables. Structurally identical types are emitted once.
 */
import type { SchemaInfo, SchemaInfoOf } from "../../src/internal/qapi/schemaInfo.js"
import type { Availability } from "./merge.js"

export interface EmitInput {
  readonly kind: "qmp" | "qga"
  readonly entries: ReadonlyArray<SchemaInfo>
  /** Real names of (masked) types, when known. */
  readonly realNames: ReadonlyMap<string, string>
  /** Commands whose arguments accept members beyond the declared ones (`device_add`). */
  readonly openArgs: ReadonlySet<string>
  /** Guest agent commands that send no reply on success. */
  readonly noSuccessResponse?: ReadonlySet<string>
  readonly header: ReadonlyArray<string>
  /** The version of `schemaVersion` (the newest, for a merged schema). */
  readonly version: string
  readonly docUrl: string
  /** For a schema merged from several versions: which versions have what. */
  readonly availability?: Availability | undefined
  /** Lines added after `versions` in a merged module. */
  readonly extra?: ReadonlyArray<string> | undefined
}

/** The runtime tables of an emitted module: one JSON line per type, command, event. */
export interface EmitTables {
  readonly types: ReadonlyArray<string>
  readonly commands: ReadonlyArray<string>
  readonly events: ReadonlyArray<string>
}

export interface EmitStats {
  readonly commands: number
  readonly events: number
  /** Named (non-builtin, non-array) types in the schema. */
  readonly schemaTypes: number
  /** Named types emitted after structural de-duplication. */
  readonly emittedTypes: number
  /** Types whose name came from the documentation (real QAPI names). */
  readonly realNamed: number
}

type Obj = SchemaInfoOf<"object">

const RESERVED = new Set([
  "Schema",
  "S",
  "B",
  "ReadonlyArray",
  "Readonly",
  "Record",
  "Commands",
  "Events",
  "CommandName",
  "EventName",
  "Args",
  "Result",
  "ArgsTuple",
  "EventData",
  "Timestamp",
  "Event",
  "Empty",
  "Object",
  "String",
  "Number",
  "Boolean",
  "Array",
  "Symbol",
  "Error",
  "Promise",
  "Map",
  "Set",
  "Date",
  "JSON",
  "Math"
])

export const pascal = (name: string): string => {
  const parts = name.split(/[^A-Za-z0-9]+/).filter((p) => p.length > 0)
  const out = parts.map((p) => {
    const word = p === p.toUpperCase() ? p.toLowerCase() : p
    return word.charAt(0).toUpperCase() + word.slice(1)
  }).join("")
  return /^[0-9]/.test(out) ? `T${out}` : out
}

const IDENT = /^[A-Za-z_$][A-Za-z0-9_$]*$/
const key = (name: string): string => IDENT.test(name) ? name : JSON.stringify(name)

const isOptional = (m: { readonly default?: unknown }): boolean => Object.prototype.hasOwnProperty.call(m, "default")

const featureTags = (features: ReadonlyArray<string> | undefined): Array<string> => {
  const tags: Array<string> = []
  if (features?.includes("deprecated")) tags.push("@deprecated")
  if (features?.includes("unstable")) tags.push("@experimental")
  return tags
}

/** A JSON line as a TypeScript string literal. */
const quote = (line: string): string => `'${line.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`
/** An array body of JSON lines, one per line. */
const lines = (items: ReadonlyArray<string>): string => items.map((l) => `  ${quote(l)}`).join(",\n")

/** `QEMU 10.0, 11.1` from `["10.0.13", "11.1.3"]`. */
export const versionList = (versions: ReadonlyArray<string>): string =>
  `QEMU ${versions.map((v) => v.split(".").slice(0, 2).join(".")).join(", ")}`

export const emit = (
  input: EmitInput
): { readonly code: string; readonly stats: EmitStats; readonly tables: EmitTables } => {
  const avail = input.availability
  const memberVersions = (type: string, member: string) => avail?.members.get(type)?.get(member)
  const requiredVersions = (type: string, member: string) => avail?.requiredIn.get(type)?.get(member)
  const valueVersions = (type: string, value: string) => avail?.values.get(type)?.get(value)
  const caseVersions = (type: string, value: string) => avail?.cases.get(type)?.get(value)
  const byName = new Map<string, SchemaInfo>()
  for (const e of input.entries) byName.set(e.name, e)
  const get = (name: string): SchemaInfo => {
    const e = byName.get(name)
    if (!e) throw new Error(`schema refers to unknown type ${name}`)
    return e
  }
  const commands = input.entries.filter((e): e is SchemaInfoOf<"command"> => e["meta-type"] === "command")
  const events = input.entries.filter((e): e is SchemaInfoOf<"event"> => e["meta-type"] === "event")
  const openTypes = new Set(commands.filter((c) => input.openArgs.has(c.name)).map((c) => c["arg-type"]))
  const isEmptyObject = (e: SchemaInfo): boolean =>
    e["meta-type"] === "object" && e.members.length === 0 && !e.variants && !openTypes.has(e.name)

  // --- structural classes (partition refinement: handles recursive types) ---
  const types = input.entries.filter((e) => e["meta-type"] !== "command" && e["meta-type"] !== "event")
  const children = (e: SchemaInfo): Array<string> => {
    switch (e["meta-type"]) {
      case "object":
        return [...e.members.map((m) => m.type), ...(e.variants ?? []).map((v) => v.type)]
      case "array":
        return [e["element-type"]]
      case "alternate":
        return e.members.map((m) => m.type)
      default:
        return []
    }
  }
  // implicit argument types (`'data': {...}` of a command or event) are merged
  // only with each other: `query-rocker`'s `{ name }` is not a ChardevBackendInfo
  const implicitArgs = new Set(
    [...commands, ...events].map((c) => c["arg-type"]).filter((t) => !input.realNames.has(t))
  )
  const local = (e: SchemaInfo): string => {
    const f = JSON.stringify([e.features ?? [], implicitArgs.has(e.name) && !isEmptyObject(e)])
    switch (e["meta-type"]) {
      case "object":
        return JSON.stringify([
          "O",
          e.members.map((m) => [
            m.name,
            isOptional(m),
            m.features ?? [],
            memberVersions(e.name, m.name) ?? null,
            requiredVersions(e.name, m.name) ?? null
          ]),
          e.tag ?? null,
          (e.variants ?? []).map((v) => [v.case, caseVersions(e.name, v.case) ?? null]),
          openTypes.has(e.name),
          f
        ])
      case "enum":
        return JSON.stringify([
          "E",
          e.values,
          (e.members ?? []).map((m) => m.features ?? []),
          e.values.map((v) => valueVersions(e.name, v) ?? null),
          f
        ])
      case "array":
        return "A"
      case "alternate":
        return `L${e.members.length}${f}`
      case "builtin":
        return `B${e.name}`
      default:
        return "?"
    }
  }
  let cls = new Map<string, number>()
  {
    const ids = new Map<string, number>()
    for (const t of types) {
      const sig = local(t)
      if (!ids.has(sig)) ids.set(sig, ids.size)
      cls.set(t.name, ids.get(sig)!)
    }
    for (let count = ids.size;;) {
      const next = new Map<string, number>()
      const sigs = new Map<string, number>()
      for (const t of types) {
        const sig = `${cls.get(t.name)}:${children(t).map((c) => cls.get(c)).join(",")}`
        if (!sigs.has(sig)) sigs.set(sig, sigs.size)
        next.set(t.name, sigs.get(sig)!)
      }
      cls = next
      if (sigs.size === count) break
      count = sigs.size
    }
  }

  // --- names: real names first, then names derived from where a type is used ---
  const isNamed = (e: SchemaInfo): boolean =>
    e["meta-type"] === "object" || e["meta-type"] === "enum" || e["meta-type"] === "alternate"
  const candidate = new Map<number, { name: string; real: boolean }>()
  const order: Array<number> = []
  const seen = new Set<string>()
  const offer = (typeName: string, derived: string): void => {
    const e = get(typeName)
    if (e["meta-type"] === "array") return offer(e["element-type"], `${derived}Item`)
    if (!isNamed(e) || seen.has(typeName)) return
    seen.add(typeName)
    const c = cls.get(typeName)!
    const real = input.realNames.get(typeName)
    const own = real ?? derived
    const prev = candidate.get(c)
    if (!prev) {
      candidate.set(c, { name: isEmptyObject(e) ? "Empty" : own, real: real !== undefined })
      order.push(c)
    } else if (!prev.real && real !== undefined && prev.name !== "Empty") {
      candidate.set(c, { name: real, real: true })
    }
    const base = own
    if (e["meta-type"] === "object") {
      for (const m of e.members) offer(m.type, `${base}${pascal(m.name)}`)
      for (const v of e.variants ?? []) offer(v.type, `${base}${pascal(v.case)}`)
    } else if (e["meta-type"] === "alternate") {
      e.members.forEach((m, i) => offer(m.type, `${base}Alt${i}`))
    }
  }
  for (const c of commands) {
    offer(c["arg-type"], `${pascal(c.name)}Args`)
    offer(c["ret-type"], `${pascal(c.name)}Result`)
  }
  for (const ev of events) offer(ev["arg-type"], `${pascal(ev.name)}Data`)

  // one representative entry per class
  const rep = new Map<number, SchemaInfo>()
  for (const t of types) if (isNamed(t) && !rep.has(cls.get(t.name)!)) rep.set(cls.get(t.name)!, t)
  const used = new Set<string>(RESERVED)
  used.delete("Empty")
  const className = new Map<number, string>()
  for (const c of order) {
    const want = candidate.get(c)!.name
    if (want === "Empty" && !used.has("Empty")) {
      className.set(c, "Empty")
      used.add("Empty")
      continue
    }
    let name = want
    for (let i = 2; used.has(name) || used.has(`${name}Base`); i++) name = `${want}${i}`
    used.add(name)
    const r = rep.get(c)
    if (r && r["meta-type"] === "object" && r.variants) used.add(`${name}Base`)
    className.set(c, name)
  }

  // --- references: TypeScript types, and the names the runtime registry knows ---
  const builtinTs: Record<string, string> = {
    str: "string",
    int: "number",
    number: "number",
    bool: "boolean",
    null: "null",
    any: "unknown"
  }
  const tsRef = (typeName: string): string => {
    const e = get(typeName)
    if (e["meta-type"] === "builtin") return builtinTs[e.name] ?? "unknown"
    if (e["meta-type"] === "array") return `ReadonlyArray<${tsRef(e["element-type"])}>`
    return className.get(cls.get(typeName)!)!
  }
  const ref = (typeName: string): string => {
    const e = get(typeName)
    if (e["meta-type"] === "builtin") return builtinTs[e.name] ? e.name : "any"
    if (e["meta-type"] === "array") return `[${ref(e["element-type"])}]`
    return className.get(cls.get(typeName)!)!
  }
  const namedChildren = (typeName: string): Array<number> => {
    const e = get(typeName)
    if (e["meta-type"] === "array") return namedChildren(e["element-type"])
    if (isNamed(e)) return [cls.get(typeName)!]
    return []
  }

  // --- emission, in the order types are first reached from the commands and events ---
  const out: Array<string> = []
  const table: Array<string> = []
  const doc = (lines: ReadonlyArray<string>, indent = ""): string =>
    lines.length === 0 ? "" : lines.length === 1
      ? `${indent}/** ${lines[0]} */\n`
      : `${indent}/**\n${lines.map((l) => `${indent} * ${l}`).join("\n")}\n${indent} */\n`
  const memberDoc = (type: string, m: Obj["members"][number]): Array<string> => {
    const lines: Array<string> = []
    const having = memberVersions(type, m.name)
    const requiring = requiredVersions(type, m.name)
    if (having && requiring && having.length === requiring.length) {
      lines.push(`Only in ${versionList(having)}, where it is always present.`)
    } else {
      if (having) lines.push(`Only in ${versionList(having)}.`)
      if (requiring) lines.push(`Required in ${versionList(requiring)}.`)
    }
    return [...lines, ...featureTags(m.features)]
  }
  const memberLines = (type: string, members: ReadonlyArray<Obj["members"][number]>, open: boolean): string => {
    const lines = members.map((m) => {
      const opt = isOptional(m)
      return `${doc(memberDoc(type, m), "  ")}  readonly ${key(m.name)}${opt ? "?" : ""}: ${tsRef(m.type)}${
        opt ? " | undefined" : ""
      }`
    })
    if (open) lines.push("  readonly [property: string]: unknown")
    return lines.join("\n")
  }
  const memberSpecs = (members: ReadonlyArray<Obj["members"][number]>): Array<ReadonlyArray<string | number>> =>
    members.map((m) => (isOptional(m) ? [m.name, ref(m.type), 1] : [m.name, ref(m.type)]))
  const typeDoc = (e: SchemaInfo, name: string): Array<string> => {
    const real = input.realNames.get(e.name)
    if (isEmptyObject(e)) return ["An object without members (what commands without a return value return)."]
    const lines = [real ? `QAPI ${e["meta-type"]} \`${real}\`.` : `QAPI ${e["meta-type"]} (unnamed in the schema: named \`${name}\` here).`]
    if (e["meta-type"] === "enum") {
      const flagged = (e.members ?? []).filter((m) => (m.features ?? []).length > 0)
      if (flagged.length > 0) {
        lines.push(`Values with features: ${flagged.map((m) => `\`${m.name}\` (${(m.features ?? []).join(", ")})`).join(", ")}.`)
      }
      const some = e.values.flatMap((v) => {
        const having = valueVersions(e.name, v)
        return having ? [`\`${v}\` (${versionList(having)})`] : []
      })
      if (some.length > 0) lines.push(`Values of some versions only: ${some.join(", ")}.`)
    }
    if (e["meta-type"] === "object" && e.variants) {
      const some = e.variants.flatMap((v) => {
        const having = caseVersions(e.name, v.case)
        return having ? [`\`${v.case}\` (${versionList(having)})`] : []
      })
      if (some.length > 0) lines.push(`Branches of some versions only: ${some.join(", ")}.`)
    }
    return [...lines, ...featureTags(e.features)]
  }
  const state = new Set<number>()
  const visit = (c: number): void => {
    if (state.has(c)) return
    state.add(c)
    const e = rep.get(c)!
    const name = className.get(c)!
    let text = ""
    let spec: ReadonlyArray<unknown> = []
    switch (e["meta-type"]) {
      case "enum": {
        text = `${doc(typeDoc(e, name))}export type ${name} = ${e.values.map((v) => JSON.stringify(v)).join(" | ") || "never"}\n`
        spec = [name, "e", e.values]
        break
      }
      case "alternate": {
        text = `${doc(typeDoc(e, name))}export type ${name} = ${e.members.map((m) => tsRef(m.type)).join(" | ")}\n`
        spec = [name, "a", e.members.map((m) => ref(m.type))]
        break
      }
      case "object": {
        const open = openTypes.has(e.name)
        if (!e.variants || !e.tag) {
          const body = e.members.length === 0 && !open ? "" : `\n${memberLines(e.name, e.members, open)}\n`
          text = `${doc(typeDoc(e, name))}export interface ${name} {${body}}\n`
          spec = [name, open ? "O" : "o", memberSpecs(e.members)]
          break
        }
        const tag = e.tag
        const tagMember = e.members.find((m) => m.name === tag)
        const tagEnum = tagMember ? get(tagMember.type) : undefined
        const values = tagEnum && tagEnum["meta-type"] === "enum" ? tagEnum.values : e.variants.map((v) => v.case)
        const baseMembers = e.members.filter((m) => m.name !== tag)
        // group the tag values by branch type, in the order the values are declared
        const groups: Array<{ cases: Array<string>; type: string | undefined }> = []
        for (const value of values) {
          const v = e.variants.find((x) => x.case === value)
          const t = v && !isEmptyObject(get(v.type)) ? v.type : undefined
          const group = groups.find((g) =>
            g.type === undefined ? t === undefined : t !== undefined && cls.get(g.type) === cls.get(t)
          )
          if (group) group.cases.push(value)
          else groups.push({ cases: [value], type: t })
        }
        // a tag some versions lack (SevInfo became a union in 9.1): a branch without it, base members only
        if (tagMember && isOptional(tagMember)) groups.push({ cases: [], type: undefined })
        const baseName = `${name}Base`
        const branches = groups.map((g) =>
          g.cases.length === 0
            ? `(${baseName} & { readonly ${key(tag)}?: undefined })`
            : `(${baseName} & { readonly ${key(tag)}: ${g.cases.map((v) => JSON.stringify(v)).join(" | ")} }${
              g.type ? ` & ${tsRef(g.type)}` : ""
            })`
        )
        text = `${doc([`The members every branch of \`${name}\` has.`])}export interface ${baseName} {\n${
          memberLines(e.name, baseMembers, false)
        }\n}\n` + `${doc(typeDoc(e, name))}export type ${name} =\n${branches.map((b) => `  | ${b}`).join("\n")}\n`
        spec = [name, "u", memberSpecs(baseMembers), tag, groups.map((g) => [g.cases, g.type ? ref(g.type) : null])]
        break
      }
      default:
        break
    }
    out.push(text)
    table.push(JSON.stringify(spec))
    for (const child of children(e)) for (const cc of namedChildren(child)) visit(cc)
  }
  const roots: Array<string> = []
  for (const c of commands) roots.push(c["arg-type"], c["ret-type"])
  for (const ev of events) roots.push(ev["arg-type"])
  for (const r of roots) for (const c of namedChildren(r)) visit(c)
  if (!used.has("Empty")) {
    out.unshift(`/** An object without members. */\nexport interface Empty {}\n`)
    table.unshift(JSON.stringify(["Empty", "o", []]))
  }

  // --- tables ---
  const argsTs = (c: SchemaInfoOf<"command">): string => isEmptyObject(get(c["arg-type"])) ? "void" : tsRef(c["arg-type"])
  const argsRef = (c: SchemaInfoOf<"command">): string | null => isEmptyObject(get(c["arg-type"])) ? null : ref(c["arg-type"])
  const cmdDoc = (c: { readonly name: string; readonly features?: ReadonlyArray<string> }, what: string): Array<string> => {
    const lines = [`${what} \`${c.name}\`.`]
    const having = avail?.entries.get(c.name)
    if (having) lines.push(`Only in ${versionList(having)}.`)
    const other = (c.features ?? []).filter((f) => f !== "deprecated" && f !== "unstable")
    if (other.length > 0) lines.push(`Features: ${other.join(", ")}.`)
    return [...lines, ...featureTags(c.features)]
  }
  const guest = input.kind === "qga"
  const infoType = guest ? "GuestCommandInfo" : "CommandInfo"
  let tables = `/** Every named type, by name (see \`schema\`). */\nexport interface Types {\n` +
    [...state].map((c) => className.get(c)!).concat(used.has("Empty") ? [] : ["Empty"]).map((n) => `  readonly ${n}: ${n}`).join("\n") + "\n}\n\n"
  tables += `// One line per type: [name, kind, ...]; the Schemas are built from it on first use.\n` +
    `const registry = B.registry([\n${lines(table)}\n])\n\n` +
    `/** The Schema of a named type (built on first use, then shared). */\n` +
    `export const schema = <K extends keyof Types>(name: K): S.Schema<Types[K]> => registry.get(name)\n\n`
  tables += `/** Arguments and result of every command. */\nexport interface Commands {\n` +
    commands.map((c) =>
      `${doc(cmdDoc(c, "Command"), "  ")}  readonly ${key(c.name)}: { readonly args: ${argsTs(c)}; readonly result: ${
        tsRef(c["ret-type"])
      } }`
    ).join("\n") + "\n}\n\n"
  tables += `/** The name of every command. */\nexport type CommandName = keyof Commands\n` +
    `/** The arguments of a command (\`void\` when it takes none). */\nexport type Args<N extends CommandName> = Commands[N]["args"]\n` +
    `/** The \`return\` value of a command. */\nexport type Result<N extends CommandName> = Commands[N]["result"]\n` +
    `/** The arguments of a command as a parameter list: optional when none are required. */\nexport type ArgsTuple<N extends CommandName> = ArgsTupleOf<Args<N>>\n\n`
  const cmdSpecs = commands.map((c) => {
    const spec: Array<unknown> = [c.name, argsRef(c), ref(c["ret-type"]), c["allow-oob"] === true ? 1 : 0, c.features ?? []]
    if (guest) spec.push(input.noSuccessResponse?.has(c.name) ? 0 : 1)
    return JSON.stringify(spec)
  })
  tables += `/** The Schemas and properties of every command (each built on first use). */\n` +
    `export const commands: { readonly [N in CommandName]: ${infoType}<Args<N>, Result<N>> } = B.commands(registry, [\n${
      lines(cmdSpecs)
    }\n])\n`
  const evSpecs = events.map((ev) =>
    JSON.stringify([ev.name, isEmptyObject(get(ev["arg-type"])) ? null : ref(ev["arg-type"]), ev.features ?? []])
  )
  if (!guest) {
    const dataTs = (ev: SchemaInfoOf<"event">): string =>
      isEmptyObject(get(ev["arg-type"])) ? "Empty | undefined" : tsRef(ev["arg-type"])
    tables += `\n/** The \`data\` of every event (\`Empty | undefined\` for events that carry none). */\nexport interface Events {\n` +
      events.map((ev) => `${doc(cmdDoc(ev, "Event"), "  ")}  readonly ${key(ev.name)}: ${dataTs(ev)}`).join("\n") +
      "\n}\n\n" +
      `/** The name of every event. */\nexport type EventName = keyof Events\n\n` +
      `/** The Schema and features of every event's \`data\` (each built on first use). */\n` +
      `export const events: { readonly [N in EventName]: EventInfo<Events[N]> } = B.events(registry, [\n${lines(evSpecs)}\n])\n`
  }

  const imports = guest
    ? `import type { ArgsTupleOf, GuestCommandInfo } from "../internal/qapi/info.js"`
    : avail
    ? `import type { ArgsTupleOf, CommandInfo, EventInfo, VersionTables } from "../internal/qapi/info.js"`
    : `import type { ArgsTupleOf, CommandInfo, EventInfo } from "../internal/qapi/info.js"`
  const code = [
    `/**\n${input.header.map((l) => ` * ${l}`.trimEnd()).join("\n")}\n *\n * GENERATED by scripts/qapi-gen.ts: do not edit.\n */`,
    `/* eslint-disable */`,
    `import type { Schema as S } from "effect"`,
    imports,
    `import * as B from "../internal/qapi/build.js"`,
    "",
    ...(avail
      ? [
        `/** The newest QEMU version these types were generated from. */`,
        `export const schemaVersion = ${JSON.stringify(input.version)}`,
        `/** Every QEMU version these types were generated from, oldest first. */`,
        `export const versions = ${JSON.stringify(avail.all)} as const`,
        ...(input.extra ?? [])
      ]
      : [
        `/** The QEMU version this module was generated from. */`,
        `export const schemaVersion = ${JSON.stringify(input.version)}`
      ]),
    `/** QEMU's reference documentation of these commands and types. */`,
    `export const documentation = ${JSON.stringify(input.docUrl)}`,
    "",
    out.join("\n"),
    tables
  ].join("\n")
  const stats: EmitStats = {
    commands: commands.length,
    events: events.length,
    schemaTypes: types.filter(isNamed).length,
    emittedTypes: state.size,
    realNamed: [...order].filter((c) => candidate.get(c)!.real).length
  }
  return { code, stats, tables: { types: table, commands: cmdSpecs, events: evSpecs } }
}

/**
 * The module of one version's own schema: only the runtime tables (no
 * TypeScript types), for checking replies and events of a QEMU of exactly
 * that version. Imported on demand, when a connection greets with it.
 */
export const emitVersionTables = (version: string, source: string, tables: EmitTables): string => {
  return [
    `/**`,
    ` * The schema of QEMU ${version} (${source}) as runtime tables, for checking`,
    ` * the replies and events of a QEMU of this version against its own schema.`,
    ` *`,
    ` * GENERATED by scripts/qapi-gen.ts: do not edit.`,
    ` */`,
    `/* eslint-disable */`,
    `import type { CommandInfo, EventInfo } from "../internal/qapi/info.js"`,
    `import * as B from "../internal/qapi/build.js"`,
    "",
    `/** The QEMU version of this schema. */`,
    `export const version = ${JSON.stringify(version)}`,
    "",
    `const registry = B.registry([\n${lines(tables.types)}\n])`,
    "",
    `/** Every command of this version. */`,
    `export const commands: { readonly [name: string]: CommandInfo<unknown, unknown> } = B.commands(registry, [\n${
      lines(tables.commands)
    }\n])`,
    "",
    `/** Every event of this version. */`,
    `export const events: { readonly [name: string]: EventInfo<unknown> } = B.events(registry, [\n${lines(tables.events)}\n])`,
    ""
  ].join("\n")
}
