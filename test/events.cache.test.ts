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

  for (const bound of [{ cacheSize: 50 }, { cacheSize: 10_000, cacheBytes: 500 }]) {
    it.effect(`a cache full for a long time keeps the newest events in order (${Object.keys(bound).join(", ")} bound)`, () =>
      Effect.gen(function*() {
        const { r, warnings } = router(bound)
        // Every 7th event is a B; 1000 events through a cache of 50 (drops and compactions).
        const publish = (from: number, to: number) => {
          for (let i = from; i <= to; i++) r.publish(event(i % 7 === 0 ? "B" : "A", i), 10)
        }
        publish(1, 500)
        // The oldest B among 451..500, taken from the middle; the oldest A, from the front.
        expect(n(yield* r.take(named("B"), undefined, "b"))).toBe(455)
        expect(Option.map(r.poll(named("A")), n)).toEqual(Option.some(451))
        publish(501, 1000)
        expect(warnings.length).toBe(2)
        expect(n(yield* r.take(named("B"), undefined, "b"))).toBe(952)
        expect(Option.map(r.poll(named("A")), n)).toEqual(Option.some(951))
        const rest = Array.from({ length: 48 }, (_, i) => 953 + i)
        expect(r.takeAll().map(n)).toEqual(rest)
        publish(1001, 1001)
        expect(r.takeAll().map(n)).toEqual([1001])
      }))
  }

  it.effect("events taken one by one as they come leave nothing behind: the next takeAll has only what came after", () =>
    Effect.gen(function*() {
      const { r, warnings } = router({ cacheSize: 10 })
      for (let i = 1; i <= 1000; i++) {
        r.publish(event("A", i), 10)
        r.publish(event("B", i), 10)
        expect(n(yield* r.take(named("A"), undefined, "a"))).toBe(i)
        expect(Option.map(r.poll(named("B")), n)).toEqual(Option.some(i))
      }
      expect(warnings).toEqual([])
      r.publish(event("C", 1001), 10)
      expect(r.takeAll().map(n)).toEqual([1001])
    }))

  it.effect("an event handed back after the cache has overflowed returns to its place among the newest", () =>
    Effect.gen(function*() {
      const { r } = router({ cacheSize: 100 })
      for (let i = 1; i <= 300; i++) r.publish(event("A", i), 10)
      const waiter = yield* Effect.fork(r.take(named("W"), undefined, "w"))
      yield* Effect.yieldNow()
      r.publish(event("W", 301), 10)
      r.publish(event("A", 302), 10)
      yield* Fiber.interrupt(waiter)
      expect(r.takeAll().map(n)).toEqual(Array.from({ length: 100 }, (_, i) => 203 + i))
    }))
})
