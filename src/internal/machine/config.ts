/**
 * The immutable machine configuration: constructors, data-last combinators
 * and the pure command line (the seed's `_base_args`).
 */
import { Duration, Pipeable } from "effect"
import { dual } from "effect/Function"
import type * as Api from "../../QemuMachine.js"
import { guestAgentArgs } from "../guestAgent/args.js"
import { networkArgs, toForward } from "./network.js"

export const TypeId: Api.TypeId = Symbol.for("effect-qemu/QemuMachine") as Api.TypeId

type Fields = Omit<Api.Config, Api.TypeId | "pipe">

const ConfigProto = {
  [TypeId]: TypeId,
  pipe() {
    // eslint-disable-next-line prefer-rest-params
    return Pipeable.pipeArguments(this, arguments)
  }
}

const makeConfig = (fields: Fields): Api.Config => Object.assign(Object.create(ConfigProto), fields)

const update = (self: Api.Config, patch: Partial<Fields>): Api.Config => makeConfig({ ...self, ...patch })

export const make = (options: Api.Options): Api.Config =>
  makeConfig({
    binary: options.binary,
    args: [...(options.args ?? [])],
    wrapper: [...(options.wrapper ?? [])],
    name: options.name,
    baseTempDir: options.baseTempDir ?? "/var/tmp",
    monitorAddress: options.monitorAddress,
    sockDir: options.sockDir,
    drainConsole: options.drainConsole ?? options.consoleLog !== undefined,
    consoleLog: options.consoleLog,
    logDir: options.logDir,
    qmpTimeout: Duration.decode(options.qmpTimeout ?? Duration.seconds(30)),
    eventCacheSize: options.eventCacheSize,
    eventCacheBytes: options.eventCacheBytes,
    eventStreamBuffer: options.eventStreamBuffer,
    validateArgs: options.validateArgs ?? false,
    machine: undefined,
    accel: undefined,
    console: undefined,
    qmp: true,
    guestAgent: false,
    fds: [],
    disks: [],
    networks: []
  })

export const addArgs = (...args: ReadonlyArray<string>) => (self: Api.Config): Api.Config =>
  update(self, { args: [...self.args, ...args] })

export const setMachine: {
  (machineType: string): (self: Api.Config) => Api.Config
  (self: Api.Config, machineType: string): Api.Config
} = dual(2, (self: Api.Config, machineType: string): Api.Config => update(self, { machine: machineType }))

export const setAccel: {
  (accel: Api.AccelChoice): (self: Api.Config) => Api.Config
  (self: Api.Config, accel: Api.AccelChoice): Api.Config
} = dual(2, (self: Api.Config, accel: Api.AccelChoice): Api.Config => update(self, { accel }))

export const setConsole =
  (options: { readonly deviceType?: string | undefined; readonly index?: number | undefined } = {}) =>
  (self: Api.Config): Api.Config => update(self, { console: { deviceType: options.deviceType, index: options.index ?? 0 } })

export const setQmpMonitor: {
  (enabled: boolean): (self: Api.Config) => Api.Config
  (self: Api.Config, enabled: boolean): Api.Config
} = dual(2, (self: Api.Config, enabled: boolean): Api.Config => update(self, { qmp: enabled }))

export const addMonitorNull = (self: Api.Config): Api.Config => update(self, { args: [...self.args, "-monitor", "null"] })

export const addGuestAgent = (self: Api.Config): Api.Config => update(self, { guestAgent: true })

export const addFd = (passed: Api.PassedFd) => (self: Api.Config): Api.Config => {
  const options = [`fd=${passed.fd}`, `set=${passed.fdset}`, `opaque=${passed.opaque}`]
  if (passed.opts) options.push(passed.opts)
  return update(self, { args: [...self.args, "-add-fd", options.join(",")], fds: [...self.fds, passed] })
}

const formatOf = (path: string): string => (/\.qcow2$/i.test(path) ? "qcow2" : "raw")

export const addDisk = (disk: Api.DiskOptions) => (self: Api.Config): Api.Config => {
  const id = disk.id ?? `disk${self.disks.length}`
  const added: Api.Disk = { path: disk.path, format: disk.format ?? formatOf(disk.path), readOnly: disk.readOnly ?? false, id }
  return update(self, { disks: [...self.disks, added] })
}

export const addNetwork = (options: Api.NetworkOptions = {}) => (self: Api.Config): Api.Config => {
  const networks = self.networks ?? []
  const added: Api.Network = { id: options.id ?? `net${networks.length}`, forwards: (options.forwards ?? []).map(toForward) }
  return update(self, { networks: [...networks, added] })
}

/** QEMU's option syntax doubles a comma inside a value. */
const escapeOption = (value: string): string => value.replace(/,/g, ",,")

export const diskArgs = (disk: Api.Disk): Array<string> => [
  "-drive",
  `if=none,id=${disk.id},file=${escapeOption(disk.path)},format=${disk.format}${disk.readOnly ? ",readonly=on" : ""}`,
  "-device",
  `virtio-blk-pci,drive=${disk.id},id=${disk.id}-dev`
]

type Sockets = Pick<Api.Resolved, "monitorAddress" | "consolePath"> & { readonly guestAgentPath?: string | undefined }

export const baseArgs = (config: Api.Config, resolved: Sockets): Array<string> => {
  const args = ["-display", "none", "-vga", "none"]
  if (config.qmp && resolved.monitorAddress !== undefined) {
    const address = resolved.monitorAddress
    const chardev = typeof address === "string"
      ? `socket,id=mon,path=${address}`
      : `socket,id=mon,host=${address.host},port=${address.port}`
    args.push("-chardev", chardev, "-mon", "chardev=mon,mode=control")
  }
  if (config.machine !== undefined) args.push("-machine", config.machine)
  // `auto` is resolved by launch before the command line is built; left unresolved, QEMU's default (TCG) applies.
  if (config.accel !== undefined && config.accel !== "auto") args.push("-accel", config.accel)
  if (config.console) {
    for (let i = 0; i < config.console.index; i++) args.push("-serial", "null")
    args.push("-chardev", `socket,id=console,path=${resolved.consolePath},server=on,wait=off`)
    if (config.console.deviceType === undefined) args.push("-serial", "chardev:console")
    else args.push("-device", `${config.console.deviceType},chardev=console`)
  }
  if (config.guestAgent && resolved.guestAgentPath !== undefined) args.push(...guestAgentArgs(resolved.guestAgentPath))
  for (const disk of config.disks ?? []) args.push(...diskArgs(disk))
  for (const network of config.networks ?? []) args.push(...networkArgs(network))
  return args
}

export const commandLine = (config: Api.Config, resolved: Sockets): Array<string> => [
  ...config.wrapper,
  config.binary,
  ...baseArgs(config, resolved),
  ...config.args
]

export const isConfig = (u: unknown): u is Api.Config =>
  typeof u === "object" && u !== null && TypeId in u && "binary" in u
