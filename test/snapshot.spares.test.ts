/**
 * A template's spares (`spares: N`): QEMUs started ahead, paused and waiting,
 * that clones take instead of starting their own. On an idle q35 machine:
 * which QEMU a clone runs in, what is started after, what a dead spare does,
 * and that no spare outlives the template's scope.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Option, Scope } from "effect"
import { QemuMachine } from "../src/index.js"
import { childQemus } from "./helpers/qemu.js"

const idle = () =>
  QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(
    QemuMachine.setMachine("q35"),
    QemuMachine.addArgs("-accel", "tcg", "-m", "64", "-nodefaults", "-S")
  )

/** Waits (up to 20 s) until our live QEMUs are exactly `count`; returns their pids. */
const qemusBecome = (count: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < 400; i++) {
      const pids = childQemus()
      if (pids.length === count) return pids
      yield* Effect.sleep("50 millis")
    }
    return yield* Effect.dieMessage(`expected ${count} QEMUs of ours, found ${childQemus().length}`)
  })

const pidOf = (vm: QemuMachine.Machine) => Effect.map(vm.pid, Option.getOrThrow)

describe("template spares", { timeout: 90_000 }, () => {
  it.scopedLive("a clone runs in the spare started ahead, another is started, and none outlives the template's scope", () =>
    Effect.gen(function*() {
      const templateScope = yield* Scope.make()
      const tpl = yield* QemuMachine.template(idle(), { spares: 1 }).pipe(Scope.extend(templateScope))
      const [spare] = yield* qemusBecome(1)
      const vm = yield* tpl.clone()
      expect(yield* pidOf(vm)).toBe(spare)
      expect((yield* vm.command("query-status")).running).toBe(true)
      const pids = yield* qemusBecome(2)
      const next = pids.find((pid) => pid !== spare)!
      // A second clone takes the one started after the first.
      const other = yield* tpl.clone({ paused: true })
      expect(yield* pidOf(other)).toBe(next)
      expect((yield* other.command("query-status")).running).toBe(false)
      yield* qemusBecome(3)
      // The template's scope ends: its spare with it, its clones live on.
      yield* Scope.close(templateScope, Exit.void)
      expect((yield* qemusBecome(2)).sort()).toEqual([spare, next].sort())
      expect((yield* vm.command("query-status")).running).toBe(true)
    }))

  it.scopedLive("a spare killed while it waits: the clone starts a QEMU of its own", () =>
    Effect.gen(function*() {
      const tpl = yield* QemuMachine.template(idle(), { spares: 1 })
      const [spare] = yield* qemusBecome(1)
      process.kill(spare!, "SIGKILL")
      yield* qemusBecome(0)
      const vm = yield* tpl.clone()
      expect(yield* pidOf(vm)).not.toBe(spare)
      expect((yield* vm.command("query-status")).running).toBe(true)
    }))

  it.scopedLive("without spares, a template leaves no QEMU running until a clone is asked for", () =>
    Effect.gen(function*() {
      const tpl = yield* QemuMachine.template(idle())
      yield* Effect.sleep("500 millis")
      expect(childQemus()).toEqual([])
      yield* tpl.clone()
      expect(childQemus()).toHaveLength(1)
    }))

  it.scopedLive("a template's scope that ends while a spare is still starting leaves nothing behind", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(QemuMachine.template(idle(), { spares: 2 }))
      expect(childQemus()).toEqual([])
    }))
})
