/**
 * Typed QMP: every command's arguments and result and every event's data, as
 * TypeScript types and `effect/Schema`s generated from QEMU's own schema
 * (`npm run qapi:gen`, from the introspection of the QEMU it was run with; see
 * `schemaVersion`).
 *
 * With a known command name, `vm.command` and `QmpClient.execute` take typed
 * arguments and return the decoded result; any other string keeps the untyped
 * form. `vm.eventWait` types the event and its `match` the same way.
 *
 * The named QAPI types are exported as types too (`Qapi.StatusInfo`,
 * `Qapi.BlockdevOptions`, ...), with their Schemas through `schema(name)`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Qapi, QemuMachine } from "effect-qemu"
 *
 * const program = Effect.gen(function*() {
 *   const vm = yield* QemuMachine.launch(QemuMachine.make({ binary: "qemu-system-x86_64", args: ["-accel", "tcg"] }))
 *   const status = yield* vm.command("query-status")            // Qapi.Result<"query-status">
 *   console.log(status.running, status.status)
 *   yield* vm.command("blockdev-add", { driver: "null-co", "node-name": "disk0" })
 *   const shutdown: Qapi.Event<"SHUTDOWN"> = yield* vm.eventWait("SHUTDOWN", { match: { data: { guest: true } } })
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.2.0
 */
import type { Effect, Schema } from "effect"
import type * as Generated from "./generated/qmp.js"
import * as generated from "./generated/qmp.js"
import * as decode from "./internal/qapi/decode.js"
import type { ArgsTupleOf, CommandInfo, EventInfo } from "./internal/qapi/info.js"

/**
 * Every named type of the QAPI schema, generated: `Qapi.StatusInfo`,
 * `Qapi.BlockdevOptions`, `Qapi.RunState`, ...
 *
 * @since 0.2.0
 * @category models
 */
export type * from "./generated/qmp.js"

/**
 * The newest QEMU version the types were generated from, e.g. `"11.1.3"`
 * (all of them: `versions`).
 *
 * @since 0.2.0
 * @category constants
 */
export const schemaVersion: string = generated.schemaVersion

/**
 * Every QEMU version the types were generated from, oldest first (e.g.
 * `["7.2.22", "10.0.13", "11.1.3"]`: Debian 12, 13 and sid). A connection to
 * one of them (by major.minor) checks replies and events against that
 * version's own schema; any other version against these merged types,
 * leniently (see `isUnchecked`).
 *
 * @since 0.3.0
 * @category constants
 */
export const versions: ReadonlyArray<string> = generated.versions

/**
 * Whether a reply value or event reached you without matching its types:
 * the QEMU it came from is not one of `versions` (newer, say) and sent
 * something the merged types do not allow. It is delivered as QEMU sent it,
 * with one warning per command or event name on the connection's log. From
 * a QEMU of one of `versions`, such a value is a `QmpProtocolError` instead,
 * so this is always `false` there.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Qapi, QemuMachine } from "effect-qemu"
 *
 * const program = Effect.gen(function*() {
 *   const vm = yield* QemuMachine.launch(QemuMachine.make({ binary: "qemu-system-x86_64" }))
 *   yield* vm.command("system_powerdown")
 *   const shutdown = yield* vm.eventWait("SHUTDOWN")
 *   if (Qapi.isUnchecked(shutdown)) console.warn("QEMU is newer than the types: data not checked")
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.3.0
 * @category refinements
 */
export const isUnchecked: (value: unknown) => boolean = decode.isUnchecked

/**
 * For every command: `{ args, result, allowOob, features }`, where `args` and
 * `result` are Schemas (built on first access).
 *
 * @since 0.2.0
 * @category constants
 */
export const commands: { readonly [N in CommandName]: CommandInfo<Args<N>, Result<N>> } = generated.commands

/**
 * For every event: `{ data, features }`, `data` being the Schema of the event's `data`.
 *
 * @since 0.2.0
 * @category constants
 */
export const events: { readonly [N in EventName]: EventInfo<EventData<N>> } = generated.events

/**
 * The Schema of a named QAPI type, e.g. `schema("BlockdevOptions")`.
 *
 * @since 0.2.0
 * @category constants
 */
export const schema: <K extends keyof Generated.Types>(name: K) => Schema.Schema<Generated.Types[K]> =
  generated.schema

/**
 * Is this the name of a command the generated types know?
 *
 * @since 0.2.0
 * @category refinements
 */
export const isCommandName = (name: string): name is CommandName =>
  Object.prototype.hasOwnProperty.call(generated.commands, name)

/**
 * Is this the name of an event the generated types know?
 *
 * @since 0.2.0
 * @category refinements
 */
export const isEventName = (name: string): name is EventName => Object.prototype.hasOwnProperty.call(generated.events, name)

/**
 * The name of every command of the schema.
 *
 * @since 0.2.0
 * @category models
 */
export type CommandName = Generated.CommandName

/**
 * The arguments of a command; `void` when it takes none.
 *
 * @since 0.2.0
 * @category models
 */
export type Args<N extends CommandName> = Generated.Args<N>

/**
 * The `return` value of a command.
 *
 * @since 0.2.0
 * @category models
 */
export type Result<N extends CommandName> = Generated.Result<N>

/**
 * The arguments of a command as a parameter list: `[args?: X]` when the
 * command takes no arguments or only optional ones, `[args: X]` otherwise.
 *
 * @since 0.2.0
 * @category models
 */
export type ArgsTuple<N extends CommandName> = ArgsTupleOf<Args<N>>

/**
 * The arguments of a command followed by an options parameter, for
 * `execute(name, args?, options?)`-style signatures.
 *
 * @since 0.2.0
 * @category models
 */
