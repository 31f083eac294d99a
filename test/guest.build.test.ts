/**
 * The guest build's cache (scripts/build-guest.sh): a complete build is reused,
 * and a helper rebuilt since (a developer's edit of native/clockd.c, say) makes
 * a new guest rather than leaving the old binary in the cached initramfs.
 * Needs no QEMU; it downloads Debian's kernel and busybox as `npm run guest` does.
 */
import { describe, expect, it } from "@effect/vitest"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const script = path.join(repo, "scripts", "build-guest.sh")
const built = path.join(repo, "build", "Release")
const helpers = ["effect-qemu-hwclock", "effect-qemu-clockd"]
const haveHelpers = helpers.every((name) => fs.existsSync(path.join(built, name)))

const build = (out: string, helpersDir: string) => {
  const result = cp.spawnSync("bash", [script, out], {
    encoding: "utf8",
    env: { ...process.env, EFFECT_QEMU_HELPERS_DIR: helpersDir },
    timeout: 300_000
  })
  expect(result.status, result.stderr).toBe(0)
  return result.stdout
}
const meta = (out: string) => JSON.parse(fs.readFileSync(path.join(out, "guest.json"), "utf8")) as Record<string, unknown>

describe("the guest build's cache", { timeout: 600_000 }, () => {
  it.skipIf(!haveHelpers)("reuses a complete build, and builds again once a helper changed", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eq-guest-build-"))
    try {
      const helpersDir = path.join(dir, "helpers")
      const out = path.join(dir, "guest")
      fs.mkdirSync(helpersDir)
      for (const name of helpers) fs.copyFileSync(path.join(built, name), path.join(helpersDir, name))

      expect(build(out, helpersDir)).not.toContain("guest: cached")
      const first = meta(out)
      expect(first.clock).toBe(true)
      expect(first.hwclock).toBe("effect-qemu")
      const initrd = fs.statSync(path.join(out, "initramfs.cpio.gz")).mtimeMs

      expect(build(out, helpersDir)).toContain("guest: cached")

      // The same helper with one more byte (an ELF ignores bytes after its segments): a new build.
      fs.appendFileSync(path.join(helpersDir, "effect-qemu-clockd"), "\0")
      expect(build(out, helpersDir)).not.toContain("guest: cached")
      const second = meta(out)
      expect(second.helpers).not.toBe(first.helpers)
      expect(fs.statSync(path.join(out, "initramfs.cpio.gz")).mtimeMs).toBeGreaterThan(initrd)
      expect(build(out, helpersDir)).toContain("guest: cached")
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
