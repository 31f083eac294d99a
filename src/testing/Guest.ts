/**
 * A tiny real Linux guest for tests and demos: a Debian cloud kernel and a
 * busybox initramfs, built from Debian packages by `scripts/build-guest.sh`
 * into a cache directory (`defaultDir`), and booted under TCG with its serial console
 * scripted over the library's `ConsoleSocket`. The initramfs also carries
 * Debian's QEMU guest agent: `Guest.launch({ guestAgent: true })` starts it
 * and `guest.agent` is its `GuestAgent` client.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Guest } from "effect-qemu/testing"
 *
 * // In a test file: it.scopedLive("runs uname in the guest", () => program) (@effect/vitest)
 * const program = Effect.gen(function*() {
 *   const guest = yield* Guest.launch({ guestAgent: true })
 *   const { output } = yield* guest.run("uname -s")                             // over the serial console
 *   const agent = yield* guest.agent
 *   const { stdout } = yield* agent.exec("/bin/uname", { args: ["-s"] })  // through the guest agent
 *   console.log(output, new TextDecoder().decode(stdout))                   // Linux Linux
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { Command } from "@effect/platform"
import { NodeCommandExecutor, NodeFileSystem } from "@effect/platform-node"
import { Chunk, Clock, Data, Duration, Effect, Layer, Option, Scope, Stream } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import type * as ConsoleSocket from "../ConsoleSocket.js"
import { LaunchFailure, MachineError } from "../Errors.js"
import type { QmpArgumentError, QmpCommandError, QmpConnectionError, QmpError, SnapshotError } from "../Errors.js"
import * as GuestAgent from "../GuestAgent.js"
import * as Proc from "../internal/process.js"
import * as Redact from "../internal/redact.js"
import * as Cache from "../internal/snapshot/cache.js"
import { setGuestClock } from "../internal/snapshot/restore.js"
import * as QemuMachine from "../QemuMachine.js"
import { packageRoot, userCacheDir } from "./internal/paths.js"

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
  /**
   * Whether the initramfs has the QEMU guest agent (started when the kernel
   * command line has `effect_qemu.ga=1`).
   *
   * @since 0.2.0
   */
  readonly guestAgent: boolean
  /**
   * Whether the initramfs has the clock daemon (`effect-qemu-clockd`, built
   * by `npm ci`): {@link config} then gives the guest a virtio-serial port,
   * `org.effect-qemu.clock`, and a clone of a {@link template} sets its clock
   * through it, agent or not.
   *
   * @since 0.3.0
   */
  readonly clock?: boolean | undefined
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

/**
 * The default cache directory: `$EFFECT_QEMU_GUEST_DIR`; else, when effect-qemu
 * is installed as a package (it sits in a `node_modules`), `effect-qemu/guest`
 * in the user's cache directory (`$XDG_CACHE_HOME`, else `~/.cache`), so that
 * a reinstall keeps the guest and the package directory stays read-only; else
 * (a checkout of the repository, for its own tests) `.cache/guest` in it.
 *
 * @example
 * ```ts
 * import { Guest } from "effect-qemu/testing"
 *
 * console.log(Guest.defaultDir()) // e.g. /home/me/.cache/effect-qemu/guest
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultDir = (): string => {
  if (process.env.EFFECT_QEMU_GUEST_DIR) return process.env.EFFECT_QEMU_GUEST_DIR
  const root = packageRoot()
  if (!root.split(path.sep).includes("node_modules")) return path.join(root, ".cache", "guest")
  return path.join(userCacheDir(), "guest")
}

const executor = NodeCommandExecutor.layer.pipe(Layer.provide(NodeFileSystem.layer))

const text = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  Effect.map(Stream.runCollect(stream), (chunks) => Buffer.concat(Chunk.toReadonlyArray(chunks)).toString("utf8"))

/** Runs the builder script; interrupted, it is killed with its scope. */
const runBuilder = (script: string, dir: string): Effect.Effect<{ code: number; output: string }, GuestUnavailable> =>
  Effect.scoped(Effect.gen(function*() {
    const proc = yield* Command.start(Command.make("bash", script, dir))
    const [stdout, stderr, code] = yield* Effect.all([text(proc.stdout), text(proc.stderr), proc.exitCode], {
      concurrency: "unbounded"
    })
    return { code: Number(code), output: stdout + stderr }
  })).pipe(
    Effect.provide(executor),
    Effect.mapError((e) => new GuestUnavailable({ reason: `cannot run the builder ${script}: ${e.message}`, output: "" }))
  )

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
    const result = yield* runBuilder(script, dir)
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
      pvpanic: meta.pvpanic === true,
      guestAgent: meta.guestAgent === true,
      clock: meta.clock === true
    }
  })

