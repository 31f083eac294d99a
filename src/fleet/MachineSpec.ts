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
 * @since 0.2.0
 * @category schemas
 */
export const MachineSpec = Schema.Struct({
  binary: Schema.String,
  args: Schema.optional(Schema.Array(Schema.String)),
  wrapper: Schema.optional(Schema.Array(Schema.String)),
  name: Schema.optional(Schema.String),
  baseTempDir: Schema.optional(Schema.String),
  monitorAddress: Schema.optional(MonitorAddress),
  sockDir: Schema.optional(Schema.String),
  drainConsole: Schema.optional(Schema.Boolean),
  consoleLog: Schema.optional(Schema.String),
  logDir: Schema.optional(Schema.String),
  /** Milliseconds. */
  qmpTimeout: Schema.optional(Schema.DurationFromMillis),
  /** `-machine TYPE` (`QemuMachine.setMachine`). */
  machine: Schema.optional(Schema.String),
  /** A console (`QemuMachine.setConsole`). */
  console: Schema.optional(Schema.Struct({
    deviceType: Schema.optional(Schema.String),
    index: Schema.optional(Schema.Number)
  })),
  /** `false` disables the QMP monitor (`QemuMachine.setQmpMonitor`). */
  qmp: Schema.optional(Schema.Boolean)
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
  let config = QemuMachine.make({
    binary: spec.binary,
    args: spec.args,
    wrapper: spec.wrapper,
    name: spec.name,
    baseTempDir: spec.baseTempDir,
    monitorAddress: spec.monitorAddress,
    sockDir: spec.sockDir,
    drainConsole: spec.drainConsole,
    consoleLog: spec.consoleLog,
    logDir: spec.logDir,
    qmpTimeout: spec.qmpTimeout
  })
  if (spec.machine !== undefined) config = QemuMachine.setMachine(config, spec.machine)
  if (spec.console !== undefined) config = QemuMachine.setConsole(spec.console)(config)
  if (spec.qmp === false) config = QemuMachine.setQmpMonitor(config, false)
  return config
}

/**
 * The spec of a local config. Passed file descriptors belong to this process
 * and cannot travel: a config with `addFd` fails with `InvalidSpec`.
 *
 * @since 0.2.0
 * @category conversions
 */
export const fromConfig = (config: QemuMachine.Config): Effect.Effect<MachineSpec, InvalidSpec> =>
  config.fds.length > 0
    ? Effect.fail(new InvalidSpec({ message: "a config with passed file descriptors (addFd) cannot run on another host" }))
    : Effect.succeed({
      binary: config.binary,
      args: config.args,
      wrapper: config.wrapper,
      name: config.name,
      baseTempDir: config.baseTempDir,
      monitorAddress: config.monitorAddress,
      sockDir: config.sockDir,
      drainConsole: config.drainConsole,
      consoleLog: config.consoleLog,
      logDir: config.logDir,
      qmpTimeout: config.qmpTimeout,
      machine: config.machine,
      console: config.console,
      qmp: config.qmp
    })
