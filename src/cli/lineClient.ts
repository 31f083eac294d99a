/**
 * A minimal JSON-lines client for the shell's raw modes: QMP without
 * negotiation (`shell -N`) and the guest agent (`ga`). It sends what it is
 * given as is, one request at a time: a reply (`return` or `error`) answers
 * the request in flight, anything else (greeting, events) is unsolicited.
 *
 * For the guest agent, `sync` resynchronises the stream first: a 0xFF byte
 * and `guest-sync-delimited`, whose reply the agent prefixes with 0xFF;
 * everything before that byte is stale and dropped.
 *
 * @since 0.2.0
 */
import { Deferred, Duration, Effect, Exit, FiberId, Queue, Scope, Stream } from "effect"
import * as net from "node:net"
import { describeCause } from "../Errors.js"
import type { QmpClient } from "../index.js"
import * as Address from "./address.js"
import { CliFailure, EXIT_FATAL } from "./errors.js"

/**
 * @since 0.2.0
 * @category models
 */
export interface LineClient {
  /** Sends one message and waits for the reply to it. */
  readonly request: (message: Record<string, unknown>) => Effect.Effect<Record<string, unknown>, CliFailure>
  /** Sends one message and does not wait (commands the peer never answers). */
  readonly send: (message: Record<string, unknown>) => Effect.Effect<void, CliFailure>
  /** Greeting, events, and anything else nobody asked for; ends with the connection. */
  readonly unsolicited: Stream.Stream<Record<string, unknown>>
  /** Completes, with the reason, when the connection has ended. */
  readonly closed: Effect.Effect<CliFailure>
}

const MAX_LINE = 64 * 1024 * 1024

const failure = (message: string) => new CliFailure({ message, exitCode: EXIT_FATAL })

/**
 * Connects, and (with `sync`) resynchronises with a guest agent within `timeout`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const connect = (
  address: QmpClient.Address,
  options: { readonly sync?: boolean; readonly timeout?: Duration.DurationInput } = {}
): Effect.Effect<LineClient, CliFailure, Scope.Scope> =>
  Effect.gen(function*() {
    const where = Address.format(address)
    const socket = yield* Effect.acquireRelease(
      Effect.async<net.Socket, CliFailure>((resume) => {
        const socket = typeof address === "string"
          ? net.createConnection({ path: address })
          : net.createConnection({ host: address.host, port: address.port })
        const onError = (err: Error) => {
          socket.destroy()
          resume(Effect.fail(failure(`cannot connect to ${where}: ${describeCause(err)}`)))
        }
        socket.once("error", onError)
        socket.once("connect", () => {
          socket.off("error", onError)
          resume(Effect.succeed(socket))
        })
        return Effect.sync(() => socket.destroy())
      }),
      (socket) => Effect.sync(() => socket.destroy())
    )
    const unsolicited = yield* Queue.unbounded<Record<string, unknown> | null>()
    const closed = Deferred.unsafeMake<CliFailure>(FiberId.none)
    let inFlight: ((reply: Exit.Exit<Record<string, unknown>, CliFailure>) => void) | undefined
    let closeCause: CliFailure | undefined
    // With `sync`, bytes before the agent's 0xFF are stale output of an earlier client.
    let synced = !options.sync
    let tail: Buffer = Buffer.alloc(0)

    const end = (cause: CliFailure) => {
      if (closeCause) return
      closeCause = cause
      socket.destroy()
      inFlight?.(Exit.fail(cause))
      inFlight = undefined
      unsolicited.unsafeOffer(null)
      Deferred.unsafeDone(closed, Exit.succeed(cause))
    }

    const onLine = (line: string) => {
      if (line.trim() === "") return
      let message: unknown
      try {
        message = JSON.parse(line)
      } catch {
        return end(failure(`${where} sent something that is not JSON: ${line.slice(0, 200)}`))
      }
      if (typeof message !== "object" || message === null || Array.isArray(message)) {
        return end(failure(`${where} sent something that is not a JSON object: ${line.slice(0, 200)}`))
      }
      const record = message as Record<string, unknown>
      if (("return" in record || "error" in record) && inFlight) {
        const resume = inFlight
        inFlight = undefined
        return resume(Exit.succeed(record))
      }
      unsolicited.unsafeOffer(record)
    }

    socket.on("data", (data: Buffer) => {
      let chunk: Buffer = data
      if (!synced) {
        const marker = chunk.indexOf(0xff)
        if (marker < 0) return
        synced = true
        chunk = chunk.subarray(marker + 1)
      }
      tail = tail.length === 0 ? chunk : Buffer.concat([tail, chunk])
      let nl = tail.indexOf(10)
      while (nl >= 0 && !closeCause) {
        onLine(tail.toString("utf8", 0, nl))
        tail = tail.subarray(nl + 1)
        nl = tail.indexOf(10)
      }
      if (tail.length > MAX_LINE) end(failure(`${where} sent a message over ${MAX_LINE} bytes`))
    })
    socket.on("end", () => end(failure(`connection to ${where} closed`)))
    socket.on("close", () => end(failure(`connection to ${where} closed`)))
    socket.on("error", (err) => end(failure(`connection to ${where} failed: ${describeCause(err)}`)))
    yield* Effect.addFinalizer(() => Effect.sync(() => end(failure("connection closed by the client"))))

    const write = (message: Record<string, unknown>) =>
      Effect.suspend(() => {
        if (closeCause) return Effect.fail(closeCause)
        socket.write(`${JSON.stringify(message)}\n`)
        return Effect.void
      })

    // `flush` prefixes the 0xFF byte that makes the agent drop any partial input.
    const request = (message: Record<string, unknown>, flush = false) =>
      Effect.suspend(() => {
        if (closeCause) return Effect.fail(closeCause)
        if (inFlight) return Effect.fail(failure("a request is already in flight"))
        return Effect.async<Record<string, unknown>, CliFailure>((resume) => {
          inFlight = resume
          if (flush) socket.write(Buffer.from([0xff]))
          socket.write(`${JSON.stringify(message)}\n`)
          return Effect.sync(() => {
            inFlight = undefined
          })
        })
      })

    if (options.sync) {
      const id = Math.floor(Math.random() * 0x7fffffff)
      const timeout = Duration.decode(options.timeout ?? "10 seconds")
      const loop: Effect.Effect<void, CliFailure> = Effect.flatMap(
        request({ execute: "guest-sync-delimited", arguments: { id } }, true),
        (reply) => (reply.return === id ? Effect.void : loop)
      )
      yield* Effect.timeoutFail(loop, {
        duration: timeout,
        onTimeout: () => failure(`no guest agent answered at ${where} within ${Duration.format(timeout)}`)
      })
    }

    return {
      request: (message) => request(message),
      send: (message) => write(message),
      unsolicited: Stream.fromQueue(unsolicited).pipe(
        Stream.takeWhile((m): m is Record<string, unknown> => m !== null)
      ),
      closed: Deferred.await(closed)
    }
  })
