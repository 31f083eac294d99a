/**
 * A QEMU virtual machine as a scoped resource: QEMU's Python `QEMUMachine`,
 * rebuilt on Effect.
 *
 * Build an immutable {@link Config} with {@link make} and the pipeable
 * combinators, then {@link launch} it inside a scope. Closing the scope always
 * shuts QEMU down (soft `quit`, then SIGKILL) and removes every file the
 * machine created, even when the scope is interrupted in the middle of launch.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { QemuMachine } from "effect-qemu"
 *
 * const config = QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.setMachine("none"))
 *
 * const program = Effect.gen(function*() {
 *   const vm = yield* QemuMachine.launch(config)
 *   console.log(yield* vm.command("query-status"))
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import type { Data, Duration, Pipeable, Scope, Stream } from "effect"
import { Context, Effect, Layer, Option } from "effect"
import type * as ConsoleSocket from "./ConsoleSocket.js"
import type {
  AbnormalShutdown,
  LaunchFailure,
  MachineError,
  QmpArgumentError,
  QmpCommandError,
  QmpConnectionError,
  QmpError,
  QmpTimeoutError,
  SnapshotError
} from "./Errors.js"
import type * as EventMatch from "./EventMatch.js"
import type * as GuestAgent from "./GuestAgent.js"
import * as accel_ from "./internal/machine/accel.js"
import * as config_ from "./internal/machine/config.js"
import { qmpDisabled } from "./internal/machine/handle.js"
import * as launch_ from "./internal/machine/launch.js"
import * as restore_ from "./internal/snapshot/restore.js"
import * as template_ from "./internal/snapshot/template.js"
import * as state_ from "./internal/machine/state.js"
import type * as Qapi from "./Qapi.js"
import * as QmpClient from "./QmpClient.js"
import type * as QmpMessage from "./QmpMessage.js"
import type * as Snapshot from "./Snapshot.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = config_.TypeId

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * Where the QMP monitor socket lives: a unix path, or a TCP address (the host
 * defaults to 127.0.0.1; port 0 picks a free port).
 *
 * @since 0.1.0
 * @category models
 */
export type MonitorAddress = string | { readonly host?: string | undefined; readonly port: number }

/**
 * A file descriptor passed to QEMU at launch (`-add-fd`).
 *
 * @since 0.1.0
 * @category models
 */
export interface PassedFd {
  readonly fd: number
  readonly fdset: number
  readonly opaque: string
  readonly opts?: string | undefined
}

/**
 * The constructor options of QEMU's `QEMUMachine`, camelCased.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Path (or name on PATH) of the QEMU binary. */
  readonly binary: string
  /** Arguments after the ones the machine adds itself. */
  readonly args?: ReadonlyArray<string> | undefined
  /** A command that runs QEMU (e.g. `["taskset", "-c", "0"]`). */
  readonly wrapper?: ReadonlyArray<string> | undefined
  /** Default `qemu-<pid>-<random>`. */
  readonly name?: string | undefined
  /** Where the machine's temp dir is created. Default `/var/tmp`. */
  readonly baseTempDir?: string | undefined
  /** Default `<sockDir>/<name>-monitor.sock`. */
  readonly monitorAddress?: MonitorAddress | undefined
  /** Directory of the socket files. Default: the machine's temp dir. */
  readonly sockDir?: string | undefined
  /** Connect the console at launch and keep reading it. */
  readonly drainConsole?: boolean | undefined
  /** Write the console's output to this file (implies `drainConsole`). */
  readonly consoleLog?: string | undefined
  /** Directory of QEMU's output log. Default: the machine's temp dir. */
  readonly logDir?: string | undefined
  /** Deadline for QEMU to connect and negotiate QMP. Default 30 seconds. */
  readonly qmpTimeout?: Duration.DurationInput | undefined
  /** Unclaimed events kept for later `eventWait`/`getQmpEvent(s)` calls. Default 10,000. */
  readonly eventCacheSize?: number | undefined
  /** The same bound in bytes. Default 64 MiB. */
  readonly eventCacheBytes?: number | undefined
  /** Events an `events` subscriber may fall behind before it loses the oldest (with a warning). Default 4,096. */
  readonly eventStreamBuffer?: number | undefined
  /**
   * Check every command's arguments against the live QEMU schema before
   * sending it; a mismatch fails with `QmpArgumentError` and nothing is sent.
   * Default false.
   *
   * Checked: the command exists; required members are present and unknown
   * ones absent (`device_add` takes any device property); JSON types, enum
   * values, union branches and alternates, at every depth; an integer is a
   * finite whole number within ±(2^53 − 1), since values above 2^53 cannot
   * be represented exactly as JS numbers (they would reach QEMU as another
   * integer); a `number` is finite. Not checked: the range of each QAPI
   * integer type (`uint8`, `int64`, `size`, …: introspection reports all of
   * them as `int`, so QEMU judges the range), values inside `any` members
   * (`qom-set`), and whatever QEMU validates beyond the schema (ids in use,
   * paths that exist).
   */
  readonly validateArgs?: boolean | undefined
}

