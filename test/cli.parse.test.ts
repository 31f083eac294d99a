import { describe, expect, it } from "@effect/vitest"
import * as Parse from "../src/cli/parse.js"

const one = (line: string) => Parse.step(Parse.initial, line)[0]

const lines = (...input: Array<string>) => {
  let state = Parse.initial
  const steps: Array<Parse.Step> = []
  for (const line of input) {
    const [step, next] = Parse.step(state, line)
    steps.push(step)
    state = next
  }
  return { steps, end: Parse.finish(state) }
}

describe("cli parse", () => {
  it("reads a bare command", () => {
    expect(one("query-status")).toEqual({ _tag: "Command", command: { execute: "query-status" } })
  })

  it("reads ints, booleans, JSON and strings", () => {
    expect(one(`cmd a=1 b=-7 c=true d=FALSE e={"x": [1, 2]} f=[] g=hello h=1.5 i="two words" j='it'`)).toEqual({
      _tag: "Command",
      command: {
        execute: "cmd",
        arguments: { a: 1, b: -7, c: true, d: false, e: { x: [1, 2] }, f: [], g: "hello", h: "1.5", i: "two words", j: "it" }
      }
    })
  })

  it("builds nested objects from dotted keys", () => {
    expect(one("blockdev-add driver=qcow2 node-name=d file.driver=file file.filename=/x.img file.aio.x=1")).toEqual({
      _tag: "Command",
      command: {
        execute: "blockdev-add",
        arguments: { driver: "qcow2", "node-name": "d", file: { driver: "file", filename: "/x.img", aio: { x: 1 } } }
      }
    })
  })

  it("rejects a key given twice, with the column of the second one", () => {
    expect(one("cmd a=1 b=2 a=3")).toEqual({ _tag: "Error", message: "key 'a' given twice", column: 13 })
    expect(one("cmd x.y=1 x.y=2")).toMatchObject({ _tag: "Error", column: 11 })
  })

  it("takes keys named like Object.prototype members once, and still rejects them given twice", () => {
    expect(one("cmd constructor=1 toString=2 hasOwnProperty=3 valueOf.x=4")).toEqual({
      _tag: "Command",
      command: { execute: "cmd", arguments: { constructor: 1, toString: 2, hasOwnProperty: 3, valueOf: { x: 4 } } }
    })
    expect(one("cmd constructor=1 constructor=2")).toEqual({ _tag: "Error", message: "key 'constructor' given twice", column: 19 })
    expect(one("cmd toString.a=1 toString.a=2")).toMatchObject({ _tag: "Error", column: 18 })
  })

  it("sends a key named __proto__ as a member, not as the object's prototype", () => {
    const args = (line: string) => {
      const step = one(line)
      return step._tag === "Command" ? step.command.arguments : step
    }
    expect(JSON.stringify(args("cmd __proto__=1"))).toBe(`{"__proto__":1}`)
    const nested = args("cmd __proto__.x=1 y=2")
    expect(JSON.stringify(nested)).toBe(`{"__proto__":{"x":1},"y":2}`)
    expect(Object.getPrototypeOf(nested)).toBe(Object.prototype)
    expect(one("cmd __proto__=1 __proto__=2")).toMatchObject({ _tag: "Error", message: "key '__proto__' given twice" })
  })

  it("rejects a dotted key below a plain value", () => {
    expect(one("cmd a=1 a.b=2")).toMatchObject({ _tag: "Error", column: 9, message: "'a' is already a value, not an object" })
  })

  it("reports bad JSON, missing '=' and unclosed brackets with a column", () => {
    expect(one("cmd a={nope}")).toMatchObject({ _tag: "Error", column: 7 })
    expect(one("cmd  novalue")).toMatchObject({ _tag: "Error", column: 6, message: "expected key=value, got 'novalue'" })
    expect(one("cmd a={\"b\": 1")).toMatchObject({ _tag: "Error", column: 7, message: "unclosed '{'" })
    expect(one("cmd a=\"x")).toMatchObject({ _tag: "Error", column: 7 })
    expect(one("a=1")).toMatchObject({ _tag: "Error", column: 1 })
    expect(one("cmd n=99999999999999999999")).toMatchObject({ _tag: "Error", column: 7 })
  })

  it("ignores blank and comment lines", () => {
    expect(one("   ")).toEqual({ _tag: "Empty" })
    expect(one("# a comment")).toEqual({ _tag: "Empty" })
  })

  it("takes a whole JSON command", () => {
    expect(one(`{"execute": "stop"}`)).toEqual({ _tag: "Command", command: { execute: "stop" } })
    expect(one(`{"execute": "x", "arguments": {"a": 1}}`)).toEqual({
      _tag: "Command",
      command: { execute: "x", arguments: { a: 1 } }
    })
    expect(one(`{"arguments": {}}`)).toMatchObject({ _tag: "Error", column: 1 })
  })

  it("collects a multi-line transaction", () => {
    const { steps, end } = lines(
      "transaction(",
      "  block-dirty-bitmap-add node=d0 name=b0",
      "",
      "  abort",
      ")"
    )
    expect(steps.slice(0, 4).every((s) => s._tag === "Pending")).toBe(true)
    expect(steps[4]).toEqual({
      _tag: "Command",
      command: {
        execute: "transaction",
        arguments: { actions: [{ type: "block-dirty-bitmap-add", data: { node: "d0", name: "b0" } }, { type: "abort", data: {} }] }
      }
    })
    expect(end).toEqual({ _tag: "Empty" })
  })

  it("takes actions on the opening and closing lines of a transaction", () => {
    const { steps } = lines("transaction( abort", "abort )")
    expect(steps[1]).toEqual({
      _tag: "Command",
      command: { execute: "transaction", arguments: { actions: [{ type: "abort", data: {} }, { type: "abort", data: {} }] } }
    })
  })

  it("discards a transaction whose action had an error", () => {
    const { steps } = lines("transaction(", "abort a=1 a=2", "abort", ")", "stop")
    expect(steps[1]).toMatchObject({ _tag: "Error", message: "key 'a' given twice" })
    expect(steps[3]).toMatchObject({ _tag: "Error", message: expect.stringContaining("not sent") })
    expect(steps[4]).toEqual({ _tag: "Command", command: { execute: "stop" } })
  })

  it("complains when input ends inside a transaction", () => {
    expect(lines("transaction(", "abort").end).toMatchObject({ _tag: "Error" })
  })

  it("sends HMP lines as human-monitor-command", () => {
    expect(Parse.hmp(" info status ")).toEqual({
      _tag: "Command",
      command: { execute: "human-monitor-command", arguments: { "command-line": "info status" } }
    })
    expect(Parse.hmp("")).toEqual({ _tag: "Empty" })
  })
})
