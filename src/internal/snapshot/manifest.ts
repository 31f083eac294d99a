/**
 * A snapshot on disk: the directory layout, `manifest.json` (written last,
 * so its presence means the snapshot is complete), the config's JSON form,
 * and opening one back with its files checked.
 */
import { Duration, Effect } from "effect"
import * as fs from "node:fs"
import * as nodePath from "node:path"
import { describeCause, SnapshotError } from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"
import type * as SnapshotApi from "../../Snapshot.js"
import * as Config from "../machine/config.js"

export const TypeId: SnapshotApi.TypeId = Symbol.for("effect-qemu/Snapshot") as SnapshotApi.TypeId

export const MANIFEST = "manifest.json"
export const STATE = "state.bin"
export const FORMAT = 1

export const ioError = (what: string) => (cause: unknown) =>
  new SnapshotError({ reason: "Io", message: `${what}: ${describeFsFailure(cause)}`, cause })

export const describeFsFailure = (e: unknown): string => {
  const code = (e as { readonly code?: unknown } | undefined)?.code
  if (code === "ENOSPC") return "the file system is full (ENOSPC)"
  if (code === "EDQUOT") return "the disk quota is exhausted (EDQUOT)"
  return describeCause(e)
}

const corrupt = (dir: string, detail: string, cause?: unknown) =>
  new SnapshotError({ reason: "Corrupt", message: `snapshot ${dir}: ${detail}`, cause })

/** Config fields that belong to one running machine, not to what it is: a restore gets its own. */
const PER_MACHINE = new Set(["name", "monitorAddress", "sockDir", "consoleLog", "logDir", "fds"])

export const encodeConfig = (config: Api.Config): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(config)) {
    if (PER_MACHINE.has(key) || typeof value === "function" || value === undefined) continue
    out[key] = Duration.isDuration(value) ? { $duration: Duration.toMillis(value) } : value
  }
  return out
}

export const decodeConfig = (json: Record<string, unknown>): Api.Config => {
  const base = Config.make({ binary: String(json.binary) })
  const fields: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(json)) {
    fields[key] = typeof value === "object" && value !== null && "$duration" in value
      ? Duration.millis(Number((value as { $duration: unknown }).$duration))
      : value
  }
  return Object.assign(Object.create(Object.getPrototypeOf(base)), base, fields) as Api.Config
}

/** What the manifest records beside the public fields: the files a template adds. */
export interface Extra {
  /** The RAM file of a template (relative to the dir) and its size in bytes. */
  readonly memory?: { readonly file: string; readonly size: number } | undefined
  /** The disk overlays a template froze, by drive id (relative to the dir). */
  readonly disks?: Readonly<Record<string, string>> | undefined
  readonly stateBytes: number
}

export interface Json {
  readonly format: number
  readonly qemuVersion: string
  readonly machineType: string
  readonly config: Record<string, unknown>
  readonly createdAt: string
  readonly bytes: number
  readonly extra: Extra
}

/** A snapshot as this library holds it: the public fields and what its files are. */
export interface Internal extends SnapshotApi.Snapshot {
  readonly extra: Extra
}

export const internal = (snapshot: SnapshotApi.Snapshot): Internal => snapshot as Internal

export const makeSnapshot = (dir: string, json: Json): Internal => ({
  [TypeId]: TypeId,
  dir,
  stateFile: nodePath.join(dir, STATE),
  manifest: {
    qemuVersion: json.qemuVersion,
    machineType: json.machineType,
    config: decodeConfig(json.config),
    createdAt: new Date(json.createdAt),
    bytes: json.bytes
  },
  extra: json.extra
})

export const write = (dir: string, json: Json): Effect.Effect<void, SnapshotError> =>
  Effect.try({
    try: () => {
      const tmp = nodePath.join(dir, `${MANIFEST}.tmp`)
      fs.writeFileSync(tmp, JSON.stringify(json, null, 2) + "\n", { mode: 0o600 })
      fs.renameSync(tmp, nodePath.join(dir, MANIFEST))
    },
    catch: ioError(`cannot write the manifest in ${dir}`)
  })

const sizeOf = (file: string): number | undefined => {
  try {
    return fs.statSync(file).size
  } catch {
    return undefined
  }
}

/** Reads a snapshot directory and checks that its files are there, whole. */
export const open = (dir: string): Effect.Effect<Internal, SnapshotError> =>
  Effect.gen(function*() {
    const text = yield* Effect.try({
      try: () => fs.readFileSync(nodePath.join(dir, MANIFEST), "utf8"),
      catch: (e) =>
        (e as { code?: unknown }).code === "ENOENT"
          ? corrupt(dir, `no ${MANIFEST} (not a snapshot, or one whose save did not finish)`, e)
          : ioError(`cannot read ${nodePath.join(dir, MANIFEST)}`)(e)
    })
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as Json,
      catch: (e) => corrupt(dir, `${MANIFEST} is not JSON: ${describeCause(e)}`, e)
    })
    if (
      typeof json !== "object" || json === null || json.format !== FORMAT || typeof json.machineType !== "string" ||
      typeof json.qemuVersion !== "string" || typeof json.config !== "object" || typeof json.config?.binary !== "string" ||
      typeof json.extra?.stateBytes !== "number"
    ) {
      return yield* Effect.fail(corrupt(dir, `${MANIFEST} is not a manifest of format ${FORMAT}`))
    }
    const checks: Array<[string, number]> = [[STATE, json.extra.stateBytes]]
    if (json.extra.memory) checks.push([json.extra.memory.file, json.extra.memory.size])
    for (const [file, expected] of checks) {
      const size = sizeOf(nodePath.join(dir, file))
      if (size === undefined) return yield* Effect.fail(corrupt(dir, `${file} is missing`))
      if (size !== expected) {
        return yield* Effect.fail(corrupt(dir, `${file} has ${size} bytes, the manifest says ${expected} (truncated?)`))
      }
    }
    for (const file of Object.values(json.extra.disks ?? {})) {
      if (sizeOf(nodePath.join(dir, file)) === undefined) return yield* Effect.fail(corrupt(dir, `${file} is missing`))
    }
    return makeSnapshot(dir, json)
  })

/** Shell-quotes a path for QEMU's `exec:` migration (run by /bin/sh). */
export const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`
