/**
 * Accelerators: `detectAccel`'s decision with its inputs injected (no
 * /dev/kvm, a KVM that opens but fails the probe, a usable KVM, other
 * systems), the probe firmware run for real under TCG, and real launches
 * with `setAccel("tcg")` and `setAccel("auto")`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { QemuMachine } from "../src/index.js"
import * as Accel from "../src/internal/machine/accel.js"
import { noneConfig } from "./helpers/machine.js"
import { QEMU, tempDir } from "./helpers/qemu.js"

const inputs = (overrides: Partial<Accel.ProbeInputs> & { readonly probed?: Array<string> }): Accel.ProbeInputs => ({
  platform: "linux",
  openDevKvm: () => Either.right(undefined),
  runProbe: (accel) => {
    overrides.probed?.push(accel)
    return Effect.succeed("the probe ran")
  },
  ...overrides
})

describe("detectAccel's decision (inputs injected)", () => {
  it.effect("without /dev/kvm it answers tcg, says why, and runs no probe", () =>
    Effect.gen(function*() {
      const probed: Array<string> = []
      const found = yield* Accel.decide(inputs({ probed, openDevKvm: () => Either.left("does not exist") }))
      expect(found).toEqual({ accel: "tcg", reason: "/dev/kvm does not exist; using TCG" })
      expect(probed).toEqual([])
    }))

  it.effect("when /dev/kvm opens but the probe fails it answers tcg with a reason naming the probe's failure", () =>
    Effect.gen(function*() {
      const found = yield* Accel.decide(inputs({
        runProbe: () => Effect.fail(new Accel.ProbeFailed({ reason: "the probe guest did not finish within 5s" }))
      }))
      expect(found.accel).toBe("tcg")
      expect(found.reason).toBe(
        "/dev/kvm opens read-write; the KVM probe failed: the probe guest did not finish within 5s; using TCG"
      )
    }))

  it.effect("when /dev/kvm opens and the probe runs it answers kvm", () =>
    Effect.gen(function*() {
      const probed: Array<string> = []
      const found = yield* Accel.decide(inputs({ probed }))
      expect(found).toEqual({ accel: "kvm", reason: "/dev/kvm opens read-write; the probe ran" })
      expect(probed).toEqual(["kvm"])
    }))

  it.effect("on macOS it probes hvf, and elsewhere it answers tcg without probing", () =>
    Effect.gen(function*() {
      const probed: Array<string> = []
      expect((yield* Accel.decide(inputs({ probed, platform: "darwin" }))).accel).toBe("hvf")
      expect(probed).toEqual(["hvf"])
      const failed = yield* Accel.decide(inputs({
        platform: "darwin",
        runProbe: () => Effect.fail(new Accel.ProbeFailed({ reason: "QEMU exited with code 1" }))
      }))
      expect(failed).toEqual({ accel: "tcg", reason: "the HVF probe failed: QEMU exited with code 1; using TCG" })
      const other = yield* Accel.decide(inputs({ probed, platform: "freebsd" }))
      expect(other.accel).toBe("tcg")
      expect(other.reason).toContain("freebsd")
      expect(probed).toEqual(["hvf"])
    }))
})

describe("the probe machine", () => {
  it.scopedLive("its firmware runs to the success exit code under TCG (64-bit mode, 32 MiB checked)", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const firmware = path.join(dir, "probe.bin")
      fs.writeFileSync(firmware, Accel.probeFirmware())
      const args = Accel.probeArgs("tcg", firmware).filter((a) => a !== "-S")
      const run = cp.spawnSync(QEMU, args, { input: "", timeout: 30_000, encoding: "utf8" })
      expect(run.status).toBe(Accel.PROBE_SUCCESS)
    }))

  it.live("a binary that cannot run fails the probe with a reason", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Accel.runProbe("/nonexistent/qemu-system-x86_64", "kvm"))
      expect(error.reason).toMatch(/^cannot run \/nonexistent\/qemu-system-x86_64: NotFound/)
    }))
})

describe("accelerators on this host", { timeout: 60_000 }, () => {
  it.live("detectAccel answers with a reason; tcg when /dev/kvm does not open or the probe fails", () =>
    Effect.gen(function*() {
      const found = yield* QemuMachine.detectAccel({ binary: QEMU })
      expect(found.reason).not.toBe("")
      if (Either.isLeft(Accel.openDevKvm())) expect(found).toMatchObject({ accel: "tcg" })
      if (found.accel === "kvm") expect(found.reason).toContain("query-kvm says enabled and present")
      else expect(found.reason).toMatch(/using TCG$/)
      yield* Effect.log(`detectAccel here: ${found.accel} (${found.reason})`)
    }))

  it.scopedLive("a machine with setAccel(\"tcg\") launches under TCG and answers query-status", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const vm = yield* QemuMachine.launch(noneConfig(base).pipe(QemuMachine.setAccel("tcg")))
      expect(vm.args.join(" ")).toContain("-accel tcg")
      expect(yield* vm.command("query-status")).toMatchObject({ running: true })
      expect(yield* vm.command("query-kvm")).toMatchObject({ enabled: false })
    }))

  it.scopedLive("a machine with setAccel(\"auto\") launches with what detectAccel found and answers query-status", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const vm = yield* QemuMachine.launch(noneConfig(base).pipe(QemuMachine.setAccel("auto")))
      const found = yield* Accel.detectCached(QEMU)
      const i = vm.args.indexOf("-accel")
      expect(vm.args[i + 1]).toBe(found.accel)
      expect(yield* vm.command("query-status")).toMatchObject({ running: true })
      expect(yield* vm.command("query-kvm")).toMatchObject({ enabled: found.accel === "kvm" })
    }))
})
