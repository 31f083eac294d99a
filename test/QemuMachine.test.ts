/**
 * `QemuMachine` against a real QEMU (`-machine none`: no guest, starts in
 * milliseconds): the machine handle, QMP commands and the event cache, the
 * TCP monitor, fd passing, the console and the layer.
 */
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Option, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { QemuMachine, QmpClient } from "../src/index.js"
import * as Proc from "../src/internal/process.js"
import { leftovers, noneConfig } from "./helpers/machine.js"
import { tempDir } from "./helpers/qemu.js"

/** A launched `-machine none` VM in a private base dir. */
const launchNone = (configure: (config: QemuMachine.Config) => QemuMachine.Config = (c) => c) =>
  Effect.gen(function*() {
    const base = yield* tempDir
    const config = configure(noneConfig(base))
    const vm = yield* QemuMachine.launch(config)
    return { vm, base, config }
  })

/** A file opened read-write, closed with the scope. */
const openTempFile = (dir: string, name: string) =>
  Effect.acquireRelease(
    Effect.sync(() => fs.openSync(path.join(dir, name), "w+", 0o600)),
    (fd) => Effect.sync(() => fs.closeSync(fd))
  )

describe("QemuMachine handle", () => {
  it.scopedLive("args is commandLine applied to the machine's real socket paths", () =>
    Effect.gen(function*() {
      const { config, vm } = yield* launchNone(QemuMachine.setConsole())
      const monitor = path.join(vm.sockDir, `${vm.name}-monitor.sock`)
      const consolePath = path.join(vm.sockDir, `${vm.name}-console.sock`)
      expect(vm.args).toEqual(QemuMachine.commandLine(config, { monitorAddress: monitor, consolePath }))
      expect(vm.args).toContain(`socket,id=mon,path=${monitor}`)
      expect(vm.sockDir).toBe(vm.tempDir)
      expect(vm.logDir).toBe(vm.tempDir)
    }))

  it.scopedLive("answers query-status with a running VM", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      expect(yield* vm.command("query-status")).toMatchObject({ running: true, status: "running" })
    }))

  it.scopedLive("commandAll runs a batch in order with typed results; quit is refused and nothing is sent", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      const [stopped, status, name] = yield* vm.commandAll([["stop"], ["query-status"], ["query-name"]])
      expect(stopped).toEqual({})
      expect(status).toMatchObject({ running: false, status: "paused" })
      expect(name).toEqual({})
      const refused = yield* Effect.flip(vm.commandAll([["cont"], ["quit"]]))
      expect(refused._tag).toBe("MachineError")
      expect(refused.message).toContain("quit cannot be batched")
      // Nothing of the refused batch ran: still paused, still running.
      expect(yield* vm.command("query-status")).toMatchObject({ status: "paused" })
      expect(yield* vm.isRunning).toBe(true)
    }))

  it.scopedLive("qmp returns the raw { error } response instead of failing", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      const response = yield* vm.qmp("no-such-command")
      expect(response).toMatchObject({ error: { class: "CommandNotFound" } })
      const failed = yield* Effect.flip(vm.command("no-such-command"))
      expect(failed).toMatchObject({ _tag: "QmpCommandError", errorClass: "CommandNotFound", command: "no-such-command" })
    }))

  it.scopedLive("qmp('quit') then wait() succeeds with exit code 0", () =>
    Effect.gen(function*() {
      const { base, vm } = yield* launchNone()
      const response = yield* vm.qmp("quit")
      expect("error" in response).toBe(false)
      yield* vm.wait({ timeout: "20 seconds" })
      expect(yield* vm.exitCode).toEqual(Option.some(0))
      expect(yield* vm.isRunning).toBe(false)
      expect(yield* vm.pid).toEqual(Option.none())
      expect(leftovers(base)).toEqual([])
    }))
})

