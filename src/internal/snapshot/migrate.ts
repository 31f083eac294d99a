/**
 * The migration steps both directions share: capabilities, waiting for the
 * end of a migration (the MIGRATION event, confirmed by `query-migrate`),
 * raced against QEMU exiting and a deadline so that nothing hangs.
 */
import { Duration, Effect, Option, Stream } from "effect"
import type { QmpArgumentError, QmpCommandError, QmpError } from "../../Errors.js"
import { MachineError, QmpTimeoutError } from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"

export type Machine = Omit<Api.Machine, "snapshot">

export const MIGRATION_TIMEOUT = Duration.minutes(10)

export type MigrateError = QmpCommandError | QmpArgumentError | QmpError | MachineError

export const setCapabilities = (vm: Machine, ignoreShared: boolean) =>
  vm.command("migrate-set-capabilities", {
    capabilities: [
      // MIGRATION events are sent only with this one on.
      { capability: "events", state: true },
      { capability: "x-ignore-shared", state: ignoreShared }
    ]
  })

const greeted = (vm: Machine) => Option.map(vm.qmpClient, (client) => client.greeting.QMP.version.qemu)

/** The QEMU version a machine's greeting reported, e.g. `7.2.22`. */
export const versionOf = (vm: Machine): string =>
  Option.match(greeted(vm), { onNone: () => "unknown", onSome: (v) => `${v.major}.${v.minor}.${v.micro}` })

/** Whether the machine's QEMU reads a migration from a file it opens itself (`file:`, 8.2 and later). */
export const readsFiles = (vm: Machine): boolean =>
  Option.exists(greeted(vm), (v) => v.major > 8 || (v.major === 8 && v.minor >= 2))

export interface Outcome {
  readonly status: string
  readonly error: string | undefined
}

const exited = (vm: Machine) =>
  Stream.runDrain(Stream.takeUntil(vm.stateChanges, (s) => s._tag === "Exited")).pipe(
    Effect.zipRight(Effect.fail(new MachineError({ message: "QEMU exited during the migration" })))
  )

/**
 * Waits until the migration has completed, failed or was cancelled. Old
 * MIGRATION events (a previous snapshot's) may still be cached: each event is
 * only a hint, `query-migrate` says where the migration really is.
 */
export const awaitEnd = (vm: Machine, timeout: Duration.DurationInput = MIGRATION_TIMEOUT) => {
  const poll: Effect.Effect<Outcome, MigrateError> = Effect.gen(function*() {
    while (true) {
      const info = yield* vm.command("query-migrate")
      const status = info.status ?? "none"
      if (status === "completed" || status === "failed" || status === "cancelled") {
        return { status, error: info["error-desc"] }
      }
      yield* vm.eventsWait([["MIGRATION", { data: { status: "completed" } }], ["MIGRATION", { data: { status: "failed" } }], [
        "MIGRATION",
        { data: { status: "cancelled" } }
      ]], { timeout: Duration.seconds(1) }).pipe(Effect.catchTag("QmpTimeoutError", () => Effect.void))
    }
  })
  return Effect.raceFirst(poll, exited(vm)).pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () => new QmpTimeoutError({ operation: "migration", timeout: Duration.decode(timeout) })
    })
  )
}
