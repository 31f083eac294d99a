/**
 * Checks command arguments against the *live* schema (`query-qmp-schema` of
 * the QEMU we talk to), before anything is sent: unknown command, unknown or
 * missing member, wrong JSON type, bad enum value, unknown union branch, with
 * the path of the bad member (`arguments.file.driver`).
 *
 * Integers: introspection reports every QAPI integer type (`int8` … `uint64`,
 * `size`) as `int`, so a type's own range is not known here and QEMU judges
 * it. What is checked: an `int` is a finite integer, and a safe one
 * (|n| ≤ 2^53 − 1): a JS number beyond that is not exact, so it would reach
 * QEMU as a different value. A `number` is finite (NaN and ±Infinity are not
 * JSON: `JSON.stringify` would send `null`).
 *
 * Each type gets one check function, compiled the first time a command using
 * it is validated; later calls only run the compiled functions.
 */
import { QmpArgumentError } from "../../Errors.js"
import type { MemberInfo, SchemaInfo, SchemaInfoOf } from "./schemaInfo.js"

/** Returns a message for the first problem found, with its path, or `undefined`. */
type Check = (value: unknown, path: string) => Problem | undefined

interface Problem {
  readonly path: string
  readonly message: string
}

export interface Validator {
  /** Whether the live schema has this command. */
  readonly supports: (command: string) => boolean
  /** The first problem with these arguments, or `undefined` when QEMU would accept their shape. */
  readonly validate: (command: string, args: unknown) => QmpArgumentError | undefined
}

export interface Options {
  /**
   * Commands whose arguments accept members beyond those in the schema: QEMU
   * hands them on unchecked (`device_add`'s device properties). Default
   * `["device_add"]`.
   */
  readonly openCommands?: ReadonlyArray<string> | undefined
}

const jsonType = (u: unknown): string => {
  if (u === null) return "null"
  if (Array.isArray(u)) return "array"
  if (typeof u === "number") return Number.isInteger(u) ? "integer" : "number"
  if (typeof u === "object") return "object"
  return typeof u
}

const show = (u: unknown): string => {
  if (typeof u === "number" && !Number.isFinite(u)) return String(u)
  try {
    const s = JSON.stringify(u) ?? String(u)
    return s.length > 60 ? `${s.slice(0, 60)}…` : s
  } catch {
    return jsonType(u)
  }
}

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

const has = (o: object, key: string): boolean => Object.prototype.hasOwnProperty.call(o, key)

const expected = (what: string, value: unknown, path: string): Problem => ({
  path,
  message: `expected ${what}, got ${jsonType(value)} ${show(value)}`
})

/** The JSON types a value of this schema type can have (for alternates). */
type JsonKind = "object" | "array" | "string" | "number" | "boolean" | "null" | "any"

/** A flat union: the tag member and the branch type of each tag value. */
interface Variants {
  readonly tag: string
  readonly cases: ReadonlyMap<string, string>
}

/** What compiling needs: the schema's types by name, and the checks compiled so far (one per type). */
interface Compiler {
  readonly byName: ReadonlyMap<string, SchemaInfo>
  readonly compiled: Map<string, Check>
}

// --- paths and messages ------------------------------------------------------------------------------

const memberPath = (path: string, name: string): string => `${path}.${name}`

const itemPath = (path: string, index: number): string => `${path}[${index}]`

const unknownBranch = (variants: Variants, tagValue: unknown, path: string): Problem => ({
  path: memberPath(path, variants.tag),
  message: `unknown union branch ${show(tagValue)}; expected one of ${[...variants.cases.keys()].join(", ")}`
})

/** Above 2^53 a double has no room for every integer: what was meant is not what would be sent. */
const unsafeInteger = (value: number, path: string): Problem => ({
  path,
  message: `${value} is beyond ±(2^53 − 1), where JS numbers are not exact: it would lose precision and reach QEMU ` +
    `as a different integer. Pass a value within Number.MAX_SAFE_INTEGER (for a size or a 64-bit mask, ` +
    `one that is exactly representable), or send it unvalidated with the rounding this implies`
})

// --- JSON kinds, to pick an alternate's branch ---------------------------------------------------------

const builtinKinds = (json: SchemaInfoOf<"builtin">["json-type"]): ReadonlyArray<JsonKind> => {
  switch (json) {
    case "string":
      return ["string"]
    case "int":
    case "number":
      return ["number"]
    case "boolean":
      return ["boolean"]
    case "null":
      return ["null"]
    case "object":
      return ["object"]
    case "array":
      return ["array"]
    default:
      return ["any"]
  }
}

