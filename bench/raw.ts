/**
 * The raw baseline: the least code that does the same work as the library
 * with bare `node:child_process`, `node:net` and `JSON.parse` (no Effect).
 *
 * Same QEMU command line as `QemuMachine.launch` with `setMachine("none")`,
 * same temp dir (`/var/tmp/qemu-machine-XXXXXX`, mode 0700), same log file for
 * QEMU's stdout/stderr, same listen-then-spawn-then-accept order, same
 * `{"execute":…,"id":…}` wire format with replies routed by id.
 */
import { Effect, Fiber, Mailbox, Option, Stream } from "effect"
import * as cp from "node:child_process"
import { dieWithParentPrefix } from "./lib.js"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"

export const QEMU = process.env.QEMU_BINARY ?? "qemu-system-x86_64"

/**
 * QEMU's environment as the library gives it (`internal/machine/start.ts`, `qemuEnv`): its heap
 * on huge pages unless `GLIBC_TUNABLES` is set. The same on both sides, so that the ratios
 * measure our overhead, not QEMU's start.
 */
const env = process.env.GLIBC_TUNABLES !== undefined ? process.env : { ...process.env, GLIBC_TUNABLES: "glibc.malloc.hugetlb=1" }

/** Every raw child and temp dir, so that a crash still cleans up (see `killAll`). */
const live = new Set<RawMachine>()

/** A minimal QMP connection: newline framing, JSON.parse, replies by id, an event callback. */
export class RawQmp {
  private buf = ""
  private nextId = 0
  private readonly waiting = new Map<number | string, (reply: any) => void>()
  private greeting: ((g: any) => void) | undefined
  onEvent: ((event: any) => void) | undefined = undefined
  onClose: (() => void) | undefined = undefined

  constructor(readonly socket: net.Socket) {
    socket.setEncoding("utf8")
    socket.on("data", (data: string) => {
      this.buf += data
      let start = 0
      let nl: number
      while ((nl = this.buf.indexOf("\n", start)) !== -1) {
        this.dispatch(JSON.parse(this.buf.slice(start, nl)))
        start = nl + 1
      }
      this.buf = this.buf.slice(start)
    })
    socket.on("error", () => {})
    socket.on("close", () => this.onClose?.())
  }

  private dispatch(msg: any) {
    if (msg.event !== undefined) return this.onEvent?.(msg)
    if (msg.QMP !== undefined) return this.greeting?.(msg)
    const resolve = this.waiting.get(msg.id)
    this.waiting.delete(msg.id)
    resolve?.(msg)
  }

  readGreeting(): Promise<any> {
    return new Promise((resolve) => (this.greeting = resolve))
  }

  /** Sends a command and resolves with the raw reply (`{return}` or `{error}`). */
  execute(command: string, args?: object): Promise<any> {
    const id = this.nextId++
    return new Promise((resolve) => {
      this.waiting.set(id, resolve)
      this.socket.write(`{"execute":"${command}",${args ? `"arguments":${JSON.stringify(args)},` : ""}"id":${id}}\n`)
    })
  }
}

export interface RawMachine {
  readonly dir: string
  readonly child: cp.ChildProcess
  readonly qmp: RawQmp
  readonly exited: Promise<void>
}

const randomSuffix = () => Math.floor(Math.random() * 0x1000000).toString(16).padStart(6, "0")

/**
 * mkdtemp → listen on the monitor socket → open the log → spawn QEMU → accept →
 * greeting → qmp_capabilities → reply. `extraArgs` go after the machine's own.
 */
