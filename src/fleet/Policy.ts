/**
 * What a runner lets the fleet ask of it. Every launch and every QMP command
 * that reaches a runner through the fleet (the embedded runner's included)
 * passes its policy first; a refusal is `PolicyDenied { id, what, reason }`
 * and nothing is run or written.
 *
 * The default is strict, because a launch request is a command line and QMP
 * is a remote control of a process running as the runner's user:
 *
 * | rule | what | why |
 * |---|---|---|
 * | binaries by name | `binary` | only `qemu-system-*` found on the runner's `PATH` (a path in the spec must be that same file): anything else is an arbitrary program |
 * | no wrapper | `wrapper` | a wrapper is a program run with QEMU's command line (`/bin/sh -c …`) |
 * | paths inside `dirs` | `path` | `baseTempDir`, `sockDir`, `logDir`, `consoleLog`, every disk (`addDisk`) and a unix `monitorAddress` must be absolute, without `..`, and resolve (symlinks followed) inside one of the runner's `dirs` (none by default: the runner picks them); a TCP monitor is refused (anyone on the host could reach it, past this policy); a `name` is one path segment |
 * | no programs, no host files | `argument` | options that run a program or give QEMU the runner's fds are refused (`-plugin`, `-add-fd`, `exec:` anywhere, `-netdev …,script=/downscript=/helper=` other than `no`, `fd=`/`fds=`/`vhostfd=`, `-readconfig`/`-writeconfig`, `-L`, `-runas`/`-run-with`/`-chroot`/`-daemonize`, `-sandbox` — the runner sets it —, `-mon` and `-qmp`/`-monitor` other than `none`/`null`, `mon:` chardevs); options and `key=value` properties that name a host file (`-kernel`, `-drive file=`, `-chardev file/pipe/socket/serial,path=`, `-serial file:`, `-D`, `-pidfile`, `mem-path=`, `logfile=`, `romfile=`, …) must name one inside `dirs` (a bare ROM/BIOS name is looked up in QEMU's own data directory) |
 * | QMP | `command` | `human-monitor-command` is refused (HMP reaches everything QMP is checked for); `migrate`/`migrate-incoming` to `exec:` (or an `exec` channel) or to a file/socket outside `dirs`; `screendump`, `dump-guest-memory`, `pmemsave`, `memsave` … to a file outside `dirs`; `blockdev-add`, `chardev-add`, `object-add`, `netdev-add`, `device_add`, `block-export-add`, `nbd-server-start`, mirror/backup/snapshot targets … naming a host path outside `dirs`; each action of a `transaction` as the command it is |
 *
 * Then QEMU itself runs under `-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny`
 * (seccomp): even what the policy lets through cannot start a process.
 *
 * @example
 * ```ts
 * import { Fleet } from "effect-qemu/fleet"
 *
 * const url = "postgres://fleet@db.internal/fleet"
 * Fleet.runnerLayer({
 *   storage: Fleet.postgres(url),
 *   address: { host: "10.0.0.5", port: 34431 },
 *   tls: Fleet.tls({ ca: "ca.pem", cert: "runner.pem", key: "runner.key" }),
 *   policy: Fleet.policy({ dirs: ["/srv/vms"], denyCommands: ["system_reset"] })
 * })
 * ```
 *
 * @since 0.3.0
 */
import * as Effect from "effect/Effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { PolicyDenied } from "../Errors.js"
import type * as MachineSpec from "./MachineSpec.js"

/**
 * QEMU's seccomp sandbox as runners start it unless told otherwise.
 *
 * @since 0.3.0
 * @category constants
 */
export const defaultSandbox = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

/**
 * Commands refused unless `allowCommands` names them.
 *
 * @since 0.3.0
 * @category constants
 */
export const defaultDeniedCommands: ReadonlyArray<string> = ["human-monitor-command"]

/**
 * @since 0.3.0
 * @category models
 */