/**
 * An immutable machine configuration. Build with {@link make} and the
 * combinators; nothing happens until {@link launch}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Config extends Pipeable.Pipeable {
  readonly [TypeId]: TypeId
  readonly binary: string
  readonly args: ReadonlyArray<string>
  readonly wrapper: ReadonlyArray<string>
  readonly name: string | undefined
  readonly baseTempDir: string
  readonly monitorAddress: MonitorAddress | undefined
  readonly sockDir: string | undefined
  readonly drainConsole: boolean
  readonly consoleLog: string | undefined
  readonly logDir: string | undefined
  readonly qmpTimeout: Duration.Duration
  readonly eventCacheSize: number | undefined
  readonly eventCacheBytes: number | undefined
  readonly eventStreamBuffer: number | undefined
  readonly validateArgs: boolean
  readonly machine: string | undefined
  /**
   * The accelerator chosen with {@link setAccel} (`auto` is resolved at launch).
   *
   * @since 0.3.0
   */
  readonly accel: AccelChoice | undefined
  readonly console: { readonly deviceType: string | undefined; readonly index: number } | undefined
  readonly qmp: boolean
  readonly guestAgent: boolean
  readonly fds: ReadonlyArray<PassedFd>
  /**
   * Disks added with {@link addDisk}.
   *
   * @since 0.3.0
   */
  readonly disks: ReadonlyArray<Disk>
  /**
   * User-mode networks added with {@link addNetwork}.
   *
   * @since 0.3.0
   */
  readonly networks: ReadonlyArray<Network>
}

/**
 * Creates a configuration from the seed's constructor options.
 *
 * @example
 * ```ts
 * import { QemuMachine } from "effect-qemu"
 *
 * const config = QemuMachine.make({ binary: "qemu-system-x86_64", qmpTimeout: "10 seconds" }).pipe(
 *   QemuMachine.setMachine("q35"),
 *   QemuMachine.addArgs("-m", "256")
 * )
 * console.log(config.binary)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (options: Options) => Config = config_.make


/**
 * Appends arguments to the command line (seed: `add_args`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const addArgs: (...args: ReadonlyArray<string>) => (self: Config) => Config = config_.addArgs


/**
 * Sets `-machine TYPE` (seed: `set_machine`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const setMachine: {
  (machineType: string): (self: Config) => Config
  (self: Config, machineType: string): Config
} = config_.setMachine

/**
 * A QEMU accelerator: `kvm` (Linux), `hvf` (macOS), or `tcg` (QEMU's own
 * emulator, everywhere).
 *
 * @since 0.3.0
 * @category models
 */
export type Accel = "kvm" | "tcg" | "hvf"

/**
 * What {@link setAccel} takes: an accelerator, or `auto` for the one
 * {@link detectAccel} finds usable.
 *
 * @since 0.3.0
 * @category models
 */
export type AccelChoice = Accel | "auto"

/**
 * The answer of {@link detectAccel}: the accelerator, and why it was picked
 * (or why KVM/HVF was not).
 *
 * @since 0.3.0
 * @category models
 */
