/**
 * A minimal JSON-lines client for `shell -N` (QMP without negotiation): it
 * sends what it is given as is, one request at a time; a reply (`return` or
 * `error`) answers the request in flight, anything else (the greeting,
 * events) is unsolicited.
 *
 * @since 0.2.0
 */
import { Effect, Exit, Queue, Scope, Stream } from "effect"
import { describeCause } from "../Errors.js"
import type { QmpClient } from "../index.js"
import * as LineFramer from "../internal/lineFramer.js"
import * as Net from "../internal/net.js"
import * as Session from "../internal/session.js"
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
    let inFlight: ((reply: Exit.Exit<Record<string, unknown>, CliFailure>) => void) | undefined

    const onLine = (line: string) => {
      // Lines after a fatal one in the same read come from a connection already ended.
      if (session.cause() !== undefined || line.trim() === "") return
      let message: unknown
      try {
        message = JSON.parse(line)
      } catch {
        return session.end(() => failure(`${where} sent something that is not JSON: ${escape(line.slice(0, 200))}`))
      }
      if (typeof message !== "object" || message === null || Array.isArray(message)) {
        return session.end(() =>
          failure(`${where} sent something that is not a JSON object: ${escape(line.slice(0, 200))}`)
        )
      }
      const record = message as Record<string, unknown>
      if (("return" in record || "error" in record) && inFlight) {
        const resume = inFlight
        inFlight = undefined
        return resume(Exit.succeed(record))
      }
      unsolicited.unsafeOffer(record)
    }

    // The session core's one close path (first cause wins): whatever ends the connection fails the
    // request in flight and ends the unsolicited stream.
    const session: Session.Session<CliFailure> = Session.make<CliFailure>(socket, {
      onData: LineFramer.make({ maxLineBytes: MAX_LINE }, {
        onLine,
        onOversized: () => session.end(() => failure(`${where} sent a message over ${MAX_LINE} bytes`))
      }),
      onClose: (cause) => {
        inFlight?.(Exit.fail(cause))
        inFlight = undefined
        unsolicited.unsafeOffer(null)
      },
      eof: () => failure(`connection to ${where} closed`),
      error: (err) => failure(`connection to ${where} failed: ${describeCause(err)}`),
      crashed: (err) => failure(`cannot handle what ${where} sent: ${describeCause(err)}`)
    })
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => session.end(() => failure("connection closed by the client")))
    )

    const request = (message: Record<string, unknown>) =>
      Effect.suspend(() => {
        const closedBy = session.cause()
        if (closedBy !== undefined) return Effect.fail(closedBy)
        if (inFlight) return Effect.fail(failure("a request is already in flight"))
        return Effect.async<Record<string, unknown>, CliFailure>((resume) => {
          inFlight = resume
          session.write(`${JSON.stringify(message)}\n`)
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
      closed: session.closed
    }
  })
