/**
 * Case 3: interruption at random points of `launch`, `command`, `eventWait`
 * and `shutdown` on a real QEMU (`-machine none`).
 *
 * After each run, with the run's scope closed: no QEMU process, no file in
 * the private base dir (temp dir, sockets), fds back to the baseline, and no
 * fiber forked by the run still running (tracked with `Supervisor.track`,
 * which also sees fibers the library forks through a captured runtime).
 * Interrupting an operation must itself return promptly (bounded).
 */
import { Duration, Effect, Exit, Fiber, Option, Stream } from "effect"
import { QemuMachine } from "../../src/index.js"
import type { CaseResult, Context } from "./common.js"
import {
  bounded,
  captureLogs,
  describeExit,
  fail,
  leaksAfter,
  newResult,
  newTracker,
  noneConfig,
  run,
  takeBaseline
} from "./common.js"

type Target = "launch" | "command" | "eventWait" | "shutdown"

interface Stats {
  /** The interrupt came while the operation ran, vs. it had finished before. */
  interrupted: number
  completed: number
  /** Events that arrived around the interrupted waits (eventWait only). */
  events?: number
  /** Runs where getQmpEvents saw fewer events than a subscriber did. */
  lost?: number
}

const interruptAfter = <A, E>(fiber: Fiber.RuntimeFiber<A, E>, micros: number) =>
  Effect.gen(function*() {
    if (micros >= 1000) yield* Effect.sleep(Duration.micros(BigInt(micros)))
    else for (let i = 0; i < micros / 100; i++) yield* Effect.yieldNow()
    const done = fiber.unsafePoll() !== null
    const exit = yield* Fiber.interrupt(fiber).pipe(bounded("Fiber.interrupt", 30_000))
    return { done, exit }
  })

const runOne = (ctx: Context, target: Target, stats: Record<Target, Stats>) =>
  Effect.gen(function*() {
    const problems: Array<string> = []
    const config = noneConfig(ctx.base)
    const count = (done: boolean, _exit: Exit.Exit<unknown, unknown>) => {
      stats[target][done ? "completed" : "interrupted"]++
    }
    switch (target) {
      case "launch": {
        // The whole scoped program is interrupted: during launch, or once launched.
        let launched = false
        const fiber = yield* Effect.fork(
          Effect.scoped(Effect.zipRight(
            Effect.tap(QemuMachine.launch(config), () => Effect.sync(() => (launched = true))),
            Effect.never
          ))
        )
        const { exit } = yield* interruptAfter(fiber, ctx.rng.int(0, 40_000))
        count(launched, exit)
        if (Exit.isFailure(exit) && !Exit.isInterrupted(exit)) problems.push(`launch: ${describeExit(exit)}`)
        break
      }
      case "command": {
        yield* Effect.scoped(Effect.gen(function*() {
          const vm = yield* QemuMachine.launch(config)
          const cmd = ctx.rng.pick(["query-status", "query-qmp-schema", "query-commands", "stop", "cont"])
          const fiber = yield* Effect.fork(
            Effect.forEach(Array.from({ length: ctx.rng.int(1, 5) }), () => vm.command(cmd), { concurrency: "unbounded" })
          )
          const { done, exit } = yield* interruptAfter(fiber, ctx.rng.int(0, 3000))
          count(done, exit)
          if (Exit.isFailure(exit) && !Exit.isInterrupted(exit)) problems.push(`command ${cmd}: ${describeExit(exit)}`)
          // The connection outlives an interrupted command.
          const after = yield* vm.command("query-status").pipe(bounded("command after interrupt", 10_000), Effect.exit)
          if (Exit.isFailure(after)) problems.push(`command after an interrupted ${cmd}: ${describeExit(after)}`)
        }))
        break
      }
      case "eventWait": {
        yield* Effect.scoped(Effect.gen(function*() {
          const vm = yield* QemuMachine.launch(config)
          // Every event also goes to subscribers: the count to compare with once the wait is interrupted.
          const client = Option.getOrThrow(vm.qmpClient)
          let streamed = 0
          yield* Effect.forkScoped(Stream.runForEach(yield* client.subscribe, () => Effect.sync(() => streamed++)))
          // Events arrive while waiting: STOP and RESUME from stop/cont.
          const toggler = yield* Effect.fork(
            Effect.forever(Effect.zipRight(vm.command("stop"), vm.command("cont"))).pipe(Effect.ignore)
          )
          const fiber = yield* Effect.fork(
            ctx.rng.next() < 0.5
              ? vm.eventWait("NEVER_HAPPENS", { timeout: "20 seconds" })
              : vm.eventsWait([["RESUME", { data: { nope: true } }], ["NEVER_HAPPENS"]], { timeout: "20 seconds" })
          )
          const { done, exit } = yield* interruptAfter(fiber, ctx.rng.int(0, 20_000))
          count(done, exit)
          if (Exit.isFailure(exit) && !Exit.isInterrupted(exit)) problems.push(`eventWait: ${describeExit(exit)}`)
          yield* Fiber.interrupt(toggler)
          // QEMU answers in order: once this is answered, every earlier event has arrived.
          yield* vm.command("query-status").pipe(bounded("command after interrupt", 10_000), Effect.ignore)
          yield* Effect.sleep("5 millis")
          // Events seen while waiting are kept: none is lost to the interruption.
          const later = yield* vm.getQmpEvents().pipe(bounded("getQmpEvents after interrupt", 5000), Effect.exit)
          if (Exit.isFailure(later)) problems.push(`getQmpEvents after an interrupted wait: ${describeExit(later)}`)
          else stats.eventWait.events = (stats.eventWait.events ?? 0) + streamed
          if (Exit.isSuccess(later) && later.value.length !== streamed) {
            stats.eventWait.lost = (stats.eventWait.lost ?? 0) + 1
            problems.push(`${streamed} events streamed, but ${later.value.length} kept for getQmpEvents after the interrupted wait`)
          }
        }))
        break
      }
      case "shutdown": {
        yield* Effect.scoped(Effect.gen(function*() {
          const vm = yield* QemuMachine.launch(config)
          const fiber = yield* Effect.fork(vm.shutdown(ctx.rng.next() < 0.2 ? { hard: true } : {}))
          const { done, exit } = yield* interruptAfter(fiber, ctx.rng.int(0, 12_000))
          count(done, exit)
          if (Exit.isFailure(exit) && !Exit.isInterrupted(exit)) problems.push(`shutdown: ${describeExit(exit)}`)
        }))
        break
      }
    }
    return problems
  })

