/**
 * The SQL client behind a fleet's storage. Each driver is imported when the
 * layer starts, never at module load: importing `effect-qemu/fleet` needs
 * neither, and a user installs only the one their storage uses.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { ConfigError } from "effect/ConfigError"
import * as ConfigErrors from "effect/ConfigError"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"

/** Where the cluster keeps runners, shard locks and the VM registry (`Fleet.Storage`). */
export type Storage =
  | { readonly _tag: "Sqlite"; readonly filename?: string | undefined }
  | { readonly _tag: "Postgres"; readonly url: string }

/**
 * The driver of `storage`, loaded when the layer starts: a one-host user
 * installs only `@effect/sql-sqlite-node`, a multi-host user only
 * `@effect/sql-pg`, and importing `effect-qemu/fleet` needs neither.
 */
const driver = <M>(name: string, load: () => Promise<M>): Effect.Effect<M, ConfigError> =>
  Effect.tryPromise({
    try: load,
    catch: (cause) =>
      ConfigErrors.InvalidData(
        ["storage"],
        `this storage needs ${name}, which could not be loaded (npm install ${name}): ${String(cause)}`
      )
  })

export const sqlLayer = (storage: Storage): Layer.Layer<SqlClient.SqlClient, SqlError | ConfigError> => {
  switch (storage._tag) {
    case "Sqlite":
      return Layer.unwrapEffect(Effect.map(
        driver("@effect/sql-sqlite-node", () => import("@effect/sql-sqlite-node/SqliteClient")),
        // in memory by default: nothing on disk to leave behind, even on SIGKILL
        (SqliteClient) => SqliteClient.layer({ filename: storage.filename ?? ":memory:" })
      ))
    case "Postgres":
      return Layer.unwrapEffect(Effect.map(
        driver("@effect/sql-pg", () => import("@effect/sql-pg/PgClient")),
        (PgClient) => PgClient.layer({ url: Redacted.make(storage.url), maxConnections: 4 })
      ))
  }
}

/** The PostgreSQL advisory lock the members of a fleet take to set up its tables ("eq-q"). */
export const schemaLockKey = 0x65712d71

/**
 * Builds `layer`, which creates the fleet's tables, while no other member of
 * the fleet is building it. Runners and clients start at once; PostgreSQL's
 * `CREATE TABLE IF NOT EXISTS` is not safe against itself (two sessions both
 * see no table, one fails with "relation already exists" or a duplicate key
 * in `pg_type`), and neither is the cluster's own set-up. On PostgreSQL the
 * build holds a session advisory lock on a connection of its own, released
 * when the tables exist (or the build failed); a member that dies holding it
 * loses its connection, and the lock with it. SQLite needs none: its storage
 * is one process's.
 */
export const oneAtATime = <A, E, R>(
  layer: Layer.Layer<A, E, R>
): Layer.Layer<A, E | SqlError, R | SqlClient.SqlClient> =>
  Layer.scopedContext(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const build = Layer.buildWithScope(layer, yield* Effect.scope)
    return yield* sql.onDialectOrElse({
      pg: () =>
        Effect.scoped(Effect.gen(function*() {
          const conn = yield* sql.reserve
          yield* Effect.acquireRelease(
            conn.executeRaw("SELECT pg_advisory_lock($1)", [schemaLockKey]),
            () => Effect.ignore(conn.executeRaw("SELECT pg_advisory_unlock($1)", [schemaLockKey]))
          )
          return yield* build
        })),
      orElse: () => build
    })
  }))
