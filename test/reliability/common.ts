/**
 * Shared plumbing of the reliability harness: the result of a case, leak
 * probes (fds, child processes, temp dirs, heap, fibers), a seeded random
 * source, a logger that records what the library logs, and a bound for every
 * wait so that a hang is reported as a failure instead of stalling the run.
 *
 * Probes only look at what belongs to this process: its own fd table, its own
 * children, QEMUs whose command line mentions a private base dir, and that dir.
 * Other engineers' tests run QEMU on the same machine at the same time.
 */
import { Cause, Duration, Effect, Exit, Fiber, Layer, Logger, LogLevel, Option, Supervisor } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { QemuMachine } from "../../src/index.js"

export const QEMU = process.env.QEMU_BINARY ?? "qemu-system-x86_64"

// ---------------------------------------------------------------------------------------------
// results

export interface CaseResult {
  readonly name: string
  tried: number
  survived: number
  leaked: number
  /** One line per finding that is not a failure (figures, timings). */
  readonly notes: Array<string>
  /** Why a try did not survive or what leaked; printed (the first few of each kind). */
  readonly failures: Array<string>
}

export const newResult = (name: string): CaseResult => ({ name, tried: 0, survived: 0, leaked: 0, notes: [], failures: [] })

export interface Context {
  readonly quick: boolean
  /** A private, 0700 directory for this run: machines' temp dirs go under it. */
  readonly base: string
  readonly rng: Rng
  readonly say: (line: string) => void
}

// ---------------------------------------------------------------------------------------------
// randomness: seeded, so a failing run can be replayed with --seed

export interface Rng {
  /** [0, 1) */
  readonly next: () => number
  /** integer in [lo, hi] */
  readonly int: (lo: number, hi: number) => number
  readonly pick: <A>(xs: ReadonlyArray<A>) => A
  readonly bytes: (n: number) => Buffer
}

export const makeRng = (seed: number): Rng => {
  let s = seed >>> 0 || 1
  const next = () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1))
  return {
    next,
    int,
    pick: (xs) => xs[int(0, xs.length - 1)]!,
    bytes: (n) => {
      const b = Buffer.allocUnsafe(n)
      for (let i = 0; i < n; i++) b[i] = int(0, 255)
      return b
    }
  }
}

// ---------------------------------------------------------------------------------------------
// probes

/** Open file descriptors of this process. */
export const fdCount = (): number => fs.readdirSync("/proc/self/fd").length

interface ProcInfo {
  readonly pid: number
  readonly ppid: number
  readonly state: string
  readonly comm: string
}

const readProc = (pid: number): ProcInfo | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const close = stat.lastIndexOf(")")
    const comm = stat.slice(stat.indexOf("(") + 1, close)
    const rest = stat.slice(close + 2).split(" ")
    return { pid, ppid: Number(rest[1]), state: rest[0]!, comm }
  } catch {
    return undefined
  }
}

const alive = (p: ProcInfo) => p.state !== "Z" && p.state !== "X"

export const isAlive = (pid: number): boolean => {
  const p = readProc(pid)
  return p !== undefined && alive(p)
}

/**
 * Live processes that are ours: direct children of this process (whatever
 * they run), and QEMUs whose command line mentions `base` (they may have been
 * re-parented). A wrapper's helper shell that mentions `base` is not counted.
 */
/** Children that existed before the harness started anything (tsx's helpers). */
const ignoredChildren = new Set<number>()
export const ignoreExistingChildren = (): void => {
  for (const entry of fs.readdirSync("/proc")) {
    const pid = Number(entry)
    if (Number.isInteger(pid) && readProc(pid)?.ppid === process.pid) ignoredChildren.add(pid)
  }
}

