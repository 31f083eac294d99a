/**
 * A tiny real Linux guest for tests and demos: a Debian cloud kernel and a
 * busybox initramfs, built from Debian packages by `scripts/build-guest.sh`
 * into a git-ignored cache, and booted under TCG with its serial console
 * scripted over the library's `ConsoleSocket`.
 *
 * @example
 * ```ts
 * import { Guest } from "effect-qemu/testing"
 *
 * it.scopedLive("runs uname in the guest", () =>
 *   Effect.gen(function*() {
 *     const guest = yield* Guest.launch()
 *     const { output } = yield* guest.run("uname -s")
 *     expect(output).toBe("Linux")
 *   }))
 * ```
 *
 * @since 0.1.0
 */
import { Data, Duration, Effect, Scope } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type * as ConsoleSocket from "../ConsoleSocket.js"
import type { LaunchFailure, MachineError, QmpCommandError, QmpError } from "../Errors.js"
import * as QemuMachine from "../QemuMachine.js"

/**
 * The built guest files.
 *
 * @since 0.1.0
 * @category models
 */
export interface Files {
  readonly dir: string
  readonly kernel: string
  readonly initrd: string
  readonly readyMarker: string
  readonly kernelVersion: string
  /** Whether the guest has a pvpanic driver (so `-device pvpanic-pci` gives GUEST_PANICKED). */
  readonly pvpanic: boolean
}

/**
 * The guest could not be built here (no Debian host, no apt, no network to
 * Debian's mirrors, ...). `output` is what the builder printed.
 *
 * @since 0.1.0
 * @category errors
 */
export class GuestUnavailable extends Data.TaggedError("GuestUnavailable")<{
  readonly reason: string
  readonly output: string
}> {
  override get message() {
    return `cannot build the test guest: ${this.reason}${this.output ? `\n${this.output.trim()}` : ""}`
  }
}

const packageRoot = (): string => {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  while (!fs.existsSync(path.join(dir, "package.json"))) {
    const parent = path.dirname(dir)
    if (parent === dir) break
    dir = parent
  }
  return dir
}

/**
 * The default cache directory: `$EFFECT_QEMU_GUEST_DIR`, else `.cache/guest`
 * in the package.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultDir = (): string => process.env.EFFECT_QEMU_GUEST_DIR ?? path.join(packageRoot(), ".cache", "guest")

/**
 * Builds the guest, or reuses the cached one (a few milliseconds). Progress
 * lines of the builder are logged at info level.
 *
 * @since 0.1.0
 * @category constructors
 */
export const build = (options: { readonly dir?: string | undefined } = {}): Effect.Effect<Files, GuestUnavailable> =>
  Effect.gen(function*() {
    const dir = options.dir ?? defaultDir()
    const script = path.join(packageRoot(), "scripts", "build-guest.sh")
    const result = yield* Effect.async<{ code: number | null; output: string }>((resume) => {
      const child = cp.execFile("bash", [script, dir], { maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) =>
        resume(Effect.succeed({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, output: stdout + stderr })))
      return Effect.sync(() => child.kill("SIGTERM"))
    })
    for (const line of result.output.split("\n").filter((l) => l.startsWith("guest:"))) yield* Effect.logDebug(line)
    if (result.code !== 0) {
      return yield* Effect.fail(new GuestUnavailable({ reason: `builder exited with ${result.code}`, output: result.output }))
    }
    const meta = yield* Effect.try({
      try: () => JSON.parse(fs.readFileSync(path.join(dir, "guest.json"), "utf8")) as Record<string, unknown>,
      catch: (e) => new GuestUnavailable({ reason: `unreadable guest.json: ${String(e)}`, output: result.output })
    })
    return {
      dir,
      kernel: path.join(dir, "vmlinuz"),
      initrd: path.join(dir, "initramfs.cpio.gz"),
      readyMarker: String(meta.readyMarker ?? "EFFECT-QEMU-READY"),
      kernelVersion: String(meta.kernelVersion ?? ""),
      pvpanic: meta.pvpanic === true
    }
  })

/**
 * @since 0.1.0
 * @category models
 */
export interface ConfigOptions {
  readonly binary?: string | undefined
  /** Add `-device pvpanic-pci` so a guest panic is reported as GUEST_PANICKED. */
  readonly pvpanic?: boolean | undefined
  readonly consoleLog?: string | undefined
  readonly memory?: string | undefined
  /** Extra kernel command line. */
  readonly append?: string | undefined
  readonly args?: ReadonlyArray<string> | undefined
  readonly baseTempDir?: string | undefined
}

