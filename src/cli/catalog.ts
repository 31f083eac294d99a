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
  readonly members?: ReadonlyArray<{ readonly name?: string; readonly type?: string }>
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
}

/**
 * A catalog that knows nothing (HMP mode, or before the schema arrived).
 *
 * @since 0.2.0
 * @category constructors
 */
export const empty: Catalog = { commands: [], events: [], members: () => [] }

/**
 * Command names only (the guest agent's `guest-info`).
 *
 * @since 0.2.0
 * @category constructors
 */
export const fromNames = (commands: ReadonlyArray<string>): Catalog => ({
  commands: [...new Set(commands)].sort(),
  events: [],
  members: () => []
})

const isEntry = (u: unknown): u is SchemaEntry =>
  typeof u === "object" && u !== null && typeof (u as { name?: unknown }).name === "string" &&
  typeof (u as { "meta-type"?: unknown })["meta-type"] === "string"

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

  // Object members of a type, following alternates and flat-union variants (depth-bounded);
  // `tagValue` gives the value of a union's tag member, when the user typed it.
  const objectMembers = (
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
          .flatMap((v) => objectMembers(v.type, tagValue, depth + 1))
        return [...own, ...variants]
      }
      case "alternate":
        return (entry.members ?? []).flatMap((m) => m.type ? objectMembers(m.type, tagValue, depth + 1) : [])
      default:
        return []
    }
  }

  const isObject = (typeName: string, depth = 0): boolean => {
    const entry = types.get(typeName)
    if (!entry || depth > 8) return false
    if (entry["meta-type"] === "object") return true
    return entry["meta-type"] === "alternate" &&
      (entry.members ?? []).some((m) => m.type !== undefined && isObject(m.type, depth + 1))
  }

  const valuesOf = (typeName: string, depth = 0): Array<string> => {
    const entry = types.get(typeName)
    if (!entry || depth > 8) return []
    switch (entry["meta-type"]) {
      case "enum":
        return [...(entry.values ?? (entry.members ?? []).flatMap((m) => m.name ? [m.name] : []))]
      case "builtin":
        return entry.name === "bool" ? ["true", "false"] : []
      case "alternate":
        return (entry.members ?? []).flatMap((m) => m.type ? valuesOf(m.type, depth + 1) : [])
      default:
        return []
    }
  }

  const members = (
    command: string,
    path: ReadonlyArray<string>,
    given: ReadonlyMap<string, string> = new Map()
  ): ReadonlyArray<Member> => {
    const entry = types.get(command)
    if (!entry || entry["meta-type"] !== "command" || !entry["arg-type"]) return []
    const at = (prefix: ReadonlyArray<string>) => (tag: string) => given.get([...prefix, tag].join("."))
    let current = entry["arg-type"]
    for (let i = 0; i < path.length; i++) {
      const next = objectMembers(current, at(path.slice(0, i))).find((m) => m.name === path[i])
      if (!next) return []
      current = next.type
    }
    const seen = new Set<string>()
    const result: Array<Member> = []
    for (const m of objectMembers(current, at(path))) {
      if (seen.has(m.name)) continue
      seen.add(m.name)
      result.push({ name: m.name, object: isObject(m.type), values: valuesOf(m.type) })
    }
    return result.sort((a, b) => a.name.localeCompare(b.name))
  }

  return { commands: commands.sort(), events: events.sort(), members }
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
