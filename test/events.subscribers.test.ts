/**
 * Many event stream subscribers on one connection (issue 14): crowding is a
 * warning naming the count and the cost, and a subscriber that falls behind is
 * reported once, with its own count. The event router alone, in memory: no
 * socket, no QEMU, no timing.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as Events from "../src/internal/qmp/events.js"
import type { QmpMessage } from "../src/index.js"

const event = (n: number): QmpMessage.Event => ({ event: "STOP", data: { n }, timestamp: { seconds: n, microseconds: 0 } })

const router = (options: Partial<Events.Options> = {}) => {
  const warnings: Array<string> = []
  const r = Events.make({ cacheSize: 100, cacheBytes: 1_000_000, streamBuffer: 16, warn: (m) => warnings.push(m), ...options })
  return { r, warnings }
}

const subscribeMany = (r: Events.Router, n: number, scope: Scope.Scope) =>
  Effect.forEach(Array.from({ length: n }), () => Scope.extend(r.subscribe, scope), { discard: true })

/** Lets the end-of-burst drop reports (queued with setImmediate) run: an event-loop turn, not a timer. */
const flushReports = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

describe("many event subscribers", () => {
  it.effect("more than 1024 live subscribers on one connection give one warning naming the count and the buffer each holds", () =>
    Effect.gen(function*() {
      const { r, warnings } = router({ streamBuffer: 4096 })
      const scope = yield* Scope.make()
      yield* subscribeMany(r, Events.SUBSCRIBER_WARNING, scope)
      expect(warnings).toEqual([])
      yield* subscribeMany(r, 1, scope)
      expect(warnings).toEqual([expect.stringMatching(/^1025 live event stream subscribers .*more than 1024.*own buffer of up to 4096 events/)])
      yield* subscribeMany(r, 500, scope)
      expect(warnings).toHaveLength(1)
      yield* Scope.close(scope, Exit.void)
    }))

  it.effect("the crowding warning comes again only after the subscribers fell to half the threshold", () =>
    Effect.gen(function*() {
      const { r, warnings } = router({ subscriberWarning: 4 })
      const keep = yield* Scope.make()
      yield* subscribeMany(r, 3, keep)
      const extra = yield* Scope.make()
      yield* subscribeMany(r, 2, extra)
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toContain("5 live event stream subscribers")
      // Down to 3 (above half of 4), up to 5 again: still the one warning.
      yield* Scope.close(extra, Exit.void)
      const again = yield* Scope.make()
      yield* subscribeMany(r, 2, again)
      expect(warnings).toHaveLength(1)
      // Down to 2 (half), up to 5 again: warned again.
      yield* Scope.close(again, Exit.void)
      yield* Scope.close(keep, Exit.void)
      const later = yield* Scope.make()
      yield* subscribeMany(r, 5, later)
      expect(warnings).toHaveLength(2)
      yield* Scope.close(later, Exit.void)
    }))

  it.effect("each subscriber that falls behind is reported once with its own count, and what it lost later when it ends", () =>
    Effect.gen(function*() {
      const { r, warnings } = router({ streamBuffer: 4 })
      const scope = yield* Scope.make()
      yield* subscribeMany(r, 2, scope)
      for (let i = 1; i <= 10; i++) r.publish(event(i), 10)
      yield* flushReports
      expect(warnings.slice().sort()).toEqual([
        expect.stringMatching(/^event stream subscriber #1 fell more than 4 events behind: 6 oldest dropped/),
        expect.stringMatching(/^event stream subscriber #2 fell more than 4 events behind: 6 oldest dropped/)
      ])
      // Still behind: counted, not warned again.
      for (let i = 11; i <= 20; i++) r.publish(event(i), 10)
      yield* flushReports
      expect(warnings).toHaveLength(2)
      yield* Scope.close(scope, Exit.void)
      expect(warnings.slice(2).sort()).toEqual([
        "event stream subscriber #1 ended having dropped 10 more events after its first warning",
        "event stream subscriber #2 ended having dropped 10 more events after its first warning"
      ])
    }))

  it.effect("a subscriber that ends before its first report is due is reported with its count at once", () =>
    Effect.gen(function*() {
      const { r, warnings } = router({ streamBuffer: 4 })
      const scope = yield* Scope.make()
      yield* subscribeMany(r, 1, scope)
      for (let i = 1; i <= 7; i++) r.publish(event(i), 10)
      yield* Scope.close(scope, Exit.void)
      expect(warnings).toEqual([expect.stringMatching(/^event stream subscriber #1 fell more than 4 events behind: 3 oldest dropped/)])
      yield* flushReports
      expect(warnings).toHaveLength(1)
    }))

  it.effect("subscribers that keep within their buffer are never reported", () =>
    Effect.gen(function*() {
      const { r, warnings } = router({ streamBuffer: 4 })
      const scope = yield* Scope.make()
      yield* subscribeMany(r, 3, scope)
      for (let i = 1; i <= 4; i++) r.publish(event(i), 10)
      yield* flushReports
      yield* Scope.close(scope, Exit.void)
      expect(warnings).toEqual([])
    }))
})
