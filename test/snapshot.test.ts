/**
 * Snapshots, restores, templates and clones on a real QEMU (an idle q35
 * machine for the file and error cases) and on the test guest (state kept,
 * clones isolated from each other and from the base image).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import * as cp from "node:child_process"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { QemuMachine, Snapshot } from "../src/index.js"
import { Guest } from "../src/testing/index.js"
import { childQemus } from "./helpers/qemu.js"
import { guestTemplate } from "./support/clones.js"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "eq-snap-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const idle = (...args: Array<string>) =>
  QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(
    QemuMachine.setMachine("q35"),
    QemuMachine.addArgs("-accel", "tcg", "-m", "64", "-nodefaults", "-S", ...args)
  )

/** How many QEMUs of ours are alive. */
const ourQemus = () => childQemus().length

const sha = (file: string) => crypto.createHash("sha256").update(fs.readFileSync(file)).digest("hex")

describe("snapshots of an idle machine", { timeout: 60_000 }, () => {
  it.scopedLive("saves a private directory with the resolved machine type and restores it", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "snap")
      const vm = yield* QemuMachine.launch(idle())
      const snap = yield* vm.snapshot({ dir })
      expect(fs.statSync(dir).mode & 0o777).toBe(0o700)
      expect(snap.manifest.machineType).toMatch(/^pc-q35-\d+\.\d+$/)
      expect(snap.manifest.qemuVersion).toMatch(/^\d+\.\d+\.\d+$/)
      expect(snap.manifest.bytes).toBe(fs.statSync(snap.stateFile).size)
      const opened = yield* Snapshot.open(dir)
      expect(opened.manifest.config.args).toEqual(vm.args.slice(-6))
      const again = yield* QemuMachine.restore(opened, { paused: true })
      // A machine saved before it ever ran comes back in QEMU's `prelaunch` state.
      expect((yield* again.command("query-status")).running).toBe(false)
      yield* again.command("cont")
      expect((yield* again.command("query-status")).running).toBe(true)
      expect(again.args).toContain(snap.manifest.machineType)
    }))

  it.scopedLive("a state file that does not load is Corrupt, and no QEMU is left", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "snap")
      const vm = yield* QemuMachine.launch(idle())
      const snap = yield* vm.snapshot({ dir })
      yield* vm.shutdown()
      const size = fs.statSync(snap.stateFile).size
      fs.writeFileSync(snap.stateFile, crypto.randomBytes(size))
      const before = ourQemus()
      const exit = yield* Effect.exit(Effect.scoped(QemuMachine.restore(snap)))
      expect(Exit.isFailure(exit) && JSON.stringify(exit.cause)).toContain("Corrupt")
      expect(ourQemus()).toBe(before)
      fs.truncateSync(snap.stateFile, 1000)
      const truncated = yield* Effect.flip(Snapshot.open(dir))
      expect(truncated.reason).toBe("Corrupt")
      expect(truncated.message).toContain("truncated")
    }))

  it.scopedLive("a machine QEMU cannot migrate is NotMigratable with its blockers, and nothing is written", () =>
    Effect.gen(function*() {
      const dir = path.join(yield* tempDir, "snap")
      const vm = yield* QemuMachine.launch(
        idle("-object", "memory-backend-ram,id=m,size=1M,share=on", "-device", "ivshmem-plain,memdev=m")
      )
      const error = yield* Effect.flip(vm.snapshot({ dir }))
      expect(error._tag === "SnapshotError" && error.reason).toBe("NotMigratable")
      expect(error.message).toContain("ivshmem")
      expect(fs.existsSync(dir)).toBe(false)
    }))

  // `npm run -s qemu:path -- V` folders: snapshot on the newest QEMU found, restore on the oldest (7.2).
  const qemuDirs = ["10.0", "11.1"].map((v) => ({
    v,
    dir: path.join(process.env.EFFECT_QEMU_CACHE ?? path.join(import.meta.dirname, "..", ".cache"), "qemu", v, "bin")
  })).filter(({ dir }) => fs.existsSync(path.join(dir, "qemu-system-x86_64")))
  const old = path.join(process.env.EFFECT_QEMU_CACHE ?? path.join(import.meta.dirname, "..", ".cache"), "qemu", "7.2", "bin")
  const newer = qemuDirs.at(-1)
  it.scopedLive.skipIf(newer === undefined || !fs.existsSync(path.join(old, "qemu-system-x86_64")))(
    "a snapshot of a newer QEMU that an older one refuses is VersionMismatch naming both versions, and no QEMU is left",
    () =>
      Effect.gen(function*() {
        const dir = path.join(yield* tempDir, "snap")
        const withPath = <A, E, R>(bin: string, effect: Effect.Effect<A, E, R>) =>
          Effect.acquireUseRelease(
            Effect.sync(() => {
              const saved = process.env.PATH
              process.env.PATH = `${bin}:${saved}`
              return saved
            }),
            () => effect,
            (saved) => Effect.sync(() => (process.env.PATH = saved))
          )
        // Recorded by name: the restoring process finds another QEMU on its PATH (another host, an upgrade).
        const snap = yield* withPath(newer!.dir, Effect.scoped(Effect.flatMap(QemuMachine.launch(idle()), (vm) => vm.snapshot({ dir }))))
        expect(snap.manifest.qemuVersion.startsWith(newer!.v)).toBe(true)
        const before = ourQemus()
        const error = yield* withPath(old, Effect.flip(Effect.scoped(QemuMachine.restore(snap))))
        expect(error._tag === "SnapshotError" && error.reason).toBe("VersionMismatch")
        expect(error.message).toContain(snap.manifest.qemuVersion)
        expect(error.message).toMatch(/QEMU 7\.2\.\d+ refuses/)
        expect(ourQemus()).toBe(before)
      })
  )

  it.scopedLive.skipIf(process.getuid?.() !== 0)(
    "a snapshot onto a full file system is an Io error, leaves no partial files, and the machine runs on",
    () =>
      Effect.gen(function*() {
        const mount = path.join(yield* tempDir, "tiny")
        fs.mkdirSync(mount)
        // Too small for the device state of even an idle machine.
        cp.execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", mount])
        yield* Effect.addFinalizer(() => Effect.sync(() => cp.spawnSync("umount", ["-l", mount])))
        const vm = yield* QemuMachine.launch(idle())
        yield* vm.command("cont")
        const error = yield* Effect.flip(vm.snapshot({ dir: path.join(mount, "snap") }))
        expect(error._tag === "SnapshotError" && error.reason).toBe("Io")
        expect(error.message).toContain("is full")
        expect(fs.readdirSync(mount)).toEqual([])
        expect((yield* vm.command("query-status")).running).toBe(true)
      })
  )

  it.scopedLive("a template in a cacheDir is reused by a second template() call: no launch, no prepare", () =>
    Effect.gen(function*() {
      const cacheDir = path.join(yield* tempDir, "cache")
      let prepared = 0
      const prepare = () => Effect.sync(() => void prepared++)
      const first = yield* Effect.scoped(Effect.map(QemuMachine.template(idle(), { cacheDir, prepare }), (t) => t.dir))
      expect(prepared).toBe(1)
      const before = ourQemus()
      const second = yield* QemuMachine.template(idle(), { cacheDir, prepare })
      expect(prepared).toBe(1)
      expect(second.dir).toBe(first)
      expect(ourQemus()).toBe(before)
      // Kept for the next process: a cached template outlives its scope.
      expect(fs.existsSync(first)).toBe(true)
      const clone = yield* second.clone({ paused: true })
      expect((yield* clone.command("query-status")).running).toBe(false)
    }))

  it.scopedLive("restoring while the saved machine still holds its disk is Io (in use), not Corrupt", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const disk = path.join(dir, "disk.raw")
      fs.writeFileSync(disk, Buffer.alloc(1 << 20))
      const vm = yield* QemuMachine.launch(idle("-drive", `file=${disk},format=raw,if=virtio`))
      // Running: after the save it takes its disk back (a machine that never ran leaves it released).
      yield* vm.command("cont")
      const snap = yield* vm.snapshot({ dir: path.join(dir, "snap") })
      const error = yield* Effect.flip(Effect.scoped(QemuMachine.restore(snap)))
      expect(error._tag === "SnapshotError" && error.reason).toBe("Io")
      expect(error.message).toContain("in use by another QEMU")
      yield* vm.shutdown({ hard: true })
      const again = yield* QemuMachine.restore(snap)
      expect((yield* again.command("query-status")).running).toBe(true)
    }))

  it.scopedLive("a template refuses a raw writable disk", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(QemuMachine.template(idle("-drive", "file=/tmp/x.raw,format=raw,if=virtio")))
      expect(error._tag === "SnapshotError" && error.reason).toBe("WritableDisk")
    }))
})

