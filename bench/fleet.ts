/**
 * `npx tsx bench/fleet.ts [--quick]`: the fleet's overhead.
 *
 * - a `query-status` round trip to a VM through the fleet versus the same
 *   command on a local `QemuMachine` (ratio, added latency p50/p95), for the
 *   embedded runner (same process, SQLite) and for a runner in another process
 *   reached over TCP, and the same over mutual TLS (SQLite file shared by both
 *   processes; certificates made with `openssl`);
 * - launches per second through the fleet (`-machine none`, 4 at a time).
 *
 * The runner process is this file: `node --import tsx bench/fleet.ts runner FILE PORT [CERTDIR]`.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Fleet, type MachineSpec } from "../src/fleet/index.js"
import { QemuMachine } from "../src/index.js"
import { makeCerts } from "../test/helpers/certs.js"
import { fmtMs, fmtRate, now, summarize } from "./stats.js"

const self = fileURLToPath(import.meta.url)
const QEMU = process.env.QEMU_BINARY ?? "qemu-system-x86_64"
const quick = process.argv.includes("--quick")
const plan = quick
  ? { warm: 20, samples: 200, launches: 4, parallelVms: 4, parallelOps: 50 }
  : { warm: 200, samples: 3_000, launches: 24, parallelVms: 8, parallelOps: 500 }

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })

/** Sequential round trips: `warm` discarded, then `samples` timed. */
const roundTrips = (command: Effect.Effect<unknown, unknown>) =>
  Effect.gen(function*() {
    for (let i = 0; i < plan.warm; i++) yield* command
    const samples: Array<number> = []
    for (let i = 0; i < plan.samples; i++) {
      const t = now()
      yield* command
      samples.push(now() - t)
    }
    return summarize(samples)
  })

/** Commands per second with `parallelVms` VMs driven at once, `parallelOps` sequential commands each. */
const throughput = (commands: ReadonlyArray<Effect.Effect<unknown, unknown>>) =>
  Effect.gen(function*() {
    const t = now()
    yield* Effect.forEach(commands, (command) => Effect.repeatN(command, plan.parallelOps - 1), { concurrency: "unbounded" })
    return (commands.length * plan.parallelOps) / ((now() - t) / 1000)
  })

const ids = (prefix: string) => Array.from({ length: plan.parallelVms }, (_, i) => `${prefix}-${i}`)

const launches = (fleet: Fleet.Service, spec: MachineSpec.MachineSpec, prefix: string) =>
  Effect.gen(function*() {
    const t = now()
    yield* Effect.forEach(
      Array.from({ length: plan.launches }, (_, i) => `${prefix}-${i}`),
      (id) => fleet.launch(id, spec),
      { concurrency: 4 }
    )
    return plan.launches / ((now() - t) / 1000)
  }).pipe(Effect.scoped)