export const ourProcesses = (base: string): Array<string> => {
  const found: Array<string> = []
  for (const entry of fs.readdirSync("/proc")) {
    const pid = Number(entry)
    if (!Number.isInteger(pid) || pid === process.pid) continue
    const p = readProc(pid)
    if (!p || !alive(p)) continue
    if (p.ppid === process.pid) {
      // tsx's esbuild service is ours but not the library's.
      if (p.comm === "esbuild" || ignoredChildren.has(pid)) continue
      found.push(`${pid} ${p.comm} (child)`)
      continue
    }
    if (!p.comm.startsWith("qemu")) continue
    try {
      if (fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(base)) found.push(`${pid} ${p.comm}`)
    } catch {
      // gone
    }
  }
  return found
}

export const leftovers = (base: string): Array<string> => {
  try {
    return fs.readdirSync(base)
  } catch {
    return []
  }
}

let gcFn: (() => void) | undefined
/** A full GC: `global.gc` when node runs with --expose-gc, else obtained through V8 flags. */
export const gc = (): void => {
  if (!gcFn) {
    const g = (globalThis as { gc?: () => void }).gc
    if (g) gcFn = g
    else {
      v8.setFlagsFromString("--expose-gc")
      gcFn = vm.runInNewContext("gc") as () => void
    }
  }
  gcFn()
  gcFn()
}

/** Heap (JS heap plus Buffers) after a full GC, in bytes. */
export const heapAfterGc = (): number => {
  gc()
  const m = process.memoryUsage()
  return m.heapUsed + m.external
}

export const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

/** Polls `condition` every 10 ms for at most `ms`; true when it held. */
export const settle = async (condition: () => boolean, ms: number): Promise<boolean> => {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() >= deadline) return false
    await new Promise((r) => setTimeout(r, 10))
  }
  return true
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

// ---------------------------------------------------------------------------------------------
// leak accounting around one try

export interface Baseline {
  readonly fds: number
}

export const takeBaseline = async (): Promise<Baseline> => {
  // Sockets are closed by libuv on a later loop turn: let earlier ones finish.
  await sleep(20)
  return { fds: fdCount() }
}

/**
 * What a try left behind: QEMU/child processes and temp files at once (the
 * scope has closed, so they must be gone now), fds and fibers after at most
 * `settleMs` (libuv closes handles and fibers end on later loop turns).
 */
export const leaksAfter = async (
  base: string,
  baseline: Baseline,
  tracker: Supervisor.Supervisor<Array<Fiber.RuntimeFiber<unknown, unknown>>> | undefined,
  settleMs = 1000
): Promise<Array<string>> => {
  const leaks: Array<string> = []
  const procs = ourProcesses(base)
  if (procs.length > 0) {
    // Report whether they would have gone a moment later; a leak either way.
    const later = (await settle(() => ourProcesses(base).length === 0, 1000)) ? " (gone 1 s later)" : ""
    leaks.push(`processes alive after the scope closed: ${procs.join(", ")}${later}`)
  }
  const files = leftovers(base)
  if (files.length > 0) {
    leaks.push(`files left in the base dir: ${files.join(", ")}`)
    for (const f of files) fs.rmSync(path.join(base, f), { recursive: true, force: true })
  }
  if (!(await settle(() => fdCount() <= baseline.fds, settleMs))) {
    leaks.push(`fds: ${fdCount()} open, baseline ${baseline.fds} (${fdList().join(" ")})`)
  }
  if (tracker) {
    const running = () => Effect.runSync(tracker.value).filter((f) => Option.isNone(Effect.runSync(Fiber.poll(f))))
    if (!(await settle(() => running().length === 0, settleMs))) {
      leaks.push(`fibers still running: ${running().map((f) => f.id().id).join(", ")}`)
    }
  }
  return leaks
}

const fdList = (): Array<string> => {
  const out: Array<string> = []
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    try {
      out.push(`${fd}->${fs.readlinkSync(`/proc/self/fd/${fd}`)}`)
    } catch {
      // closed meanwhile
    }
  }
  return out.slice(-8)
}

// ---------------------------------------------------------------------------------------------
// running effects

/** Every message logged, and the number of unhandled fiber failures. */
export interface LogCapture {
  readonly messages: Array<string>
  unhandled: number
  readonly layer: Layer.Layer<never>
}

