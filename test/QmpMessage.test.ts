/**
 * Decoding of what QEMU sends: every message kind, tolerance of unknown
 * fields, and QmpProtocolError (with a truncated `raw`) for everything else.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import type { QmpProtocolError } from "../src/Errors.js"
import * as QmpMessage from "../src/QmpMessage.js"

const greeting = {
  QMP: {
    version: { qemu: { micro: 0, minor: 2, major: 7 }, package: "Debian 1:7.2+dfsg-7+deb12u7" },
    capabilities: ["oob"]
  }
}

const decoded = (text: string): QmpMessage.Message => {
  const result = QmpMessage.decode(text)
  if (Either.isLeft(result)) throw new Error(`expected a message, got: ${result.left.message}`)
  return result.right
}

const failure = (text: string): QmpProtocolError => {
  const result = QmpMessage.decode(text)
  if (Either.isRight(result)) throw new Error(`expected a QmpProtocolError, got ${result.right._tag}`)
  expect(result.left._tag).toBe("QmpProtocolError")
  return result.left
}

describe("QmpMessage.decode", () => {
  describe("valid messages", () => {
    it("decodes a greeting", () => {
      const message = decoded(JSON.stringify(greeting))
      expect(message).toEqual({ _tag: "Greeting", value: greeting })
    })

    it("decodes a success response with its id", () => {
      const message = decoded(`{"return": {"running": true, "status": "running"}, "id": "eq-1"}`)
      expect(message._tag).toBe("Response")
      if (message._tag !== "Response") return
      expect(QmpMessage.isErrorResponse(message.value)).toBe(false)
      expect(message.value).toEqual({ return: { running: true, status: "running" }, id: "eq-1" })
    })

    it("decodes a success response whose return is not an object", () => {
      for (const value of [[], 0, "", null, false]) {
        const message = decoded(JSON.stringify({ return: value, id: 7 }))
        expect(message).toEqual({ _tag: "Response", value: { return: value, id: 7 } })
      }
    })

    it("decodes an error response", () => {
      const message = decoded(
        `{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}, "id": "eq-2"}`
      )
      expect(message._tag).toBe("Response")
      if (message._tag !== "Response") return
      expect(QmpMessage.isErrorResponse(message.value)).toBe(true)
      expect(message.value).toEqual({
        error: { class: "CommandNotFound", desc: "The command nope has not been found" },
        id: "eq-2"
      })
    })

    it("decodes an error response without id (QEMU could not parse the command)", () => {
      const message = decoded(`{"error": {"class": "GenericError", "desc": "JSON parse error"}}`)
      expect(message._tag).toBe("Response")
      if (message._tag !== "Response") return
      expect(message.value.id).toBeUndefined()
    })

    it("decodes an event with and without data", () => {
      expect(decoded(`{"timestamp": {"seconds": 1700000000, "microseconds": 5}, "event": "STOP"}`)).toEqual({
        _tag: "Event",
        value: { event: "STOP", timestamp: { seconds: 1700000000, microseconds: 5 } }
      })
      const shutdown = decoded(
        `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}`
      )
      expect(shutdown).toEqual({
        _tag: "Event",
        value: {
          event: "SHUTDOWN",
          data: { guest: true, reason: "guest-shutdown" },
          timestamp: { seconds: 1, microseconds: 2 }
        }
      })
    })

    it("the fast path for events builds exactly what the Event schema builds, or leaves the message to it", () => {
      const viaSchema = Schema.decodeUnknownEither(QmpMessage.Event)
      const time = `"timestamp": {"seconds": 1, "microseconds": 2}`
      const inputs = [
        `{${time}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "host-qmp-quit"}}`,
        `{${time}, "event": "X", "data": {}}`,
        `{${time}, "event": "X", "data": {"nested": {"a": [1, {"b": null}]}, "n": 1.5}}`,
        `{${time}, "event": "X", "data": {"__proto__": {"polluted": true}, "constructor": 1}}`,
        `{${time}, "event": "X", "data": [1, 2]}`,
        `{${time}, "event": "X", "data": null}`,
        `{${time}, "event": "X", "data": "text"}`,
        `{${time}, "event": "X", "data": {"k": 1}, "extra": true}`
      ]
      for (const text of inputs) {
        const json = JSON.parse(text)
        const ours = QmpMessage.decode(text)
        const theirs = viaSchema(json)
        expect(Either.isRight(ours)).toBe(Either.isRight(theirs))
        if (Either.isRight(ours) && Either.isRight(theirs)) {
          expect(ours.right).toEqual({ _tag: "Event", value: theirs.right })
          expect(Object.keys((ours.right.value as QmpMessage.Event).data ?? {})).toEqual(Object.keys(theirs.right.data ?? {}))
          expect(Object.getPrototypeOf((ours.right.value as QmpMessage.Event).data ?? {}))
            .toEqual(Object.getPrototypeOf(theirs.right.data ?? {}))
        }
      }
    })

    it("tolerates unknown extra fields at every level", () => {
      const greetingPlus = {
        QMP: { ...greeting.QMP, future: 1, version: { ...greeting.QMP.version, build: "x" } },
        extra: true
      }
      expect(decoded(JSON.stringify(greetingPlus))._tag).toBe("Greeting")
      expect(decoded(`{"return": {}, "id": 1, "trace": "abc"}`)._tag).toBe("Response")
      expect(decoded(`{"error": {"class": "GenericError", "desc": "d", "hint": "h"}, "id": 1}`)._tag).toBe("Response")
      expect(decoded(`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2, "ns": 3}, "node": "n"}`)._tag)
        .toBe("Event")
    })

    it("tolerates QEMU's \\r line terminator and surrounding whitespace", () => {
      expect(decoded(`  {"return": {}, "id": "eq-0"}\r`)._tag).toBe("Response")
    })

    it("decodes an already parsed value with decodeValue", () => {
      const result = QmpMessage.decodeValue({ event: "RESUME", timestamp: { seconds: 1, microseconds: 0 } })
      expect(Either.isRight(result) && result.right._tag).toBe("Event")
    })
  })

  describe("invalid messages", () => {
    it("rejects malformed JSON", () => {
      const error = failure(`{"return": {}, "id": `)
      expect(error.message).toContain("malformed JSON")
      expect(error.raw).toBe(`{"return": {}, "id": `)
    })

    it("rejects JSON values that are not objects", () => {
      for (const text of ["[]", "[{\"return\": {}}]", "42", "\"QMP\"", "null", "true"]) {
        const error = failure(text)
        expect(error.message).toContain("not a JSON object")
        expect(error.raw).toBe(text)
      }
    })

    it("rejects an object that is no known message kind", () => {
      const error = failure(`{"hello": "world"}`)
      expect(error.message).toContain("unrecognised")
      expect(error.raw).toBe(`{"hello": "world"}`)
    })

    it("rejects messages with missing fields", () => {
      const cases: ReadonlyArray<readonly [string, string]> = [
        [`{"QMP": {"version": ${JSON.stringify(greeting.QMP.version)}}}`, "invalid greeting"],
        [`{"QMP": {"capabilities": []}}`, "invalid greeting"],
        [`{"error": {"class": "GenericError"}, "id": 1}`, "invalid response"],
        [`{"error": {"desc": "no class"}}`, "invalid response"],
        [`{"event": "STOP"}`, "invalid event"],
        [`{"event": "STOP", "timestamp": {"seconds": 1}}`, "invalid event"]
      ]
      for (const [text, message] of cases) {
        const error = failure(text)
        expect(error.message).toContain(message)
        expect(error.raw).toBe(text)
      }
    })

    it("rejects messages with fields of the wrong type", () => {
      const cases: ReadonlyArray<readonly [string, string]> = [
        [`{"QMP": {"version": {"qemu": {"major": "7", "minor": 2, "micro": 0}, "package": ""}, "capabilities": []}}`, "invalid greeting"],
        [`{"QMP": {"version": ${JSON.stringify(greeting.QMP.version)}, "capabilities": "oob"}}`, "invalid greeting"],
        [`{"error": "CommandNotFound", "id": 1}`, "invalid response"],
        [`{"error": {"class": 1, "desc": "d"}, "id": 1}`, "invalid response"],
        [`{"event": 5, "timestamp": {"seconds": 1, "microseconds": 2}}`, "invalid event"],
        [`{"event": "STOP", "data": [1, 2], "timestamp": {"seconds": 1, "microseconds": 2}}`, "invalid event"],
        [`{"event": "STOP", "timestamp": {"seconds": "1", "microseconds": 2}}`, "invalid event"]
      ]
      for (const [text, message] of cases) {
        const error = failure(text)
        expect(error.message).toContain(message)
        expect(error.raw).toBe(text)
      }
    })

    it("names the offending field in the error message", () => {
      expect(failure(`{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": "2"}}`).message).toContain(
        "microseconds"
      )
    })

    it("truncates a long raw input to about 512 characters and says how long it was", () => {
      const long = `{"event": "STOP", "timestamp": "${"t".repeat(10_000)}"}`
      const error = failure(long)
      expect(error.raw.startsWith(long.slice(0, 512))).toBe(true)
      expect(error.raw.length).toBeLessThan(600)
      expect(error.raw).toContain(String(long.length))

      const garbage = "x".repeat(100_000)
      const malformed = failure(garbage)
      expect(malformed.raw.length).toBeLessThan(600)
      expect(malformed.raw).toContain("100000")
      expect(malformed.message.length).toBeLessThan(1_000)
    })

    it("keeps a raw input of exactly 512 characters whole", () => {
      const text = `["${"a".repeat(508)}"]`
      expect(text.length).toBe(512)
      expect(failure(text).raw).toBe(text)
    })
  })
})
