/**
 * `effect-qemu schema`: which commands and events the live QEMU has that the
 * generated types (`Qapi`) lack, and the reverse.
 *
 * @since 0.2.0
 */
import { Effect, Option, Scope } from "effect"
import * as QemuMachine from "../QemuMachine.js"
import * as QmpClient from "../QmpClient.js"
import * as Catalog from "./catalog.js"
import { CliFailure, EXIT_FATAL, fatal } from "./errors.js"

/**
 * The names a schema knows.
 *
 * @since 0.2.0
 * @category models
 */
export interface Names {
  /** The QEMU version, e.g. `7.2.0`, when known. */
  readonly version: string | undefined
  readonly commands: ReadonlyArray<string>
  readonly events: ReadonlyArray<string>
}

/**
 * The comparison, as printed by `--json`.
 *
 * @since 0.2.0
 * @category models
 */
export interface Diff {
  readonly live: { readonly version: string | undefined; readonly commands: number; readonly events: number }
  readonly generated: { readonly version: string | undefined; readonly commands: number; readonly events: number }
  readonly commands: { readonly onlyLive: ReadonlyArray<string>; readonly onlyGenerated: ReadonlyArray<string> }
  readonly events: { readonly onlyLive: ReadonlyArray<string>; readonly onlyGenerated: ReadonlyArray<string> }
}

const versionOf = (qmp: QmpClient.QmpClient.Service): string => {
  const v = qmp.greeting.QMP.version.qemu
  return `${v.major}.${v.minor}.${v.micro}`
}

const fromClient = (qmp: QmpClient.QmpClient.Service): Effect.Effect<Names, CliFailure> =>
  qmp.execute("query-qmp-schema").pipe(
    Effect.mapError(fatal),
    Effect.map((schema) => {
      const catalog = Catalog.fromSchema(schema)
      return { version: versionOf(qmp), commands: catalog.commands, events: catalog.events }
    })
  )

/**
 * Asks a running QEMU.
 *
 * @since 0.2.0
 * @category constructors
 */
export const fetchLive = (address: QmpClient.Address): Effect.Effect<Names, CliFailure, Scope.Scope> =>
  QmpClient.connect({ address, connectTimeout: "10 seconds" }).pipe(Effect.mapError(fatal), Effect.flatMap(fromClient))

/**
 * Starts the installed QEMU (`-machine none`) just to ask it, and stops it.
 *
 * @since 0.2.0
 * @category constructors
 */
export const fetchFromBinary = (binary: string): Effect.Effect<Names, CliFailure> =>
  Effect.scoped(
    Effect.gen(function*() {
      const vm = yield* QemuMachine.launch(
        QemuMachine.make({ binary }).pipe(QemuMachine.setMachine("none"), QemuMachine.addArgs("-nodefaults"))
      ).pipe(Effect.mapError(fatal))
      const qmp = yield* Option.match(vm.qmpClient, {
        onNone: () => Effect.fail(new CliFailure({ message: "the machine has no QMP monitor", exitCode: EXIT_FATAL })),
        onSome: Effect.succeed
      })
      const names = yield* fromClient(qmp)
      yield* vm.shutdown().pipe(Effect.mapError(fatal))
      return names
    })
  )

/** Imports a generated module when asked for: the other commands do not pay for loading it. */
const importGenerated = <A>(load: () => Promise<A>): Effect.Effect<A, CliFailure> =>
  Effect.tryPromise({
    try: load,
    catch: (e) =>
      new CliFailure({
        message: `cannot load the generated QAPI types: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`,
        exitCode: EXIT_FATAL
      })
  })

/**
 * The generated types' names, from the `Qapi` module (merged across every
 * version they were generated from).
 *
 * @since 0.2.0
 * @category constructors
 */
export const loadGenerated: Effect.Effect<Names, CliFailure> = importGenerated(() => import("../Qapi.js")).pipe(Effect.map((Qapi) => ({
  version: Qapi.versions.join(", "),
  commands: Object.keys(Qapi.commands).sort(),
  events: Object.keys(Qapi.events).sort()
})))

/**
 * The names to compare a live QEMU with: that version's own schema when the
 * types were generated from it (same major.minor), else the merged types.
 *
 * @since 0.3.0
 * @category constructors
 */
export const loadGeneratedFor = (version: string | undefined): Effect.Effect<Names, CliFailure> => {
  const key = version?.split(".").slice(0, 2).join(".")
  return Effect.flatMap(importGenerated(() => import("../generated/qmp.js")), (generated) => {
    const load = key !== undefined && Object.prototype.hasOwnProperty.call(generated.versionTables, key)
      ? generated.versionTables[key]
      : undefined
    if (load === undefined) return loadGenerated
    return Effect.map(Effect.promise(load), (own) => ({
      version: own.version,
      commands: Object.keys(own.commands).sort(),
      events: Object.keys(own.events).sort()
    }))
  })
}

const minus = (a: ReadonlyArray<string>, b: ReadonlyArray<string>) => {
  const other = new Set(b)
  return a.filter((x) => !other.has(x))
}

/**
 * @since 0.2.0
 * @category comparison
 */
export const compare = (live: Names, generated: Names): Diff => ({
  live: { version: live.version, commands: live.commands.length, events: live.events.length },
  generated: { version: generated.version, commands: generated.commands.length, events: generated.events.length },
  commands: { onlyLive: minus(live.commands, generated.commands), onlyGenerated: minus(generated.commands, live.commands) },
  events: { onlyLive: minus(live.events, generated.events), onlyGenerated: minus(generated.events, live.events) }
})

/**
 * @since 0.2.0
 * @category comparison
 */
export const isSame = (diff: Diff): boolean =>
  diff.commands.onlyLive.length + diff.commands.onlyGenerated.length + diff.events.onlyLive.length +
      diff.events.onlyGenerated.length === 0

/**
 * The comparison as text.
 *
 * @since 0.2.0
 * @category formatting
 */
export const render = (diff: Diff): string => {
  const list = (title: string, names: ReadonlyArray<string>) =>
    names.length === 0 ? "" : `${title} (${names.length}):\n${names.map((n) => `  ${n}\n`).join("")}`
  return [
    `live QEMU ${diff.live.version ?? "?"}: ${diff.live.commands} commands, ${diff.live.events} events\n`,
    `generated types (QEMU ${diff.generated.version ?? "?"}): ${diff.generated.commands} commands, ${diff.generated.events} events\n`,
    list("commands the live QEMU has and the generated types lack", diff.commands.onlyLive),
    list("commands in the generated types that the live QEMU lacks", diff.commands.onlyGenerated),
    list("events the live QEMU has and the generated types lack", diff.events.onlyLive),
    list("events in the generated types that the live QEMU lacks", diff.events.onlyGenerated),
    isSame(diff) ? "the generated types match the live QEMU\n" : ""
  ].join("")
}
