/**
 * Checks command arguments against the *live* schema (`query-qmp-schema` of
 * the QEMU we talk to), before anything is sent: unknown command, unknown or
 * missing member, wrong JSON type, bad enum value, unknown union branch, with
 * the path of the bad member (`arguments.file.driver`).
 *
 * Each type gets one check function, compiled the first time a command using
 * it is validated; later calls only run the compiled functions.
 */
import { QmpArgumentError } from "../../Errors.js"
import type { MemberInfo, SchemaInfo } from "./schemaInfo.js"

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

export const make = (entries: ReadonlyArray<SchemaInfo>, options: Options = {}): Validator => {
  const byName = new Map<string, SchemaInfo>()
  const commands = new Map<string, SchemaInfo & { readonly "meta-type": "command" }>()
  for (const e of entries) {
    if (e["meta-type"] === "command") commands.set(e.name, e)
    else if (e["meta-type"] !== "event") byName.set(e.name, e)
  }
  const open = new Set(options.openCommands ?? ["device_add"])
  const compiled = new Map<string, Check>()
  const compiledArgs = new Map<string, Check>()

  const kinds = (typeName: string): ReadonlyArray<JsonKind> => {
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
        return e.members.flatMap((m) => kinds(m.type))
      case "builtin":
        switch (e["json-type"]) {
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
      default:
        return ["any"]
    }
  }
  const kindOf = (u: unknown): JsonKind => {
    const t = jsonType(u)
    return t === "integer" ? "number" : (t as JsonKind)
  }

  // a check that compiles its type on first call, so that recursive types terminate
  const ref = (typeName: string): Check => {
    const done = compiled.get(typeName)
    if (done) return done
    let real: Check | undefined
    const lazy: Check = (value, path) => (real ??= compile(typeName))(value, path)
    compiled.set(typeName, lazy)
    return lazy
  }

  const objectCheck = (
    members: ReadonlyArray<MemberInfo>,
    variants: { readonly tag: string; readonly cases: ReadonlyMap<string, string> } | undefined,
    allowExtra: boolean
  ): Check => {
    const checks = members.map((m) => ({ name: m.name, optional: has(m, "default"), check: ref(m.type) }))
    const known = new Set(members.map((m) => m.name))
    const branchChecks = new Map<string, Check>()
    const branchMembers = new Map<string, ReadonlySet<string>>()
    const allowedWith = new Map<string, ReadonlySet<string>>()
    const branch = (typeName: string): { check: Check; names: ReadonlySet<string> } => {
      let check = branchChecks.get(typeName)
      let names = branchMembers.get(typeName)
      if (!check || !names) {
        const e = byName.get(typeName)
        const ms = e && e["meta-type"] === "object" ? e.members : []
        const vs = e && e["meta-type"] === "object" && e.tag && e.variants
          ? { tag: e.tag, cases: new Map(e.variants.map((v) => [v.case, v.type])) }
          : undefined
        // the branch's own members, checked without the "unknown member" rule (the parent does it)
        check = objectCheck(ms, vs, true)
        names = new Set(ms.map((m) => m.name))
        branchChecks.set(typeName, check)
        branchMembers.set(typeName, names)
      }
      return { check, names }
    }
    return (value, path) => {
      if (!isRecord(value)) return expected("an object", value, path)
      if (variants && has(value, variants.tag) && value[variants.tag] !== undefined) {
        const tagValue = value[variants.tag]
        if (typeof tagValue !== "string" || !variants.cases.has(tagValue)) {
          return {
            path: `${path}.${variants.tag}`,
            message: `unknown union branch ${show(tagValue)}; expected one of ${[...variants.cases.keys()].join(", ")}`
          }
        }
      }
      for (const c of checks) {
        if (!has(value, c.name) || value[c.name] === undefined) {
          if (c.optional) continue
          return { path: `${path}.${c.name}`, message: "missing required member" }
        }
        const p = c.check(value[c.name], `${path}.${c.name}`)
        if (p) return p
      }
      let allowed: ReadonlySet<string> = known
      if (variants) {
        const tagValue = value[variants.tag]
        const branchType = typeof tagValue === "string" ? variants.cases.get(tagValue) : undefined
        if (branchType === undefined) {
          return {
            path: `${path}.${variants.tag}`,
            message: `unknown union branch ${show(tagValue)}; expected one of ${[...variants.cases.keys()].join(", ")}`
          }
        }
        const b = branch(branchType)
        const p = b.check(value, path)
        if (p) return p
        allowed = allowedWith.get(branchType) ?? new Set([...known, ...b.names])
        allowedWith.set(branchType, allowed)
      }
      if (!allowExtra) {
        for (const k of Object.keys(value)) {
          if (!allowed.has(k) && value[k] !== undefined) return { path: `${path}.${k}`, message: "unknown member" }
        }
      }
      return undefined
    }
  }

  const compile = (typeName: string): Check => {
    const e = byName.get(typeName)
    if (!e) return () => undefined // a type the schema does not describe: accept
    switch (e["meta-type"]) {
      case "builtin":
        switch (e.name) {
          case "str":
            return (v, p) => (typeof v === "string" ? undefined : expected("a string", v, p))
          case "int":
            return (v, p) => (typeof v === "number" && Number.isInteger(v) ? undefined : expected("an integer", v, p))
          case "number":
            return (v, p) => (typeof v === "number" && Number.isFinite(v) ? undefined : expected("a number", v, p))
          case "bool":
            return (v, p) => (typeof v === "boolean" ? undefined : expected("a boolean", v, p))
          case "null":
            return (v, p) => (v === null ? undefined : expected("null", v, p))
          default:
            return (v, p) => (v === undefined ? expected("a value", v, p) : undefined)
        }
      case "enum": {
        const values = new Set(e.values)
        return (v, p) =>
          typeof v === "string" && values.has(v)
            ? undefined
            : { path: p, message: `expected one of ${e.values.join(", ")}, got ${show(v)}` }
      }
      case "array": {
        const item = ref(e["element-type"])
        return (v, p) => {
          if (!Array.isArray(v)) return expected("an array", v, p)
          for (let i = 0; i < v.length; i++) {
            const problem = item(v[i], `${p}[${i}]`)
            if (problem) return problem
          }
          return undefined
        }
      }
      case "alternate": {
        // QEMU picks the branch by the JSON type of the value
        const branches = e.members.map((m) => ({ kinds: kinds(m.type), check: ref(m.type) }))
        const names = e.members.map((m) => {
          const t = byName.get(m.type)
          return t?.["meta-type"] === "builtin" ? t.name : t?.["meta-type"] ?? m.type
        })
        return (v, p) => {
          const k = kindOf(v)
          const b = branches.find((x) => x.kinds.includes(k)) ?? branches.find((x) => x.kinds.includes("any"))
          return b ? b.check(v, p) : { path: p, message: `expected one of ${names.join(" | ")}, got ${jsonType(v)} ${show(v)}` }
        }
      }
      case "object":
        return objectCheck(
          e.members,
          e.tag && e.variants ? { tag: e.tag, cases: new Map(e.variants.map((v) => [v.case, v.type])) } : undefined,
          false
        )
      default:
        return () => undefined
    }
  }

  const argsCheck = (command: string, argType: string): Check => {
    let c = compiledArgs.get(command)
    if (!c) {
      const e = byName.get(argType)
      c = open.has(command) && e && e["meta-type"] === "object"
        ? objectCheck(e.members, undefined, true)
        : ref(argType)
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
