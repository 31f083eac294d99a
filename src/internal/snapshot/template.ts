/**
 * `QemuMachine.template` and `template.clone()`. The template runs once with
 * its RAM in a file (memory-backend-file, share=on), is prepared, and saved
 * with `x-ignore-shared`: the state file holds only device state. A clone
 * maps that RAM file privately (share=off, copy-on-write), loads the device
 * state and runs. Disks declared with `addDisk` get a qcow2 overlay in the
 * template (frozen when it is saved) and one more per clone. The template's
 * files live as long as its scope and its last clone; with a `cacheDir`
 * they stay for later processes, held while in use and pruned (`cache.ts`).
 */
import { Duration, Effect, Exit, Option, Scope } from "effect"
import * as cp from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as nodePath from "node:path"
import type { LaunchFailure } from "../../Errors.js"
import { SnapshotError } from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"
import type * as SnapshotApi from "../../Snapshot.js"
import { launch } from "../machine/launch.js"
import * as Args from "./args.js"
import * as Cache from "./cache.js"
import * as Manifest from "./manifest.js"
import * as Restore from "./restore.js"
import * as Save from "./save.js"
import * as Spares from "./spares.js"

const RAM = "ram"
const diskFile = (disk: Api.Disk) => `disk-${disk.id}.qcow2`

const sibling = (binary: string, name: string) => (binary.includes("/") ? nodePath.join(nodePath.dirname(binary), name) : name)

