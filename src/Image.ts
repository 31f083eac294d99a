/**
 * Disk images through `qemu-img` (taken from `PATH`): typed `info` (the
 * generated `Qapi.ImageInfo`, backing chain included), `create`, scoped
 * copy-on-write `overlay`s, `convert`, `resize`, `check` and internal
 * snapshots. Every failure is an `ImageError` carrying `qemu-img`'s exit code
 * and standard error: a missing file, a wrong format, an image a running QEMU
 * holds (its lock), a bad size.
 *
 * Runs go through `@effect/platform`'s `Command` with Node's executor provided
 * inside, so callers need no extra layer.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Image } from "effect-qemu"
 *
 * const program = Effect.gen(function*() {
 *   yield* Image.create({ path: "/tmp/base.qcow2", format: "qcow2", size: 1024 ** 3 })
 *   const disk = yield* Image.overlay("/tmp/base.qcow2")   // removed when the scope closes
 *   const info = yield* Image.info(disk)
 *   info["backing-image"]?.filename                          // "/tmp/base.qcow2"
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.3.0
 */
import type { Effect, Scope } from "effect"
import type { ImageError } from "./Errors.js"
import * as internal from "./internal/image/ops.js"
import type * as Qapi from "./Qapi.js"

/**
 * The formats `create`, `convert` and `overlay` write.
 *
 * @since 0.3.0
 * @category models
 */
export type Format = "qcow2" | "raw"

/**
 * A backing file: its path (format read from the file) or path and format.
 *
 * @since 0.3.0
 * @category models
 */
export type Backing = string | { readonly path: string; readonly format?: Format | undefined }

/**
 * @since 0.3.0
 * @category models
 */
export interface InfoOptions {
  /**
   * Read an image a running QEMU holds (`qemu-img -U`): without it such an
   * image fails with `ImageError` ("Failed to get shared lock"). What is read
   * may be stale while the guest writes.
   */
  readonly forceShare?: boolean | undefined
}

/**
 * @since 0.3.0
 * @category models
 */
export interface CreateOptions {
  readonly path: string
  readonly format: Format
  /** Virtual size in bytes; with a `backing` file it defaults to the backing file's. */
  readonly size?: number | undefined
  /** Copy-on-write over this file (qcow2 only); stored as an absolute path. */
  readonly backing?: Backing | undefined
}

/**
 * @since 0.3.0
 * @category models
 */
export interface OverlayOptions {
  /** Where to put the overlay; default: a fresh private directory under the OS temp dir. */
  readonly dir?: string | undefined
  /** The base's format when known (otherwise read from the file). */
  readonly baseFormat?: Format | undefined
}

/**
 * @since 0.3.0
 * @category models
 */
export interface ConvertOptions {
  readonly from: string
  readonly to: string
  readonly format: Format
  /** The source's format; default: probed by `qemu-img`. */
  readonly fromFormat?: string | undefined
}

/**
 * @since 0.3.0
 * @category models
 */
export interface ResizeOptions {
  /** Allow making the image smaller (data past the new end is lost). */
  readonly shrink?: boolean | undefined
}

/**
 * @since 0.3.0
 * @category models
 */
export interface CheckOptions {
  /** Repair what is found: leaks only, or everything. */
  readonly repair?: "leaks" | "all" | undefined
}

/**
 * What `qemu-img check --output=json` reports (QAPI's `ImageCheck`, which is
 * not in QMP's introspection). Corruptions and leaks are reported, not
 * failed: judge `corruptions`/`leaks`/`check-errors` yourself.
 *
 * @since 0.3.0
 * @category models
 */
export interface CheckResult {
  readonly filename: string
  readonly format: string
  readonly "check-errors": number
  readonly "image-end-offset"?: number | undefined
  readonly corruptions?: number | undefined
  readonly leaks?: number | undefined
  readonly "corruptions-fixed"?: number | undefined
  readonly "leaks-fixed"?: number | undefined
  readonly "total-clusters"?: number | undefined
  readonly "allocated-clusters"?: number | undefined
  readonly "fragmented-clusters"?: number | undefined
  readonly "compressed-clusters"?: number | undefined
}

/**
 * `qemu-img info --output=json --backing-chain`, decoded with the generated
 * `ImageInfo` Schema; each backing file is nested in `backing-image`.
 *
 * @since 0.3.0
 * @category getters
 */
export const info: (path: string, options?: InfoOptions) => Effect.Effect<Qapi.ImageInfo, ImageError> = internal.info

/**
 * The backing chain as a list, the image first and its last backing file last.
 *
 * @since 0.3.0
 * @category getters
 */
export const chain: (path: string, options?: InfoOptions) => Effect.Effect<ReadonlyArray<Qapi.ImageInfo>, ImageError> =
  internal.chain

/**
 * Creates an image of `size` bytes, or a qcow2 over a `backing` file (its
 * format recorded, as current `qemu-img` requires).
 *
 * @since 0.3.0
 * @category constructors
 */
export const create: (options: CreateOptions) => Effect.Effect<void, ImageError> = internal.create

/**
 * A qcow2 overlay over `base` (which is never written), removed when the
 * scope closes. Returns its path.
 *
 * @since 0.3.0
 * @category constructors
 */
export const overlay: (base: string, options?: OverlayOptions) => Effect.Effect<string, ImageError, Scope.Scope> =
  internal.overlay

/**
 * Copies an image into another format (a qcow2 chain is flattened).
 *
 * @since 0.3.0
 * @category combinators
 */
export const convert: (options: ConvertOptions) => Effect.Effect<void, ImageError> = internal.convert

/**
 * Sets the virtual size in bytes; shrinking needs `shrink: true`.
 *
 * @since 0.3.0
 * @category combinators
 */
export const resize: (path: string, size: number, options?: ResizeOptions) => Effect.Effect<void, ImageError> =
  internal.resize

/**
 * Checks a qcow2 image's consistency (`qemu-img check`).
 *
 * @since 0.3.0
 * @category getters
 */
export const check: (path: string, options?: CheckOptions) => Effect.Effect<CheckResult, ImageError> = internal.check

/**
 * Internal (qcow2) snapshots of an image that no QEMU holds.
 *
 * @since 0.3.0
 * @category combinators
 */
export const snapshots: {
  /** The image's internal snapshots, oldest first. */
  readonly list: (path: string) => Effect.Effect<ReadonlyArray<Qapi.SnapshotInfo>, ImageError>
  /** Records the disk's current contents under `name`. */
  readonly create: (path: string, name: string) => Effect.Effect<void, ImageError>
  /** Reverts the disk to snapshot `name` (the snapshot is kept). */
  readonly apply: (path: string, name: string) => Effect.Effect<void, ImageError>
  /** Deletes snapshot `name`. */
  readonly remove: (path: string, name: string) => Effect.Effect<void, ImageError>
} = internal.snapshots