export interface DetectedAccel {
  readonly accel: Accel
  readonly reason: string
}

/**
 * Sets `-accel ACCEL`, replacing an earlier `setAccel` (an `-accel` in the
 * raw arguments stays: QEMU tries each in order). `auto` is resolved by
 * {@link launch} with {@link detectAccel}, probed once per binary per
 * process; the launched machine's `args` show the accelerator it got, while
 * {@link commandLine} of an `auto` config has no `-accel`. `hvf` is macOS
 * only: elsewhere QEMU refuses it and the `LaunchFailure` says so.
 *
 * @example
 * ```ts
 * import { QemuMachine } from "effect-qemu"
 *
 * const config = QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.setAccel("auto"))
 * ```
 *
 * @since 0.3.0
 * @category combinators
 */
export const setAccel: {
  (accel: AccelChoice): (self: Config) => Config
  (self: Config, accel: AccelChoice): Config
} = config_.setAccel

/**
 * Finds the accelerator a machine of `binary` (default `qemu-system-x86_64`)
 * can use here, with the reason. Never fails: anything that rules out a
 * hardware accelerator answers `tcg`, saying why.
 *
 * On Linux, KVM is taken only when `/dev/kvm` opens read-write and a probe
 * machine runs under `-accel kvm`: QEMU starts (`-machine q35 -m 64`, a
 * 64 KiB firmware of our own as `-bios`), `query-kvm` answers
 * `{ enabled: true, present: true }`, and the guest switches to 64-bit mode
 * with its own page tables, writes 32 MiB through one mapping, reads it back
 * through another, and exits through `isa-debug-exit`, all within 5 seconds
 * (real KVM: well under one). This catches the nested KVM of cloud VMs that
 * opens and answers `query-kvm` but on which a Linux kernel never boots
 * (there, fresh guest memory costs milliseconds per page). It cannot vouch
 * for what the probe does not do: interrupts and timers, several CPUs, CPU
 * models other than QEMU's default, devices, hours of load, or a wrapper the
 * machine runs QEMU through. On macOS the same probe runs under `hvf`
 * (without `query-kvm`); other systems get `tcg`. Each call probes afresh
 * (about 0.2 s with KVM; up to the 5 s deadline where it hangs), and later
 * `setAccel("auto")` launches of the same binary reuse its answer.
 *
 * @since 0.3.0
 * @category constructors
 */
export const detectAccel: (
  options?: { readonly binary?: string | undefined }
) => Effect.Effect<DetectedAccel> = accel_.detect


/**
 * Adds a console on a socket chardev (seed: `set_console`): as the
 * `index`-th serial port (earlier ones get `-serial null`), or as a device of
 * `deviceType` (e.g. `isa-serial`, `virtconsole`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const setConsole: (
  options?: { readonly deviceType?: string | undefined; readonly index?: number | undefined }
) => (self: Config) => Config = config_.setConsole


/**
 * Enables or disables the QMP monitor (seed: `set_qmp_monitor`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const setQmpMonitor: {
  (enabled: boolean): (self: Config) => Config
  (self: Config, enabled: boolean): Config
} = config_.setQmpMonitor


/**
 * Adds `-monitor null`, an unused HMP monitor (seed: `add_monitor_null`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const addMonitorNull: (self: Config) => Config = config_.addMonitorNull


/**
 * Adds a guest agent channel: a virtio-serial port `org.qemu.guest_agent.0`
 * backed by a socket chardev in the machine's `sockDir`. The guest must run
 * `qemu-ga`; `vm.guestAgent()` connects to it. Needs a machine with PCI.
 *
 * @since 0.2.0
 * @category combinators
 */
export const addGuestAgent: (self: Config) => Config = config_.addGuestAgent

/**
 * Passes one of our file descriptors to QEMU, inherited at the same number,
 * as `-add-fd fd=N,set=N,opaque=S[,opts]` (seed: `add_fd`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const addFd: (passed: PassedFd) => (self: Config) => Config = config_.addFd


/**
 * A disk the library knows about (see {@link addDisk}).
 *
 * @since 0.3.0
 * @category models
 */