export const launch = async (
  extraArgs: ReadonlyArray<string> = [],
  options: { readonly dieWithParent?: boolean } = {}
): Promise<RawMachine> => {
  const dir = fs.mkdtempSync(path.join("/var/tmp", "qemu-machine-"))
  const name = `qemu-${process.pid}-${randomSuffix()}`
  const sock = path.join(dir, `${name}-monitor.sock`)
  const server = net.createServer()
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(sock, resolve)
  })
  const logFd = fs.openSync(path.join(dir, `${name}.log`), "w", 0o600)
  const args = [
    "-display", "none", "-vga", "none",
    "-chardev", `socket,id=mon,path=${sock}`, "-mon", "chardev=mon,mode=control",
    "-machine", "none",
    ...extraArgs
  ]
  // Informational variant only: QEMU behind the same parent-death prefix the library uses.
  const prefix = options.dieWithParent ? Option.getOrElse(dieWithParentPrefix(), () => []) : []
  // In its own session, as the library runs QEMU: with the kernel's autogroup scheduling, children
  // left in our session share our CPU share, and 32 starting QEMUs then starve this process.
  const spawnOptions: cp.SpawnOptions = { stdio: ["ignore", logFd, logFd], detached: true, env }
  const child = prefix.length > 0
    ? cp.spawn(prefix[0]!, [...prefix.slice(1), QEMU, ...args], spawnOptions)
    : cp.spawn(QEMU, args, spawnOptions)
  fs.closeSync(logFd)
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  const machine = { dir, child, exited } as RawMachine
  live.add(machine)
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    server.once("connection", resolve)
    child.once("exit", (code, signal) => reject(new Error(`QEMU exited early (${code ?? signal}): ${fs.readFileSync(path.join(dir, `${name}.log`), "utf8")}`)))
  })
  server.close()
  const qmp = new RawQmp(socket)
  ;(machine as { qmp: RawQmp }).qmp = qmp
  const greeting = await qmp.readGreeting()
  // Out-of-band when QEMU offers it, as the library does: both sides drive the same QEMU mode.
  await qmp.execute("qmp_capabilities", greeting.QMP.capabilities.includes("oob") ? { enable: ["oob"] } : undefined)
  return machine
}

/** quit → wait for QEMU to exit → remove the temp dir. */
export const shutdown = async (machine: RawMachine): Promise<void> => {
  machine.qmp.socket.write(`{"execute":"quit"}\n`)
  await machine.exited
  machine.qmp.socket.destroy()
  fs.rmSync(machine.dir, { recursive: true, force: true })
  live.delete(machine)
}

/** Last resort (crash, Ctrl-C): SIGKILL every raw QEMU and remove its dir, synchronously. */
export const killAll = (): void => {
  for (const machine of live) {
    try {
      machine.child.kill("SIGKILL")
    } catch {
      // already gone
    }
    fs.rmSync(machine.dir, { recursive: true, force: true })
  }
  live.clear()
}

const now = () => performance.now()

/** `n` sequential `query-status` round trips; per-trip latencies and the total. */
export const roundTrips = async (machine: RawMachine, n: number) => {
  const latencies = new Float64Array(n)
  const t0 = now()
  for (let i = 0; i < n; i++) {
    const a = now()
    await machine.qmp.execute("query-status")
    latencies[i] = now() - a
  }
  return { total: now() - t0, latencies }
}

/** 100 `query-status` commands written at once; time until every reply is in. */
export const batch = async (machine: RawMachine) => {
  const t0 = now()
  const replies: Array<Promise<unknown>> = []
  for (let i = 0; i < 100; i++) replies.push(machine.qmp.execute("query-status"))
  await Promise.all(replies)
  return now() - t0
}

/** The commands of the event rows: `pairs` stop/cont pairs, in order (one event each). */
export const stopCont = (pairs: number): Array<string> =>
  Array.from({ length: pairs * 2 }, (_, i) => (i % 2 === 0 ? "stop" : "cont"))

/** `pairs` stop/cont pairs written at once; time until `2 × pairs` events have been parsed. */
export const eventThroughput = async (machine: RawMachine, pairs: number) => {
  const expected = pairs * 2
  let count = 0
  const t0 = now()
  const counted = new Promise<number>((resolve) => {
    machine.qmp.onEvent = () => {
      if (++count === expected) resolve(now())
    }
  })
  const replies: Array<Promise<unknown>> = []
  for (let i = 0; i < expected; i++) replies.push(machine.qmp.execute(i % 2 === 0 ? "stop" : "cont"))
  const t1 = await counted
  await Promise.all(replies)
  machine.qmp.onEvent = undefined
  return t1 - t0
}

/**
 * The raw client driven as an Effect program drives a promise-based client, in the library
 * side's pattern: a fiber per command (`Effect.forEach` unbounded over `Effect.promise`), the
 * events offered to a sliding `Mailbox` and counted through its `Stream`. None of the library's
 * code runs: this against `eventThroughput` is the cost of that pattern in Effect.
 */
export const eventThroughputFromEffect = (machine: RawMachine, pairs: number) =>
  Effect.scoped(Effect.gen(function*() {
    const expected = pairs * 2
    const commands = stopCont(pairs)
    const mailbox = yield* Mailbox.make<unknown>({ capacity: 4096, strategy: "sliding" })
    machine.qmp.onEvent = (event) => void mailbox.unsafeOffer(event)
    yield* Effect.addFinalizer(() => Effect.sync(() => void (machine.qmp.onEvent = undefined)))
    const t0 = now()
    const counter = yield* Effect.fork(Stream.runCount(Stream.take(Mailbox.toStream(mailbox), expected)))
    const issued = yield* Effect.fork(
      Effect.forEach(commands, (c) => Effect.promise(() => machine.qmp.execute(c)), { concurrency: "unbounded", discard: true })
    )
    const count = yield* Fiber.join(counter)
    const elapsed = now() - t0
    yield* Fiber.join(issued)
    if (count !== expected) return yield* Effect.dieMessage(`counted ${count} events, expected ${expected}`)
    return elapsed
  }))

