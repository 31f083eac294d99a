/**
 * Child processes over `node:child_process`, shaped for QEMU: stdin closed,
 * stdout and stderr sent to one log file, extra descriptors inherited at
 * chosen numbers, exit reported with the signal when there was one, and the
 * child tied to our lifetime (SIGKILL on parent death, through our static
 * `effect-qemu-exec` helper or `setpriv --pdeathsig`) so that even a crashed
 * Node process leaves no QEMU behind.
 */
import { Deferred, Duration, Effect, Exit, FiberId, Option, Scope } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as os from "node:os"
import { findBuilt } from "./native.js"
import * as Scoped from "./scoped.js"

export interface ExitInfo {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** An exit code in the seed's convention: negative signal number on a signal death. */
export const exitCodeOf = (info: ExitInfo): number =>
  info.signal !== null ? -(os.constants.signals[info.signal] ?? 0) : info.code ?? 0

export interface SpawnOptions {
  /** Where stdout and stderr go; opened for writing, truncated. */
  readonly logFile?: string | undefined
  /** Descriptors of ours that the child inherits, at the given numbers (> 2). */
  readonly passFds?: ReadonlyArray<{ readonly fd: number; readonly target: number }> | undefined
  /** Kill the child when this process dies (needs the built helper or `setpriv`, skipped when neither exists). */
  readonly dieWithParent?: boolean | undefined
  readonly env?: NodeJS.ProcessEnv | undefined
}

export interface Child {
  readonly pid: number
  /** Completes when the process has exited (and been reaped). */
  readonly exited: Effect.Effect<ExitInfo>
  /** The exit, if it has happened. */
  readonly exitInfo: () => ExitInfo | undefined
  /** Calls `f` when the process exits (at once if it has); returns the unsubscribe. */
  readonly onExit: (f: (info: ExitInfo) => void) => () => void
  /** Sends a signal; false when the process was already gone. */
  readonly signal: (signal: NodeJS.Signals) => boolean
  /** Signals we sent ourselves, so foreign deaths can be told apart. */
  readonly sentSignals: ReadonlySet<NodeJS.Signals>
}

export class SpawnError {
  readonly _tag = "SpawnError"
  constructor(
    readonly cause: Error,
    readonly command: ReadonlyArray<string>,
    /** `log`: the log file could not be opened (the user's file system, not the program). */
    readonly phase: "log" | "spawn" = "spawn"
  ) {}
  get message() {
    return this.phase === "log"
      ? `cannot open the log file: ${this.cause.message}`
      : `cannot run ${this.command[0]}: ${this.cause.message}`
  }
}

/** The soft `RLIMIT_NOFILE` (`ulimit -n`) of this process, from /proc; undefined where there is no /proc. */
export const fdLimit = (): number | undefined => {
  try {
    const line = fs.readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max open files"))
    const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0]
    return soft === undefined || soft === "unlimited" ? undefined : Number(soft)
  } catch {
    return undefined
  }
}

/** Descriptors open in this process now (Node has no getrlimit/getdtablesize); undefined without /proc. */
export const openFds = (): number | undefined => {
  try {
    // The directory's own descriptor is in the listing while it is read.
    return fs.readdirSync("/proc/self/fd").length - 1
  } catch {
    return undefined
  }
}

/**
 * Descriptors promised to launches in flight: a launch holds a few at once
 * (listener, log file, spawn's status pipe, the accepted socket) and many
 * launches start together, so counting what is open now is not enough.
 * Process-wide on purpose: the limit it guards is process-wide too.
 */
let reservedFds = 0

/** Kept free besides the reservations: spawn's transient log fd and status pipe, and room for the rest of the program. */
const FD_SLACK = 8

export interface FdShortage {
  readonly open: number
  readonly reserved: number
  readonly needed: number
  readonly limit: number
}

/**
 * Reserves `needed` descriptors until `release` (idempotent) is called, or
 * reports the shortage when `open + reserved + needed` (plus a small slack)
 * would pass the limit.
 * Without /proc the check is skipped.
 */
