/**
 * Members of a fleet that start at once on a new PostgreSQL database all come
 * up: the tables are set up one member at a time. Without that, about one start
 * in three failed here with "relation already exists" or a duplicate key in
 * `pg_type` (three members, fresh database each round).
 *
 * Needs PostgreSQL's binaries (`scripts/postgres.sh` installs them as root on
 * Debian); without them and without root the test is skipped and says why.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Redacted } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Fleet } from "../src/fleet/index.js"

const script = path.join(import.meta.dirname, "..", "scripts", "postgres.sh")
const installed = fs.existsSync("/usr/lib/postgresql") &&
  fs.readdirSync("/usr/lib/postgresql").some((v) => fs.existsSync(`/usr/lib/postgresql/${v}/bin/initdb`))
const canRun = installed || process.getuid?.() === 0

/** A throwaway server: its URL, stopped and removed with the scope. */
const postgres = Effect.acquireRelease(
  Effect.sync(() => {
    const out = cp.execFileSync("bash", [script, "start"], { encoding: "utf8", timeout: 300_000 })
    const field = (name: string) => out.match(new RegExp(`^${name}=(.*)$`, "m"))![1]!
    return { dir: field("PGDIR"), url: field("DATABASE_URL") }
  }),
  ({ dir }) => Effect.sync(() => cp.execFileSync("bash", [script, "stop", dir], { stdio: "ignore", timeout: 60_000 }))
)

/** One statement on its own connection to `url`. */
const query = (url: string, text: string) =>
  Effect.flatMap(PgClient.PgClient, (sql) => sql.unsafe<{ readonly name: string }>(text)).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))
  )

const ROUNDS = 4
const MEMBERS = 3

describe.skipIf(!canRun)("Fleet on PostgreSQL", () => {
  it.scopedLive(`${MEMBERS} members starting at once on a new database all come up (${ROUNDS} rounds)`, () =>
    Effect.gen(function*() {
      const server = yield* postgres
      const urlOf = (db: string) => server.url.replace(/\/postgres$/, `/${db}`)
      for (let round = 0; round < ROUNDS; round++) {
        const db = `members_${round}`
        yield* query(server.url, `CREATE DATABASE ${db}`)
        const storage = Fleet.postgres(urlOf(db))
        const exits = yield* Effect.all(
          Array.from({ length: MEMBERS }, () => Effect.exit(Effect.scoped(Layer.build(Fleet.clientLayer({ storage }))))),
          { concurrency: "unbounded" }
        )
        expect(exits.map((exit) => Exit.isSuccess(exit) ? "up" : String(exit.cause))).toEqual(Array(MEMBERS).fill("up"))
        const tables = yield* query(
          urlOf(db),
          `SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1`
        )
        expect(tables.map((row) => row.name)).toEqual(
          expect.arrayContaining(["cluster_runners", "cluster_messages", "cluster_replies", "effect_qemu_fleet_vms"])
        )
      }
    }), 300_000)
})