export interface Options {
  /**
   * Binaries a spec may name, by file name; `*` matches anything. Default
   * `["qemu-system-*"]`. They are looked up on the runner's `PATH`.
   */
  readonly binaries?: ReadonlyArray<string> | undefined
  /** The runner's directories: every path a spec or command names must lie inside one. Default none. */
  readonly dirs?: ReadonlyArray<string> | undefined
  /**
   * Commands let through without any check: taken off the default deny list
   * and out of the argument checks (e.g. `["migrate"]` for `exec:` migration;
   * the sandbox still applies).
   */
  readonly allowCommands?: ReadonlyArray<string> | undefined
  /** Commands refused on top of the defaults. */
  readonly denyCommands?: ReadonlyArray<string> | undefined
  /** The `-sandbox` option QEMU runs with, or `false` for none. Default `defaultSandbox`. */
  readonly sandbox?: string | false | undefined
}

/**
 * @since 0.3.0
 * @category models
 */
export interface Policy {
  readonly _tag: "Policy"
  readonly binaries: ReadonlyArray<string>
  readonly dirs: ReadonlyArray<string>
  readonly allowCommands: ReadonlyArray<string>
  readonly denyCommands: ReadonlyArray<string>
  readonly sandbox: string | false
}

/**
 * A policy; without options, the strict default.
 *
 * @since 0.3.0
 * @category constructors
 */
export const make = (options: Options = {}): Policy => ({
  _tag: "Policy",
  binaries: options.binaries ?? ["qemu-system-*"],
  dirs: (options.dirs ?? []).map((dir) => Path.resolve(dir)),
  allowCommands: options.allowCommands ?? [],
  denyCommands: options.denyCommands ?? [],
  sandbox: options.sandbox === undefined ? defaultSandbox : options.sandbox
})

// ---------------------------------------------------------------------------
// paths

type What = PolicyDenied["what"]

class Refusal {
  constructor(readonly what: What, readonly reason: string) {}
}

const refuse = (what: What, reason: string): never => {
  throw new Refusal(what, reason)
}

/** The real path of `target`, following symlinks as far as it exists. */
const realpath = (target: string): string => {
  const missing: Array<string> = []
  let current = target
  for (;;) {
    try {
      return Path.join(Fs.realpathSync(current), ...missing.reverse())
    } catch {
      const parent = Path.dirname(current)
      if (parent === current) return target
      missing.push(Path.basename(current))
      current = parent
    }
  }
}

const inside = (dir: string, target: string) => target === dir || target.startsWith(dir.endsWith("/") ? dir : `${dir}/`)

/** `value` is an absolute path without `..` that resolves inside one of the policy's dirs. */
const checkPath = (policy: Policy, value: string, label: string, what: What = "path"): void => {
  if (!Path.isAbsolute(value)) refuse(what, `${label}: ${JSON.stringify(value)} is not an absolute path`)
  if (value.split("/").includes("..")) refuse(what, `${label}: ${JSON.stringify(value)} contains '..'`)
  if (policy.dirs.length === 0) {
    refuse(what, `${label}: ${value}: this runner lets the fleet name no host path (its policy has no dirs)`)
  }
  const real = realpath(value)
  if (!policy.dirs.some((dir) => inside(realpath(dir), real))) {
    refuse(what, `${label}: ${value}${real === value ? "" : ` (really ${real})`} is outside the runner's dirs`)
  }
}

// ---------------------------------------------------------------------------
// binaries

const glob = (pattern: string) =>
  new RegExp(`^${pattern.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*")}$`)

