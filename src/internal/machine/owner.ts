/**
 * Temp dirs a killed process left behind. A machine's scope removes its temp
 * dir, but a Node process killed outright (SIGKILL, a test runner's worker
 * timing out, the OOM killer) runs no finalizer: QEMU dies with it (the
 * parent-death signal), the dir stays. So every temp dir records its owner
 * (`OWNER_FILE`: pid, the pid's start time, the pid namespace and the boot),
 * and the first launch of a process under a base dir removes the dirs there
 * whose owner is gone. A dir is removed only when that is certain: ours (same
 * uid), from this boot and this pid namespace, and no process with that pid
 * and start time exists. Anything unreadable, foreign or unmarked is left.
 */
import * as fs from "node:fs"
import * as nodePath from "node:path"
import { startTime } from "../process.js"

export const OWNER_FILE = "owner"
export const PREFIX = "qemu-machine-"

interface Owner {
  readonly pid: number
  /** `Proc.startTime`: tells a reused pid apart. */
  readonly start: string
  /** `/proc/self/ns/pid`, e.g. `pid:[4026531836]`: pids of another namespace mean nothing here. */
  readonly pidns: string
  readonly boot: string
}

const readOwn = (): Owner | undefined => {
  try {
    const start = startTime(process.pid)
    if (start === undefined) return undefined
    return {
      pid: process.pid,
      start,
      pidns: fs.readlinkSync("/proc/self/ns/pid"),
      boot: fs.readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim()
    }
  } catch {
    return undefined
  }
}

let own: Owner | undefined | null = null
/** This process, or `undefined` without a readable /proc (then nothing is marked or swept). */
const self = (): Owner | undefined => (own === null ? (own = readOwn()) : own)

/** Records this process as `dir`'s owner. Best effort: an unmarked dir is only never swept. */
export const mark = (dir: string): void => {
  const me = self()
  if (me === undefined) return
  try {
    fs.writeFileSync(nodePath.join(dir, OWNER_FILE), JSON.stringify(me), { mode: 0o600 })
  } catch {
    // The launch goes on; its dir is removed with its scope as before.
  }
}

const isOwner = (value: unknown): value is Owner => {
  if (typeof value !== "object" || value === null) return false
  const o = value as Record<string, unknown>
  return Number.isInteger(o.pid) && typeof o.start === "string" && typeof o.pidns === "string" && typeof o.boot === "string"
}

/** Whether `dir` is a temp dir of a process of this boot and namespace that no longer runs. */
const abandoned = (dir: string, me: Owner, uid: number | undefined): boolean => {
  try {
    if (uid !== undefined && fs.lstatSync(dir).uid !== uid) return false
    const owner: unknown = JSON.parse(fs.readFileSync(nodePath.join(dir, OWNER_FILE), "utf8"))
    if (!isOwner(owner) || owner.boot !== me.boot || owner.pidns !== me.pidns) return false
    if (owner.pid === me.pid) return owner.start !== me.start
    return startTime(owner.pid) !== owner.start
  } catch {
    // No owner file (older, or being made), unreadable, not JSON: not ours to judge.
    return false
  }
}

const swept = new Set<string>()

/**
 * Once per base dir and process: removes the temp dirs under `base` whose
 * owner process has ended without removing them. Returns the dirs removed.
 */
export const sweepOnce = (base: string): ReadonlyArray<string> => {
  const key = nodePath.resolve(base)
  if (swept.has(key)) return []
  swept.add(key)
  const me = self()
  if (me === undefined) return []
  let entries: Array<string>
  try {
    entries = fs.readdirSync(key)
  } catch {
    return []
  }
  const uid = process.getuid?.()
  const removed: Array<string> = []
  for (const entry of entries) {
    if (!entry.startsWith(PREFIX)) continue
    const dir = nodePath.join(key, entry)
    if (!abandoned(dir, me, uid)) continue
    try {
      fs.rmSync(dir, { recursive: true, force: true })
      removed.push(dir)
    } catch {
      // Another process swept it first, or it is not ours to remove after all.
    }
  }
  return removed
}