export const reserveFds = (needed: number): { readonly release: () => void } | FdShortage => {
  let { fresh, limit, open } = fdReading(needed)
  if (!fresh && limit !== undefined && open !== undefined && open + reservedFds + needed + FD_SLACK > limit) {
    // A shortage is only ever reported from a fresh look.
    ;({ limit, open } = readFds())
  }
  if (limit !== undefined && open !== undefined && open + reservedFds + needed + FD_SLACK > limit) {
    return { open, reserved: reservedFds, needed, limit }
  }
  reservedFds += needed
  let held = true
  return {
    release: () => {
      if (!held) return
      held = false
      reservedFds -= needed
      // Released because the launch now holds them open (or gave them back): count them
      // as open until the next look at /proc.
      reading.since += needed
    }
  }
}

/**
 * The last look at /proc (a directory listing and a file read: a tenth of a millisecond
 * on every launch), and what was released since. Reused for up to a second while the
 * process stays well under its limit; the estimate only ever counts too many.
 */
const reading = { open: undefined as number | undefined, limit: undefined as number | undefined, at: -Infinity, since: 0 }
const READING_TTL_MS = 1_000

const readFds = () => {
  reading.limit = fdLimit()
  reading.open = reading.limit === undefined ? undefined : openFds()
  reading.at = performance.now()
  reading.since = 0
  return { fresh: true, limit: reading.limit, open: reading.open }
}

/** The reading to decide on: the last one plus what was released since, or a fresh one when old or near the limit. */
const fdReading = (needed: number) => {
  const { limit } = reading
  const open = reading.open === undefined ? undefined : reading.open + reading.since
  const near = limit !== undefined && open !== undefined && (open + reservedFds + needed + FD_SLACK) * 4 > limit * 3
  if (performance.now() - reading.at > READING_TTL_MS || near) return readFds()
  return { fresh: false, limit, open }
}

let dieWithParent: Option.Option<ReadonlyArray<string>> | undefined

/**
 * The command prefix that makes a child die with this process: our static
 * `effect-qemu-exec` helper when it was built, else util-linux's `setpriv
 * --pdeathsig KILL`, else nothing. Looked up once per process.
 */
export const dieWithParentPrefix = (): Option.Option<ReadonlyArray<string>> => {
  if (dieWithParent === undefined) {
    const helper = findBuilt("effect-qemu-exec")
    dieWithParent = helper !== undefined
      ? Option.some([helper, String(process.pid)])
      : Option.map(findOnPath("setpriv"), (setpriv) => [setpriv, "--pdeathsig", "KILL", "--"])
  }
  return dieWithParent
}

const findOnPath = (program: string): Option.Option<string> => {
  for (const dir of (process.env.PATH ?? "/usr/bin:/bin").split(":").concat(["/usr/bin", "/bin"])) {
    const candidate = `${dir}/${program}`
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      return Option.some(candidate)
    } catch {
      // keep looking
    }
  }
  return Option.none()
}

/**
 * Spawns `command` and returns once the OS has created the process (or fails
 * with the spawn error, e.g. ENOENT). The scope's finalizer SIGKILLs the child
 * if it still runs and waits for it to be reaped.
 */
