/**
 * Everything a launch settles before QEMU starts: the temp dir (created and
 * registered for removal in one step), socket and log paths, the checks that
 * turn bad input into `LaunchFailure` `InvalidConfig` instead of a defect,
 * and the QMP listener (QEMU connects to us, so it must exist first).
 */
import { Effect, Scope } from "effect"
import * as fs from "node:fs"
import * as nodePath from "node:path"
import { describeCause, LaunchFailure } from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"
import type * as QmpApi from "../../QmpClient.js"
import * as Net from "../net.js"
import * as Proc from "../process.js"
import * as Client from "../qmp/client.js"
import * as Scoped from "../scoped.js"
import * as Config from "./config.js"
import * as Lifecycle from "./lifecycle.js"
import * as Owner from "./owner.js"

export interface Prepared {
  readonly name: string
  readonly tempDir: string
  readonly sockDir: string
  readonly logDir: string
  readonly logFile: string
  readonly consolePath: string | undefined
  readonly guestAgentPath: string | undefined
  readonly listener: QmpApi.Listener | undefined
  /** The full command line, wrapper included. */
  readonly args: ReadonlyArray<string>
  /** Gives back the descriptors reserved for launching (idempotent; also done when the scope closes). */
  readonly releaseFds: () => void
}

/**
 * Descriptors one launch holds while it waits: the listener, the accepted
 * QMP socket and the pidfd that reports QEMU's exit (posix_spawn; Node's
 * spawn needs none), plus one per console, guest agent socket and passed fd. The log
 * file and spawn's status pipe live only inside the synchronous spawn, one
 * launch at a time: they are in the slack `Proc.reserveFds` keeps.
 */
const fdsPerLaunch = (config: Api.Config) => 3 + (config.console ? 1 : 0) + (config.guestAgent ? 1 : 0) + config.fds.length

const randomSuffix = () => Math.floor(Math.random() * 0x1000000).toString(16).padStart(6, "0")

export const invalidConfig = (config: Api.Config, detail: string, cause?: unknown) =>
  new LaunchFailure({
    reason: "InvalidConfig",
    exitCode: undefined,
    signal: undefined,
    command: [...config.wrapper, config.binary],
    output: "",
    detail,
    cause
  })

/** A sync file system check as an Effect: a failure is the user's input, never a defect. */
const check = (config: Api.Config, what: string, f: () => void) =>
  Effect.try({ try: f, catch: (e) => invalidConfig(config, `${what}: ${describeCause(e)}`, e) })

const resolveMonitor = (config: Api.Config, sockDir: string, name: string): Api.Resolved["monitorAddress"] => {
  if (!config.qmp) return undefined
  if (config.monitorAddress === undefined) return nodePath.join(sockDir, `${name}-monitor.sock`)
  if (typeof config.monitorAddress === "string") return config.monitorAddress
  return { host: config.monitorAddress.host ?? "127.0.0.1", port: config.monitorAddress.port }
}

/** Removes a path, ignoring whatever goes wrong (a finalizer must not die). */
const rmQuietly = (path: string, recursive: boolean) => {
  try {
    fs.rmSync(path, { recursive, force: true })
  } catch {
    // Gone already, or not ours to remove.
  }
}

const removeQuietly = (path: string, recursive: boolean) => Effect.sync(() => rmQuietly(path, recursive))

/** Up to this many shutdowns at once, a temp dir is removed synchronously (see removeTempDir). */
const SYNC_REMOVALS = 2

/**
 * Removes the temp dir: unlink the files we know of, then rmdir, and only when
 * something else is left the recursive remove. Synchronously while few
 * machines are shutting down: a lone close then does not wait for two threadpool
 * round trips (~0.5 ms). When machines close in numbers, off the event loop:
 * on ext4 under load one rmdir takes milliseconds, and 32 of them queued on
 * the event loop delay everything else (see bench/README.md).
 */
const removeTempDir = (dir: string, files: () => ReadonlyArray<string>) =>
  Effect.suspend(() => Lifecycle.inFlight() <= SYNC_REMOVALS ? Effect.sync(() => removeTempDirSync(dir, files())) : removeTempDirAsync(dir, files()))

const removeTempDirSync = (dir: string, files: ReadonlyArray<string>) => {
  for (const file of files) {
    try {
      fs.unlinkSync(file)
    } catch {
      // Not there (never created, or removed by QEMU).
    }
  }
  try {
    fs.rmdirSync(dir)
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") rmQuietly(dir, true)
  }
}

const removeTempDirAsync = (dir: string, files: ReadonlyArray<string>) =>
  Effect.async<void>((resume) => {
    const done = () => resume(Effect.void)
    let pending = files.length
    const rmdir = () =>
      fs.rmdir(dir, (err) => (err && err.code !== "ENOENT" ? fs.rm(dir, { recursive: true, force: true }, done) : done()))
    if (pending === 0) return rmdir()
    for (const file of files) {
      fs.unlink(file, () => {
        if (--pending === 0) rmdir()
      })
    }
  })

