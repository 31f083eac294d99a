/**
 * The fleet on a network: mutual TLS between runners and clients (one CA),
 * and plain TCP on loopback only unless `insecure`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Logger, Scope } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { Fleet } from "../src/fleet/index.js"
import { handshake, makeCerts } from "./helpers/certs.js"
import { QEMU, tempDir } from "./helpers/qemu.js"

const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    server.close(() => resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0)))
  })
})

const spec = (base: string) => ({
  binary: QEMU,
  machine: "none",
  baseTempDir: base,
  args: ["-nodefaults", "-display", "none"]
})

/** A runner on 127.0.0.1:port over TLS, built into the current scope. */
const tlsRunner = (base: string, port: number) =>
  Effect.gen(function*() {
    const certs = makeCerts(base)
    const filename = path.join(base, "fleet.sqlite")
    const vms = path.join(base, "vms")
    fs.mkdirSync(vms)
    yield* Layer.build(Fleet.runnerLayer({
      storage: Fleet.sqlite(filename),
      address: { host: "127.0.0.1", port },
      tls: Fleet.tls({ ca: certs.ca, ...certs.runner }),
      policy: Fleet.policy({ dirs: [vms] })
    }))
    return { certs, filename, vms }
  })

describe("Fleet over mutual TLS", () => {
  it.scopedLive("a peer without a certificate, with another CA's or an expired one is refused; a certified one is accepted", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const port = yield* freePort
      const { certs } = yield* tlsRunner(base, port)
      const none = yield* Effect.promise(() => handshake(port, certs.ca, undefined))
      const foreign = yield* Effect.promise(() => handshake(port, certs.ca, certs.foreign))
      const expired = yield* Effect.promise(() => handshake(port, certs.ca, certs.expired))
      const good = yield* Effect.promise(() => handshake(port, certs.ca, certs.client))
      expect(none.ok).toBe(false)
      expect(foreign.ok).toBe(false)
      expect(expired.ok).toBe(false)
      expect(good).toEqual({ ok: true })
      // a plain TCP peer gets no answer to what it sends, only a closed connection
      const plain = yield* Effect.async<string>((resume) => {
        const socket = net.connect(port, "127.0.0.1", () => socket.write("hello\n"))
        let seen = ""
        socket.on("data", (chunk) => (seen += chunk.toString("latin1")))
        socket.on("error", () => {})
        socket.on("close", () => resume(Effect.succeed(seen)))
      })
      expect(plain).not.toContain("hello")
    }), 60_000)

  it.scopedLive("a client with a certificate of the fleet's CA launches and drives a VM on a TLS runner", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const port = yield* freePort
      const { certs, filename, vms } = yield* tlsRunner(base, port)
      const status = yield* Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        yield* Effect.sleep("2 seconds") // the client's view of the assignments
        const vm = yield* fleet.launch("tls-vm", spec(vms))
        expect(vm.runner).toBe(`127.0.0.1:${port}`)
        return yield* vm.command("query-status")
      }).pipe(
        Effect.scoped,
        Effect.provide(Fleet.clientLayer({ storage: Fleet.sqlite(filename), tls: Fleet.tls({ ca: certs.ca, ...certs.client }) }))
      )
      expect(status).toMatchObject({ running: true })
    }), 60_000)

  it.scopedLive("without tls a runner refuses to listen on other than loopback; insecure: true does, with a warning", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const port = yield* freePort
      const refused = yield* Effect.exit(Effect.scoped(Layer.build(Fleet.runnerLayer({
        storage: Fleet.sqlite(path.join(base, "a.sqlite")),
        address: { host: "127.0.0.1", port },
        listen: { host: "0.0.0.0", port }
      }))))
      expect(Exit.isFailure(refused)).toBe(true)
      expect(String(Exit.isFailure(refused) ? refused.cause : "")).toContain("loopback")

      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => logs.push(String(message)))
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(Fleet.runnerLayer({
        storage: Fleet.sqlite(path.join(base, "b.sqlite")),
        address: { host: "127.0.0.1", port },
        listen: { host: "0.0.0.0", port },
        insecure: true
      }), scope).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      yield* Scope.close(scope, Exit.void)
      expect(logs.some((line) => line.includes("INSECURE"))).toBe(true)
    }), 60_000)
})