/**
 * @since 0.1.0
 * @category models
 */
export type ConfigOptions = BaseConfigOptions & GuestAgentOptions & MachineOptions

/**
 * Options of the guest's `QemuMachine.make` that the guest leaves to the
 * caller: all but those it sets itself or takes in {@link BaseConfigOptions}
 * and {@link GuestAgentOptions} (`binary`, `args`, `name`, `baseTempDir`,
 * `sockDir`, `consoleLog`). For example `validateArgs`, `qmpTimeout`,
 * `eventCacheSize`, `wrapper`.
 *
 * @since 0.3.0
 * @category models
 */
export type MachineOptions = Omit<
  QemuMachine.Options,
  "binary" | "args" | "name" | "baseTempDir" | "sockDir" | "consoleLog"
>

/**
 * With `guestAgent: true` the guest starts its agent and the machine gets the
 * host side through `QemuMachine.addGuestAgent` (`vm.guestAgent()` connects).
 * Its socket is in the machine's `sockDir`: the private temp dir, or `sockDir`
 * when given (which the caller creates, mode 0700, and removes), where it is
 * {@link agentSocketPath}.
 *
 * @since 0.2.0
 * @category models
 */
export interface GuestAgentOptions {
  readonly guestAgent?: boolean | undefined
  readonly sockDir?: string | undefined
  /** Agent commands to disable in the guest (qemu-ga `-b`). */
  readonly guestAgentDisabled?: ReadonlyArray<string> | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export interface BaseConfigOptions {
  readonly binary?: string | undefined
  /** Add `-device pvpanic-pci` so a guest panic is reported as GUEST_PANICKED. */
  readonly pvpanic?: boolean | undefined
  readonly consoleLog?: string | undefined
  readonly memory?: string | undefined
  /** Extra kernel command line. */
  readonly append?: string | undefined
  readonly args?: ReadonlyArray<string> | undefined
  readonly baseTempDir?: string | undefined
  /** The machine's name (its socket files are named after it). */
  readonly name?: string | undefined
  /**
   * The accelerator (`QemuMachine.setAccel`). Default `tcg`; `auto` takes KVM
   * only where a probe guest really runs under it (`QemuMachine.detectAccel`).
   *
   * @since 0.3.0
   */
  readonly accel?: QemuMachine.AccelChoice | undefined
}

/**
 * Where `QemuMachine.addGuestAgent` puts the agent socket of the machine
 * named `name` in `sockDir` (a guest configured with `guestAgent` and a
 * `sockDir` but no name is named `guest`).
 *
 * @since 0.2.0
 * @category constructors
 */
export const agentSocketPath = (sockDir: string, name?: string | undefined): string =>
  path.join(sockDir, `${name ?? "guest"}-qga.sock`)

/**
 * The host side of the guest agent channel on `socketPath`, for a machine
 * launched some other way (`Guest.config` uses `QemuMachine.addGuestAgent`).
 *
 * @since 0.2.0
 * @category constructors
 */
export const agentArgs: (socketPath: string) => Array<string> = GuestAgent.commandLineArgs

/** The options meant for `QemuMachine.make`: everything but the guest's own (and `launch`'s). */
const machineOptions = (options: LaunchOptions): MachineOptions => {
  const {
    accel: _accel,
    agentTimeout: _agentTimeout,
    append: _append,
    args: _args,
    baseTempDir: _baseTempDir,
    binary: _binary,
    bootTimeout: _bootTimeout,
    consoleLog: _consoleLog,
    guestAgent: _guestAgent,
    guestAgentDisabled: _guestAgentDisabled,
    memory: _memory,
    name: _name,
    pvpanic: _pvpanic,
    sockDir: _sockDir,
    ...machine
  } = options
  return machine
}

/** A name for the machine, so that a `sockDir` given without one has its agent socket at a known path. */
const machineName = (options: ConfigOptions): string | undefined =>
  options.name ?? (options.guestAgent === true && options.sockDir !== undefined ? "guest" : undefined)

/**
 * The guest's clock port. Its chardev is `null` while nothing is to be said (the host side counts as
 * open, so the daemon's read() waits); {@link setClock} swaps in the time to read.
 */
const CLOCK_CHARDEV = "effect-qemu-clock"

const clockArgs = (files: Files, options: ConfigOptions): Array<string> =>
  files.clock === true
    ? [
      // The agent's virtio-serial bus takes the port too; without the agent, a bus of its own.
      ...(options.guestAgent === true ? [] : ["-device", "virtio-serial-pci"]),
      "-chardev",
      `null,id=${CLOCK_CHARDEV}`,
      "-device",
      `virtserialport,chardev=${CLOCK_CHARDEV},name=org.effect-qemu.clock`
    ]
    : []

/**
 * Sets the clock of a running clone through its clock port: the host's time now, as the
 * chardev's input (`chardev-change` to a file backend), which the guest's daemon reads and sets
 * (`clock_settime`) a few milliseconds later. No agent, no process started in the guest: the
 * agent's `guest-set-time` forks `hwclock` through the clone's cold translation cache (~80 ms
 * of QEMU CPU against ~5). A failure is logged and the clone goes on with the clock it had.
 */
const setClock = (vm: QemuMachine.Machine) =>
  Effect.gen(function*() {
    const file = path.join(vm.tempDir, "clock")
    const now = yield* Clock.currentTimeNanos
    yield* Effect.try(() => fs.writeFileSync(file, `${now}\n`, { mode: 0o600 }))
    // QEMU opens the file in the command; the name can go at once.
    yield* vm.command("chardev-change", { id: CLOCK_CHARDEV, backend: { type: "file", data: { in: file, out: "/dev/null" } } })
      .pipe(Effect.ensuring(Effect.sync(() => fs.rmSync(file, { force: true }))))
  }).pipe(Effect.catchAll((e) => Effect.logWarning(`guest clock not set after clone: ${e.message}`)))

const agentAppend = (options: ConfigOptions): string => {
  if (options.guestAgent !== true) return ""
  const disabled = options.guestAgentDisabled ?? []
  return ` effect_qemu.ga=1${disabled.length > 0 ? ` effect_qemu.ga_block=${disabled.join(",")}` : ""}`
}

/**
 * The machine configuration of the guest: TCG unless `accel` says otherwise
 * (KVM may be a nested backend that crashes real kernels: `auto` probes
 * first), q35, 256 MiB, no default devices, no reboot, a console on the
 * first serial port, and paused at start (`-S`) so that the console is
 * connected before the guest prints anything. {@link MachineOptions}
 * (`validateArgs`, `qmpTimeout`, ...) go to `QemuMachine.make`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const config = (files: Files, options: ConfigOptions = {}): QemuMachine.Config =>
  QemuMachine.make({
    ...machineOptions(options),
    binary: options.binary ?? "qemu-system-x86_64",
    consoleLog: options.consoleLog,
    baseTempDir: options.baseTempDir,
    name: machineName(options),
    sockDir: options.sockDir
  }).pipe(
    QemuMachine.setMachine("q35"),
    QemuMachine.setAccel(options.accel ?? "tcg"),
    QemuMachine.setConsole(),
    (config) => options.guestAgent === true ? QemuMachine.addGuestAgent(config) : config,
    QemuMachine.addArgs(
      "-m",
      options.memory ?? "256",
      "-nodefaults",
      "-no-reboot",
      "-kernel",
      files.kernel,
      "-initrd",
      files.initrd,
      "-append",
      `console=ttyS0 quiet panic=-1${agentAppend(options)}${files.clock === true ? " effect_qemu.clock=1" : ""}${
        options.append ? ` ${options.append}` : ""
      }`,
      "-S",
      ...(options.pvpanic ? ["-device", "pvpanic-pci"] : []),
      ...clockArgs(files, options),
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
  /**
   * The agent socket, when launched with `guestAgent: true`.
   *
   * @since 0.2.0
   */
  readonly agentAddress: string | undefined
  /**
   * The guest agent client, `vm.guestAgent()`: connects and waits for the
   * agent's first sync on first use (`agentTimeout`, default 60 seconds), the
   * same one after. Fails with `MachineError` when the guest was launched
   * without `guestAgent`.
   *
   * @since 0.2.0
   */
  readonly agent: Effect.Effect<GuestAgent.GuestAgent.Service, MachineError | QmpError>
}

