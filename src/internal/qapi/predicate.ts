/**
 * `Schema.is` for the generated QAPI Schemas, compiled to plain predicates.
 *
 * Every typed reply is checked on the per-command path. `Schema.is` walks the
 * parser Effect's Schema builds for decoding (Either per member, an output
 * object per struct): ~0.9 us for `query-status` in a hot loop and ~3.6 us
 * when its code is cold, as it is between one command and the next. The
 * generated Schemas use a handful of AST nodes (structs, optional members,
 * records of unknown values, arrays, literals, unions, keywords, the integer
 * refinement, `suspend` for recursive types), which compile to closures that
 * give the same answer (checked against `Schema.is` over generated and mutated
 * values in test/Qapi.predicate.test.ts). Any other node is left to
 * `Schema.is` for that part of the value.
 */
import { Option, Schema, SchemaAST as AST } from "effect"

export type Predicate = (u: unknown) => boolean

const hasOwn = (o: object, key: PropertyKey): boolean => Object.prototype.hasOwnProperty.call(o, key)

/** `Schema.is(schema)` as a plain predicate. */
export const compile = (schema: Schema.Schema.AnyNoContext): Predicate => go(AST.typeAST(schema.ast), new Map())

const go = (ast: AST.AST, memo: Map<AST.AST, Predicate>): Predicate => {
  const known = memo.get(ast)
  if (known) return known
  // Recursive types meet themselves again while compiling: they get the predicate through this cell.
  let compiled: Predicate | undefined
  memo.set(ast, (u) => compiled!(u))
  compiled = build(ast, memo)
  memo.set(ast, compiled)
  return compiled
}

const fallback = (ast: AST.AST): Predicate => Schema.is(Schema.make(ast))

const build = (ast: AST.AST, memo: Map<AST.AST, Predicate>): Predicate => {
  switch (ast._tag) {
    case "StringKeyword":
      return (u) => typeof u === "string"
    case "NumberKeyword":
      return (u) => typeof u === "number"
    case "BooleanKeyword":
      return (u) => typeof u === "boolean"
    case "UnknownKeyword":
    case "AnyKeyword":
    case "VoidKeyword":
      return () => true
    case "NeverKeyword":
      return () => false
    case "UndefinedKeyword":
      return (u) => u === undefined
    case "Literal": {
      const literal = ast.literal
      return (u) => u === literal
    }
    case "Union": {
      const members = ast.types.map((t) => go(t, memo))
      return (u) => {
        for (const member of members) if (member(u)) return true
        return false
      }
    }
    case "TupleType": {
      // Schema.Array: no fixed elements, one rest type.
      if (ast.elements.length !== 0 || ast.rest.length !== 1) return fallback(ast)
      const item = go(ast.rest[0]!.type, memo)
      return (u) => Array.isArray(u) && u.every((v) => item(v))
    }
    case "TypeLiteral":
      return typeLiteral(ast, memo)
    case "Refinement": {
      const from = go(ast.from, memo)
      return (u) => from(u) && Option.isNone(ast.filter(u, AST.defaultParseOption, ast))
    }
    case "Suspend": {
      let target: Predicate | undefined
      return (u) => (target ??= go(ast.f(), memo))(u)
    }
    default:
      return fallback(ast)
  }
}

const typeLiteral = (ast: AST.TypeLiteral, memo: Map<AST.AST, Predicate>): Predicate => {
  // As ParseResult: a struct without members accepts anything but null and undefined.
  if (ast.propertySignatures.length === 0 && ast.indexSignatures.length === 0) return (u) => u !== null && u !== undefined
  // Index signatures keyed by strings only (a record of `Schema.String` keys); others are left to Schema.
  if (ast.indexSignatures.some((s) => s.parameter._tag !== "StringKeyword")) return fallback(ast)
  const members = ast.propertySignatures.map((ps) => ({ name: ps.name, optional: ps.isOptional, is: go(ps.type, memo) }))
  // A record of unknown values (`O` objects) accepts every value: nothing to check.
  const values = ast.indexSignatures.filter((s) => s.type._tag !== "UnknownKeyword").map((s) => go(s.type, memo))
  return (u) => {
    if (typeof u !== "object" || u === null || Array.isArray(u)) return false
    const o = u as Record<PropertyKey, unknown>
    for (const member of members) {
      // `is` decodes exactly: an absent member is missing, unless optional.
      if (!hasOwn(o, member.name)) {
        if (member.optional) continue
        return false
      }
      if (!member.is(o[member.name])) return false
    }
    if (values.length > 0) {
      for (const key of Object.keys(o)) {
        for (const value of values) if (!value(o[key])) return false
      }
    }
    return true
  }
}
