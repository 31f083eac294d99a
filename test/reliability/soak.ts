/**
 * Case 4: soak. Many launch → command → shutdown cycles of a real QEMU
 * (`-machine none`); open fds, child processes, temp dirs and the heap (after
 * a full GC) are compared between a warmed-up baseline and the end.
 *
 * Each cycle is a try (it must succeed); "leaked" counts resources that grew
 * beyond noise over the whole soak.
 */
import { Effect, Exit } from "effect"
import { QemuMachine } from "../../src/index.js"
import type { CaseResult, Context } from "./common.js"
import {
  bounded,
  captureLogs,
  describeExit,
  fail,
  fdCount,
  heapAfterGc,
  leftovers,
  mib,
  newResult,
  newTracker,
  noneConfig,
  ourProcesses,
  run,
  settle,
  sleep
} from "./common.js"

const cycle = (ctx: Context, i: number) =>
  Effect.scoped(Effect.gen(function*() {
    const vm = yield* QemuMachine.launch(noneConfig(ctx.base))
    yield* vm.command(i % 2 === 0 ? "query-status" : "query-version")
    yield* vm.shutdown()
  })).pipe(bounded(`cycle ${i}`, 60_000))

export const soak = async (ctx: Context): Promise<CaseResult> => {
  const result = newResult("soak (launch/command/shutdown)")
  const cycles = ctx.quick ? 20 : 1000
  const warmup = ctx.quick ? 5 : 20
  // Only the last messages are kept: the capture itself must not look like a leak.
  const logs = captureLogs(50)
  const tracker = newTracker()

  const runCycle = async (i: number) => {
    const exit = await run(cycle(ctx, i), logs, tracker)
    return exit
  }
  for (let i = 0; i < warmup; i++) await runCycle(-1 - i)
  await sleep(50)
  const before = { fds: fdCount(), procs: ourProcesses(ctx.base).length, dirs: leftovers(ctx.base).length, heap: heapAfterGc() }
  const samples: Array<string> = []
  const start = Date.now()
  for (let i = 0; i < cycles; i++) {
    result.tried++
    const exit = await runCycle(i)
    if (Exit.isSuccess(exit)) result.survived++
    else fail(result, `cycle ${i}: ${describeExit(exit)}`)
    if ((i + 1) % Math.max(1, Math.floor(cycles / 4)) === 0) {
      samples.push(`${i + 1}: heap ${mib(heapAfterGc())}, fds ${fdCount()}`)
    }
  }
  const seconds = (Date.now() - start) / 1000
  await settle(() => fdCount() <= before.fds, 2000)
  await settle(() => Effect.runSync(tracker.value).length === 0, 2000)
  const after = { fds: fdCount(), procs: ourProcesses(ctx.base).length, dirs: leftovers(ctx.base).length, heap: heapAfterGc() }
  const fibers = Effect.runSync(tracker.value).length

  // Noise: a few fds (libuv, the tsx loader), a few MiB of heap (JIT, caches).
  const heapNoise = 8 * 1024 * 1024
  const grew: Array<string> = []
  if (after.fds > before.fds + 2) grew.push(`fds ${before.fds} → ${after.fds}`)
  if (after.procs > before.procs) grew.push(`processes ${before.procs} → ${after.procs}: ${ourProcesses(ctx.base).join(", ")}`)
  if (after.dirs > before.dirs) grew.push(`temp dirs ${before.dirs} → ${after.dirs}: ${leftovers(ctx.base).join(", ")}`)
  if (after.heap - before.heap > heapNoise) grew.push(`heap ${mib(before.heap)} → ${mib(after.heap)}`)
  if (fibers > 0) grew.push(`${fibers} fibers still running`)
  result.leaked = grew.length
  for (const g of grew) fail(result, `grew: ${g}`)
  result.notes.push(
    `${cycles} cycles in ${seconds.toFixed(1)} s (${((seconds * 1000) / cycles).toFixed(0)} ms each) after ${warmup} warm-up cycles`
  )
  result.notes.push(
    `before → after: fds ${before.fds} → ${after.fds}, QEMU/child processes ${before.procs} → ${after.procs}, ` +
      `temp dirs ${before.dirs} → ${after.dirs}, heap ${mib(before.heap)} → ${mib(after.heap)} (${
        after.heap >= before.heap ? "+" : ""
      }${((after.heap - before.heap) / 1024).toFixed(0)} KiB), fibers running ${fibers}`
  )
  result.notes.push(`samples: ${samples.join("; ")}`)
  if (logs.unhandled > 0) fail(result, `${logs.unhandled} fibers died with a defect`)
  return result
}