/** A raw reader of a socket that resolves when `needle` has arrived (and consumes up to it). */
const reader = (socket: net.Socket) => {
  let text = ""
  let waiter: { needle: string; resolve: (at: number) => void } | undefined
  const check = (at: number) => {
    if (!waiter) return
    const i = text.indexOf(waiter.needle)
    if (i < 0) return
    text = text.slice(i + waiter.needle.length)
    const { resolve } = waiter
    waiter = undefined
    resolve(at)
  }
  socket.setEncoding("latin1")
  socket.on("data", (data: string) => {
    const at = now()
    text += data
    check(at)
  })
  return (needle: string) =>
    new Promise<number>((resolve) => {
      waiter = { needle, resolve }
      check(now())
    })
}

const connectUnix = (path: string) =>
  new Promise<net.Socket>((resolve, reject) => {
    const socket = net.createConnection({ path })
    socket.once("error", reject)
    socket.once("connect", () => resolve(socket))
  })

/** Console echo through QEMU's HMP readline monitor: write one byte, time until it is read back. */
export const consoleEcho = async (path: string, samples: number) => {
  const socket = await connectUnix(path)
  const until = reader(socket)
  await until("(qemu) ")
  const out = new Float64Array(samples)
  for (let i = 0; i < samples; i++) {
    const letter = String(i % 10) // a digit: no HMP command to run on "\r"
    const t0 = now()
    socket.write(letter)
    out[i] = (await until(letter)) - t0
    socket.write("\r")
    await until("(qemu) ")
  }
  socket.destroy()
  return out
}

/** The consumer path alone over a local unix socket pair, raw reader on `client`. */
export const consoleLocal = async (client: net.Socket, writer: net.Socket, samples: number) => {
  const until = reader(client)
  const out = new Float64Array(samples)
  for (let i = 0; i < samples; i++) {
    const letter = String.fromCharCode(97 + (i % 26))
    const t0 = now()
    writer.write(letter)
    out[i] = (await until(letter)) - t0
  }
  client.destroy()
  return out
}

/** A connected unix socket pair through a listener at `path` (removed once connected). */
export const socketPair = async (path: string) => {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(path, resolve))
  const accepted = new Promise<net.Socket>((resolve) => server.once("connection", resolve))
  const client = await connectUnix(path)
  const writer = await accepted
  server.close()
  return { client, writer }
}

/** `commands` sequential `query-status` on every machine, all machines at once. */
export const drivePromises = (machines: ReadonlyArray<RawMachine>, commands: number): Promise<unknown> =>
  Promise.all(machines.map(async (m) => {
    for (let i = 0; i < commands; i++) await m.qmp.execute("query-status")
  }))

/**
 * `count` raw machines at once, `commands` round trips on each (by `drive`), all shut down.
 * `drive` is replaceable so that the same raw client can be driven another way (from Effect fibers).
 */
export const concurrentLaunch = async (
  count: number,
  commands: number,
  gc: () => void,
  drive: (machines: ReadonlyArray<RawMachine>, commands: number) => Promise<unknown> = drivePromises
) => {
  gc()
  const before = process.memoryUsage()
  const fdsBefore = fs.readdirSync("/proc/self/fd").length
  const t0 = now()
  const machines = await Promise.all(Array.from({ length: count }, () => launch()))
  const wall = now() - t0
  const t1 = now()
  const cpu1 = process.cpuUsage()
  await drive(machines, commands)
  const commandsMs = commands > 0 ? now() - t1 : 0
  const cpu = process.cpuUsage(cpu1)
  gc()
  const after = process.memoryUsage()
  const fdsDelta = fs.readdirSync("/proc/self/fd").length - fdsBefore
  const t2 = now()
  await Promise.all(machines.map(shutdown))
  return {
    wall,
    commands: commandsMs,
    // this process's CPU (µs, user and system) while the commands ran
    commandsCpu: commands > 0 ? cpu.user + cpu.system : 0,
    rssDelta: after.rss - before.rss,
    heapDelta: after.heapUsed - before.heapUsed,
    fdsDelta,
    close: now() - t2
  }
}
