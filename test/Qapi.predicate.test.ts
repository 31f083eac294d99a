/**
 * The compiled predicates (src/internal/qapi/predicate.ts) answer as
 * `Schema.is` does, for every command result, argument and event data type of
 * every generated table: on values generated from each Schema, on those values
 * with a member removed or replaced by a value of another type, and on
 * arbitrary JSON. No QEMU.
 */
import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, FastCheck, Schema } from "effect"
import * as Merged from "../src/generated/qmp.js"
import * as Qga from "../src/generated/qga.js"
import * as V10 from "../src/generated/qmp-10.0.js"
import * as V11 from "../src/generated/qmp-11.1.js"
import * as V72 from "../src/generated/qmp-7.2.js"
import * as Predicate from "../src/internal/qapi/predicate.js"

type AnySchema = Schema.Schema.AnyNoContext

const schemasOf = (table: {
  readonly commands: { readonly [name: string]: { readonly args: unknown; readonly result: unknown } }
  readonly events?: { readonly [name: string]: { readonly data: unknown } }
}): Array<readonly [string, AnySchema]> => [
  ...Object.entries(table.commands).flatMap(([name, info]) => [
    [`${name} result`, info.result as AnySchema] as const,
    [`${name} args`, info.args as AnySchema] as const
  ]),
  ...Object.entries(table.events ?? {}).map(([name, info]) => [`${name} data`, info.data as AnySchema] as const)
]

const others: ReadonlyArray<unknown> = [null, 1.5, 7, "text", true, [], {}, [1, "a"], { unexpected: 1 }]

/** The value with one member removed, or replaced by something of another kind. */
const mutations = (value: unknown, rnd: () => number): Array<unknown> => {
  if (typeof value !== "object" || value === null) return [others[Math.floor(rnd() * others.length)]]
  if (Array.isArray(value)) {
    if (value.length === 0) return [[null], ["x"]]
    const i = Math.floor(rnd() * value.length)
    return [value.map((v, j) => (j === i ? others[Math.floor(rnd() * others.length)] : v)), ...mutations(value[i], rnd).map((m) => value.map((v, j) => (j === i ? m : v)))]
  }
  const keys = Object.keys(value)
  if (keys.length === 0) return [null, undefined, 3]
  const key = keys[Math.floor(rnd() * keys.length)]!
  const rest = { ...value } as Record<string, unknown>
  delete rest[key]
  const record = value as Record<string, unknown>
  return [
    rest,
    { ...record, [key]: others[Math.floor(rnd() * others.length)] },
    ...mutations(record[key], rnd).map((m) => ({ ...record, [key]: m }))
  ]
}

const tables = { "7.2": V72, "10.0": V10, "11.1": V11, merged: Merged, "guest agent": Qga } as const

describe("compiled QAPI predicates", () => {
  for (const [label, table] of Object.entries(tables)) {
    it(`answer as Schema.is for every type of the ${label} table`, () => {
      let compared = 0
      let generated = 0
      let rejected = 0
      // A fixed seed: a failure names a value that can be reproduced.
      let seed = 42
      const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31)
      const json = FastCheck.sample(FastCheck.jsonValue({ maxDepth: 3 }), { numRuns: 20, seed: 7 })
      const schemas = schemasOf(table as never)
      for (const [name, schema] of schemas) {
        const expected = Schema.is(schema)
        const actual = Predicate.compile(schema)
        let values: Array<unknown> = []
        try {
          values = FastCheck.sample(Arbitrary.make(schema), { numRuns: 4, seed: 11 })
          generated += values.length
        } catch {
          // No arbitrary for it (a type that is never, or too deep to generate): the mutations
          // and JSON below still compare it.
        }
        const candidates = [...values, ...values.flatMap((v) => mutations(v, rnd)), ...json]
        for (const v of candidates) {
          const want = expected(v)
          if (actual(v) !== want) expect.fail(`${label} ${name}: compiled ${!want}, Schema.is ${want} for ${JSON.stringify(v)}`)
          if (!want) rejected++
          compared++
        }
      }
      // Enough values of both verdicts that the comparison says something.
      expect(generated).toBeGreaterThan(schemas.length)
      expect(rejected).toBeGreaterThan(compared / 4)
      expect(compared - rejected).toBeGreaterThan(schemas.length)
    })
  }

  it("a struct's members: absent only if optional, extra members allowed, arrays and null refused", () => {
    const S = Schema.Struct({ a: Schema.String, b: Schema.optional(Schema.Number), c: Schema.Array(Schema.Literal("x", "y")) })
    const is = Predicate.compile(S)
    expect(is({ a: "1", c: [] })).toBe(true)
    expect(is({ a: "1", b: 2, c: ["x", "y"], extra: {} })).toBe(true)
    expect(is({ a: "1", c: ["z"] })).toBe(false)
    expect(is({ c: [] })).toBe(false)
    expect(is({ a: "1", b: "2", c: [] })).toBe(false)
    expect(is([])).toBe(false)
    expect(is(null)).toBe(false)
  })
})
