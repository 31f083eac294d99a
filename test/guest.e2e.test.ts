/**
 * End-to-end tests on a real Linux guest (Debian cloud kernel + busybox
 * initramfs under TCG): the console, guest-initiated power-off, `wait()`,
 * guest events and console draining.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { EventMatch } from "../src/index.js"
import { Guest } from "../src/testing/index.js"
import { guestTemplate } from "./support/clones.js"

/** A clone of the suite's cached template, for every test that is not about the boot itself (power-off included: a clone powers off as a booted guest does). */
const clone = Effect.flatMap(guestTemplate(), (tpl) => tpl.clone())

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "eq-guest-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

describe("a real Linux guest", { timeout: 180_000 }, () => {
  it.live("builds (or reuses) the guest kernel and initramfs", () =>
    Effect.gen(function*() {
      const files = yield* Guest.build()
      expect(fs.statSync(files.kernel).size).toBeGreaterThan(1_000_000)
      expect(fs.statSync(files.initrd).size).toBeGreaterThan(100_000)
      expect(files.readyMarker).toBe("EFFECT-QEMU-READY")
    }))

  it.scopedLive("runs a command over the serial console and reads its output", () =>
    Effect.gen(function*() {
      const guest = yield* clone
      const uname = yield* guest.run("uname -sr")
      expect(uname).toEqual({ output: `Linux ${guest.files.kernelVersion}`, status: 0 })
      const failing = yield* guest.run("ls /no/such/dir")
      expect(failing.status).not.toBe(0)
      expect(failing.output).toContain("No such file")
      // expect() on the raw console sees what the guest prints.
      yield* guest.console.write("echo $((6 * 7))\n")
      const text = yield* guest.console.expect(/\n42\r?\n/, { timeout: "20 seconds" })
      expect(text).toContain("42")
    }))

  it.scopedLive("system_powerdown gives SHUTDOWN with guest: true and wait() returns with exit code 0", () =>
    Effect.gen(function*() {
      const guest = yield* clone
      yield* guest.vm.command("system_powerdown")
      const event = yield* guest.vm.eventWait("SHUTDOWN", { match: { data: { guest: true } }, timeout: "30 seconds" })
      expect(event.data).toMatchObject({ guest: true, reason: "guest-shutdown" })
      yield* guest.vm.wait({ timeout: "30 seconds" })
      expect(yield* guest.vm.exitCode).toEqual(Option.some(0))
      expect(yield* guest.vm.isRunning).toBe(false)
    }))

  it.scopedLive("a guest poweroff -f is seen by wait()", () =>
    Effect.gen(function*() {
      const guest = yield* clone
      yield* guest.console.write("poweroff -f\n")
      yield* guest.vm.wait({ timeout: "30 seconds" })
      expect(yield* guest.vm.exitCode).toEqual(Option.some(0))
      const shutdown = yield* guest.vm.getQmpEvents()
      expect(shutdown.some((e) => e.event === "SHUTDOWN")).toBe(true)
    }))

  it.scopedLive("shutdown() of a running guest succeeds on the soft path", () =>
    Effect.gen(function*() {
      const guest = yield* clone
      const result = yield* Effect.either(guest.vm.shutdown({ timeout: "30 seconds" }))
      expect(result._tag).toBe("Right")
      expect(yield* guest.vm.exitCode).toEqual(Option.some(0))
      expect(fs.existsSync(guest.vm.tempDir)).toBe(false)
    }))

  it.scopedLive("consoleLog captures the boot log in a file", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const logFile = path.join(dir, "console.log")
      const guest = yield* Guest.launch({ consoleLog: logFile })
      yield* guest.run("echo hello-from-the-log")
      yield* guest.vm.shutdown()
      const log = fs.readFileSync(logFile, "utf8")
      expect(log).toContain("EFFECT-QEMU-READY")
      expect(log).toContain("hello-from-the-log")
    }))

  it.scopedLive("a guest flooding the console while nobody reads does not stall QEMU", () =>
    Effect.gen(function*() {
      const guest = yield* clone
      // ~1 MB of output (five times the socket buffers) that nobody consumes with expect; the console keeps draining it.
      yield* guest.console.write("i=0; while [ $i -lt 10000 ]; do echo flood-line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo FLOOD\"\"-DONE\n")
      // QMP stays responsive while the guest floods.
      const status = yield* guest.vm.command("query-status")
      expect(status).toMatchObject({ status: "running" })
      yield* guest.console.expect("FLOOD-DONE\r\n", { timeout: "120 seconds" })
      expect(yield* guest.console.received).toBeGreaterThan(900_000)
      const after = yield* guest.run("echo still-alive")
      expect(after.output).toBe("still-alive")
    }))

  it.live("a guest that panics while booting fails the launch with QEMU's exit and the console's last lines", () =>
    Effect.gen(function*() {
      // No /init to run: the kernel panics, panic=-1 reboots, -no-reboot makes QEMU exit.
      const error = yield* Effect.scoped(Guest.launch({ append: "rdinit=/nonexistent" })).pipe(Effect.flip)
      expect(error._tag).toBe("LaunchFailure")
      if (error._tag !== "LaunchFailure") return
      expect(error.reason).toBe("ExitedEarly")
      expect(error.exitCode).toBe(0)
      expect(error.detail).toContain("Kernel panic")
      expect(error.message).toContain("rdinit=/nonexistent")
    }))

  it.scopedLive("a pvpanic crash gives GUEST_PANICKED", () =>
    Effect.gen(function*() {
      const files = yield* Guest.build()
      if (!files.pvpanic) return yield* Effect.logWarning("this guest kernel has no pvpanic driver: skipped")
      const guest = yield* Guest.launch({ pvpanic: true })
      yield* guest.console.write("echo c > /proc/sysrq-trigger\n")
      const event = yield* guest.vm.eventWait("GUEST_PANICKED", { timeout: "60 seconds" })
      expect(event.event).toBe("GUEST_PANICKED")
      yield* guest.vm.wait({ timeout: "30 seconds" })
    }))

  it.scopedLive("guest events can be filtered from the event stream with eventMatch", () =>
    Effect.gen(function*() {
      const guest = yield* clone
      const shutdowns = yield* guest.vm.events.pipe(
        Stream.filter(EventMatch.eventMatch({ event: "SHUTDOWN", data: { guest: true } })),
        Stream.take(1),
        Stream.runCollect,
        Effect.fork
      )
      yield* Effect.sleep("50 millis")
      yield* guest.vm.command("system_powerdown")
      const got = yield* Fiber.join(shutdowns)
      expect([...got].map((e) => e.event)).toEqual(["SHUTDOWN"])
      yield* guest.vm.wait()
    }))
})