export interface Disk {
  readonly path: string
  /** QEMU's block format (`raw`, `qcow2`, ...). */
  readonly format: string
  readonly readOnly: boolean
  /** The drive id; the virtio-blk device is `<id>-dev`. */
  readonly id: string
}

/**
 * Options of {@link addDisk}.
 *
 * @since 0.3.0
 * @category models
 */
export interface DiskOptions {
  readonly path: string
  /** Default: `qcow2` for a `.qcow2` file, else `raw`. */
  readonly format?: string | undefined
  readonly readOnly?: boolean | undefined
  /** Default `disk<N>`. */
  readonly id?: string | undefined
}

/**
 * Adds a disk as a virtio-blk device (`-drive if=none,...` and
 * `-device virtio-blk-pci`). Unlike a raw `-drive` in the arguments, the
 * library knows it: a template turns it into a read-only backing file and
 * every clone writes to its own qcow2 overlay.
 *
 * @since 0.3.0
 * @category combinators
 */
export const addDisk: (disk: DiskOptions) => (self: Config) => Config = config_.addDisk

/**
 * A host port forwarded to a guest port (see {@link addNetwork}).
 *
 * @since 0.3.0
 * @category models
 */
export interface Forward {
  readonly guest: number
  /** `0`: QEMU binds a free port (read it with `vm.forwardedPort`). */
  readonly host: number
  readonly protocol: "tcp" | "udp"
}

/**
 * A forward as given to {@link addNetwork} and `vm.addForward`.
 *
 * @since 0.3.0
 * @category models
 */
export interface ForwardOptions {
  readonly guest: number
  /** Default `0`: a free port, chosen by QEMU. */
  readonly host?: number | undefined
  /** Default `tcp`. */
  readonly protocol?: "tcp" | "udp" | undefined
}

/**
 * A user-mode network (see {@link addNetwork}).
 *
 * @since 0.3.0
 * @category models
 */
export interface Network {
  /** The netdev id; the virtio-net device is `<id>-dev`. */
  readonly id: string
  readonly forwards: ReadonlyArray<Forward>
}

/**
 * Options of {@link addNetwork}.
 *
 * @since 0.3.0
 * @category models
 */
export interface NetworkOptions {
  readonly forwards?: ReadonlyArray<ForwardOptions> | undefined
  /** Default `net<N>`. */
  readonly id?: string | undefined
}

/**
 * Adds a user-mode (slirp) network on a virtio-net device
 * (`-netdev user,...` + `-device virtio-net-pci`): the guest is 10.0.2.15
 * behind a NAT at 10.0.2.2, reaching out but not reachable except through
 * `forwards`, whose host side binds 127.0.0.1 only. A host port `0` (the
 * default) lets QEMU take a free one, so clones and parallel machines never
 * collide; `vm.forwardedPort(guest)` tells which. A port outside 0..65535
 * throws at once (a programming error).
 *
 * @since 0.3.0
 * @category combinators
 */
export const addNetwork: (options?: NetworkOptions) => (self: Config) => Config = config_.addNetwork

/**
 * Paths and addresses a launch resolves before starting QEMU.
 *
 * @since 0.1.0
 * @category models
 */
export interface Resolved {
  readonly name: string
  readonly tempDir: string
  readonly sockDir: string
  readonly logDir: string
  readonly monitorAddress: string | { readonly host: string; readonly port: number } | undefined
  readonly consolePath: string | undefined
}

/**
 * The arguments the machine puts before the user's (seed: `_base_args`).
 *
 * @since 0.1.0
 * @category accessors
 */
export const baseArgs: (config: Config, resolved: Pick<Resolved, "monitorAddress" | "consolePath">) => Array<string> =
  config_.baseArgs


/**
 * The full command line: wrapper, binary, base arguments, user arguments.
 *
 * @since 0.1.0
 * @category accessors
 */
export const commandLine: (
  config: Config,
  resolved: Pick<Resolved, "monitorAddress" | "consolePath">
) => Array<string> = config_.commandLine


