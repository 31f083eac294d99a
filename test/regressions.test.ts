/**
 * Regression tests for bugs found by the reliability harness
 * (`npm run reliability`), one `describe` per bug.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Logger, LogLevel } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { QemuMachine } from "../src/index.js"
import * as Redact from "../src/internal/redact.js"
import * as LineFramer from "../src/internal/lineFramer.js"
import * as QmpClient from "../src/QmpClient.js"
import * as QmpMessage from "../src/QmpMessage.js"
import { eventJson, fakeServer } from "./helpers/fakeQmp.js"
import { QEMU } from "./helpers/qemu.js"

const deep = (depth: number) => "[".repeat(depth) + "]".repeat(depth)

/** Bounds a wait that must not hang, so a regression fails fast instead of at the vitest timeout. */
const within = <A, E, R>(effect: Effect.Effect<A, E, R>, duration: Duration.DurationInput = "10 seconds") =>
  Effect.timeoutFail(effect, { duration, onTimeout: () => new Error(`did not complete within ${Duration.format(duration)}`) })

const captureLogs = () => {
  const messages: Array<string> = []
  const layer = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ annotations, logLevel, message }) => {
      const text = Array.isArray(message) ? message.join(" ") : String(message)
      messages.push(`${logLevel.label} ${text} ${JSON.stringify(Object.fromEntries(annotations))}`)
    })
  )
  return { messages, layer }
}

describe("deeply nested JSON from the server (stack overflow in a socket callback)", () => {
  // JSON.parse accepts 100k nested arrays; formatting the schema error (or String() on the
  // value) recursed and threw RangeError inside the socket's data callback: an uncaught
  // exception in the user's process, and every pending call left hanging.
  const cases = [
    `{"error":{"class":"GenericError","desc":${deep(100_000)}},"id":"eq-1"}`,
    `{"event":${deep(100_000)},"timestamp":{"seconds":1,"microseconds":2}}`,
    `{"QMP":${deep(100_000)}}`,
    `{"event":"X","data":{"a":1},"timestamp":${deep(100_000)}}`
  ]

  it.each(cases.map((c, i) => [i, c] as const))("QmpMessage.decode returns a QmpProtocolError for variant %i instead of throwing", (_, text) => {
    const result = QmpMessage.decode(text)
    expect(Either.isLeft(result)).toBe(true)
    if (Either.isLeft(result)) {
      expect(result.left._tag).toBe("QmpProtocolError")
      expect(result.left.raw.length).toBeLessThan(1000)
    }
  })

  it.scopedLive("a pending call fails with QmpProtocolError when the server answers with a deeply nested invalid message", () =>
    Effect.gen(function*() {
      const server = yield* fakeServer((conn) =>
        Effect.gen(function*() {
          yield* conn.negotiate()
          const command = yield* conn.nextCommand
          yield* conn.send(`{"error":{"class":"GenericError","desc":${deep(100_000)}},"id":${JSON.stringify(command.id)}}`)
          yield* conn.closed
        })
      )
      const qmp = yield* QmpClient.connect({ address: server.path })
      const error = yield* within(Effect.flip(qmp.execute("fake-status")))
      expect(error._tag).toBe("QmpProtocolError")
      expect(yield* qmp.isConnected).toBe(false)
    }))

  it.scopedLive("a reply whose id is nested 100k levels deep is dropped with a warning, and the client keeps working", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const server = yield* fakeServer((conn) =>
        Effect.gen(function*() {
          yield* conn.negotiate()
          const command = yield* conn.nextCommand
          yield* conn.send(`{"return":{},"id":${deep(100_000)}}`)
          yield* conn.send(eventJson("AFTER"))
          yield* conn.reply(command.id, { status: "running" })
          yield* conn.closed
        })
      )
      const qmp = yield* QmpClient.connect({ address: server.path })
      expect(yield* within(qmp.execute("fake-status"))).toEqual({ status: "running" })
      expect(yield* qmp.isConnected).toBe(true)
      const dropped = logs.messages.find((m) => m.includes("unknown id"))
      expect(dropped).toContain("too deeply nested")
    }).pipe(Effect.provide(logs.layer))
  })
})

