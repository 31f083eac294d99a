/**
 * The fleet with its embedded default (one runner in this process, SQLite
 * storage): launch through the cluster, drive the VM, typed errors over the
 * wire, no re-creation of a lost VM, release of a VM whose client went quiet.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Schedule, Schema } from "effect"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Fleet, FleetErrors, MachineSpec } from "../src/fleet/index.js"
import { QemuMachine } from "../src/index.js"
import * as Proc from "../src/internal/process.js"
import { noneConfig, pollUntil } from "./helpers/machine.js"
import { QEMU, tempDir } from "./helpers/qemu.js"

const spec = (base: string): MachineSpec.MachineSpec => ({
  binary: QEMU,
  machine: "none",
  baseTempDir: base,
  args: ["-nodefaults", "-display", "none"]
})

/** The QEMU pid behind a remote VM of this process's runner. */
const pidOf = (vm: Fleet.RemoteMachine) =>
  vm.command("query-status").pipe(
    Effect.zipRight(Effect.sync(() => {
      const [pid] = (fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number)).filter((pid) => {
        try {
          return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(vm.name)
        } catch {
          return false
        }
      })
      return pid
    }))
  )

describe("MachineSpec", () => {
  it.effect("a config crosses the wire as a spec and comes back as the same command line", () =>
    Effect.gen(function*() {
      const config = QemuMachine.make({ binary: "qemu-system-x86_64", name: "m1", qmpTimeout: "5 seconds", args: ["-m", "64"] })
        .pipe(QemuMachine.setMachine("q35"), QemuMachine.setConsole({ index: 1 }), QemuMachine.addMonitorNull)
      const spec = yield* MachineSpec.fromConfig(config)
      const wire = yield* Schema.encode(Schema.parseJson(MachineSpec.MachineSpec))(spec)
      const back = MachineSpec.toConfig(yield* Schema.decode(Schema.parseJson(MachineSpec.MachineSpec))(wire))
      const resolved = { monitorAddress: "/run/m.sock", consolePath: "/run/c.sock" }
      expect(QemuMachine.commandLine(back, resolved)).toEqual(QemuMachine.commandLine(config, resolved))
      expect(back.qmpTimeout).toEqual(config.qmpTimeout)
    }))

  it.effect("a config with passed file descriptors cannot travel", () =>
    Effect.gen(function*() {
      const config = QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.addFd({ fd: 3, fdset: 1, opaque: "x" }))
      const error = yield* Effect.flip(MachineSpec.fromConfig(config))
      expect(error._tag).toBe("InvalidSpec")
    }))
})

