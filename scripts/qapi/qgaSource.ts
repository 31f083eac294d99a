/**
 * A small reader for the QAPI *source* language (the guest agent's
 * `qapi-schema.json`: JSON-like, single quotes, `#` comments), and its
 * conversion to the introspection shape (`SchemaInfo`) so that one emitter
 * serves QMP and the guest agent. Comments (the documentation prose) are
 * skipped, never kept.
 */
import type { MemberInfo, SchemaInfo } from "../../src/internal/qapi/schemaInfo.js"

export type QapiValue = string | boolean | ReadonlyArray<QapiValue> | { readonly [key: string]: QapiValue }
type Dict = { readonly [key: string]: QapiValue }

export const parseQapiSource = (text: string): Array<Dict> => {
  let i = 0
  const fail = (what: string): never => {
    const line = text.slice(0, i).split("\n").length
    throw new Error(`QAPI schema, line ${line}: ${what}`)
  }
  const skip = () => {
    for (;;) {
      while (i < text.length && /\s/.test(text[i]!)) i++
      if (text[i] === "#") {
        while (i < text.length && text[i] !== "\n") i++
      } else return
    }
  }
  const value = (): QapiValue => {
    skip()
    const ch = text[i]
    if (ch === "{") {
      i++
      const out: Record<string, QapiValue> = {}
      skip()
      if (text[i] === "}") {
        i++
        return out
      }
      for (;;) {
        const k = value()
        if (typeof k !== "string") fail("key is not a string")
        skip()
        if (text[i] !== ":") fail("expected ':'")
        i++
        out[k as string] = value()
        skip()
        if (text[i] === ",") {
          i++
          continue
        }
        if (text[i] === "}") {
          i++
          return out
        }
        fail("expected ',' or '}'")
      }
    }
    if (ch === "[") {
      i++
      const out: Array<QapiValue> = []
      skip()
      if (text[i] === "]") {
        i++
        return out
      }
      for (;;) {
        out.push(value())
        skip()
        if (text[i] === ",") {
          i++
          continue
        }
        if (text[i] === "]") {
          i++
          return out
        }
        fail("expected ',' or ']'")
      }
    }
    if (ch === "'" || ch === "\"") {
      const end = text.indexOf(ch, i + 1)
      if (end < 0) fail("unterminated string")
      const s = text.slice(i + 1, end)
      i = end + 1
      return s
    }
    if (text.startsWith("true", i)) {
      i += 4
      return true
    }
    if (text.startsWith("false", i)) {
      i += 5
      return false
    }
    return fail(`unexpected ${JSON.stringify(ch ?? "end of input")}`)
  }
  const out: Array<Dict> = []
  for (skip(); i < text.length; skip()) {
    const v = value()
    // our snapshot is one JSON array of the expressions
    for (const x of Array.isArray(v) ? v : [v]) {
      if (typeof x !== "object" || Array.isArray(x)) fail("top-level expression is not an object")
      out.push(x as Dict)
    }
  }
  return out
}

/** The snapshot: one expression per line, comments dropped. */
export const formatQapiSource = (exprs: ReadonlyArray<Dict>): string =>
  `[\n${exprs.map((e) => `  ${JSON.stringify(e)}`).join(",\n")}\n]\n`

