/**
 * A saved machine: device and RAM state plus `manifest.json` in a directory
 * (mode 0700), written by `vm.snapshot()` while the machine is paused and
 * brought back by `QemuMachine.restore` — in this process or another one.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { QemuMachine, Snapshot } from "effect-qemu"
 *
 * const config = QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.addArgs("-m", "256"))
 *
 * const program = Effect.gen(function*() {
 *   const vm = yield* QemuMachine.launch(config)
 *   const snap = yield* vm.snapshot({ dir: "/var/tmp/booted" })
 *   // later, elsewhere:
 *   const again = yield* Snapshot.open("/var/tmp/booted")
 *   const vm2 = yield* QemuMachine.restore(again)
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.3.0
 */
import type { Effect } from "effect"
import type { SnapshotError } from "./Errors.js"
import * as manifest_ from "./internal/snapshot/manifest.js"
import type * as QemuMachine from "./QemuMachine.js"

/**
 * @since 0.3.0
 * @category type ids
 */
export const TypeId: unique symbol = manifest_.TypeId

/**
 * @since 0.3.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * What a snapshot records about the machine it saved.
 *
 * @since 0.3.0
 * @category models
 */
export interface Manifest {
  /** The version of the QEMU that saved it, e.g. `7.2.22`. */
  readonly qemuVersion: string
  /** The machine type QEMU resolved, e.g. `pc-q35-7.2` for `q35`: a restore asks for exactly this one. */
  readonly machineType: string
  /** The machine's configuration (without what belongs to one run: name, sockets, console log, passed fds). */
  readonly config: QemuMachine.Config
  readonly createdAt: Date
  /** Bytes on disk: the state file (and a template's RAM file). */
  readonly bytes: number
}

/**
 * A complete snapshot directory.
 *
 * @since 0.3.0
 * @category models
 */
export interface Snapshot {
  readonly [TypeId]: TypeId
  readonly dir: string
  /** The device (and RAM) state, as QEMU's migration stream. */
  readonly stateFile: string
  readonly manifest: Manifest
}

/**
 * Options of `vm.snapshot`.
 *
 * @since 0.3.0
 * @category models
 */
export interface SaveOptions {
  /** Where to save (created mode 0700 when missing). Default: a new directory under the machine's `baseTempDir`, left for you to remove. */
  readonly dir?: string | undefined
  /** Leave the machine paused after saving. By default a machine that was running runs again. */
  readonly keepPaused?: boolean | undefined
}

/**
 * Opens a saved snapshot: reads its manifest and checks that its files are
 * there and whole (`SnapshotError` `Corrupt` otherwise).
 *
 * @since 0.3.0
 * @category constructors
 */
export const open: (dir: string) => Effect.Effect<Snapshot, SnapshotError> = manifest_.open

/**
 * @since 0.3.0
 * @category refinements
 */
export const isSnapshot = (u: unknown): u is Snapshot => typeof u === "object" && u !== null && TypeId in u