// Terminal control sequences busybox's shell emits (e.g. ESC[6n after every prompt).
// eslint-disable-next-line no-control-regex
const ESCAPES = /\u001b\[[0-9;?]*[A-Za-z]/g

/** @internal */
export const cleanOutput = (text: string): string => text.replace(ESCAPES, "").replace(/\r/g, "").trim()

/** How long a console that ended waits for QEMU's exit to be reported. */
const EXIT_REPORT_WAIT = Duration.seconds(5)

/**
 * Runs the CPU and waits for the shell. The console (or QMP) ending on the way means QEMU
 * exited: the guest panicked (`panic=-1` with `-no-reboot`) or QEMU crashed. That fails with a
 * `LaunchFailure` "ExitedEarly" naming QEMU's exit, its output and the console's last lines,
 * instead of a bare "connection Eof" that says nothing of why.
 */
const bootToShell = (
  vm: QemuMachine.Machine,
  console: ConsoleSocket.ConsoleSocket,
  files: Files,
  bootTimeout: Duration.DurationInput
) =>
  Effect.gen(function*() {
    yield* vm.command("cont")
    yield* console.expect(files.readyMarker, { timeout: bootTimeout })
    yield* console.expect("# ", { timeout: bootTimeout })
  }).pipe(Effect.catchTag("QmpConnectionError", (e) => diedBooting(vm, console, e)))

const diedBooting = (vm: QemuMachine.Machine, console: ConsoleSocket.ConsoleSocket, e: QmpConnectionError) =>
  Effect.gen(function*() {
    // The console can end a moment before QEMU is reaped.
    const last = yield* vm.stateChanges.pipe(Stream.runLast, Effect.timeout(EXIT_REPORT_WAIT), Effect.option)
    const state = Option.flatten(last)
    if (Option.isNone(state) || state.value._tag !== "Exited") return yield* Effect.fail(e)
    const code = state.value.exitCode
    const lines = cleanOutput(yield* console.pending).split("\n").slice(-CONSOLE_TAIL_LINES).join("\n")
    return yield* Effect.fail(
      new LaunchFailure({
        reason: "ExitedEarly",
        exitCode: code >= 0 ? code : undefined,
        signal: code < 0 ? Proc.describeSignal(-code) : undefined,
        command: Redact.redactArgs(vm.args),
        output: Redact.redactText(Option.getOrElse(yield* vm.log, () => ""), vm.args),
        cause: e,
        detail: `QEMU exited before the guest reached its shell; the console's last lines:\n${lines || "(nothing)"}`
      })
    )
  })

const CONSOLE_TAIL_LINES = 20

/**
 * Builds (or reuses) the guest, launches it, connects the console, resumes
 * the CPU and waits for the shell. Everything ends with the scope. A guest
 * whose QEMU exits before the shell (a kernel panic while booting, say) fails
 * with a `LaunchFailure` "ExitedEarly" carrying QEMU's exit, its output and the
 * console's last lines.
 *
 * @since 0.1.0
 * @category constructors
 */
export const launch = (
  options: LaunchOptions = {}
): Effect.Effect<
  Guest,
  GuestUnavailable | LaunchFailure | MachineError | QmpCommandError | QmpArgumentError | QmpError,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const files = yield* build()
    const vm = yield* QemuMachine.launch(config(files, options))
    // QEMU drops serial output while nothing is connected: connect, then run the CPU.
    const console = yield* vm.console
    const started = yield* Clock.currentTimeMillis
    yield* bootToShell(vm, console, files, options.bootTimeout ?? Duration.seconds(90))
    const bootTime = Duration.millis((yield* Clock.currentTimeMillis) - started)

    return yield* makeGuest(vm, console, files, bootTime, options)
  }).pipe(Effect.withSpan("Guest.launch"))

