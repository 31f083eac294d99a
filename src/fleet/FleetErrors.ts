/**
 * The failures of a fleet VM, as `Schema.TaggedError` classes so that they cross
 * the wire between a runner and its clients. Each mirrors the error of the same
 * `_tag` in `effect-qemu/Errors` (match on `_tag` either way); `VmNotFound`,
 * `VmAlreadyLaunched` and `InvalidSpec` exist only in the fleet.
 *
 * @since 0.2.0
 */
import * as Duration from "effect/Duration"
import * as Schema from "effect/Schema"
import * as Errors from "../Errors.js"

/**
 * @since 0.2.0
 * @category errors
 */
export class LaunchFailure extends Schema.TaggedError<LaunchFailure>("effect-qemu/fleet/LaunchFailure")("LaunchFailure", {
  reason: Schema.Literal("InvalidConfig", "SpawnFailed", "ExitedEarly", "Timeout", "QmpFailed", "Interrupted"),
  exitCode: Schema.optional(Schema.Number),
  signal: Schema.optional(Schema.String),
  command: Schema.Array(Schema.String),
  output: Schema.String,
  detail: Schema.optional(Schema.String)
}) {
  /** @since 0.2.0 */
  override get message(): string {
    return `QEMU launch failed (${this.reason})${this.detail ? `: ${this.detail}` : ""}`
  }
}

/**
 * @since 0.2.0
 * @category errors
 */
export class AbnormalShutdown
  extends Schema.TaggedError<AbnormalShutdown>("effect-qemu/fleet/AbnormalShutdown")("AbnormalShutdown", {
    steps: Schema.Array(Schema.Struct({
      step: Schema.Literal("soft", "hard", "wait", "cleanup"),
      outcome: Schema.Literal("ok", "failed", "skipped"),
      detail: Schema.String
    })),
    detail: Schema.String
  })
{}

/**
 * @since 0.2.0
 * @category errors
 */
export class QmpCommandError
  extends Schema.TaggedError<QmpCommandError>("effect-qemu/fleet/QmpCommandError")("QmpCommandError", {
    command: Schema.String,
    errorClass: Schema.String,
    desc: Schema.String
  })
{
  /** @since 0.2.0 */
  override get message(): string {
    return `QMP command '${this.command}' failed: ${this.errorClass}: ${this.desc}`
  }
}

/**
 * @since 0.2.0
 * @category errors
 */
export class QmpConnectionError
  extends Schema.TaggedError<QmpConnectionError>("effect-qemu/fleet/QmpConnectionError")("QmpConnectionError", {
    /** `Refused`, `Eof`, `SocketError`, `Closed`, … as in `Errors.QmpConnectionError`. */
    reason: Schema.String,
    detail: Schema.optional(Schema.String)
  })
{}

/**
 * @since 0.2.0
 * @category errors
 */
export class QmpProtocolError
  extends Schema.TaggedError<QmpProtocolError>("effect-qemu/fleet/QmpProtocolError")("QmpProtocolError", {
    message: Schema.String,
    raw: Schema.String
  })
{}

/**
 * @since 0.2.0
 * @category errors
 */
export class QmpTimeoutError
  extends Schema.TaggedError<QmpTimeoutError>("effect-qemu/fleet/QmpTimeoutError")("QmpTimeoutError", {
    operation: Schema.String,
    timeout: Schema.DurationFromMillis
  })
{
  /** @since 0.2.0 */
  override get message(): string {
    return `${this.operation} timed out after ${Duration.format(this.timeout)}`
  }
}

/**
 * @since 0.2.0
 * @category errors
 */
export class MachineError extends Schema.TaggedError<MachineError>("effect-qemu/fleet/MachineError")("MachineError", {
  message: Schema.String
}) {}

/**
 * The VM is gone with the runner that hosted it (or was released when its
 * client stopped sending heartbeats). It is never re-created behind the caller's back.
 *
 * @since 0.2.0
 * @category errors
 */
export class VmLost extends Schema.TaggedError<VmLost>("effect-qemu/fleet/VmLost")("VmLost", {
  id: Schema.String,
  runner: Schema.String,
  detail: Schema.optional(Schema.String)
}) {
  /** @since 0.2.0 */
  override get message(): string {
    return `VM ${this.id} was lost with its runner ${this.runner}${this.detail ? `: ${this.detail}` : ""}`
  }
}

