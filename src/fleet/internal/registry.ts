/**
 * Which VM ids were launched, and on which runner: a table next to the
 * cluster's own, in the same database. A runner that takes over a dead
 * runner's shards reads it to answer `VmLost` instead of re-creating a VM.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"

/** `running`: held by `runner`; `released`: shut down because no client kept it alive. */
export type Status = "running" | "released"

export interface Record {
  readonly id: string
  readonly runner: string
  readonly status: Status
  /** The host the runner runs on, and the VM's temp dir there (once launched). */
  readonly host?: string | undefined
  readonly tempDir?: string | undefined
}

export interface Service {
  readonly get: (id: string) => Effect.Effect<Option.Option<Record>, SqlError>
  readonly put: (record: Record) => Effect.Effect<void, SqlError>
  readonly remove: (id: string, runner: string) => Effect.Effect<void, SqlError>
  readonly list: Effect.Effect<ReadonlyArray<Record>, SqlError>
}

export class Registry extends Context.Tag("effect-qemu/fleet/Registry")<Registry, Service>() {}

export const defaultTable = "effect_qemu_fleet_vms"

export const make = (table: string = defaultTable): Effect.Effect<Service, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const t = sql(table)
    // Members that start at once build this one at a time (storage.oneAtATime):
    // CREATE TABLE IF NOT EXISTS races against itself on PostgreSQL.
    yield* sql`CREATE TABLE IF NOT EXISTS ${t} (
      id VARCHAR(255) PRIMARY KEY,
      runner VARCHAR(255) NOT NULL,
      status VARCHAR(16) NOT NULL,
      host VARCHAR(255),
      temp_dir TEXT,
      updated_at BIGINT NOT NULL
    )`

    const toRecord = (row: { readonly [k: string]: unknown }): Record => ({
      id: String(row.id),
      runner: String(row.runner),
      status: row.status === "released" ? "released" : "running",
      host: typeof row.host === "string" ? row.host : undefined,
      tempDir: typeof row.temp_dir === "string" ? row.temp_dir : undefined
    })

    return {
      get: (id) =>
        sql`SELECT id, runner, status, host, temp_dir FROM ${t} WHERE id = ${id}`.pipe(
          Effect.map((rows) => rows.length > 0 ? Option.some(toRecord(rows[0])) : Option.none())
        ),
      put: (record) =>
        sql`INSERT INTO ${t} (id, runner, status, host, temp_dir, updated_at)
            VALUES (${record.id}, ${record.runner}, ${record.status}, ${record.host ?? null}, ${
          record.tempDir ?? null
        }, ${Date.now()})
            ON CONFLICT (id) DO UPDATE SET runner = ${record.runner}, status = ${record.status}, host = ${
          record.host ?? null
        }, temp_dir = ${record.tempDir ?? null}, updated_at = ${Date.now()}`
          .pipe(Effect.asVoid),
      remove: (id, runner) => sql`DELETE FROM ${t} WHERE id = ${id} AND runner = ${runner}`.pipe(Effect.asVoid),
      list: sql`SELECT id, runner, status, host, temp_dir FROM ${t}`.pipe(Effect.map((rows) => rows.map(toRecord)))
    }
  })

export const layer = (table?: string): Layer.Layer<Registry, SqlError, SqlClient.SqlClient> =>
  Layer.effect(Registry, make(table))