/**
 * @since 0.2.0
 * @category models
 */
export type LaunchOptions = ConfigOptions & {
  readonly bootTimeout?: Duration.DurationInput | undefined
  /** How long `agent` waits for the agent's first sync. Default 60 seconds. */
  readonly agentTimeout?: Duration.DurationInput | undefined
}

/** The handle around a running guest whose shell waits on the console (booted, or cloned). */
const makeGuest = (
  vm: QemuMachine.Machine,
  console: ConsoleSocket.ConsoleSocket,
  files: Files,
  bootTime: Duration.Duration,
  options: LaunchOptions
): Effect.Effect<Guest> =>
  Effect.gen(function*() {
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
        // Drop the echoed command line (and whatever came before it, e.g. the rest of
        // earlier output): the output starts after the line that echoes the marker, or
        // after the first newline when the terminal broke that line up.
        // The shell's line editor puts escape sequences into its echo: strip them first. The
        // echoed line ends with the marker's last part (`"0__"$?`), whatever split the line.
        const body = text.slice(0, match.index).replace(ESCAPES, "").replace(/\r/g, "")
        const echoed = body.lastIndexOf(`"${tag.slice(4)}"$?`)
        const lineEnd = body.indexOf("\n", echoed >= 0 ? echoed : 0)
        const output = lineEnd >= 0 ? body.slice(lineEnd + 1) : ""
        return { output: cleanOutput(output), status: Number(match[1]) }
      }))

    const agentAddress = options.guestAgent === true ? agentSocketPath(vm.sockDir, vm.name) : undefined
    const agent = agentAddress === undefined
      ? Effect.fail(new MachineError({ message: "the guest was launched without guestAgent: true" }))
      : vm.guestAgent({ timeout: options.agentTimeout ?? Duration.seconds(60) })

    return { vm, console, files, bootTime, run, agentAddress, agent }
  })

