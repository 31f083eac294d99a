/**
 * The argument validator's number checks, on a small schema written the way
 * QEMU introspects it: every QAPI integer type (`int8` … `uint64`, `size`)
 * arrives as the builtin `int`, so only what holds for every integer is
 * checked (finite, whole, exact as a JS number); `number` must be finite.
 */
import { describe, expect, it } from "@effect/vitest"
import { QmpArgumentError } from "../src/Errors.js"
import type { SchemaInfo } from "../src/internal/qapi/schemaInfo.js"
import * as Validate from "../src/internal/qapi/validate.js"

const entries: ReadonlyArray<SchemaInfo> = [
  { "meta-type": "builtin", name: "int", "json-type": "int" },
  { "meta-type": "builtin", name: "number", "json-type": "number" },
  { "meta-type": "builtin", name: "str", "json-type": "string" },
  { "meta-type": "array", name: "[int]", "element-type": "int" },
  { "meta-type": "alternate", name: "IntOrStr", members: [{ type: "int" }, { type: "str" }] },
  { "meta-type": "array", name: "[number]", "element-type": "number" },
  { "meta-type": "alternate", name: "NumberOrStr", members: [{ type: "number" }, { type: "str" }] },
  {
    "meta-type": "object",
    name: "Args",
    members: [
      { name: "size", type: "int" },
      { name: "ratio", type: "number", default: null },
      { name: "list", type: "[int]", default: null },
      { name: "either", type: "IntOrStr", default: null },
      { name: "ratios", type: "[number]", default: null },
      { name: "weight", type: "NumberOrStr", default: null }
    ]
  },
  { "meta-type": "object", name: "Empty", members: [] },
  { "meta-type": "command", name: "set", "arg-type": "Args", "ret-type": "Empty" }
]

const validator = Validate.make(entries)
const check = (args: Record<string, unknown>) => validator.validate("set", args)

describe("the validator's integer and number checks", () => {
  it("accepts integers up to ±(2^53 - 1), and finite numbers", () => {
    expect(check({ size: 0 })).toBeUndefined()
    expect(check({ size: -1 })).toBeUndefined()
    expect(check({ size: Number.MAX_SAFE_INTEGER })).toBeUndefined()
    expect(check({ size: Number.MIN_SAFE_INTEGER })).toBeUndefined()
    expect(check({ size: 1, ratio: 0.5, list: [1, 2], either: 3 })).toBeUndefined()
    expect(check({ size: 1, ratio: 1e300 })).toBeUndefined()
  })

  it("rejects NaN, Infinity and fractions for an int, naming the path and the value", () => {
    expect(check({ size: Number.NaN })).toMatchObject({ path: "arguments.size", message: "expected an integer, got number NaN" })
    expect(check({ size: Infinity })).toMatchObject({ path: "arguments.size", message: "expected an integer, got number Infinity" })
    expect(check({ size: -Infinity })).toMatchObject({ path: "arguments.size", message: "expected an integer, got number -Infinity" })
    expect(check({ size: 1.5 })).toMatchObject({ path: "arguments.size", message: "expected an integer, got number 1.5" })
  })

  it("rejects an integer beyond 2^53 - 1 with a QmpArgumentError that says it would lose precision", () => {
    const error = check({ size: 2 ** 64 })
    expect(error).toBeInstanceOf(QmpArgumentError)
    expect(error).toMatchObject({ command: "set", path: "arguments.size" })
    expect(error?.message).toContain("18446744073709552000 is beyond ±(2^53 − 1)")
    expect(error?.message).toContain("lose precision")
    expect(error?.message).toContain("Number.MAX_SAFE_INTEGER")
    expect(check({ size: 2 ** 53 })?.path).toBe("arguments.size")
    expect(check({ size: -(2 ** 53) })?.path).toBe("arguments.size")
  })

  it("applies the integer checks inside arrays and alternates", () => {
    expect(check({ size: 1, list: [1, 2 ** 60] })).toMatchObject({ path: "arguments.list[1]" })
    expect(check({ size: 1, list: [Number.NaN] })).toMatchObject({ path: "arguments.list[0]" })
    expect(check({ size: 1, either: 2 ** 60 })).toMatchObject({ path: "arguments.either" })
    expect(check({ size: 1, either: Infinity })).toMatchObject({ path: "arguments.either" })
    expect(check({ size: 1, either: "text" })).toBeUndefined()
  })

  it("rejects NaN and ±Infinity for a number (they are not JSON)", () => {
    expect(check({ size: 1, ratio: Number.NaN })).toMatchObject({
      path: "arguments.ratio",
      message: "expected a finite number, got number NaN"
    })
    expect(check({ size: 1, ratio: Infinity })?.message).toBe("expected a finite number, got number Infinity")
    expect(check({ size: 1, ratio: "1" })?.message).toBe("expected a finite number, got string \"1\"")
  })

  it("applies the number checks to -Infinity, and inside arrays and alternates", () => {
    expect(check({ size: 1, ratio: -Infinity })?.message).toBe("expected a finite number, got number -Infinity")
    expect(check({ size: 1, ratios: [0.5, 2, -1e-9] })).toBeUndefined()
    expect(check({ size: 1, ratios: [0.5, Number.NaN] })).toMatchObject({
      path: "arguments.ratios[1]",
      message: "expected a finite number, got number NaN"
    })
    expect(check({ size: 1, weight: 0.25 })).toBeUndefined()
    expect(check({ size: 1, weight: "heavy" })).toBeUndefined()
    expect(check({ size: 1, weight: Infinity })).toMatchObject({
      path: "arguments.weight",
      message: "expected a finite number, got number Infinity"
    })
    expect(check({ size: 1, weight: -Infinity })?.path).toBe("arguments.weight")
  })
})
