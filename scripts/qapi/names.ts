/**
 * Gives masked introspection types their real QAPI names, by walking from
 * each command and event down the member types in both the introspection and
 * the documentation facts (see `manpage.ts`). A name is taken only when the
 * members (or enum values) agree, so a wrong match cannot slip in silently.
 */
import type { SchemaInfo } from "../../src/internal/qapi/schemaInfo.js"
import type { DocEntry, DocFacts, DocMember } from "./manpage.js"

export const recoverNames = (entries: ReadonlyArray<SchemaInfo>, facts: DocFacts): Map<string, string> => {
  const byName = new Map(entries.map((e) => [e.name, e] as const))
  const docTypes = new Map<string, DocEntry>()
  const docCommands = new Map<string, DocEntry>()
  const docEvents = new Map<string, DocEntry>()
  for (const d of facts.entries) {
    if (d.kind === "Command") docCommands.set(d.name, d)
    else if (d.kind === "Event") docEvents.set(d.name, d)
    else if (!docTypes.has(d.name)) docTypes.set(d.name, d)
  }
  const flat = (d: DocEntry, depth = 0): Array<DocMember> =>
    depth > 20 ? [] : [
      ...d.bases.flatMap((b) => {
        const base = docTypes.get(b)
        return base ? flat(base, depth + 1) : []
      }),
      ...d.members
    ]
  const names = new Map<string, string>()
  const subset = (a: ReadonlyArray<string>, b: ReadonlyArray<string>): boolean => {
    const set = new Set(b)
    return a.every((x) => set.has(x)) && (a.length > 0 || b.length === 0)
  }

  const walk = (typeName: string, docType: string): void => {
    const e = byName.get(typeName)
    if (!e) return
    if (docType.startsWith("array of ")) {
      if (e["meta-type"] === "array") walk(e["element-type"], docType.slice("array of ".length))
      return
    }
    const d = docTypes.get(docType)
    if (!d || names.has(typeName)) return
    if (e["meta-type"] === "object" && d.kind === "Object") {
      const members = flat(d)
      if (!subset(e.members.map((m) => m.name), members.map((m) => m.name))) return
      names.set(typeName, d.name)
      for (const m of e.members) {
        const dm = members.find((x) => x.name === m.name)
        if (dm) walk(m.type, dm.type)
      }
      for (const v of e.variants ?? []) {
        const dv = d.variants.find((x) => x.case === v.case)
        if (dv) walk(v.type, dv.type)
      }
    } else if (e["meta-type"] === "enum" && d.kind === "Enum") {
      if (subset(e.values, d.values)) names.set(typeName, d.name)
    } else if (e["meta-type"] === "alternate" && d.kind === "Alternate") {
      if (e.members.length !== d.members.length) return
      names.set(typeName, d.name)
      e.members.forEach((m, i) => walk(m.type, d.members[i]!.type))
    }
  }
  const walkMembers = (typeName: string, d: DocEntry): void => {
    if (d.bases.length === 1 && d.members.length === 0) return walk(typeName, d.bases[0]!)
    const e = byName.get(typeName)
    if (!e || e["meta-type"] !== "object") return
    const members = flat(d)
    for (const m of e.members) {
      const dm = members.find((x) => x.name === m.name)
      if (dm) walk(m.type, dm.type)
    }
  }

  for (const e of entries) {
    if (e["meta-type"] === "command") {
      const d = docCommands.get(e.name)
      if (!d) continue
      walkMembers(e["arg-type"], d)
      const ret = byName.get(e["ret-type"])
      const target = ret && ret["meta-type"] === "array" ? ret["element-type"] : e["ret-type"]
      for (const word of d.returnWords) {
        if (names.has(target)) break
        if (docTypes.has(word)) walk(target, word)
      }
    } else if (e["meta-type"] === "event") {
      const d = docEvents.get(e.name)
      if (d) walkMembers(e["arg-type"], d)
    }
  }
  const argTypes = new Set(
    entries.flatMap((e) => (e["meta-type"] === "command" || e["meta-type"] === "event" ? [e["arg-type"]] : []))
  )
  // What the walk could not reach (prose "Returns", renamed arguments): a
  // type whose members (or values) match exactly one unused documented type.
  for (let changed = true; changed;) {
    changed = false
    const usedNames = new Set(names.values())
    const signature = (keys: ReadonlyArray<string>): string => JSON.stringify([...keys].sort())
    const candidates = new Map<string, Array<DocEntry>>()
    for (const d of docTypes.values()) {
      if (usedNames.has(d.name)) continue
      const sig = d.kind === "Enum" ? `E${signature(d.values)}` : d.kind === "Object" ? `O${signature(flat(d).map((m) => m.name))}` : ""
      if (sig === "" || sig === "O[]" || sig === "E[]") continue
      candidates.set(sig, [...(candidates.get(sig) ?? []), d])
    }
    for (const e of entries) {
      // an argument type that the walk did not name is implicit (`'data': {...}`): it has no name
      if (names.has(e.name) || argTypes.has(e.name)) continue
      const sig = e["meta-type"] === "enum"
        ? `E${signature(e.values)}`
        : e["meta-type"] === "object" ? `O${signature(e.members.map((m) => m.name))}` : ""
      const found = candidates.get(sig)
      if (found?.length === 1 && !new Set(names.values()).has(found[0]!.name)) {
        walk(e.name, found[0]!.name)
        changed = changed || names.has(e.name)
      }
    }
  }
  return names
}
