/**
 * The agent's typed commands, from the generated `src/generated/qga.ts`
 * (Debian's qemu-guest-agent schema), and the check of a reply against its
 * result Schema: `Schema.is` first (no copy, the reply returned as it came),
 * a decode only to say where a failing reply is wrong.
 */
import { Either, ParseResult, Schema } from "effect"
import { QmpProtocolError } from "../../Errors.js"
import * as Generated from "../../generated/qga.js"

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

export const isName = (command: string): command is Name => Object.prototype.hasOwnProperty.call(Generated.commands, command)

const checkers = new Map<string, { readonly is: (u: unknown) => boolean; readonly schema: Schema.Schema.AnyNoContext }>()

const checker = (command: Name) => {
  let c = checkers.get(command)
  if (!c) {
    const schema = Generated.commands[command].result as Schema.Schema.AnyNoContext
    c = { is: Schema.is(schema), schema }
    checkers.set(command, c)
  }
  return c
}

const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>((acc, p) => (typeof p === "number" ? `${acc}[${p}]` : `${acc}.${String(p)}`), "return")

const raw = (value: unknown): string => {
  try {
    const s = JSON.stringify(value) ?? String(value)
    return s.length > 300 ? `${s.slice(0, 300)}… (${s.length - 300} more chars)` : s
  } catch {
    return "(unprintable)"
  }
}

/** Checks a known command's `return` value; any other command's passes untouched. */
export const decodeResult = (command: string, value: unknown): Either.Either<unknown, QmpProtocolError> => {
  if (!isName(command)) return Either.right(value)
  const c = checker(command)
  if (c.is(value)) return Either.right(value)
  const decoded = Schema.decodeUnknownEither(c.schema, { errors: "first" })(value)
  const issue = Either.isLeft(decoded) ? ParseResult.ArrayFormatter.formatErrorSync(decoded.left)[0] : undefined
  const where = issue ? `${formatPath(issue.path)}: ${issue.message}` : "return: does not match its schema"
  return Either.left(
    new QmpProtocolError({
      message: `guest agent reply to ${command} does not match the qga ${schemaVersion} schema at ${where}`,
      raw: raw(value)
    })
  )
}
