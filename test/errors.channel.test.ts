/**
 * `QmpConnectionError` and `QmpTimeoutError` say which channel failed: the
 * serial console and the guest agent raise them too, and their `channel` and
 * `message` name it (the `_tag`s stay, they are the contract).
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Schema } from "effect"
import * as net from "node:net"
import * as path from "node:path"
import * as CliErrors from "../src/cli/errors.js"
import * as ConsoleSocket from "../src/ConsoleSocket.js"
import { QmpConnectionError, QmpTimeoutError } from "../src/Errors.js"
import * as GuestAgent from "../src/GuestAgent.js"
import { tempDir } from "./helpers/qemu.js"

/** A unix socket server handing each connection to `onConnect`; closed with the scope, its connections too. */
const server = (onConnect: (socket: net.Socket) => void) =>
  Effect.gen(function*() {
    const address = path.join(yield* tempDir, "peer.sock")
    const connections = new Set<net.Socket>()
    yield* Effect.acquireRelease(
      Effect.async<net.Server>((resume) => {
        const s = net.createServer((socket) => {
          connections.add(socket)
          socket.on("error", () => {})
          onConnect(socket)
        })
        s.listen(address, () => resume(Effect.succeed(s)))
      }),
      (s) =>
        Effect.async<void>((resume) => {
          s.close(() => resume(Effect.void))
          for (const socket of connections) socket.destroy()
        })
    )
    return address
  })

/** A fake guest agent: answers the sync like qemu-ga, then closes the connection at the first command. */
const hangingUpAgent = server((socket) => {
  let pending = ""
  socket.on("data", (chunk: Buffer) => {
    for (const byte of chunk) {
      if (byte === 0xff) {
        pending = ""
        continue
      }
      if (byte !== 10) {
        pending += String.fromCharCode(byte)
        continue
      }
      const request = JSON.parse(pending) as { execute: string; arguments?: { id?: unknown } }
      pending = ""
      if (request.execute === "guest-sync-delimited") {
        socket.write(Buffer.concat([Buffer.of(0xff), Buffer.from(`{"return": ${JSON.stringify(request.arguments?.id)}}\n`)]))
      } else {
        socket.end()
      }
    }
  })
})

describe("error messages name the channel", () => {
  it("a connection error says QMP, console or guest agent", () => {
    expect(new QmpConnectionError({ reason: "Eof", detail: "socket closed" }).message)
      .toBe("QMP connection Eof: socket closed")
    expect(new QmpConnectionError({ reason: "Eof", detail: "socket closed", channel: "console" }).message)
      .toBe("console connection Eof: socket closed")
    expect(new QmpConnectionError({ reason: "Closed", channel: "agent" }).message).toBe("guest agent connection Closed")
  })

  it("the channel crosses the wire (the fleet sends these errors as they are)", () => {
    const error = new QmpTimeoutError({ operation: "graceful shutdown", timeout: Duration.seconds(1), channel: "process" })
    const decoded = Schema.decodeUnknownSync(QmpTimeoutError)(Schema.encodeSync(QmpTimeoutError)(error))
    expect(decoded.channel).toBe("process")
    expect(decoded.message).toBe("graceful shutdown timed out after 1s")
  })
})

describe("the serial console's errors", () => {
  it.scopedLive("a console whose peer hangs up fails expect with a console connection error", () =>
    Effect.gen(function*() {
      const address = yield* server((socket) => socket.end("login: "))
      const console = yield* ConsoleSocket.connect(address)
      const error = yield* Effect.flip(console.expect("never printed", { timeout: "10 seconds" }))
      expect(error).toMatchObject({ _tag: "QmpConnectionError", reason: "Eof", channel: "console" })
      expect(error.message).toMatch(/^console connection Eof: /)
    }))

  it.scopedLive("an expect that times out is a console timeout", () =>
    Effect.gen(function*() {
      const address = yield* server(() => {})
      const console = yield* ConsoleSocket.connect(address)
      const error = yield* Effect.flip(console.expect("never printed", { timeout: "50 millis" }))
      expect(error).toMatchObject({ _tag: "QmpTimeoutError", channel: "console" })
      expect(error.message).toBe("console expect never printed timed out after 50ms")
    }))

  it.scopedLive("a console that cannot connect says so as the console", () =>
    Effect.gen(function*() {
      const address = path.join(yield* tempDir, "nobody.sock")
      const error = yield* Effect.flip(ConsoleSocket.connect(address, { connectTimeout: "30 millis" }))
      expect(error).toMatchObject({ _tag: "QmpConnectionError", reason: "Refused", channel: "console" })
      expect(error.message).toMatch(/^console connection Refused: cannot connect to /)
    }))
})

describe("the guest agent's errors", () => {
  it.scopedLive("an agent that hangs up mid-command fails the call with a guest agent connection error", () =>
    Effect.gen(function*() {
      const agent = yield* GuestAgent.connect({ address: yield* hangingUpAgent, timeout: "10 seconds" })
      const error = yield* Effect.flip(agent.ping)
      expect(error).toMatchObject({ _tag: "QmpConnectionError", reason: "Eof", channel: "agent" })
      expect(error.message).toMatch(/^guest agent connection Eof: /)
    }))

  it.scopedLive("an agent that never answers the sync is a guest agent timeout", () =>
    Effect.gen(function*() {
      const address = yield* server(() => {})
      const error = yield* Effect.flip(GuestAgent.connect({ address, timeout: "100 millis" }))
      expect(error).toMatchObject({ _tag: "QmpTimeoutError", channel: "agent" })
      expect(error.message).toMatch(/^guest agent sync .* timed out after 100ms$/)
    }))

  it.scopedLive("a socket path over the AF_UNIX limit is refused as the guest agent's", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(GuestAgent.connect({ address: `/tmp/${"x".repeat(120)}.sock` }))
      expect(error).toMatchObject({ _tag: "QmpConnectionError", reason: "Refused", channel: "agent" })
      expect(error.message).toMatch(/^guest agent connection Refused: unix socket path is \d+ bytes/)
    }))
})

describe("the command line tool's one-line messages", () => {
  it("name the guest agent or the console instead of QEMU's connection", () => {
    const eof = (channel?: "console" | "agent") =>
      CliErrors.describe(new QmpConnectionError({ reason: "Eof", ...(channel ? { channel } : {}) }))
    expect(eof()).toBe("QEMU closed the connection")
    expect(eof("agent")).toBe("QEMU closed the guest agent's socket")
    expect(CliErrors.describe(new QmpConnectionError({ reason: "Closed", detail: "client closed", channel: "agent" })))
      .toBe("the connection to the guest agent was closed: client closed")
  })
})
