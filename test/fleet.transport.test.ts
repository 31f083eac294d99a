/**
 * The fleet's RPC transport under a peer that dies: a write to its socket
 * must fail the call (`RpcClientError`, which the cluster reads as "runner
 * unavailable" and retries elsewhere), never end it with a defect (which the
 * cluster hands to the caller as is). The socket is a stand-in: a real one
 * shows the write error only when a write races the read side seeing the
 * reset (`npm run fleet:check` kills runners for real). No QEMU.
 */
import * as Socket from "@effect/platform/Socket"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Option } from "effect"
import { protocolOver } from "../src/fleet/internal/transport.js"

const request = (id: number) => ({
  _tag: "Request" as const,
  id: String(id),
  tag: "Ping",
  payload: {},
  headers: []
})

/** A socket that never reads anything and whose every write gives `write`'s answer. */
const fakeSocket = (write: Effect.Effect<void, Socket.SocketError>): Socket.Socket => ({
  [Socket.TypeId]: Socket.TypeId,
  run: () => Effect.never,
  runRaw: () => Effect.never,
  writer: Effect.succeed(() => write)
})

const epipe = new Socket.SocketGenericError({ reason: "Write", cause: Object.assign(new Error("write EPIPE"), { code: "EPIPE" }) })

describe("fleet transport", () => {
  it.scoped("a write that fails (EPIPE: the runner was killed) fails the send with RpcClientError carrying the socket error", () =>
    Effect.gen(function*() {
      const protocol = yield* protocolOver(fakeSocket(Effect.fail(epipe)), RpcSerialization.msgPack)
      const exit = yield* Effect.exit(protocol.send(request(1)))
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit)) {
        expect(Cause.isDie(exit.cause)).toBe(false)
        const error = Cause.failureOption(exit.cause)
        expect(Option.map(error, (e) => e._tag)).toEqual(Option.some("RpcClientError"))
        expect(Option.map(error, (e) => e.cause)).toEqual(Option.some(epipe))
      }
    }))

  it.scoped("a defect that is not a socket error stays a defect", () =>
    Effect.gen(function*() {
      const bug = new Error("a bug")
      const protocol = yield* protocolOver(fakeSocket(Effect.die(bug)), RpcSerialization.msgPack)
      const exit = yield* Effect.exit(protocol.send(request(1)))
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
      expect(Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined).toBe(bug)
    }))
})
