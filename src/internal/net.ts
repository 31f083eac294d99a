/**
 * Unix and TCP sockets over `node:net`, as scoped Effects: a listener that
 * hands out accepted connections, and an outbound connect. Every socket and
 * server is released by the scope that created it; a unix socket file created
 * by `listen` is removed when the listener closes.
 */
import { Deferred, Effect, Exit, FiberId, Scope } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import { QmpConnectionError } from "../Errors.js"
import * as Scoped from "./scoped.js"

/** A unix socket path, or a TCP host and port. */
export type Address = string | { readonly host: string; readonly port: number }

/** The longest AF_UNIX path the kernel accepts (sun_path is 108 bytes, NUL included). */
export const UNIX_PATH_MAX = 107

export const formatAddress = (address: Address): string =>
  typeof address === "string" ? address : `${address.host}:${address.port}`

/** A human readable complaint when a unix path does not fit in sockaddr_un. */
export const checkUnixPath = (path: string): string | undefined => {
  const bytes = Buffer.byteLength(path)
  return bytes > UNIX_PATH_MAX
    ? `unix socket path is ${bytes} bytes, over the ${UNIX_PATH_MAX}-byte AF_UNIX limit: ${path}`
    : undefined
}

export interface Listener {
  /** The bound address; for TCP port 0, the port the kernel chose. */
  readonly address: Address
  /** Waits for the next inbound connection. The socket belongs to the caller's scope. */
  readonly accept: Effect.Effect<net.Socket, QmpConnectionError, Scope.Scope>
  /** Stops listening and removes the unix socket file; idempotent. */
  readonly close: Effect.Effect<void>
}

const connectionError = (
  reason: QmpConnectionError["reason"],
  cause: unknown,
  detail?: string,
  channel?: QmpConnectionError["channel"]
) => new QmpConnectionError({ reason, cause, ...(detail ? { detail } : {}), ...(channel ? { channel } : {}) })

/** Destroys a socket when the scope closes (idempotent: destroy twice is harmless). */
export const adopt = (socket: net.Socket): Effect.Effect<net.Socket, never, Scope.Scope> =>
  Effect.as(Scoped.addFinalizer(Effect.sync(() => socket.destroy())), socket)

export const listen = (address: Address): Effect.Effect<Listener, QmpConnectionError, Scope.Scope> =>
  Effect.gen(function*() {
    if (typeof address === "string") {
      const tooLong = checkUnixPath(address)
      if (tooLong) return yield* Effect.fail(connectionError("Refused", undefined, tooLong))
    }
    // Connections that arrive before anyone calls accept wait here.
    const backlog: Array<net.Socket> = []
    const waiters: Array<Deferred.Deferred<net.Socket, QmpConnectionError>> = []
    let closed = false
    // Built only when someone is told: an error captures a stack trace, and most listeners close quietly.
    const closedError = () => connectionError("Closed", undefined, "listener closed")

    const server = yield* Scoped.acquireRelease(
      Effect.async<net.Server, QmpConnectionError>((resume) => {
        const server = net.createServer({ noDelay: true })
        server.on("connection", (socket) => {
          const waiter = waiters.shift()
          if (waiter) Deferred.unsafeDone(waiter, Exit.succeed(socket))
          else if (closed) socket.destroy()
          else backlog.push(socket)
        })
        let settled = false
        const onError = (err: Error) => {
          if (settled) return
          settled = true
          resume(Effect.fail(connectionError("Refused", err, `cannot listen on ${formatAddress(address)}: ${err.message}`)))
        }
        server.once("error", onError)
        const ready = () => {
          if (settled) return
          settled = true
          server.off("error", onError)
          server.on("error", () => {})
          resume(Effect.succeed(server))
        }
        if (typeof address === "string") server.listen({ path: address }, ready)
        else server.listen({ host: address.host, port: address.port }, ready)
        // A unix socket is bound and listening when listen returns (bind and listen are synchronous;
        // only the event waits for the next tick): go on now, a launch spawns QEMU a turn sooner.
        if (typeof address === "string" && server.listening) ready()
        return Effect.sync(() => server.close())
      }),
      (server) => closeServer(server)
    )

    const closeServer = (srv: net.Server) =>
      Effect.sync(() => {
        if (closed) return
        closed = true
        srv.close()
        for (const socket of backlog.splice(0)) socket.destroy()
        for (const waiter of waiters.splice(0)) Deferred.unsafeDone(waiter, Exit.fail(closedError()))
        if (typeof address === "string") {
          try {
            fs.unlinkSync(address)
          } catch {
            // Already gone.
          }
        }
      })

    const bound = server.address()
    const resolved: Address = typeof address === "string"
      ? address
      : { host: address.host, port: typeof bound === "object" && bound ? bound.port : address.port }

    const accept = Effect.uninterruptibleMask((restore) => {
      const ready = backlog.shift()
      if (ready) return adopt(ready)
      if (closed) return Effect.fail(closedError())
      const waiter = Deferred.unsafeMake<net.Socket, QmpConnectionError>(FiberId.none)
      waiters.push(waiter)
      // The wait is interruptible; adopting the socket once it arrived is not,
      // so an interrupted accept never strands a connection.
      return restore(Deferred.await(waiter)).pipe(
        Effect.onInterrupt(() =>
          Effect.flatMap(Deferred.poll(waiter), (done) => {
            const i = waiters.indexOf(waiter)
            if (i >= 0) waiters.splice(i, 1)
            return done._tag === "Some"
              ? Effect.ignore(Effect.flatMap(done.value, (socket) => Effect.sync(() => socket.destroy())))
              : Effect.void
          })
        ),
        Effect.flatMap(adopt)
      )
    })

    return { address: resolved, accept, close: closeServer(server) }
  })

/** `channel`: what the socket is for, named in the errors (absent: QMP). */
export const connect = (
  address: Address,
  channel?: QmpConnectionError["channel"]
): Effect.Effect<net.Socket, QmpConnectionError, Scope.Scope> => {
  if (typeof address === "string") {
    const tooLong = checkUnixPath(address)
    if (tooLong) return Effect.fail(connectionError("Refused", undefined, tooLong, channel))
  }
  return Scoped.acquireRelease(
    Effect.async<net.Socket, QmpConnectionError>((resume) => {
      const socket = typeof address === "string"
        ? net.createConnection({ path: address })
        : net.createConnection({ host: address.host, port: address.port, noDelay: true })
      const onError = (err: Error) => {
        socket.destroy()
        const detail = `cannot connect to ${formatAddress(address)}: ${err.message}`
        resume(Effect.fail(connectionError("Refused", err, detail, channel)))
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
}
