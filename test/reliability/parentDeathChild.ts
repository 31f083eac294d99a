/**
 * The child of case 5: launches N machines under `base`, prints their pids as
 * one JSON line, then waits to be SIGKILLed by the parent harness (its scope
 * never closes, so only `setpriv --pdeathsig KILL` can take the QEMUs down).
 */
import { Effect, Option } from "effect"
import { QemuMachine } from "../../src/index.js"
import { noneConfig } from "./common.js"

const [base, count] = process.argv.slice(2)

const program = Effect.gen(function*() {
  const vms = yield* Effect.forEach(
    Array.from({ length: Number(count) }),
    () => QemuMachine.launch(noneConfig(base!)),
    { concurrency: "unbounded" }
  )
  const pids = yield* Effect.forEach(vms, (vm) => Effect.map(vm.pid, Option.getOrThrow))
  // Every QEMU answers, so they are fully up when the parent pulls the plug.
  yield* Effect.forEach(vms, (vm) => vm.command("query-status"))
  process.stdout.write(JSON.stringify({ pids }) + "\n")
  return yield* Effect.never
}).pipe(Effect.scoped)

Effect.runPromise(program).catch((e) => {
  process.stderr.write(`parent-death child failed: ${String(e)}\n`)
  process.exit(3)
})
