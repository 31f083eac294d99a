/**
 * `vm.snapshot()`: pause, refuse early when QEMU reports migration blockers,
 * migrate the device (and RAM) state into `state.bin` through `exec:`
 * (every QEMU we support has it; 11.1 refuses an `fd:` on a regular file and
 * 7.2 has no `file:`), then write the manifest last. A failure leaves no
 * partial snapshot behind and the machine as it was.
 */
import { Clock, Effect, Option } from "effect"
import * as fs from "node:fs"
import * as nodePath from "node:path"
import { SnapshotError } from "../../Errors.js"
import type { QmpCommandError, QmpError } from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"
import type * as SnapshotApi from "../../Snapshot.js"
import * as Manifest from "./manifest.js"
import * as Migrate from "./migrate.js"

export interface SaveInternal {
  /** Leave shared RAM out of the stream (a template's RAM file is the RAM). */
  readonly ignoreShared?: boolean | undefined
  readonly memory?: Manifest.Extra["memory"]
  readonly disks?: Manifest.Extra["disks"]
}

/** `pc-q35-7.2-machine` → `pc-q35-7.2`: the QOM type of `/machine` names the resolved machine type. */
export const machineType = (vm: Migrate.Machine) =>
  Effect.map(vm.command("qom-get", { path: "/machine", property: "type" }), (type) => String(type).replace(/-machine$/, ""))

const notMigratable = (reasons: ReadonlyArray<string>) =>
  new SnapshotError({ reason: "NotMigratable", message: `QEMU cannot migrate this machine: ${reasons.join("; ")}` })

/** Makes the directory (0700) and says which files to remove if the save fails. */
const prepareDir = (dir: string | undefined, base: string) =>
  Effect.try({
    try: () => {
      if (dir === undefined) return { dir: fs.mkdtempSync(nodePath.join(base, "qemu-snapshot-")), created: true }
      const existed = fs.existsSync(dir)
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
      fs.chmodSync(dir, 0o700)
      // An old snapshot here is replaced: its manifest goes first, so it is never half old, half new.
      fs.rmSync(nodePath.join(dir, Manifest.MANIFEST), { force: true })
      return { dir, created: !existed }
    },
    catch: Manifest.ioError(`cannot create the snapshot directory ${dir ?? base}`)
  })

const removeFailed = (dir: string, created: boolean) =>
  Effect.sync(() => {
    try {
      if (created) fs.rmSync(dir, { recursive: true, force: true })
      else for (const f of [Manifest.STATE, `${Manifest.STATE}.part`]) fs.rmSync(nodePath.join(dir, f), { force: true })
    } catch {
      // Best effort: the error being reported matters more.
    }
  })

const fileSize = (file: string) => {
  try {
    return Option.some(fs.statSync(file).size)
  } catch {
    return Option.none<number>()
  }
}

/** The state file appears (renamed from `.part` by the shell) only when `cat` wrote all of it. */
const awaitStateFile = (file: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      const size = fileSize(file)
      if (Option.isSome(size)) return size.value
      yield* Effect.sleep("25 millis")
    }
    return yield* Effect.fail(
      new SnapshotError({ reason: "Io", message: `the state file ${file} was not written (a full disk?)` })
    )
  })

/** ` (the file system of DIR is full)` when it has no room left: `cat` only says the pipe broke. */
const fullHint = (dir: string): string => {
  try {
    const st = fs.statfsSync(dir)
    return st.bavail * st.bsize < 64 * 1024 ? ` (the file system of ${dir} is full)` : ""
  } catch {
    return ""
  }
}

const classifyCommandError = (e: QmpCommandError): SnapshotError => {
  const desc = e.desc
  return /blocker|disallow|cannot migrate|not migratable/i.test(desc)
    ? notMigratable([desc])
    : new SnapshotError({ reason: "Io", message: `migration refused: ${desc}`, cause: e })
}

export const save = (
  vm: Migrate.Machine,
  recorded: Api.Config,
  options: SnapshotApi.SaveOptions = {},
  internal: SaveInternal = {}
): Effect.Effect<SnapshotApi.Snapshot, SnapshotError | QmpError> =>
  Effect.gen(function*() {
    if (Option.isNone(vm.qmpClient)) return yield* Effect.fail(notMigratable(["QMP is disabled for this machine"]))
    const blocked = (yield* vm.command("query-migrate"))["blocked-reasons"] ?? []
    if (blocked.length > 0) return yield* Effect.fail(notMigratable(blocked))
    const wasRunning = (yield* vm.command("query-status")).running
    const { created, dir } = yield* prepareDir(options.dir, recorded.baseTempDir)
    const stateFile = nodePath.join(dir, Manifest.STATE)
    const body = Effect.gen(function*() {
      if (wasRunning) yield* vm.command("stop")
      yield* Migrate.setCapabilities(vm, internal.ignoreShared === true)
      const part = `${stateFile}.part`
      yield* vm.command("migrate", {
        uri: `exec:umask 077 && cat > ${Manifest.shellQuote(part)} && mv -f ${Manifest.shellQuote(part)} ${Manifest.shellQuote(stateFile)}`
      })
      const outcome = yield* Migrate.awaitEnd(vm)
      if (outcome.status !== "completed") {
        const why = outcome.error ?? outcome.status
        return yield* Effect.fail(
          /blocker/i.test(why)
            ? notMigratable([why])
            : new SnapshotError({ reason: "Io", message: `saving the machine state failed: ${why}${fullHint(dir)}` })
        )
      }
      const stateBytes = yield* awaitStateFile(stateFile)
      const [type, now] = yield* Effect.all([machineType(vm), Clock.currentTimeMillis])
      const json: Manifest.Json = {
        format: Manifest.FORMAT,
        qemuVersion: Migrate.versionOf(vm),
        machineType: type,
        config: Manifest.encodeConfig(recorded),
        createdAt: new Date(now).toISOString(),
        bytes: stateBytes + (internal.memory?.size ?? 0),
        extra: { stateBytes, memory: internal.memory, disks: internal.disks }
      }
      yield* Manifest.write(dir, json)
      return Manifest.makeSnapshot(dir, json)
    })
    return yield* body.pipe(
      Effect.catchTags({
        QmpCommandError: (e) => Effect.fail(classifyCommandError(e)!),
        QmpArgumentError: (e) => Effect.fail(new SnapshotError({ reason: "Io", message: e.message, cause: e })),
        MachineError: (e) =>
          Effect.fail(new SnapshotError({ reason: "Io", message: `saving the machine state failed: ${e.message}`, cause: e }))
      }),
      Effect.onError(() => removeFailed(dir, created)),
      // Paused for the save only: a machine that ran runs again, whatever happened.
      Effect.ensuring(
        wasRunning && options.keepPaused !== true ? Effect.ignore(vm.command("cont")) : Effect.void
      )
    )
  }).pipe(
    Effect.catchTags({
      QmpCommandError: (e) => Effect.fail(classifyCommandError(e)!),
      QmpArgumentError: (e) => Effect.fail(new SnapshotError({ reason: "Io", message: e.message, cause: e })),
      MachineError: (e) => Effect.fail(new SnapshotError({ reason: "Io", message: e.message, cause: e }))
    }),
    Effect.withSpan("QemuMachine.snapshot", { captureStackTrace: false })
  )
