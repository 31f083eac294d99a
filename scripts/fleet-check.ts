/**
 * `npm run fleet:check`: the fleet across processes, on PostgreSQL.
 *
 * A throwaway PostgreSQL (scripts/postgres.sh), 3 runner processes on this
 * host, and this process as a client-only member: 24 VMs (`-machine none`)
 * launched through the fleet and spread over the runners, 100 commands each;
 * then one runner is SIGKILLed: its VMs must answer `VmLost` within 30 s while
 * the others keep answering, and 8 new launches must land on the survivors.
 * Then a client process launches 2 VMs and is SIGKILLed: without its heartbeat
 * the runners shut those VMs down (no orphans).
 * Every member talks mutual TLS (certificates made here with `openssl`); a
 * peer without a certificate, with another CA's and with an expired one must
 * be refused. The runners' policy lets the VMs live in the check's own dir
 * only: launches with a foreign binary, a wrapper, a path outside or an
 * `exec:` argument, and commands of the deny list must answer `PolicyDenied`
 * and run or write nothing (a marker file they would create, an outside dir).
 * At the end everything is shut down and checked gone: runner and QEMU
 * processes, temp dirs, the database. Prints a table and, last, one JSON line.
 *
 * The same file is the runner (`node --import tsx scripts/fleet-check.ts runner URL PORT WORKDIR`)
 * and the client that dies (`… client URL BASEDIR WORKDIR`).
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as PgClient from "@effect/sql-pg/PgClient"
import { Duration, Effect, Either, Layer, Redacted } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Fleet, type MachineSpec } from "../src/fleet/index.js"
import { handshake, makeCerts } from "../test/helpers/certs.js"

const self = fileURLToPath(import.meta.url)
const QEMU = process.env.QEMU_BINARY ?? "qemu-system-x86_64"
const RUNNERS = 3
const VMS = 24
const COMMANDS = 100
const AFTER_KILL = 8
const LOST_DEADLINE_MS = 30_000
/** Runners shut down a VM whose client is silent this long; clients beat faster. */
const VM_IDLE = "6 seconds"
const HEARTBEAT = "1 second"
const ORPHANS = 2
const ORPHAN_DEADLINE_MS = 60_000
/** ShardingConfig's default shardsPerGroup, one group. */
const SHARDS = 300

// ---------------------------------------------------------------------------
// helpers

interface Runner {
  readonly index: number
  readonly port: number
  readonly address: string
  readonly child: cp.ChildProcess
  readonly log: string
  exited: boolean
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** Live (not zombie) pids whose command line contains `text`. */
const processesMentioning = (text: string): Array<number> =>
  fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
    if (pid === process.pid) return false
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
      if (/\) Z /.test(stat)) return false
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(text)
    } catch {
      return false
    }
  })

const isAlive = (pid: number): boolean => {
  try {
    return !/\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"))
  } catch {
    return false
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const waitUntil = async (condition: () => boolean, ms: number): Promise<boolean> => {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) return false
    await sleep(50)
  }
  return true
}

const percentile = (values: ReadonlyArray<number>, q: number): number => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!
}

/** One connection to the fleet's PostgreSQL, for the check's own queries. */
const withDatabase = (url: string) => Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))

/**
 * Until the runners hold every shard's lock between them, each some
 * (PostgreSQL advisory locks), and every runner is registered healthy, the
 * same in two readings two refresh intervals apart: the health check pings a
 * runner that is still starting and can mark it unhealthy for a while, and a
 * client that launches then places nothing on it.
 */
const waitForShards = (url: string) =>
  Effect.gen(function*() {
    const sql = yield* PgClient.PgClient
    const locks = sql<{ readonly locks: string; readonly holders: string }>`
      SELECT count(*) AS locks, count(DISTINCT pid) AS holders FROM pg_locks WHERE locktype = 'advisory' AND granted`
    const healthy = sql<{ readonly healthy: string }>`SELECT count(*) AS healthy FROM cluster_runners WHERE healthy`
    const ready = Effect.map(Effect.all([locks, healthy]), ([[l], [h]]) =>
      Number(l?.locks) >= SHARDS && Number(l?.holders) === RUNNERS && Number(h?.healthy) === RUNNERS)
    const deadline = Date.now() + 120_000
    let steady = 0
    while (Date.now() < deadline) {
      steady = (yield* ready) ? steady + 1 : 0
      if (steady === 2) return
      yield* Effect.sleep(steady === 0 ? "500 millis" : "3 seconds")
    }
    return yield* Effect.fail(new Error("the runners did not all take shards and stay healthy within 2 minutes"))
  }).pipe(withDatabase(url))