describe("Fleet (embedded default)", () => {
  it.scopedLive("launches a VM through the cluster and answers QMP commands", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const { pid, runner } = yield* Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        const vm = yield* fleet.launch("vm-a", spec(base))
        expect(yield* vm.command("query-status")).toMatchObject({ status: "running" })
        const raw = yield* vm.qmp("query-name")
        expect(raw).toHaveProperty("return")
        expect(yield* vm.state).toEqual({ _tag: "Running" })
        const pid = yield* pidOf(vm)
        // QEMU ends by itself: the remote state says so
        const other = yield* fleet.launch("vm-a2", spec(base))
        yield* Effect.ignore(other.command("quit"))
        const exited = yield* other.state.pipe(
          Effect.filterOrFail((s) => s._tag === "Exited"),
          Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 500 })
        )
        expect(exited).toEqual({ _tag: "Exited", exitCode: 0, expected: true })
        // a VM that ended by itself makes room for a new one under the same id
        const next = yield* fleet.launch("vm-a2", spec(base))
        expect(yield* next.state).toEqual({ _tag: "Running" })
        expect(pid).toBeGreaterThan(0)
        return { pid, runner: vm.runner }
      }).pipe(Effect.scoped, Effect.provide(Fleet.runnerLayer()))
      expect(runner).toMatch(/:/)
      // the scope ended: QEMU is gone and its temp dir removed
      expect(Proc.isAlive(pid)).toBe(false)
      expect(fs.readdirSync(base)).toEqual([])
    }))

  it.scopedLive("QMP errors, launch failures and unknown ids cross the wire as typed errors", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      yield* Effect.gen(function*() {
      const fleet = yield* Fleet.Fleet
      const vm = yield* fleet.launch("vm-b", noneConfig(base))
      const attached = yield* fleet.attach("vm-b")
      expect({ runner: attached.runner, name: attached.name }).toEqual({ runner: vm.runner, name: vm.name })
      const error = yield* Effect.flip(vm.command("no-such-command"))
      expect(error).toBeInstanceOf(FleetErrors.QmpCommandError)
      expect(error).toMatchObject({ _tag: "QmpCommandError", command: "no-such-command", errorClass: "CommandNotFound" })

      const timeout = yield* Effect.flip(vm.eventWait("NEVER", { timeout: "50 millis" }))
      expect(timeout._tag).toBe("QmpTimeoutError")

      const again = yield* Effect.flip(fleet.launch("vm-b", spec(base)))
      expect(again).toMatchObject({ _tag: "VmAlreadyLaunched", id: "vm-b" })

      const failed = yield* Effect.flip(fleet.launch("vm-c", { ...spec(base), args: ["-no-such-option"] }))
      expect(failed._tag).toBe("LaunchFailure")
      if (failed._tag === "LaunchFailure") expect(failed.output).toContain("no-such-option")

      const unknown = yield* Effect.flip(fleet.attach("vm-never"))
      expect(unknown).toMatchObject({ _tag: "VmNotFound", id: "vm-never" })
      }).pipe(Effect.scoped, Effect.provide(Fleet.runnerLayer()))
      expect(fs.readdirSync(base)).toEqual([])
    }))

  it.scopedLive("shutdown stops the VM; the id can be launched again", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      yield* Effect.gen(function*() {
      const fleet = yield* Fleet.Fleet
      const vm = yield* fleet.launch("vm-d", spec(base))
      const pid = yield* pidOf(vm)
      yield* vm.shutdown()
      expect(Proc.isAlive(pid)).toBe(false)
      expect(yield* Effect.flip(vm.command("query-status"))).toMatchObject({ _tag: "VmNotFound" })
      const second = yield* fleet.launch("vm-d", spec(base))
      expect(yield* second.command("query-status")).toMatchObject({ running: true })
      }).pipe(Effect.scoped, Effect.provide(Fleet.runnerLayer()))
      expect(fs.readdirSync(base)).toEqual([])
    }))

  it.scopedLive("an id recorded as running on another runner answers VmLost and is never relaunched", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const filename = path.join(base, "fleet.sqlite")
      yield* Effect.gen(function*() {
        // a runner that died left its record behind
        const sql = yield* SqliteClient.SqliteClient
        yield* sql`INSERT INTO effect_qemu_fleet_vms (id, runner, status, updated_at) VALUES ('vm-e', 'ghost:1', 'running', 0)`

        const fleet = yield* Fleet.Fleet
        const lost = yield* Effect.flip(fleet.attach("vm-e"))
        expect(lost).toMatchObject({ _tag: "VmLost", id: "vm-e", runner: "ghost:1" })
        const relaunch = yield* Effect.flip(fleet.launch("vm-e", spec(base)))
        expect(relaunch).toMatchObject({ _tag: "VmLost", id: "vm-e", runner: "ghost:1" })
        expect(fs.readdirSync(base).filter((f) => !f.startsWith("fleet.sqlite"))).toEqual([])

        // a VM lost on this host: its temp dir is removed by the runner that finds it lost
        const leftover = fs.mkdtempSync(path.join(base, "qemu-machine-"))
        fs.writeFileSync(path.join(leftover, "qemu.log"), "")
        yield* sql`INSERT INTO effect_qemu_fleet_vms (id, runner, status, host, temp_dir, updated_at)
                   VALUES ('vm-h', 'ghost:1', 'running', ${os.hostname()}, ${leftover}, 0)`
        expect(yield* Effect.flip(fleet.attach("vm-h"))).toMatchObject({ _tag: "VmLost", runner: "ghost:1" })
        expect(yield* pollUntil(() => !fs.existsSync(leftover), "10 seconds")).toBe(true)

        // an explicit shutdown forgets the lost VM; then the id is free again
        yield* fleet.shutdown("vm-e")
        const again = yield* fleet.launch("vm-e", spec(base))
        expect(yield* again.command("query-status")).toMatchObject({ running: true })
      }).pipe(
        Effect.provide(Layer.merge(Fleet.runnerLayer({ storage: Fleet.sqlite(filename) }), SqliteClient.layer({ filename })))
      )
    }))

  it.scopedLive("a VM launched in a scope that outlives the runner layer goes with the runner", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const pid = yield* Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        const vm = yield* fleet.launch("vm-f", spec(base))
        return yield* pidOf(vm)
      }).pipe(Effect.provide(Fleet.runnerLayer()))
      expect(Proc.isAlive(pid)).toBe(false)
      expect(fs.readdirSync(base)).toEqual([])
    }))

  it.scopedLive("a VM whose client stops its heartbeat is shut down and then reported lost; a heartbeat keeps it", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      yield* Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        const kept = yield* fleet.launch("vm-kept", spec(base), { heartbeat: "200 millis" })
        const vm = yield* fleet.launch("vm-g", spec(base), { heartbeat: "1 hour" })
        const pid = yield* pidOf(vm)
        const keptPid = yield* pidOf(kept)
        // the runner's reaper looks every 5 s at least
        expect(yield* pollUntil(() => !Proc.isAlive(pid), "20 seconds")).toBe(true)
        const lost = yield* Effect.flip(vm.command("query-status"))
        expect(lost).toMatchObject({ _tag: "VmLost", id: "vm-g" })
        expect(Proc.isAlive(keptPid)).toBe(true)
        expect(yield* kept.state).toEqual({ _tag: "Running" })
      }).pipe(Effect.scoped, Effect.provide(Fleet.runnerLayer({ vmIdleTimeout: "1 second" })))
      expect(fs.readdirSync(base)).toEqual([])
    }))
})
