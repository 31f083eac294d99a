/**
 * `QemuMachine.commandLine` / `baseArgs` are pure: every config combination
 * must produce exactly the command line of QEMU's Python `QEMUMachine`
 * (`_base_args` + user args, wrapper first).
 */
import { describe, expect, it } from "@effect/vitest"
import { QemuMachine } from "../src/index.js"

const MON = "/run/vm/mon.sock"
const CON = "/run/vm/con.sock"
const resolved = { monitorAddress: MON, consolePath: CON }
const base = QemuMachine.make({ binary: "qemu-system-x86_64" })

const head = ["-display", "none", "-vga", "none"]
const qmpArgs = ["-chardev", `socket,id=mon,path=${MON}`, "-mon", "chardev=mon,mode=control"]
const consoleChardev = ["-chardev", `socket,id=console,path=${CON},server=on,wait=off`]

describe("QemuMachine.commandLine", () => {
  it("puts a unix QMP monitor after -display none -vga none by default", () => {
    expect(QemuMachine.commandLine(base, resolved)).toEqual(["qemu-system-x86_64", ...head, ...qmpArgs])
  })

  it("baseArgs is the command line without binary, wrapper and user args", () => {
    const config = base.pipe(QemuMachine.addArgs("-m", "64"))
    expect(QemuMachine.baseArgs(config, resolved)).toEqual([...head, ...qmpArgs])
  })

  it("describes a TCP monitor as host and port", () => {
    expect(QemuMachine.commandLine(base, { monitorAddress: { host: "127.0.0.1", port: 4444 }, consolePath: undefined }))
      .toEqual([
        "qemu-system-x86_64",
        ...head,
        "-chardev",
        "socket,id=mon,host=127.0.0.1,port=4444",
        "-mon",
        "chardev=mon,mode=control"
      ])
  })

  it("puts -machine after the monitor", () => {
    const config = base.pipe(QemuMachine.setMachine("none"))
    expect(QemuMachine.commandLine(config, resolved)).toEqual([
      "qemu-system-x86_64",
      ...head,
      ...qmpArgs,
      "-machine",
      "none"
    ])
  })

  it("setConsole() adds a server socket chardev as the first serial port", () => {
    const config = base.pipe(QemuMachine.setMachine("pc"), QemuMachine.setConsole())
    expect(QemuMachine.commandLine(config, resolved)).toEqual([
      "qemu-system-x86_64",
      ...head,
      ...qmpArgs,
      "-machine",
      "pc",
      ...consoleChardev,
      "-serial",
      "chardev:console"
    ])
  })

  it("setConsole({ index: 2 }) fills the first two serial ports with null", () => {
    const config = base.pipe(QemuMachine.setConsole({ index: 2 }))
    expect(QemuMachine.commandLine(config, resolved)).toEqual([
      "qemu-system-x86_64",
      ...head,
      ...qmpArgs,
      "-serial",
      "null",
      "-serial",
      "null",
      ...consoleChardev,
      "-serial",
      "chardev:console"
    ])
  })

  it("setConsole({ deviceType }) attaches the chardev to a -device instead of -serial", () => {
    const config = base.pipe(QemuMachine.setConsole({ deviceType: "isa-serial" }))
    expect(QemuMachine.commandLine(config, resolved)).toEqual([
      "qemu-system-x86_64",
      ...head,
      ...qmpArgs,
      ...consoleChardev,
      "-device",
      "isa-serial,chardev=console"
    ])
  })

  it("setQmpMonitor(false) leaves out the mon chardev even when an address is given", () => {
    const config = base.pipe(QemuMachine.setQmpMonitor(false), QemuMachine.setMachine("none"))
    const line = QemuMachine.commandLine(config, resolved)
    expect(line).toEqual(["qemu-system-x86_64", ...head, "-machine", "none"])
    expect(line.join(" ")).not.toContain("id=mon")
  })

  it("addMonitorNull appends -monitor null to the user args, in order", () => {
    const config = base.pipe(QemuMachine.addArgs("-m", "64"), QemuMachine.addMonitorNull, QemuMachine.addArgs("-S"))
    expect(QemuMachine.commandLine(config, resolved)).toEqual([
      "qemu-system-x86_64",
      ...head,
      ...qmpArgs,
      "-m",
      "64",
      "-monitor",
      "null",
      "-S"
    ])
  })

  it("addFd appends -add-fd fd=N,set=N,opaque=S followed by the extra opts", () => {
    const config = base.pipe(QemuMachine.addFd({ fd: 5, fdset: 1, opaque: "x", opts: "y" }))
    expect(QemuMachine.commandLine(config, resolved)).toEqual([
      "qemu-system-x86_64",
      ...head,
      ...qmpArgs,
      "-add-fd",
      "fd=5,set=1,opaque=x,y"
    ])
    expect(config.fds).toEqual([{ fd: 5, fdset: 1, opaque: "x", opts: "y" }])
  })

  it("addFd without opts has no trailing comma", () => {
    const config = base.pipe(QemuMachine.addFd({ fd: 7, fdset: 2, opaque: "rw:/dev/null" }))
    expect(QemuMachine.commandLine(config, resolved).slice(-2)).toEqual(["-add-fd", "fd=7,set=2,opaque=rw:/dev/null"])
  })

  it("puts the wrapper before the binary", () => {
    const config = QemuMachine.make({
      binary: "/usr/bin/qemu-system-x86_64",
      wrapper: ["taskset", "-c", "0"],
      args: ["-S"]
    })
    expect(QemuMachine.commandLine(config, resolved)).toEqual([
      "taskset",
      "-c",
      "0",
      "/usr/bin/qemu-system-x86_64",
      ...head,
      ...qmpArgs,
      "-S"
    ])
  })

  it("combines everything in the seed's order", () => {
    const config = QemuMachine.make({ binary: "qemu", wrapper: ["nice"], args: ["-nodefaults"] }).pipe(
      QemuMachine.setMachine("q35"),
      QemuMachine.setConsole({ index: 1, deviceType: "virtconsole" }),
      QemuMachine.addMonitorNull,
      QemuMachine.addArgs("-m", "256")
    )
    expect(QemuMachine.commandLine(config, resolved)).toEqual([
      "nice",
      "qemu",
      ...head,
      ...qmpArgs,
      "-machine",
      "q35",
      "-serial",
      "null",
      ...consoleChardev,
      "-device",
      "virtconsole,chardev=console",
      "-nodefaults",
      "-monitor",
      "null",
      "-m",
      "256"
    ])
  })

  it("setAccel puts -accel after -machine, and a later setAccel replaces an earlier one", () => {
    const config = base.pipe(QemuMachine.setMachine("q35"), QemuMachine.setAccel("kvm"), QemuMachine.addArgs("-S"))
    expect(QemuMachine.commandLine(config, resolved)).toEqual([
      "qemu-system-x86_64",
      ...head,
      ...qmpArgs,
      "-machine",
      "q35",
      "-accel",
      "kvm",
      "-S"
    ])
    const replaced = QemuMachine.setAccel(config, "tcg")
    expect(replaced.accel).toBe("tcg")
    expect(QemuMachine.commandLine(replaced, resolved).filter((a) => a === "-accel")).toHaveLength(1)
    expect(QemuMachine.commandLine(replaced, resolved)).toContain("tcg")
    expect(config.accel).toBe("kvm")
  })

  it("setAccel(\"hvf\") passes -accel hvf through, and an unresolved setAccel(\"auto\") adds no -accel", () => {
    expect(QemuMachine.baseArgs(base.pipe(QemuMachine.setAccel("hvf")), resolved).slice(-2)).toEqual(["-accel", "hvf"])
    const auto = base.pipe(QemuMachine.setAccel("auto"))
    expect(auto.accel).toBe("auto")
    expect(QemuMachine.commandLine(auto, resolved)).toEqual(QemuMachine.commandLine(base, resolved))
  })

  it("combinators return a new config and leave the original untouched", () => {
    const before = QemuMachine.commandLine(base, resolved)
    const changed = base.pipe(QemuMachine.setMachine("none"), QemuMachine.setConsole(), QemuMachine.addArgs("-S"))
    expect(changed).not.toBe(base)
    expect(QemuMachine.commandLine(base, resolved)).toEqual(before)
    expect(base.machine).toBeUndefined()
    expect(base.console).toBeUndefined()
  })
})