/** The runners table as the clients read it, for a failure's message. */
const runnersTable = (url: string) =>
  Effect.gen(function*() {
    const sql = yield* PgClient.PgClient
    const rows = yield* sql<{ readonly address: string; readonly healthy: boolean }>`
      SELECT address, healthy FROM cluster_runners ORDER BY address`
    return rows.map((r) => `${r.address} ${r.healthy ? "healthy" : "unhealthy"}`).join(", ")
  }).pipe(withDatabase(url), Effect.orElseSucceed(() => "unreadable"))

const vmSpec = (base: string): MachineSpec.MachineSpec => ({
  binary: QEMU,
  machine: "none",
  baseTempDir: base,
  args: ["-nodefaults", "-display", "none"]
})

const startPostgres = (): { readonly dir: string; readonly url: string } => {
  const out = cp.execFileSync("bash", [path.join(path.dirname(self), "postgres.sh"), "start"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"]
  })
  const dir = /^PGDIR=(.*)$/m.exec(out)?.[1]
  const url = /^DATABASE_URL=(.*)$/m.exec(out)?.[1]
  if (!dir || !url) throw new Error(`postgres.sh said: ${out}`)
  return { dir, url }
}

const stopPostgres = (dir: string) => {
  cp.execFileSync("bash", [path.join(path.dirname(self), "postgres.sh"), "stop", dir], { stdio: "inherit" })
}

/**
 * Cleans up after this process however it ends: tsx SIGKILLs a child that is
 * slow to answer Ctrl-C (as on a loaded machine), and PostgreSQL runs in a
 * session of its own. Once this pid is gone, it kills the processes listed in
 * `<workDir>/pids` (the runners and the client; their QEMUs die with them),
 * stops PostgreSQL and removes both dirs. Paths go through the environment,
 * so that the leak check below does not find them in its command line.
 */
const startWatchdog = (pgDir: string, workDir: string): cp.ChildProcess => {
  const script = `
    while kill -0 "$WATCH_PID" 2>/dev/null; do sleep 0.5; done
    if [ -f "$WORK_DIR/pids" ]; then
      for pid in $(cat "$WORK_DIR/pids"); do
        grep -qa fleet-check "/proc/$pid/cmdline" 2>/dev/null && kill -9 "$pid"
      done
      sleep 1
    fi
    bash "$PG_SCRIPT" stop "$PG_DIR" >/dev/null 2>&1
    rm -rf "$WORK_DIR"`
  const child = cp.spawn("bash", ["-c", script], {
    detached: true,
    stdio: "ignore",
    env: {
      ...process.env,
      WATCH_PID: String(process.pid),
      PG_SCRIPT: path.join(path.dirname(self), "postgres.sh"),
      PG_DIR: pgDir,
      WORK_DIR: workDir
    }
  })
  child.unref()
  return child
}

/** The last lines of a member's log, for a failure message (the temp dir goes with the check). */
const tail = (file: string, lines = 20): string => {
  try {
    return fs.readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n")
  } catch {
    return "(no log)"
  }
}

/** Remembered for the watchdog. */
const track = (workDir: string, child: cp.ChildProcess) => {
  if (child.pid !== undefined) fs.appendFileSync(path.join(workDir, "pids"), `${child.pid}\n`)
}

/** Where the members find their certificates (made by `main`), and the dir VMs may live in. */
const certsDir = (workDir: string) => path.join(workDir, "certs")
const vmDir = (workDir: string) => path.join(workDir, "vms")