const kinds = (byName: ReadonlyMap<string, SchemaInfo>, typeName: string): ReadonlyArray<JsonKind> => {
  const e = byName.get(typeName)
  if (!e) return ["any"]
  switch (e["meta-type"]) {
    case "object":
      return ["object"]
    case "array":
      return ["array"]
    case "enum":
      return ["string"]
    case "alternate":
      return e.members.flatMap((m) => kinds(byName, m.type))
    case "builtin":
      return builtinKinds(e["json-type"])
    default:
      return ["any"]
  }
}

const kindOf = (u: unknown): JsonKind => {
  const t = jsonType(u)
  return t === "integer" ? "number" : (t as JsonKind)
}

// --- one check per meta-type ---------------------------------------------------------------------------

const builtinCheck = (name: string): Check => {
  switch (name) {
    case "str":
      return (v, p) => (typeof v === "string" ? undefined : expected("a string", v, p))
    case "int":
      return (v, p) =>
        typeof v !== "number" || !Number.isInteger(v)
          ? expected("an integer", v, p)
          : Number.isSafeInteger(v)
          ? undefined
          : unsafeInteger(v, p)
    case "number":
      return (v, p) => (typeof v === "number" && Number.isFinite(v) ? undefined : expected("a finite number", v, p))
    case "bool":
      return (v, p) => (typeof v === "boolean" ? undefined : expected("a boolean", v, p))
    case "null":
      return (v, p) => (v === null ? undefined : expected("null", v, p))
    default:
      return (v, p) => (v === undefined ? expected("a value", v, p) : undefined)
  }
}

const enumCheck = (allowed: ReadonlyArray<string>): Check => {
  const values = new Set(allowed)
  return (v, p) =>
    typeof v === "string" && values.has(v)
      ? undefined
      : { path: p, message: `expected one of ${allowed.join(", ")}, got ${show(v)}` }
}

const arrayCheck = (item: Check): Check => (v, p) => {
  if (!Array.isArray(v)) return expected("an array", v, p)
  for (let i = 0; i < v.length; i++) {
    const problem = item(v[i], itemPath(p, i))
    if (problem) return problem
  }
  return undefined
}

// QEMU picks an alternate's branch by the JSON type of the value.
const alternateCheck = (c: Compiler, members: ReadonlyArray<{ readonly type: string }>): Check => {
  const branches = members.map((m) => ({ kinds: kinds(c.byName, m.type), check: ref(c, m.type) }))
  const names = members.map((m) => {
    const t = c.byName.get(m.type)
    return t?.["meta-type"] === "builtin" ? t.name : t?.["meta-type"] ?? m.type
  })
  return (v, p) => {
    const k = kindOf(v)
    const b = branches.find((x) => x.kinds.includes(k)) ?? branches.find((x) => x.kinds.includes("any"))
    return b ? b.check(v, p) : { path: p, message: `expected one of ${names.join(" | ")}, got ${jsonType(v)} ${show(v)}` }
  }
}

// --- objects and flat unions ---------------------------------------------------------------------------

interface MemberCheck {
  readonly name: string
  readonly optional: boolean
  readonly check: Check
}

const variantsOf = (e: SchemaInfoOf<"object">): Variants | undefined =>
  e.tag && e.variants ? { tag: e.tag, cases: new Map(e.variants.map((v) => [v.case, v.type])) } : undefined

/** A tag that is present but names no branch (checked before the members, so the error names the tag). */
const checkTag = (variants: Variants, value: Record<string, unknown>, path: string): Problem | undefined => {
  if (!has(value, variants.tag) || value[variants.tag] === undefined) return undefined
  const tagValue = value[variants.tag]
  return typeof tagValue === "string" && variants.cases.has(tagValue) ? undefined : unknownBranch(variants, tagValue, path)
}

const checkMembers = (checks: ReadonlyArray<MemberCheck>, value: Record<string, unknown>, path: string): Problem | undefined => {
  for (const c of checks) {
    if (!has(value, c.name) || value[c.name] === undefined) {
      if (c.optional) continue
      return { path: memberPath(path, c.name), message: "missing required member" }
    }
    const p = c.check(value[c.name], memberPath(path, c.name))
    if (p) return p
  }
  return undefined
}

const checkUnknown = (value: Record<string, unknown>, allowed: ReadonlySet<string>, path: string): Problem | undefined => {
  for (const k of Object.keys(value)) {
    if (!allowed.has(k) && value[k] !== undefined) return { path: memberPath(path, k), message: "unknown member" }
  }
  return undefined
}

