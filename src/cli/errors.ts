/**
 * The command line tool's own failures, and how every failure becomes one
 * readable line and an exit status.
 *
 * Exit statuses: 0 every command succeeded; 1 the shell ran to the end but
 * some input line failed (QMP error reply, parse error); 2 the tool could not
 * do its job (bad usage or address, refused or lost connection, launch
 * failure); 130 interrupted (SIGINT / SIGTERM).
 *
 * @since 0.2.0
 */
import { Data } from "effect"
import { isEffectQemuError } from "../Errors.js"

/**
 * A fatal failure of the tool, with the line to print.
 *
 * @since 0.2.0
 * @category errors
 */
export class CliFailure extends Data.TaggedError("CliFailure")<{
  readonly message: string
  readonly exitCode: number
}> {}

/**
 * @since 0.2.0
 * @category constants
 */
export const EXIT_OK = 0

/**
 * @since 0.2.0
 * @category constants
 */
export const EXIT_COMMAND_FAILED = 1

/**
 * @since 0.2.0
 * @category constants
 */
export const EXIT_FATAL = 2

/**
 * @since 0.2.0
 * @category constants
 */
export const EXIT_INTERRUPTED = 130

const firstLine = (text: string): string => text.split("\n").map((l) => l.trim()).find((l) => l.length > 0) ?? ""

/**
 * One line that says what went wrong, for any failure the tool can meet.
 *
 * @since 0.2.0
 * @category formatting
 */
export const describe = (error: unknown): string => {
  if (error instanceof CliFailure) return error.message
  if (isEffectQemuError(error)) {
    if (error._tag === "LaunchFailure") {
      const how = error.signal !== undefined
        ? ` (killed by ${error.signal})`
        : error.exitCode !== undefined
        ? ` (exit code ${error.exitCode})`
        : ""
      const said = firstLine(error.output)
      return `QEMU launch failed: ${error.reason}${how}${said ? `: ${said}` : ""}`
    }
    return firstLine(error.message)
  }
  if (error instanceof Error) return firstLine(error.message)
  return firstLine(String(error))
}

/**
 * Turns any failure into a `CliFailure` with the fatal exit status.
 *
 * @since 0.2.0
 * @category constructors
 */
export const fatal = (error: unknown): CliFailure =>
  error instanceof CliFailure ? error : new CliFailure({ message: describe(error), exitCode: EXIT_FATAL })
