/**
 * `Guest.config` without booting anything: the machine options it passes on
 * to `QemuMachine.make` (`validateArgs`, `qmpTimeout`, ...) and the
 * accelerator.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration } from "effect"
import { QemuMachine } from "../src/index.js"
import { Guest } from "../src/testing/index.js"

const files: Guest.Files = {
  dir: "/g",
  kernel: "/g/vmlinuz",
  initrd: "/g/initramfs.cpio.gz",
  readyMarker: "R",
  kernelVersion: "6.1",
  pvpanic: false,
  guestAgent: true
}

const resolved = { monitorAddress: "/s/mon.sock", consolePath: "/s/con.sock" }

describe("Guest.config", () => {
  it("passes validateArgs on to the machine", () => {
    expect(Guest.config(files, { validateArgs: true }).validateArgs).toBe(true)
    expect(Guest.config(files).validateArgs).toBe(false)
  })

  it("passes the other machine options on, and keeps the guest's own out of them", () => {
    const config = Guest.config(files, {
      qmpTimeout: "5 seconds",
      eventCacheSize: 7,
      eventCacheBytes: 1024,
      eventStreamBuffer: 16,
      wrapper: ["nice"],
      logDir: "/logs",
      memory: "128",
      name: "g1",
      args: ["-smp", "2"]
    })
    expect(config).toMatchObject({
      eventCacheSize: 7,
      eventCacheBytes: 1024,
      eventStreamBuffer: 16,
      wrapper: ["nice"],
      logDir: "/logs",
      name: "g1",
      binary: "qemu-system-x86_64"
    })
    expect(Duration.toMillis(config.qmpTimeout)).toBe(5000)
    const line = QemuMachine.commandLine(config, resolved)
    expect(line.slice(0, 2)).toEqual(["nice", "qemu-system-x86_64"])
    expect(line.join(" ")).toContain("-m 128")
    expect(line.slice(-2)).toEqual(["-smp", "2"])
  })

  it("runs under TCG unless accel says otherwise, with one -accel", () => {
    const tcg = QemuMachine.commandLine(Guest.config(files), resolved)
    expect(tcg.filter((a) => a === "-accel")).toHaveLength(1)
    expect(tcg[tcg.indexOf("-accel") + 1]).toBe("tcg")
    expect(Guest.config(files, { accel: "auto" }).accel).toBe("auto")
    const kvm = QemuMachine.commandLine(Guest.config(files, { accel: "kvm" }), resolved)
    expect(kvm[kvm.indexOf("-accel") + 1]).toBe("kvm")
  })

  it("gives a guest with the clock daemon its port (on the agent's bus, else on one of its own) and asks init to start it", () => {
    const line = (f: Guest.Files, guestAgent: boolean) =>
      QemuMachine.commandLine(Guest.config(f, { guestAgent }), { ...resolved, guestAgentPath: "/s/qga.sock" } as never).join(" ")
    const port = "-chardev null,id=effect-qemu-clock -device virtserialport,chardev=effect-qemu-clock,name=org.effect-qemu.clock"
    const withAgent = line({ ...files, clock: true }, true)
    expect(withAgent).toContain(port)
    expect(withAgent.match(/virtio-serial-pci/g)).toHaveLength(1)
    expect(withAgent).toContain(" effect_qemu.clock=1")
    const alone = line({ ...files, clock: true }, false)
    expect(alone).toContain(`-device virtio-serial-pci ${port}`)
    expect(alone).toContain(" effect_qemu.clock=1")
    for (const without of [line(files, true), line({ ...files, clock: false }, false)]) {
      expect(without).not.toContain("effect-qemu-clock")
      expect(without).not.toContain("effect_qemu.clock")
    }
  })
})
