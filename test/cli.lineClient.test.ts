/**
 * The CLI's raw JSON-lines client (`shell -N`) against a hand-driven peer on a
 * unix socket: framing (split reads, `\r\n`, characters split across reads)
 * and the one close path (a broken peer, a peer hanging up, the scope ending).
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Deferred, Effect, Fiber, Stream } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as LineClient from "../src/cli/lineClient.js"

/** A one-connection peer: `peer` is the accepted socket. */
const peer = Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "lineclient-"))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )
  const address = path.join(dir, "peer.sock")
  const accepted = yield* Deferred.make<net.Socket>()
  const sockets: Array<net.Socket> = []
  yield* Effect.acquireRelease(
    Effect.async<net.Server>((resume) => {
      const server = net.createServer((socket) => {
        socket.on("error", () => {})
        sockets.push(socket)
        Deferred.unsafeDone(accepted, Effect.succeed(socket))
      })
      server.listen(address, () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.async<void>((resume) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  )
  return { address, socket: Deferred.await(accepted) }
})

/** Writes each part as its own write, waiting for each to flush, so the client reads them apart. */
const send = (socket: net.Socket, ...parts: Array<Buffer | string>) =>
  Effect.forEach(parts, (part) =>
    Effect.zipRight(
      Effect.async<void>((resume) => void socket.write(part, () => resume(Effect.void))),
      Effect.sleep("5 millis")
    ), { discard: true })

describe("cli line client", () => {
  it.scopedLive("answers a request with a reply split over reads, \\r\\n ended, a character split across reads", () =>
    Effect.gen(function*() {
      const { address, socket } = yield* peer
      const client = yield* LineClient.connect(address)
      const s = yield* socket
      const reply = Buffer.from("{\"return\": {\"name\": \"é€😀\"}}\r\n")
      const cut = reply.indexOf(Buffer.from("😀")) + 2
      const answered = yield* Effect.fork(client.request({ execute: "query-name" }))
      yield* send(s, "{\"QMP\": {}}\r\n\r\n", reply.subarray(0, cut), reply.subarray(cut))
      expect(yield* Fiber.join(answered)).toEqual({ return: { name: "é€😀" } })
      s.end()
      const unsolicited = yield* Stream.runCollect(client.unsolicited)
      expect(Chunk.toArray(unsolicited)).toEqual([{ QMP: {} }])
    }))

  it.scopedLive("a line that is not JSON ends the connection and fails the request in flight with what was sent", () =>
    Effect.gen(function*() {
      const { address, socket } = yield* peer
      const client = yield* LineClient.connect(address)
      const s = yield* socket
      const answered = yield* Effect.fork(Effect.flip(client.request({ execute: "query-status" })))
      // The reply after the broken line, in the same read, comes from a connection already ended.
      yield* send(s, "not json\n{\"return\": {}}\n")
      const failure = yield* Fiber.join(answered)
      expect(failure.message).toContain("not JSON: not json")
      expect((yield* client.closed).message).toBe(failure.message)
      expect(Chunk.toArray(yield* Stream.runCollect(client.unsolicited))).toEqual([])
      const later = yield* Effect.flip(client.request({ execute: "query-status" }))
      expect(later.message).toBe(failure.message)
    }))

  it.scopedLive("the peer hanging up mid-line ends the connection: the partial line is dropped", () =>
    Effect.gen(function*() {
      const { address, socket } = yield* peer
      const client = yield* LineClient.connect(address)
      const s = yield* socket
      const answered = yield* Effect.fork(Effect.flip(client.request({ execute: "query-status" })))
      yield* send(s, "{\"return\":")
      s.end()
      const failure = yield* Fiber.join(answered)
      expect(failure.message).toMatch(/^connection to .* closed$/)
      expect(Chunk.toArray(yield* Stream.runCollect(client.unsolicited))).toEqual([])
    }))

  it.scopedLive("ending the scope closes the connection: the peer sees it end", () =>
    Effect.gen(function*() {
      const { address, socket } = yield* peer
      const ended = yield* Deferred.make<void>()
      yield* Effect.scoped(Effect.gen(function*() {
        yield* LineClient.connect(address)
        const s = yield* socket
        s.on("close", () => Deferred.unsafeDone(ended, Effect.void))
      }))
      yield* Deferred.await(ended)
    }))
})