/**
 * Where a machine is in its life. `QuitIssued`: `quit` was sent through
 * `qmp`/`command`; `ExpectingExit`: `wait()` expects the guest to make QEMU
 * exit; `ShuttingDown`: the shutdown ladder runs; `Exited`: QEMU is gone
 * (`exitCode` negative for a signal death; `expected` when the exit was asked
 * for by one of the states before).
 *
 * @since 0.2.0
 * @category models
 */
export type MachineState = Data.TaggedEnum<{
  Running: {}
  QuitIssued: {}
  ExpectingExit: {}
  ShuttingDown: {}
  Exited: { readonly exitCode: number; readonly expected: boolean }
}>

/**
 * Constructors and matchers of {@link MachineState} (`MachineState.Running()`,
 * `MachineState.$is("Exited")`, `MachineState.$match`).
 *
 * @since 0.2.0
 * @category models
 */
export const MachineState = state_.MachineState

/**
 * Options of {@link Machine.shutdown}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ShutdownOptions {
  /** Skip the graceful step: SIGKILL at once. */
  readonly hard?: boolean | undefined
  /** Deadline for the graceful step. Default 30 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface EventWaitOptions {
  /** A pattern for `EventMatch.eventMatch`, applied to the whole event. */
  readonly match?: EventMatch.Match
  /** Default 60 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * A launched machine.
 *
 * @since 0.1.0
 * @category models
 */