/** A member's TLS settings, `runner` or `client`. */
const memberTls = (workDir: string, who: "runner" | "client") =>
  Fleet.tls({
    ca: path.join(certsDir(workDir), "fleet-ca.pem"),
    cert: path.join(certsDir(workDir), `${who}.pem`),
    key: path.join(certsDir(workDir), `${who}.key`)
  })

const startRunner = async (index: number, url: string, workDir: string): Promise<Runner> => {
  const port = await freePort()
  const log = path.join(workDir, `runner-${index}.log`)
  const fd = fs.openSync(log, "w")
  const child = cp.spawn(process.execPath, ["--import", "tsx", self, "runner", url, String(port), workDir], {
    stdio: ["ignore", "pipe", fd],
    cwd: path.dirname(path.dirname(self))
  })
  track(workDir, child)
  fs.closeSync(fd)
  const runner: Runner = { index, port, address: `127.0.0.1:${port}`, child, log, exited: false }
  child.on("exit", () => {
    runner.exited = true
  })
  await new Promise<void>((resolve, reject) => {
    let seen = ""
    child.stdout!.on("data", (chunk: Buffer) => {
      seen += chunk.toString()
      if (seen.includes("ready")) resolve()
    })
    child.once("exit", (code) =>
      reject(new Error(`runner ${index} exited (${code}) before it was ready; the end of ${log}:\n${tail(log)}`)))
  })
  return runner
}

/** A client process that launches `ORPHANS` VMs and waits to be killed. */
const startOrphanClient = async (url: string, base: string, workDir: string) => {
  const log = path.join(workDir, "client.log")
  const fd = fs.openSync(log, "w")
  const child = cp.spawn(process.execPath, ["--import", "tsx", self, "client", url, base, workDir], {
    stdio: ["ignore", "pipe", fd],
    cwd: path.dirname(path.dirname(self))
  })
  track(workDir, child)
  fs.closeSync(fd)
  const vms: Array<{ readonly id: string; readonly name: string }> = []
  await new Promise<void>((resolve, reject) => {
    let seen = ""
    child.stdout!.on("data", (chunk: Buffer) => {
      seen += chunk.toString()
      for (const m of seen.matchAll(/^launched (\S+) (\S+) (\S+)$/gm)) {
        if (!vms.some((vm) => vm.id === m[1])) vms.push({ id: m[1]!, name: m[3]! })
      }
      if (/^ready$/m.test(seen)) resolve()
    })
    child.once("exit", (code) =>
      reject(new Error(`the client exited (${code}) before it was ready; the end of ${log}:\n${tail(log)}`)))
  })
  return { child, vms }
}

const stopRunner = async (runner: Runner) => {
  if (runner.exited) return
  runner.child.kill("SIGTERM")
  if (!(await waitUntil(() => runner.exited, 45_000))) {
    runner.child.kill("SIGKILL")
    await waitUntil(() => runner.exited, 5_000)
  }
}

// ---------------------------------------------------------------------------
// the check

interface Row {
  readonly id: string
  runner: string
  launchMs: number
  commandsOk: number
  afterKill: string
  lostAfterMs?: number
}

