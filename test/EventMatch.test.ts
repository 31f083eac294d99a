/**
 * EventMatch.eventMatch against the examples of the seed's `event_match`
 * docstring (QEMU `python/qemu/machine/machine.py`), then the cases the
 * docstring leaves implicit.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Stream } from "effect"
import { eventMatch } from "../src/EventMatch.js"

describe("EventMatch.eventMatch", () => {
  describe("the seed's docstring examples (pattern on the right)", () => {
    it("None matches any object", () => {
      expect(eventMatch({ foo: { bar: 1 } }, null)).toBe(true)
      expect(eventMatch({}, null)).toBe(true)
      expect(eventMatch(5, null)).toBe(true)
    })

    it("{foo: None} matches {foo: {bar: 1}}", () => {
      expect(eventMatch({ foo: { bar: 1 } }, { foo: null })).toBe(true)
    })

    it("{foo: None} matches {foo: 5}", () => {
      expect(eventMatch({ foo: 5 }, { foo: null })).toBe(true)
    })

    it("{foo: {abc: None}} does not match {foo: {bar: 1}}", () => {
      expect(eventMatch({ foo: { bar: 1 } }, { foo: { abc: null } })).toBe(false)
    })

    it("{foo: {rab: 2}} matches {foo: {bar: 1, rab: 2}}", () => {
      expect(eventMatch({ foo: { bar: 1, rab: 2 } }, { foo: { rab: 2 } })).toBe(true)
    })
  })

  describe("sub-dict matching", () => {
    const shutdown = {
      event: "SHUTDOWN",
      data: { guest: true, reason: "guest-shutdown" },
      timestamp: { seconds: 1, microseconds: 2 }
    }

    it("matches a sub-dict whose values are equal, ignoring extra keys in the event", () => {
      expect(eventMatch({ foo: "bar", baz: 1 }, { foo: "bar" })).toBe(true)
      expect(eventMatch(shutdown, { event: "SHUTDOWN", data: { guest: true } })).toBe(true)
    })

    it("matches nested sub-dicts recursively", () => {
      expect(eventMatch({ foo: { bar: 1, baz: 2 } }, { foo: { bar: 1 } })).toBe(true)
      expect(eventMatch({ a: { b: { c: { d: 1, e: 2 } } } }, { a: { b: { c: { d: 1 } } } })).toBe(true)
    })

    it("matches with an empty pattern object", () => {
      expect(eventMatch(shutdown, {})).toBe(true)
    })

    it("does not match when a pattern key is missing from the event", () => {
      expect(eventMatch({ foo: "bar" }, { baz: 1 })).toBe(false)
      expect(eventMatch(shutdown, { data: { missing: true } })).toBe(false)
    })

    it("treats a null or undefined pattern value as a wildcard that still requires the key", () => {
      expect(eventMatch({ foo: null }, { foo: null })).toBe(true)
      expect(eventMatch({ foo: "anything" }, { foo: undefined })).toBe(true)
      expect(eventMatch({}, { foo: null })).toBe(false)
      expect(eventMatch({ bar: 1 }, { foo: undefined })).toBe(false)
    })

    it("does not match a nested value mismatch", () => {
      expect(eventMatch(shutdown, { data: { guest: false } })).toBe(false)
      expect(eventMatch({ foo: { bar: 1 } }, { foo: { bar: 2 } })).toBe(false)
    })

    it("compares values by value, not by identity", () => {
      expect(eventMatch({ foo: { bar: [1, 2] } }, { foo: { bar: [1, 2] } })).toBe(true)
      expect(eventMatch({ reason: "guest-shutdown" }, { reason: "guest-" + "shutdown" })).toBe(true)
    })

    it("does not match an object pattern against a non-object value", () => {
      expect(eventMatch({ foo: 5 }, { foo: { bar: 1 } })).toBe(false)
      expect(eventMatch({ foo: null }, { foo: { bar: 1 } })).toBe(false)
      expect(eventMatch({ foo: [1] }, { foo: { 0: 1 } })).toBe(false)
      expect(eventMatch("SHUTDOWN", { event: "SHUTDOWN" })).toBe(false)
    })

    it("only looks at the event's own keys", () => {
      expect(eventMatch({}, { toString: null })).toBe(false)
      expect(eventMatch(Object.create({ inherited: 1 }), { inherited: 1 })).toBe(false)
    })
  })

  describe("arrays", () => {
    it("matches an array of the same length element-wise", () => {
      expect(eventMatch([1, "a", true], [1, "a", true])).toBe(true)
      expect(eventMatch([{ id: 1, extra: 2 }, { id: 2 }], [{ id: 1 }, { id: 2 }])).toBe(true)
    })

    it("allows wildcards as array elements", () => {
      expect(eventMatch([1, { x: 9 }, 3], [1, null, 3])).toBe(true)
    })

    it("does not match arrays of a different length or with a differing element", () => {
      expect(eventMatch([1, 2, 3], [1, 2])).toBe(false)
      expect(eventMatch([1, 2], [1, 2, 3])).toBe(false)
      expect(eventMatch([1, 2, 3], [1, 5, 3])).toBe(false)
      expect(eventMatch({ devices: ["a", "b"] }, { devices: ["b", "a"] })).toBe(false)
    })

    it("does not match an array pattern against a non-array", () => {
      expect(eventMatch({ 0: 1, length: 1 }, [1])).toBe(false)
      expect(eventMatch("ab", ["a", "b"])).toBe(false)
    })
  })

  describe("primitives", () => {
    it("compares numbers, strings and booleans by value and type", () => {
      expect(eventMatch(1, 1)).toBe(true)
      expect(eventMatch(1, 2)).toBe(false)
      expect(eventMatch(1, "1")).toBe(false)
      expect(eventMatch("SHUTDOWN", "SHUTDOWN")).toBe(true)
      expect(eventMatch("SHUTDOWN", "shutdown")).toBe(false)
      expect(eventMatch(true, true)).toBe(true)
      expect(eventMatch(false, true)).toBe(false)
      expect(eventMatch(0, false)).toBe(false)
    })

    it("matches null and undefined patterns against any primitive", () => {
      for (const value of [0, "", false, null, undefined, "x"]) {
        expect(eventMatch(value, null)).toBe(true)
        expect(eventMatch(value, undefined)).toBe(true)
      }
    })

    it("does not match a primitive pattern against null", () => {
      expect(eventMatch(null, 0)).toBe(false)
      expect(eventMatch({ foo: null }, { foo: false })).toBe(false)
    })
  })

  describe("forms", () => {
    const event = { event: "BLOCK_JOB_COMPLETED", data: { device: "drive0", type: "mirror" } }

    it("has a data-last form that agrees with the data-first form", () => {
      const patterns = [null, {}, { data: { device: "drive0" } }, { data: { device: "drive1" } }, { nope: null }]
      for (const pattern of patterns) {
        expect(eventMatch(pattern)(event)).toBe(eventMatch(event, pattern))
      }
      expect(eventMatch({ data: { type: "mirror" } })(event)).toBe(true)
      expect(eventMatch({ data: { type: "commit" } })(event)).toBe(false)
    })

    it("treats an explicit undefined second argument as the data-first wildcard", () => {
      expect(eventMatch(event, undefined)).toBe(true)
      expect(typeof eventMatch(undefined)).toBe("function")
    })

    it("filters a Stream with the data-last form", () =>
      Effect.gen(function*() {
        const events = Stream.make(
          { event: "STOP", data: {} },
          { event: "SHUTDOWN", data: { guest: false, reason: "host-qmp-quit" } },
          { event: "RESUME" },
          { event: "SHUTDOWN", data: { guest: true, reason: "guest-shutdown" } }
        )
        const shutdowns = yield* Stream.runCollect(Stream.filter(events, eventMatch({ event: "SHUTDOWN" })))
        expect(Chunk.toArray(shutdowns)).toEqual([
          { event: "SHUTDOWN", data: { guest: false, reason: "host-qmp-quit" } },
          { event: "SHUTDOWN", data: { guest: true, reason: "guest-shutdown" } }
        ])
        const guest = yield* events.pipe(
          Stream.filter(eventMatch({ event: "SHUTDOWN", data: { guest: true } })),
          Stream.runCollect
        )
        expect(Chunk.toArray(guest)).toEqual([{ event: "SHUTDOWN", data: { guest: true, reason: "guest-shutdown" } }])
      }).pipe(Effect.runPromise))
  })
})
