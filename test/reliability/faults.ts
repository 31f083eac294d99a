/**
 * Case 1: faults injected into a real QEMU (`-machine none`).
 *
 * - SIGKILL at a random moment while several fibers stream commands: every
 *   caller ends with QmpConnectionError/QmpProtocolError, none hangs.
 * - SIGSTOP, then shutdown with a short timeout: the ladder gives up near its
 *   timeout with AbnormalShutdown and QEMU is gone.
 * - SIGSTOP/SIGCONT around commands with short deadlines: QmpTimeoutError
 *   while stopped, and the same connection works again after SIGCONT.
 * - QEMU dying during launch at a random delay (a wrapper that SIGKILLs it, or
 *   an argument QEMU rejects): LaunchFailure, nothing left behind.
 *
 * After each try the machine's scope is closed and the leak probes run.
 */
import { Cause, Duration, Effect, Exit, Option } from "effect"
import type { MachineError, QmpArgumentError, QmpCommandError, QmpError } from "../../src/Errors.js"
import { QemuMachine } from "../../src/index.js"
import type { CaseResult, Context, LogCapture } from "./common.js"
import {
  bounded,
  captureLogs,
  describeExit,
  fail,
  Hang,
  isAlive,
  leaksAfter,
  newResult,
  newTracker,
  noneConfig,
  run,
  takeBaseline
} from "./common.js"

const connectionLost = new Set(["QmpConnectionError", "QmpProtocolError"])

const tagOf = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (failure._tag === "Some") {
    const e = failure.value as { _tag?: string }
    return e instanceof Hang ? `Hang(${e.what})` : e._tag ?? String(e)
  }
  return Cause.isInterruptedOnly(cause) ? "Interrupted" : `Defect(${Cause.pretty(cause).split("\n")[0]})`
}

const pidOf = (vm: QemuMachine.Machine) => Effect.map(vm.pid, Option.getOrThrow)

const commands = ["query-status", "query-version", "query-commands", "query-name", "query-qmp-schema", "query-kvm"]

/** One try: run `body` in a fresh scope, then check it survived and left nothing behind. */
const attempt = async (
  ctx: Context,
  result: CaseResult,
  logs: LogCapture,
  label: string,
  body: Effect.Effect<Array<string>, unknown>
) => {
  const baseline = await takeBaseline()
  const tracker = newTracker()
  result.tried++
  const exit = await run(body.pipe(bounded(label, 60_000)), logs, tracker)
  const problems = Exit.isSuccess(exit) ? exit.value : [`${label}: ${describeExit(exit)}`]
  const leaks = await leaksAfter(ctx.base, baseline, tracker)
  if (leaks.length > 0) {
    result.leaked++
    fail(result, `${label}: leaked ${leaks.join("; ")}`)
  }
  if (problems.length === 0) result.survived++
  else fail(result, `${label}: ${problems.join("; ")}`)
}

// ---------------------------------------------------------------------------------------------

const killDuringStream = (ctx: Context, stats: Record<string, number>) =>
  Effect.gen(function*() {
    const problems: Array<string> = []
    const delay = ctx.rng.int(0, 120)
    yield* Effect.scoped(Effect.gen(function*() {
      const vm = yield* QemuMachine.launch(noneConfig(ctx.base))
      const pid = yield* pidOf(vm)
      const worker = (w: number) =>
        Effect.gen(function*() {
          for (let n = 0;; n++) {
            const cmd = commands[(w + n) % commands.length]!
            const exit = yield* vm.command(cmd).pipe(bounded(`command ${cmd}`, 10_000), Effect.exit)
            if (Exit.isFailure(exit)) return { n, tag: tagOf(exit.cause) }
          }
        })
      const workers = yield* Effect.forEach([0, 1, 2, 3], (w) => Effect.fork(worker(w)))
      yield* Effect.sleep(Duration.millis(delay))
      process.kill(pid, "SIGKILL")
      for (const w of workers) {
        const { n, tag } = yield* w.await.pipe(Effect.flatten, Effect.orDie)
        stats[tag] = (stats[tag] ?? 0) + 1
        stats.commands = (stats.commands ?? 0) + n
        if (!connectionLost.has(tag)) problems.push(`a caller ended with ${tag}`)
      }
      // Calls after the death fail at once, typed.
      const after = yield* vm.command("query-status").pipe(bounded("command after kill", 2000), Effect.exit)
      const afterTag = Exit.isFailure(after) ? tagOf(after.cause) : "success"
      if (!connectionLost.has(afterTag)) problems.push(`a command after the kill ended with ${afterTag}`)
      const shut = yield* vm.shutdown({ timeout: "5 seconds" }).pipe(bounded("shutdown after kill", 10_000), Effect.exit)
      const shutTag = Exit.isFailure(shut) ? tagOf(shut.cause) : "success"
      if (shutTag !== "success" && shutTag !== "AbnormalShutdown") problems.push(`shutdown ended with ${shutTag}`)
      const code = yield* vm.exitCode
      if (Option.getOrUndefined(code) !== -9) problems.push(`exitCode ${JSON.stringify(code)} instead of -9`)
      if (isAlive(pid)) problems.push(`QEMU ${pid} still alive after shutdown`)
    }))
    return problems
  })

