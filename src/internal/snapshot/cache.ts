/**
 * A template cache directory (`QemuMachine.template`'s `cacheDir`) and its
 * pruning. Each entry `template-KEY` records its last use in the mtime of a
 * `.used` file, and each process using it (or building one) holds it with a
 * `.holder-*` file naming its host and pid, removed when it is done. Pruning
 * never removes an entry that is held by a live process or was used within
 * the last minutes; it renames an entry aside first (`.prune-*`), looks for
 * holders again and puts it back if one appeared, and ignores what another
 * pruner removed first, so processes sharing a cache may prune at once.
 */
import { Duration } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import * as Manifest from "./manifest.js"

export const USED = ".used"
const HOLDER = ".holder-"
const TRASH = ".prune-"

const ENTRY = /^template-[0-9a-f]{20}$/
const BUILDING = /^\.template-[0-9a-f]{20}-/

/** Unused for this long: removed. */
export const DEFAULT_MAX_AGE = Duration.days(30)
/** Beyond this many entries, the least recently used go first. */
export const DEFAULT_MAX_ENTRIES = 16
/** An entry of another QEMU version, manifest format or guest build goes after this long unused (or the max age, if shorter). */
export const STALE_AGE = Duration.days(7)
/** Used (or written) this recently: never removed, whatever the limits say. */
export const GRACE = Duration.minutes(10)

/**
 * The time to compare with file times: the OS's wall clock, not Effect's
 * `Clock` (a `TestClock` at 0 would stamp entries 1970 and make every other
 * process take them for long unused).
 */
export const wallClock = (): number => Date.now()

export interface Limits {
  readonly maxAge: number
  readonly maxEntries: number
}

export const limits = (options: {
  readonly cacheMaxAge?: Duration.DurationInput | undefined
  readonly cacheMaxEntries?: number | undefined
}): Limits => ({
  maxAge: options.cacheMaxAge === undefined ? Duration.toMillis(DEFAULT_MAX_AGE) : Duration.toMillis(options.cacheMaxAge),
  maxEntries: options.cacheMaxEntries ?? DEFAULT_MAX_ENTRIES
})

const errno = (e: unknown): unknown => (e as { readonly code?: unknown } | undefined)?.code

const mtime = (file: string): number | undefined => {
  try {
    return fs.statSync(file).mtimeMs
  } catch {
    return undefined
  }
}

/** When an entry was last used: its `.used` stamp, else when it was written. */
export const lastUsed = (dir: string): number | undefined =>
  mtime(nodePath.join(dir, USED)) ?? mtime(nodePath.join(dir, Manifest.MANIFEST)) ?? mtime(dir)

/** Records a use of the entry (best effort: a read-only cache is still usable). */
export const touch = (dir: string, now: number): void => {
  const file = nodePath.join(dir, USED)
  const time = new Date(now)
  try {
    fs.utimesSync(file, time, time)
  } catch (e) {
    if (errno(e) !== "ENOENT") return
    try {
      // "wx": never recreates a directory another process pruned meanwhile (the write fails with ENOENT).
      fs.writeFileSync(file, "", { flag: "wx", mode: 0o600 })
      fs.utimesSync(file, time, time)
    } catch {
      // Gone, or read-only: nothing to record.
    }
  }
}

/**
 * Holds an entry (or a directory being built) for this process: a
 * `.holder-*` file inside it. Returns its path, or `undefined` when the
 * directory is not there (never creates it).
 */
export const hold = (dir: string): string | undefined => {
  const file = nodePath.join(dir, `${HOLDER}${crypto.randomBytes(6).toString("hex")}`)
  try {
    fs.writeFileSync(file, JSON.stringify({ host: os.hostname(), pid: process.pid }), { flag: "wx", mode: 0o600 })
    return file
  } catch {
    return undefined
  }
}

export const release = (holder: string): void => {
  try {
    fs.rmSync(holder, { force: true })
  } catch {
    // Pruned with its entry, or a read-only cache: nothing to release.
  }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return errno(e) === "EPERM"
  }
}

/**
 * Whether a live process holds `dir`. A holder of a dead process on this
 * host is removed; one of another host (a shared file system) counts while
 * it is younger than `maxAge`, since its pid cannot be checked from here.
 */
const held = (dir: string, now: number, maxAge: number): boolean => {
  let names: Array<string>
  try {
    names = fs.readdirSync(dir)
  } catch {
    return false
  }
  let live = false
  for (const name of names) {
    if (!name.startsWith(HOLDER)) continue
    const file = nodePath.join(dir, name)
    let owner: { host?: unknown; pid?: unknown } | undefined
    try {
      owner = JSON.parse(fs.readFileSync(file, "utf8"))
    } catch {
      owner = undefined
    }
    const age = now - (mtime(file) ?? 0)
    const isLive = owner === undefined || typeof owner.pid !== "number"
      ? age < Duration.toMillis(GRACE) // being written, or damaged
      : owner.host !== os.hostname()
      ? age < maxAge
      : alive(owner.pid)
    if (isLive) live = true
    else release(file)
  }
  return live
}

/**
 * Removes `dir` unless a live process holds it: renamed aside first (atomic;
 * ENOENT means another pruner was first), checked again, then deleted — or
 * put back if a holder appeared between the first check and the rename.
 */
