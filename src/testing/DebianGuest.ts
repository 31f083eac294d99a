/**
 * A real Debian 12 guest for tests, booted from `DebianImage` (systemd,
 * `qemu-guest-agent`, `openssh-server`) with Debian's cloud kernel on
 * virtio-blk and virtio-net, SSH forwarded to a free host port. Each launch
 * writes to its own qcow2 overlay: the cached base image never changes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { DebianGuest } from "effect-qemu/testing"
 *
 * const program = Effect.gen(function*() {
 *   const guest = yield* DebianGuest.launch()        // ready: systemd says "running"
 *   const { stdout } = yield* guest.ssh("uname -r")
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.3.0
 */
import { Clock, Duration, Effect } from "effect"
import type { Scope } from "effect"
import { MachineError } from "../Errors.js"
import type { GuestAgentError, ImageError, LaunchFailure, QmpError, SnapshotError } from "../Errors.js"
import type * as GuestAgent from "../GuestAgent.js"
import * as Image from "../Image.js"
import * as QemuMachine from "../QemuMachine.js"
import { build, DebianUnavailable, runHost } from "./DebianImage.js"
import type { BuildOptions, Files } from "./DebianImage.js"

/**
 * @since 0.3.0
 * @category models
 */
export interface LaunchOptions extends BuildOptions {
  /** Guest memory. Default `1024M`. */
  readonly memory?: string | undefined
  /** Virtual CPUs. Default 2. */
  readonly cpus?: number | undefined
  /** Default `tcg`. */
  readonly accel?: QemuMachine.AccelChoice | undefined
  /** More guest ports to forward (each to a free host port); 22 always is. */
  readonly forwards?: ReadonlyArray<number> | undefined
  /** How long to wait for "system running". Default 180 seconds (a TCG boot takes 30-90 s). */
  readonly bootTimeout?: Duration.DurationInput | undefined
  /** The serial console's log file. */
  readonly consoleLog?: string | undefined
}

/**
 * What `ssh` returned.
 *
 * @since 0.3.0
 * @category models
 */
export interface SshResult {
  /** The remote command's exit status (255: ssh itself failed). */
  readonly exitCode: number
  readonly stdout: string
  readonly stderr: string
}

/**
 * A booted Debian guest.
 *
 * @since 0.3.0
 * @category models
 */