export const interruption = async (ctx: Context): Promise<CaseResult> => {
  const result = newResult("interruption (launch/command/eventWait/shutdown)")
  const logs = captureLogs(200)
  const total = ctx.quick ? 40 : 1000
  const targets: ReadonlyArray<Target> = ["launch", "command", "eventWait", "shutdown"]
  const stats = Object.fromEntries(targets.map((t) => [t, { interrupted: 0, completed: 0 }])) as Record<Target, Stats>
  const start = Date.now()
  for (let i = 0; i < total; i++) {
    const target = targets[i % targets.length]!
    const baseline = await takeBaseline()
    const tracker = newTracker()
    result.tried++
    const exit = await run(runOne(ctx, target, stats).pipe(bounded(target, 60_000)), logs, tracker)
    const problems = Exit.isSuccess(exit) ? exit.value : [describeExit(exit)]
    const leaks = await leaksAfter(ctx.base, baseline, tracker)
    if (leaks.length > 0) {
      result.leaked++
      fail(result, `#${i} ${target}: leaked ${leaks.join("; ")}`)
    }
    if (problems.length === 0) result.survived++
    else fail(result, `#${i} ${target}: ${problems.join("; ")}`)
    if (i > 0 && i % 250 === 0) ctx.say(`  … ${i} runs, ${((Date.now() - start) / 1000).toFixed(0)} s`)
  }
  ctx.say(
    `  ${total} runs in ${((Date.now() - start) / 1000).toFixed(1)} s: ` +
      targets.map((t) => `${t} interrupted ${stats[t].interrupted} / finished first ${stats[t].completed}`).join("; ") +
      `; ${stats.eventWait.events ?? 0} STOP/RESUME events around the interrupted waits, lost in ${stats.eventWait.lost ?? 0} runs`
  )
  if (logs.unhandled > 0) {
    fail(result, `${logs.unhandled} fibers died with a defect`)
    result.survived = Math.min(result.survived, result.tried - 1)
  }
  return result
}