const onPath = (name: string): string | undefined => {
  for (const dir of (process.env.PATH ?? "").split(Path.delimiter)) {
    if (dir === "") continue
    const candidate = Path.join(dir, name)
    try {
      Fs.accessSync(candidate, Fs.constants.X_OK)
      if (Fs.statSync(candidate).isFile()) return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

/** The binary's absolute path on the runner's PATH. */
const checkBinary = (policy: Policy, binary: string): string => {
  const name = Path.basename(binary)
  if (!policy.binaries.some((pattern) => glob(pattern).test(name))) {
    refuse("binary", `${binary} is not one of the runner's binaries (${policy.binaries.join(", ")})`)
  }
  const found = onPath(name) ?? refuse("binary", `${name} is not on the runner's PATH`)
  if (binary.includes("/") && realpath(binary) !== realpath(found)) {
    refuse("binary", `${binary} is not the runner's ${name} (${found})`)
  }
  return found
}

// ---------------------------------------------------------------------------
// command-line arguments

/** Options refused whatever their value, and why. */
const deniedOptions: Readonly<Record<string, string>> = {
  "plugin": "loads a shared object into QEMU",
  "add-fd": "hands QEMU a file descriptor of the runner",
  "readconfig": "reads options from a host file, past these checks",
  "writeconfig": "writes a host file",
  "L": "changes where QEMU loads firmware and ROMs from",
  "runas": "changes QEMU's user",
  "run-with": "changes QEMU's user or root directory",
  "chroot": "changes QEMU's root directory",
  "daemonize": "QEMU would leave the runner's control",
  "sandbox": "the runner sets the sandbox",
  "mon": "a second monitor bypasses the command policy",
  "trace": "writes host files and starts tracing backends"
}

/** Options whose value is a host file. */
const pathOptions = new Set([
  "kernel", "initrd", "dtb", "bios", "pflash", "hda", "hdb", "hdc", "hdd", "cdrom", "fda", "fdb", "mtdblock",
  "sd", "option-rom", "mem-path", "D", "pidfile", "incoming"
])

/** Options whose value is looked up in QEMU's data directory when it is a bare name. */
const dataDirOptions = new Set(["bios", "option-rom"])

/** Options taking a chardev-like `backend:…` value. */
const backendOptions = new Set(["serial", "parallel", "debugcon", "monitor", "qmp", "qmp-pretty", "gdb", "vnc", "incoming"])

/** `key=value` properties naming a host file (the last dotted segment of the key). */
const pathKeys = new Set([
  "file", "filename", "path", "mem-path", "logfile", "romfile", "kernel", "initrd", "dtb", "dumpdtb", "firmware",
  "sock", "dir", "evdev", "dev", "sysfsdev", "hostdevice", "events", "data", "snapshot-file", "target", "out", "in",
  "device", "backing-file", "x509-dir", "tftp"
])

/** Properties that name a program to run. */
const programKeys = new Set(["script", "downscript", "helper", "smb"])

/** Properties that hand QEMU the runner's file descriptors. */
const fdKeys = new Set(["fd", "fds", "vhostfd", "vhostfds"])

/** `a=1,b=x,,y` → [["a","1"],["b","x,y"]] (QEMU's option syntax, `,,` escapes a comma). */
const properties = (value: string): Array<[string, string]> => {
  const parts: Array<string> = []
  let current = ""
  for (let i = 0; i < value.length; i++) {
    if (value[i] === ",") {
      if (value[i + 1] === ",") {
        current += ","
        i++
        continue
      }
      parts.push(current)
      current = ""
    } else current += value[i]
  }
  parts.push(current)
  return parts.flatMap((part) => {
    const eq = part.indexOf("=")
    return eq > 0 ? [[part.slice(0, eq), part.slice(eq + 1)] as [string, string]] : []
  })
}

const checkProperties = (policy: Policy, option: string, value: string): void => {
  for (const [key, raw] of properties(value)) {
    const name = key.split(".").pop()!
    if (name === "guestfwd" && raw.includes("cmd:")) refuse("argument", `${option} guestfwd=…cmd:: starts a host program`)
    if (programKeys.has(name) && raw !== "no" && raw !== "") {
      refuse("argument", `${option} ${key}=${raw}: starts a host program`)
    }
    if (fdKeys.has(name)) refuse("argument", `${option} ${key}=: hands QEMU a file descriptor of the runner`)
    if (!pathKeys.has(name) || raw === "") continue
    // `device=`/`target=`/`data=`/… are ids in many options: a host file only when it looks like a path
    if ((name === "romfile" || name === "firmware") && !raw.includes("/")) continue
    if (!raw.includes("/")) {
      if (name === "file" || name === "filename" || name === "path" || name === "mem-path" || name === "logfile") {
        refuse("argument", `${option} ${key}=${raw}: a host file must be an absolute path inside the runner's dirs`)
      }
      continue
    }
    for (const part of name === "data" ? raw.split(":") : [raw]) checkPath(policy, part, `${option} ${key}=`, "argument")
  }
}

const checkBackend = (policy: Policy, option: string, value: string): void => {
  if (option === "monitor" || option === "qmp" || option === "qmp-pretty") {
    if (value !== "none" && value !== "null") refuse("argument", `-${option} ${value}: a second monitor bypasses the command policy`)
    return
  }
  if (value.startsWith("mon:")) refuse("argument", `-${option} ${value}: a monitor bypasses the command policy`)
  if (value.startsWith("fd:")) refuse("argument", `-${option} ${value}: hands QEMU a file descriptor of the runner`)
  if (value.startsWith("/dev/")) refuse("argument", `-${option} ${value}: a host device`)
  const match = /^(file|pipe|unix):([^,]*)/.exec(value)
  if (match) checkPath(policy, match[2]!, `-${option} ${match[1]}:`, "argument")
}

/** Every rule of the table above on a command line (the spec's `args` and `machine`). */
const checkArgs = (policy: Policy, args: ReadonlyArray<string>): void => {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg.includes("exec:")) refuse("argument", `${arg}: exec: starts a host program`)
    if (!arg.startsWith("-")) {
      // the guest kernel's command line is the guest's business
      if (args[i - 1] !== "-append") checkProperties(policy, args[i - 1] ?? "", arg)
      continue
    }
    const option = arg.replace(/^--?/, "")
    const denied = deniedOptions[option]
    if (denied !== undefined) refuse("argument", `-${option}: ${denied}`)
    const value = args[i + 1]
    if (value === undefined || value.startsWith("-")) continue
    if (backendOptions.has(option)) checkBackend(policy, option, value)
    if (pathOptions.has(option) && !backendOptions.has(option)) {
      if (!(dataDirOptions.has(option) && !value.includes("/"))) checkPath(policy, value, `-${option}`, "argument")
    }
  }
}

const word = /^[A-Za-z0-9_.-]+$/

/**
 * The spec a runner may launch, with its binary resolved on the runner's
 * PATH, or the refusal. The sandbox is not added here (see `sandboxArgs`).
 *
 * @since 0.3.0
 * @category checks
 */
export const checkSpec = (
  policy: Policy,
  id: string,
  spec: MachineSpec.MachineSpec
): Effect.Effect<MachineSpec.MachineSpec, PolicyDenied> =>
  attempt(id, () => {
    if (spec.wrapper !== undefined && spec.wrapper.length > 0) {
      refuse("wrapper", `a wrapper (${spec.wrapper[0]}) runs a program with QEMU's command line; the fleet takes none`)
    }
    const binary = checkBinary(policy, spec.binary)
    for (const field of ["baseTempDir", "sockDir", "logDir", "consoleLog"] as const) {
      const value = spec[field]
      if (value !== undefined) checkPath(policy, value, field)
    }
    if (typeof spec.monitorAddress === "string") checkPath(policy, spec.monitorAddress, "monitorAddress")
    else if (spec.monitorAddress !== undefined) {
      refuse("path", "monitorAddress: a TCP monitor can be reached by anyone on the host, past this policy")
    }
    if (spec.name !== undefined && (spec.name.includes("/") || spec.name.startsWith("."))) {
      refuse("path", `name: ${JSON.stringify(spec.name)} must be one path segment`)
    }
    for (const [i, disk] of (spec.disks ?? []).entries()) {
      checkPath(policy, disk.path, `disks[${i}].path`)
      // these go into -drive/-device options unescaped: one word each, no smuggled properties
      if (!word.test(disk.format) || !word.test(disk.id)) refuse("argument", `disks[${i}]: format and id must be single words`)
    }
    for (const [i, network] of (spec.networks ?? []).entries()) {
      if (!word.test(network.id)) refuse("argument", `networks[${i}].id must be a single word`)
    }
    const deviceType = spec.console?.deviceType
    if (deviceType !== undefined && !word.test(deviceType)) refuse("argument", "console.deviceType must be a single word")
    checkArgs(policy, spec.args ?? [])
    if (spec.machine !== undefined) checkArgs(policy, ["-machine", spec.machine])
    return { ...spec, binary }
  })

// ---------------------------------------------------------------------------
// QMP commands

/** Commands whose arguments may name host files: every such string is checked. */
const fileCommands = new Set([
  "migrate", "migrate-incoming", "screendump", "dump-guest-memory", "pmemsave", "memsave", "dump-skeys",
  "blockdev-add", "blockdev-reopen", "chardev-add", "chardev-change", "object-add", "netdev-add", "device_add",
  "drive-mirror", "drive-backup", "blockdev-mirror", "blockdev-backup", "blockdev-create", "blockdev-snapshot-sync",
  "blockdev-change-medium", "change", "block-commit", "block-stream", "xen-save-devices-state",
  "xen-load-devices-state", "x-blockdev-change", "snapshot-save", "block-export-add", "nbd-server-start",
  "blockdev-amend", "x-blockdev-amend"
])

const checkValue = (policy: Policy, command: string, key: string, value: unknown): void => {
  if (typeof value === "string") {
    if (value.startsWith("exec:")) refuse("command", `${command}: ${key}: exec: starts a host program`)
    if (!fileCommands.has(command)) return
    if (programKeys.has(key) && value !== "no" && value !== "") refuse("command", `${command}: ${key}: starts a host program`)
    const uri = /^(file|unix):(.*)$/.exec(value)
    if (uri) return checkPath(policy, uri[2]!, `${command}: ${key}`, "command")
    if (/^[a-z0-9+.-]+:\/\//i.test(value)) return // a network URL
    if (value.startsWith("fd:")) refuse("command", `${command}: ${key}: ${value}: names a file descriptor`)
    if (value.includes("/")) checkPath(policy, value, `${command}: ${key}`, "command")
    return
  }
  if (Array.isArray(value)) return value.forEach((item, i) => checkValue(policy, command, `${key}[${i}]`, item))
  if (typeof value === "object" && value !== null) {
    const record = value as Record<string, unknown>
    if (record.transport === "exec" || (command.startsWith("migrate") && record.type === "exec")) {
      refuse("command", `${command}: ${key}: an exec channel starts a host program`)
    }
    if (fdKeys.has(key)) refuse("command", `${command}: ${key}: names a file descriptor`)
    for (const [k, v] of Object.entries(record)) checkValue(policy, command, k, v)
  }
}

/**
 * Whether a QMP command may run on a fleet VM.
 *
 * @since 0.3.0
 * @category checks
 */
export const checkCommand = (
  policy: Policy,
  id: string,
  command: string,
  args: unknown
): Effect.Effect<void, PolicyDenied> =>
  attempt(id, () => {
    if (policy.allowCommands.includes(command)) return
    if (policy.denyCommands.includes(command) || defaultDeniedCommands.includes(command)) {
      refuse("command", `${command} is refused by the runner's policy`)
    }
    if (args === undefined) return
    // a transaction's actions are commands of their own
    if (command === "transaction" && typeof args === "object" && args !== null && "actions" in args) {
      const actions = Array.isArray(args.actions) ? args.actions : []
      for (const action of actions as ReadonlyArray<{ readonly type?: unknown; readonly data?: unknown }>) {
        const type = String(action?.type)
        if (!policy.allowCommands.includes(type)) {
          if (policy.denyCommands.includes(type)) refuse("command", `transaction: ${type} is refused by the runner's policy`)
          checkValue(policy, type, "data", action?.data)
        }
      }
      return
    }
    checkValue(policy, command, "arguments", args)
  })

/**
 * The arguments a runner adds to every QEMU it starts.
 *
 * @since 0.3.0
 * @category checks
 */
export const sandboxArgs = (policy: Policy): ReadonlyArray<string> =>
  policy.sandbox === false ? [] : ["-sandbox", policy.sandbox]

const attempt = <A>(id: string, check: () => A): Effect.Effect<A, PolicyDenied> =>
  Effect.suspend(() => {
    try {
      return Effect.succeed(check())
    } catch (error) {
      if (error instanceof Refusal) return Effect.fail(new PolicyDenied({ id, what: error.what, reason: error.reason }))
      return Effect.die(error)
    }
  })