const render = (message: unknown): string => {
  if (Array.isArray(message)) return message.map(render).join(" ")
  if (typeof message === "string") return message
  try {
    return Cause.isCause(message) ? Cause.pretty(message) : String(message)
  } catch (e) {
    return `<unprintable: ${String(e)}>`
  }
}

/**
 * A Debug-level logger that keeps the last `keep` messages (with their
 * annotations) and counts Effect's "unhandled error" reports of fibers nobody
 * awaited.
 */
export const captureLogs = (keep = 2000): LogCapture => {
  const capture: LogCapture = {
    messages: [],
    unhandled: 0,
    layer: Layer.empty
  }
  const logger = Logger.make(({ annotations, cause, logLevel, message }) => {
    const text = render(message)
    // Effect reports every failed fiber at Debug; a defect (a throw, a die) in one is a bug.
    if ((text.includes("unhandled") && Cause.isDie(cause)) || logLevel._tag === "Fatal") capture.unhandled++
    const ann = [...annotations].map(([k, v]) => `${k}=${String(v)}`).join(" ")
    const causeText = Cause.isEmpty(cause) ? "" : ` cause: ${render(cause)}`
    capture.messages.push(`${logLevel.label} ${text}${ann ? ` [${ann}]` : ""}${causeText}`)
    if (capture.messages.length > keep) capture.messages.splice(0, capture.messages.length - keep)
  })
  ;(capture as { layer: Layer.Layer<never> }).layer = Layer.merge(
    Logger.replace(Logger.defaultLogger, logger),
    Logger.minimumLogLevel(LogLevel.Debug)
  )
  return capture
}

export class Hang {
  readonly _tag = "Hang"
  constructor(readonly what: string, readonly ms: number) {}
  toString() {
    return `hang: ${this.what} did not finish within ${this.ms} ms`
  }
}

/** Bounds a wait of the harness; a `Hang` is a failure of the library under test. */
export const bounded = <A, E, R>(what: string, ms: number) => (self: Effect.Effect<A, E, R>) =>
  Effect.timeoutFail(self, { duration: Duration.millis(ms), onTimeout: () => new Hang(what, ms) })

/** Runs an effect with the capture logger and returns its exit (never rejects). */
export const run = <A, E>(
  self: Effect.Effect<A, E>,
  logs: LogCapture,
  tracker?: Supervisor.Supervisor<unknown>
): Promise<Exit.Exit<A, E>> => {
  const provided = Effect.provide(self, logs.layer)
  return Effect.runPromiseExit(tracker ? Effect.supervised(provided, tracker) : provided)
}

export const newTracker = () => Effect.runSync(Supervisor.track)

/** A short description of an exit for failure lines. */
export const describeExit = (exit: Exit.Exit<unknown, unknown>): string =>
  Exit.isSuccess(exit) ? "success" : Cause.pretty(exit.cause).split("\n").slice(0, 6).join(" | ")

/** Whether a cause holds a defect (a thrown exception or `Effect.die`). */
export const hasDefect = (cause: Cause.Cause<unknown>): boolean => Cause.isDie(cause)

// ---------------------------------------------------------------------------------------------
// machines

/** A guestless machine with its temp dir under `base`. */
export const noneConfig = (base: string, options: Omit<QemuMachine.Options, "binary" | "baseTempDir"> = {}) =>
  QemuMachine.make({ binary: QEMU, baseTempDir: base, ...options }).pipe(QemuMachine.setMachine("none"))

/** Makes the private base dir of a run (short, so socket paths stay far from 107 bytes). */
export const makeBase = (): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eq-rel-"))
  fs.chmodSync(dir, 0o700)
  return dir
}

/** Records one failure line, keeping at most `max` of them. */
export const fail = (result: CaseResult, line: string, max = 30) => {
  if (result.failures.length < max) result.failures.push(line)
  else if (result.failures.length === max) result.failures.push("… (more failures not shown)")
}
