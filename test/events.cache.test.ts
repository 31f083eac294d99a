/**
 * The event router's cache of unclaimed events (no socket, no QEMU): where an
 * event handed back by an interrupted waiter goes, and when the overflow
 * warning is armed again.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import * as Events from "../src/internal/qmp/events.js"
import type { QmpMessage } from "../src/index.js"

const event = (name: string, n: number): QmpMessage.Event => ({
  event: name,
  data: { n },
  timestamp: { seconds: n, microseconds: 0 }
})

const router = (options: Partial<Events.Options> = {}) => {
  const warnings: Array<string> = []
  const r = Events.make({ cacheSize: 100, cacheBytes: 1_000_000, streamBuffer: 16, warn: (m) => warnings.push(m), ...options })
  return { r, warnings }
}

const named = (name: string) => (e: QmpMessage.Event) => e.event === name
const n = (e: QmpMessage.Event) => (e.data as { n: number }).n

describe("event cache", () => {
  it.effect("an event handed back by an interrupted waiter returns to its arrival place, ahead of later events", () =>
    Effect.gen(function*() {
      const { r } = router()
      const waiter = yield* Effect.fork(r.take(named("A"), undefined, "a"))
      yield* Effect.yieldNow()
      r.publish(event("A", 1), 10)
      // The waiter holds A1 but has not run: these are cached behind it.
      r.publish(event("B", 2), 10)
      r.publish(event("A", 3), 10)
      yield* Fiber.interrupt(waiter)
      expect(r.takeAll().map(n)).toEqual([1, 2, 3])
    }))

  it.effect("a handed-back event is found first by the next waiter wanting that name", () =>
    Effect.gen(function*() {
      const { r } = router()
      const waiter = yield* Effect.fork(r.take(named("A"), undefined, "a"))
      yield* Effect.yieldNow()
      r.publish(event("A", 1), 10)
      r.publish(event("A", 2), 10)
      yield* Fiber.interrupt(waiter)
      expect(n(yield* r.take(named("A"), undefined, "a"))).toBe(1)
      expect(n(yield* r.take(named("A"), undefined, "a"))).toBe(2)
    }))

  it.effect("draining an overflowed cache with take and poll re-arms the warning: the next overflow warns again", () =>
    Effect.gen(function*() {
      const { r, warnings } = router({ cacheSize: 3 })
      for (let i = 1; i <= 5; i++) r.publish(event("A", i), 10)
      expect(warnings.length).toBe(1)
      // further events while still overflowing do not warn again
      r.publish(event("A", 6), 10)
      expect(warnings.length).toBe(1)
      expect(n(yield* r.take(named("A"), undefined, "a"))).toBe(4)
      expect(Option.map(r.poll(named("A")), n)).toEqual(Option.some(5))
      expect(n(yield* r.take(named("A"), undefined, "a"))).toBe(6)
      for (let i = 7; i <= 11; i++) r.publish(event("A", i), 10)
      expect(warnings.length).toBe(2)
      expect(warnings[1]).toContain("dropping the oldest")
      expect(r.takeAll().map(n)).toEqual([9, 10, 11])
    }))
})