/**
 * No VM was launched under this id (or it was shut down).
 *
 * @since 0.2.0
 * @category errors
 */
export class VmNotFound extends Schema.TaggedError<VmNotFound>("effect-qemu/fleet/VmNotFound")("VmNotFound", {
  id: Schema.String
}) {
  /** @since 0.2.0 */
  override get message(): string {
    return `no VM runs under id ${this.id}`
  }
}

/**
 * `launch` for an id that already runs a VM.
 *
 * @since 0.2.0
 * @category errors
 */
export class VmAlreadyLaunched
  extends Schema.TaggedError<VmAlreadyLaunched>("effect-qemu/fleet/VmAlreadyLaunched")("VmAlreadyLaunched", {
    id: Schema.String,
    runner: Schema.String
  })
{
  /** @since 0.2.0 */
  override get message(): string {
    return `a VM already runs under id ${this.id} (on ${this.runner})`
  }
}

/**
 * A config that cannot run on another host.
 *
 * @since 0.2.0
 * @category errors
 */
export class InvalidSpec extends Schema.TaggedError<InvalidSpec>("effect-qemu/fleet/InvalidSpec")("InvalidSpec", {
  message: Schema.String
}) {}

/**
 * Errors of a call on a running remote VM.
 *
 * @since 0.2.0
 * @category models
 */
export type QmpError = QmpConnectionError | QmpProtocolError | QmpTimeoutError

/**
 * @since 0.2.0
 * @category schemas
 */
export const QmpErrorSchema = Schema.Union(QmpConnectionError, QmpProtocolError, QmpTimeoutError, MachineError)

/**
 * The wire twin of a local error.
 *
 * @since 0.2.0
 * @category conversions
 */
export const fromLaunchFailure = (e: Errors.LaunchFailure): LaunchFailure =>
  new LaunchFailure({
    reason: e.reason,
    exitCode: e.exitCode,
    signal: e.signal,
    command: e.command,
    output: e.output,
    detail: e.detail ?? (e.cause === undefined ? undefined : Errors.describeCause(e.cause))
  })

/**
 * @since 0.2.0
 * @category conversions
 */
export const fromAbnormalShutdown = (e: Errors.AbnormalShutdown): AbnormalShutdown =>
  new AbnormalShutdown({ steps: e.steps, detail: Errors.describeCause(e.cause) })

/**
 * @since 0.2.0
 * @category conversions
 */
export const fromQmpError = (
  e: Errors.QmpCommandError | Errors.QmpError | Errors.MachineError | Errors.QmpArgumentError
): QmpCommandError | QmpError | MachineError => {
  switch (e._tag) {
    case "QmpCommandError":
      return new QmpCommandError({ command: e.command, errorClass: e.errorClass, desc: e.desc })
    case "QmpConnectionError":
      return new QmpConnectionError({ reason: e.reason, detail: e.detail })
    case "QmpProtocolError":
      return new QmpProtocolError({ message: e.message, raw: e.raw })
    case "QmpTimeoutError":
      return new QmpTimeoutError({ operation: e.operation, timeout: e.timeout })
    case "MachineError":
      return new MachineError({ message: e.message })
    case "QmpArgumentError":
      return new MachineError({ message: `${e.command}: ${e.path}: ${e.message}` })
  }
}

/**
 * The runner's policy (`Fleet.policy`) refused a launch or a command: nothing
 * was run or written. `what` says which rule: the `binary`, a `wrapper`, a
 * `path` of the spec, an `argument` of the command line, or a QMP `command`.
 *
 * @since 0.3.0
 * @category errors
 */
export class PolicyDenied extends Schema.TaggedError<PolicyDenied>("effect-qemu/fleet/PolicyDenied")("PolicyDenied", {
  id: Schema.String,
  what: Schema.Literal("binary", "wrapper", "path", "argument", "command"),
  reason: Schema.String
}) {
  /** @since 0.3.0 */
  override get message(): string {
    return `refused by the runner's policy (${this.what}) for ${this.id}: ${this.reason}`
  }
}