async function main(): Promise<number> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-qemu-fleet-bench-"))
  const base = path.join(dir, "vms")
  fs.mkdirSync(base)
  const spec: MachineSpec.MachineSpec = { binary: QEMU, machine: "none", baseTempDir: base, args: ["-nodefaults", "-display", "none"] }
  let runner: cp.ChildProcess | undefined
  try {
    const local = await Effect.runPromise(
      Effect.gen(function*() {
        const config = QemuMachine.make({ ...spec, args: [...spec.args!] }).pipe(QemuMachine.setMachine("none"))
        const vm = yield* QemuMachine.launch(config)
        const stats = yield* roundTrips(vm.command("query-status"))
        const vms = yield* Effect.forEach(ids("local"), () => QemuMachine.launch(config))
        const rate = yield* throughput(vms.map((vm) => vm.command("query-status")))
        return { ...stats, rate }
      }).pipe(Effect.scoped)
    )

    const embedded = await Effect.runPromise(
      Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        const stats = yield* Effect.scoped(Effect.flatMap(fleet.launch("bench", spec), (vm) => roundTrips(vm.command("query-status"))))
        const rate = yield* launches(fleet, spec, "embedded")
        const vms = yield* Effect.forEach(ids("embedded-par"), (id) => fleet.launch(id, spec))
        const commands = yield* throughput(vms.map((vm) => vm.command("query-status")))
        return { stats, rate, commands }
      }).pipe(Effect.scoped, Effect.provide(Fleet.runnerLayer({ policy: Fleet.policy({ dirs: [base] }) })))
    )

    const certs = makeCerts(dir)
    const member = (who: "runner" | "client") =>
      Fleet.tls({ ca: certs.ca, cert: path.join(dir, `${who}.pem`), key: path.join(dir, `${who}.key`) })
    /** A runner in another process, plain TCP or TLS, and this process as its client. */
    const overNetwork = async (tls: boolean) => {
      const file = path.join(dir, `fleet-${tls ? "tls" : "tcp"}.sqlite`)
      const port = await freePort()
      runner = cp.spawn(process.execPath, ["--import", "tsx", self, "runner", file, String(port), ...(tls ? [dir] : [])], {
        stdio: ["ignore", "pipe", "inherit"],
        cwd: path.dirname(path.dirname(self))
      })
      await new Promise<void>((resolve, reject) => {
        runner!.stdout!.on("data", (chunk: Buffer) => chunk.toString().includes("ready") && resolve())
        runner!.once("exit", (code) => reject(new Error(`runner exited (${code})`)))
      })
      const result = await Effect.runPromise(
        Effect.gen(function*() {
          const fleet = yield* Fleet.Fleet
          yield* Effect.sleep("3 seconds") // the client sees the runner
          const prefix = tls ? "tls" : "remote"
          const stats = yield* Effect.scoped(Effect.flatMap(fleet.launch(`${prefix}-bench`, spec), (vm) => roundTrips(vm.command("query-status"))))
          const rate = yield* launches(fleet, spec, prefix)
          const vms = yield* Effect.forEach(ids(`${prefix}-par`), (id) => fleet.launch(id, spec))
          const commands = yield* throughput(vms.map((vm) => vm.command("query-status")))
          return { stats, rate, commands }
        }).pipe(
          Effect.scoped,
          Effect.provide(Fleet.clientLayer({ storage: Fleet.sqlite(file), tls: tls ? member("client") : undefined }))
        )
      )
      runner.kill("SIGTERM")
      await new Promise((resolve) => runner!.exitCode !== null ? resolve(undefined) : runner!.once("exit", resolve))
      runner = undefined
      return result
    }
    const remote = await overNetwork(false)
    const secure = await overNetwork(true)

    console.log(`fleet bench (${quick ? "quick" : "full"}): ${plan.samples} sequential query-status round trips each`)
    console.log("")
    console.log(
      `target                     p50        p95        ratio (p50)  added p50  added p95  ${plan.parallelVms} VMs at once  launches`
    )
    const row = (name: string, s: ReturnType<typeof summarize>, commands: number, rate?: number) =>
      console.log(
        `${name.padEnd(26)} ${fmtMs(s.median).padEnd(10)} ${fmtMs(s.p95).padEnd(10)} ${
          (s.median / local.median).toFixed(2).padStart(6)
        }x      ${fmtMs(s.median - local.median).padEnd(10)} ${fmtMs(s.p95 - local.p95).padEnd(10)} ${
          `${fmtRate(commands)} cmds`.padEnd(15)
        } ${rate === undefined ? "-" : fmtRate(rate)}`
      )
    row("local QemuMachine", local, local.rate)
    row("fleet, embedded runner", embedded.stats, embedded.commands, embedded.rate)
    row("fleet, runner over TCP", remote.stats, remote.commands, remote.rate)
    row("fleet, runner over TLS", secure.stats, secure.commands, secure.rate)
    console.log("")
    console.log(
      `TLS / TCP: p50 ${(secure.stats.median / remote.stats.median).toFixed(2)}x, p95 ${
        (secure.stats.p95 / remote.stats.p95).toFixed(2)
      }x, ${plan.parallelVms} VMs at once ${(secure.commands / remote.commands).toFixed(2)}x the commands/s`
    )
    console.log(JSON.stringify({
      localP50: local.median,
      embeddedP50: embedded.stats.median,
      embeddedP95: embedded.stats.p95,
      remoteP50: remote.stats.median,
      remoteP95: remote.stats.p95,
      remoteRatio: remote.stats.median / local.median,
      tlsP50: secure.stats.median,
      tlsP95: secure.stats.p95,
      tlsOverTcpP50: secure.stats.median / remote.stats.median,
      tlsOverTcpP95: secure.stats.p95 / remote.stats.p95,
      tlsCommandsPerSecond: secure.commands,
      tlsLaunchesPerSecond: secure.rate,
      localCommandsPerSecond: local.rate,
      embeddedCommandsPerSecond: embedded.commands,
      remoteCommandsPerSecond: remote.commands,
      embeddedLaunchesPerSecond: embedded.rate,
      remoteLaunchesPerSecond: remote.rate
    }))
    return 0
  } finally {
    if (runner && runner.exitCode === null) {
      runner.kill("SIGTERM")
      await new Promise((resolve) => runner!.once("exit", resolve))
    }
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

if (process.argv[2] === "runner") {
  const [file, port, certDir] = [process.argv[3]!, Number(process.argv[4]), process.argv[5]]
  Effect.gen(function*() {
    yield* Layer.build(Fleet.runnerLayer({
      storage: Fleet.sqlite(file),
      address: { host: "127.0.0.1", port },
      tls: certDir === undefined
        ? undefined
        : Fleet.tls({
          ca: path.join(certDir, "fleet-ca.pem"),
          cert: path.join(certDir, "runner.pem"),
          key: path.join(certDir, "runner.key")
        }),
      policy: Fleet.policy({ dirs: [os.tmpdir()] })
    }))
    process.stdout.write("ready\n")
    return yield* Effect.never
  }).pipe(Effect.scoped, NodeRuntime.runMain)
} else {
  main().then((code) => process.exit(code), (error) => {
    console.error("fleet bench failed:", error)
    process.exit(1)
  })
}