const GUEST_KEY = /^guest-[0-9a-f]{12}$/

/** The kernel's and initramfs's size and mtime: a cached template of other files is never reused. */
const filesKey = (files: Files): string => {
  const stamp = (file: string) => {
    const st = fs.statSync(file)
    return `${st.size}:${st.mtimeMs}`
  }
  return `guest-${crypto.createHash("sha256").update(`${stamp(files.kernel)}|${stamp(files.initrd)}`).digest("hex").slice(0, 12)}`
}

/**
 * A booted guest to clone (see {@link template}).
 *
 * @since 0.3.0
 * @category models
 */
export interface Template {
  readonly template: QemuMachine.Template
  readonly files: Files
  /** A new guest in the template's state, the same handle {@link launch} gives; `bootTime` is how long the clone took. */
  readonly clone: () => Effect.Effect<
    Guest,
    LaunchFailure | SnapshotError | MachineError | QmpCommandError | QmpArgumentError | QmpError,
    Scope.Scope
  >
}

/**
 * @since 0.3.0
 * @category models
 */
export type TemplateOptions = LaunchOptions & {
  /**
   * Keep the template here and reuse it across processes (see `QemuMachine.template`), in a
   * folder per guest build; the folders of other builds are pruned as stale (7 days unused).
   */
  readonly cacheDir?: string | undefined
  /** With `cacheDir`: see `QemuMachine.TemplateOptions`. Default: 30 days. */
  readonly cacheMaxAge?: Duration.DurationInput | undefined
  /** With `cacheDir`: see `QemuMachine.TemplateOptions`. Default: 16. */
  readonly cacheMaxEntries?: number | undefined
  /** Disks (`QemuMachine.addDisk`): the guest sees them as /dev/vda, /dev/vdb, ...; each clone writes to its own overlay. */
  readonly disks?: ReadonlyArray<QemuMachine.DiskOptions> | undefined
  /** QEMUs kept started ahead for the next clones (see `QemuMachine.TemplateOptions`). Default: 0. */
  readonly spares?: number | undefined
}

