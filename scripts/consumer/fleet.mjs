// A fleet user's program, run by scripts/check-package.sh in a project that installed the
// packed tarball with one storage driver only: `node fleet.mjs sqlite` (the embedded runner,
// SQLite in memory) or `node fleet.mjs pg URL` (a runner on 127.0.0.1 and PostgreSQL at URL).
// Launches a VM through the fleet, asks for its status, prints one JSON line.
import { Effect } from "effect"
import { Fleet } from "effect-qemu/fleet"
import * as net from "node:net"
import * as os from "node:os"

const [driver, url] = process.argv.slice(2)
const freePort = () =>
  new Promise((resolve) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })

const program = Effect.gen(function*() {
  const fleet = yield* Fleet.Fleet
  const vm = yield* fleet.launch("package-vm", { binary: "qemu-system-x86_64", machine: "none", args: ["-nodefaults"] })
  const status = yield* vm.command("query-status")
  return { driver, runner: vm.runner, status: status.status }
}).pipe(Effect.scoped)

const layer = driver === "pg"
  ? Fleet.runnerLayer({ storage: Fleet.postgres(url), address: { host: "127.0.0.1", port: await freePort() } })
  : Fleet.runnerLayer({ storage: Fleet.sqlite() })

Effect.runPromise(Effect.provide(program, layer)).then(
  (result) => {
    console.log(JSON.stringify({ ...result, host: os.hostname() !== "" }))
    process.exit(0)
  },
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
