/**
 * A QEMU machine as a vitest fixture, the Effect way: the machine is a scoped
 * resource, so a test that launches it inside `it.scopedLive` gets a fresh VM
 * and is guaranteed that QEMU is shut down and its files removed when the test
 * ends — passed, failed, timed out or interrupted. No `beforeEach`/`afterEach`.
 *
 * Run it (the project's vitest config only picks up test/**; examples/vitest.config.ts
 * covers this directory):
 *
 *   npx vitest run --root examples scoped-fixture
 *
 * Use `it.scopedLive` (or `it.live`), not `it.effect`/`it.scoped`: those run on
 * a TestClock, and QEMU lives in real time.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, Option } from "effect"
import { QemuMachine, QmpClient } from "../src/index.js"

// `-machine none` has no guest and starts in milliseconds: handy for QMP-level tests.
// For a real guest, add `-kernel`/`-drive` args and `QemuMachine.setConsole()`.
const config = QemuMachine.make({ binary: process.env.QEMU_BINARY ?? "qemu-system-x86_64" }).pipe(
  QemuMachine.setMachine("none"),
  QemuMachine.addArgs("-S") // start paused: a test decides when the VM runs
)

/**
 * The fixture: an Effect that needs a `Scope`. `it.scopedLive` provides one per
 * test and closes it when the test ends, which shuts the machine down.
 */
const freshMachine = QemuMachine.launch(config)

describe("a fresh machine per test", () => {
  it.scopedLive("starts paused because of -S", () =>
    Effect.gen(function*() {
      const vm = yield* freshMachine
      expect(yield* vm.command("query-status")).toMatchObject({ running: false, status: "prelaunch" })
    }))

  it.scopedLive("runs after cont, and reports RESUME", () =>
    Effect.gen(function*() {
      const vm = yield* freshMachine
      yield* vm.command("cont")
      const resume = yield* vm.eventWait("RESUME", { timeout: "10 seconds" })
      expect(resume.event).toBe("RESUME")
      expect(yield* vm.command("query-status")).toMatchObject({ running: true })
    }))

  it.scopedLive("is shut down by the test's scope, even without an explicit shutdown", () =>
    Effect.gen(function*() {
      // An inner scope stands in for "the test ended": close it and look at the machine.
      const vm = yield* Effect.scoped(freshMachine)
      expect(yield* vm.isRunning).toBe(false)
      expect(yield* vm.exitCode).toEqual(Option.some(0))
    }))

  it.scopedLive("can still shut down explicitly, to see how it went", () =>
    Effect.gen(function*() {
      const vm = yield* freshMachine
      // shutdown fails with AbnormalShutdown if QEMU had to be killed; the scope's
      // own shutdown only logs that, so call it yourself when it matters.
      yield* vm.shutdown({ timeout: "10 seconds" })
      expect(yield* vm.exitCode).toEqual(Option.some(0))
    }))
})

// One machine shared by every test of a block: the layer is built before the first
// test and released after the last. `excludeTestServices` keeps the real clock.
layer(QemuMachine.layer(config), { excludeTestServices: true })("one machine for the whole block", (it) => {
  it.effect("reaches the machine through its tag", () =>
    Effect.gen(function*() {
      const vm = yield* QemuMachine.QemuMachine
      expect(Option.isSome(yield* vm.pid)).toBe(true)
    }))

  it.effect("reaches QMP through the QmpClient tag", () =>
    Effect.gen(function*() {
      const qmp = yield* QmpClient.QmpClient
      expect(qmp.greeting.QMP.version.qemu.major).toBeGreaterThanOrEqual(7)
    }))
})