export interface Machine {
  readonly [TypeId]: TypeId
  readonly name: string
  /** The full command line, wrapper included. */
  readonly args: ReadonlyArray<string>
  readonly tempDir: string
  readonly sockDir: string
  readonly logDir: string
  /** The QMP client, when QMP is enabled. */
  readonly qmpClient: Option.Option<QmpClient.QmpClient.Service>
  /** QEMU's pid while it runs. */
  readonly pid: Effect.Effect<Option.Option<number>>
  readonly isRunning: Effect.Effect<boolean>
  /** The exit code once exited; a negative signal number for a signal death. */
  readonly exitCode: Effect.Effect<Option.Option<number>>
  /** The run state now. */
  readonly state: Effect.Effect<MachineState>
  /** The current run state, then every change; ends after `Exited`. */
  readonly stateChanges: Stream.Stream<MachineState>
  /** Runs a command and returns the raw response. `quit` counts as issued. */
  readonly qmp: (
    command: string,
    args?: QmpClient.Arguments
  ) => Effect.Effect<QmpMessage.Response, QmpError | MachineError>
  /**
   * Runs a command and returns its `return` value. Typed for every command of
   * the generated schema (arguments checked at compile time, the reply
   * checked against its Schema); any other name is untyped.
   */
  readonly command: Qapi.Execute<never, QmpCommandError | QmpArgumentError | QmpError | MachineError, never>
  /**
   * Runs a batch of commands pipelined (`QmpClient.executeAll`): written at
   * once and in order, the results in order, or the first failure by
   * position. Cheaper than a fiber per command for bursts. `quit` cannot be
   * batched (a `MachineError`, nothing sent): use `shutdown` or `command`.
   *
   * @example
   * ```ts
   * import { Effect } from "effect"
   * import { QemuMachine } from "effect-qemu"
   *
   * const program = Effect.gen(function*() {
   *   const vm = yield* QemuMachine.launch(QemuMachine.make({ binary: "qemu-system-x86_64", args: ["-accel", "tcg"] }))
   *   const [, status, name] = yield* vm.commandAll([["stop"], ["query-status"], ["query-name"]])
   *   console.log(status.status, name.name ?? "(no name)") // paused (no name)
   * }).pipe(Effect.scoped)
   * ```
   *
   * @since 0.3.0
   */
  readonly commandAll: Qapi.ExecuteAll<never, QmpCommandError | QmpArgumentError | QmpError | MachineError, never>
  /**
   * Every event received from the moment the stream runs.
   *
   * Each run of the stream is a subscriber with its own buffer of
   * `eventStreamBuffer` events (default 4,096). A subscriber that falls that
   * far behind loses its oldest events, reported once per subscriber with the
   * count (`Effect.logWarning`; what it lost later, once when it ends). More
   * than 1,024 live subscribers on one machine log one warning naming the
   * count: memory grows with subscribers × buffer, and every event is offered
   * to each, so share one stream (`Stream.broadcast`) instead of running
   * `events` once per consumer.
   */
  readonly events: Stream.Stream<QmpMessage.Event, MachineError>
  readonly getQmpEvent: (
    options?: QmpClient.WaitOptions
  ) => Effect.Effect<Option.Option<QmpMessage.Event>, QmpError | MachineError>
  readonly getQmpEvents: (
    options?: QmpClient.WaitOptions
  ) => Effect.Effect<ReadonlyArray<QmpMessage.Event>, QmpError | MachineError>
  /**
   * Waits for the first event named `name` (matching `match`) that no other
   * caller took; events nobody takes are kept for later calls. Typed (the
   * event and a deep-partial `match`) for every event of the generated schema.
   */
  readonly eventWait: Qapi.EventWait<
    { readonly timeout?: Duration.DurationInput | undefined },
    QmpMessage.Event,
    QmpError | MachineError,
    never
  >
  /** Waits for the first event matching any `[name, match]` pair. */
  readonly eventsWait: (
    events: ReadonlyArray<readonly [string, EventMatch.Match?]>,
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<QmpMessage.Event, QmpError | MachineError>
  /** Stops QEMU (soft, then hard) and cleans up. Idempotent. */
  readonly shutdown: (options?: ShutdownOptions) => Effect.Effect<void, AbnormalShutdown>
  /** SIGKILL, wait, clean up. */
  readonly kill: Effect.Effect<void>
  /** Expects QEMU to exit by itself (e.g. guest power-off), then cleans up. */
  readonly wait: (
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<void, AbnormalShutdown>
  /** QEMU's combined stdout and stderr, once it has exited. */
  readonly log: Effect.Effect<Option.Option<string>>
  /** The serial console (connects on first use, the same one after). */
  readonly console: Effect.Effect<ConsoleSocket.ConsoleSocket, MachineError>
  /**
   * The guest agent of a machine configured with {@link addGuestAgent}: waits
   * until the agent answers a sync (default 60 seconds, then
   * `QmpTimeoutError`) and returns the service, the same one afterwards. Its
   * `shutdown` completes when QEMU reports the guest's SHUTDOWN or exits.
   */
  readonly guestAgent: (
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<GuestAgent.GuestAgent.Service, QmpError | MachineError>
  /** Sends a file descriptor (or a file opened read-only) to QEMU with SCM_RIGHTS. */
  readonly sendFdScm: (
    fd: number | { readonly path: string }
  ) => Effect.Effect<void, QmpConnectionError | MachineError>
  /**
   * Saves the machine's device and RAM state and its configuration into a
   * directory (mode 0700): pauses it, migrates to a file, writes
   * `manifest.json` last, and lets it run again unless `keepPaused`. Disks
   * are not copied. A machine QEMU cannot migrate fails with `SnapshotError`
   * `NotMigratable` naming QEMU's blockers.
   *
   * @since 0.3.0
   */
  readonly snapshot: (
    options?: Snapshot.SaveOptions
  ) => Effect.Effect<Snapshot.Snapshot, SnapshotError | QmpError>
  /**
   * The host port (on 127.0.0.1) forwarded to `guestPort`, as QEMU reports it
   * (HMP `info usernet`): the real one when {@link addNetwork} asked for `0`.
   * `MachineError` when no network or no such forward exists.
   *
   * @since 0.3.0
   */
  readonly forwardedPort: (
    guestPort: number,
    options?: { readonly protocol?: "tcp" | "udp" | undefined }
  ) => Effect.Effect<number, MachineError>
  /**
   * Forwards one more host port to the guest while it runs (HMP
   * `hostfwd_add` on the first network) and returns the host port.
   *
   * @since 0.3.0
   */
  readonly addForward: (forward: ForwardOptions) => Effect.Effect<number, QmpCommandError | QmpArgumentError | QmpError | MachineError>
  /**
   * Waits until something in the guest answers on TCP `guestPort` through
   * its forward: a connection to the host port receives data (a banner), or
   * QEMU reports its connection to the guest established (slirp accepts on
   * the host side before the guest answers, so a bare connect proves
   * nothing). Default timeout 60 seconds, then `QmpTimeoutError`. It opens
   * real connections: a guest server that serves one connection only is
   * used up by it.
   *
   * @since 0.3.0
   */
  readonly waitForPort: (
    guestPort: number,
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<void, QmpTimeoutError | MachineError>
}

/**
 * The machine as a service, for {@link layer}.
 *
 * @since 0.1.0
 * @category tags
 */
export class QemuMachine extends Context.Tag("effect-qemu/QemuMachine")<QemuMachine, Machine>() {}


/**
 * Launches QEMU. The machine lives until the scope closes, which shuts it
 * down (a failure there is logged: call `shutdown` yourself to see it).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { QemuMachine } from "effect-qemu"
 *
 * const program = Effect.gen(function*() {
 *   const vm = yield* QemuMachine.launch(QemuMachine.make({ binary: "qemu-system-x86_64" }))
 *   const status = yield* vm.command("query-status")
 *   yield* vm.shutdown()
 *   return status.status
 * }).pipe(
 *   Effect.scoped,
 *   Effect.catchTag("LaunchFailure", (e) => Effect.succeed(`not started: ${e.reason}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const launch: (config: Config) => Effect.Effect<Machine, LaunchFailure, Scope.Scope> = launch_.launch

/**
 * Options of {@link restore}.
 *
 * @since 0.3.0
 * @category models
 */
export interface RestoreOptions {
  /** Leave the restored machine paused (`cont` runs it). Default: it runs when `restore` returns. */
  readonly paused?: boolean | undefined
}

/**
 * Starts a machine from a snapshot, scoped like {@link launch}: the
 * recorded configuration with the recorded machine type, `-incoming defer`,
 * `migrate-incoming` from the state file, then running (unless `paused`).
 * The console, QMP and the guest agent work as after a launch; with a guest
 * agent, the guest clock is set from the host in the background. A state
 * the QEMU refuses fails with `SnapshotError` (`VersionMismatch` naming both
 * versions when they differ, `Corrupt` otherwise) and leaves nothing running.
 *
 * QEMU reads the state file itself (`file:` on QEMU 8.2 and later, a passed
 * descriptor before, `exec:cat` without the native addon). A machine whose
 * reset ends it (`-no-reboot`, `-action reboot=shutdown`) starts without its
 * `-kernel`, `-initrd`, `-append` and `-dtb`: its guest booted before it was
 * saved, and its firmware never runs again (changing that at run time with
 * QMP `set-action` and then resetting boots the firmware with no kernel).
 * `vm.args` shows what QEMU ran; a snapshot of the machine records the
 * configuration it was restored from, those flags included. Clones of a
 * {@link template} start the same way.
 *
 * @since 0.3.0
 * @category constructors
 */
export const restore: (
  snapshot: Snapshot.Snapshot,
  options?: RestoreOptions
) => Effect.Effect<Machine, LaunchFailure | SnapshotError, Scope.Scope> = restore_.restore

/**
 * A prepared machine to clone (see {@link template}).
 *
 * @since 0.3.0
 * @category models
 */
export interface Template {
  /** Where the template's RAM file, device state and frozen disk overlays are. */
  readonly dir: string
  readonly snapshot: Snapshot.Snapshot
  /**
   * A new machine in the template's state: its RAM mapped copy-on-write from
   * the template's, its disks as qcow2 overlays (removed when its scope
   * closes). Runs when it returns unless `paused`.
   */
  readonly clone: (options?: RestoreOptions) => Effect.Effect<Machine, LaunchFailure | SnapshotError, Scope.Scope>
}

/**
 * Options of {@link template}.
 *
 * @since 0.3.0
 * @category models
 */
export interface TemplateOptions<E, R> {
  /** Runs on the template machine before it is saved (boot it, log in, warm caches). */
  readonly prepare?: ((vm: Machine) => Effect.Effect<unknown, E, R>) | undefined
  /**
   * Keep the template here and reuse it when its config and QEMU version match (across processes).
   * Each call that saves or reuses a template here also prunes the directory (see `cacheMaxAge`,
   * `cacheMaxEntries`). An entry is never removed while a process holds it (from `template` until
   * its scope and last clone end; a `.holder-*` file naming host and pid, ignored once that process
   * is gone) or within 10 minutes of its last use (the mtime of its `.used` file, set when it is
   * saved, reused or cloned). Entries of another QEMU version or manifest format, or of another
   * guest build (`Guest.template`), go after 7 days unused (or `cacheMaxAge` if shorter); damaged
   * entries and saves a crashed process left half-written, after 10 minutes. Pruning renames an
   * entry aside before deleting it, so processes sharing a cache can prune at once.
   */
  readonly cacheDir?: string | undefined
  /**
   * With `cacheDir`: entries unused for longer are removed. Default: 30 days (`Duration.infinity`:
   * never, by age).
   */
  readonly cacheMaxAge?: Duration.DurationInput | undefined
  /**
   * With `cacheDir`: at most this many entries are kept; beyond it the least recently used go first
   * (those of another QEMU version or format before the rest). Default: 16 (`Infinity`: no limit).
   * Held or recently used entries count but are never removed, so the cache may briefly hold more.
   */
  readonly cacheMaxEntries?: number | undefined
  /**
   * How many clones' QEMUs to keep started ahead, paused and waiting for the state (default 0).
   * A clone takes one and only loads its state into it, and another is started in the
   * background: a clone of the test guest is ready to run in ~25 ms instead of ~110 here (QEMU's
   * own start is most of a clone's). For templates that clone again and again, e.g. one clone per
   * test; each costs an idle QEMU (about 30 MB) while it waits, and those not taken end with the
   * template's scope. A spare that could not start is replaced by a clone started then, whose
   * error the caller sees.
   */
  readonly spares?: number | undefined
}

/**
 * Launches `config` once with its RAM in a file, runs `prepare`, saves it,
 * and returns a template whose clones start from that state in a fraction
 * of a boot. Disks must be declared with {@link addDisk}: a raw writable
 * `-drive`/`-blockdev` fails with `SnapshotError` `WritableDisk`. The
 * template's files live as long as its scope and its last clone.
 *
 * @since 0.3.0
 * @category constructors
 */
export const template: <E = never, R = never>(
  config: Config,
  options?: TemplateOptions<E, R>
) => Effect.Effect<Template, LaunchFailure | SnapshotError | E, Scope.Scope | R> = template_.template

/**
 * A layer that launches the machine and provides both `QemuMachine` and
 * `QmpClient` (the latter fails with `MachineError` when QMP is disabled).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { QemuMachine, QmpClient } from "effect-qemu"
 *
 * const program = Effect.gen(function*() {
 *   const vm = yield* QemuMachine.QemuMachine
 *   const qmp = yield* QmpClient.QmpClient
 *   return [vm.name, yield* qmp.execute("query-status")] as const
 * })
 *
 * const main = program.pipe(Effect.provide(QemuMachine.layer(QemuMachine.make({ binary: "qemu-system-x86_64" }))))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: Config
): Layer.Layer<QemuMachine | QmpClient.QmpClient, LaunchFailure | MachineError> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const machine = yield* launch(config)
      const qmp = yield* Option.match(machine.qmpClient, {
        onNone: () => Effect.fail(qmpDisabled),
        onSome: Effect.succeed
      })
      return Context.make(QemuMachine, machine).pipe(Context.add(QmpClient.QmpClient, qmp))
    })
  )

/**
 * @since 0.1.0
 * @category refinements
 */
export const isConfig: (u: unknown) => u is Config = config_.isConfig

/**
 * @since 0.1.0
 * @category refinements
 */
export const isMachine = (u: unknown): u is Machine => typeof u === "object" && u !== null && TypeId in u && "pid" in u
