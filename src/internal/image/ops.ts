/**
 * The `Image` operations: argument checks, `qemu-img` command lines and the
 * decoding of its JSON output.
 */
import { Effect, ParseResult, Schema, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import { ImageError } from "../../Errors.js"
import type * as Api from "../../Image.js"
import * as Qapi from "../../Qapi.js"
import { refuse, run } from "./run.js"

const ImageInfoSchema = Qapi.schema("ImageInfo")

const decodeJson = <A>(operation: string, schema: Schema.Schema<A>, text: string): Effect.Effect<A, ImageError> =>
  Schema.decodeUnknown(Schema.parseJson(schema))(text).pipe(
    Effect.mapError((cause) =>
      new ImageError({
        operation,
        exitCode: 0,
        stderr: `unexpected qemu-img output: ${ParseResult.TreeFormatter.formatErrorSync(cause)}`,
        cause
      })
    )
  )

const checkPath = (operation: string, path: string): Effect.Effect<void, ImageError> =>
  typeof path === "string" && path.length > 0
    ? Effect.void
    : Effect.fail(refuse(operation, `a path is required, got ${JSON.stringify(path)}`))

const checkSize = (operation: string, size: number, min: number): Effect.Effect<void, ImageError> =>
  Number.isSafeInteger(size) && size >= min
    ? Effect.void
    : Effect.fail(refuse(operation, `size must be a whole number of bytes >= ${min} (at most 2^53 - 1), got ${size}`))

const checkFormat = (operation: string, format: string): Effect.Effect<void, ImageError> =>
  format === "qcow2" || format === "raw"
    ? Effect.void
    : Effect.fail(refuse(operation, `format must be "qcow2" or "raw", got ${JSON.stringify(format)}`))

/** `-U` reads an image a running QEMU holds (its metadata may be stale). */
const shareArgs = (options?: { readonly forceShare?: boolean | undefined }) => options?.forceShare ? ["-U"] : []

const nest = (chain: ReadonlyArray<Qapi.ImageInfo>): Qapi.ImageInfo =>
  chain.reduceRight<Qapi.ImageInfo | undefined>(
    (below, image) => below === undefined ? image : { ...image, "backing-image": below },
    undefined
  )!

export const chain = (path: string, options?: Api.InfoOptions): Effect.Effect<ReadonlyArray<Qapi.ImageInfo>, ImageError> =>
  Effect.gen(function*() {
    yield* checkPath("info", path)
    const out = yield* run("info", ["info", "--output=json", "--backing-chain", ...shareArgs(options), path])
    const images = yield* decodeJson("info", Schema.Array(ImageInfoSchema), out.stdout)
    if (images.length === 0) return yield* Effect.fail(new ImageError({ operation: "info", exitCode: 0, stderr: "qemu-img reported no image" }))
    return images
  })

export const info = (path: string, options?: Api.InfoOptions): Effect.Effect<Qapi.ImageInfo, ImageError> =>
  Effect.map(chain(path, options), nest)

const formatOfBacking = (operation: string, backing: Api.Backing): Effect.Effect<{ path: string; format: string }, ImageError> => {
  const path = nodePath.resolve(typeof backing === "string" ? backing : backing.path)
  if (typeof backing !== "string" && backing.format !== undefined) {
    return Effect.as(checkFormat(operation, backing.format), { path, format: backing.format })
  }
  return chain(path).pipe(
    Effect.map((images) => ({ path, format: images[0].format })),
    Effect.mapError((e) => new ImageError({ ...e, operation }))
  )
}

export const create = (options: Api.CreateOptions): Effect.Effect<void, ImageError> =>
  Effect.gen(function*() {
    yield* checkPath("create", options.path)
    yield* checkFormat("create", options.format)
    if (options.backing === undefined || options.size !== undefined) yield* checkSize("create", options.size ?? NaN, 0)
    const args = ["create", "-q", "-f", options.format]
    if (options.backing !== undefined) {
      if (options.format !== "qcow2") return yield* Effect.fail(refuse("create", "only a qcow2 image can have a backing file"))
      const backing = yield* formatOfBacking("create", options.backing)
      args.push("-b", backing.path, "-F", backing.format)
    }
    args.push(options.path)
    if (options.size !== undefined) args.push(String(options.size))
    yield* run("create", args)
  })

export const overlay = (
  base: string,
  options?: Api.OverlayOptions
): Effect.Effect<string, ImageError, Scope.Scope> =>
  Effect.gen(function*() {
    yield* checkPath("overlay", base)
    const backing = yield* formatOfBacking("overlay", { path: base, format: options?.baseFormat })
    const dir = options?.dir
    // Made and registered for removal in one step, so an interruption cannot leave it behind.
    const target = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          if (dir !== undefined) {
            const file = nodePath.join(dir, `${nodePath.basename(base)}.${process.pid}.${Math.random().toString(36).slice(2, 10)}.qcow2`)
            return { file, remove: file }
          }
          const made = fs.mkdtempSync(nodePath.join(os.tmpdir(), "effect-qemu-overlay-"))
          return { file: nodePath.join(made, "overlay.qcow2"), remove: made }
        },
        catch: (cause) => new ImageError({ operation: "overlay", exitCode: undefined, stderr: String(cause), cause })
      }),
      ({ remove }) => Effect.sync(() => fs.rmSync(remove, { recursive: true, force: true }))
    )
    yield* run("overlay", ["create", "-q", "-f", "qcow2", "-b", backing.path, "-F", backing.format, target.file])
    return target.file
  })

