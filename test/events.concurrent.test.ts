/**
 * Concurrent event waiters against real QEMU: each waiter gets its own event,
 * none is lost or delivered twice, and events nobody took stay cached.
 * (v1 had every blocked waiter cache what it pulled for others and never look
 * at the cache again, so two waiters timed out with their events cached.)
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { QemuMachine } from "../src/index.js"
import { noneConfig } from "./helpers/machine.js"
import { tempDir } from "./helpers/qemu.js"

const launchNone = Effect.gen(function*() {
  const base = yield* tempDir
  return yield* QemuMachine.launch(noneConfig(base))
})

/** A null-co source and target and a mirror job between them; READY comes once it has synced. */
const startMirror = (vm: QemuMachine.Machine, job: string) =>
  Effect.gen(function*() {
    yield* vm.command("blockdev-add", { driver: "null-co", "node-name": `${job}-src`, size: 1024 * 1024 })
    yield* vm.command("blockdev-add", { driver: "null-co", "node-name": `${job}-dst`, size: 1024 * 1024 })
    yield* vm.command("blockdev-mirror", { "job-id": job, device: `${job}-src`, target: `${job}-dst`, sync: "full" })
  })


describe("concurrent event waiters (real QEMU)", () => {
  it.scopedLive("two block-job mirrors awaited with Effect.all each get their own BLOCK_JOB_READY", () =>
    Effect.gen(function*() {
      const vm = yield* launchNone
      const waiting = yield* Effect.fork(Effect.all([
        vm.eventWait("BLOCK_JOB_READY", { match: { data: { device: "job-a" } }, timeout: "20 seconds" }),
        vm.eventWait("BLOCK_JOB_READY", { match: { data: { device: "job-b" } }, timeout: "20 seconds" })
      ], { concurrency: "unbounded" }))
      yield* Effect.yieldNow()
      // Started in the reverse order of the waiters: each READY must still reach its own.
      yield* startMirror(vm, "job-b")
      yield* startMirror(vm, "job-a")
      const [a, b] = yield* Fiber.join(waiting)
      expect(a.data.device).toBe("job-a")
      expect(b.data.device).toBe("job-b")
      // Nothing of theirs is left in the cache: each READY was delivered once.
      const rest = yield* vm.getQmpEvents()
      expect(rest.filter((e) => e.event === "BLOCK_JOB_READY")).toEqual([])
    }))

  it.scopedLive("STOP and RESUME awaited from two fibers are each delivered to the fiber waiting for it", () =>
    Effect.gen(function*() {
      const vm = yield* launchNone
      const stop = yield* Effect.fork(vm.eventWait("STOP", { timeout: "10 seconds" }))
      const resume = yield* Effect.fork(vm.eventWait("RESUME", { timeout: "10 seconds" }))
      yield* Effect.yieldNow()
      yield* vm.command("stop")
      yield* vm.command("cont")
      expect((yield* Fiber.join(stop)).event).toBe("STOP")
      expect((yield* Fiber.join(resume)).event).toBe("RESUME")
      expect(yield* vm.getQmpEvents()).toEqual([])
    }))

  it.scopedLive("50 waiters on 50 distinct events each get exactly their own, none lost or delivered twice", () =>
    Effect.gen(function*() {
      const vm = yield* launchNone
      const jobs = Array.from({ length: 50 }, (_, i) => `job${i}`)
      const waiters = yield* Effect.fork(Effect.all(
        jobs.map((job) => vm.eventWait("BLOCK_JOB_READY", { match: { data: { device: job } }, timeout: "60 seconds" })),
        { concurrency: "unbounded" }
      ))
      yield* Effect.yieldNow()
      // Started in a shuffled order, some before and some while others complete.
      for (const job of [...jobs].reverse()) yield* startMirror(vm, job)
      const events = yield* Fiber.join(waiters)
      expect(events.map((e) => e.data.device)).toEqual(jobs)
      expect(new Set(events).size).toBe(50)
      // The other events of the jobs (JOB_STATUS_CHANGE) were taken by nobody and are all cached.
      const cached = yield* vm.getQmpEvents()
      expect(cached.filter((e) => e.event === "BLOCK_JOB_READY")).toEqual([])
      expect(cached.filter((e) => e.event === "JOB_STATUS_CHANGE").length).toBeGreaterThanOrEqual(50 * 3)
    }))

  it.scopedLive("an event that arrived before anyone waited is taken from the cache, in arrival order", () =>
    Effect.gen(function*() {
      const vm = yield* launchNone
      yield* vm.command("stop")
      yield* vm.command("cont")
      yield* vm.command("stop")
      // Three events are cached now; two waiters for STOP get the first and the second STOP.
      const first = yield* vm.eventWait("STOP", { timeout: "10 seconds" })
      const second = yield* vm.eventWait("STOP", { timeout: "10 seconds" })
      expect(first.timestamp.seconds * 1e6 + first.timestamp.microseconds).toBeLessThan(
        second.timestamp.seconds * 1e6 + second.timestamp.microseconds
      )
      expect((yield* vm.getQmpEvents()).map((e) => e.event)).toEqual(["RESUME"])
    }))

  it.scopedLive("eventsWait picks by match, not only by name: RESET with the other reason is left cached", () =>
    Effect.gen(function*() {
      const vm = yield* launchNone
      yield* vm.command("system_reset")
      // Both RESET patterns name the same event; only the match tells them apart.
      const event = yield* vm.eventsWait(
        [["RESET", { data: { reason: "guest-reset" } }], ["RESET", { data: { reason: "host-qmp-system-reset" } }]],
        { timeout: "10 seconds" }
      )
      expect(event.data).toMatchObject({ reason: "host-qmp-system-reset" })
      yield* vm.command("system_reset")
      const missed = yield* Effect.flip(
        vm.eventsWait([["RESET", { data: { reason: "guest-reset" } }]], { timeout: "300 millis" })
      )
      expect(missed._tag).toBe("QmpTimeoutError")
      expect((yield* vm.getQmpEvents()).map((e) => e.event)).toEqual(["RESET"])
    }))
})
