/**
 * Pure matching of QMP events against a partial pattern, with the semantics of
 * QEMU's Python `event_match`:
 *
 * - a `null` or `undefined` pattern matches anything (a wildcard);
 * - an object pattern matches an object event when every key of the pattern is
 *   present in the event and its value matches recursively (a sub-dict match:
 *   extra keys in the event are ignored);
 * - anything else is compared by value.
 *
 * Arrays, which the Python version does not handle consistently, match an array
 * of the same length whose elements match element-wise.
 *
 * @example
 * ```ts
 * import { EventMatch } from "effect-qemu"
 *
 * const event = { event: "SHUTDOWN", data: { guest: true, reason: "guest-shutdown" } }
 * EventMatch.eventMatch(event, { data: { guest: true } })   // true
 * EventMatch.eventMatch({ data: { guest: false } })(event)  // false
 * ```
 *
 * @since 0.1.0
 */
import { dual } from "effect/Function"

/**
 * A pattern: any JSON-like value, `null`/`undefined` being a wildcard.
 *
 * @since 0.1.0
 * @category models
 */
export type Match = unknown

const isRecord = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const matches = (event: unknown, match: unknown): boolean => {
  if (match === null || match === undefined) return true
  if (Array.isArray(match)) {
    return Array.isArray(event) && event.length === match.length &&
      match.every((m, i) => matches(event[i], m))
  }
  if (isRecord(match)) {
    if (!isRecord(event)) return false
    for (const key of Object.keys(match)) {
      if (!Object.prototype.hasOwnProperty.call(event, key)) return false
      if (!matches(event[key], match[key])) return false
    }
    return true
  }
  return Object.is(event, match) || event === match
}

/**
 * Does `event` match `match`? Data-first `eventMatch(event, match)` or
 * data-last `eventMatch(match)(event)`, for use in `Stream.filter`.
 *
 * @since 0.1.0
 * @category predicates
 */
export const eventMatch: {
  (match: Match): (event: unknown) => boolean
  (event: unknown, match: Match): boolean
} = dual(2, matches)
