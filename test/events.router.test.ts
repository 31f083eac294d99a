/**
 * The event router alone (no socket, no QEMU): delivery order, the bounded
 * cache, stream fan-out, and the hand-back of an event whose waiter was
 * interrupted before it could take it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Fiber, Stream, TestClock } from "effect"
import { QmpConnectionError } from "../src/Errors.js"
import * as Events from "../src/internal/qmp/events.js"
import type { QmpMessage } from "../src/index.js"

const event = (name: string, n = 0): QmpMessage.Event => ({
  event: name,
  data: { n },
  timestamp: { seconds: n, microseconds: 0 }
})

const router = (options: Partial<Events.Options> = {}) => {
  const warnings: Array<string> = []
  const r = Events.make({
    cacheSize: 100,
    cacheBytes: 1_000_000,
    streamBuffer: 16,
    warn: (m) => warnings.push(m),
    ...options
  })
  return { r, warnings }
}

const named = (name: string) => (e: QmpMessage.Event) => e.event === name
const n = (e: QmpMessage.Event) => (e.data as { n: number }).n

describe("event router", () => {
  it.effect("an event several waiters want goes to the one that started waiting first", () =>
    Effect.gen(function*() {
      const { r } = router()
      const first = yield* Effect.fork(r.take(named("A"), undefined, "a"))
      yield* Effect.yieldNow()
      const second = yield* Effect.fork(r.take(named("A"), undefined, "a"))
      yield* Effect.yieldNow()
      r.publish(event("A", 1), 10)
      r.publish(event("A", 2), 10)
      expect(n(yield* Fiber.join(first))).toBe(1)
      expect(n(yield* Fiber.join(second))).toBe(2)
      expect(r.takeAll()).toEqual([])
    }))

  it.effect("unclaimed events are cached in arrival order and taken by later waiters by pattern", () =>
    Effect.gen(function*() {
      const { r } = router()
      r.publish(event("A", 1), 10)
      r.publish(event("B", 2), 10)
      r.publish(event("A", 3), 10)
      expect(n(yield* r.take(named("A"), undefined, "a"))).toBe(1)
      expect(n(yield* r.take(named("A"), undefined, "a"))).toBe(3)
      expect(r.takeAll().map(n)).toEqual([2])
    }))

  it.effect("a waiter interrupted after its event was handed to it gives the event back", () =>
    Effect.gen(function*() {
      const { r } = router()
      const first = yield* Effect.fork(r.take(named("A"), undefined, "a"))
      yield* Effect.yieldNow()
      r.publish(event("A", 1), 10)
      // The fiber was resumed but has not run: interrupting it now must not lose the event.
      yield* Fiber.interrupt(first)
      expect(n(yield* r.take(named("A"), undefined, "a"))).toBe(1)
    }))

  it.effect("a deadline fails the waiter with QmpTimeoutError and a later event is cached, not lost", () =>
    Effect.gen(function*() {
      const { r } = router()
      const waiting = yield* Effect.fork(Effect.flip(r.take(named("A"), Duration.seconds(5), "waiting for A")))
      yield* TestClock.adjust("5 seconds")
      const error = yield* Fiber.join(waiting)
      expect(error._tag).toBe("QmpTimeoutError")
      expect(error.message).toContain("waiting for A")
      r.publish(event("A", 1), 10)
      expect(r.takeAll().map(n)).toEqual([1])
    }))

  it.effect("the cache keeps the newest events within its count bound, with one warning per overflow", () =>
    Effect.gen(function*() {
      const { r, warnings } = router({ cacheSize: 3 })
      for (let i = 1; i <= 10; i++) r.publish(event("A", i), 10)
      expect(r.takeAll().map(n)).toEqual([8, 9, 10])
      expect(warnings.length).toBe(1)
      expect(warnings[0]).toContain("dropping the oldest")
      // A new overflow after the cache drained warns again.
      for (let i = 11; i <= 15; i++) r.publish(event("A", i), 10)
      expect(warnings.length).toBe(2)
    }))

  it.effect("the cache is bounded by bytes too", () =>
    Effect.gen(function*() {
      const { r, warnings } = router({ cacheBytes: 250 })
      for (let i = 1; i <= 10; i++) r.publish(event("A", i), 100)
      expect(r.takeAll().map(n)).toEqual([9, 10])
      expect(warnings.length).toBe(1)
    }))

  it.scoped("every stream subscriber sees every event, independently of waiters", () =>
    Effect.gen(function*() {
      const { r } = router()
      const s1 = yield* r.subscribe
      const s2 = yield* r.subscribe
      const taken = yield* Effect.fork(r.take(named("A"), undefined, "a"))
      yield* Effect.yieldNow()
      r.publish(event("A", 1), 10)
      r.publish(event("B", 2), 10)
      r.close(new QmpConnectionError({ reason: "Eof" }))
      expect(Chunk.toReadonlyArray(yield* Stream.runCollect(s1)).map(n)).toEqual([1, 2])
      expect(Chunk.toReadonlyArray(yield* Stream.runCollect(s2)).map(n)).toEqual([1, 2])
      expect(n(yield* Fiber.join(taken))).toBe(1)
      expect(r.takeAll().map(n)).toEqual([2])
    }))

  it.live("a subscriber that falls behind loses its oldest events with a warning giving the count", () =>
    Effect.gen(function*() {
      const { r, warnings } = router({ streamBuffer: 16 })
      const stream = yield* r.subscribe
      for (let i = 1; i <= 40; i++) r.publish(event("A", i), 10)
      r.close(new QmpConnectionError({ reason: "Eof" }))
      const seen = Chunk.toReadonlyArray(yield* Stream.runCollect(stream)).map(n)
      expect(seen).toEqual(Array.from({ length: 16 }, (_, i) => 25 + i))
      yield* Effect.sleep("20 millis")
      expect(warnings).toEqual([expect.stringContaining("24 oldest dropped")])
    }).pipe(Effect.scoped))

  it.effect("closing fails every waiter with the cause; cached events stay readable", () =>
    Effect.gen(function*() {
      const { r } = router()
      r.publish(event("B", 1), 10)
      const waiting = yield* Effect.fork(Effect.flip(r.take(named("A"), undefined, "a")))
      yield* Effect.yieldNow()
      r.close(new QmpConnectionError({ reason: "Eof", detail: "gone" }))
      expect((yield* Fiber.join(waiting))._tag).toBe("QmpConnectionError")
      expect((yield* Effect.flip(r.take(named("A"), undefined, "a")))._tag).toBe("QmpConnectionError")
      expect(n(yield* r.take(named("B"), undefined, "b"))).toBe(1)
    }))
})
