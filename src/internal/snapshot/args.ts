/**
 * Command-line surgery for snapshots: the recorded machine type in place of
 * an alias, RAM in a memory-backend-file, the size of `-m`, and the raw
 * writable disks a template refuses.
 */
import type * as Api from "../../QemuMachine.js"

export const MEMORY_ID = "eq-ram"

const MACHINE_FLAGS = new Set(["-machine", "-M", "--machine"])

/** A copy of `config` (its prototype kept: it is a `Config`) with `patch` over it. */
const copy = (config: Api.Config, patch: Partial<Api.Config>): Api.Config =>
  Object.assign(Object.create(Object.getPrototypeOf(config)), config, patch) as Api.Config

const hasType = (value: string) => !value.split(",")[0]!.includes("=")

/** Replaces the machine type (the part before the first comma) wherever it is set; sets it when nothing does. */
export const withMachineType = (config: Api.Config, type: string): Api.Config => {
  // `-machine accel=tcg` sets no type: only a first part without `=` is one.
  const retype = (value: string) => hasType(value) ? [type, ...value.split(",").slice(1)].join(",") : value
  const args = [...config.args]
  let typed = config.machine !== undefined && hasType(config.machine)
  for (let i = 0; i < args.length - 1; i++) {
    if (MACHINE_FLAGS.has(args[i]!) && hasType(args[i + 1]!)) {
      args[i + 1] = retype(args[i + 1]!)
      typed = true
    }
  }
  const machine = config.machine !== undefined ? retype(config.machine) : typed ? undefined : type
  return copy(config, { args, machine })
}

export const withArgs = (config: Api.Config, ...extra: ReadonlyArray<string>): Api.Config =>
  copy(config, { args: [...config.args, ...extra] })

export const withDisks = (config: Api.Config, disks: ReadonlyArray<Api.Disk>): Api.Config =>
  copy(config, { disks })

/** Flags that load a kernel for the firmware to boot directly, each with its value. */
const DIRECT_BOOT = new Set(["-kernel", "--kernel", "-initrd", "--initrd", "-append", "--append", "-dtb", "--dtb"])

/**
 * Whether a reset of this machine ends it instead (`-no-reboot`, `-action reboot=shutdown`;
 * the last one given wins, as in QEMU): its firmware never runs again.
 */
export const neverResets = (args: ReadonlyArray<string>): boolean => {
  let shutdown = false
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "-no-reboot" || args[i] === "--no-reboot") shutdown = true
    else if ((args[i] === "-action" || args[i] === "--action") && i + 1 < args.length) {
      const reboot = /(?:^|,)reboot=([^,]*)/.exec(args[++i]!)
      if (reboot) shutdown = reboot[1] === "shutdown"
    }
  }
  return shutdown
}

/**
 * Without the direct-boot flags (`-kernel`, `-initrd`, `-append`, `-dtb`): a machine
 * restored into an already booted guest that can never be reset into them again
 * need not load them (reading a 14 MB kernel is ~40 % of QEMU's start-up).
 */
export const withoutDirectBoot = (config: Api.Config): Api.Config => {
  const args: Array<string> = []
  for (let i = 0; i < config.args.length; i++) {
    if (DIRECT_BOOT.has(config.args[i]!) && i + 1 < config.args.length) i++
    else args.push(config.args[i]!)
  }
  return copy(config, { args })
}

const UNITS: Record<string, number> = { "": 2 ** 20, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }

/** Bytes of RAM `-m` asks for (QEMU's default: 128 MiB). */
export const memorySize = (args: ReadonlyArray<string>): number => {
  let value: string | undefined
  for (let i = 0; i < args.length - 1; i++) if (args[i] === "-m" || args[i] === "--m") value = args[i + 1]
  if (value === undefined) return 128 * 2 ** 20
  const size = value.split(",").map((p) => p.startsWith("size=") ? p.slice(5) : p).find((p) => !p.includes("=")) ?? "128"
  const match = /^(\d+(?:\.\d+)?)([bkmgt]?)i?b?$/i.exec(size.trim())
  if (!match) return 128 * 2 ** 20
  return Math.round(Number(match[1]) * UNITS[match[2]!.toLowerCase()]!)
}

/** RAM in `file`: share=on for the template (its writes land in the file), off for clones (copy-on-write). */
export const memoryArgs = (file: string, size: number, share: boolean): Array<string> => [
  "-machine",
  `memory-backend=${MEMORY_ID}`,
  "-object",
  `memory-backend-file,id=${MEMORY_ID},size=${size},mem-path=${file.replace(/,/g, ",,")},share=${share ? "on" : "off"}`
]

/** The same RAM, anonymous: a snapshot of a clone carries its RAM in the stream. */
export const anonymousMemoryArgs = (size: number): Array<string> => [
  "-machine",
  `memory-backend=${MEMORY_ID}`,
  "-object",
  `memory-backend-ram,id=${MEMORY_ID},size=${size}`
]

const options = (value: string): Map<string, string> =>
  new Map(value.split(/,(?!,)/).map((p) => {
    const eq = p.indexOf("=")
    return eq < 0 ? [p, "on"] : [p.slice(0, eq), p.slice(eq + 1)]
  }))

const isOn = (v: string | undefined) => v === "on" || v === "true" || v === "yes"

/**
 * Raw arguments that open a disk for writing: a template shares its disks
 * with every clone, so only read-only ones (or `addDisk`'s) are allowed.
 */
export const writableDisks = (args: ReadonlyArray<string>): Array<string> => {
  const found: Array<string> = []
  for (let i = 0; i < args.length; i++) {
    const flag = args[i]!
    const value = args[i + 1] ?? ""
    if (/^--?(hd[a-d]|mtdblock|sd|pflash)$/.test(flag)) found.push(`${flag} ${value}`)
    else if (flag === "-drive" || flag === "--drive") {
      const o = options(value)
      const media = o.get("media")
      if (!isOn(o.get("readonly")) && !isOn(o.get("snapshot")) && media !== "cdrom" && (o.has("file") || o.has("if"))) {
        found.push(`${flag} ${value}`)
      }
    } else if (flag === "-blockdev" || flag === "--blockdev") {
      const o = options(value)
      // A format node over a file node declared separately: the file node decides.
      if (!isOn(o.get("read-only")) && !isOn(o.get("readonly")) && (o.has("filename") || o.has("file.filename"))) {
        found.push(`${flag} ${value}`)
      }
    }
  }
  return found
}
