/**
 * The failures of a fleet VM. The library's own errors (`effect-qemu/Errors`,
 * `Schema.TaggedError`s) cross the wire between a runner and its clients as
 * they are, and are re-exported here (`PolicyDenied` among them);
 * `VmNotFound`, `VmAlreadyLaunched` and `InvalidSpec` exist only in the fleet.
 *
 * @example
 * ```ts
 * import { Console, Effect } from "effect"
 * import { Fleet } from "effect-qemu/fleet"
 *
 * const program = Effect.gen(function*() {
 *   const fleet = yield* Fleet.Fleet
 *   const vm = yield* fleet.attach("vm-1")
 *   return yield* vm.command("query-status")
 * }).pipe(
 *   Effect.catchTags({
 *     VmLost: (e) => Console.error(`${e.id} died with its runner ${e.runner}`),
 *     VmNotFound: () => Console.error("no such VM")
 *   })
 * )
 * ```
 *
 * @since 0.2.0
 */
import * as Schema from "effect/Schema"
import {
  AbnormalShutdown,
  LaunchFailure,
  MachineError,
  PolicyDenied,
  QmpArgumentError,
  QmpCommandError,
  QmpConnectionError,
  QmpProtocolError,
  QmpTimeoutError,
  VmLost
} from "../Errors.js"
import { TaggedError } from "../internal/taggedError.js"

export {
  /**
   * @since 0.2.0
   * @category errors
   */
  AbnormalShutdown,
  /**
   * @since 0.2.0
   * @category errors
   */
  LaunchFailure,
  /**
   * @since 0.2.0
   * @category errors
   */
  MachineError,
  /**
   * @since 0.3.0
   * @category errors
   */
  PolicyDenied,
  /**
   * @since 0.3.0
   * @category errors
   */
  QmpArgumentError,
  /**
   * @since 0.2.0
   * @category errors
   */
  QmpCommandError,
  /**
   * @since 0.2.0
   * @category errors
   */
  QmpConnectionError,
  /**
   * @since 0.2.0
   * @category errors
   */
  QmpProtocolError,
  /**
   * @since 0.2.0
   * @category errors
   */
  QmpTimeoutError,
  /**
   * The VM is gone with the runner that hosted it (or was released when its
   * client stopped sending heartbeats). It is never re-created behind the caller's back.
   *
   * @since 0.2.0
   * @category errors
   */
  VmLost
}

/**
 * No VM was launched under this id (or it was shut down).
 *
 * @since 0.2.0
 * @category errors
 */
export class VmNotFound extends TaggedError<VmNotFound>("effect-qemu/fleet/VmNotFound")("VmNotFound", {
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
  extends TaggedError<VmAlreadyLaunched>("effect-qemu/fleet/VmAlreadyLaunched")("VmAlreadyLaunched", {
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
export class InvalidSpec extends TaggedError<InvalidSpec>("effect-qemu/fleet/InvalidSpec")("InvalidSpec", {
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
