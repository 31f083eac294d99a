/**
 * `QemuMachine.restore`: the recorded config with the recorded machine type,
 * paused (`-S`) and waiting (`-incoming defer`), then `migrate-incoming`
 * from the state file. QEMU exits when the state does not load: that, a
 * failed migration and a refused machine type become `SnapshotError`
 * (`VersionMismatch` when the versions differ, else `Corrupt`), and the
 * machine is gone before the error is seen.
 */
import { Duration, Effect, Scope } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as nodePath from "node:path"
import type { LaunchFailure } from "../../Errors.js"
import { SnapshotError } from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"
import type * as SnapshotApi from "../../Snapshot.js"
import * as FdPass from "../fdpass.js"
import { launch } from "../machine/launch.js"
import * as Args from "./args.js"
import * as Manifest from "./manifest.js"
import * as Migrate from "./migrate.js"

export interface RestoreOptions {
  readonly paused?: boolean | undefined
}

export interface Incoming {
  /** The config to launch (before the machine type and `-incoming` are added). */
  readonly config: Api.Config
  /** What a snapshot of the new machine records. */
  readonly recorded: Api.Config
  readonly ignoreShared: boolean
}

const tail = (text: string, lines = 6) => text.trim().split("\n").slice(-lines).join("\n")

const readLog = (vm: Migrate.Machine) => {
  try {
    return fs.readFileSync(nodePath.join(vm.logDir, `${vm.name}.log`), "utf8")
  } catch {
    return ""
  }
}

