/**
 * Decoding of command replies and events with the generated Schemas, ready
 * for `QmpClient.execute` / `vm.command` / `vm.eventWait`.
 *
 * The generated types describe JSON as it is (no transformations), so a value
 * that passes its Schema is returned as it came: members QEMU added after the
 * schema was generated stay in place. The check is `Schema.is` (no copy); only
 * a value that fails it is decoded again to say where and why.
 */
import { Either, ParseResult, Schema } from "effect"
import { QmpProtocolError } from "../../Errors.js"
import * as Generated from "../../generated/qmp.js"

const has = (table: object, key: string): boolean => Object.prototype.hasOwnProperty.call(table, key)

interface Checker {
  readonly is: (u: unknown) => boolean
  readonly explain: (u: unknown) => string
}

const formatPath = (root: string, path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>((acc, p) => (typeof p === "number" ? `${acc}[${p}]` : `${acc}.${String(p)}`), root)

const LITERAL_MISMATCH = /^Expected "[^"]*"(?: \| "[^"]*")*, actual /

const checker = (schema: Schema.Schema.AnyNoContext, root: string): Checker => {
  const is = Schema.is(schema)
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
        return `${root}: the value is too deeply nested to describe`
      }
    }
  }
}

const explainIssue = (
  decode: (u: unknown) => Either.Either<unknown, ParseResult.ParseError>,
  root: string,
  u: unknown
): string => {
  const result = decode(u)
  if (Either.isRight(result)) return `${root}: does not match its schema`
  // a union reports every branch it tried; a branch whose tag did not match
  // says little ("Expected "s390x""), so prefer an issue from another one
  const issues = ParseResult.ArrayFormatter.formatErrorSync(result.left)
  const issue = issues.find((i) => !LITERAL_MISMATCH.test(i.message)) ?? issues[0]
  return issue ? `${formatPath(root, issue.path)}: ${issue.message}` : `${root}: ${result.left.message}`
}

// Decoders are pure functions of the generated (constant) tables: built on
// first use, then shared.
const eventCheckers = new Map<string, Checker>()

const eventChecker = (event: string): Checker | undefined => {
  let c = eventCheckers.get(event)
  if (!c && has(Generated.events, event)) {
    c = checker(Generated.events[event as Generated.EventName].data as Schema.Schema.AnyNoContext, "data")
    eventCheckers.set(event, c)
  }
  return c
}

const raw = (value: unknown): string => {
  try {
    const s = JSON.stringify(value) ?? String(value)
    return s.length > 300 ? `${s.slice(0, 300)}… (${s.length - 300} more chars)` : s
  } catch {
    return "(unprintable)"
  }
}

/**
 * The `return` checker of a generated command table (QMP's, or the guest
 * agent's): a value that passes its command's Schema is returned as it came,
 * one that fails is a `QmpProtocolError` whose message `describe` builds from
 * where it failed. Commands the table does not know pass through untouched.
 */
export const makeResultDecoder = (
  table: { readonly [command: string]: { readonly result: unknown } },
  describe: (command: string, where: string) => string
) => {
  const checkers = new Map<string, Checker>()
  return (command: string, value: unknown): Either.Either<unknown, QmpProtocolError> => {
    let c = checkers.get(command)
    if (c === undefined) {
      if (!has(table, command)) return Either.right(value)
      c = checker(table[command]!.result as Schema.Schema.AnyNoContext, "return")
      checkers.set(command, c)
    }
    if (c.is(value)) return Either.right(value)
    return Either.left(new QmpProtocolError({ message: describe(command, c.explain(value)), raw: raw(value) }))
  }
}

/**
 * Checks the `return` value of `command` against its generated Schema.
 * Unknown command names pass through untouched.
 */
export const decodeResult: (command: string, value: unknown) => Either.Either<unknown, QmpProtocolError> =
  makeResultDecoder(
    Generated.commands,
    (command, where) => `reply to ${command} does not match QEMU ${Generated.schemaVersion}'s schema at ${where}`
  )

/** An event as `decodeEvent` returns it. */
export interface DecodedEvent<E> {
  /** The event, unchanged (typed when `typed` is true). */
  readonly event: E
  /** Whether the event's data matched its Schema. */
  readonly typed: boolean
  /** A message to log, once per event name, when the data did not match. */
  readonly warning: string | undefined
}

/**
 * Checks an event's `data` against its generated Schema. An event whose data
 * does not match (QEMU may be newer than the generated code) is still
 * returned, untyped, with a warning the first time its name is seen in
 * `warned` (the caller keeps one set per connection).
 */
export const decodeEvent = <E extends { readonly event: string; readonly data?: unknown }>(
  event: E,
  warned: Set<string>
): DecodedEvent<E> => {
  const c = eventChecker(event.event)
  if (c === undefined) return { event, typed: false, warning: undefined }
  if (c.is(event.data)) return { event, typed: true, warning: undefined }
  if (warned.has(event.event)) return { event, typed: false, warning: undefined }
  warned.add(event.event)
  return {
    event,
    typed: false,
    warning: `event ${event.event} does not match QEMU ${Generated.schemaVersion}'s schema at ${
      c.explain(event.data)
    }; delivered untyped (further mismatches of ${event.event} are not reported)`
  }
}

/**
 * A per-connection event decoder: remembers which event names were warned about.
 */
export const makeEventDecoder = (): <E extends { readonly event: string; readonly data?: unknown }>(
  event: E
) => DecodedEvent<E> => {
  const warned = new Set<string>()
  return (event) => decodeEvent(event, warned)
}