const started = Date.now()
const say = (text: string) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${text}`)

async function main(): Promise<number> {
  const workDir = fs.mkdtempSync(path.join(os.tmpdir(), "effect-qemu-fleet-check-"))
  const vmBase = vmDir(workDir)
  fs.mkdirSync(vmBase)
  // what refused launches and commands would write: the check proves they did not
  const outside = path.join(workDir, "outside")
  fs.mkdirSync(outside)
  const marker = path.join(outside, "ran")
  fs.mkdirSync(certsDir(workDir))
  const certs = makeCerts(certsDir(workDir))
  let refusedPeers = 0
  let deniedLaunches = 0
  let deniedCommands = 0
  const failures: Array<string> = []
  const runners: Array<Runner> = []
  let pg: { readonly dir: string; readonly url: string } | undefined
  const rows = new Map<string, Row>()
  const latencies: Array<number> = []
  let killed: Runner | undefined
  let lostOnKilled = 0
  let lostElsewhere = 0
  let launchedAfterKill = 0
  let maxLostMs = 0
  let orphansShutDown = 0
  let orphanMs = 0
  let killedQemus: Array<number> = []
  let watchdog: cp.ChildProcess | undefined
  // Ctrl-C or a kill: PostgreSQL runs in a session of its own and would outlive
  // us; the runners' QEMUs die with their runner.
  const abandon = (signal: NodeJS.Signals) => {
    console.log(`${signal}: stopping the runners and PostgreSQL, removing ${workDir}`)
    for (const runner of runners) runner.child.kill("SIGKILL")
    try {
      if (pg) stopPostgres(pg.dir)
    } finally {
      fs.rmSync(workDir, { recursive: true, force: true })
      process.exit(130)
    }
  }
  process.once("SIGINT", abandon)
  process.once("SIGTERM", abandon)

  try {
    say("starting PostgreSQL…")
    pg = startPostgres()
    watchdog = startWatchdog(pg.dir, workDir)
    const url = pg.url
    say(`starting ${RUNNERS} runners…`)
    const starts = await Promise.allSettled(Array.from({ length: RUNNERS }, (_, i) => startRunner(i, url, workDir)))
    for (const start of starts) if (start.status === "fulfilled") runners.push(start.value)
    for (const start of starts) if (start.status === "rejected") throw start.reason

    say("peers without a certificate of the fleet's CA…")
    const target = runners[0]!.port
    for (const [label, pair] of [["none", undefined], ["another CA's", certs.foreign], ["expired", certs.expired]] as const) {
      const result = await handshake(target, certs.ca, pair)
      if (result.ok) failures.push(`a peer with ${label} certificate was accepted`)
      else refusedPeers++
    }
    if (!(await handshake(target, certs.ca, certs.client)).ok) failures.push("a certified peer was refused")

    const spec = vmSpec(vmBase)

    const program = Effect.gen(function*() {
      const fleet = yield* Fleet.Fleet
      // Every runner registered and holding its shards before the first launch:
      // a runner that joins later takes shards over, and the VMs on them stop.
      yield* waitForShards(url)
      yield* Effect.sleep("3 seconds") // this client's view of the assignments catches up

      const launchOne = (id: string) =>
        Effect.gen(function*() {
          const t0 = performance.now()
          const vm = yield* fleet.launch(id, spec, { heartbeat: HEARTBEAT })
          const row: Row = { id, runner: vm.runner, launchMs: performance.now() - t0, commandsOk: 0, afterKill: "-" }
          rows.set(id, row)
          return vm
        })

      say(`launching ${VMS} VMs…`)
      const t0 = performance.now()
      const vms = yield* Effect.forEach(
        Array.from({ length: VMS }, (_, i) => `vm-${i}`),
        launchOne,
        { concurrency: 8 }
      )
      const launchSeconds = (performance.now() - t0) / 1000
      say(`  ${VMS} launched in ${launchSeconds.toFixed(1)} s`)

      say("launches and commands the runners' policy refuses…")
      const refusedLaunches: ReadonlyArray<readonly [string, MachineSpec.MachineSpec]> = [
        ["binary", { ...spec, binary: "/bin/sh", args: ["-c", `touch ${marker}`] }],
        ["wrapper", { ...spec, wrapper: ["/bin/sh", "-c", `touch ${marker}; exec "$@"`, "sh"] }],
        ["path", { ...spec, consoleLog: path.join(outside, "console.log") }],
        ["path", { ...spec, baseTempDir: outside }],
        ["argument", { ...spec, args: [...spec.args!, "-incoming", `exec:touch ${marker}`] }],
        ["argument", { ...spec, args: [...spec.args!, "-chardev", `file,id=c,path=${path.join(outside, "c.log")}`] }]
      ]
      for (const [i, [what, denied]] of refusedLaunches.entries()) {
        const result = yield* Effect.either(fleet.launch(`denied-${i}`, denied))
        if (Either.isLeft(result) && result.left._tag === "PolicyDenied" && result.left.what === what) deniedLaunches++
        else failures.push(`launch ${i} (${what}): ${Either.isRight(result) ? "launched" : result.left._tag}`)
      }
      const refusedCommands: ReadonlyArray<readonly [string, Record<string, unknown>]> = [
        ["human-monitor-command", { "command-line": "info status" }],
        ["migrate", { uri: `exec:touch ${marker}` }],
        ["migrate", { uri: `file:${path.join(outside, "state")}` }],
        ["screendump", { filename: path.join(outside, "screen.ppm") }],
        ["dump-guest-memory", { paging: false, protocol: `file:${path.join(outside, "core")}` }],
        ["chardev-add", { id: "c", backend: { type: "file", data: { out: path.join(outside, "c.log") } } }]
      ]
      for (const [command, args] of refusedCommands) {
        const result = yield* Effect.either(vms[0]!.command(command, args))
        if (Either.isLeft(result) && result.left._tag === "PolicyDenied") deniedCommands++
        else failures.push(`command ${command}: ${Either.isRight(result) ? "ran" : result.left._tag}`)
      }

      say(`${COMMANDS} commands on each…`)
      yield* Effect.forEach(vms, (vm) =>
        Effect.gen(function*() {
          for (let i = 0; i < COMMANDS; i++) {
            const t = performance.now()
            const status = yield* vm.command("query-status")
            latencies.push(performance.now() - t)
            if ((status as { running?: unknown }).running !== true) failures.push(`${vm.id}: unexpected ${JSON.stringify(status)}`)
            else rows.get(vm.id)!.commandsOk++
          }
        }), { concurrency: VMS })

      const perRunner = new Map<string, number>()
      for (const row of rows.values()) perRunner.set(row.runner, (perRunner.get(row.runner) ?? 0) + 1)
      const table = runners.some((r) => !perRunner.get(r.address)) ? yield* runnersTable(url) : ""
      for (const r of runners) {
        if (!perRunner.get(r.address)) failures.push(`runner ${r.address} got no VM (runners now: ${table})`)
      }

      // the runner with the most VMs dies
      killed = [...runners].sort((a, b) => (perRunner.get(b.address) ?? 0) - (perRunner.get(a.address) ?? 0))[0]!
      const victim = killed
      killedQemus = fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
        try {
          const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
          return new RegExp(`^PPid:\\s+${victim.child.pid}$`, "m").test(status) &&
            fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("qemu-system")
        } catch {
          return false
        }
      })
      say(`SIGKILL runner ${victim.address} (pid ${victim.child.pid}, ${perRunner.get(victim.address)} VMs)…`)
      const killedAt = performance.now()
      victim.child.kill("SIGKILL")

      yield* Effect.forEach(vms, (vm) =>
        Effect.gen(function*() {
          const row = rows.get(vm.id)!
          const onKilled = row.runner === victim.address
          const result = yield* Effect.either(vm.command("query-status").pipe(Effect.timeout(Duration.seconds(60))))
          const ms = performance.now() - killedAt
          if (Either.isRight(result)) {
            row.afterKill = "answers"
            if (onKilled) failures.push(`${vm.id} on the killed runner still answers`)
            return
          }
          const error = result.left
          row.afterKill = error._tag
          if (error._tag === "VmLost") {
            row.lostAfterMs = ms
            if (onKilled) {
              lostOnKilled++
              maxLostMs = Math.max(maxLostMs, ms)
              if (ms > LOST_DEADLINE_MS) failures.push(`${vm.id}: VmLost after ${(ms / 1000).toFixed(1)} s`)
              if (error.runner !== victim.address) failures.push(`${vm.id}: VmLost names ${error.runner}`)
            } else {
              lostElsewhere++
            }
          } else {
            failures.push(`${vm.id} (${onKilled ? "killed runner" : "survivor"}): ${error._tag}`)
          }
        }), { concurrency: VMS })

      say(`${AFTER_KILL} new launches…`)
      yield* Effect.forEach(Array.from({ length: AFTER_KILL }, (_, i) => `vm-new-${i}`), (id) =>
        Effect.gen(function*() {
          const vm = yield* launchOne(id)
          yield* vm.command("query-status")
          rows.get(id)!.afterKill = "new"
          if (vm.runner === victim.address) failures.push(`${id} landed on the killed runner`)
          else launchedAfterKill++
        }), { concurrency: AFTER_KILL })

      say(`a client launches ${ORPHANS} VMs, then is SIGKILLed…`)
      const orphans = yield* Effect.promise(() => startOrphanClient(url, vmBase, workDir))
      const killedClientAt = performance.now()
      orphans.child.kill("SIGKILL")
      yield* Effect.promise(() => new Promise((resolve) => orphans.child.exitCode !== null || orphans.child.signalCode !== null ? resolve(undefined) : orphans.child.once("exit", resolve)))
      for (const orphan of orphans.vms) {
        const gone = yield* Effect.promise(() =>
          waitUntil(() => processesMentioning(orphan.name).length === 0, ORPHAN_DEADLINE_MS)
        )
        const answer = yield* Effect.either(fleet.attach(orphan.id))
        if (!gone) failures.push(`${orphan.id}: still running ${ORPHAN_DEADLINE_MS / 1000} s after its client died`)
        else if (Either.isRight(answer) || answer.left._tag !== "VmLost") {
          failures.push(`${orphan.id}: after its client died, attach says ${Either.isRight(answer) ? "running" : answer.left._tag}`)
        } else orphansShutDown++
      }
      orphanMs = performance.now() - killedClientAt
      say("shutting everything down…")
    }).pipe(
      Effect.scoped,
      Effect.provide(Fleet.clientLayer({ storage: Fleet.postgres(url), tls: memberTls(workDir, "client") }))
    )

    const exit = await Effect.runPromiseExit(program)
    if (exit._tag === "Failure") failures.push(`client: ${String(exit.cause)}`)
  } catch (error) {
    failures.push(`crashed: ${String(error)}`)
  }

  // --- teardown, then leak checks ---
  say("stopping the runners…")
  await Promise.all(runners.map(stopRunner))
  say("checking for leftovers…")
  const leftovers: Array<string> = []
  if (killed && !(await waitUntil(() => killedQemus.every((pid) => !isAlive(pid)), 10_000))) {
    leftovers.push(`QEMUs of the killed runner alive: ${killedQemus.filter(isAlive).join(", ")}`)
  }
  for (const runner of runners) if (!runner.exited) leftovers.push(`runner ${runner.index} still running`)
  await waitUntil(() => processesMentioning(vmBase).length === 0, 10_000)
  for (const pid of processesMentioning(vmBase)) leftovers.push(`QEMU pid ${pid}`)
  const vmDirs = fs.existsSync(vmBase) ? fs.readdirSync(vmBase) : []
  for (const dir of vmDirs) leftovers.push(`temp dir ${path.join(vmBase, dir)}`)
  // the refused requests ran nothing and wrote nothing
  for (const file of fs.existsSync(outside) ? fs.readdirSync(outside) : []) {
    leftovers.push(`written by a refused request: ${path.join(outside, file)}`)
  }
  for (const pid of processesMentioning(marker)) leftovers.push(`run by a refused request: pid ${pid}`)
  if (pg) {
    try {
      stopPostgres(pg.dir)
      watchdog?.kill("SIGKILL")
    } catch (error) {
      leftovers.push(`postgres stop failed: ${String(error)}`)
    }
    if (fs.existsSync(pg.dir)) leftovers.push(`database dir ${pg.dir}`)
    for (const pid of processesMentioning(pg.dir)) leftovers.push(`postgres pid ${pid}`)
  }
  if (failures.length > 0 || leftovers.length > 0) {
    for (const runner of runners) {
      const tail = fs.existsSync(runner.log) ? fs.readFileSync(runner.log, "utf8").split("\n").slice(-15).join("\n") : ""
      if (tail.trim()) console.log(`--- runner ${runner.index} log (tail) ---\n${tail}`)
    }
  }
  fs.rmSync(workDir, { recursive: true, force: true })
  if (fs.existsSync(workDir)) leftovers.push(`work dir ${workDir}`)

  // --- report ---
  const byRunner = new Map<string, Array<Row>>()
  for (const row of rows.values()) byRunner.set(row.runner, [...(byRunner.get(row.runner) ?? []), row])
  console.log("")
  console.log("runner            VMs  launched after kill  commands ok  after kill")
  for (const runner of runners) {
    const list = byRunner.get(runner.address) ?? []
    const original = list.filter((r) => !r.id.startsWith("vm-new-"))
    const fresh = list.filter((r) => r.id.startsWith("vm-new-"))
    const outcome = [...new Set(original.map((r) => r.afterKill))].join(",")
    console.log(
      `${(runner.address + (runner === killed ? " ✝" : "")).padEnd(18)}${String(original.length).padStart(3)}  ${
        String(fresh.length).padStart(19)
      }  ${String(original.reduce((n, r) => n + r.commandsOk, 0)).padStart(11)}  ${outcome}`
    )
  }
  console.log("")
  console.log(`command latency through the fleet: p50 ${percentile(latencies, 0.5).toFixed(2)} ms, p95 ${percentile(latencies, 0.95).toFixed(2)} ms (${latencies.length} commands, ${VMS} VMs driven at once)`)
  console.log(`VmLost on the killed runner's VMs after at most ${(maxLostMs / 1000).toFixed(1)} s (limit 30 s)`)
  console.log(`VMs of a SIGKILLed client shut down: ${orphansShutDown}/${ORPHANS}, all within ${(orphanMs / 1000).toFixed(1)} s (idle timeout ${VM_IDLE})`)
  console.log(`TLS peers refused: ${refusedPeers}/3; policy: ${deniedLaunches} launches and ${deniedCommands} commands refused`)
  console.log(`total ${((Date.now() - started) / 1000).toFixed(1)} s`)
  for (const failure of failures) console.log(`FAIL ${failure}`)
  for (const leftover of leftovers) console.log(`LEAK ${leftover}`)
  const ok = failures.length === 0 && leftovers.length === 0 && launchedAfterKill === AFTER_KILL && lostElsewhere === 0 &&
    lostOnKilled > 0 && rows.size === VMS + AFTER_KILL && orphansShutDown === ORPHANS && refusedPeers === 3
  console.log(JSON.stringify({
    runners: RUNNERS,
    vms: VMS,
    lostOnKilled,
    lostElsewhere,
    launchedAfterKill,
    tls: true,
    refusedPeers,
    deniedLaunches,
    deniedCommands,
    leaked: leftovers.length
  }))
  return ok ? 0 : 1
}

