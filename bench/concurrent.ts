/**
 * One round of "N machines launched concurrently in one process", run in a
 * fresh process by bench/index.ts so that the RSS delta includes first use
 * (JIT, buffers) and not memory some earlier measurement already grew.
 *
 *   tsx bench/concurrent.ts library|raw N [COMMANDS]   → prints one JSON line
 *   tsx bench/concurrent.ts raw-effect N COMMANDS       → the raw client's commands driven from Effect fibers
 *   tsx bench/concurrent.ts guests N                   → N test guests to the shell prompt (library only)
 */
import { Effect, Fiber } from "effect"
import * as fs from "node:fs"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import * as Lib from "./library.js"
import * as Raw from "./raw.js"

v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void
const cleanUp = () => {
  Raw.killAll()
  for (const dir of Lib.tempDirs) fs.rmSync(dir, { recursive: true, force: true })
}
process.on("exit", cleanUp)

const [side, countText, commandsText] = process.argv.slice(2)
const count = Number(countText ?? 32)
const commands = Number(commandsText ?? 0)
const fiber: Fiber.RuntimeFiber<object, unknown> | undefined = side === "library"
  ? Effect.runFork(Lib.concurrentLaunch(count, commands, gc))
  : side === "guests"
  ? Effect.runFork(Lib.guestsBoot(count, gc))
  : undefined
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  // Interrupting closes the scope of every machine launched so far (and of those mid-launch).
  process.once(signal, () => {
    const closing = fiber ? Effect.runPromise(Fiber.interrupt(fiber)) : Promise.resolve()
    closing.finally(() => process.exit(130))
  })
}
// What a user of a promise-based client would write in an Effect program: one fiber per
// machine, each command an `Effect.promise`. The library's figure minus this one is the
// library's own cost; this one minus the raw's is the cost of driving from Effect.
const driveFromEffect = (machines: ReadonlyArray<Raw.RawMachine>, n: number) =>
  Effect.runPromise(Effect.forEach(
    machines,
    (m) => Effect.repeatN(Effect.promise(() => m.qmp.execute("query-status")), n - 1),
    { concurrency: "unbounded", discard: true }
  ))
const result = fiber
  ? await Effect.runPromise(Fiber.join(fiber))
  : await Raw.concurrentLaunch(count, commands, gc, side === "raw-effect" ? driveFromEffect : Raw.drivePromises)
process.stdout.write(`${JSON.stringify({ ...result, tempDirs: [...Lib.tempDirs] })}\n`)