describe("snapshots and clones of the test guest", { timeout: 180_000 }, () => {
  it.scopedLive("a restored guest keeps its RAM, and its console and agent answer", () =>
    Effect.gen(function*() {
      const guest = yield* Guest.launch({ guestAgent: true })
      yield* guest.run("echo kept > /tmp/mark")
      const snap = yield* guest.vm.snapshot({ dir: path.join(yield* tempDir, "snap") })
      const vm = yield* QemuMachine.restore(snap)
      const console = yield* vm.console
      yield* console.write("cat /tmp/mark\n")
      yield* console.expect(/kept\r?\n/, { timeout: "20 seconds" })
      const agent = yield* vm.guestAgent({ timeout: "20 seconds" })
      yield* agent.ping
      // The original runs on.
      expect((yield* guest.run("cat /tmp/mark")).output).toBe("kept")
    }))

  it.scopedLive("a guest whose reset ends it (-no-reboot) is restored without its kernel: it runs, a reset ends it, snapshots record the kernel", () =>
    Effect.gen(function*() {
      const guest = yield* Guest.launch()
      yield* guest.run("echo kept > /tmp/mark")
      const dir = path.join(yield* tempDir, "snap")
      const snap = yield* guest.vm.snapshot({ dir })
      expect(guest.vm.args).toContain("-kernel")
      const vm = yield* QemuMachine.restore(snap)
      // QEMU reads neither the kernel nor the initrd: the guest booted before it was saved.
      for (const flag of ["-kernel", "-initrd", "-append"]) expect(vm.args).not.toContain(flag)
      const console = yield* vm.console
      yield* console.write("cat /tmp/mark\n")
      yield* console.expect(/kept\r?\n/, { timeout: "20 seconds" })
      // What it was restored from, kernel included, is what a snapshot of it records.
      const again = yield* vm.snapshot({ dir: path.join(yield* tempDir, "again") })
      expect(again.manifest.config.args).toContain("-kernel")
      expect((yield* Snapshot.open(dir)).manifest.config.args).toContain("-kernel")
      // With -no-reboot a reset (here QMP's) ends QEMU: the firmware never looks for the kernel again.
      const shutdown = yield* Effect.fork(vm.eventWait("SHUTDOWN", { timeout: "20 seconds" }))
      yield* vm.command("system_reset")
      expect((yield* Fiber.join(shutdown)).data?.reason).toBe("host-qmp-system-reset")
      yield* vm.wait({ timeout: "20 seconds" })
      expect(yield* vm.isRunning).toBe(false)
    }))

  it.scopedLive("a restore with an agent sets the guest clock from the host", () =>
    Effect.gen(function*() {
      const guest = yield* Guest.launch({ guestAgent: true })
      yield* guest.agent
      const snap = yield* guest.vm.snapshot({ dir: path.join(yield* tempDir, "snap") })
      yield* guest.vm.shutdown({ hard: true })
      // The saved guest clock stops at the save: left alone, the restored guest would be this far behind.
      yield* Effect.sleep("4 seconds")
      const vm = yield* QemuMachine.restore(snap)
      const agent = yield* vm.guestAgent({ timeout: "30 seconds" })
      const skew = Effect.map(agent.execute("guest-get-time"), (ns) => Math.abs(Number(ns) / 1e6 - Date.now()))
      let last = yield* skew
      for (let i = 0; i < 40 && last > 1000; i++) {
        yield* Effect.sleep("250 millis")
        last = yield* skew
      }
      expect(last).toBeLessThan(1000)
    }))

  it.scopedLive("a Guest clone with an agent gets the host's clock, though its template was saved earlier", () =>
    Effect.gen(function*() {
      const tpl = yield* guestTemplate({ guestAgent: true })
      const guest = yield* tpl.clone()
      const agent = yield* guest.agent
      const skew = Effect.map(agent.execute("guest-get-time"), (ns) => Math.abs(Number(ns) / 1e6 - Date.now()))
      let last = yield* skew
      for (let i = 0; i < 40 && last > 1000; i++) {
        yield* Effect.sleep("250 millis")
        last = yield* skew
      }
      expect(last).toBeLessThan(1000)
    }))

  it.scopedLive("a Guest clone without an agent gets the host's clock through the guest's clock port", () =>
    Effect.gen(function*() {
      const tpl = yield* guestTemplate()
      expect(tpl.files.clock).toBe(true)
      // Left alone, a clone's clock stands where the template's stopped: make that 3 s behind at least.
      const age = Date.now() - tpl.template.snapshot.manifest.createdAt.getTime()
      if (age < 3000) yield* Effect.sleep(3000 - age)
      const guest = yield* tpl.clone()
      const skew = Effect.map(guest.run("date +%s"), (r) => Math.abs(Number(r.output) * 1000 - Date.now()))
      let last = yield* skew
      for (let i = 0; i < 40 && last > 1500; i++) {
        yield* Effect.sleep("250 millis")
        last = yield* skew
      }
      // `date +%s` truncates to the second, and the console answers later than the guest read its clock.
      expect(last).toBeLessThan(1500)
      // The daemon waits in read() or for SIGIO once its input has ended: it does not spin.
      const ticks = Effect.map(
        guest.run("cut -d' ' -f14,15 /proc/$(pidof effect-qemu-clockd)/stat"),
        (r) => r.output.split(" ").reduce((a, b) => a + Number(b), 0)
      )
      const before = yield* ticks
      yield* Effect.sleep("1 second")
      expect((yield* ticks) - before).toBeLessThan(20)
    }))

  it.scopedLive("the guest's clock daemon ignores lines that are not a time", () =>
    Effect.gen(function*() {
      const guest = yield* (yield* guestTemplate()).clone()
      const vm = guest.vm
      const say = (text: string) =>
        Effect.gen(function*() {
          const file = path.join(vm.tempDir, "clock-test")
          fs.writeFileSync(file, text)
          yield* vm.command("chardev-change", { id: "effect-qemu-clock", backend: { type: "file", data: { in: file, out: "/dev/null" } } })
          yield* Effect.sleep("300 millis")
          return Number((yield* guest.run("date -u +%Y")).output)
        })
      const year = new Date().getUTCFullYear()
      // 2031-06-01 in nanoseconds, spoiled in each way the daemon must refuse.
      const ns = `${Date.UTC(2031, 5, 1)}000000`
      expect(yield* say(`5\nabc\n${ns}x\n-${ns}\n99999999999999999999\n${ns}`)).toBe(year)
      // The last line had no newline: the end of its input drops it, and the next input starts afresh.
      expect(yield* say("\n")).toBe(year)
      expect(yield* say(`${ns}\n`)).toBe(2031)
    }))

  it.scopedLive("clones run at once, each with its own RAM and disk, and the base image is unchanged", () =>
    Effect.gen(function*() {
      const base = path.join(yield* tempDir, "base.raw")
      fs.writeFileSync(base, Buffer.alloc(4 << 20, 7))
      const checksum = sha(base)
      const tpl = yield* Guest.template({ disks: [{ path: base }] })
      const [a, b, c] = yield* Effect.all([tpl.clone(), tpl.clone(), tpl.clone()], { concurrency: "unbounded" })
      yield* a!.run("echo from-a > /tmp/f && echo from-a-disk | dd of=/dev/vda conv=fsync 2>/dev/null")
      expect((yield* a!.run("cat /tmp/f; head -c 9 /dev/vda")).output).toBe("from-a\nfrom-a-di")
      for (const other of [b!, c!, yield* tpl.clone()]) {
        expect((yield* other.run("cat /tmp/f")).status).not.toBe(0)
        expect((yield* other.run("head -c 4 /dev/vda | od -An -tx1")).output).toBe("07 07 07 07")
      }
      // A snapshot of a clone records the clone's overlay: restoring it never opens the base writable.
      const snap = yield* a!.vm.snapshot({ dir: path.join(yield* tempDir, "snap") })
      expect(snap.manifest.config.disks.map((d) => [path.basename(d.path), d.format])).toEqual([["disk-disk0.qcow2", "qcow2"]])
      expect(snap.manifest.config.disks.some((d) => d.path === base)).toBe(false)
      expect(sha(base)).toBe(checksum)
    }))
})
