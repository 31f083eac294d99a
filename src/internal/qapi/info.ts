/**
 * The per-command and per-event descriptors that the generated modules
 * (`src/generated/qmp.ts`, `src/generated/qga.ts`) are made of.
 */
import type { Schema } from "effect"

export interface CommandInfo<A, R> {
  /** The arguments (`void` for a command without arguments). */
  readonly args: Schema.Schema<A>
  /** The `return` value. */
  readonly result: Schema.Schema<R>
  /** Whether the command may be run out-of-band (`exec-oob`). */
  readonly allowOob: boolean
  /** QAPI features, e.g. `deprecated`, `unstable`. */
  readonly features: ReadonlyArray<string>
}

export interface GuestCommandInfo<A, R> extends CommandInfo<A, R> {
  /** `false` for agent commands that send no reply on success (`guest-shutdown`...). */
  readonly successResponse: boolean
}

export interface EventInfo<D> {
  /** The `data` member (`Empty | undefined` for events that carry none). */
  readonly data: Schema.Schema<D>
  readonly features: ReadonlyArray<string>
}

/**
 * The argument list of a typed call: optional when the command takes no
 * arguments or only optional ones.
 */
export type ArgsTupleOf<A> = [A] extends [void] ? [args?: Readonly<Record<string, never>> | undefined]
  : {} extends A ? [args?: A | undefined]
  : [args: A]

/** One QEMU version's own schema, as the generated `qmp-X.Y.ts` modules give it. */
export interface VersionTables {
  /** `10.0.13` */
  readonly version: string
  readonly commands: { readonly [name: string]: CommandInfo<unknown, unknown> }
  readonly events: { readonly [name: string]: EventInfo<unknown> }
}