// ---------------------------------------------------------------------------
// entry

if (process.argv[2] === "runner") {
  const [url, port, workDir] = [process.argv[3]!, Number(process.argv[4]), process.argv[5]!]
  Effect.gen(function*() {
    yield* Layer.build(Fleet.runnerLayer({
      storage: Fleet.postgres(url),
      address: { host: "127.0.0.1", port },
      tls: memberTls(workDir, "runner"),
      policy: Fleet.policy({ dirs: [vmDir(workDir)] }),
      vmIdleTimeout: VM_IDLE
    }))
    process.stdout.write(`ready ${process.pid}\n`)
    return yield* Effect.never
  }).pipe(Effect.scoped, NodeRuntime.runMain)
} else if (process.argv[2] === "client") {
  // A client that launches VMs and then dies without shutting them down.
  const [url, base, workDir] = [process.argv[3]!, process.argv[4]!, process.argv[5]!]
  Effect.gen(function*() {
    const fleet = yield* Fleet.Fleet
    yield* Effect.sleep("3 seconds")
    for (let i = 0; i < ORPHANS; i++) {
      const vm = yield* fleet.launch(`orphan-${i}`, { ...vmSpec(base) }, { heartbeat: HEARTBEAT })
      process.stdout.write(`launched ${vm.id} ${vm.runner} ${vm.name}\n`)
    }
    process.stdout.write("ready\n")
    return yield* Effect.never
  }).pipe(
    Effect.scoped,
    Effect.provide(Fleet.clientLayer({ storage: Fleet.postgres(url), tls: memberTls(workDir, "client") })),
    NodeRuntime.runMain
  )
} else {
  main().then((code) => process.exit(code), (error) => {
    console.error("fleet:check crashed:", error)
    process.exit(1)
  })
}
