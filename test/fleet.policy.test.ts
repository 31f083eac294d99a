/**
 * The runner's policy (`Fleet.policy`): each rule on its own, then through a
 * real runner (nothing run or written on a refusal), then QEMU's sandbox.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Fleet, type MachineSpec, Policy } from "../src/fleet/index.js"
import { processesMentioning } from "./helpers/machine.js"
import { QEMU, tempDir } from "./helpers/qemu.js"

const dirs = fs.mkdtempSync(path.join(os.tmpdir(), "eq-policy-"))
const outside = fs.mkdtempSync(path.join(os.tmpdir(), "eq-policy-out-"))
afterAll(() => {
  for (const dir of [dirs, outside]) fs.rmSync(dir, { recursive: true, force: true })
})
fs.symlinkSync(outside, path.join(dirs, "escape"))
const policy = Policy.make({ dirs: [dirs] })

const base: MachineSpec.MachineSpec = { binary: "qemu-system-x86_64", machine: "none" }

const denied = (spec: Partial<MachineSpec.MachineSpec>, p: Policy.Policy = policy) =>
  Effect.flip(Policy.checkSpec(p, "vm", { ...base, ...spec }))

const args = (...list: Array<string>) => denied({ args: list })

const command = (name: string, args?: unknown, p: Policy.Policy = policy) =>
  Effect.either(Policy.checkCommand(p, "vm", name, args))

describe("Policy: binaries", () => {
  it.effect("a qemu-system-* binary on the runner's PATH is allowed, and resolved to its path there", () =>
    Effect.gen(function*() {
      const spec = yield* Policy.checkSpec(policy, "vm", { ...base, binary: QEMU })
      expect(path.isAbsolute(spec.binary)).toBe(true)
      expect(path.basename(spec.binary)).toBe(path.basename(QEMU))
    }))

  it.effect("another program, or a qemu-system-* outside PATH, is refused", () =>
    Effect.gen(function*() {
      expect(yield* denied({ binary: "/bin/sh" })).toMatchObject({ _tag: "PolicyDenied", id: "vm", what: "binary" })
      expect(yield* denied({ binary: "sh" })).toMatchObject({ what: "binary" })
      expect(yield* denied({ binary: "qemu-system-nosuch" })).toMatchObject({ what: "binary" })
      fs.copyFileSync("/bin/true", path.join(dirs, "qemu-system-x86_64"))
      expect(yield* denied({ binary: path.join(dirs, "qemu-system-x86_64") })).toMatchObject({ what: "binary" })
    }))

  it.effect("binaries is configurable", () =>
    Effect.gen(function*() {
      const spec = yield* Policy.checkSpec(Policy.make({ binaries: ["true"] }), "vm", { binary: "true" })
      expect(spec.binary).toMatch(/\/true$/)
    }))
})

describe("Policy: wrapper and paths", () => {
  it.effect("a wrapper from the wire is refused", () =>
    Effect.gen(function*() {
      expect(yield* denied({ wrapper: ["/bin/sh", "-c", "touch /tmp/x"] })).toMatchObject({ what: "wrapper" })
    }))

  it.effect("paths inside the runner's dirs are allowed; outside, relative, with .. or through a symlink are refused", () =>
    Effect.gen(function*() {
      const ok = yield* Policy.checkSpec(policy, "vm", {
        ...base,
        baseTempDir: dirs,
        sockDir: path.join(dirs, "s"),
        logDir: dirs,
        consoleLog: path.join(dirs, "console.log"),
        monitorAddress: path.join(dirs, "m.sock")
      })
      expect(ok.baseTempDir).toBe(dirs)
      for (const field of ["baseTempDir", "sockDir", "logDir", "consoleLog", "monitorAddress"] as const) {
        expect(yield* denied({ [field]: "/etc/passwd" })).toMatchObject({ what: "path" })
        expect(yield* denied({ [field]: "relative/x" })).toMatchObject({ what: "path" })
        expect(yield* denied({ [field]: `${dirs}/../etc` })).toMatchObject({ what: "path" })
        expect(yield* denied({ [field]: path.join(dirs, "escape", "x") })).toMatchObject({ what: "path" })
      }
    }))

  it.effect("a disk outside the dirs, or with a format or id that smuggles properties, is refused", () =>
    Effect.gen(function*() {
      const disk = { path: path.join(dirs, "d.qcow2"), format: "qcow2", readOnly: true, id: "disk0" }
      expect((yield* Effect.either(Policy.checkSpec(policy, "vm", { ...base, disks: [disk] })))._tag).toBe("Right")
      expect(yield* denied({ disks: [{ ...disk, path: "/etc/shadow" }] })).toMatchObject({ what: "path" })
      expect(yield* denied({ disks: [{ ...disk, format: "raw,file.filename=/etc/shadow" }] })).toMatchObject({ what: "argument" })
      expect(yield* denied({ console: { deviceType: "isa-serial,romfile=/etc/x" } })).toMatchObject({ what: "argument" })
    }))

  it.effect("without dirs no path may be named; a TCP monitor and a name with a slash are refused", () =>
    Effect.gen(function*() {
      expect(yield* denied({ consoleLog: path.join(dirs, "c.log") }, Policy.make())).toMatchObject({ what: "path" })
      expect(yield* denied({ monitorAddress: { host: "0.0.0.0", port: 4444 } })).toMatchObject({ what: "path" })
      expect(yield* denied({ name: "../x" })).toMatchObject({ what: "path" })
    }))
})

describe("Policy: arguments", () => {
  it.effect("arguments that start host programs are refused", () =>
    Effect.gen(function*() {
      for (
        const list of [
          ["-incoming", "exec:cat /etc/passwd"],
          ["-serial", "exec:/bin/sh"],
          ["-netdev", "tap,id=n,script=/tmp/evil.sh"],
          ["-netdev", "tap,id=n,downscript=/bin/sh"],
          ["-netdev", "bridge,id=n,helper=/tmp/h"],
          ["-netdev", "user,id=n,guestfwd=tcp:10.0.2.100:1-cmd:/bin/sh"],
          ["-netdev", "user,id=n,smb=/srv"],
          ["-plugin", "/tmp/libevil.so"],
          ["-readconfig", "/tmp/x.cfg"]
        ]
      ) {
        expect(yield* args(...list)).toMatchObject({ what: "argument" })
      }
    }))

  it.effect("arguments that open host files outside the dirs, pass fds or add monitors are refused", () =>
    Effect.gen(function*() {
      for (
        const list of [
          ["-chardev", "file,id=c,path=/etc/passwd"],
          ["-chardev", "pipe,id=c,path=/tmp/p"],
          ["-chardev", "socket,id=c,path=/tmp/s,server=on"],
          ["-chardev", "serial,id=c,path=/dev/ttyS0"],
          ["-chardev", "null,id=c,logfile=/home/x"],
          ["-serial", "file:/etc/motd"],
          ["-serial", "/dev/ttyS0"],
          ["-serial", "mon:stdio"],
          ["-drive", "file=/etc/shadow,format=raw"],
          ["-blockdev", "driver=file,node-name=f,filename=/dev/sda"],
          ["-kernel", "/boot/vmlinuz"],
          ["-object", "memory-backend-file,id=m,size=1M,mem-path=/dev/shm/x"],
          ["-D", "/tmp/qemu.log"],
          ["-pidfile", "/tmp/x.pid"],
          ["-add-fd", "fd=3,set=1"],
          ["-netdev", "tap,id=n,fd=3"],
          ["-qmp", "tcp:0.0.0.0:4444,server=on"],
          ["-mon", "chardev=c"],
          ["-sandbox", "off"],
          ["-runas", "root"],
          ["-drive", `file=${dirs}/escape/disk.img`]
        ]
      ) {
        expect(yield* args(...list)).toMatchObject({ what: "argument" })
      }
      expect(yield* Effect.flip(Policy.checkSpec(policy, "vm", { ...base, machine: "none,dumpdtb=/tmp/x.dtb" })))
        .toMatchObject({ what: "argument" })
    }))

  it.effect("ordinary arguments and files inside the dirs are allowed", () =>
    Effect.gen(function*() {
      const spec = yield* Policy.checkSpec(policy, "vm", {
        ...base,
        args: [
          "-nodefaults", "-display", "none", "-m", "64", "-smp", "2", "-monitor", "null",
          "-netdev", "user,id=n,hostfwd=tcp:127.0.0.1:0-:22", "-device", "virtio-net-pci,netdev=n",
          "-drive", `file=${dirs}/disk.qcow2,if=none,id=d`, "-chardev", `file,id=c,path=${dirs}/c.log`,
          "-serial", `file:${dirs}/serial.log`, "-bios", "bios-256k.bin", "-incoming", "defer",
          "-append", "console=ttyS0 root=/dev/vda"
        ]
      })
      expect(spec.args).toContain("-nodefaults")
    }))
})

describe("Policy: QMP commands", () => {
  it.effect("human-monitor-command is refused by default; denyCommands adds, allowCommands lets through", () =>
    Effect.gen(function*() {
      expect(yield* command("human-monitor-command", { "command-line": "info status" })).toMatchObject({
        left: { _tag: "PolicyDenied", what: "command" }
      })
      expect((yield* command("query-status"))._tag).toBe("Right")
      expect(yield* command("system_reset", undefined, Policy.make({ denyCommands: ["system_reset"] }))).toMatchObject({
        left: { what: "command" }
      })
      expect((yield* command("human-monitor-command", {}, Policy.make({ allowCommands: ["human-monitor-command"] })))._tag)
        .toBe("Right")
    }))

  it.effect("migration to exec: or to files outside the dirs is refused; inside, or over TCP, allowed", () =>
    Effect.gen(function*() {
      expect((yield* command("migrate", { uri: "exec:cat > /tmp/x" }))._tag).toBe("Left")
      expect((yield* command("migrate", { channels: [{ "channel-type": "main", addr: { transport: "exec", args: ["sh"] } }] }))._tag)
        .toBe("Left")
      expect((yield* command("migrate", { uri: "file:/tmp/state" }))._tag).toBe("Left")
      expect((yield* command("migrate", { uri: "unix:/tmp/m.sock" }))._tag).toBe("Left")
      expect((yield* command("migrate-incoming", { uri: "exec:sh" }))._tag).toBe("Left")
      expect((yield* command("migrate", { uri: `file:${dirs}/state` }))._tag).toBe("Right")
      expect((yield* command("migrate", { uri: "tcp:10.0.0.2:4444" }))._tag).toBe("Right")
      expect((yield* command("migrate", { uri: "exec:true" }, Policy.make({ allowCommands: ["migrate"] })))._tag).toBe("Right")
    }))

  it.effect("screendump, dump-guest-memory and memory saves outside the dirs are refused", () =>
    Effect.gen(function*() {
      expect((yield* command("screendump", { filename: "/tmp/s.ppm" }))._tag).toBe("Left")
      expect((yield* command("dump-guest-memory", { paging: false, protocol: "file:/tmp/core" }))._tag).toBe("Left")
      expect((yield* command("pmemsave", { val: 0, size: 10, filename: "/home/x" }))._tag).toBe("Left")
      expect((yield* command("screendump", { filename: `${dirs}/s.ppm` }))._tag).toBe("Right")
    }))

  it.effect("a transaction's actions are checked as the commands they are", () =>
    Effect.gen(function*() {
      const action = (file: string) => ({
        actions: [{ type: "blockdev-snapshot-sync", data: { device: "d", "snapshot-file": file, format: "qcow2" } }]
      })
      expect((yield* command("transaction", action("/etc/cron.d/x")))._tag).toBe("Left")
      expect((yield* command("transaction", action(`${dirs}/snap.qcow2`)))._tag).toBe("Right")
      expect((yield* command("block-export-add", { type: "fuse", id: "e", "node-name": "n", mountpoint: "/home/x" }))._tag)
        .toBe("Left")
    }))

  it.effect("blockdev-add, chardev-add and object-add opening host files outside the dirs are refused", () =>
    Effect.gen(function*() {
      expect((yield* command("blockdev-add", { driver: "file", "node-name": "f", filename: "/etc/shadow" }))._tag).toBe("Left")
      expect((yield* command("blockdev-add", { driver: "qcow2", "node-name": "q", file: { driver: "file", filename: "/x" } }))._tag)
        .toBe("Left")
      expect((yield* command("chardev-add", { id: "c", backend: { type: "file", data: { out: "/etc/cron.d/x" } } }))._tag)
        .toBe("Left")
      expect((yield* command("chardev-add", {
        id: "c",
        backend: { type: "socket", data: { addr: { type: "unix", data: { path: "/tmp/s" } } } }
      }))._tag).toBe("Left")
      expect((yield* command("object-add", { "qom-type": "memory-backend-file", id: "m", "mem-path": "/dev/shm/x", size: 1 }))._tag)
        .toBe("Left")
      expect((yield* command("netdev-add", { type: "tap", id: "n", script: "/tmp/evil" }))._tag).toBe("Left")
      expect((yield* command("blockdev-add", { driver: "file", "node-name": "f", filename: `${dirs}/disk.img` }))._tag)
        .toBe("Right")
      expect((yield* command("blockdev-add", { driver: "qcow2", "node-name": "q", file: "f" }))._tag).toBe("Right")
    }))
})

// ---------------------------------------------------------------------------
// through a runner

const spec = (vms: string): MachineSpec.MachineSpec => ({
  binary: QEMU,
  machine: "none",
  baseTempDir: vms,
  args: ["-nodefaults", "-display", "none"]
})

describe("Policy through a runner", () => {
  it.scopedLive("refused launches run and write nothing; refused commands never reach QEMU", () =>
    Effect.gen(function*() {
      const root = yield* tempDir
      const vms = path.join(root, "vms")
      const elsewhere = path.join(root, "elsewhere")
      fs.mkdirSync(vms)
      fs.mkdirSync(elsewhere)
      const marker = path.join(elsewhere, "ran")
      yield* Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        const refusals = [
          yield* Effect.flip(fleet.launch("p1", { ...spec(vms), binary: "/bin/sh", args: ["-c", `touch ${marker}`] })),
          yield* Effect.flip(fleet.launch("p2", { ...spec(vms), wrapper: ["/bin/sh", "-c", `touch ${marker}; exec "$@"`, "sh"] })),
          yield* Effect.flip(fleet.launch("p3", { ...spec(vms), consoleLog: path.join(elsewhere, "console.log") })),
          yield* Effect.flip(fleet.launch("p4", { ...spec(elsewhere) })),
          yield* Effect.flip(fleet.launch("p5", { ...spec(vms), args: ["-incoming", `exec:touch ${marker}`] }))
        ]
        expect(refusals.map((e) => e._tag)).toEqual(Array(5).fill("PolicyDenied"))
        expect(refusals.map((e) => (e as { what?: string }).what)).toEqual(["binary", "wrapper", "path", "path", "argument"])
        expect(fs.readdirSync(elsewhere)).toEqual([])
        expect(fs.readdirSync(vms)).toEqual([])
        // a refused id was never launched
        expect(yield* Effect.flip(fleet.attach("p1"))).toMatchObject({ _tag: "VmNotFound" })

        const vm = yield* fleet.launch("ok", spec(vms))
        expect(processesMentioning(vm.name).length).toBe(1)
        expect(yield* Effect.flip(vm.command("human-monitor-command", { "command-line": "info status" })))
          .toMatchObject({ _tag: "PolicyDenied", id: "ok", what: "command" })
        expect(yield* Effect.flip(vm.qmp("migrate", { uri: `exec:touch ${marker}` })))
          .toMatchObject({ _tag: "PolicyDenied", what: "command" })
        expect(yield* Effect.flip(vm.command("screendump", { filename: path.join(elsewhere, "s.ppm") })))
          .toMatchObject({ _tag: "PolicyDenied", what: "command" })
        expect(yield* vm.command("query-status")).toMatchObject({ status: "running" })
        expect(fs.readdirSync(elsewhere)).toEqual([])
      }).pipe(Effect.scoped, Effect.provide(Fleet.runnerLayer({ policy: Fleet.policy({ dirs: [vms] }) })))
    }), 60_000)

  it.scopedLive("QEMU runs sandboxed: an exec: migration fails even when the policy allows it", () =>
    Effect.gen(function*() {
      const root = yield* tempDir
      const vms = path.join(root, "vms")
      fs.mkdirSync(vms)
      const marker = path.join(root, "ran")
      yield* Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        const vm = yield* fleet.launch("sandboxed", spec(vms))
        const [pid] = processesMentioning(vm.name)
        expect(fs.readFileSync(`/proc/${pid}/cmdline`, "utf8")).toContain(`-sandbox\0${Policy.defaultSandbox}`)
        yield* Effect.either(vm.command("migrate", { uri: `exec:touch ${marker}` }))
        // seccomp ends QEMU on the fork (SIGSYS), or QEMU fails the migration: never the program
        const outcome = yield* Effect.gen(function*() {
          const state = yield* vm.state
          if (state._tag === "Exited") return `exited ${state.exitCode}`
          const status = yield* Effect.either(vm.command("query-migrate"))
          return status._tag === "Right" ? String((status.right as { status?: string }).status) : status.left._tag
        }).pipe(
          Effect.filterOrFail((o) => o.startsWith("exited") || o === "failed"),
          Effect.retry({ schedule: Schedule.spaced("50 millis"), times: 200 })
        )
        expect(["exited -31", "failed"]).toContain(outcome)
        yield* Effect.sleep("300 millis")
        expect(fs.existsSync(marker)).toBe(false)
      }).pipe(
        Effect.scoped,
        Effect.provide(Fleet.runnerLayer({ policy: Fleet.policy({ dirs: [vms], allowCommands: ["migrate"] }) }))
      )
    }), 60_000)
})
