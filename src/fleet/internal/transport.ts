/**
 * How fleet members reach each other: the cluster's socket transport, over
 * mutual TLS when the fleet has certificates (`node:tls` under the same
 * `Socket` the cluster's RPC protocol runs on), or plain TCP on loopback.
 *
 * With TLS both ends present a certificate of the fleet's CA and check the
 * other's chain against it (no other CA is trusted, not even the system's);
 * a peer without one, with another CA's or an expired one never gets past
 * the handshake, so no RPC of it is read. Host names are not checked: any
 * holder of a certificate of the CA is a fleet member, wherever it runs.
 */
import * as Runners from "@effect/cluster/Runners"
import type { RunnerAddress } from "@effect/cluster/RunnerAddress"
import * as NodeSocket from "@effect/platform-node/NodeSocket"
import * as NodeSocketServer from "@effect/platform-node/NodeSocketServer"
import * as Socket from "@effect/platform/Socket"
import * as SocketServer from "@effect/platform/SocketServer"
import * as RpcClient from "@effect/rpc/RpcClient"
import { RpcClientError } from "@effect/rpc/RpcClientError"
import * as RpcSerialization from "@effect/rpc/RpcSerialization"
import type { Cause } from "effect/Cause"
import * as ConfigError from "effect/ConfigError"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Tls from "node:tls"

/** Certificates as given by the user: PEM text, or paths to PEM files. */
export interface TlsOptions {
  readonly ca: string
  readonly cert: string
  readonly key: string
}

/** The same, read: PEM text only. */
export interface TlsMaterial {
  readonly ca: string
  readonly cert: string
  readonly key: string
}

const isPem = (value: string) => value.includes("-----BEGIN ")

/** PEM text stays as it is; anything else is a file to read. */
export const load = (options: TlsOptions): Effect.Effect<TlsMaterial, ConfigError.ConfigError> =>
  Effect.forEach(["ca", "cert", "key"] as const, (field) =>
    isPem(options[field])
      ? Effect.succeed(options[field])
      : Effect.try({
        try: () => Fs.readFileSync(options[field], "utf8"),
        catch: (cause) => ConfigError.InvalidData(["tls", field], `cannot read ${options[field]}: ${String(cause)}`)
      }).pipe(
        Effect.filterOrFail(isPem, () => ConfigError.InvalidData(["tls", field], `${options[field]} holds no PEM data`))
      )).pipe(Effect.map(([ca, cert, key]) => ({ ca: ca!, cert: cert!, key: key! })))

/** 127.0.0.0/8, ::1, localhost. */
export const isLoopback = (host: string): boolean =>
  host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host) || host === "::ffff:127.0.0.1"

/** How a member talks to others: over TLS, plain to loopback only, or plain anywhere (`insecure`). */
export type Mode =
  | { readonly _tag: "Tls"; readonly material: TlsMaterial }
  | { readonly _tag: "Plain"; readonly insecure: boolean }

const connectTls = (address: RunnerAddress, material: TlsMaterial) =>
  NodeSocket.fromDuplex(
    Effect.scopeWith((scope) => {
      let conn: Tls.TLSSocket | undefined
      return Effect.zipRight(
        Scope.addFinalizer(scope, Effect.sync(() => conn?.destroy())),
        Effect.async<Tls.TLSSocket, Socket.SocketError>((resume) => {
          conn = Tls.connect({
            host: address.host,
            port: address.port,
            ca: material.ca,
            cert: material.cert,
            key: material.key,
            // the chain is checked against the fleet's CA; any member may run anywhere
            checkServerIdentity: () => undefined
          })
          conn.once("secureConnect", () => {
            // small RPC frames: no Nagle delay behind an unacknowledged one
            conn!.setNoDelay(true)
            resume(Effect.succeed(conn!))
          })
          conn.on("error", (cause) => resume(Effect.fail(new Socket.SocketGenericError({ reason: "Open", cause }))))
        })
      )
    }),
    { openTimeout: 2000 }
  )

const connectPlain = (address: RunnerAddress, insecure: boolean) =>
  !insecure && !isLoopback(address.host)
    ? Effect.fail(
      new Socket.SocketGenericError({
        reason: "Open",
        cause: new Error(
          `fleet: ${address.host}:${address.port} is not on loopback; give the fleet certificates (tls) or insecure: true`
        )
      })
    )
    : NodeSocket.makeNet({ openTimeout: 1000, timeout: 5500, host: address.host, port: address.port })

/** The cluster's RPC client protocol over this transport (as `NodeClusterSocket.layerClientProtocol`). */
export const clientProtocol = (mode: Mode): Layer.Layer<Runners.RpcClientProtocol, never, RpcSerialization.RpcSerialization> =>
  Layer.effect(Runners.RpcClientProtocol)(
    Effect.gen(function*() {
      const serialization = yield* RpcSerialization.RpcSerialization
      return Effect.fnUntraced(function*(address: RunnerAddress) {
        const socket = yield* (mode._tag === "Tls" ? connectTls(address, mode.material) : connectPlain(address, mode.insecure))
        return yield* protocolOver(socket, serialization)
      }, Effect.orDie)
    })
  )

/**
 * The RPC protocol over one socket, whose writes fail instead of dying. The
 * RPC client turns a write error into a defect, and the cluster passes a
 * defect of a call to its caller as is; a failure (`RpcClientError`) it reads
 * as "runner unavailable" and retries on the shard's next owner. A runner
 * that was SIGKILLed is seen by a write before the read side sees its socket
 * close often enough (EPIPE): the caller must get `VmLost`, not a SocketError.
 */