const stopThenShutdown = (ctx: Context, timings: Array<number>) =>
  Effect.gen(function*() {
    const problems: Array<string> = []
    yield* Effect.scoped(Effect.gen(function*() {
      const vm = yield* QemuMachine.launch(noneConfig(ctx.base))
      const pid = yield* pidOf(vm)
      yield* vm.command("query-status")
      process.kill(pid, "SIGSTOP")
      const start = Date.now()
      const exit = yield* vm.shutdown({ timeout: "1 second" }).pipe(bounded("shutdown of a stopped QEMU", 15_000), Effect.exit)
      const ms = Date.now() - start
      timings.push(ms)
      const tag = Exit.isFailure(exit) ? tagOf(exit.cause) : "success"
      if (tag !== "AbnormalShutdown") problems.push(`shutdown ended with ${tag}, not AbnormalShutdown`)
      if (ms < 950 || ms > 3000) problems.push(`the ladder took ${ms} ms for a 1 s timeout`)
      if (isAlive(pid)) problems.push(`QEMU ${pid} still alive`)
      if (yield* vm.isRunning) problems.push("isRunning is still true")
    }))
    return problems
  })

const stopContDeadlines = (ctx: Context) =>
  Effect.gen(function*() {
    const problems: Array<string> = []
    yield* Effect.scoped(Effect.gen(function*() {
      const vm = yield* QemuMachine.launch(noneConfig(ctx.base))
      const pid = yield* pidOf(vm)
      const client = Option.getOrThrow(vm.qmpClient)
      process.kill(pid, "SIGSTOP")
      const deadline = ctx.rng.int(20, 200)
      const stopped: Array<Effect.Effect<unknown, unknown>> = [
        client.execute("query-status", undefined, { timeout: Duration.millis(deadline) }),
        client.execute("query-version", undefined, { timeout: Duration.millis(deadline) }),
        client.executeRaw("query-name", undefined, { timeout: Duration.millis(deadline) }),
        vm.eventWait("RESUME", { timeout: Duration.millis(deadline) })
      ]
      const calls = yield* Effect.all(
        stopped.map((e) => e.pipe(bounded("call to a stopped QEMU", deadline + 5000), Effect.exit)),
        { concurrency: "unbounded" }
      )
      for (const exit of calls) {
        const tag = Exit.isFailure(exit) ? tagOf(exit.cause) : "success"
        if (tag !== "QmpTimeoutError") problems.push(`a call to a stopped QEMU ended with ${tag}`)
      }
      process.kill(pid, "SIGCONT")
      // The late replies to the timed-out calls are dropped; new calls are answered.
      const again = yield* Effect.all(
        [vm.command("query-status"), client.execute("query-version", undefined, { timeout: "5 seconds" })].map((
          e: Effect.Effect<unknown, QmpError | QmpCommandError | QmpArgumentError | MachineError>
        ) =>
          e.pipe(bounded("call after SIGCONT", 10_000), Effect.exit)
        ),
        { concurrency: "unbounded" }
      )
      for (const exit of again) {
        if (Exit.isFailure(exit)) problems.push(`after SIGCONT a call ended with ${tagOf(exit.cause)}`)
      }
      const shut = yield* vm.shutdown().pipe(bounded("shutdown after SIGCONT", 40_000), Effect.exit)
      if (Exit.isFailure(shut)) problems.push(`graceful shutdown after SIGCONT failed: ${tagOf(shut.cause)}`)
    }))
    return problems
  })

