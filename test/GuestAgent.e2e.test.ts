/**
 * The guest agent client against Debian's qemu-ga in the real test guest
 * (TCG). One guest serves the whole file: the tests run in order and leave
 * the agent running, the last one shuts the guest down through the agent.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Exit, Fiber, Layer, Option, Scope } from "effect"
import * as crypto from "node:crypto"
import type { GuestAgent } from "../src/GuestAgent.js"
import { Guest } from "../src/testing/index.js"
import { guestTemplate } from "./support/clones.js"

class Shared extends Context.Tag("test/GuestAgentShared")<Shared, {
  readonly guest: Guest.Guest
  readonly agent: GuestAgent.Service
}>() {}

const SharedLive = Layer.scoped(
  Shared,
  Effect.gen(function*() {
    // A clone: this file tests the agent, not the boot.
    const tpl = yield* guestTemplate({ guestAgent: true, guestAgentDisabled: ["guest-get-time"] })
    const guest = yield* tpl.clone()
    const agent = yield* guest.agent
    return { guest, agent }
  })
)

const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("utf8")
const PORT = "/dev/virtio-ports/org.qemu.guest_agent.0"

/** Stops the agent in the guest (over the console) and waits until it is gone. */
const stopAgent = (guest: Guest.Guest) =>
  // qemu-ga removes its pidfile when it exits: read the pid once.
  guest.run("p=$(cat /run/qemu-ga.pid); kill $p; while [ -e /proc/$p ]; do usleep 20000; done")

const startAgent = (guest: Guest.Guest) => guest.run("qga-start")

/**
 * The shared guest, built before the file's tests and released after them. Not
 * `@effect/vitest`'s `layer()`: that one assigns its `effect` method onto
 * vitest's global `it`, so with workers that keep modules between files
 * (`isolate: false`) every later file's `it.effect` lost its TestClock.
 */
const sharedScope = Effect.runSync(Scope.make())
let shared: Context.Context<Shared> | undefined
const withShared = <A, E>(self: Effect.Effect<A, E, Shared>): Effect.Effect<A, E> =>
  Effect.suspend(() => shared ? Effect.provide(self, shared) : Effect.dieMessage("the shared guest was not built"))