export const convert = (options: Api.ConvertOptions): Effect.Effect<void, ImageError> =>
  Effect.gen(function*() {
    yield* checkPath("convert", options.from)
    yield* checkPath("convert", options.to)
    yield* checkFormat("convert", options.format)
    const args = ["convert", "-q"]
    if (options.fromFormat !== undefined) args.push("-f", options.fromFormat)
    args.push("-O", options.format, options.from, options.to)
    yield* run("convert", args)
  })

export const resize = (path: string, size: number, options?: Api.ResizeOptions): Effect.Effect<void, ImageError> =>
  Effect.gen(function*() {
    yield* checkPath("resize", path)
    yield* checkSize("resize", size, 0)
    yield* run("resize", ["resize", "-q", ...(options?.shrink ? ["--shrink"] : []), path, String(size)])
  })

const CheckResultSchema: Schema.Schema<Api.CheckResult> = Schema.Struct({
  filename: Schema.String,
  format: Schema.String,
  "check-errors": Schema.Number,
  "image-end-offset": Schema.optional(Schema.Number),
  corruptions: Schema.optional(Schema.Number),
  leaks: Schema.optional(Schema.Number),
  "corruptions-fixed": Schema.optional(Schema.Number),
  "leaks-fixed": Schema.optional(Schema.Number),
  "total-clusters": Schema.optional(Schema.Number),
  "allocated-clusters": Schema.optional(Schema.Number),
  "fragmented-clusters": Schema.optional(Schema.Number),
  "compressed-clusters": Schema.optional(Schema.Number)
})

export const check = (path: string, options?: Api.CheckOptions): Effect.Effect<Api.CheckResult, ImageError> =>
  Effect.gen(function*() {
    yield* checkPath("check", path)
    const args = ["check", "--output=json", ...(options?.repair ? ["-r", options.repair] : []), path]
    // 2: corruptions found, 3: leaks found: both still report, and are the caller's to judge.
    const out = yield* run("check", args, [0, 2, 3])
    return yield* decodeJson("check", CheckResultSchema, out.stdout)
  })

const checkName = (operation: string, name: string): Effect.Effect<void, ImageError> =>
  typeof name === "string" && name.length > 0
    ? Effect.void
    : Effect.fail(refuse(operation, `a snapshot name is required, got ${JSON.stringify(name)}`))

export const snapshots: typeof Api.snapshots = {
  list: (path) =>
    Effect.gen(function*() {
      yield* checkPath("snapshots.list", path)
      const out = yield* run("snapshots.list", ["info", "--output=json", path])
      const image = yield* decodeJson("snapshots.list", ImageInfoSchema, out.stdout)
      return image.snapshots ?? []
    }),
  create: (path, name) =>
    Effect.zipRight(
      Effect.zipRight(checkPath("snapshots.create", path), checkName("snapshots.create", name)),
      Effect.asVoid(run("snapshots.create", ["snapshot", "-q", "-c", name, path]))
    ),
  apply: (path, name) =>
    Effect.zipRight(
      Effect.zipRight(checkPath("snapshots.apply", path), checkName("snapshots.apply", name)),
      Effect.asVoid(run("snapshots.apply", ["snapshot", "-q", "-a", name, path]))
    ),
  remove: (path, name) =>
    Effect.zipRight(
      Effect.zipRight(checkPath("snapshots.remove", path), checkName("snapshots.remove", name)),
      Effect.asVoid(run("snapshots.remove", ["snapshot", "-q", "-d", name, path]))
    )
}
