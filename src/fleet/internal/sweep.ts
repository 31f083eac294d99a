/**
 * What a dead runner leaves on its host: QEMU dies with it (the exec helper's
 * parent-death signal), but the VM's temp dir stays. A runner on the same host
 * that answers `VmLost` for the id removes it once no process uses it.
 */
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Proc from "../../internal/process.js"
import type { Record } from "./registry.js"

/** Live (not zombie) processes whose command line mentions `text`. */
const inUse = (text: string): boolean =>
  Fs.readdirSync("/proc").some((entry) => {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) return false
    try {
      if (!Proc.isAlive(Number(entry))) return false
      return Fs.readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(text)
    } catch {
      return false
    }
  })

export const leftovers = (record: Record): Effect.Effect<void> => {
  const dir = record.tempDir
  if (
    dir === undefined || record.host !== Os.hostname() || !Path.isAbsolute(dir) ||
    !Path.basename(dir).startsWith("qemu-") || !Fs.existsSync(dir)
  ) return Effect.void
  return Effect.sync(() => inUse(dir)).pipe(
    Effect.repeat({ while: (busy) => busy, schedule: Schedule.spaced("200 millis").pipe(Schedule.upTo("15 seconds")) }),
    Effect.flatMap((busy) =>
      busy
        ? Effect.logWarning(`fleet: ${dir} of a lost VM is still in use; left in place`)
        : Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
    ),
    Effect.catchAllCause((cause) => Effect.logDebug("fleet: could not remove a lost VM's temp dir", cause))
  )
}
