/**
 * Builds the `effect/Schema`s of the generated modules from their type table.
 *
 * The generated modules declare every type in TypeScript and describe it once
 * more as data, one line per type (`[name, kind, ...]`). The Schemas are built
 * from that description on first use and then shared: one Schema per type,
 * referenced by name, with `Schema.suspend` only where a type refers back to
 * itself. Emitting the Schemas as TypeScript expressions instead made the
 * project's typecheck about twice as slow (tsc infers and compares every
 * `Schema.Struct`), and building ~700 Schemas at import time would slow every
 * program that imports the library.
 *
 * Kinds: `o` object, `O` object that accepts extra members, `u` flat union
 * (base members, tag, branches; a branch without cases is the one without
 * the tag, for a union some QEMU versions do not have), `e` enum, `a` alternate. Type references are
 * a type name, a builtin (`str`, `int`, `number`, `bool`, `null`, `any`) or
 * `[ref]` for an array.
 */
import { Schema } from "effect"
import type { CommandInfo, EventInfo, GuestCommandInfo } from "./info.js"

type AnySchema = Schema.Schema.AnyNoContext
type MemberSpec = readonly [name: string, ref: string, optional?: 1]
type TypeSpec =
  | readonly [name: string, kind: "o" | "O", members: ReadonlyArray<MemberSpec>]
  | readonly [
    name: string,
    kind: "u",
    base: ReadonlyArray<MemberSpec>,
    tag: string,
    branches: ReadonlyArray<readonly [cases: ReadonlyArray<string>, ref: string | null]>
  ]
  | readonly [name: string, kind: "e", values: ReadonlyArray<string>]
  | readonly [name: string, kind: "a", members: ReadonlyArray<string>]

/**
 * A QAPI integer. Not `Schema.Int`, which wants a *safe* integer: QEMU's
 * `uint64`/`size` values above 2^53 (guest addresses, PCI BAR limits, the
 * agent's nanosecond clock) are valid replies, only imprecise once parsed.
 */
const QapiInt = Schema.Number.pipe(
  Schema.filter((n) => Number.isInteger(n), { message: () => "Expected an integer" })
).annotations({ identifier: "int" })

const BUILTINS: Record<string, AnySchema> = {
  str: Schema.String,
  int: QapiInt,
  number: Schema.Number,
  bool: Schema.Boolean,
  null: Schema.Null,
  any: Schema.Unknown
}

export interface Registry {
  /** The Schema of a type reference (a name, a builtin or `[ref]`). */
  readonly get: <A>(ref: string) => Schema.Schema<A>
}

export const registry = (lines: ReadonlyArray<string>): Registry => {
  let specs: Map<string, TypeSpec> | undefined
  const built = new Map<string, AnySchema>()
  const fieldsOf = new Map<string, Schema.Struct.Fields>()
  const building = new Set<string>()
  const spec = (name: string): TypeSpec | undefined => {
    if (!specs) {
      specs = new Map()
      for (const line of lines) {
        const s = JSON.parse(line) as TypeSpec
        specs.set(s[0], s)
      }
    }
    return specs.get(name)
  }
  const fields = (members: ReadonlyArray<MemberSpec>): Schema.Struct.Fields => {
    const out: Record<string, Schema.Struct.Fields[string]> = {}
    for (const [name, ref, optional] of members) out[name] = optional ? Schema.optional(get(ref)) : get(ref)
    return out
  }
  const objectFields = (name: string): Schema.Struct.Fields => {
    let f = fieldsOf.get(name)
    if (!f) {
      const s = spec(name)
      f = s && (s[1] === "o" || s[1] === "O") ? fields(s[2]) : {}
      fieldsOf.set(name, f)
    }
    return f
  }
  const construct = (s: TypeSpec): Schema.Schema.All => {
    switch (s[1]) {
      case "o":
        return Schema.Struct(objectFields(s[0]))
      case "O":
        return Schema.Struct(objectFields(s[0]), Schema.Record({ key: Schema.String, value: Schema.Unknown }))
      case "e":
        return Schema.Literal(...s[2])
      case "a":
        return Schema.Union(...s[2].map(get))
      case "u": {
        const base = fields(s[2])
        const tag = s[3]
        return Schema.Union(
          ...s[4].map(([cases, ref]) =>
            cases.length === 0
              // the branch of versions without the tag (merged types): the tag must be absent
              ? Schema.Struct({ ...base, [tag]: Schema.optionalWith(Schema.Never, { exact: true }) })
              : Schema.Struct({ ...base, [tag]: Schema.Literal(...cases), ...(ref === null ? {} : objectFields(ref)) })
          )
        )
      }
    }
  }
  const get = (ref: string): AnySchema => {
    const builtin = BUILTINS[ref]
    if (builtin) return builtin
    if (ref.startsWith("[")) return Schema.Array(get(ref.slice(1, -1)))
    const done = built.get(ref)
    if (done) return done
    // a type that refers back to itself (BlockdevOptions -> BlockdevRef -> BlockdevOptions)
    if (building.has(ref)) return Schema.suspend(() => built.get(ref)!)
    building.add(ref)
    try {
      // the description is closed and context-free: every Schema here needs no context
      const s = spec(ref)
      // the generated table is closed: a missing type is a generator bug, and fails every decode loudly
      const schema = s ? construct(s) : Schema.Never.annotations({ description: `${ref} (missing from the generated table)` })
      const result = (schema as unknown as AnySchema).annotations({ identifier: ref })
      built.set(ref, result)
      return result
    } finally {
      building.delete(ref)
    }
  }
  return { get: get as Registry["get"] }
}

const lazyTable = <V>(lines: ReadonlyArray<string>, make: (spec: ReadonlyArray<unknown>) => V): Record<string, V> => {
  const table: Record<string, V> = {}
  for (const line of lines) {
    const name = line.slice(2, line.indexOf("\"", 2))
    let value: V | undefined
    Object.defineProperty(table, name, {
      enumerable: true,
      get: () => (value ??= make(JSON.parse(line) as ReadonlyArray<unknown>))
    })
  }
  return table
}

/**
 * The commands table: `[name, argsRef | null, resultRef, allowOob, features, successResponse?]`
 * per line, each entry built on first access.
 */
export const commands = <T>(reg: Registry, lines: ReadonlyArray<string>): T =>
  lazyTable(lines, (s): CommandInfo<unknown, unknown> | GuestCommandInfo<unknown, unknown> => {
    const info: CommandInfo<unknown, unknown> = {
      args: s[1] === null ? (Schema.Void as Schema.Schema<unknown>) : reg.get(s[1] as string),
      result: reg.get(s[2] as string),
      allowOob: s[3] === 1,
      features: s[4] as ReadonlyArray<string>
    }
    return s.length > 5 ? { ...info, successResponse: s[5] === 1 } : info
  }) as T

/**
 * The events table: `[name, dataRef | null, features]` per line.
 */
export const events = <T>(reg: Registry, lines: ReadonlyArray<string>): T =>
  lazyTable(lines, (s): EventInfo<unknown> => ({
    data: s[1] === null ? Schema.UndefinedOr(reg.get("Empty")) : reg.get(s[1] as string),
    features: s[2] as ReadonlyArray<string>
  })) as T
