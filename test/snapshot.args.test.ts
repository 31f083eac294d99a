/**
 * The restore-side command-line surgery that needs no QEMU: when a restored
 * machine may drop its direct-boot flags, and what is left when it does.
 */
import { describe, expect, it } from "@effect/vitest"
import { QemuMachine } from "../src/index.js"
import * as Args from "../src/internal/snapshot/args.js"

const config = (...args: Array<string>) => QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.addArgs(...args))

describe("restore arguments", () => {
  it("a machine never resets with -no-reboot or -action reboot=shutdown (the last one given wins), and otherwise does", () => {
    expect(Args.neverResets(["-m", "64", "-no-reboot"])).toBe(true)
    expect(Args.neverResets(["--no-reboot"])).toBe(true)
    expect(Args.neverResets(["-action", "reboot=shutdown"])).toBe(true)
    expect(Args.neverResets(["-action", "panic=none,reboot=shutdown,shutdown=poweroff"])).toBe(true)
    expect(Args.neverResets(["-action", "reboot=reset"])).toBe(false)
    expect(Args.neverResets(["-action", "xreboot=shutdown"])).toBe(false)
    expect(Args.neverResets(["-m", "64"])).toBe(false)
    expect(Args.neverResets(["-no-reboot", "-action", "reboot=reset"])).toBe(false)
    expect(Args.neverResets(["-action", "reboot=reset", "-no-reboot"])).toBe(true)
    expect(Args.neverResets(["-no-reboot", "-action", "panic=none"])).toBe(true)
  })

  it("drops -kernel, -initrd, -append and -dtb with their values, and keeps everything else in order", () => {
    const before = config(
      "-m", "256", "-kernel", "/k/vmlinuz", "-initrd", "/k/initrd", "-append", "console=ttyS0 -no-reboot", "-dtb", "/k/x.dtb",
      "-no-reboot", "-serial", "stdio"
    )
    const after = Args.withoutDirectBoot(before)
    expect(after.args).toEqual(["-m", "256", "-no-reboot", "-serial", "stdio"])
    // The rest of the config, and the original, are untouched.
    expect(after.binary).toBe(before.binary)
    expect(before.args).toContain("-kernel")
    expect(QemuMachine.isConfig(after)).toBe(true)
  })
})
