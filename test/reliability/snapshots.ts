/**
 * Case: interruption at random points of `vm.snapshot`, `QemuMachine.restore`,
 * `QemuMachine.template` and `template.clone()` on a real QEMU (an idle q35
 * machine, `-S`: saving and loading take a few hundred milliseconds).
 *
 * After each run, with its scope closed: no QEMU (nor the `exec:` shell a
 * migration runs) left, no file in the private base dir (snapshot dirs,
 * clones' temp dirs), no new `qemu-template-*` RAM dir in /dev/shm, fds back
 * to the baseline, no fiber of the run still running. A snapshot that
 * finished before the interrupt is the caller's: it is removed by the run.
 */
import { Duration, Effect, Exit, Fiber, Scope } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { QemuMachine } from "../../src/index.js"
import type { CaseResult, Context } from "./common.js"
import { bounded, captureLogs, describeExit, fail, leaksAfter, newResult, newTracker, QEMU, run, takeBaseline } from "./common.js"

type Target = "snapshot" | "restore" | "template" | "clone"

const idle = (base: string) =>
  QemuMachine.make({ binary: QEMU, baseTempDir: base }).pipe(
    QemuMachine.setMachine("q35"),
    QemuMachine.addArgs("-accel", "tcg", "-m", "32", "-nodefaults", "-S")
  )

/**
 * This process's template RAM dirs in /dev/shm (where templates keep their RAM when it exists):
 * other processes' (a test file running beside this harness) are theirs to remove.
 */
const shmDirs = (): Set<string> => {
  try {
    return new Set(fs.readdirSync("/dev/shm").filter((f) => f.startsWith(`qemu-template-${process.pid}-`)))
  } catch {
    return new Set()
  }
}

const interruptAfter = <A, E>(fiber: Fiber.RuntimeFiber<A, E>, millis: number) =>
  Effect.gen(function*() {
    yield* Effect.sleep(Duration.millis(millis))
    const done = fiber.unsafePoll() !== null
    const exit = yield* Fiber.interrupt(fiber).pipe(bounded("Fiber.interrupt", 30_000))
    return { done, exit }
  })

export const snapshots = async (ctx: Context): Promise<CaseResult> => {
  const result = newResult("snapshots (snapshot/restore/template/clone)")
  const logs = captureLogs(200)
  const total = ctx.quick ? 8 : 200
  const targets: ReadonlyArray<Target> = ["snapshot", "restore", "template", "clone"]
  const stats = Object.fromEntries(targets.map((t) => [t, { interrupted: 0, completed: 0 }])) as Record<
    Target,
    { interrupted: number; completed: number }
  >
  const start = Date.now()
  // What restore and clone start from, made once (outside the base dir, which must stay empty between runs).
  const shared = fs.mkdtempSync(path.join(path.dirname(ctx.base), "eq-rel-snap-"))
  const scope = Effect.runSync(Scope.make())
  try {
    const fixtures = await run(
      Effect.gen(function*() {
        const snap = yield* Effect.scoped(
          Effect.flatMap(QemuMachine.launch(idle(shared)), (vm) => vm.snapshot({ dir: path.join(shared, "snap") }))
        )
        const tpl = yield* QemuMachine.template(idle(shared)).pipe(Scope.extend(scope))
        return { snap, tpl }
      }),
      logs
    )
    if (Exit.isFailure(fixtures)) {
      result.tried = 1
      fail(result, `making the snapshot and template to interrupt: ${describeExit(fixtures)}`)
      return result
    }
    const { snap, tpl } = fixtures.value
    const shmBefore = shmDirs()
    for (let i = 0; i < total; i++) {
      const target = targets[i % targets.length]!
      const baseline = await takeBaseline()
      const tracker = newTracker()
      result.tried++
      const dir = path.join(ctx.base, `snap-${i}`)
      const body = Effect.gen(function*() {
        const config = idle(ctx.base)
        const program: Effect.Effect<unknown, unknown, Scope.Scope> = target === "snapshot"
          ? Effect.flatMap(QemuMachine.launch(config), (vm) => vm.snapshot({ dir }))
          : target === "restore"
          ? QemuMachine.restore(snap)
          : target === "template"
          // Every other template keeps a spare: interrupted while it starts, is waited for or is taken.
          ? Effect.flatMap(QemuMachine.template(config, { spares: Math.floor(i / targets.length) % 2 }), (t) => t.clone())
          : tpl.clone()
        let finished = false
        const fiber = yield* Effect.fork(
          Effect.scoped(Effect.zipRight(Effect.tap(program, () => Effect.sync(() => (finished = true))), Effect.never))
        )
        const { exit } = yield* interruptAfter(fiber, ctx.rng.int(0, target === "template" ? 1500 : 700))
        stats[target][finished ? "completed" : "interrupted"]++
        // A finished snapshot is the caller's to keep: not a leak.
        if (finished && target === "snapshot") fs.rmSync(dir, { recursive: true, force: true })
        return Exit.isFailure(exit) && !Exit.isInterrupted(exit) ? [`${target}: ${describeExit(exit)}`] : []
      })
      const exit = await run(body.pipe(bounded(target, 60_000)), logs, tracker)
      const problems = Exit.isSuccess(exit) ? exit.value : [describeExit(exit)]
      const leaks = await leaksAfter(ctx.base, baseline, tracker)
      const shm = [...shmDirs()].filter((f) => !shmBefore.has(f))
      if (shm.length > 0) {
        leaks.push(`/dev/shm: ${shm.join(", ")}`)
        for (const f of shm) fs.rmSync(path.join("/dev/shm", f), { recursive: true, force: true })
      }
      if (leaks.length > 0) {
        result.leaked++
        fail(result, `#${i} ${target}: leaked ${leaks.join("; ")}`)
      }
      if (problems.length === 0) result.survived++
      else fail(result, `#${i} ${target}: ${problems.join("; ")}`)
    }
    // The template's RAM goes with its scope (no clone is left).
    await Effect.runPromise(Scope.close(scope, Exit.void))
    if (fs.existsSync(tpl.dir)) {
      result.leaked++
      fail(result, `the template's dir ${tpl.dir} outlived its scope`)
    }
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    fs.rmSync(shared, { recursive: true, force: true })
  }
  ctx.say(
    `  ${total} runs in ${((Date.now() - start) / 1000).toFixed(1)} s: ` +
      targets.map((t) => `${t} interrupted ${stats[t].interrupted} / finished first ${stats[t].completed}`).join("; ")
  )
  if (logs.unhandled > 0) {
    fail(result, `${logs.unhandled} fibers died with a defect`)
    result.survived = Math.min(result.survived, result.tried - 1)
  }
  return result
}
