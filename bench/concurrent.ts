/**
 * One round of "N machines launched concurrently in one process", run in a
 * fresh process by bench/index.ts so that the RSS delta includes first use
 * (JIT, buffers) and not memory some earlier measurement already grew.
 *
 *   tsx bench/concurrent.ts library|raw N [COMMANDS]   → prints one JSON line
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
const result = fiber ? await Effect.runPromise(Fiber.join(fiber)) : await Raw.concurrentLaunch(count, commands, gc)
process.stdout.write(`${JSON.stringify({ ...result, tempDirs: [...Lib.tempDirs] })}\n`)