/** A union branch: its own members' check, and every member name allowed with it (the parent's and its own). */
interface Branch {
  readonly check: Check
  readonly allowed: ReadonlySet<string>
}

/** The branches of one union, each compiled the first time a value selects it. */
const branchSelector = (c: Compiler, variants: Variants, known: ReadonlySet<string>) => {
  const branches = new Map<string, Branch>()
  return (tagValue: unknown): Branch | undefined => {
    const typeName = typeof tagValue === "string" ? variants.cases.get(tagValue) : undefined
    if (typeName === undefined) return undefined
    let b = branches.get(typeName)
    if (!b) {
      const e = c.byName.get(typeName)
      const members = e && e["meta-type"] === "object" ? e.members : []
      // the branch's own members, checked without the "unknown member" rule (the parent does it)
      const check = objectCheck(c, members, e && e["meta-type"] === "object" ? variantsOf(e) : undefined, true)
      b = { check, allowed: new Set([...known, ...members.map((m) => m.name)]) }
      branches.set(typeName, b)
    }
    return b
  }
}

const objectCheck = (
  c: Compiler,
  members: ReadonlyArray<MemberInfo>,
  variants: Variants | undefined,
  allowExtra: boolean
): Check => {
  const checks: ReadonlyArray<MemberCheck> = members.map((m) => ({ name: m.name, optional: has(m, "default"), check: ref(c, m.type) }))
  const known: ReadonlySet<string> = new Set(members.map((m) => m.name))
  const select = variants && branchSelector(c, variants, known)
  return (value, path) => {
    if (!isRecord(value)) return expected("an object", value, path)
    const problem = (variants && checkTag(variants, value, path)) || checkMembers(checks, value, path)
    if (problem) return problem
    let allowed = known
    if (variants && select) {
      const branch = select(value[variants.tag])
      if (!branch) return unknownBranch(variants, value[variants.tag], path)
      const p = branch.check(value, path)
      if (p) return p
      allowed = branch.allowed
    }
    return allowExtra ? undefined : checkUnknown(value, allowed, path)
  }
}

// --- compiling by type name ----------------------------------------------------------------------------

/** A check that compiles its type on first call, so that recursive types terminate. */
const ref = (c: Compiler, typeName: string): Check => {
  const done = c.compiled.get(typeName)
  if (done) return done
  let real: Check | undefined
  const lazy: Check = (value, path) => (real ??= compile(c, typeName))(value, path)
  c.compiled.set(typeName, lazy)
  return lazy
}

const compile = (c: Compiler, typeName: string): Check => {
  const e = c.byName.get(typeName)
  if (!e) return () => undefined // a type the schema does not describe: accept
  switch (e["meta-type"]) {
    case "builtin":
      return builtinCheck(e.name)
    case "enum":
      return enumCheck(e.values)
    case "array":
      return arrayCheck(ref(c, e["element-type"]))
    case "alternate":
      return alternateCheck(c, e.members)
    case "object":
      return objectCheck(c, e.members, variantsOf(e), false)
    default:
      return () => undefined
  }
}

// --- the validator -------------------------------------------------------------------------------------

export const make = (entries: ReadonlyArray<SchemaInfo>, options: Options = {}): Validator => {
  const byName = new Map<string, SchemaInfo>()
  const commands = new Map<string, SchemaInfoOf<"command">>()
  for (const e of entries) {
    if (e["meta-type"] === "command") commands.set(e.name, e)
    else if (e["meta-type"] !== "event") byName.set(e.name, e)
  }
  const compiler: Compiler = { byName, compiled: new Map() }
  const open = new Set(options.openCommands ?? ["device_add"])
  const compiledArgs = new Map<string, Check>()

  const argsCheck = (command: string, argType: string): Check => {
    let c = compiledArgs.get(command)
    if (!c) {
      const e = byName.get(argType)
      c = open.has(command) && e && e["meta-type"] === "object"
        ? objectCheck(compiler, e.members, undefined, true)
        : ref(compiler, argType)
      compiledArgs.set(command, c)
    }
    return c
  }

  return {
    supports: (command) => commands.has(command),
    validate: (command, args) => {
      const cmd = commands.get(command)
      if (!cmd) {
        return new QmpArgumentError({ command, path: "execute", message: `QEMU has no command ${show(command)}` })
      }
      const problem = argsCheck(command, cmd["arg-type"])(args === undefined ? {} : args, "arguments")
      return problem ? new QmpArgumentError({ command, path: problem.path, message: problem.message }) : undefined
    }
  }
}