describe("secrets on the command line (logged at Debug, carried by LaunchFailure)", () => {
  it("redactArg masks data= of secret objects and password= values, keyval and JSON forms", () => {
    expect(Redact.redactArg("secret,id=s0,data=hunter2")).toBe("secret,id=s0,data=***")
    expect(Redact.redactArg("qom-type=secret,id=s0,data=a,,b,format=raw")).toBe("qom-type=secret,id=s0,data=***,format=raw")
    expect(Redact.redactArg('{"qom-type":"secret","id":"s1","data":"hunter2"}')).toBe(
      '{"qom-type":"secret","id":"s1","data":"***"}'
    )
    expect(Redact.redactArg("user=u,password=hunter2")).toBe("user=u,password=***")
    expect(Redact.redactArg('{"qom-type":"secret","data":"hunter2"')).toBe('{"qom-type":"secret","data":"***"')
  })

  it("redactArg leaves arguments without secrets alone", () => {
    for (const arg of ["-object", "memory-backend-ram,id=m,size=64M", ":0,password=on", "file=disk.img,if=virtio", "data=x"]) {
      expect(Redact.redactArg(arg)).toBe(arg)
    }
  })

  it("redactText masks QEMU's echo of a rejected option", () => {
    const args = ["-object", "secret,id=s,data=hunter2,bogus=1"]
    expect(Redact.redactText("qemu: -object secret,id=s,data=hunter2,bogus=1: Invalid parameter 'bogus'\n", args)).toBe(
      "qemu: -object secret,id=s,data=***,bogus=1: Invalid parameter 'bogus'\n"
    )
  })

  it.scopedLive("neither the Debug log of the launch nor a LaunchFailure (message, command, output) shows a secret", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const base = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "eq-regr-"))),
        (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
      )
      const config = QemuMachine.make({
        binary: QEMU,
        baseTempDir: base,
        args: ["-object", "secret,id=ok,data=S3cretA", "-object", "secret,id=bad,data=S3cretB,bogus=1"]
      }).pipe(QemuMachine.setMachine("none"))
      const failure = yield* Effect.flip(Effect.scoped(QemuMachine.launch(config)))
      expect(failure._tag).toBe("LaunchFailure")
      expect(failure.output).toContain("bogus")
      expect(failure.message).toContain("data=***")
      const everything = [failure.message, failure.command.join(" "), failure.output, JSON.stringify(failure), ...logs.messages]
        .join("\n")
      expect(logs.messages.some((m) => m.includes("launching"))).toBe(true)
      expect(everything).not.toContain("S3cretA")
      expect(everything).not.toContain("S3cretB")
    }).pipe(Effect.provide(logs.layer), Logger.withMinimumLogLevel(LogLevel.Debug))
  })
})

describe("line framer limit", () => {
  const framer = (maxLineBytes: number) => {
    const seen: Array<string> = []
    const push = LineFramer.make({ maxLineBytes }, {
      onLine: (l) => seen.push(l),
      onOversized: (size) => seen.push(`OVERSIZED ${size}`)
    })
    return { push, seen }
  }

  it("counts bytes, not characters, so multi-byte text cannot exceed maxMessageSize", () => {
    const { push, seen } = framer(100)
    // 40 three-byte characters: 40 characters, 120 bytes.
    push(Buffer.from(`${"€".repeat(40)}\n`))
    expect(seen).toEqual(["OVERSIZED 120"])
  })

  it("accepts a line of exactly the limit, split across reads", () => {
    const { push, seen } = framer(10)
    push(Buffer.from("01234"))
    push(Buffer.from("56789\n"))
    expect(seen).toEqual(["0123456789"])
  })
})
