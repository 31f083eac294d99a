/**
 * Every failure effect-qemu can report, as `Schema.TaggedError` classes: the
 * same errors cross the wire between a fleet's runners and clients (`cause`
 * as `Schema.Defect`: an `Error` arrives as its name, message and stack).
 *
 * The `_tag` of each class is part of the public contract: match on it with
 * `Effect.catchTag`. Each error carries the fields a caller needs to act on it
 * (command line, QEMU's output, exit code, which shutdown step failed) and a
 * readable `message`.
 *
 * @example
 * ```ts
 * import { Console, Effect } from "effect"
 * import { QemuMachine } from "effect-qemu"
 *
 * const program = Effect.gen(function*() {
 *   const vm = yield* QemuMachine.launch(QemuMachine.make({ binary: "qemu-system-x86_64" }))
 *   yield* vm.command("no-such-command")
 * }).pipe(
 *   Effect.scoped,
 *   Effect.catchTags({
 *     LaunchFailure: (e) => Console.error(e.reason, e.command, e.output),
 *     QmpCommandError: (e) => Console.error(e.command, e.errorClass, e.desc) // CommandNotFound
 *   })
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Duration, Schema } from "effect"
import { TaggedError } from "./internal/taggedError.js"


/**
 * @since 0.1.0
 * @category type ids
 */
export const ErrorTypeId: unique symbol = Symbol.for("effect-qemu/Errors")

/**
 * @since 0.1.0
 * @category type ids
 */
export type ErrorTypeId = typeof ErrorTypeId

/**
 * Why a launch failed.
 *
 * @since 0.1.0
 * @category models
 */
export type LaunchFailureReason =
  | "InvalidConfig"
  | "SpawnFailed"
  | "ExitedEarly"
  | "Timeout"
  | "QmpFailed"

/**
 * QEMU could not be started or reached.
 *
 * @since 0.1.0
 * @category errors
 */
