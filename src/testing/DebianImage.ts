/**
 * The image of the Debian 12 test guest (see `DebianGuest`): systemd, `qemu-guest-agent` and
 * `openssh-server` from Debian's packages (`scripts/build-debian-image.sh`,
 * with `mmdebstrap`) on a qcow2 disk, booted with Debian's cloud kernel
 * (virtio-blk, virtio-net, user-mode networking with SSH forwarded to a free
 * host port). Each launch writes to its own overlay: the cached base image is
 * never changed.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { DebianImage } from "effect-qemu/testing"
 *
 * const program = Effect.gen(function*() {
 *   const files = yield* DebianImage.build({ packages: ["curl"] })   // cached after the first time
 *   console.log(files)
 * })
 * ```
 *
 * @since 0.3.0
 */
import { Command } from "@effect/platform"
import { NodeCommandExecutor, NodeFileSystem } from "@effect/platform-node"
import { Chunk, Data, Effect, Layer, Stream } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { packageRoot, userCacheDir } from "./internal/paths.js"

/**
 * The image could not be built or the guest did not come up.
 *
 * @since 0.3.0
 * @category errors
 */
export class DebianUnavailable extends Data.TaggedError("DebianUnavailable")<{
  readonly reason: string
  readonly output: string
  readonly cause?: unknown
}> {
  override get message() {
    return `Debian guest unavailable: ${this.reason}${this.output ? `\n${this.output.trim().slice(-4000)}` : ""}`
  }
}

/**
 * A built image: its files in the cache.
 *
 * @since 0.3.0
 * @category models
 */
export interface Files {
  readonly dir: string
  /** The base disk (qcow2): launches write to overlays over it. */
  readonly disk: string
  readonly kernel: string
  readonly initrd: string
  /** The SSH key root accepts (no passphrase). */
  readonly privateKey: string
  readonly publicKey: string
  readonly kernelVersion: string
}

/**
 * @since 0.3.0
 * @category models
 */
export interface BuildOptions {
  /** More Debian packages to install (part of the cache key). */
  readonly packages?: ReadonlyArray<string> | undefined
  /** Default: `$XDG_CACHE_HOME/effect-qemu`, else `~/.cache/effect-qemu`. */
  readonly cacheDir?: string | undefined
}

/**
 * The user's cache directory for effect-qemu: `$XDG_CACHE_HOME/effect-qemu`,
 * else `~/.cache/effect-qemu`.
 *
 * @since 0.3.0
 * @category constructors
 */
export const defaultCacheDir = (): string => userCacheDir()

const executor = NodeCommandExecutor.layer.pipe(Layer.provide(NodeFileSystem.layer))

const text = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  Effect.map(Stream.runCollect(stream), (chunks) => Buffer.concat(Chunk.toReadonlyArray(chunks)).toString("utf8"))

/** @internal Runs a host program and collects its output (no shell). */
export const runHost = (program: string, args: ReadonlyArray<string>, input?: string) =>
  Effect.scoped(Effect.gen(function*() {
    let command = Command.make(program, ...args)
    if (input !== undefined) command = Command.feed(command, input)
    const proc = yield* Command.start(command)
    const [stdout, stderr, exitCode] = yield* Effect.all([text(proc.stdout), text(proc.stderr), proc.exitCode], {
      concurrency: "unbounded"
    })
    return { exitCode: Number(exitCode), stdout, stderr }
  })).pipe(Effect.provide(executor))

const readFiles = (dir: string): Files => {
  const meta = JSON.parse(fs.readFileSync(path.join(dir, "image.json"), "utf8")) as { kernelVersion?: string }
  return {
    dir,
    disk: path.join(dir, "disk.qcow2"),
    kernel: path.join(dir, "vmlinuz"),
    initrd: path.join(dir, "initrd.img"),
    privateKey: path.join(dir, "id_ed25519"),
    publicKey: path.join(dir, "id_ed25519.pub"),
    kernelVersion: meta.kernelVersion ?? ""
  }
}

/**
 * Builds the image, or returns the cached one. The cache key is a hash of
 * the build script and the package list: changing either builds a new image
 * (in its own directory; an old one is left for you to delete). A cold build
 * downloads Debian's packages and takes a few minutes; a cached one returns
 * at once. Needs `mmdebstrap`, `mke2fs` and `qemu-img` on the host, and root
 * or unprivileged user namespaces (mmdebstrap's `unshare` mode).
 *
 * @since 0.3.0
 * @category constructors
 */
export const build = (options: BuildOptions = {}): Effect.Effect<Files, DebianUnavailable> =>
  Effect.gen(function*() {
    const script = path.join(packageRoot(), "scripts", "build-debian-image.sh")
    const scriptText = yield* Effect.try({
      try: () => fs.readFileSync(script, "utf8"),
      catch: (cause) => new DebianUnavailable({ reason: `cannot read ${script}`, output: "", cause })
    })
    const packages = [...(options.packages ?? [])].sort()
    const key = crypto.createHash("sha256").update(scriptText).update("\0").update(packages.join(",")).digest("hex")
      .slice(0, 16)
    const dir = path.join(options.cacheDir ?? defaultCacheDir(), `debian-12-${key}`)
    if (fs.existsSync(path.join(dir, "image.json"))) return readFiles(dir)
    yield* Effect.logInfo(`building the Debian image into ${dir} (a few minutes, once)`)
    fs.mkdirSync(path.dirname(dir), { recursive: true })
    // flock: two processes building the same image take turns; the second finds it built.
    const out = yield* runHost("flock", [`${dir}.lock`, "bash", "-c", `[ -s "$1/image.json" ] || exec bash "$0" "$1" "\${@:2}"`, script, dir, ...packages]).pipe(
      Effect.mapError((cause) => new DebianUnavailable({ reason: "cannot run the build script", output: "", cause }))
    )
    if (out.exitCode !== 0 || !fs.existsSync(path.join(dir, "image.json"))) {
      return yield* Effect.fail(new DebianUnavailable({ reason: `the image build failed (exit ${out.exitCode})`, output: out.stderr }))
    }
    return readFiles(dir)
  }).pipe(Effect.withSpan("DebianImage.build"))