export const spawn = (
  command: ReadonlyArray<string>,
  options: SpawnOptions = {}
): Effect.Effect<Child, SpawnError, Scope.Scope> =>
  Scoped.acquireRelease(
    Effect.async<Child, SpawnError>((resume) => {
      const [file, ...args] = command
      const passFds = options.passFds ?? []
      const stdio: Array<"ignore" | number> = ["ignore", "ignore", "ignore"]
      let logFd: number | undefined
      try {
        if (options.logFile !== undefined) {
          logFd = fs.openSync(options.logFile, "w", 0o600)
          stdio[1] = logFd
          stdio[2] = logFd
        }
      } catch (e) {
        return resume(Effect.fail(new SpawnError(e as Error, command, "log")))
      }
      for (const { fd, target } of passFds) {
        while (stdio.length <= target) stdio.push("ignore")
        stdio[target] = fd
      }
      const prefix = options.dieWithParent ? dieWithParentPrefix() : Option.none()
      // Behind the prefix a missing program is an exit 127, not a spawn error: look first.
      const missing = Option.isSome(prefix) ? checkExecutable(file!, options.env ?? process.env) : undefined
      if (missing) {
        if (logFd !== undefined) fs.closeSync(logFd)
        return resume(Effect.fail(new SpawnError(missing, command)))
      }
      const argv = Option.isSome(prefix) ? [...prefix.value, file!, ...args] : [file!, ...args]
      const env = options.env ?? process.env
      const native = passFds.length === 0 ? loadSpawn() : undefined
      if (native !== undefined) {
        const tracked = track()
        let pid: number
        try {
          pid = native.spawn(argv[0]!, argv, envStrings(env), logFd ?? -1, (code, signo) =>
            tracked.exited({ code, signal: code === null ? signalName(signo) : null }))
        } catch (e) {
          return resume(Effect.fail(new SpawnError(e as Error, command)))
        } finally {
          if (logFd !== undefined) fs.closeSync(logFd)
        }
        return resume(Effect.succeed(tracked.child(pid, (signal) => process.kill(pid, signal))))
      }
      let child: cp.ChildProcess
      try {
        // Its own process group, signalled as a whole: a wrapper's children (`sh -c`, which
        // forks) die with it, and a terminal's Ctrl-C reaches us, not QEMU behind our back.
        child = cp.spawn(argv[0]!, argv.slice(1), { stdio, env, detached: true })
      } catch (e) {
        if (logFd !== undefined) fs.closeSync(logFd)
        return resume(Effect.fail(new SpawnError(e as Error, command)))
      }
      if (logFd !== undefined) fs.closeSync(logFd)

      const tracked = track()
      child.on("exit", (code, signal) => tracked.exited({ code, signal }))
      child.on("error", (err) => {
        if (child.pid === undefined) resume(Effect.fail(new SpawnError(err, command)))
      })
      if (child.pid === undefined) return // the 'error' event reports why
      const pid = child.pid
      resume(Effect.succeed(tracked.child(pid, (signal) => child.kill(signal))))
    }),
    (child) =>
      Effect.suspend(() => {
        if (child.exitInfo()) return Effect.void
        child.signal("SIGKILL")
        // SIGKILL cannot be ignored; the bound only guards against a D-state process.
        return Effect.ignore(Effect.timeout(child.exited, Duration.seconds(10)))
      })
  )

/** A child's exit bookkeeping, shared by both ways of starting it. */
const track = () => {
  const exitDeferred = Deferred.unsafeMake<ExitInfo>(FiberId.none)
  let exit: ExitInfo | undefined
  const sent = new Set<NodeJS.Signals>()
  const exitListeners = new Set<(info: ExitInfo) => void>()
  return {
    exited: (info: ExitInfo) => {
      exit = info
      Deferred.unsafeDone(exitDeferred, Exit.succeed(info))
      for (const f of exitListeners) f(info)
      exitListeners.clear()
    },
    /** `killOne`: signals the process alone, when its group cannot be signalled. */
    child: (pid: number, killOne: (signal: NodeJS.Signals) => boolean): Child => ({
      pid,
      exited: Deferred.await(exitDeferred),
      exitInfo: () => exit,
      onExit: (f) => {
        if (exit) {
          f(exit)
          return () => {}
        }
        exitListeners.add(f)
        return () => exitListeners.delete(f)
      },
      sentSignals: sent,
      signal: (signal) => {
        if (exit) return false
        sent.add(signal)
        // Its own process group, signalled as a whole: a wrapper's children die with it.
        try {
          process.kill(-pid, signal)
          return true
        } catch {
          try {
            return killOne(signal)
          } catch {
            return false
          }
        }
      }
    })
  }
}

interface SpawnBinding {
  readonly spawn: (
    file: string,
    argv: ReadonlyArray<string>,
    env: ReadonlyArray<string>,
    outFd: number,
    onExit: (code: number | null, signal: number | null) => void
  ) => number
  readonly supported: () => boolean
}