/** `qemu-img create -f qcow2 -b BASE -F FORMAT FILE`: a copy-on-write overlay. */
export const overlay = (config: Api.Config, base: string, format: string, file: string) =>
  Effect.async<void, SnapshotError>((resume) => {
    const args = ["create", "-q", "-f", "qcow2", "-b", nodePath.resolve(base), "-F", format, file]
    const child = cp.execFile(sibling(config.binary, "qemu-img"), args, { timeout: 60_000 }, (error, _stdout, stderr) =>
      resume(
        error
          ? Effect.fail(
            new SnapshotError({ reason: "Io", message: `cannot create an overlay over ${base}: ${stderr.trim() || error.message}`, cause: error })
          )
          : Effect.void
      ))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const removeDir = (dir: string) =>
  Effect.sync(() => {
    try {
      fs.rmSync(dir, { recursive: true, force: true })
    } catch {
      // Nothing to do in a finalizer.
    }
  })

/** A private directory, created and registered for removal in one uninterruptible step. */
const scopedDir = (base: string, prefix: string) =>
  Effect.acquireRelease(
    Effect.try({
      try: () => fs.mkdtempSync(nodePath.join(base, prefix)),
      catch: Manifest.ioError(`cannot create a directory under ${base}`)
    }),
    removeDir
  )

/** RAM files belong in memory: /dev/shm when there is one. */
const ramBase = (config: Api.Config): string => {
  try {
    fs.accessSync("/dev/shm", fs.constants.W_OK)
    return "/dev/shm"
  } catch {
    return config.baseTempDir
  }
}

const binaryVersion = (config: Api.Config) =>
  Effect.async<string>((resume) => {
    const [command, ...rest] = [...config.wrapper, config.binary, "--version"]
    const child = cp.execFile(command!, rest, { timeout: 10_000 }, (_error, stdout) => resume(Effect.succeed(stdout.trim())))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const toIo = (e: { readonly message: string }) =>
  Effect.fail(new SnapshotError({ reason: "Io", message: `saving the template failed: ${e.message}`, cause: e }))

export interface TemplateOptions<E, R> {
  readonly prepare?: ((vm: Api.Machine) => Effect.Effect<unknown, E, R>) | undefined
  readonly cacheDir?: string | undefined
  readonly cacheMaxAge?: Duration.DurationInput | undefined
  readonly cacheMaxEntries?: number | undefined
  readonly spares?: number | undefined
}

/** Runs the template machine, prepares and saves it into `dir`, then shuts it down. */
const build = <E, R>(config: Api.Config, dir: string, prepare: TemplateOptions<E, R>["prepare"]) =>
  Effect.gen(function*() {
    const size = Args.memorySize(config.args)
    const frozen: Record<string, string> = {}
    const disks: Array<Api.Disk> = []
    for (const disk of config.disks ?? []) {
      if (disk.readOnly) {
        disks.push(disk)
        continue
      }
      yield* overlay(config, disk.path, disk.format, nodePath.join(dir, diskFile(disk)))
      frozen[disk.id] = diskFile(disk)
      disks.push({ ...disk, path: nodePath.join(dir, diskFile(disk)), format: "qcow2" })
    }
    const running = Args.withArgs(Args.withDisks(config, disks), ...Args.memoryArgs(nodePath.join(dir, RAM), size, true))
    const scope = yield* Scope.make()
    return yield* Effect.gen(function*() {
      const vm = yield* launch(running, config).pipe(Scope.extend(scope))
      if (prepare) yield* prepare(vm)
      return yield* Save.save(vm, config, { dir, keepPaused: true }, {
        ignoreShared: true,
        memory: { file: RAM, size },
        disks: frozen
      }).pipe(
        Effect.catchTags({
          QmpConnectionError: toIo,
          QmpProtocolError: toIo,
          QmpTimeoutError: toIo
        })
      )
    }).pipe(Effect.ensuring(Scope.close(scope, Exit.void)))
  })

/** This process's hold on a cached entry (its `.holder-*` file), kept from `template` to the last clone. */
interface Hold {
  current: string | undefined
}

/**
 * The cache entry for `config`: opened when a whole one is there, else built
 * beside it and renamed into place, so another process sees a whole template
 * or none. `hold` ends up holding the entry used.
 */
const fromCache = <E, R>(config: Api.Config, cacheDir: string, prepare: TemplateOptions<E, R>["prepare"], hold: Hold) =>
  Effect.gen(function*() {
    const version = yield* binaryVersion(config)
    const key = crypto.createHash("sha256").update(JSON.stringify(Manifest.encodeConfig(config))).update(version)
      .digest("hex").slice(0, 20)
    const dir = nodePath.join(cacheDir, `template-${key}`)
    // Held before it is opened: a pruner that renames it aside meanwhile sees the holder and puts it back.
    const held = yield* Effect.uninterruptible(Effect.sync(() => (hold.current = Cache.hold(dir))))
    if (held !== undefined) {
      const cached = yield* Effect.option(Manifest.open(dir))
      if (cached._tag === "Some") return cached.value
      Cache.release(held)
      hold.current = undefined
    }
    yield* Effect.try({
      try: () => fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 }),
      catch: Manifest.ioError(`cannot create ${cacheDir}`)
    })
    return yield* Effect.scoped(Effect.gen(function*() {
      const building = yield* scopedDir(cacheDir, `.template-${key}-`)
      // A live builder's directory is never taken for a crashed save's.
      const mine = Cache.hold(building)
      yield* build(config, building, prepare)
      Cache.touch(building, Cache.wallClock())
      /** Renames the built entry into place; our holder moves in with it. */
      const moveIn = () => {
        try {
          fs.renameSync(building, dir)
        } catch {
          return false
        }
        if (mine !== undefined) hold.current = nodePath.join(dir, nodePath.basename(mine))
        return true
      }
      yield* Effect.uninterruptible(Effect.gen(function*() {
        if (moveIn()) return
        // Another process won the race (use its template), unless what is there is broken and no one holds it.
        if (Exit.isFailure(yield* Effect.exit(Manifest.open(dir)))) {
          Cache.remove(cacheDir, nodePath.basename(dir), Cache.wallClock(), Duration.toMillis(Cache.GRACE))
          if (moveIn()) return
        }
        hold.current = Cache.hold(dir)
      }))
      return yield* Manifest.open(dir)
    }))
  })

/** Marks `snapshot`'s entry used now and prunes the rest of `cacheDir`. */
const pruneAround = (cacheDir: string, snapshot: SnapshotApi.Snapshot, options: TemplateOptions<unknown, unknown>) =>
  Effect.suspend(() => {
    const now = Cache.wallClock()
    Cache.touch(snapshot.dir, now)
    const pruned = Cache.prune(cacheDir, {
      ...Cache.limits(options),
      now,
      keep: nodePath.basename(snapshot.dir),
      qemuVersion: snapshot.manifest.qemuVersion
    })
    return pruned.length === 0 ? Effect.void : Effect.logDebug(
      `pruned ${pruned.map((p) => `${p.name} (${p.why})`).join(", ")}`
    ).pipe(Effect.annotateLogs("cacheDir", cacheDir))
  })

export const template = <E = never, R = never>(
  config: Api.Config,
  options: TemplateOptions<E, R> = {}
): Effect.Effect<Api.Template, LaunchFailure | SnapshotError | E, Scope.Scope | R> =>
  Effect.gen(function*() {
    const writable = Args.writableDisks(config.args)
    if (writable.length > 0) {
      return yield* Effect.fail(
        new SnapshotError({
          reason: "WritableDisk",
          message: `a template shares its disks with every clone, so it cannot open them writable: ${writable.join("; ")} ` +
            `(use QemuMachine.addDisk, or readonly=on)`
        })
      )
    }
    let clones = 0
    let closed = false
    let owned: string | undefined
    // Pruning elsewhere leaves a held entry alone until the last clone is done.
    const hold: Hold = { current: undefined }
    const releaseIfDone = Effect.suspend(() => {
      if (!closed || clones > 0) return Effect.void
      if (hold.current !== undefined) Cache.release(hold.current)
      hold.current = undefined
      return owned ? removeDir(owned) : Effect.void
    })
    yield* Effect.addFinalizer(() => Effect.suspend(() => ((closed = true), releaseIfDone)))

    const snapshot = yield* Effect.gen(function*() {
      if (options.cacheDir === undefined) {
        const dir = yield* Effect.uninterruptible(Effect.tap(
          Effect.try({
            // the process id in the name: whose template it is, for leak checks and for people
            try: () => fs.mkdtempSync(nodePath.join(ramBase(config), `qemu-template-${process.pid}-`)),
            catch: Manifest.ioError(`cannot create a template directory`)
          }),
          (d) => Effect.sync(() => (owned = d))
        ))
        return yield* build(config, dir, options.prepare)
      }
      return yield* fromCache(config, options.cacheDir, options.prepare, hold)
    })
    if (options.cacheDir !== undefined) yield* pruneAround(options.cacheDir, snapshot, options)
    const { extra } = Manifest.internal(snapshot)
    const ram = nodePath.join(snapshot.dir, extra.memory?.file ?? RAM)
    const size = extra.memory?.size ?? Args.memorySize(config.args)

    const cloning = Effect.acquireRelease(
      Effect.suspend(() =>
        closed
          ? Effect.fail(new SnapshotError({ reason: "Io", message: "the template's scope is closed" }))
          : Effect.sync(() => void clones++)
      ),
      () => Effect.suspend(() => (clones--, releaseIfDone))
    )

    /** A clone's QEMU with its own overlays, started and waiting for the state (in the current scope). */
    const started = Effect.gen(function*() {
      yield* cloning
      const disks: Array<Api.Disk> = []
      const own = (config.disks ?? []).some((d) => !d.readOnly)
        ? yield* scopedDir(config.baseTempDir, "qemu-clone-")
        : undefined
      for (const disk of config.disks ?? []) {
        const frozen = extra.disks?.[disk.id]
        if (disk.readOnly || frozen === undefined || own === undefined) {
          disks.push(disk)
          continue
        }
        const file = nodePath.join(own, diskFile(disk))
        yield* overlay(config, nodePath.join(snapshot.dir, frozen), "qcow2", file)
        disks.push({ ...disk, path: file, format: "qcow2" })
      }
      const incoming: Restore.Incoming = {
        config: Args.withArgs(Args.withDisks(config, disks), ...Args.memoryArgs(ram, size, false)),
        // Its own overlays: a snapshot of the clone must never open the template's base disks writable.
        recorded: Args.withArgs(Args.withDisks(config, disks), ...Args.anonymousMemoryArgs(size)),
        ignoreShared: true
      }
      return { vm: yield* Restore.launchIncoming(snapshot, incoming), incoming }
    })
    const spares = yield* Spares.make(options.spares ?? 0, started)

    const clone = (cloneOptions: Api.RestoreOptions = {}) =>
      Effect.gen(function*() {
        const spare = yield* spares.take
        // A spare whose QEMU died while it waited (killed from outside) is closed with the caller's scope.
        const ready = Option.isSome(spare) && (yield* spare.value.vm.isRunning) ? spare.value : yield* started
        if (hold.current !== undefined) Cache.touch(snapshot.dir, Cache.wallClock())
        return yield* Restore.loadInto(ready.vm, snapshot, ready.incoming, cloneOptions).pipe(Effect.ensuring(spares.refill))
      }).pipe(Effect.withSpan("QemuMachine.clone", { captureStackTrace: false }))

    return { dir: snapshot.dir, snapshot, clone } satisfies Api.Template
  }).pipe(Effect.withSpan("QemuMachine.template", { captureStackTrace: false }))

