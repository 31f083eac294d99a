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
})