describe("QemuMachine events", () => {
  it.scopedLive("eventWait keeps a skipped STOP, and a later eventWait('STOP') returns it", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      yield* vm.command("stop")
      yield* vm.command("cont")
      const resume = yield* vm.eventWait("RESUME", { timeout: "10 seconds" })
      expect(resume.event).toBe("RESUME")
      // No second STOP is ever sent: only the cached one can satisfy this.
      const stop = yield* vm.eventWait("STOP", { timeout: "2 seconds" })
      expect(stop.event).toBe("STOP")
      const micros = (e: { readonly timestamp: { readonly seconds: number; readonly microseconds: number } }) =>
        e.timestamp.seconds * 1e6 + e.timestamp.microseconds
      expect(micros(stop)).toBeLessThanOrEqual(micros(resume))
      // Returned from the cache means removed from it.
      expect(yield* vm.getQmpEvents()).toEqual([])
    }))

  it.scopedLive("getQmpEvents returns events skipped by eventWait first, then nothing", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      yield* vm.command("stop")
      yield* vm.command("cont")
      yield* vm.eventWait("RESUME", { timeout: "10 seconds" })
      const cached = yield* vm.getQmpEvents()
      expect(cached.map((e) => e.event)).toEqual(["STOP"])
      expect(yield* vm.getQmpEvents()).toEqual([])
      expect(yield* vm.getQmpEvent()).toEqual(Option.none())
    }))

  it.scopedLive("getQmpEvent({ wait }) waits for the next event", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      yield* vm.command("stop")
      const event = yield* vm.getQmpEvent({ wait: "10 seconds" })
      expect(Option.map(event, (e) => e.event)).toEqual(Option.some("STOP"))
    }))

  it.scopedLive("eventWait fails with QmpTimeoutError when no such event comes", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      const error = yield* Effect.flip(vm.eventWait("SHUTDOWN", { timeout: "300 millis" }))
      expect(error._tag).toBe("QmpTimeoutError")
      expect(error.message).toContain("SHUTDOWN")
    }))

  it.scopedLive("eventWait with match skips events whose data differs, and keeps them", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      yield* vm.command("system_reset")
      // RESET from QMP carries { guest: false, reason: "host-qmp-system-reset" }.
      const mismatch = yield* Effect.flip(
        vm.eventWait("RESET", { match: { data: { guest: true } }, timeout: "500 millis" })
      )
      expect(mismatch._tag).toBe("QmpTimeoutError")
      const reset = yield* vm.eventWait("RESET", {
        match: { data: { guest: false, reason: "host-qmp-system-reset" } },
        timeout: "2 seconds"
      })
      expect(reset).toMatchObject({ event: "RESET", data: { guest: false, reason: "host-qmp-system-reset" } })
    }))

  it.scopedLive("eventWait with match picks the matching one among same-named events", () =>
    Effect.gen(function*() {
      const { base, vm } = yield* launchNone()
      // A blockdev-create job emits JOB_STATUS_CHANGE for each state, told apart only by data.
      yield* vm.command("blockdev-create", {
        "job-id": "job0",
        options: { driver: "file", filename: path.join(base, "disk.img"), size: 0 }
      })
      const concluded = yield* vm.eventWait("JOB_STATUS_CHANGE", {
        match: { data: { id: "job0", status: "concluded" } },
        timeout: "10 seconds"
      })
      expect(concluded.data).toEqual({ id: "job0", status: "concluded" })
      // The earlier states were skipped while waiting, and are still there.
      const created = yield* vm.eventWait("JOB_STATUS_CHANGE", {
        match: { data: { status: "created" } },
        timeout: "1 second"
      })
      expect(created.data).toEqual({ id: "job0", status: "created" })
      yield* vm.command("job-dismiss", { id: "job0" })
    }))

  it.scopedLive("eventsWait returns the first event matching any of several names", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      yield* vm.command("stop")
      yield* vm.command("system_reset")
      const event = yield* vm.eventsWait(
        [["SHUTDOWN", { data: { guest: true } }], ["RESET", { data: { reason: "host-qmp-system-reset" } }]],
        { timeout: "10 seconds" }
      )
      expect(event.event).toBe("RESET")
      // STOP matched neither pair and was kept.
      expect((yield* vm.getQmpEvents()).map((e) => e.event)).toContain("STOP")
    }))

  it.scopedLive("events streams what happens after it runs", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      const fiber = yield* vm.events.pipe(
        Stream.map((e) => e.event),
        Stream.take(2),
        Stream.runCollect,
        Effect.fork
      )
      // Let the forked stream subscribe before anything happens.
      yield* Effect.sleep("100 millis")
      yield* vm.command("stop")
      yield* vm.command("cont")
      const names = yield* Fiber.join(fiber).pipe(Effect.timeout("10 seconds"))
      expect(Chunk.toReadonlyArray(names)).toEqual(["STOP", "RESUME"])
    }))
})

describe("QemuMachine monitor variants", () => {
  it.scopedLive("a TCP monitor on 127.0.0.1 port 0 works and args name the port the kernel chose", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const vm = yield* QemuMachine.launch(noneConfig(base, { monitorAddress: { host: "127.0.0.1", port: 0 } }))
      const chardev = vm.args.find((a) => a.startsWith("socket,id=mon,"))
      const match = /^socket,id=mon,host=127\.0\.0\.1,port=(\d+)$/.exec(chardev ?? "")
      expect(match).not.toBeNull()
      expect(Number(match![1])).toBeGreaterThan(0)
      expect(yield* vm.command("query-status")).toMatchObject({ status: "running" })
    }))

  it.scopedLive("with setQmpMonitor(false), commands fail with MachineError and shutdown still ends QEMU", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const vm = yield* QemuMachine.launch(noneConfig(base).pipe(QemuMachine.setQmpMonitor(false)))
      expect(vm.args.join(" ")).not.toContain("id=mon")
      const pid = Option.getOrThrow(yield* vm.pid)
      expect(Proc.isAlive(pid)).toBe(true)
      const error = yield* Effect.flip(vm.command("query-status"))
      expect(error._tag).toBe("MachineError")
      yield* vm.shutdown({ timeout: "20 seconds" })
      expect(yield* vm.isRunning).toBe(false)
      expect(Proc.isAlive(pid)).toBe(false)
      expect(leftovers(base)).toEqual([])
    }))
})

