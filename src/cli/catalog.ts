/**
 * What the shell knows about the peer's commands, from QEMU's live
 * `query-qmp-schema` (or, for the guest agent, the names `guest-info`
 * lists): command and event names, argument names (nested objects, flat
 * unions and alternates included) and enum values. Drives Tab completion
 * and the `schema` comparison. Pure.
 *
 * @since 0.2.0
 */

/**
 * One entry of `query-qmp-schema` (only the members used here).
 *
 * @since 0.2.0
 * @category models
 */
export interface SchemaEntry {
  readonly name: string
  readonly "meta-type": string
  readonly "arg-type"?: string
  readonly "ret-type"?: string
  readonly "element-type"?: string
  readonly "json-type"?: string
  readonly members?: ReadonlyArray<{ readonly name?: string; readonly type?: string; readonly default?: unknown }>
  readonly tag?: string
  readonly variants?: ReadonlyArray<{ readonly case: string; readonly type: string }>
  readonly values?: ReadonlyArray<string>
}

/**
 * An argument a command (or a nested object) accepts.
 *
 * @since 0.2.0
 * @category models
 */
export interface Member {
  readonly name: string
  /** Whether it is an object whose members can be given with dotted keys. */
  readonly object: boolean
  /** Enum values (or `true`/`false` for a boolean), when known. */
  readonly values: ReadonlyArray<string>
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Catalog {
  /** Command names, sorted. */
  readonly commands: ReadonlyArray<string>
  /** Event names, sorted (empty when unknown). */
  readonly events: ReadonlyArray<string>
  /**
   * The members at a dotted path below a command's arguments. `given` (dotted
   * key → value typed so far) narrows a union to the variant its tag selects.
   */
  readonly members: (
    command: string,
    path: ReadonlyArray<string>,
    given?: ReadonlyMap<string, string>
  ) => ReadonlyArray<Member>
  /**
   * Help on a command or event (arguments, types, enum values), or the list
   * of commands without a name; `undefined` for an unknown name.
   */
  readonly help: (name?: string, width?: number) => string | undefined
}

/**
 * A catalog that knows nothing (HMP mode, or before the schema arrived).
 *
 * @since 0.2.0
 * @category constructors
 */
export const empty: Catalog = { commands: [], events: [], members: () => [], help: (name) => name ? undefined : "" }

const columns = (names: ReadonlyArray<string>, width = 78): string => {
  if (names.length === 0) return ""
  const cell = Math.max(...names.map((n) => n.length)) + 2
  const perLine = Math.max(1, Math.floor(width / cell))
  const lines: Array<string> = []
  for (let i = 0; i < names.length; i += perLine) {
    lines.push(names.slice(i, i + perLine).map((n) => n.padEnd(cell)).join("").trimEnd())
  }
  return lines.join("\n")
}

const listHelp = (commands: ReadonlyArray<string>, width?: number): string =>
  `commands (${commands.length}); 'help COMMAND' for its arguments:\n${columns(commands, width)}`

/**
 * Command names only (the guest agent's `guest-info`).
 *
 * @since 0.2.0
 * @category constructors
 */
export const fromNames = (commands: ReadonlyArray<string>): Catalog => ({
  commands: [...new Set(commands)].sort(),
  events: [],
  members: () => [],
  help: (name, width) =>
    name === undefined
      ? listHelp([...new Set(commands)].sort(), width)
      : commands.includes(name)
      ? `${name}: arguments unknown (no schema)`
      : undefined
})

const isEntry = (u: unknown): u is SchemaEntry =>
  typeof u === "object" && u !== null && typeof (u as { name?: unknown }).name === "string" &&
  typeof (u as { "meta-type"?: unknown })["meta-type"] === "string"

// The schema's entries by name.
type Types = ReadonlyMap<string, SchemaEntry>

// Object members of a type, following alternates and flat-union variants (depth-bounded);
// `tagValue` gives the value of a union's tag member, when the user typed it.
const objectMembers = (
  types: Types,
  typeName: string,
  tagValue: (tag: string) => string | undefined = () => undefined,
  depth = 0
): Array<{ name: string; type: string }> => {
  const entry = types.get(typeName)
  if (!entry || depth > 8) return []
  switch (entry["meta-type"]) {
    case "object": {
      const own = (entry.members ?? []).flatMap((m) => m.name && m.type ? [{ name: m.name, type: m.type }] : [])
      const chosen = entry.tag === undefined ? undefined : tagValue(entry.tag)
      const variants = (entry.variants ?? [])
        .filter((v) => chosen === undefined || v.case === chosen)
        .flatMap((v) => objectMembers(types, v.type, tagValue, depth + 1))
      return [...own, ...variants]
    }
    case "alternate":
      return (entry.members ?? []).flatMap((m) => m.type ? objectMembers(types, m.type, tagValue, depth + 1) : [])
    default:
      return []
  }
}

const isObject = (types: Types, typeName: string, depth = 0): boolean => {
  const entry = types.get(typeName)
  if (!entry || depth > 8) return false
  if (entry["meta-type"] === "object") return true
  return entry["meta-type"] === "alternate" &&
    (entry.members ?? []).some((m) => m.type !== undefined && isObject(types, m.type, depth + 1))
}

const valuesOf = (types: Types, typeName: string, depth = 0): Array<string> => {
  const entry = types.get(typeName)
  if (!entry || depth > 8) return []
  switch (entry["meta-type"]) {
    case "enum":
      return [...(entry.values ?? (entry.members ?? []).flatMap((m) => m.name ? [m.name] : []))]
    case "builtin":
      return entry.name === "bool" ? ["true", "false"] : []
    case "alternate":
      return (entry.members ?? []).flatMap((m) => m.type ? valuesOf(types, m.type, depth + 1) : [])
    default:
      return []
  }
}

// `Catalog.members`: the members at `path` below a command's arguments, unions narrowed by `given`.
const membersAt = (
  types: Types,
  command: string,
  path: ReadonlyArray<string>,
  given: ReadonlyMap<string, string> = new Map()
): ReadonlyArray<Member> => {
  const entry = types.get(command)
  if (!entry || entry["meta-type"] !== "command" || !entry["arg-type"]) return []
  const at = (prefix: ReadonlyArray<string>) => (tag: string) => given.get([...prefix, tag].join("."))
  let current = entry["arg-type"]
  for (let i = 0; i < path.length; i++) {
    const next = objectMembers(types, current, at(path.slice(0, i))).find((m) => m.name === path[i])
    if (!next) return []
    current = next.type
  }
  const seen = new Set<string>()
  const result: Array<Member> = []
  for (const m of objectMembers(types, current, at(path))) {
    if (seen.has(m.name)) continue
    seen.add(m.name)
    result.push({ name: m.name, object: isObject(types, m.type), values: valuesOf(types, m.type) })
  }
  return result.sort((a, b) => a.name.localeCompare(b.name))
}

// A type, readable: builtins by name, enums with their values, arrays as `[T]`, objects by members.
const typeText = (types: Types, typeName: string, depth = 0): string => {
  const entry = types.get(typeName)
  if (!entry) return typeName
  switch (entry["meta-type"]) {
    case "builtin":
      return entry.name
    case "enum":
      return `enum (${valuesOf(types, typeName).join(" | ")})`
    case "array":
      return `[${entry["element-type"] ? typeText(types, entry["element-type"], depth + 1) : "?"}]`
    case "alternate":
      return depth > 3
        ? "alternate"
        : (entry.members ?? []).flatMap((m) => m.type ? [typeText(types, m.type, depth + 1)] : []).join(" or ")
    case "object":
      return depth > 3 || (entry.members ?? []).length + (entry.variants ?? []).length === 0 ? "object" : "object:"
    default:
      return entry["meta-type"]
  }
}

// One line per member, nested objects indented below (depth-bounded).
const memberLines = (types: Types, typeName: string, indent: string, depth: number): Array<string> => {
  const entry = types.get(typeName)
  if (!entry || entry["meta-type"] !== "object" || depth > 3) return []
  const lines: Array<string> = []
  for (const m of entry.members ?? []) {
    if (!m.name || !m.type) continue
    const optional = "default" in m ? " (optional)" : ""
    const text = typeText(types, m.type, depth)
    lines.push(`${indent}${m.name}: ${text}${optional}`)
    if (text === "object:") lines.push(...memberLines(types, m.type, `${indent}  `, depth + 1))
  }
  if (entry.tag !== undefined && (entry.variants ?? []).length > 0) {
    for (const v of entry.variants ?? []) {
      const inner = memberLines(types, v.type, `${indent}    `, depth + 1)
      lines.push(`${indent}  when ${entry.tag}=${v.case}:${inner.length === 0 ? " (nothing more)" : ""}`, ...inner)
    }
  }
  return lines
}

// `Catalog.help` for one command or event: its arguments (or data) and, for a command, what it returns.
const entryHelp = (types: Types, name: string): string | undefined => {
  const entry = types.get(name)
  if (!entry || (entry["meta-type"] !== "command" && entry["meta-type"] !== "event")) return undefined
  const isCommand = entry["meta-type"] === "command"
  const args = entry["arg-type"] ? memberLines(types, entry["arg-type"], "  ", 0) : []
  const lines = [`${isCommand ? "command" : "event"} ${name}`]
  lines.push(args.length === 0 ? `  (no ${isCommand ? "arguments" : "data"})` : `${isCommand ? "arguments" : "data"}:`)
  if (args.length > 0) lines.push(...args)
  if (isCommand && entry["ret-type"]) {
    const ret = typeText(types, entry["ret-type"])
    lines.push(`returns: ${ret}`)
    if (ret === "object:") lines.push(...memberLines(types, entry["ret-type"], "  ", 0))
  }
  return lines.join("\n")
}

/**
 * Reads the reply of `query-qmp-schema`; anything that is not a list of
 * entries gives an empty catalog.
 *
 * @since 0.2.0
 * @category constructors
 */
export const fromSchema = (schema: unknown): Catalog => {
  if (!Array.isArray(schema)) return empty
  const types = new Map<string, SchemaEntry>()
  const commands: Array<string> = []
  const events: Array<string> = []
  for (const entry of schema) {
    if (!isEntry(entry)) continue
    types.set(entry.name, entry)
    if (entry["meta-type"] === "command") commands.push(entry.name)
    if (entry["meta-type"] === "event") events.push(entry.name)
  }
  return {
    commands: commands.sort(),
    events: events.sort(),
    members: (command, path, given) => membersAt(types, command, path, given),
    help: (name, width) => name === undefined ? listHelp(commands, width) : entryHelp(types, name)
  }
}

/**
 * HMP's command names (and `info` subcommands) from the output of HMP's
 * `help` and `help info`: `name|alias [args] -- text`, one a line.
 *
 * @since 0.3.0
 * @category constructors
 */
export const fromHmpHelp = (help: string, info = ""): Catalog => {
  const names = (text: string, skip = "") =>
    [
      ...new Set(
        text.split(/\r?\n/).flatMap((line) => {
          const first = line.trim().split(/\s+/)[0] ?? ""
          const word = skip && first === skip ? line.trim().split(/\s+/)[1] ?? "" : first
          return word === "" || word.startsWith("-") ? [] : word.split("|").filter((w) => /^[\w.-]+$/.test(w))
        })
      )
    ].sort()
  const commands = names(help)
  const infos = names(info, "info")
  return {
    commands,
    events: [],
    members: (command) => command === "info" || command === "i" ? infos.map((name) => ({ name, object: false, values: [] })) : [],
    help: (name, width) => name === undefined ? listHelp(commands, width) : undefined
  }
}

/**
 * Readline's completer in HMP mode: a command name, or after `info`, its subcommand.
 *
 * @since 0.3.0
 * @category completion
 */
export const completeHmp = (catalog: Catalog, line: string): [Array<string>, string] => {
  const words = line.trimStart().split(/\s+/)
  const word = words[words.length - 1] ?? ""
  if (words.length <= 1) return [catalog.commands.filter((c) => c.startsWith(word)), word]
  if (words.length === 2) {
    return [catalog.members(words[0]!, []).map((m) => m.name).filter((n) => n.startsWith(word)), word]
  }
  return [[], word]
}

/**
 * Readline's completer: the candidates for the word under the cursor (at the
 * end of `line`) and that word. The first word is a command name; later words
 * are `key=` (`key.` for objects, dotted paths followed) or, after `=`, an
 * enum value.
 *
 * @since 0.2.0
 * @category completion
 */
export const complete = (catalog: Catalog, line: string): [Array<string>, string] => {
  const words = line.trimStart().split(/\s+/)
  const word = words[words.length - 1] ?? ""
  if (words.length <= 1) {
    return [catalog.commands.filter((c) => c.startsWith(word)), word]
  }
  const command = words[0] === "transaction(" ? "" : words[0]!
  const given = new Map<string, string>()
  for (const w of words.slice(1, -1)) {
    const i = w.indexOf("=")
    if (i > 0) given.set(w.slice(0, i), w.slice(i + 1))
  }
  const eq = word.indexOf("=")
  if (eq >= 0) {
    const path = word.slice(0, eq).split(".")
    const member = catalog.members(command, path.slice(0, -1), given).find((m) => m.name === path[path.length - 1])
    const partial = word.slice(eq + 1)
    const values = (member?.values ?? []).filter((v) => v.startsWith(partial))
    return [values.map((v) => `${word.slice(0, eq + 1)}${v}`), word]
  }
  const path = word.split(".")
  const partial = path[path.length - 1]!
  const prefix = path.slice(0, -1)
  const candidates = catalog.members(command, prefix, given)
    .filter((m) => m.name.startsWith(partial))
    .flatMap((m) => {
      const key = [...prefix, m.name].join(".")
      if (given.has(key)) return []
      return m.object ? [`${key}=`, `${key}.`] : [`${key}=`]
    })
  return [candidates, word]
}