export class LaunchFailure extends TaggedError<LaunchFailure>("effect-qemu/LaunchFailure")("LaunchFailure", {
  reason: Schema.Literal("InvalidConfig", "SpawnFailed", "ExitedEarly", "Timeout", "QmpFailed"),
  /** The exit code, when QEMU exited by itself. */
  exitCode: Schema.UndefinedOr(Schema.Number),
  /** The signal name, when QEMU died from a signal. */
  signal: Schema.UndefinedOr(Schema.String),
  /** The full command line, wrapper included, with secret values (`data=` of secret objects, `password=`) masked. */
  command: Schema.Array(Schema.String),
  /** QEMU's combined stdout and stderr so far (its echo of an option holding a secret masked the same way). */
  output: Schema.String,
  cause: Schema.optional(Schema.Defect),
  detail: Schema.optional(Schema.String)
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId

  /** @since 0.1.0 */
  override get message(): string {
    const how = this.signal !== undefined
      ? ` (killed by ${this.signal})`
      : this.exitCode !== undefined
      ? ` (exit code ${this.exitCode})`
      : ""
    const detail = this.detail ?? describeCause(this.cause)
    const output = this.output.trim()
    return `QEMU launch failed: ${this.reason}${how}${detail ? `: ${detail}` : ""}` +
      `\n  command: ${this.command.join(" ")}` +
      (output ? `\n  output: ${truncate(output, 4096)}` : "")
  }
}

/**
 * One rung of the shutdown ladder and what it did.
 *
 * @since 0.1.0
 * @category models
 */
export interface ShutdownStep {
  readonly step: "soft" | "hard" | "wait" | "cleanup"
  readonly outcome: "ok" | "failed" | "skipped"
  readonly detail: string
}

const ShutdownStep = Schema.Struct({
  step: Schema.Literal("soft", "hard", "wait", "cleanup"),
  outcome: Schema.Literal("ok", "failed", "skipped"),
  detail: Schema.String
})

/**
 * A graceful shutdown was asked for but not performed. The machine has still
 * been killed and cleaned up by the time this error is seen.
 *
 * @since 0.1.0
 * @category errors
 */
export class AbnormalShutdown extends TaggedError<AbnormalShutdown>("effect-qemu/AbnormalShutdown")("AbnormalShutdown", {
  cause: Schema.Defect,
  steps: Schema.Array(ShutdownStep)
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId

  /** @since 0.1.0 */
  override get message(): string {
    const steps = this.steps.map((s) => `${s.step}: ${s.outcome} (${s.detail})`).join("; ")
    return `QEMU did not shut down gracefully: ${describeCause(this.cause)}${steps ? ` [${steps}]` : ""}`
  }
}

/**
 * QEMU answered a command with `{ "error": ... }`.
 *
 * @since 0.1.0
 * @category errors
 */
export class QmpCommandError extends TaggedError<QmpCommandError>("effect-qemu/QmpCommandError")("QmpCommandError", {
  /** The command name that was sent. */
  command: Schema.String,
  /** The QMP error class, e.g. `GenericError`, `CommandNotFound`. */
  errorClass: Schema.String,
  /** QEMU's human readable description. */
  desc: Schema.String
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId

  /** @since 0.1.0 */
  override get message(): string {
    return `QMP command '${this.command}' failed: ${this.errorClass}: ${this.desc}`
  }
}

/**
 * Why a QMP connection failed or ended.
 *
 * @since 0.1.0
 * @category models
 */
export type QmpConnectionErrorReason =
  | "Refused"
  | "Eof"
  | "SocketError"
  | "Closed"
  | "ProtocolError"
  | "Unsupported"

const channelNames = { qmp: "QMP", console: "console", agent: "guest agent" } as const

/**
 * A socket could not be opened, or it closed (EOF, socket error, or `close`
 * called) while something was waiting on it: QMP's, or (see `channel`) the
 * serial console's or the guest agent's. The message names it:
 * `QMP connection Eof: …`, `console connection Eof: …`,
 * `guest agent connection Closed: …`.
 *
 * @since 0.1.0
 * @category errors
 */
export class QmpConnectionError
  extends TaggedError<QmpConnectionError>("effect-qemu/QmpConnectionError")("QmpConnectionError", {
    reason: Schema.Literal("Refused", "Eof", "SocketError", "Closed", "ProtocolError", "Unsupported"),
    cause: Schema.optional(Schema.Defect),
    detail: Schema.optional(Schema.String),
    /**
     * Which socket failed: `"console"` the serial console, `"agent"` the guest
     * agent's chardev, `"qmp"` (or absent: `QmpClient` and the machine's QMP
     * monitor leave it out) QMP.
     *
     * @since 0.3.0
     */
    channel: Schema.optional(Schema.Literal("qmp", "console", "agent"))
  })
{
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId

  /** @since 0.1.0 */
  override get message(): string {
    const detail = this.detail ?? describeCause(this.cause)
    return `${channelNames[this.channel ?? "qmp"]} connection ${this.reason}${detail ? `: ${detail}` : ""}`
  }
}

/**
 * QEMU (or whatever is at the other end) sent a message that is not valid QMP:
 * malformed JSON, an unexpected shape, an oversized line.
 *
 * @since 0.1.0
 * @category errors
 */
export class QmpProtocolError
  extends TaggedError<QmpProtocolError>("effect-qemu/QmpProtocolError")("QmpProtocolError", {
    message: Schema.String,
    /** The offending bytes, truncated to a few hundred characters. */
    raw: Schema.String,
    /**
     * Where a typed reply or event did not match its schema (`return.singlestep`,
     * `data.reason`), when that is what failed; absent for framing and JSON errors.
     */
    path: Schema.optional(Schema.String)
  })
{
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
}

/**
 * A deadline passed: connect, greeting, command, event wait, console expect,
 * a guest agent call, the shutdown ladder waiting for QEMU to exit. The
 * message is `OPERATION timed out after DURATION`, and the operation names
 * the channel when it is not QMP (`console expect login:`,
 * `guest agent guest-ping`).
 *
 * @since 0.1.0
 * @category errors
 */
export class QmpTimeoutError extends TaggedError<QmpTimeoutError>("effect-qemu/QmpTimeoutError")("QmpTimeoutError", {
  /** What timed out, e.g. `QMP command 'query-status'`, `console expect login:` or `guest agent sync`. */
  operation: Schema.String,
  timeout: Schema.Duration,
  /**
   * What was waited on: `"console"` the serial console, `"agent"` the guest
   * agent, `"process"` the QEMU process itself (the shutdown ladder waiting
   * for it to exit), `"qmp"` QMP. Absent: QMP (`QmpClient` and the machine's
   * QMP monitor leave it out) or a wait of the machine as a whole
   * (`waitForPort`, a migration).
   *
   * @since 0.3.0
   */
  channel: Schema.optional(Schema.Literal("qmp", "console", "agent", "process"))
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId

  /** @since 0.1.0 */
  override get message(): string {
    return `${this.operation} timed out after ${Duration.format(this.timeout)}`
  }
}

/**
 * The library was used in a way the machine's configuration does not allow:
 * QMP disabled, no console configured, a socket path too long, ...
 *
 * @since 0.1.0
 * @category errors
 */
export class MachineError extends TaggedError<MachineError>("effect-qemu/MachineError")("MachineError", {
  message: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  /** @since 0.1.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
}

/**
 * Arguments of a QMP command do not fit the live QEMU's schema (with
 * `validateArgs`): nothing was sent.
 *
 * @since 0.2.0
 * @category errors
 */
export class QmpArgumentError
  extends TaggedError<QmpArgumentError>("effect-qemu/QmpArgumentError")("QmpArgumentError", {
    /** The command whose arguments were checked. */
    command: Schema.String,
    /** Where the bad member is, e.g. `arguments.file.filename` (`arguments` for the whole object). */
    path: Schema.String,
    /** What is wrong there. */
    message: Schema.String
  })
{
  /** @since 0.2.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
}

/**
 * The QEMU guest agent answered a command with `{ "error": ... }`.
 *
 * @since 0.2.0
 * @category errors
 */
export class GuestAgentError
  extends TaggedError<GuestAgentError>("effect-qemu/GuestAgentError")("GuestAgentError", {
    /** The agent command that was sent. */
    command: Schema.String,
    /** The QAPI error class, e.g. `GenericError`, `CommandNotFound`. */
    errorClass: Schema.String,
    /** The agent's human readable description. */
    desc: Schema.String
  })
{
  /** @since 0.2.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId

  /** @since 0.2.0 */
  override get message(): string {
    return `guest agent command '${this.command}' failed: ${this.errorClass}: ${this.desc}`
  }
}

/**
 * A fleet VM is gone with the runner that hosted it: it is never re-created
 * elsewhere behind the caller's back.
 *
 * @since 0.2.0
 * @category errors
 */
export class VmLost extends TaggedError<VmLost>("effect-qemu/VmLost")("VmLost", {
  /** The VM's entity id. */
  id: Schema.String,
  /** The runner it lived on (its address), when known. */
  runner: Schema.String,
  detail: Schema.optional(Schema.String)
}) {
  /** @since 0.2.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId

  /** @since 0.2.0 */
  override get message(): string {
    return `VM ${this.id} was lost with its runner ${this.runner}${this.detail ? `: ${this.detail}` : ""}`
  }
}

/**
 * Why a snapshot could not be saved, opened, restored or cloned.
 *
 * @since 0.3.0
 * @category models
 */
export type SnapshotErrorReason = "NotMigratable" | "VersionMismatch" | "Corrupt" | "WritableDisk" | "Io"

/**
 * A snapshot, template or clone failed: QEMU cannot migrate this machine
 * (`NotMigratable`, its blockers in the message), the QEMU restoring it
 * refuses the state of another version (`VersionMismatch`, both named), the
 * saved files are missing, truncated or damaged (`Corrupt`), a template's
 * arguments open a writable disk (`WritableDisk`), or the file system failed
 * (`Io`: full disk, permissions).
 *
 * @since 0.3.0
 * @category errors
 */
export class SnapshotError extends TaggedError<SnapshotError>("effect-qemu/SnapshotError")("SnapshotError", {
  reason: Schema.Literal("NotMigratable", "VersionMismatch", "Corrupt", "WritableDisk", "Io"),
  message: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  /** @since 0.3.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId
}

/**
 * A `qemu-img` run failed (`Image.*`): a missing file, a file that is not of
 * the format asked for, an image QEMU holds (a running machine has it open:
 * "Failed to get ... lock"), a bad size, or `qemu-img` could not be run at
 * all (`exitCode` undefined, `cause` set). `stderr` is `qemu-img`'s own word.
 *
 * @since 0.3.0
 * @category errors
 */
export class ImageError extends TaggedError<ImageError>("effect-qemu/ImageError")("ImageError", {
  /** What was asked, e.g. `info`, `create`, `snapshots.apply`. */
  operation: Schema.String,
  /** `qemu-img`'s exit code; undefined when it did not run (bad input refused before, or spawn failure). */
  exitCode: Schema.UndefinedOr(Schema.Number),
  /** `qemu-img`'s standard error (or why it was not run). */
  stderr: Schema.String,
  /** The `qemu-img` command line, when it ran. */
  command: Schema.optional(Schema.Array(Schema.String)),
  cause: Schema.optional(Schema.Defect)
}) {
  /** @since 0.3.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId

  /** @since 0.3.0 */
  override get message(): string {
    const code = this.exitCode === undefined ? "" : ` (exit code ${this.exitCode})`
    const detail = this.stderr.trim() || describeCause(this.cause)
    return `qemu-img ${this.operation} failed${code}${detail ? `: ${truncate(detail, 4096)}` : ""}`
  }
}

/**
 * A fleet runner's policy (`Fleet.policy`) refused a launch or a command:
 * nothing was run or written. `what` says which rule: the `binary`, a
 * `wrapper`, a `path` of the spec, an `argument` of the command line, or a
 * QMP `command`.
 *
 * @since 0.3.0
 * @category errors
 */
export class PolicyDenied extends TaggedError<PolicyDenied>("effect-qemu/PolicyDenied")("PolicyDenied", {
  /** The VM's entity id. */
  id: Schema.String,
  what: Schema.Literal("binary", "wrapper", "path", "argument", "command"),
  reason: Schema.String
}) {
  /** @since 0.3.0 */
  readonly [ErrorTypeId]: ErrorTypeId = ErrorTypeId

  /** @since 0.3.0 */
  override get message(): string {
    return `refused by the runner's policy (${this.what}) for ${this.id}: ${this.reason}`
  }
}

/**
 * Any QMP-level failure of a command round trip, other than QEMU's own
 * `{ error }` answer.
 *
 * @since 0.1.0
 * @category models
 */
export type QmpError = QmpConnectionError | QmpProtocolError | QmpTimeoutError

/**
 * @since 0.1.0
 * @category refinements
 */
export const isEffectQemuError = (u: unknown): u is
  | LaunchFailure
  | AbnormalShutdown
  | QmpCommandError
  | QmpConnectionError
  | QmpProtocolError
  | QmpTimeoutError
  | MachineError
  | QmpArgumentError
  | GuestAgentError
  | VmLost
  | SnapshotError
  | ImageError => typeof u === "object" && u !== null && ErrorTypeId in u

const truncate = (s: string, max: number): string => s.length > max ? `${s.slice(0, max)}… (${s.length - max} more chars)` : s

/** @internal */
export const describeCause = (cause: unknown): string => {
  if (cause === undefined || cause === null) return ""
  if (typeof cause === "string") return cause
  if (typeof cause === "object" && "message" in cause && typeof cause.message === "string") {
    const code = "code" in cause && typeof cause.code === "string" ? `${cause.code}: ` : ""
    return code && !cause.message.includes(code.slice(0, -2)) ? code + cause.message : cause.message
  }
  return String(cause)
}
