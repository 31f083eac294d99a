/**
 * What a remote launch needs, as a Schema: the serialisable part of
 * `QemuMachine.Options` and its combinators. A `MachineSpec` crosses the wire to
 * the runner, which builds a `QemuMachine.Config` from it.
 *
 * @example
 * ```ts
 * import { MachineSpec } from "effect-qemu/fleet"
 *
 * const spec = MachineSpec.make({ binary: "qemu-system-x86_64", machine: "none", args: ["-nodefaults"] })
 * ```
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as QemuMachine from "../QemuMachine.js"
import { InvalidSpec } from "./FleetErrors.js"

/**
 * @since 0.2.0
 * @category schemas
 */
export const MonitorAddress = Schema.Union(
  Schema.String,
  Schema.Struct({ host: Schema.optional(Schema.String), port: Schema.Number })
)

/**
 * Every data field of a `QemuMachine.Config`, as a Schema: the one
 * declaration the fleet's spec is derived from. Passed file descriptors
 * (`fds`) belong to one process and are left out. A field the config gains
 * and this Schema lacks makes `fromConfig` fail with `InvalidSpec` naming it
 * (and the round-trip test fail), so the two cannot drift apart silently.
 *
 * @since 0.3.0
 * @category schemas
 */
export const ConfigFields = {
  binary: Schema.String,
  args: Schema.Array(Schema.String),
  wrapper: Schema.Array(Schema.String),
  name: Schema.UndefinedOr(Schema.String),
  baseTempDir: Schema.String,
  monitorAddress: Schema.UndefinedOr(MonitorAddress),
  sockDir: Schema.UndefinedOr(Schema.String),
  drainConsole: Schema.Boolean,
  consoleLog: Schema.UndefinedOr(Schema.String),
  logDir: Schema.UndefinedOr(Schema.String),
  /** Milliseconds on the wire. */
  qmpTimeout: Schema.DurationFromMillis,
  eventCacheSize: Schema.UndefinedOr(Schema.Number),
  eventCacheBytes: Schema.UndefinedOr(Schema.Number),
  eventStreamBuffer: Schema.UndefinedOr(Schema.Number),
  validateArgs: Schema.Boolean,
  /** `-machine TYPE` (`QemuMachine.setMachine`). */
  machine: Schema.UndefinedOr(Schema.String),
  /** `QemuMachine.setAccel`. */
  accel: Schema.UndefinedOr(Schema.Literal("kvm", "tcg", "hvf", "auto")),
  /** A console (`QemuMachine.setConsole`). */
  console: Schema.UndefinedOr(Schema.Struct({ deviceType: Schema.UndefinedOr(Schema.String), index: Schema.Number })),
  /** `false` disables the QMP monitor (`QemuMachine.setQmpMonitor`). */
  qmp: Schema.Boolean,
  /** `QemuMachine.addGuestAgent`. */
  guestAgent: Schema.Boolean,
  /** `QemuMachine.addDisk`. */
  disks: Schema.Array(Schema.Struct({ path: Schema.String, format: Schema.String, readOnly: Schema.Boolean, id: Schema.String })),
  /** `QemuMachine.addNetwork`. */
  networks: Schema.Array(Schema.Struct({
    id: Schema.String,
    forwards: Schema.Array(Schema.Struct({ guest: Schema.Number, host: Schema.Number, protocol: Schema.Literal("tcp", "udp") }))
  }))
}

const { binary: _binary, console: _console, ...rest } = ConfigFields

/**
 * What crosses the wire to a runner: the config's fields, each optional but
 * `binary` (a missing one takes `QemuMachine.make`'s default), `console`
 * taking `setConsole`'s options.
 *
 * @since 0.2.0
 * @category schemas
 */
export const MachineSpec = Schema.Struct({
  binary: ConfigFields.binary,
  console: Schema.optional(Schema.Struct({
    deviceType: Schema.optional(Schema.String),
    index: Schema.optional(Schema.Number)
  })),
  ...(Object.fromEntries(Object.entries(rest).map(([key, schema]) => [key, Schema.optional(schema)])) as {
    readonly [K in keyof typeof rest]: Schema.optional<(typeof rest)[K]>
  })
})

/**
 * @since 0.2.0
 * @category models
 */
export interface MachineSpec extends Schema.Schema.Type<typeof MachineSpec> {}

/**
 * @since 0.2.0
 * @category constructors
 */
export const make = (spec: MachineSpec): MachineSpec => spec

/**
 * The config a runner launches for a spec.
 *
 * @since 0.2.0
 * @category conversions
 */
export const toConfig = (spec: MachineSpec): QemuMachine.Config => {
  const base = QemuMachine.make({ binary: spec.binary, consoleLog: spec.consoleLog })
  const fields: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(spec)) if (value !== undefined) fields[key] = value
  if (spec.console !== undefined) fields.console = { deviceType: spec.console.deviceType, index: spec.console.index ?? 0 }
  return Object.assign(Object.create(Object.getPrototypeOf(base)), base, fields)
}

const validateFields = Schema.validateEither(Schema.Struct(ConfigFields), { onExcessProperty: "error" })

/**
 * The spec of a local config: every field but the passed file descriptors,
 * which belong to this process and cannot travel (a config with `addFd`
 * fails with `InvalidSpec`, as does one with a field the fleet does not know).
 *
 * @since 0.2.0
 * @category conversions
 */
export const fromConfig = (config: QemuMachine.Config): Effect.Effect<MachineSpec, InvalidSpec> => {
  if (config.fds.length > 0) {
    return Effect.fail(new InvalidSpec({ message: "a config with passed file descriptors (addFd) cannot run on another host" }))
  }
  const { fds: _fds, ...fields } = config as QemuMachine.Config & { readonly networks?: unknown }
  // a config from before networks existed has none
  const data = Object.assign({ networks: [] }, fields)
  const checked = validateFields(data)
  return checked._tag === "Right"
    ? Effect.succeed(checked.right)
    : Effect.fail(
      new InvalidSpec({ message: `this config cannot cross the wire: ${ParseResult.TreeFormatter.formatErrorSync(checked.left)}` })
    )
}
