/**
 * The storage drivers are installed separately: `effect-qemu/fleet` imports
 * and runs with only `@effect/sql-sqlite-node` (no `@effect/sql-pg`), and
 * imports with only `@effect/sql-pg`, where SQLite storage then says which
 * package to install.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as cp from "node:child_process"
import * as path from "node:path"
import { tempDir } from "./helpers/qemu.js"

const fixtures = path.join(import.meta.dirname, "fixtures")

const run = (hide: string, storage: string, dir: string) =>
  Effect.sync(() => {
    const out = cp.execFileSync(process.execPath, [
      "--import", path.join(fixtures, "hide-packages.mjs"),
      "--import", "tsx",
      path.join(fixtures, "fleet-driver.ts"), storage, dir
    ], { encoding: "utf8", env: { ...process.env, EQ_HIDE: hide }, timeout: 60_000 })
    return JSON.parse(out.trim().split("\n").pop()!) as { imported: boolean; ok: boolean; result: unknown }
  })

describe("Fleet storage drivers", () => {
  it.scopedLive("with only @effect/sql-sqlite-node, the fleet imports and launches a VM on SQLite", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const result = yield* run("@effect/sql-pg,pg", "sqlite", dir)
      expect(result).toMatchObject({ imported: true, ok: true, result: { status: "running" } })
    }), 90_000)

  it.scopedLive("with only @effect/sql-pg, the fleet imports; SQLite storage names the package to install", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const result = yield* run("@effect/sql-sqlite-node,better-sqlite3", "sqlite", dir)
      expect(result).toMatchObject({ imported: true, ok: false })
      expect(String(result.result)).toContain("npm install @effect/sql-sqlite-node")
    }), 90_000)
})
