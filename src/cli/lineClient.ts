/**
 * A minimal JSON-lines client for `shell -N` (QMP without negotiation): it
 * sends what it is given as is, one request at a time; a reply (`return` or
 * `error`) answers the request in flight, anything else (the greeting,
 * events) is unsolicited.
 *
 * @since 0.2.0
 */
import { Deferred, Effect, Exit, FiberId, Queue, Scope, Stream } from "effect"
import { describeCause } from "../Errors.js"
import type { QmpClient } from "../index.js"
import * as Net from "../internal/net.js"
import * as Address from "./address.js"
import { CliFailure, escape, EXIT_FATAL } from "./errors.js"

/**
 * @since 0.2.0
 * @category models
 */
export interface LineClient {
  /** Sends one message and waits for the reply to it. */
  readonly request: (message: Record<string, unknown>) => Effect.Effect<Record<string, unknown>, CliFailure>
  /** Greeting, events, and anything else nobody asked for; ends with the connection. */
  readonly unsolicited: Stream.Stream<Record<string, unknown>>
  /** Completes, with the reason, when the connection has ended. */
  readonly closed: Effect.Effect<CliFailure>
}

const MAX_LINE = 64 * 1024 * 1024

const failure = (message: string) => new CliFailure({ message, exitCode: EXIT_FATAL })

/**
 * Connects; the connection lives in the scope.
 *
 * @since 0.2.0
 * @category constructors
 */
export const connect = (address: QmpClient.Address): Effect.Effect<LineClient, CliFailure, Scope.Scope> =>
  Effect.gen(function*() {
    const where = Address.format(address)
    // The socket is destroyed with the scope (internal/net); a refused connect says where, in the CLI's words.
    const socket = yield* Net.connect(address).pipe(
      Effect.mapError((e) =>
        failure(e.cause === undefined ? e.detail ?? e.message : `cannot connect to ${where}: ${describeCause(e.cause)}`)
      )
    )
    const unsolicited = yield* Queue.unbounded<Record<string, unknown> | null>()
    const closed = Deferred.unsafeMake<CliFailure>(FiberId.none)
    let inFlight: ((reply: Exit.Exit<Record<string, unknown>, CliFailure>) => void) | undefined
    let closeCause: CliFailure | undefined
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
        return end(failure(`${where} sent something that is not JSON: ${escape(line.slice(0, 200))}`))
      }
      if (typeof message !== "object" || message === null || Array.isArray(message)) {
        return end(failure(`${where} sent something that is not a JSON object: ${escape(line.slice(0, 200))}`))
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
      tail = tail.length === 0 ? data : Buffer.concat([tail, data])
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

    const request = (message: Record<string, unknown>) =>
      Effect.suspend(() => {
        if (closeCause) return Effect.fail(closeCause)
        if (inFlight) return Effect.fail(failure("a request is already in flight"))
        return Effect.async<Record<string, unknown>, CliFailure>((resume) => {
          inFlight = resume
          socket.write(`${JSON.stringify(message)}\n`)
          return Effect.sync(() => {
            inFlight = undefined
          })
        })
      })

    return {
      request,
      unsolicited: Stream.fromQueue(unsolicited).pipe(
        Stream.takeWhile((m): m is Record<string, unknown> => m !== null)
      ),
      closed: Deferred.await(closed)
    }
  })