const exitDuringLaunch = (ctx: Context, stats: Record<string, number>) =>
  Effect.gen(function*() {
    const problems: Array<string> = []
    const rejected = ctx.rng.next() < 0.2
    const delay = (ctx.rng.int(0, 50) / 1000).toFixed(3)
    // The helper subshell SIGKILLs $$, which by then is QEMU (exec keeps the pid).
    const config = rejected
      ? noneConfig(ctx.base).pipe(QemuMachine.addArgs("-no-such-option-at-all"))
      : noneConfig(ctx.base, {
        wrapper: ["sh", "-c", '(sleep "$0"; kill -9 $$ 2>/dev/null) & exec "$@"', delay]
      })
    yield* Effect.scoped(Effect.gen(function*() {
      const launched = yield* QemuMachine.launch(config).pipe(bounded("launch", 40_000), Effect.either)
      if (launched._tag === "Left") {
        const e = launched.left
        if (e instanceof Hang) return problems.push(String(e))
        stats[`LaunchFailure ${e.reason}`] = (stats[`LaunchFailure ${e.reason}`] ?? 0) + 1
        if (rejected && !e.output.includes("no-such-option")) problems.push("LaunchFailure lacks QEMU's output")
        if (!rejected && e.signal !== undefined && e.signal !== "SIGKILL") problems.push(`signal ${e.signal}`)
        return
      }
      // Launched before the killer fired: QEMU dies under us, or lives; both end typed.
      const vm = launched.right
      // Keep using it for a while, so that a late kill lands in the middle of a command.
      let tag = "success"
      for (const until = Date.now() + 60; Date.now() < until && tag === "success";) {
        const exit = yield* vm.command("query-status").pipe(bounded("command", 10_000), Effect.exit)
        if (Exit.isFailure(exit)) tag = tagOf(exit.cause)
      }
      stats[`launched, then ${tag}`] = (stats[`launched, then ${tag}`] ?? 0) + 1
      if (tag !== "success" && !connectionLost.has(tag)) problems.push(`command after launch ended with ${tag}`)
      yield* vm.shutdown({ timeout: "5 seconds" }).pipe(bounded("shutdown", 15_000), Effect.ignore)
    }))
    return problems
  })

// ---------------------------------------------------------------------------------------------

export const faults = async (ctx: Context): Promise<CaseResult> => {
  const result = newResult("fault injection (real QEMU)")
  const logs = captureLogs(200)
  const n = ctx.quick
    ? { kill: 6, stop: 1, cont: 3, launch: 10 }
    : { kill: 60, stop: 5, cont: 15, launch: 80 }

  const killStats: Record<string, number> = {}
  for (let i = 0; i < n.kill; i++) await attempt(ctx, result, logs, `SIGKILL during commands #${i}`, killDuringStream(ctx, killStats))
  const { commands: done, ...killTags } = killStats
  ctx.say(`  SIGKILL during a command stream x${n.kill}: ${done ?? 0} commands answered before the kills; callers ended with ${fmt(killTags)}`)

  const timings: Array<number> = []
  for (let i = 0; i < n.stop; i++) await attempt(ctx, result, logs, `SIGSTOP then shutdown #${i}`, stopThenShutdown(ctx, timings))
  ctx.say(`  SIGSTOP then shutdown({ timeout: 1 s }) x${n.stop}: AbnormalShutdown after ${timings.join(", ")} ms`)

  for (let i = 0; i < n.cont; i++) await attempt(ctx, result, logs, `SIGSTOP/SIGCONT deadlines #${i}`, stopContDeadlines(ctx))
  ctx.say(`  SIGSTOP/SIGCONT around 20-200 ms deadlines x${n.cont}: QmpTimeoutError while stopped, answers after SIGCONT`)

  const launchStats: Record<string, number> = {}
  for (let i = 0; i < n.launch; i++) await attempt(ctx, result, logs, `exit during launch #${i}`, exitDuringLaunch(ctx, launchStats))
  ctx.say(`  QEMU killed 0-50 ms into launch / rejecting its arguments x${n.launch}: ${fmt(launchStats)}`)
  if (logs.unhandled > 0) {
    fail(result, `${logs.unhandled} fibers died with a defect`)
    result.survived = Math.min(result.survived, result.tried - 1)
  }
  return result
}

const fmt = (stats: Record<string, number>) =>
  Object.entries(stats).map(([k, v]) => `${k} ${v}`).join(", ")