describe("QemuMachine fd passing", () => {
  it.scopedLive("addFd puts our descriptor into QEMU's fdset with its opaque string", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const dir = yield* tempDir
      const fd = yield* openTempFile(dir, "passed.img")
      expect(fd).toBeGreaterThanOrEqual(3)
      const vm = yield* QemuMachine.launch(noneConfig(base).pipe(QemuMachine.addFd({ fd, fdset: 1, opaque: "test" })))
      const fdsets = yield* vm.command("query-fdsets")
      expect(fdsets).toEqual([{ "fdset-id": 1, fds: [{ fd: expect.any(Number), opaque: "test" }] }])
    }))

  it.scopedLive("sendFdScm({ path }) hands QEMU a descriptor that getfd names and closefd closes", () =>
    Effect.gen(function*() {
      const { base, vm } = yield* launchNone()
      const file = path.join(base, "scm.txt")
      fs.writeFileSync(file, "hello")
      yield* vm.sendFdScm({ path: file })
      yield* vm.command("getfd", { fdname: "myfd" })
      yield* vm.command("closefd", { fdname: "myfd" })
      // Closed means gone: a second closefd is QEMU's error.
      const again = yield* Effect.flip(vm.command("closefd", { fdname: "myfd" }))
      expect(again._tag).toBe("QmpCommandError")
    }))

  it.scopedLive("sendFdScm(fd) hands QEMU one of our open descriptors: its process holds our file until closefd", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      const dir = yield* tempDir
      const file = path.join(dir, "scm.img")
      const fd = yield* openTempFile(dir, "scm.img")
      const pid = Option.getOrThrow(yield* vm.pid)
      // QEMU's descriptors that refer to our file, as its /proc/PID/fd links show them.
      const target = fs.realpathSync(file)
      const held = () =>
        fs.readdirSync(`/proc/${pid}/fd`).filter((n) => {
          try {
            return fs.readlinkSync(`/proc/${pid}/fd/${n}`) === target
          } catch {
            return false // closed while we looked
          }
        }).length
      expect(held()).toBe(0)
      yield* vm.sendFdScm(fd)
      yield* vm.command("getfd", { fdname: "fd2" })
      expect(held()).toBe(1)
      yield* vm.command("closefd", { fdname: "fd2" })
      expect(held()).toBe(0)
      // The descriptor QEMU got was a copy: ours is still open.
      expect(fs.fstatSync(fd).isFile()).toBe(true)
    }))

  it.scopedLive("getfd without a descriptor sent first fails with QmpCommandError", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      const error = yield* Effect.flip(vm.command("getfd", { fdname: "nothing" }))
      expect(error._tag).toBe("QmpCommandError")
    }))
})

describe("QemuMachine console", () => {
  it.scopedLive("vm.console connects, and returns the same console on the second call", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone(QemuMachine.setConsole())
      const first = yield* vm.console
      expect(yield* first.isConnected).toBe(true)
      const second = yield* vm.console
      expect(second).toBe(first)
      // -machine none has no serial device: nothing is ever written.
      expect(yield* first.received).toBe(0)
    }))

  it.scopedLive("vm.console fails with MachineError when setConsole was not used", () =>
    Effect.gen(function*() {
      const { vm } = yield* launchNone()
      const error = yield* Effect.flip(vm.console)
      expect(error._tag).toBe("MachineError")
      expect(error.message).toContain("setConsole")
    }))
})

describe("QemuMachine.layer", () => {
  it.scopedLive("provides both the QemuMachine and the QmpClient tags, and shuts down with the layer", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const seen = yield* Effect.gen(function*() {
        const vm = yield* QemuMachine.QemuMachine
        const qmp = yield* QmpClient.QmpClient
        expect(yield* qmp.execute("query-status")).toMatchObject({ status: "running" })
        expect(Option.getOrThrow(vm.qmpClient)).toBe(qmp)
        expect(leftovers(base)).toHaveLength(1)
        return { vm, pid: Option.getOrThrow(yield* vm.pid) }
      }).pipe(Effect.provide(QemuMachine.layer(noneConfig(base))))
      expect(Proc.isAlive(seen.pid)).toBe(false)
      expect(yield* seen.vm.exitCode).toEqual(Option.some(0))
      expect(leftovers(base)).toEqual([])
    }))
})
