/**
 * `Image` against the real `qemu-img` on PATH: typed info with its backing
 * chain, create/overlay/convert/resize/check, internal snapshots, and bad
 * inputs (missing file, wrong format, bad sizes, an image QEMU holds) as
 * `ImageError`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Image, QemuMachine } from "../src/index.js"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "eq-image-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const MiB = 1024 * 1024

const failure = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) =>
  Effect.flatMap(Effect.exit(effect), (exit) =>
    Exit.isFailure(exit) && exit.cause._tag === "Fail"
      ? Effect.succeed(exit.cause.error)
      : Effect.dieMessage(`expected a failure, got ${JSON.stringify(exit)}`))

describe("Image", { timeout: 30_000 }, () => {
  it.scopedLive("creates qcow2 and raw images and reads them back typed", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      yield* Image.create({ path: path.join(dir, "a.qcow2"), format: "qcow2", size: 8 * MiB })
      yield* Image.create({ path: path.join(dir, "b.raw"), format: "raw", size: 2 * MiB })
      const a = yield* Image.info(path.join(dir, "a.qcow2"))
      expect(a.format).toBe("qcow2")
      expect(a["virtual-size"]).toBe(8 * MiB)
      expect(a["format-specific"]?.type).toBe("qcow2")
      const b = yield* Image.info(path.join(dir, "b.raw"))
      expect(b.format).toBe("raw")
      expect(b["virtual-size"]).toBe(2 * MiB)
    }))

  it.scopedLive("gives an overlay over a base, with the chain in info, and removes it at close", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const base = path.join(dir, "base.qcow2")
      yield* Image.create({ path: base, format: "qcow2", size: 4 * MiB })
      const inner = yield* Scope.make()
      const top = yield* Image.overlay(base).pipe(Scope.extend(inner))
      expect(fs.existsSync(top)).toBe(true)
      const info = yield* Image.info(top)
      expect(info.format).toBe("qcow2")
      expect(info["virtual-size"]).toBe(4 * MiB)
      expect(info["backing-filename"]).toBe(base)
      expect(info["backing-filename-format"]).toBe("qcow2")
      expect(info["backing-image"]?.filename).toBe(base)
      const chain = yield* Image.chain(top)
      expect(chain.map((i) => i.filename)).toEqual([top, base])
      // an overlay in a chosen dir, and one on top of another overlay
      const second = yield* Image.overlay(top, { dir }).pipe(Scope.extend(inner))
      expect(path.dirname(second)).toBe(dir)
      expect((yield* Image.chain(second)).length).toBe(3)
      yield* Scope.close(inner, Exit.void)
      expect(fs.existsSync(top)).toBe(false)
      expect(fs.existsSync(path.dirname(top))).toBe(false)
      expect(fs.existsSync(second)).toBe(false)
      expect(fs.existsSync(base)).toBe(true)
    }))

  it.scopedLive("converts, resizes and checks", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const q = path.join(dir, "q.qcow2")
      const r = path.join(dir, "r.raw")
      yield* Image.create({ path: q, format: "qcow2", size: 1 * MiB })
      yield* Image.convert({ from: q, to: r, format: "raw" })
      expect((yield* Image.info(r)).format).toBe("raw")
      yield* Image.resize(q, 3 * MiB)
      expect((yield* Image.info(q))["virtual-size"]).toBe(3 * MiB)
      const shrink = yield* failure(Image.resize(q, 1 * MiB))
      expect(shrink._tag).toBe("ImageError")
      expect(shrink.stderr).toContain("--shrink")
      yield* Image.resize(q, 1 * MiB, { shrink: true })
      const checked = yield* Image.check(q)
      expect(checked.format).toBe("qcow2")
      expect(checked["check-errors"]).toBe(0)
      expect(checked.corruptions ?? 0).toBe(0)
    }))

  it.scopedLive("lists, creates, applies and removes internal snapshots", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const q = path.join(dir, "s.qcow2")
      yield* Image.create({ path: q, format: "qcow2", size: 1 * MiB })
      expect(yield* Image.snapshots.list(q)).toEqual([])
      yield* Image.snapshots.create(q, "clean")
      yield* Image.snapshots.create(q, "second")
      expect((yield* Image.snapshots.list(q)).map((s) => s.name)).toEqual(["clean", "second"])
      yield* Image.snapshots.apply(q, "clean")
      yield* Image.snapshots.remove(q, "second")
      expect((yield* Image.snapshots.list(q)).map((s) => s.name)).toEqual(["clean"])
      const missing = yield* failure(Image.snapshots.apply(q, "nope"))
      expect(missing.operation).toBe("snapshots.apply")
      expect(missing.exitCode).toBe(1)
    }))

  it.scopedLive("fails with ImageError on a missing file, a wrong format and bad sizes", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const missing = yield* failure(Image.info(path.join(dir, "nope.qcow2")))
      expect(missing._tag).toBe("ImageError")
      expect(missing.operation).toBe("info")
      expect(missing.exitCode).toBe(1)
      expect(missing.stderr).toContain("No such file")
      expect(missing.message).toContain("qemu-img info failed")

      const raw = path.join(dir, "r.raw")
      yield* Image.create({ path: raw, format: "raw", size: MiB })
      const notChecked = yield* failure(Image.check(raw))
      expect(notChecked.stderr).toContain("does not support checks")
      const badFormat = yield* failure(Image.convert({ from: raw, to: path.join(dir, "x"), format: "qcow2", fromFormat: "qcow2" }))
      expect(badFormat.exitCode).toBe(1)
      expect(badFormat.stderr).toMatch(/qcow2|Image is not in/)

      for (const size of [-1, 1.5, Number.NaN, 2 ** 60]) {
        const e = yield* failure(Image.create({ path: path.join(dir, "bad.qcow2"), format: "qcow2", size }))
        expect(e._tag).toBe("ImageError")
      }
      const tooBig = yield* failure(Image.create({ path: path.join(dir, "bad.qcow2"), format: "qcow2", size: 2 ** 53 - 1 + 1 }))
      expect(tooBig.exitCode).toBeUndefined()
      expect(fs.existsSync(path.join(dir, "bad.qcow2"))).toBe(false)
      const wrong = yield* failure(Image.create({ path: path.join(dir, "w"), format: "vmdk" as "raw", size: MiB }))
      expect(wrong.stderr).toContain("format")
    }))

  it.scopedLive("fails with ImageError on an image a running QEMU holds, and reads it with forceShare", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const disk = path.join(dir, "held.qcow2")
      yield* Image.create({ path: disk, format: "qcow2", size: MiB })
      yield* QemuMachine.launch(
        QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(
          QemuMachine.setMachine("q35"),
          QemuMachine.addArgs("-accel", "tcg", "-m", "64", "-nodefaults", "-S"),
          QemuMachine.addDisk({ path: disk })
        )
      )
      const locked = yield* failure(Image.snapshots.create(disk, "x"))
      expect(locked.stderr).toMatch(/lock/)
      const resize = yield* failure(Image.resize(disk, 2 * MiB))
      expect(resize.stderr).toMatch(/lock/)
      expect((yield* failure(Image.info(disk))).stderr).toMatch(/lock/)
      expect((yield* Image.info(disk, { forceShare: true })).format).toBe("qcow2")
    }))
})
