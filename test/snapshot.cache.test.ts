/**
 * Pruning of a template cacheDir on a real QEMU (idle q35 machines told
 * apart by `-smp`, a second or two each): entries are aged with `utimes` on
 * their `.used` stamp instead of waiting.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { QemuMachine } from "../src/index.js"
import * as Cache from "../src/internal/snapshot/cache.js"

const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "eq-cache-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const idle = (cpus: number) =>
  QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(
    QemuMachine.setMachine("q35"),
    QemuMachine.addArgs("-accel", "tcg", "-m", "16", "-nodefaults", "-S", "-smp", String(cpus))
  )

const DAY = 86_400_000

/** A template saved into the cache and released (its scope closed): what a finished process leaves. */
const saved = (cacheDir: string, cpus: number, options: Omit<QemuMachine.TemplateOptions<never, never>, "cacheDir"> = {}) =>
  Effect.scoped(Effect.map(QemuMachine.template(idle(cpus), { ...options, cacheDir }), (t) => t.dir))

/** Its last use `ms` ago. */
const age = (dir: string, ms: number) => {
  const t = new Date(Date.now() - ms)
  fs.utimesSync(path.join(dir, ".used"), t, t)
}

const ageDir = (dir: string, ms: number) => {
  const t = new Date(Date.now() - ms)
  fs.utimesSync(dir, t, t)
}

/** A pid no process has: one that has just exited. */
const deadPid = () => cp.spawnSync("true").pid!

