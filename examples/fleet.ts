/**
 * VMs through the fleet (`effect-qemu/fleet`, on `@effect/cluster`):
 *
 *   npx tsx examples/fleet.ts                 one host: an embedded runner, SQLite storage
 *   npx tsx examples/fleet.ts runner URL PORT a runner of a multi-host fleet (PostgreSQL at URL)
 *   npx tsx examples/fleet.ts client URL      the same program as a client of that fleet
 *
 * The program does not change: only the layer that provides `Fleet.Fleet` does.
 * (For a throwaway PostgreSQL: `bash scripts/postgres.sh start` prints a URL.)
 * With FLEET_CERTS=DIR (ca.pem, and DIR/runner.pem|key or DIR/client.pem|key;
 * see the README) members talk mutual TLS and the runner listens on its host
 * name; without it, on loopback only.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Console, Effect, Layer } from "effect"
import * as os from "node:os"
import { Fleet } from "../src/fleet/index.js"

const program = Effect.gen(function*() {
  const fleet = yield* Fleet.Fleet
  // the VM lives as long as this scope; a heartbeat keeps it while we run
  const vm = yield* fleet.launch("example-vm", { binary: "qemu-system-x86_64", machine: "none" })
  yield* Console.log(`running on ${vm.runner}:`, yield* vm.command("query-status"))
  yield* vm.command("stop")
  yield* Console.log("after stop:", yield* vm.command("query-status"))
  yield* Console.log("state:", yield* vm.state)
}).pipe(Effect.scoped)

const [mode, url, port] = process.argv.slice(2)
const certs = process.env.FLEET_CERTS
const tls = (who: "runner" | "client") =>
  certs === undefined
    ? undefined
    : Fleet.tls({ ca: `${certs}/ca.pem`, cert: `${certs}/${who}.pem`, key: `${certs}/${who}.key` })

if (mode === undefined) {
  // One host: the runner is in this process; storage is SQLite in memory.
  NodeRuntime.runMain(program.pipe(Effect.provide(Fleet.runnerLayer())))
} else if (mode === "runner" && url && port) {
  // A host that runs VMs for the fleet, until Ctrl-C (its VMs stop with it).
  NodeRuntime.runMain(
    Layer.launch(Fleet.runnerLayer({
      storage: Fleet.postgres(url),
      address: { host: certs === undefined ? "127.0.0.1" : os.hostname(), port: Number(port) },
      tls: tls("runner")
    }))
  )
} else if (mode === "client" && url) {
  // The same program across hosts: only the layer changed.
  NodeRuntime.runMain(program.pipe(Effect.provide(Fleet.clientLayer({ storage: Fleet.postgres(url), tls: tls("client") }))))
} else {
  console.error("usage: examples/fleet.ts [runner URL PORT | client URL]")
  process.exitCode = 2
}