/** What the user should read when the file system says no. */
const describeFsFailure = (e: unknown): string => {
  const code = (e as { readonly code?: unknown } | undefined)?.code
  if (code === "ENOSPC") return "the file system is full (ENOSPC)"
  if (code === "EDQUOT") return "the disk quota is exhausted (EDQUOT)"
  return describeCause(e)
}

/** `LaunchFailure` `InvalidConfig` when this launch would pass the process's descriptor limit. */
const reserveFds = (config: Api.Config, scope: Scope.Scope) =>
  Effect.suspend(() => {
    const reserved = Proc.reserveFds(fdsPerLaunch(config))
    if ("release" in reserved) return Effect.as(Scoped.addTo(scope, Effect.sync(reserved.release)), reserved.release)
    const { limit, needed, open, reserved: inFlight } = reserved
    return Effect.fail(invalidConfig(
      config,
      `too few file descriptors: ${open} open, ${inFlight} promised to launches in flight, this launch needs ${needed}, ` +
        `and the limit (RLIMIT_NOFILE, ulimit -n) is ${limit}; each running machine keeps 2-4 open. ` +
        `Raise the limit (ulimit -n) or launch fewer machines at once`
    ))
  })

export const prepare = (
  config: Api.Config,
  scope: Scope.Scope
): Effect.Effect<Prepared, LaunchFailure, Scope.Scope> =>
  Effect.gen(function*() {
    const name = config.name ?? `qemu-${process.pid}-${randomSuffix()}`
    const releaseFds = yield* reserveFds(config, scope)
    // The first launch of this process here removes what killed processes left (see owner.ts).
    const swept = Owner.sweepOnce(config.baseTempDir)
    if (swept.length > 0) {
      yield* Effect.logDebug(`removed ${swept.length} temp dir(s) of ended processes: ${swept.join(", ")}`)
    }
    // Created and registered for removal in one uninterruptible step: an interrupt in between leaked it.
    // mkdtemp creates it 0700: private to us, sockets included; its owner is recorded inside
    // (owner.ts). Synchronous: one mkdir of microseconds, against two event loop turns through
    // the threadpool on the launch's critical path.
    const tempDir = yield* Effect.try({
      try: () => {
        const dir = fs.mkdtempSync(nodePath.join(config.baseTempDir, Owner.PREFIX))
        Owner.mark(dir)
        return dir
      },
      catch: (e) => invalidConfig(config, `cannot create a temp dir under ${config.baseTempDir}: ${describeFsFailure(e)}`, e)
    }).pipe(
      Effect.tap((dir) =>
        Scoped.addTo(
          scope,
          removeTempDir(dir, () => [
            // The monitor socket is gone already: the listener unlinks it when QEMU has connected.
            nodePath.join(dir, `${name}.log`),
            nodePath.join(dir, Owner.OWNER_FILE),
            ...(config.console ? [nodePath.join(dir, `${name}-console.sock`)] : []),
            ...(config.guestAgent ? [nodePath.join(dir, `${name}-qga.sock`)] : [])
          ])
        )
      ),
      Effect.uninterruptible
    )
    const sockDir = config.sockDir ?? tempDir
    const logDir = config.logDir ?? tempDir
    const monitorAddress = resolveMonitor(config, sockDir, name)
    const consolePath = config.console ? nodePath.join(sockDir, `${name}-console.sock`) : undefined
    const guestAgentPath = config.guestAgent ? nodePath.join(sockDir, `${name}-qga.sock`) : undefined
    const unixPaths = [typeof monitorAddress === "string" ? monitorAddress : undefined, consolePath, guestAgentPath]
      .filter((p): p is string => p !== undefined)
    for (const path of unixPaths) {
      const complaint = Net.checkUnixPath(path)
      if (complaint) return yield* Effect.fail(invalidConfig(config, complaint))
    }
    for (const { fd } of config.fds) {
      if (!Number.isInteger(fd) || fd < 3) {
        return yield* Effect.fail(invalidConfig(config, `addFd: fd ${fd} must be an integer >= 3`))
      }
    }
    if (config.logDir !== undefined) {
      yield* check(config, `the log dir ${logDir} is not a writable directory`, () => fs.accessSync(logDir, fs.constants.W_OK))
    }
    if (config.consoleLog !== undefined) {
      const path = config.consoleLog
      yield* check(config, `cannot write the console log ${path}`, () => fs.closeSync(fs.openSync(path, "w", 0o600)))
    }
    // Files we create outside the temp dir are removed with the machine.
    for (const path of unixPaths) {
      if (!path.startsWith(tempDir + nodePath.sep)) yield* Scoped.addTo(scope, removeQuietly(path, false))
    }
    // In the machine's scope: `launch` runs all of this with it as the Scope.
    const listener = monitorAddress === undefined ? undefined : yield* Client.listen(monitorAddress).pipe(
      Effect.mapError((e) => invalidConfig(config, e.message, e))
    )
    const args = Config.commandLine(config, {
      monitorAddress: listener?.address as Api.Resolved["monitorAddress"],
      consolePath,
      guestAgentPath
    })
    return {
      name,
      tempDir,
      sockDir,
      logDir,
      logFile: nodePath.join(logDir, `${name}.log`),
      consolePath,
      guestAgentPath,
      listener,
      args,
      releaseFds
    }
  })
