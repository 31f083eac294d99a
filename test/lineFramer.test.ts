/**
 * The one line framer (QMP, guest agent, CLI line client) alone, fed reads
 * by hand: splitting, `\r\n`, characters split across reads, the byte limit,
 * what happens after an oversized line, partial lines, and the agent's 0xFF
 * delimiter.
 */
import { describe, expect, it } from "@effect/vitest"
import * as LineFramer from "../src/internal/lineFramer.js"

const framer = (options: LineFramer.Options) => {
  const seen: Array<string> = []
  const heads: Array<string> = []
  const push = LineFramer.make(options, {
    onLine: (l) => seen.push(l),
    onOversized: (size, head) => {
      seen.push(`OVERSIZED ${size}`)
      heads.push(head)
    }
  })
  return { push, seen, heads }
}

const bytes = (...parts: Array<string | number>) =>
  Buffer.concat(parts.map((p) => (typeof p === "number" ? Buffer.of(p) : Buffer.from(p))))

describe("line framer", () => {
  it("hands on every line of a read that holds many, without the newline", () => {
    const { push, seen } = framer({ maxLineBytes: 100 })
    push(Buffer.from("{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n"))
    expect(seen).toEqual(["{\"a\":1}", "{\"b\":2}", "{\"c\":3}"])
  })

  it("keeps the \\r of a \\r\\n line and skips empty lines and lone \\r", () => {
    const { push, seen } = framer({ maxLineBytes: 100 })
    push(Buffer.from("one\r\n\r\n\n\ntwo\r"))
    push(Buffer.from("\n"))
    expect(seen).toEqual(["one\r", "two\r"])
  })

  it("joins a line split over many reads, and one whose \\r\\n is split", () => {
    const { push, seen } = framer({ maxLineBytes: 100 })
    for (const part of ["{\"ret", "urn\"", ": {}}\r"]) push(Buffer.from(part))
    expect(seen).toEqual([])
    push(Buffer.from("\nnext\n"))
    expect(seen).toEqual(["{\"return\": {}}\r", "next"])
  })

  it("decodes a multi-byte character split across reads whole", () => {
    const { push, seen } = framer({ maxLineBytes: 100 })
    const line = Buffer.from("é€😀\n")
    // Every split point, including inside each character.
    for (let cut = 1; cut < line.length; cut++) {
      push(line.subarray(0, cut))
      push(line.subarray(cut))
    }
    expect(seen).toEqual(Array.from({ length: line.length - 1 }, () => "é€😀"))
  })

  it("never hands on a partial line: one still open when the reads stop stays buffered", () => {
    const { push, seen } = framer({ maxLineBytes: 100 })
    push(Buffer.from("done\n{\"partial\":"))
    expect(seen).toEqual(["done"])
  })

  it("counts the limit in bytes: a line of exactly the limit passes, one byte more is oversized", () => {
    const { push, seen } = framer({ maxLineBytes: 4 })
    push(Buffer.from("€a\n€ab\n"))
    expect(seen).toEqual(["€a", "OVERSIZED 5"])
  })

  it("reports an oversized tail once, as soon as it passes the limit, and skips the rest of that line", () => {
    const { push, seen } = framer({ maxLineBytes: 8 })
    push(Buffer.from("0123"))
    push(Buffer.from("456789"))
    push(Buffer.from("still the same line"))
    push(Buffer.from(" and more\nfine\n"))
    expect(seen).toEqual(["OVERSIZED 10", "fine"])
  })

  it("reads on after an oversized line that ended in the same read", () => {
    const { push, seen } = framer({ maxLineBytes: 8 })
    push(Buffer.from("0123456789abc\nok\n"))
    expect(seen).toEqual(["OVERSIZED 13", "ok"])
  })

  it("gives the first 256 bytes of an oversized line as its head, across the reads it came in", () => {
    const { push, heads } = framer({ maxLineBytes: 300 })
    push(Buffer.from("a"))
    push(Buffer.from("b".repeat(299)))
    push(Buffer.from("c".repeat(10)))
    expect(heads).toEqual([`a${"b".repeat(255)}`])
  })

  it("without a delimiter, 0xFF is an ordinary byte", () => {
    const { push, seen } = framer({ maxLineBytes: 100 })
    push(bytes("ab", 0xff, "cd\n"))
    expect(seen).toEqual(["ab\ufffdcd"])
  })

  it("with a delimiter, the byte drops the partial line before it, in the same read or an earlier one", () => {
    const { push, seen } = framer({ maxLineBytes: 100, delimiter: 0xff })
    push(bytes("{\"a\":1}\n{\"par"))
    push(bytes("tial", 0xff, "{\"return\": 5}\n", 0xff, 0xff, "x", 0xff, "{\"b\""))
    push(bytes(":2}\r\n"))
    expect(seen).toEqual(["{\"a\":1}", "{\"return\": 5}", "{\"b\":2}\r"])
  })

  it("with a delimiter, the byte also ends the skipping of an oversized line", () => {
    const { push, seen } = framer({ maxLineBytes: 4, delimiter: 0xff })
    push(bytes("0123456789"))
    push(bytes("89", 0xff, "ok\n"))
    expect(seen).toEqual(["OVERSIZED 10", "ok"])
  })
})
