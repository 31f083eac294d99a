/**
 * Merges the introspections of several QEMU versions into one schema whose
 * types are true for every one of them:
 *
 * - an object's members are the union of each version's; a member is
 *   required only when every version that has the object requires it;
 * - a flat union's branches are the union of each version's;
 * - an enum's values are the union;
 * - a type whose kind changed between versions (`str` in one, an enum in
 *   another) becomes an alternate of the kinds;
 * - commands and events of some versions only are kept.
 *
 * The walk is parallel: a merged type is the tuple of the per-version types
 * found at the same place (the arguments of the same command, the same member
 * of the same object...), memoised by that tuple so recursive types close.
 * Which versions have a member, enum value, command or event is recorded for
 * the documentation. The result is an ordinary `SchemaInfo` list with
 * synthetic type names, ready for `emit`.
 */
import type { MemberInfo, SchemaInfo, SchemaInfoOf } from "../../src/internal/qapi/schemaInfo.js"

export interface VersionInput {
  /** `7.2.22` */
  readonly version: string
  readonly entries: ReadonlyArray<SchemaInfo>
  /** Real names of this version's masked types (from its QMP reference). */
  readonly realNames: ReadonlyMap<string, string>
}

/** Which versions have something, when not all of them do. */
export interface Availability {
  /** Every version, oldest first. */
  readonly all: ReadonlyArray<string>
  /** Commands and events (by name) that some versions lack. */
  readonly entries: ReadonlyMap<string, ReadonlyArray<string>>
  /** Object members (merged type name -> member name -> versions) that some versions lack. */
  readonly members: ReadonlyMap<string, ReadonlyMap<string, ReadonlyArray<string>>>
  /** Members optional only because some versions lack them or do not require them: type -> member -> versions requiring it. */
  readonly requiredIn: ReadonlyMap<string, ReadonlyMap<string, ReadonlyArray<string>>>
  /** Enum values (merged type name -> value -> versions) that some versions lack. */
  readonly values: ReadonlyMap<string, ReadonlyMap<string, ReadonlyArray<string>>>
  /** Union branches (merged type name -> tag value -> versions) that some versions lack. */
  readonly cases: ReadonlyMap<string, ReadonlyMap<string, ReadonlyArray<string>>>
}

export interface Merged {
  readonly entries: ReadonlyArray<SchemaInfo>
  readonly realNames: ReadonlyMap<string, string>
  readonly availability: Availability
}

type Ref = string | undefined

type Kind = "builtin" | "enum" | "object" | "array"

/** Newest first: where versions disagree on order, the newest's order wins. */
const newestFirst = <T>(items: ReadonlyArray<T>): Array<T> => [...items].reverse()

