/**
 * Helpers for `QemuMachine` tests: a `-machine none` config rooted in a
 * private base temp dir (so leftover checks see only this test's files), leak
 * probes for that dir, and a logger that records what the library logs.
 */
import { Duration, Effect, Logger } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import { QemuMachine } from "../../src/index.js"
import * as Proc from "../../src/internal/process.js"
import { QEMU } from "./qemu.js"

/** A guestless machine whose temp dir is created under `base`. */
export const noneConfig = (base: string, options: Omit<QemuMachine.Options, "binary" | "baseTempDir"> = {}) =>
  QemuMachine.make({ binary: QEMU, baseTempDir: base, ...options }).pipe(QemuMachine.setMachine("none"))

/** Everything left in a private base dir. */
export const leftovers = (base: string): Array<string> => fs.readdirSync(base)

/** Live processes whose command line mentions `text` (e.g. a private base dir). */
export const processesMentioning = (text: string): Array<number> => {
  try {
    return cp.execFileSync("pgrep", ["-f", "--", text], { encoding: "utf8" })
      .trim()
      .split("\n")
      .filter(Boolean)
      .map(Number)
      .filter((pid) => pid !== process.pid && Proc.isAlive(pid))
  } catch {
    return []
  }
}

/** Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held. */
export const pollUntil = (condition: () => boolean, timeout: Duration.DurationInput) =>
  Effect.gen(function*() {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(timeout))
    while (!condition()) {
      if (Date.now() >= deadline) return false
      yield* Effect.sleep("10 millis")
    }
    return true
  })

const render = (message: unknown): string =>
  Array.isArray(message) ? message.map(render).join(" ") : typeof message === "string" ? message : String(message)

/** A logger layer that replaces the default one and records `LEVEL message` lines. */
export const captureLogs = () => {
  const messages: Array<string> = []
  const layer = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ logLevel, message }) => {
      messages.push(`${logLevel.label} ${render(message)}`)
    })
  )
  return { messages, layer }
}
