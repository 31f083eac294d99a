/**
 * Everything a launch settles before QEMU starts: the temp dir (created and
 * registered for removal in one step), socket and log paths, the checks that
 * turn bad input into `LaunchFailure` `InvalidConfig` instead of a defect,
 * and the QMP listener (QEMU connects to us, so it must exist first).
 */
import type { FileSystem } from "@effect/platform"
import { Effect, Scope } from "effect"
import * as fs from "node:fs"
import * as nodePath from "node:path"
import { describeCause, LaunchFailure } from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"
import type * as QmpApi from "../../QmpClient.js"
import * as Net from "../net.js"
import * as Client from "../qmp/client.js"
import * as Config from "./config.js"

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
}

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
const removeQuietly = (path: string, recursive: boolean) =>
  Effect.sync(() => {
    try {
      fs.rmSync(path, { recursive, force: true })
    } catch {
      // Gone already, or not ours to remove.
    }
  })

export const prepare = (
  config: Api.Config,
  scope: Scope.Scope,
  fsys: FileSystem.FileSystem
): Effect.Effect<Prepared, LaunchFailure> =>
  Effect.gen(function*() {
    const name = config.name ?? `qemu-${process.pid}-${randomSuffix()}`
    // Created and registered for removal in one uninterruptible step: an interrupt in between leaked it.
    // mkdtemp creates it 0700: private to us, sockets included. Removed synchronously: the async
    // remove costs a threadpool round trip on every shutdown.
    const tempDir = yield* fsys.makeTempDirectory({ directory: config.baseTempDir, prefix: "qemu-machine-" }).pipe(
      Effect.tap((dir) => Scope.addFinalizer(scope, removeQuietly(dir, true))),
      Effect.uninterruptible,
      Effect.mapError((e) => invalidConfig(config, `cannot create a temp dir under ${config.baseTempDir}: ${e.message}`, e))
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
      if (!path.startsWith(tempDir + nodePath.sep)) yield* Scope.addFinalizer(scope, removeQuietly(path, false))
    }
    const listener = monitorAddress === undefined ? undefined : yield* Client.listen(monitorAddress).pipe(
      Scope.extend(scope),
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
      args
    }
  })