export const merge = (inputs: ReadonlyArray<VersionInput>): Merged => {
  const all = inputs.map((i) => i.version)
  const byName = inputs.map((i) => new Map(i.entries.map((e) => [e.name, e] as const)))
  const out: Array<SchemaInfo> = []
  const realNames = new Map<string, string>()
  const memo = new Map<string, string>()
  const members = new Map<string, Map<string, ReadonlyArray<string>>>()
  const requiredIn = new Map<string, Map<string, ReadonlyArray<string>>>()
  const values = new Map<string, Map<string, ReadonlyArray<string>>>()
  const cases = new Map<string, Map<string, ReadonlyArray<string>>>()
  const entryVersions = new Map<string, ReadonlyArray<string>>()
  const builtins = new Map<string, SchemaInfo>()
  let counter = 0

  const get = (v: number, ref: Ref): SchemaInfo | undefined => (ref === undefined ? undefined : byName[v]!.get(ref))
  const note = (
    table: Map<string, Map<string, ReadonlyArray<string>>>,
    type: string,
    key: string,
    versions: ReadonlyArray<string>
  ) => {
    if (versions.length === all.length) return
    let m = table.get(type)
    if (!m) table.set(type, (m = new Map()))
    m.set(key, versions)
  }
  const builtin = (e: SchemaInfoOf<"builtin">): string => {
    if (!builtins.has(e.name)) {
      builtins.set(e.name, e)
      out.push(e)
    }
    return e.name
  }
  const kindOf = (e: SchemaInfo): Kind | "alternate" => {
    switch (e["meta-type"]) {
      case "builtin":
      case "enum":
      case "object":
      case "array":
      case "alternate":
        return e["meta-type"]
      default:
        throw new Error(`a type cannot be a ${e["meta-type"]} (${e.name})`)
    }
  }
  /** A builtin's group: the same JSON kind merges (`int` with `int`), different ones stay apart. */
  const groupOf = (e: SchemaInfo): string => (e["meta-type"] === "builtin" ? `builtin:${e.name}` : kindOf(e))

  const mergeRefs = (refs: ReadonlyArray<Ref>): string => {
    const key = refs.map((r) => r ?? "").join("|")
    const done = memo.get(key)
    if (done !== undefined) return done
    const infos = refs.map((r, v) => get(v, r))
    const present = infos.flatMap((e, v) => (e ? [v] : []))
    if (present.length === 0) throw new Error(`no version has the type ${key}`)
    const groups = new Set(present.map((v) => groupOf(infos[v]!)))
    if (groups.size === 1 && !groups.has("alternate")) {
      const first = infos[present[0]!]!
      switch (first["meta-type"]) {
        case "builtin": {
          const name = builtin(first)
          memo.set(key, name)
          return name
        }
        case "array": {
          const name = `[${
            mergeRefs(infos.map((e) => (e && e["meta-type"] === "array" ? e["element-type"] : undefined)))
          }]`
          memo.set(key, name)
          if (!out.some((e) => e.name === name)) {
            out.push({ "meta-type": "array", name, "element-type": name.slice(1, -1) })
          }
          return name
        }
        default:
          break
      }
    }
    const name = `m${counter++}`
    memo.set(key, name)
    // the newest real name among the versions that have one
    for (const v of newestFirst(present)) {
      const real = inputs[v]!.realNames.get(refs[v]!)
      if (real !== undefined) {
        realNames.set(name, real)
        break
      }
    }
    if (groups.size === 1 && !groups.has("alternate")) {
      const first = infos[present[0]!]!
      if (first["meta-type"] === "enum") out.push(mergeEnum(name, infos, present))
      else out.push(mergeObject(name, infos, present))
    } else {
      out.push(mergeAlternate(name, infos, present))
    }
    return name
  }

  const features = (lists: ReadonlyArray<ReadonlyArray<string> | undefined>): { features?: ReadonlyArray<string> } => {
    const set = [...new Set(lists.flatMap((l) => l ?? []))]
    return set.length > 0 ? { features: set } : {}
  }

  const mergeEnum = (name: string, infos: ReadonlyArray<SchemaInfo | undefined>, present: ReadonlyArray<number>) => {
    const enums = infos.map((e) => (e && e["meta-type"] === "enum" ? e : undefined))
    const order: Array<string> = []
    for (const v of newestFirst(present)) for (const value of enums[v]!.values) if (!order.includes(value)) order.push(value)
    const memberFeatures = new Map<string, Array<string>>()
    for (const v of present) {
      for (const m of enums[v]!.members ?? []) {
        for (const f of m.features ?? []) {
          const list = memberFeatures.get(m.name) ?? []
          if (!list.includes(f)) list.push(f)
          memberFeatures.set(m.name, list)
        }
      }
    }
    for (const value of order) {
      note(values, name, value, present.filter((v) => enums[v]!.values.includes(value)).map((v) => all[v]!))
    }
    const e: SchemaInfoOf<"enum"> = {
      "meta-type": "enum",
      name,
      values: order,
      members: order.map((value) => {
        const f = memberFeatures.get(value)
        return f ? { name: value, features: f } : { name: value }
      }),
      ...features(present.map((v) => enums[v]!.features))
    }
    return e
  }

  const mergeObject = (name: string, infos: ReadonlyArray<SchemaInfo | undefined>, present: ReadonlyArray<number>) => {
    const objects = infos.map((e) => (e && e["meta-type"] === "object" ? e : undefined))
    const order: Array<string> = []
    for (const v of newestFirst(present)) for (const m of objects[v]!.members) if (!order.includes(m.name)) order.push(m.name)
    const merged: Array<MemberInfo> = order.map((memberName) => {
      const per = objects.map((o) => o?.members.find((m) => m.name === memberName))
      const having = present.filter((v) => per[v] !== undefined)
      const requiring = having.filter((v) => !Object.prototype.hasOwnProperty.call(per[v]!, "default"))
      note(members, name, memberName, having.map((v) => all[v]!))
      if (requiring.length > 0 && requiring.length < present.length) {
        note(requiredIn, name, memberName, requiring.map((v) => all[v]!))
      }
      const type = mergeRefs(per.map((m) => m?.type))
      const optional = requiring.length < present.length
      return {
        name: memberName,
        type,
        ...(optional ? { default: null } : {}),
        ...features(per.map((m) => m?.features))
      }
    })
    const tags = [...new Set(present.flatMap((v) => (objects[v]!.tag === undefined ? [] : [objects[v]!.tag!])))]
    if (tags.length > 1) throw new Error(`the union ${name} changed its tag between versions: ${tags.join(", ")}`)
    const e: SchemaInfoOf<"object"> = { "meta-type": "object", name, members: merged, ...features(present.map((v) => objects[v]!.features)) }
    if (tags.length === 0) return e
    // branches: the union of the versions' cases (a case without a branch type has no members of its own)
    const caseOrder: Array<string> = []
    for (const v of newestFirst(present)) {
      for (const variant of objects[v]!.variants ?? []) if (!caseOrder.includes(variant.case)) caseOrder.push(variant.case)
    }
    const variants = caseOrder.map((c) => {
      const per = objects.map((o) => o?.variants?.find((x) => x.case === c)?.type)
      note(cases, name, c, present.filter((v) => per[v] !== undefined).map((v) => all[v]!))
      return { case: c, type: mergeRefs(per) }
    })
    return { ...e, tag: tags[0]!, variants }
  }

  const mergeAlternate = (name: string, infos: ReadonlyArray<SchemaInfo | undefined>, present: ReadonlyArray<number>) => {
    // every version's branches (an alternate's members, or the type itself), grouped by kind
    const byGroup = new Map<string, Array<Ref>>()
    for (const v of present) {
      const e = infos[v]!
      const branches = e["meta-type"] === "alternate" ? e.members.map((m) => m.type) : [e.name]
      for (const t of branches) {
        const group = groupOf(byName[v]!.get(t)!)
        const refs = byGroup.get(group) ?? infos.map(() => undefined)
        if (refs[v] !== undefined) throw new Error(`${name}: two ${group} branches in QEMU ${all[v]}`)
        refs[v] = t
        byGroup.set(group, refs)
      }
    }
    const e: SchemaInfoOf<"alternate"> = {
      "meta-type": "alternate",
      name,
      members: [...byGroup.values()].map((refs) => ({ type: mergeRefs(refs) })),
      ...features(present.map((v) => infos[v]!.features))
    }
    return e
  }

  // commands and events: the union of names, in the newest version's order, then older ones'
  const entryOrder: Array<string> = []
  const seen = new Set<string>()
  for (const v of newestFirst(inputs.map((_, i) => i))) {
    for (const e of inputs[v]!.entries) {
      if ((e["meta-type"] === "command" || e["meta-type"] === "event") && !seen.has(e.name)) {
        seen.add(e.name)
        entryOrder.push(e.name)
      }
    }
  }
  const entries: Array<SchemaInfo> = []
  for (const entryName of entryOrder) {
    const per = byName.map((m) => {
      const e = m.get(entryName)
      return e && (e["meta-type"] === "command" || e["meta-type"] === "event") ? e : undefined
    })
    const present = per.flatMap((e, v) => (e ? [v] : []))
    const versions = present.map((v) => all[v]!)
    if (versions.length < all.length) entryVersions.set(entryName, versions)
    const first = per[present[0]!]!
    const args = mergeRefs(per.map((e) => e?.["arg-type"]))
    const f = features(per.map((e) => e?.features))
    if (first["meta-type"] === "event") {
      entries.push({ "meta-type": "event", name: entryName, "arg-type": args, ...f })
    } else {
      const commands = per.map((e) => (e && e["meta-type"] === "command" ? e : undefined))
      const ret = mergeRefs(commands.map((e) => e?.["ret-type"]))
      const oob = present.some((v) => commands[v]?.["allow-oob"] === true)
      entries.push({
        "meta-type": "command",
        name: entryName,
        "arg-type": args,
        "ret-type": ret,
        ...(oob ? { "allow-oob": true } : {}),
        ...f
      })
    }
  }
  return {
    entries: [...entries, ...out],
    realNames,
    availability: { all, entries: entryVersions, members, requiredIn, values, cases }
  }
}