const INT_TYPES = new Set(["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "size"])
const BUILTINS: Record<string, SchemaInfo & { readonly "meta-type": "builtin" }> = {
  str: { name: "str", "meta-type": "builtin", "json-type": "string" },
  int: { name: "int", "meta-type": "builtin", "json-type": "int" },
  number: { name: "number", "meta-type": "builtin", "json-type": "number" },
  bool: { name: "bool", "meta-type": "builtin", "json-type": "boolean" },
  null: { name: "null", "meta-type": "builtin", "json-type": "null" },
  any: { name: "any", "meta-type": "builtin", "json-type": "value" }
}

export interface Converted {
  readonly entries: Array<SchemaInfo>
  /** Names of the schema's named types (the implicit ones get derived names). */
  readonly realNames: Map<string, string>
  readonly noSuccessResponse: Set<string>
}

/** `defined`: the build's configuration symbols (`CONFIG_POSIX`...). */
export const toSchemaInfo = (exprs: ReadonlyArray<Dict>, defined: ReadonlySet<string>): Converted => {
  const holds = (cond: QapiValue | undefined): boolean => {
    if (cond === undefined) return true
    if (typeof cond === "string") return defined.has(cond)
    if (Array.isArray(cond)) return cond.every(holds)
    if (typeof cond === "object") {
      const c = cond as Dict
      if (c.all !== undefined) return (c.all as ReadonlyArray<QapiValue>).every(holds)
      if (c.any !== undefined) return (c.any as ReadonlyArray<QapiValue>).some(holds)
      if (c.not !== undefined) return !holds(c.not)
    }
    return true
  }
  const live = exprs.filter((e) => holds(e.if))
  const named = new Map<string, Dict>()
  for (const e of live) {
    for (const k of ["struct", "enum", "union", "alternate"]) if (typeof e[k] === "string") named.set(e[k] as string, e)
  }
  const entries: Array<SchemaInfo> = []
  const emitted = new Set<string>()
  const add = (e: SchemaInfo) => {
    if (!emitted.has(e.name)) {
      emitted.add(e.name)
      entries.push(e)
    }
  }
  const features = (v: QapiValue | undefined): { features?: ReadonlyArray<string> } => {
    if (!Array.isArray(v) || v.length === 0) return {}
    return { features: v.map((f) => (typeof f === "string" ? f : String((f as Dict).name))) }
  }
  const typeRef = (t: QapiValue): string => {
    if (Array.isArray(t)) {
      const el = typeRef(t[0]!)
      const name = `[${el}]`
      add({ name, "meta-type": "array", "element-type": el })
      return name
    }
    const s = t as string
    if (INT_TYPES.has(s)) return typeRef("int")
    if (BUILTINS[s]) {
      add(BUILTINS[s]!)
      return s
    }
    define(s)
    return s
  }
  const members = (data: QapiValue | undefined): Array<MemberInfo> => {
    if (data === undefined) return []
    if (typeof data === "string") return baseMembers(data)
    const out: Array<MemberInfo> = []
    for (const [k, v] of Object.entries(data as Dict)) {
      const spec: Dict = typeof v === "object" && !Array.isArray(v) ? (v as Dict) : { type: v }
      if (!holds(spec.if)) continue
      const optional = k.startsWith("*")
      const m: MemberInfo = {
        name: optional ? k.slice(1) : k,
        type: typeRef(spec.type!),
        ...(optional ? { default: null } : {}),
        ...features(spec.features)
      }
      out.push(m)
    }
    return out
  }
  const baseMembers = (name: string): Array<MemberInfo> => {
    const e = named.get(name)
    if (!e) throw new Error(`unknown base ${name}`)
    define(name)
    return [...(typeof e.base === "string" ? baseMembers(e.base) : members(e.base)), ...members(e.data)]
  }
  const define = (name: string): void => {
    if (emitted.has(name)) return
    const e = named.get(name)
    if (!e) throw new Error(`unknown type ${name}`)
    if (typeof e.enum === "string") {
      const values = (e.data as ReadonlyArray<QapiValue>).filter((v) => typeof v === "string" || holds((v as Dict).if))
        .map((v) => (typeof v === "string" ? v : (v as Dict).name as string))
      add({ name, "meta-type": "enum", values, members: values.map((v) => ({ name: v })), ...features(e.features) })
    } else if (typeof e.struct === "string") {
      emitted.add(name)
      const ms = [...(typeof e.base === "string" ? baseMembers(e.base) : members(e.base)), ...members(e.data)]
      entries.push({ name, "meta-type": "object", members: ms, ...features(e.features) })
    } else if (typeof e.union === "string") {
      emitted.add(name)
      const ms = typeof e.base === "string" ? baseMembers(e.base) : members(e.base)
      const variants = Object.entries(e.data as Dict).filter(([, v]) => typeof v === "string" || holds((v as Dict).if))
        .map(([c, v]) => ({ case: c, type: typeRef(typeof v === "string" ? v : (v as Dict).type!) }))
      entries.push({ name, "meta-type": "object", members: ms, tag: e.discriminator as string, variants, ...features(e.features) })
    } else if (typeof e.alternate === "string") {
      emitted.add(name)
      const alts = Object.values(e.data as Dict).filter((v) => typeof v === "string" || holds((v as Dict).if))
        .map((v) => ({ type: typeRef(typeof v === "string" ? v : (v as Dict).type!) }))
      entries.push({ name, "meta-type": "alternate", members: alts, ...features(e.features) })
    }
  }
  const EMPTY = "q_empty"
  const noSuccessResponse = new Set<string>()
  for (const e of live) {
    if (typeof e.command !== "string") continue
    const cmd = e.command
    let argType = EMPTY
    if (typeof e.data === "string") argType = typeRef(e.data)
    else if (e.data !== undefined) {
      argType = `q_obj_${cmd}-arg`
      const ms = members(e.data)
      if (ms.length === 0) argType = EMPTY
      else add({ name: argType, "meta-type": "object", members: ms })
    }
    if (argType === EMPTY) add({ name: EMPTY, "meta-type": "object", members: [] })
    const retType = e.returns === undefined ? EMPTY : typeRef(e.returns)
    if (retType === EMPTY) add({ name: EMPTY, "meta-type": "object", members: [] })
    if (e["success-response"] === false) noSuccessResponse.add(cmd)
    entries.push({
      name: cmd,
      "meta-type": "command",
      "arg-type": argType,
      "ret-type": retType,
      ...(e["allow-oob"] === true ? { "allow-oob": true } : {}),
      ...features(e.features)
    })
  }
  const realNames = new Map<string, string>()
  for (const n of named.keys()) if (emitted.has(n)) realNames.set(n, n)
  // commands last, types first, each group in source order, as QEMU's introspection
  const ordered = [...entries.filter((e) => e["meta-type"] === "command"), ...entries.filter((e) => e["meta-type"] !== "command")]
  return { entries: ordered, realNames, noSuccessResponse }
}
