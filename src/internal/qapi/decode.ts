/**
 * Decoding of command replies and events with the generated Schemas, ready
 * for `QmpClient.execute` / `vm.command` / `vm.eventWait`.
 *
 * Each connection checks against the schema of the QEMU it talks to (its
 * greeting's version): a version we generated from (`Qapi.versions`, matched
 * by major.minor) is checked against its own schema, strictly (a mismatch is a
 * `QmpProtocolError`); any other version against the types merged across
 * those versions, leniently (a mismatch is delivered as it came, marked
 * unchecked, with one warning per command or event name).
 *
 * The generated types describe JSON as it is (no transformations), so a value
 * that passes its Schema is returned as it came: members QEMU added after the
 * schema was generated stay in place. The check is `Schema.is` (no copy),
 * compiled to a plain predicate; only a value that fails it is decoded again
 * to say where and why.
 */
import { Effect, Either, ParseResult, Schema } from "effect"
import { QmpProtocolError } from "../../Errors.js"
import * as Generated from "../../generated/qmp.js"
import type { VersionTables } from "./info.js"
import * as Predicate from "./predicate.js"

const has = (table: object, key: string): boolean => Object.prototype.hasOwnProperty.call(table, key)

/** Where and why a value does not match: `return.singlestep`, `is missing`. */
export interface Mismatch {
  readonly path: string
  readonly message: string
}

interface Checker {
  readonly is: (u: unknown) => boolean
  readonly explain: (u: unknown) => Mismatch
}

const formatPath = (root: string, path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>((acc, p) => (typeof p === "number" ? `${acc}[${p}]` : `${acc}.${String(p)}`), root)

const LITERAL_MISMATCH = /^Expected "[^"]*"(?: \| "[^"]*")*, actual /

const checker = (schema: Schema.Schema.AnyNoContext, root: string): Checker => {
  // Schema.is, compiled to a plain predicate (see predicate.ts): this runs for every typed reply.
  const is = Predicate.compile(schema)
  const decode = Schema.decodeUnknownEither(schema, { errors: "first" })
  return {
    // a recursive Schema (ImageInfo's backing-image…) follows a value as deep
    // as it goes: one past the stack's depth does not match, it does not crash
    is: (u) => {
      try {
        return is(u)
      } catch {
        return false
      }
    },
    explain: (u) => {
      // the formatter prints the offending value recursively: a reply nested
      // 100k levels deep (which JSON.parse accepts) overflows the stack
      try {
        return explainIssue(decode, root, u)
      } catch {
        return { path: root, message: "the value is too deeply nested to describe" }
      }
    }
  }
}

const explainIssue = (
  decode: (u: unknown) => Either.Either<unknown, ParseResult.ParseError>,
  root: string,
  u: unknown
): Mismatch => {
  const result = decode(u)
  if (Either.isRight(result)) return { path: root, message: "does not match its schema" }
  // a union reports every branch it tried; a branch whose tag did not match
  // says little ("Expected "s390x""), so prefer an issue from another one
  const issues = ParseResult.ArrayFormatter.formatErrorSync(result.left)
  const issue = issues.find((i) => !LITERAL_MISMATCH.test(i.message)) ?? issues[0]
  return issue
    ? { path: formatPath(root, issue.path), message: issue.message }
    : { path: root, message: result.left.message }
}

const raw = (value: unknown): string => {
  try {
    const s = JSON.stringify(value) ?? String(value)
    return s.length > 300 ? `${s.slice(0, 300)}… (${s.length - 300} more chars)` : s
  } catch {
    return "(unprintable)"
  }
}

type Table<K extends string> = { readonly [name: string]: { readonly [key in K]: unknown } }

/** One checker per name of a table, built on first use. */
const checkers = <K extends string>(table: Table<K>, key: K, root: string) => {
  const built = new Map<string, Checker>()
  return (name: string): Checker | undefined => {
    let c = built.get(name)
    if (c === undefined) {
      if (!has(table, name)) return undefined
      c = checker(table[name]![key] as Schema.Schema.AnyNoContext, root)
      built.set(name, c)
    }
    return c
  }
}

/**
 * The `return` checker of a generated command table (the guest agent's): a
 * value that passes its command's Schema is returned as it came, one that
 * fails is a `QmpProtocolError` whose message `describe` builds from where it
 * failed. Commands the table does not know pass through untouched.
 */
export const makeResultDecoder = (
  table: { readonly [command: string]: { readonly result: unknown } },
  describe: (command: string, where: string) => string
) => strictResults(checkers(table, "result", "return"), describe)

const strictResults = (
  checkerOf: (command: string) => Checker | undefined,
  describe: (command: string, where: string) => string
) =>
  (command: string, value: unknown): Either.Either<unknown, QmpProtocolError> => {
    const c = checkerOf(command)
    if (c === undefined || c.is(value)) return Either.right(value)
    const { message, path } = c.explain(value)
    return Either.left(
      new QmpProtocolError({ message: describe(command, `${path}: ${message}`), raw: raw(value), path })
    )
  }