let spawnBinding: SpawnBinding | null | undefined

/**
 * The posix_spawn addon (native/spawn.cc) when it is built and the kernel has
 * pidfds, else undefined (Node's fork-based spawn is used). EFFECT_QEMU_NODE_SPAWN=1
 * forces Node's.
 */
const loadSpawn = (): SpawnBinding | undefined => {
  if (spawnBinding === undefined) {
    spawnBinding = null
    const path = process.platform === "linux" && process.env.EFFECT_QEMU_NODE_SPAWN !== "1"
      ? findBuilt("spawn.node")
      : undefined
    if (path !== undefined) {
      try {
        const mod = createRequire(import.meta.url)(path) as SpawnBinding
        if (typeof mod.spawn === "function" && mod.supported()) spawnBinding = mod
      } catch {
        // Not loadable here (another architecture's build): Node's spawn it is.
      }
    }
  }
  return spawnBinding ?? undefined
}

/** Whether spawns go through the posix_spawn addon (tests). */
export const spawnsNatively = (): boolean => loadSpawn() !== undefined

/** Tests: Node's spawn from now on (false), or the addon again when it is there (true). */
export const useNativeSpawn = (enabled: boolean): void => {
  spawnBinding = enabled ? undefined : null
}

const envStrings = (env: NodeJS.ProcessEnv): Array<string> => {
  const out: Array<string> = []
  for (const key in env) {
    const value = env[key]
    if (value !== undefined) out.push(`${key}=${value}`)
  }
  return out
}

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(os.constants.signals).map(([name, n]) => [n, name as NodeJS.Signals])
)
/** The name of a signal number (`9` → `"SIGKILL"`), null when unknown. */
export const signalName = (signo: number | null): NodeJS.Signals | null =>
  signo === null ? null : signalNames.get(signo) ?? null

/** A signal for a message: its name, or `signal N` for a number Node does not name. */
export const describeSignal = (signo: number): string => signalName(signo) ?? `signal ${signo}`

// Programs found executable before, by PATH: a launch loop should not stat PATH each time.
// A program removed later shows up as an early exit 127 with the helper's message.
const executables = new Set<string>()

const checkExecutable = (file: string, env: NodeJS.ProcessEnv): Error | undefined => {
  const key = `${env.PATH ?? ""}\0${file}`
  if (executables.has(key)) return undefined
  const missing = findExecutable(file, env)
  if (missing === undefined) executables.add(key)
  return missing
}

/** Why `execvp(file)` would fail with ENOENT/EACCES, as Node's spawn error would say it; undefined when it would not. */
const findExecutable = (file: string, env: NodeJS.ProcessEnv): Error | undefined => {
  const candidates = file.includes("/")
    ? [file]
    : (env.PATH ?? "/usr/local/bin:/usr/bin:/bin").split(":").map((dir) => `${dir || "."}/${file}`)
  let code: "ENOENT" | "EACCES" = "ENOENT"
  for (const candidate of candidates) {
    try {
      if (!fs.statSync(candidate).isFile()) continue
      fs.accessSync(candidate, fs.constants.X_OK)
      return undefined
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EACCES") code = "EACCES"
    }
  }
  return Object.assign(new Error(`spawn ${file} ${code}`), { code, errno: code === "ENOENT" ? -2 : -13, syscall: `spawn ${file}`, path: file })
}

/**
 * The start time of a running process (field 22 of /proc/PID/stat: clock ticks after boot, which
 * tells a reused pid apart), or `undefined` when there is none. An exited but unreaped process
 * (zombie) counts as gone.
 */
export const startTime = (pid: number): string | undefined => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    // The name in parentheses may hold spaces and parentheses: count from the last ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return fields[0] === "Z" || fields[0] === "X" ? undefined : fields[19]
  } catch {
    return undefined
  }
}

/** Is the process running? An exited but unreaped process (zombie) counts as gone. */
export const isAlive = (pid: number): boolean => startTime(pid) !== undefined