export type ArgsWithOptions<N extends CommandName, O> = [Args<N>] extends [void]
  ? [args?: Readonly<Record<string, never>> | undefined, options?: O]
  : {} extends Args<N> ? [args?: Args<N> | undefined, options?: O]
  : [args: Args<N>, options?: O]

/**
 * The name of every event of the schema.
 *
 * @since 0.2.0
 * @category models
 */
export type EventName = Generated.EventName

/**
 * The `data` of an event (`Empty | undefined` for events that carry none).
 *
 * @since 0.2.0
 * @category models
 */
export type EventData<N extends EventName> = Generated.Events[N]

/**
 * @since 0.2.0
 * @category models
 */
export interface Timestamp {
  readonly seconds: number
  readonly microseconds: number
}

/**
 * A typed event; `Event` alone is the union of every event.
 *
 * @since 0.2.0
 * @category models
 */
export type Event<N extends EventName = EventName> = N extends EventName ? {
    readonly event: N
    readonly data: EventData<N>
    readonly timestamp: Timestamp
  }
  : never

/**
 * A deep-partial pattern over `T`, as `EventMatch.eventMatch` reads it: any
 * member may be left out, and `null` or `undefined` match anything.
 *
 * @since 0.2.0
 * @category models
 */
export type DeepMatch<T> = T extends ReadonlyArray<infer E> ? ReadonlyArray<DeepMatch<E>> | null | undefined
  : T extends object ? { readonly [K in keyof T]?: DeepMatch<T[K]> } | null | undefined
  : T | null | undefined

/**
 * A typed `match` for `eventWait(name, { match })`.
 *
 * @since 0.2.0
 * @category models
 */
export type EventMatch<N extends EventName> = DeepMatch<Event<N>>

/**
 * `S` itself when it is not a known command name, `never` when it is: a known
 * name never falls back to the untyped overload.
 *
 * @since 0.2.0
 * @category models
 */
export type UntypedCommand<S extends string> = S extends CommandName ? never : S

/**
 * `S` itself when it is not a known event name, `never` when it is.
 *
 * @since 0.2.0
 * @category models
 */
export type UntypedEvent<S extends string> = S extends EventName ? never : S

/**
 * The shape of a typed `execute` / `vm.command`: typed for known names, the
 * untyped form for any other string.
 *
 * @example
 * ```ts
 * import type { Errors, Qapi } from "effect-qemu"
 *
 * const calls = (execute: Qapi.Execute<{ timeout?: string }, Errors.QmpCommandError, never>) => [
 *   execute("query-status"),                    // Effect<StatusInfo, ...>
 *   execute("x-my-vendor-command", { a: 1 })     // Effect<unknown, ...>
 * ]
 * ```
 *
 * @since 0.2.0
 * @category models
 */
export interface Execute<O, E, R> {
  <N extends CommandName>(command: N, ...rest: ArgsWithOptions<N, O>): Effect.Effect<Result<N>, E, R>
  <S extends string>(
    command: S & UntypedCommand<S>,
    args?: Readonly<Record<string, unknown>>,
    options?: O
  ): Effect.Effect<unknown, E, R>
}

/**
 * One call of a batch (`QmpClient.executeAll`, `vm.commandAll`): a command
 * name and its arguments, if any.
 *
 * @since 0.3.0
 * @category models
 */
export type Call = readonly [command: string, args?: Readonly<Record<string, unknown>> | undefined]

/**
 * A call as a batch checks it: a known command name with its typed arguments,
 * any other name with any arguments.
 *
 * @since 0.3.0
 * @category models
 */
export type CheckedCall<C> = C extends readonly [infer N extends CommandName, ...Array<unknown>]
  ? readonly [command: N, ...ArgsTuple<N>]
  : C

/**
 * The result of one call of a batch: `Result<N>` for a known command name,
 * `unknown` for any other.
 *
 * @since 0.3.0
 * @category models
 */
export type CallResult<C> = C extends readonly [infer N extends CommandName, ...Array<unknown>] ? Result<N> : unknown

/**
 * The shape of a typed `executeAll` / `vm.commandAll`: a list of calls in,
 * their results out, in the same order (a tuple for a tuple).
 *
 * @example
 * ```ts
 * import type { Errors, Qapi } from "effect-qemu"
 *
 * const calls = (executeAll: Qapi.ExecuteAll<{ timeout?: string }, Errors.QmpCommandError, never>) =>
 *   executeAll([["query-status"], ["query-name"], ["x-my-vendor-command", { a: 1 }]])
 *   // Effect<[StatusInfo, NameInfo, unknown], ...>
 * ```
 *
 * @since 0.3.0
 * @category models
 */
export interface ExecuteAll<O, E, R> {
  <const C extends ReadonlyArray<Call>>(
    // (`| []` keeps an array with a spread, `[...calls, ["query-status"]]`, from being read as a tuple it is not.)
    calls: C & ({ readonly [K in keyof C]: CheckedCall<C[K]> } | []),
    options?: O
  ): Effect.Effect<{ -readonly [K in keyof C]: CallResult<C[K]> }, E, R>
}

/**
 * The shape of a typed `vm.eventWait`.
 *
 * @since 0.2.0
 * @category models
 */
export interface EventWait<O, Untyped, E, R> {
  <N extends EventName>(
    name: N,
    options?: O & { readonly match?: EventMatch<N> | undefined }
  ): Effect.Effect<Event<N>, E, R>
  <S extends string>(name: S & UntypedEvent<S>, options?: O & { readonly match?: unknown }): Effect.Effect<Untyped, E, R>
}