/**
 * Boots the guest once (with its agent running when `guestAgent`), saves it
 * as a `QemuMachine.template`, and hands out clones: each a guest of its
 * own (RAM copy-on-write, its own disks' overlays) at the shell prompt in a
 * fraction of a boot. Everything ends with the scope and the last clone.
 *
 * @since 0.3.0
 * @category constructors
 */
export const template = (
  options: TemplateOptions = {}
): Effect.Effect<
  Template,
  GuestUnavailable | LaunchFailure | SnapshotError | MachineError | QmpCommandError | QmpArgumentError | QmpError,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const files = yield* build()
    const bootTimeout = options.bootTimeout ?? Duration.seconds(90)
    const base = (options.disks ?? []).reduce((c, disk) => QemuMachine.addDisk(disk)(c), config(files, options))
    const key = options.cacheDir === undefined ? undefined : filesKey(files)
    const tpl = yield* QemuMachine.template(base, {
      // A rebuilt guest keeps its file names: its templates are told apart by the files themselves.
      cacheDir: options.cacheDir === undefined || key === undefined ? undefined : path.join(options.cacheDir, key),
      cacheMaxAge: options.cacheMaxAge,
      cacheMaxEntries: options.cacheMaxEntries,
      spares: options.spares,
      prepare: (vm) =>
        Effect.gen(function*() {
          yield* bootToShell(vm, yield* vm.console, files, bootTimeout)
          // Saved with its agent answering: clones' agents are ready at once.
          if (options.guestAgent === true) yield* vm.guestAgent({ timeout: options.agentTimeout ?? Duration.seconds(60) })
        })
    })
    if (options.cacheDir !== undefined && key !== undefined) {
      // The templates of earlier guest builds are never reused: stale.
      const pruned = Cache.pruneSiblings(options.cacheDir, GUEST_KEY, key, {
        ...Cache.limits(options),
        now: Cache.wallClock()
      })
      if (pruned.length > 0) {
        yield* Effect.logDebug(`pruned ${pruned.map((p) => `${p.name} (${p.why})`).join(", ")}`).pipe(
          Effect.annotateLogs("cacheDir", options.cacheDir)
        )
      }
    }
    const clone = () =>
      Effect.gen(function*() {
        const started = yield* Clock.currentTimeMillis
        const vm = yield* tpl.clone({ paused: true })
        // Connected before the guest runs: nothing it prints is lost.
        const console = yield* vm.console
        yield* vm.command("cont")
        // Its clock stopped when the template was saved (a paused restore leaves it to us): set
        // through the guest's clock port when it has one, else through the agent (in the background).
        if (files.clock === true) yield* setClock(vm)
        else if (options.guestAgent === true) yield* setGuestClock(vm)
        const bootTime = Duration.millis((yield* Clock.currentTimeMillis) - started)
        return yield* makeGuest(vm, console, files, bootTime, options)
      }).pipe(Effect.withSpan("Guest.clone"))
    return { template: tpl, files, clone }
  }).pipe(Effect.withSpan("Guest.template"))
