/**
 * The SQL client behind a fleet's storage. Each driver is imported when the
 * layer starts, never at module load: importing `effect-qemu/fleet` needs
 * neither, and a user installs only the one their storage uses.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
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