describe("GuestAgent on the real guest", () => {
  beforeAll(() =>
    Effect.runPromise(
      Effect.map(Layer.buildWithScope(SharedLive, sharedScope), (context) => {
        shared = context
      })
    ), 150_000)
  afterAll(() => Effect.runPromise(Scope.close(sharedScope, Exit.void)), 150_000)
  it.live("ping and info: the agent's 42 commands, the disabled one marked", () =>
    withShared(Effect.gen(function*() {
      const { agent, guest } = yield* Shared
      // The launcher's agent is the machine's own (QemuMachine.addGuestAgent, vm.guestAgent).
      expect(yield* guest.vm.guestAgent()).toBe(agent)
      expect(guest.agentAddress).toBe(Guest.agentSocketPath(guest.vm.sockDir, guest.vm.name))
      yield* agent.ping
      // QEMU saw the agent open its port (the port has a device id, so the event is sent).
      const open = yield* guest.vm.eventWait("VSERPORT_CHANGE", { match: { data: { open: true } }, timeout: "10 seconds" })
      expect(open.data).toEqual({ id: "qga0-port", open: true })
      const info = yield* agent.info
      expect(info.version).toMatch(/^7\.2\./)
      expect(info.supported_commands).toHaveLength(42)
      const byName = new Map(info.supported_commands.map((c) => [c.name, c]))
      expect(byName.get("guest-exec")?.enabled).toBe(true)
      expect(byName.get("guest-get-time")?.enabled).toBe(false)
      expect(byName.get("guest-shutdown")?.["success-response"]).toBe(false)
    })))

  it.live("get-osinfo and network-get-interfaces decode to typed results", () =>
    withShared(Effect.gen(function*() {
      const { agent, guest } = yield* Shared
      const os = yield* agent.execute("guest-get-osinfo")
      expect(os).toMatchObject({ id: "effect-qemu-guest", "kernel-release": guest.files.kernelVersion, machine: "x86_64" })
      const interfaces = yield* agent.execute("guest-network-get-interfaces")
      const lo = interfaces.find((i) => i.name === "lo")
      expect(lo?.["ip-addresses"]).toContainEqual({ "ip-address-type": "ipv4", "ip-address": "127.0.0.1", prefix: 8 })
    })))

  it.live("guest-set-time sets the clock and the RTC (the guest's own hwclock -w); other hwclock uses are busybox's", () =>
    withShared(Effect.gen(function*() {
      const { agent, guest } = yield* Shared
      // The helper is what this build installed: not busybox's applet link.
      expect((yield* guest.run("[ -L /sbin/hwclock ] && echo link || echo helper")).output).toBe("helper")
      try {
        yield* agent.execute("guest-set-time", { time: Date.UTC(2031, 5, 15, 12, 34, 56) * 1e6 })
        // `hwclock -r` is busybox's, reading back what `-w` wrote (the RTC ticks on: seconds may move on).
        const read = yield* guest.run("date -u '+%Y-%m-%d %H:%M'; hwclock -r -u")
        expect(read.status).toBe(0)
        const [date, rtc] = read.output.split("\n")
        expect(date).toBe("2031-06-15 12:34")
        expect(rtc).toMatch(/^Sun Jun 15 12:34:5\d 2031 /)
      } finally {
        yield* Effect.orDie(agent.execute("guest-set-time", { time: Date.now() * 1e6 }))
      }
      const now = Number((yield* guest.run("date -u +%s")).output)
      expect(Math.abs(now * 1000 - Date.now())).toBeLessThan(5000)
    })))

  it.live("exec returns the exit code and both output streams", () =>
    withShared(Effect.gen(function*() {
      const { agent } = yield* Shared
      const result = yield* agent.exec("/bin/sh", { args: ["-c", "echo out; echo err >&2; exit 3"] })
      expect(result.exitCode).toBe(3)
      expect(text(result.stdout)).toBe("out\n")
      expect(text(result.stderr)).toBe("err\n")
      expect(result.truncated).toBe(false)
      const killed = yield* agent.exec("/bin/sh", { args: ["-c", "kill -9 $$"] })
      expect(killed.exitCode).toBe(-9)
    })))

  it.live("exec feeds input to stdin, binary bytes intact", () =>
    withShared(Effect.gen(function*() {
      const { agent } = yield* Shared
      const input = new Uint8Array([0, 1, 2, 0xff, 0xfe, 10, 13, 0x80, 65])
      const result = yield* agent.exec("/bin/cat", { input })
      expect(result.exitCode).toBe(0)
      expect(Buffer.from(result.stdout).equals(Buffer.from(input))).toBe(true)
      const lines = yield* agent.exec("/usr/bin/wc", { args: ["-l"], input: "a\nb\nc\n" })
      expect(text(lines.stdout).trim()).toBe("3")
    })))

  it.live("a 1 MiB writeFile then readFile round trip is byte-identical", () =>
    withShared(Effect.gen(function*() {
      const { agent } = yield* Shared
      const data = new Uint8Array(crypto.randomBytes(1024 * 1024 + 17))
      // Small chunks: many guest-file-write/read commands per file.
      yield* agent.writeFile("/tmp/blob", data, { chunkSize: 192 * 1024 })
      const back = yield* agent.readFile("/tmp/blob", { chunkSize: 256 * 1024 })
      expect(back.length).toBe(data.length)
      expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true)
      // The guest sees the same bytes.
      const sum = yield* agent.exec("/usr/bin/sha256sum", { args: ["/tmp/blob"] })
      expect(text(sum.stdout).split(" ")[0]).toBe(crypto.createHash("sha256").update(data).digest("hex"))
      yield* agent.writeFile("/tmp/blob", "tail", { append: true })
      const size = yield* agent.exec("/bin/sh", { args: ["-c", "wc -c < /tmp/blob"] })
      expect(text(size.stdout).trim()).toBe(String(data.length + 4))
    })))

  it.live("a missing file, an unknown command and a disabled one fail with GuestAgentError", () =>
    withShared(Effect.gen(function*() {
      const { agent } = yield* Shared
      const missing = yield* Effect.flip(agent.readFile("/no/such/file"))
      expect(missing).toMatchObject({ _tag: "GuestAgentError", command: "guest-file-open", errorClass: "GenericError" })
      const unknown = yield* Effect.flip(agent.execute("guest-no-such-command"))
      expect(unknown).toMatchObject({ _tag: "GuestAgentError", command: "guest-no-such-command", errorClass: "CommandNotFound" })
      const disabled = yield* Effect.flip(agent.execute("guest-get-time"))
      expect(disabled).toMatchObject({ _tag: "GuestAgentError", command: "guest-get-time", errorClass: "CommandNotFound" })
      expect(disabled._tag === "GuestAgentError" && disabled.desc).toContain("disabled")
      // The channel is fine afterwards.
      yield* agent.ping
    })))

  it.live("an exec timeout fails with QmpTimeoutError and leaves the program running", () =>
    withShared(Effect.gen(function*() {
      const { agent } = yield* Shared
      const error = yield* Effect.flip(agent.exec("/bin/sleep", { args: ["600"], timeout: "500 millis" }))
      expect(error._tag).toBe("QmpTimeoutError")
      const running = yield* agent.exec("/bin/pidof", { args: ["sleep"] })
      expect(running.exitCode).toBe(0)
      yield* agent.exec("/bin/sh", { args: ["-c", "kill $(pidof sleep)"] })
    })))

  it.live("agent killed and restarted: a call made meanwhile is answered and the next call works", () =>
    withShared(Effect.gen(function*() {
      const { agent, guest } = yield* Shared
      yield* stopAgent(guest)
      const waiting = yield* Effect.fork(agent.exec("/bin/echo", { args: ["while-down"] }))
      yield* startAgent(guest)
      const result = yield* Fiber.join(waiting)
      expect(text(result.stdout)).toBe("while-down\n")
      yield* agent.ping
      const pid = yield* guest.run("cat /run/qemu-ga.pid")
      const self = yield* agent.exec("/bin/cat", { args: ["/run/qemu-ga.pid"] })
      expect(text(self.stdout).trim()).toBe(pid.output)
    })))

  it.live("garbage on the channel fails the call in flight with QmpProtocolError; the client re-syncs", () =>
    withShared(Effect.gen(function*() {
      const { agent, guest } = yield* Shared
      yield* stopAgent(guest)
      const inFlight = yield* Effect.fork(Effect.either(agent.ping))
      yield* guest.run(`printf 'this is not json}}\\n' > ${PORT}`)
      const outcome = yield* Fiber.join(inFlight)
      expect(Either.isLeft(outcome) && outcome.left._tag).toBe("QmpProtocolError")
      yield* startAgent(guest)
      yield* agent.ping
      expect(yield* agent.isConnected).toBe(true)
    })))

  it.live("shutdown() powers the guest off: SHUTDOWN event and QEMU exit code 0", () =>
    withShared(Effect.gen(function*() {
      const { agent, guest } = yield* Shared
      // Completes on the SHUTDOWN it watched for from before guest-shutdown was sent (or QEMU's exit).
      yield* agent.shutdown({ timeout: "30 seconds" })
      const event = yield* guest.vm.eventWait("SHUTDOWN", { timeout: "30 seconds" })
      expect(event.data).toMatchObject({ guest: true })
      yield* guest.vm.wait({ timeout: "30 seconds" })
      expect(yield* guest.vm.exitCode).toEqual(Option.some(0))
      expect(yield* agent.isConnected).toBe(false)
      const after = yield* Effect.flip(agent.ping)
      expect(after._tag).toBe("QmpConnectionError")
    })))
})