export const remove = (cacheDir: string, name: string, now: number, maxAge: number): boolean => {
  const dir = nodePath.join(cacheDir, name)
  if (held(dir, now, maxAge)) return false
  const trash = nodePath.join(cacheDir, `${TRASH}${name}-${crypto.randomBytes(6).toString("hex")}`)
  try {
    fs.renameSync(dir, trash)
  } catch {
    return false
  }
  if (held(trash, now, maxAge)) {
    try {
      fs.renameSync(trash, dir)
    } catch {
      // Rebuilt meanwhile: the aside copy goes once its holder is done (a later prune).
    }
    return false
  }
  try {
    fs.rmSync(trash, { recursive: true, force: true })
  } catch {
    // Another pruner is removing it too, or it is gone.
  }
  return true
}

type Status = "current" | "stale" | "broken"

const status = (dir: string, qemuVersion: string | undefined): Status => {
  let json: { format?: unknown; qemuVersion?: unknown }
  try {
    json = JSON.parse(fs.readFileSync(nodePath.join(dir, Manifest.MANIFEST), "utf8"))
  } catch {
    return "broken"
  }
  if (typeof json !== "object" || json === null) return "broken"
  if (json.format !== Manifest.FORMAT) return "stale"
  if (qemuVersion !== undefined && json.qemuVersion !== qemuVersion) return "stale"
  return "current"
}

export interface Pruned {
  readonly name: string
  readonly why: string
}

export interface PruneOptions extends Limits {
  readonly now: number
  /** Entries never removed (the one this process uses). */
  readonly keep?: string | undefined
  /** The version of the QEMU in use (`7.2.0`): entries of another are stale. */
  readonly qemuVersion?: string | undefined
  /** Every entry counts as stale (the cache of another guest build). */
  readonly allStale?: boolean | undefined
}

const days = (ms: number) => `${Math.round(ms / 86_400_000 * 10) / 10} days`

/**
 * Prunes one cache directory by the rules above: half-written builds and
 * broken entries past the grace period, stale entries past the stale age,
 * any entry past `maxAge`, then the least recently used (stale first) beyond
 * `maxEntries`. Touches only names it made (`template-*`, `.template-*`,
 * `.prune-*`). Never throws: a cache it cannot read is left alone.
 */
export const prune = (cacheDir: string, options: PruneOptions): ReadonlyArray<Pruned> => {
  const { maxAge, maxEntries, now } = options
  const grace = Duration.toMillis(GRACE)
  const staleAge = Math.min(maxAge, Duration.toMillis(STALE_AGE))
  const pruned: Array<Pruned> = []
  let names: Array<string>
  try {
    names = fs.readdirSync(cacheDir)
  } catch {
    return pruned
  }
  const drop = (name: string, why: string) => {
    if (remove(cacheDir, name, now, maxAge)) pruned.push({ name, why })
  }
  const entries: Array<{ name: string; used: number; stale: boolean; removable: boolean }> = []
  for (const name of names) {
    const dir = nodePath.join(cacheDir, name)
    if (name.startsWith(TRASH)) {
      // Left by a pruner that crashed, or put aside while held: removed once no one holds it.
      if (!held(dir, now, maxAge)) {
        try {
          fs.rmSync(dir, { recursive: true, force: true })
        } catch {
          // Another pruner's.
        }
      }
      continue
    }
    if (BUILDING.test(name)) {
      // A live builder holds its directory; one whose process died mid-save is garbage.
      const age = now - (mtime(dir) ?? now)
      if (age > grace) drop(name, "a save that did not finish")
      continue
    }
    if (!ENTRY.test(name)) continue
    const used = lastUsed(dir) ?? now
    const age = now - used
    if (name === options.keep) {
      entries.push({ name, used, stale: false, removable: false })
      continue
    }
    const kind = options.allStale ? "stale" : status(dir, options.qemuVersion)
    const recent = age <= grace
    if (!recent && kind === "broken") drop(name, "no readable manifest")
    else if (!recent && kind === "stale" && age > staleAge) drop(name, `stale (another QEMU, format or build), unused ${days(age)}`)
    else if (!recent && age > maxAge) drop(name, `unused ${days(age)}`)
    else entries.push({ name, used, stale: kind === "stale", removable: !recent })
  }
  if (entries.length > maxEntries) {
    const candidates = entries.filter((e) => e.removable)
      .sort((a, b) => (a.stale === b.stale ? a.used - b.used : a.stale ? -1 : 1))
    let count = entries.length
    for (const entry of candidates) {
      if (count <= maxEntries) break
      if (remove(cacheDir, entry.name, now, maxAge)) {
        pruned.push({ name: entry.name, why: `more than ${maxEntries} entries, least recently used` })
        count--
      }
    }
  }
  return pruned
}

/**
 * Prunes the sibling cache directories under `parent` whose names match
 * `pattern` (the caches of other guest builds), all their entries stale,
 * and removes a sibling once it is empty.
 */
export const pruneSiblings = (
  parent: string,
  pattern: RegExp,
  keep: string,
  options: Omit<PruneOptions, "keep" | "allStale" | "qemuVersion">
): ReadonlyArray<Pruned> => {
  let names: Array<string>
  try {
    names = fs.readdirSync(parent)
  } catch {
    return []
  }
  const pruned: Array<Pruned> = []
  for (const name of names) {
    if (name === keep || !pattern.test(name)) continue
    const dir = nodePath.join(parent, name)
    for (const p of prune(dir, { ...options, allStale: true })) pruned.push({ name: `${name}/${p.name}`, why: p.why })
    try {
      fs.rmdirSync(dir) // only when empty
    } catch {
      // Entries left, or another process's.
    }
  }
  return pruned
}