// --- per connection: the schema of the version it talks to ---------------------------------------------

/** The checks of one connection, for the QEMU version it greeted with. */
export interface Decoders {
  /** The QEMU version (`10.0.13`), or `unknown` when the greeting said none. */
  readonly version: string
  /** Whether that version's own schema is one we generated from (then mismatches fail). */
  readonly known: boolean
  /** A command's `return` value, as it came, or `QmpProtocolError` (own schema only). */
  readonly result: (command: string, value: unknown) => Either.Either<unknown, QmpProtocolError>
  /** An event for a typed waiter, as it came, or `QmpProtocolError` (own schema only). */
  readonly event: <E extends { readonly event: string; readonly data?: unknown }>(
    event: E
  ) => Either.Either<E, QmpProtocolError>
}

/** What a connection reports to its log (a mismatch on a QEMU newer than the types). */
export type Warn = (message: string) => void

// Values delivered without passing their check (QEMU newer than the types): what `Qapi.isUnchecked` reads.
const uncheckedValues = new WeakSet<object>()

/**
 * Whether a reply value or event was delivered without matching its types
 * (a QEMU version we did not generate from sent something they do not allow).
 */
export const isUnchecked = (value: unknown): boolean =>
  typeof value === "object" && value !== null && uncheckedValues.has(value)

interface Checks {
  readonly label: string
  readonly result: (command: string) => Checker | undefined
  readonly event: (event: string) => Checker | undefined
}

const makeChecks = (label: string, tables: Pick<VersionTables, "commands" | "events">): Checks => ({
  label,
  result: checkers(tables.commands, "result", "return"),
  event: checkers(tables.events, "data", "data")
})

// Pure functions of constant tables: built once per version, then shared by every connection.
const checksByVersion = new Map<string, Checks>()
let mergedChecks: Checks | undefined

const merged = (): Checks =>
  (mergedChecks ??= makeChecks(
    `the types of QEMU ${Generated.versions.join(", ")}`,
    Generated as unknown as Pick<VersionTables, "commands" | "events">
  ))

const strict = (version: string, checks: Checks): Decoders => ({
  version,
  known: true,
  result: strictResults(checks.result, (command, where) => `reply to ${command} does not match ${checks.label} at ${where}`),
  event: (event) => {
    const c = checks.event(event.event)
    if (c === undefined || c.is(event.data)) return Either.right(event)
    const { message, path } = c.explain(event.data)
    return Either.left(
      new QmpProtocolError({
        message: `event ${event.event} does not match ${checks.label} at ${path}: ${message}`,
        raw: raw(event),
        path
      })
    )
  }
})

const lenient = (version: string, checks: Checks, warn: Warn): Decoders => {
  const warned = new Set<string>()
  const report = (what: string, name: string, mismatch: Mismatch) => {
    if (warned.has(`${what} ${name}`)) return
    warned.add(`${what} ${name}`)
    warn(
      `${what} ${name} from QEMU ${version} does not match ${checks.label} at ${mismatch.path}: ${mismatch.message}; ` +
        `delivered unchecked (QEMU ${version} is not one the types were generated from; further mismatches of ${name} are not reported)`
    )
  }
  const mark = <A>(value: A): A => {
    if (typeof value === "object" && value !== null) uncheckedValues.add(value)
    return value
  }
  return {
    version,
    known: false,
    result: (command, value) => {
      const c = checks.result(command)
      if (c === undefined || c.is(value)) return Either.right(value)
      report("reply to", command, c.explain(value))
      return Either.right(mark(value))
    },
    event: (event) => {
      const c = checks.event(event.event)
      if (c === undefined || c.is(event.data)) return Either.right(event)
      report("event", event.event, c.explain(event.data))
      return Either.right(mark(event))
    }
  }
}

/** The QEMU version of a greeting, as `major.minor.micro`. */
export interface QemuVersion {
  readonly major: number
  readonly minor: number
  readonly micro: number
}

/**
 * The checks of a connection to this QEMU version: its own schema when it is
 * one of `Generated.versions` (loaded on first use), else the merged types.
 */
export const forVersion = (qemu: QemuVersion | undefined, warn: Warn): Effect.Effect<Decoders> => {
  if (qemu === undefined) return Effect.succeed(lenient("unknown", merged(), warn))
  const version = `${qemu.major}.${qemu.minor}.${qemu.micro}`
  const key = `${qemu.major}.${qemu.minor}`
  const cached = checksByVersion.get(key)
  if (cached) return Effect.succeed(strict(version, cached))
  const load = has(Generated.versionTables, key) ? Generated.versionTables[key] : undefined
  if (load === undefined) return Effect.succeed(lenient(version, merged(), warn))
  return Effect.map(Effect.promise(load), (tables) => {
    const checks = checksByVersion.get(key) ?? makeChecks(`QEMU ${tables.version}'s schema`, tables)
    checksByVersion.set(key, checks)
    return strict(version, checks)
  })
}