describe("pruning a template cacheDir", { timeout: 120_000 }, () => {
  it.scopedLive("an entry unused for longer than cacheMaxAge is removed when another template is saved", () =>
    Effect.gen(function*() {
      const cacheDir = path.join(yield* tempDir, "cache")
      const old = yield* saved(cacheDir, 1)
      const recent = yield* saved(cacheDir, 2)
      age(old, 31 * DAY)
      age(recent, 29 * DAY)
      const fresh = yield* saved(cacheDir, 3)
      expect(fs.existsSync(old)).toBe(false)
      expect(fs.existsSync(recent)).toBe(true)
      expect(fs.existsSync(fresh)).toBe(true)
      // A shorter max age is an option; nothing is left aside.
      yield* saved(cacheDir, 3, { cacheMaxAge: "1 day" })
      expect(fs.existsSync(recent)).toBe(false)
      expect(fs.readdirSync(cacheDir).sort()).toEqual([path.basename(fresh)])
    }))

  it.scopedLive("an entry held by a live process is kept however old, until its scope and last clone end", () =>
    Effect.gen(function*() {
      const cacheDir = path.join(yield* tempDir, "cache")
      const scope = yield* Scope.make()
      const cloneScope = yield* Scope.make()
      const tpl = yield* QemuMachine.template(idle(1), { cacheDir }).pipe(Scope.extend(scope))
      age(tpl.dir, 90 * DAY)
      yield* saved(cacheDir, 2, { cacheMaxEntries: 1 })
      expect(fs.existsSync(tpl.dir)).toBe(true)
      // Still whole: a clone maps its RAM file and loads its state.
      const clone = yield* tpl.clone({ paused: true }).pipe(Scope.extend(cloneScope))
      expect((yield* clone.command("query-status")).running).toBe(false)
      yield* Scope.close(scope, Exit.void)
      age(tpl.dir, 90 * DAY)
      yield* saved(cacheDir, 2)
      expect(fs.existsSync(tpl.dir)).toBe(true)
      yield* Scope.close(cloneScope, Exit.void)
      yield* saved(cacheDir, 2)
      expect(fs.existsSync(tpl.dir)).toBe(false)
    }))

  it.scopedLive("a released entry past cacheMaxAge is pruned, and a holder of a dead process holds nothing", () =>
    Effect.gen(function*() {
      const cacheDir = path.join(yield* tempDir, "cache")
      const released = yield* saved(cacheDir, 1)
      const crashed = yield* saved(cacheDir, 2)
      fs.writeFileSync(path.join(crashed, ".holder-dead"), JSON.stringify({ host: os.hostname(), pid: deadPid() }))
      age(released, 31 * DAY)
      age(crashed, 31 * DAY)
      yield* saved(cacheDir, 3)
      expect(fs.existsSync(released)).toBe(false)
      expect(fs.existsSync(crashed)).toBe(false)
    }))

  it.scopedLive("an entry used within the last minutes is kept, whatever the limits", () =>
    Effect.gen(function*() {
      const cacheDir = path.join(yield* tempDir, "cache")
      const a = yield* saved(cacheDir, 1)
      const b = yield* saved(cacheDir, 2)
      age(a, 5 * 60_000)
      age(b, 20 * 60_000)
      const c = yield* saved(cacheDir, 3, { cacheMaxEntries: 1, cacheMaxAge: "1 minute" })
      expect(fs.existsSync(a)).toBe(true)
      expect(fs.existsSync(b)).toBe(false)
      expect(fs.existsSync(c)).toBe(true)
    }))

  it.scopedLive("beyond cacheMaxEntries the least recently used go first, and reuse counts as use", () =>
    Effect.gen(function*() {
      const cacheDir = path.join(yield* tempDir, "cache")
      const dirs = [] as Array<string>
      for (const cpus of [1, 2, 3]) dirs.push(yield* saved(cacheDir, cpus))
      const [a, b, c] = dirs as [string, string, string]
      age(a, 1 * DAY)
      age(b, 3 * DAY)
      age(c, 2 * DAY)
      // A reuse of the oldest makes it the most recent.
      expect(yield* saved(cacheDir, 2)).toBe(b)
      for (const dir of [a, b, c]) expect(fs.existsSync(dir)).toBe(true)
      age(b, 1 * 60 * 60_000)
      const d = yield* saved(cacheDir, 4, { cacheMaxEntries: 2 })
      expect([a, b, c, d].map((dir) => fs.existsSync(dir))).toEqual([false, true, false, true])
    }))

  it.scopedLive("another QEMU version goes after 7 days; a damaged entry and a crashed save after 10 minutes", () =>
    Effect.gen(function*() {
      const cacheDir = path.join(yield* tempDir, "cache")
      const other = yield* saved(cacheDir, 1)
      const manifest = path.join(other, "manifest.json")
      fs.writeFileSync(manifest, JSON.stringify({ ...JSON.parse(fs.readFileSync(manifest, "utf8")), qemuVersion: "1.0.0" }))
      const current = yield* saved(cacheDir, 2)
      age(other, 8 * DAY)
      age(current, 8 * DAY)

      const damaged = path.join(cacheDir, "template-0123456789abcdef0123")
      const damagedNew = path.join(cacheDir, "template-aaaaaaaaaaaaaaaaaaaa")
      const crashedSave = path.join(cacheDir, ".template-0123456789abcdef0123-x1")
      const liveSave = path.join(cacheDir, ".template-0123456789abcdef0123-x2")
      const asidePrune = path.join(cacheDir, ".prune-template-0123456789abcdef0123-x3")
      const foreign = path.join(cacheDir, "notes")
      for (const dir of [damaged, damagedNew, crashedSave, liveSave, asidePrune, foreign]) {
        fs.mkdirSync(dir)
        fs.writeFileSync(path.join(dir, "ram"), "x")
      }
      fs.writeFileSync(path.join(crashedSave, ".holder-a"), JSON.stringify({ host: os.hostname(), pid: deadPid() }))
      fs.writeFileSync(path.join(liveSave, ".holder-b"), JSON.stringify({ host: os.hostname(), pid: process.pid }))
      for (const dir of [damaged, crashedSave, liveSave, asidePrune, foreign]) ageDir(dir, 60 * 60_000)

      yield* saved(cacheDir, 3)
      expect(fs.existsSync(other)).toBe(false)
      expect(fs.existsSync(current)).toBe(true)
      expect(fs.existsSync(damaged)).toBe(false)
      expect(fs.existsSync(damagedNew)).toBe(true)
      expect(fs.existsSync(crashedSave)).toBe(false)
      expect(fs.existsSync(liveSave)).toBe(true)
      expect(fs.existsSync(asidePrune)).toBe(false)
      // Not ours: left alone.
      expect(fs.existsSync(foreign)).toBe(true)
    }))

  it.scopedLive("a damaged entry under a template's own key is replaced by a new save", () =>
    Effect.gen(function*() {
      const cacheDir = path.join(yield* tempDir, "cache")
      const dir = yield* saved(cacheDir, 1)
      fs.truncateSync(path.join(dir, "state.bin"), 10)
      let prepared = 0
      const tpl = yield* QemuMachine.template(idle(1), { cacheDir, prepare: () => Effect.sync(() => void prepared++) })
      expect(prepared).toBe(1)
      expect(tpl.dir).toBe(dir)
      const clone = yield* tpl.clone({ paused: true })
      expect((yield* clone.command("query-status")).running).toBe(false)
    }))

  it("the caches of other guest builds (Guest.template's folders) go after 7 days unused, and their folders once empty", () => {
    const parent = fs.mkdtempSync(path.join(os.tmpdir(), "eq-cache-"))
    try {
      const entry = (folder: string, hex: string, days: number, holder?: number) => {
        const dir = path.join(parent, folder, `template-${hex.repeat(20)}`)
        fs.mkdirSync(dir, { recursive: true })
        fs.writeFileSync(path.join(dir, "manifest.json"), "{}")
        fs.writeFileSync(path.join(dir, ".used"), "")
        if (holder !== undefined) fs.writeFileSync(path.join(dir, ".holder-x"), JSON.stringify({ host: os.hostname(), pid: holder }))
        age(dir, days * DAY)
        return dir
      }
      const current = entry("guest-000000000000", "a", 20)
      const gone = entry("guest-111111111111", "b", 8)
      const recentOld = entry("guest-222222222222", "c", 6)
      const heldOld = entry("guest-333333333333", "d", 20, process.pid)
      const pruned = Cache.pruneSiblings(parent, /^guest-[0-9a-f]{12}$/, "guest-000000000000", {
        ...Cache.limits({}),
        now: Date.now()
      })
      expect(pruned.map((p) => p.name)).toEqual([`guest-111111111111/${path.basename(gone)}`])
      expect([current, gone, recentOld, heldOld].map((d) => fs.existsSync(d))).toEqual([true, false, true, true])
      expect(fs.existsSync(path.join(parent, "guest-111111111111"))).toBe(false)
    } finally {
      fs.rmSync(parent, { recursive: true, force: true })
    }
  })
})