/**
 * The machine configuration of the guest: TCG (KVM may be a nested backend
 * that crashes real kernels), q35, 256 MiB, no default devices, no reboot,
 * a console on the first serial port, and paused at start (`-S`) so that
 * the console is connected before the guest prints anything.
 *
 * @since 0.1.0
 * @category constructors
 */
export const config = (files: Files, options: ConfigOptions = {}): QemuMachine.Config =>
  QemuMachine.make({
    binary: options.binary ?? "qemu-system-x86_64",
    consoleLog: options.consoleLog,
    baseTempDir: options.baseTempDir
  }).pipe(
    QemuMachine.setMachine("q35"),
    QemuMachine.setConsole(),
    QemuMachine.addArgs(
      "-accel",
      "tcg",
      "-m",
      options.memory ?? "256",
      "-nodefaults",
      "-no-reboot",
      "-kernel",
      files.kernel,
      "-initrd",
      files.initrd,
      "-append",
      `console=ttyS0 quiet panic=-1${options.append ? ` ${options.append}` : ""}`,
      "-S",
      ...(options.pvpanic ? ["-device", "pvpanic-pci"] : []),
      ...(options.args ?? [])
    )
  )

/**
 * The result of a shell command run in the guest.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunResult {
  /** What the command printed, with `\r\n` turned into `\n` and terminal escapes removed, trimmed. */
  readonly output: string
  readonly status: number
}

/**
 * A booted guest.
 *
 * @since 0.1.0
 * @category models
 */
export interface Guest {
  readonly vm: QemuMachine.Machine
  readonly console: ConsoleSocket.ConsoleSocket
  readonly files: Files
  /** How long from `cont` to the shell prompt. */
  readonly bootTime: Duration.Duration
  /** Runs a shell command on the serial console and waits for it to finish. */
  readonly run: (
    command: string,
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<RunResult, QmpError>
}

// Terminal control sequences busybox's shell emits (e.g. ESC[6n after every prompt).
// eslint-disable-next-line no-control-regex
const ESCAPES = /\u001b\[[0-9;?]*[A-Za-z]/g

/** @internal */
export const cleanOutput = (text: string): string => text.replace(ESCAPES, "").replace(/\r/g, "").trim()

/**
 * Builds (or reuses) the guest, launches it, connects the console, resumes
 * the CPU and waits for the shell. Everything ends with the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const launch = (
  options: ConfigOptions & { readonly bootTimeout?: Duration.DurationInput | undefined } = {}
): Effect.Effect<
  Guest,
  GuestUnavailable | LaunchFailure | MachineError | QmpCommandError | QmpError,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const files = yield* build()
    const vm = yield* QemuMachine.launch(config(files, options))
    // QEMU drops serial output while nothing is connected: connect, then run the CPU.
    const console = yield* vm.console
    const started = Date.now()
    yield* vm.command("cont")
    const bootTimeout = options.bootTimeout ?? Duration.seconds(90)
    yield* console.expect(files.readyMarker, { timeout: bootTimeout })
    yield* console.expect("# ", { timeout: bootTimeout })
    const bootTime = Duration.millis(Date.now() - started)

    // Commands run one at a time: the console is a single conversation.
    const lock = yield* Effect.makeSemaphore(1)
    let counter = 0
    const run = (command: string, runOptions?: { readonly timeout?: Duration.DurationInput | undefined }) =>
      lock.withPermits(1)(Effect.gen(function*() {
        // The marker's text is built by the shell, so the echoed command line cannot match it.
        const tag = `__EQ${counter++}__`
        yield* console.write(`${command}; echo "${tag.slice(0, 4)}""${tag.slice(4)}"$?\n`)
        const pattern = new RegExp(`${tag}(\\d+)\\r?\\n`)
        const text = yield* console.expect(pattern, { timeout: runOptions?.timeout ?? "60 seconds" })
        yield* console.expect("# ", { timeout: "10 seconds" })
        const match = pattern.exec(text)!
        // Drop the echoed command line: output starts after the first newline.
        const body = text.slice(0, match.index)
        const firstNewline = body.indexOf("\n")
        const output = firstNewline >= 0 ? body.slice(firstNewline + 1) : ""
        return { output: cleanOutput(output), status: Number(match[1]) }
      }))

    return { vm, console, files, bootTime, run }
  }).pipe(Effect.withSpan("Guest.launch"))