export interface Guest {
  readonly vm: QemuMachine.Machine
  readonly agent: GuestAgent.GuestAgent.Service
  readonly files: Files
  /** This guest's own disk: a qcow2 overlay over `files.disk`, removed at close. */
  readonly disk: string
  /** The host port on 127.0.0.1 forwarded to the guest's SSH port. */
  readonly sshPort: number
  /** From launch to systemd's "running". */
  readonly bootTime: Duration.Duration
  /** What `systemctl is-system-running --wait` said (`running`). */
  readonly systemState: string
  /**
   * Runs a shell command as root over SSH through the forwarded port, with
   * the host's OpenSSH client (`ssh`), not an npm SSH library: it is on
   * every machine that runs QEMU, follows the user's OpenSSH expectations
   * (algorithms, `-o` options, debugging with `-v`), and adds no dependency
   * with its own crypto to this package. Host keys are not checked (the
   * guest is local and rebuilt at will).
   */
  readonly ssh: (
    command: string,
    options?: { readonly input?: string | undefined; readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<SshResult, MachineError>
}

const sshArgs = (files: Files, port: number): Array<string> => [
  "-i", files.privateKey,
  "-p", String(port),
  "-o", "IdentitiesOnly=yes",
  "-o", "StrictHostKeyChecking=no",
  "-o", "UserKnownHostsFile=/dev/null",
  "-o", "LogLevel=ERROR",
  "-o", "BatchMode=yes",
  "-o", "ConnectTimeout=10",
  "root@127.0.0.1"
]

/**
 * The machine configuration of a Debian guest over `disk` (an overlay).
 *
 * @since 0.3.0
 * @category constructors
 */
export const config = (files: Files, disk: string, options: LaunchOptions = {}): QemuMachine.Config =>
  QemuMachine.make({ binary: "qemu-system-x86_64", drainConsole: true, consoleLog: options.consoleLog }).pipe(
    QemuMachine.setMachine("q35"),
    QemuMachine.setAccel(options.accel ?? "tcg"),
    QemuMachine.setConsole(),
    QemuMachine.addGuestAgent,
    QemuMachine.addDisk({ path: disk, format: "qcow2", id: "root" }),
    QemuMachine.addNetwork({ forwards: [{ guest: 22 }, ...(options.forwards ?? []).map((guest) => ({ guest }))] }),
    QemuMachine.addArgs(
      "-m", options.memory ?? "1024M",
      "-smp", String(options.cpus ?? 2),
      "-kernel", files.kernel,
      "-initrd", files.initrd,
      "-append", "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=false"
    )
  )

type GuestError = DebianUnavailable | ImageError | LaunchFailure | MachineError | GuestAgentError | QmpError

/** Waits for the agent, then for systemd to settle; fails unless it says `running`. */
const waitRunning = (vm: QemuMachine.Machine, timeout: Duration.Duration): Effect.Effect<string, GuestError> =>
  Effect.gen(function*() {
    const agent = yield* vm.guestAgent({ timeout })
    const state = yield* agent.exec("/usr/bin/systemctl", { args: ["is-system-running", "--wait"], timeout })
    const systemState = Buffer.from(state.stdout).toString("utf8").trim()
    if (systemState !== "running") {
      const failed = yield* agent.exec("/usr/bin/systemctl", { args: ["--failed", "--no-legend", "--plain"] })
      return yield* Effect.fail(new DebianUnavailable({
        reason: `systemd reports the system ${systemState || `(exit ${state.exitCode})`}, not running`,
        output: Buffer.from(failed.stdout).toString("utf8")
      }))
    }
    return systemState
  })

/** The handle around a running guest: SSH answering on its forward. */
const makeGuest = (
  vm: QemuMachine.Machine,
  files: Files,
  disk: string,
  started: number,
  systemState: string
): Effect.Effect<Guest, GuestError> =>
  Effect.gen(function*() {
    const agent = yield* vm.guestAgent()
    const bootTime = Duration.millis((yield* Clock.currentTimeMillis) - started)
    const sshPort = yield* vm.forwardedPort(22)
    yield* vm.waitForPort(22, { timeout: "60 seconds" }).pipe(
      Effect.mapError((e) => new DebianUnavailable({ reason: `ssh does not answer: ${e.message}`, output: "" }))
    )
    const ssh: Guest["ssh"] = (command, sshOptions) =>
      runHost("ssh", [...sshArgs(files, sshPort), command], sshOptions?.input ?? "").pipe(
        Effect.timeout(sshOptions?.timeout ?? Duration.seconds(120)),
        Effect.mapError((cause) =>
          new MachineError({ message: `ssh ${command}: ${cause._tag === "TimeoutException" ? "timed out" : cause.message}`, cause })
        )
      )
    return { vm, agent, files, disk, sshPort, bootTime, systemState, ssh }
  })

/**
 * Boots a Debian guest on its own overlay and waits until systemd reports the
 * system running, asked through the guest agent
 * (`systemctl is-system-running --wait`), and SSH answers on its forward.
 * Closing the scope stops QEMU and removes the overlay.
 *
 * @since 0.3.0
 * @category constructors
 */
export const launch = (
  options: LaunchOptions = {}
): Effect.Effect<Guest, GuestError, Scope.Scope> =>
  Effect.gen(function*() {
    const files = yield* build(options)
    const disk = yield* Image.overlay(files.disk, { baseFormat: "qcow2" })
    const started = yield* Clock.currentTimeMillis
    const vm = yield* QemuMachine.launch(config(files, disk, options))
    const bootTimeout = Duration.decode(options.bootTimeout ?? Duration.seconds(180))
    const systemState = yield* waitRunning(vm, bootTimeout)
    return yield* makeGuest(vm, files, disk, started, systemState)
  }).pipe(Effect.withSpan("DebianGuest.launch"))

/**
 * A booted Debian guest to clone (see {@link template}).
 *
 * @since 0.3.0
 * @category models
 */
export interface Template {
  readonly template: QemuMachine.Template
  readonly files: Files
  /**
   * A guest in the template's state (systemd running, agent answering):
   * its RAM copy-on-write from the template's, its own disk overlay, its own
   * free host port for SSH. Stopped and removed when its scope closes.
   */
  readonly clone: () => Effect.Effect<Guest, GuestError | SnapshotError, Scope.Scope>
}

/** The clone's own disk overlay, from its command line. */
const diskOf = (vm: QemuMachine.Machine, fallback: string): string => {
  const drive = vm.args.find((a) => a.startsWith("if=none,id=root,file="))
  if (drive === undefined) return fallback
  return drive.slice("if=none,id=root,file=".length).split(/,(?!,)/)[0].replace(/,,/g, ",")
}

/**
 * Options of {@link template}: those of a launch, and spares.
 *
 * @since 0.3.0
 * @category models
 */
export interface TemplateOptions extends LaunchOptions {
  /**
   * QEMUs kept started ahead, paused and waiting for the template's state, each with its own
   * disk overlay and forwarded ports (see `QemuMachine.TemplateOptions`): a clone that takes one
   * only loads its state. Default: 0.
   */
  readonly spares?: number | undefined
}

/**
 * Boots one Debian guest to "system running" and keeps it as a template
 * (`QemuMachine.template`): clones start from that state in a fraction of a
 * boot, each with its own disk overlay and forwarded ports. The base image
 * is not changed.
 *
 * @since 0.3.0
 * @category constructors
 */
export const template = (
  options: TemplateOptions = {}
): Effect.Effect<Template, GuestError | SnapshotError, Scope.Scope> =>
  Effect.gen(function*() {
    const files = yield* build(options)
    const disk = yield* Image.overlay(files.disk, { baseFormat: "qcow2" })
    const bootTimeout = Duration.decode(options.bootTimeout ?? Duration.seconds(180))
    let systemState = ""
    const tpl = yield* QemuMachine.template(config(files, disk, options), {
      prepare: (vm) => Effect.map(waitRunning(vm, bootTimeout), (state) => (systemState = state)),
      spares: options.spares
    })
    const clone = () =>
      Effect.gen(function*() {
        const started = yield* Clock.currentTimeMillis
        const vm = yield* tpl.clone()
        return yield* makeGuest(vm, files, diskOf(vm, disk), started, systemState || "running")
      }).pipe(Effect.withSpan("DebianGuest.clone"))
    return { template: tpl, files, clone }
  }).pipe(Effect.withSpan("DebianGuest.template"))