export const protocolOver = (
  socket: Socket.Socket,
  serialization: RpcSerialization.RpcSerialization["Type"]
): Effect.Effect<RpcClient.Protocol["Type"], never, Scope.Scope> =>
  RpcClient.makeProtocolSocket().pipe(
    Effect.provideService(Socket.Socket, socket),
    Effect.provideService(RpcSerialization.RpcSerialization, serialization),
    Effect.map((protocol) => ({
      ...protocol,
      send: (request, transferables) =>
        Effect.catchAllDefect(protocol.send(request, transferables), (defect) =>
          Socket.isSocketError(defect)
            ? Effect.fail(new RpcClientError({ reason: "Protocol", message: "Error in socket", cause: defect }))
            : Effect.die(defect))
    }))
  )

/**
 * A `SocketServer` on `node:tls` that asks every peer for a certificate of
 * the CA and drops those without one before reading a byte from them (the
 * same shape as `NodeSocketServer.make`, on a TLS server).
 */
const makeTlsServer = (listen: { readonly host: string; readonly port: number }, material: TlsMaterial) =>
  Effect.gen(function*() {
    const errors = yield* Deferred.make<never, Error>()
    const pending: Array<Tls.TLSSocket> = []
    let onConnection = (socket: Tls.TLSSocket): void => void pending.push(socket)
    const server = Tls.createServer({
      ca: material.ca,
      cert: material.cert,
      key: material.key,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.2"
    }, (conn) => onConnection(conn))
    yield* Effect.addFinalizer(() => Effect.async<void>((resume) => void server.close(() => resume(Effect.void))))
    server.on("error", (cause) => Deferred.unsafeDone(errors, Exit.fail(cause)))
    server.on("tlsClientError", (cause, socket) => {
      socket.destroy()
      Effect.runFork(Effect.logDebug(`fleet: a peer was refused: ${cause.message}`))
    })
    yield* Effect.async<void>((resume) => void server.listen({ host: listen.host, port: listen.port }, () => resume(Effect.void))).pipe(
      Effect.raceFirst(Effect.mapError(Deferred.await(errors), (cause) => new SocketServer.SocketServerError({ reason: "Open", cause })))
    )

    const run = <R, E, _>(handler: (socket: Socket.Socket) => Effect.Effect<_, E, R>) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const fibers = yield* Scope.extend(FiberSet.make(), scope)
        const runFork = yield* FiberSet.runtime(fibers)<R>()
        const accept = (conn: Tls.TLSSocket) => {
          conn.setNoDelay(true)
          let error: Error | undefined
          conn.on("error", (err) => {
            error = err
          })
          const open = Effect.acquireRelease(
            Effect.suspend((): Effect.Effect<Tls.TLSSocket, Socket.SocketError> =>
              error
                ? Effect.fail(new Socket.SocketGenericError({ reason: "Open", cause: error }))
                : conn.closed
                ? Effect.fail(new Socket.SocketCloseError({ reason: "Close", code: 1000 }))
                : Effect.succeed(conn)
            ),
            (conn) => Effect.sync(() => conn.closed || conn.destroySoon())
          )
          runFork(NodeSocket.fromDuplex(open).pipe(
            Effect.flatMap(handler),
            Effect.catchAllCause((cause: Cause<unknown>) => Effect.logDebug("fleet: connection ended", cause)),
            Effect.provideService(NodeSocket.NetSocket, conn)
          ))
        }
        return yield* Effect.async<never>(() => {
          const previous = onConnection
          onConnection = accept
          pending.splice(0).forEach(accept)
          return Effect.suspend(() => {
            onConnection = previous
            return Scope.close(scope, Exit.void)
          })
        }).pipe(
          Effect.raceFirst(Effect.mapError(Deferred.await(errors), (cause) => new SocketServer.SocketServerError({ reason: "Unknown", cause })))
        )
      })

    const address = server.address() as Net.AddressInfo
    return SocketServer.SocketServer.of({
      address: { _tag: "TcpAddress", hostname: address.address, port: address.port },
      run
    })
  })

/**
 * The runner's server: TLS when the fleet has certificates; otherwise plain
 * TCP, refused on anything but loopback unless `insecure` (then with a warning).
 */
export const socketServer = (
  listen: { readonly host: string; readonly port: number },
  mode: Mode
): Layer.Layer<SocketServer.SocketServer, SocketServer.SocketServerError | ConfigError.ConfigError> => {
  if (mode._tag === "Tls") return Layer.scoped(SocketServer.SocketServer, makeTlsServer(listen, mode.material))
  if (!mode.insecure && !isLoopback(listen.host)) {
    return Layer.fail(ConfigError.InvalidData(
      ["listen"],
      `a runner without tls listens on loopback only, not ${listen.host}: give it certificates (Fleet.tls) or insecure: true`
    ))
  }
  const server = NodeSocketServer.layer({ host: listen.host, port: listen.port })
  return mode.insecure
    ? Layer.merge(
      server,
      Layer.effectDiscard(Effect.logWarning(
        `fleet: INSECURE runner on ${listen.host}:${listen.port}: no TLS, anyone who reaches this port can launch VMs and run QMP commands within the runner's policy`
      ))
    )
    : server
}
