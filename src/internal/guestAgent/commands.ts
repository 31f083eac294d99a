/**
 * The agent's typed commands, from the generated `src/generated/qga.ts`
 * (Debian's qemu-guest-agent schema), and the check of a reply against its
 * result Schema with the same checker as QMP's (`qapi/decode`).
 */
import type { Either } from "effect"
import type { QmpProtocolError } from "../../Errors.js"
import * as Generated from "../../generated/qga.js"
import * as Decode from "../qapi/decode.js"

export type Name = Generated.CommandName
export type Args<N extends Name> = Generated.Args<N>
export type Result<N extends Name> = Generated.Result<N>

/** The parameters after the command name: arguments (optional when none are required), then call options. */
export type ArgsWithOptions<N extends Name, O> = [Args<N>] extends [void]
  ? [args?: Readonly<Record<string, never>> | undefined, options?: O]
  : {} extends Args<N> ? [args?: Args<N> | undefined, options?: O]
  : [args: Args<N>, options?: O]

/** `S` when it is not a known command name, `never` when it is. */
export type Untyped<S extends string> = S extends Name ? never : S

export const schemaVersion = Generated.schemaVersion

/** Every command's argument and result Schemas, and whether it replies on success. */
export const commands = Generated.commands

/** Checks a known command's `return` value; any other command's passes untouched. */
export const decodeResult: (command: string, value: unknown) => Either.Either<unknown, QmpProtocolError> = Decode
  .makeResultDecoder(
    Generated.commands,
    (command, where) => `guest agent reply to ${command} does not match the qga ${schemaVersion} schema at ${where}`
  )