/** `QEMU emulator version 10.0.3 (Debian ...)` → `10.0.3`, or what it printed. */
const binaryVersion = (config: Api.Config) =>
  Effect.async<string>((resume) => {
    const [command, ...rest] = [...config.wrapper, config.binary, "--version"]
    const child = cp.execFile(command!, rest, { timeout: 10_000 }, (error, stdout) => {
      const match = /version (\d+\.\d+\.\d+)/.exec(stdout)
      resume(Effect.succeed(match ? match[1]! : error ? "unknown" : stdout.trim()))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const refused = (snapshot: SnapshotApi.Snapshot, target: string, detail: string) =>
  // QEMU's image locking: the snapshot's disks are open in another QEMU (the machine it was taken of, still running).
  /Failed to get "(write|consistent read)" lock/.test(detail)
    ? new SnapshotError({
      reason: "Io",
      message: `snapshot ${snapshot.dir}: its disks are in use by another QEMU (the machine it was saved from?): ${detail}`
    })
    : snapshot.manifest.qemuVersion !== target
    ? new SnapshotError({
      reason: "VersionMismatch",
      message: `snapshot ${snapshot.dir} was saved by QEMU ${snapshot.manifest.qemuVersion} ` +
        `(${snapshot.manifest.machineType}); QEMU ${target} refuses it: ${detail}`
    })
    : new SnapshotError({ reason: "Corrupt", message: `snapshot ${snapshot.dir} does not load: ${detail}` })

const launchRecorded = (snapshot: SnapshotApi.Snapshot, incoming: Incoming) => {
  // The guest has booted already, and a machine whose reset ends it never boots again.
  const booted = Args.neverResets(incoming.config.args) ? Args.withoutDirectBoot(incoming.config) : incoming.config
  const typed = Args.withMachineType(booted, snapshot.manifest.machineType)
  // Paused after loading whatever the saved run state was: running is our call.
  const config = Args.withArgs(typed, ...(typed.args.includes("-S") ? [] : ["-S"]), "-incoming", "defer")
  return launch(config, incoming.recorded).pipe(
    Effect.catchTag("LaunchFailure", (e: LaunchFailure): Effect.Effect<never, LaunchFailure | SnapshotError> =>
      /machine type|unsupported machine|invalid machine/i.test(e.output)
        ? Effect.flatMap(binaryVersion(config), (target) => Effect.fail(refused(snapshot, target, tail(e.output))))
        : Effect.fail(e))
  )
}

const STATE_FD = "eq-state"

/**
 * Where QEMU reads the state from, without a process of its own when it can: the
 * file by name (`file:`, QEMU 8.2 and later), or passed as a descriptor (SCM_RIGHTS,
 * `getfd`, `fd:`; later QEMUs refuse a file there). Else (no native addon) `exec:cat`,
 * which forks a shell and `cat` from QEMU: a fork of a process with the guest's RAM
 * mapped, ~20 ms of a clone's start here.
 */
const stateUri = (vm: Migrate.Machine, file: string) => {
  const execCat = `exec:cat ${Manifest.shellQuote(file)}`
  // `file:` takes everything after it as the name, up to a `,offset=` option.
  if (Migrate.readsFiles(vm) && !file.includes(",offset=")) return Effect.succeed(`file:${file}`)
  if (typeof FdPass.loadFdPass() === "string") return Effect.succeed(execCat)
  return vm.sendFdScm({ path: file }).pipe(
    Effect.zipRight(vm.command("getfd", { fdname: STATE_FD })),
    Effect.as(`fd:${STATE_FD}`),
    Effect.catchIf((e) => e._tag === "QmpConnectionError" && e.reason === "Unsupported", () => Effect.succeed(execCat))
  )
}

/** Sets the guest clock from the host through the agent, in the background: a guest without one is not waited for. */
export const setGuestClock = (vm: Api.Machine) =>
  Effect.gen(function*() {
    const agent = yield* vm.guestAgent({ timeout: Duration.seconds(30) })
    const now = BigInt(Date.now()) * 1_000_000n
    yield* agent.execute("guest-set-time", { time: Number(now) })
  }).pipe(
    Effect.catchAll((e) => Effect.logDebug(`guest clock not set after restore: ${e.message}`)),
    Effect.forkScoped,
    Effect.asVoid
  )

/** QEMU for `incoming`, started paused and waiting for its state (`loadInto` gives it). */
export const launchIncoming = (
  snapshot: SnapshotApi.Snapshot,
  incoming: Incoming
): Effect.Effect<Api.Machine, LaunchFailure | SnapshotError, Scope.Scope> => launchRecorded(snapshot, incoming)

/**
 * Loads the snapshot's state into `vm` (from `launchIncoming`) and runs it unless
 * `paused`; with a recorded agent, the guest clock is then set in the background.
 * A state that does not load ends QEMU: the error says what QEMU said.
 */
export const loadInto = (
  vm: Api.Machine,
  snapshot: SnapshotApi.Snapshot,
  incoming: Incoming,
  options: RestoreOptions = {}
): Effect.Effect<Api.Machine, SnapshotError, Scope.Scope> =>
  Effect.gen(function*() {
    const target = Migrate.versionOf(vm)
    const load = Effect.gen(function*() {
      yield* Migrate.setCapabilities(vm, incoming.ignoreShared)
      yield* vm.command("migrate-incoming", { uri: yield* stateUri(vm, snapshot.stateFile) })
      const outcome = yield* Migrate.awaitEnd(vm)
      if (outcome.status !== "completed") {
        return yield* Effect.fail(refused(snapshot, target, outcome.error ?? outcome.status))
      }
      if (options.paused !== true) yield* vm.command("cont")
    }).pipe(
      Effect.catchIf(
        (e): e is Exclude<typeof e, SnapshotError> => e._tag !== "SnapshotError",
        (e) =>
          Effect.gen(function*() {
            // QEMU ends itself when the state does not load; what it said is the reason.
            yield* Effect.ignore(vm.kill)
            const log = tail(readLog(vm))
            return yield* Effect.fail(refused(snapshot, target, log || e.message))
          })
      ),
      Effect.tapError(() => Effect.ignore(vm.kill))
    )
    yield* load
    if (incoming.recorded.guestAgent && options.paused !== true) yield* setGuestClock(vm)
    return vm
  })

export const incoming = (
  snapshot: SnapshotApi.Snapshot,
  incoming: Incoming,
  options: RestoreOptions = {}
): Effect.Effect<Api.Machine, LaunchFailure | SnapshotError, Scope.Scope> =>
  Effect.flatMap(launchIncoming(snapshot, incoming), (vm) => loadInto(vm, snapshot, incoming, options))

export const restore = (
  snapshot: SnapshotApi.Snapshot,
  options: RestoreOptions = {}
): Effect.Effect<Api.Machine, LaunchFailure | SnapshotError, Scope.Scope> =>
  Effect.gen(function*() {
    // Checked again: the files may have changed since the snapshot was opened.
    const checked = yield* Manifest.open(snapshot.dir)
    const { extra, manifest } = checked
    const memory = extra.memory
    const config = memory
      ? Args.withArgs(manifest.config, ...Args.memoryArgs(nodePath.join(checked.dir, memory.file), memory.size, false))
      : manifest.config
    const recorded = memory
      ? Args.withArgs(manifest.config, ...Args.anonymousMemoryArgs(memory.size))
      : manifest.config
    return yield* incoming(checked, { config, recorded, ignoreShared: memory !== undefined }, options)
  }).pipe(Effect.withSpan("QemuMachine.restore", { captureStackTrace: false }))
