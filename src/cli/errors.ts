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
import * as Data from "effect/Data"

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
 * Bytes from the peer, printable: control characters and other
 * non-printable characters as `\xNN` (`\uNNNN` above 0xFF), a backslash doubled.
 *
 * @since 0.3.0
 * @category formatting
 */
export const escape = (text: string): string =>
  text.replace(/[\\\x00-\x1f\x7f-\x9f\u2028\u2029\ufffd]/g, (c) => {
    if (c === "\\") return "\\\\"
    const code = c.charCodeAt(0)
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`
  })

// The library's errors, read by tag: the CLI does not load the library to describe them.
interface Tagged {
  readonly _tag: string
  readonly message: string
  readonly reason?: string
  readonly detail?: string
  readonly cause?: unknown
  readonly signal?: string
  readonly exitCode?: number
  readonly output?: string
  readonly command?: ReadonlyArray<string>
  readonly raw?: string
  readonly channel?: string
}

const isTagged = (u: unknown): u is Tagged =>
  typeof u === "object" && u !== null && typeof (u as { _tag?: unknown })._tag === "string" &&
  typeof (u as { message?: unknown }).message === "string"

const causeText = (cause: unknown): string => {
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code
    const text = firstLine(cause.message)
    return code && !text.includes(code) ? `${text} (${code})` : text
  }
  return cause === undefined ? "" : firstLine(String(cause))
}

const ERRNO_WORDS: Record<string, string> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  EPIPE: "connection closed",
  ENOTSOCK: "not a socket",
  ETIMEDOUT: "timed out"
}

// `connect ECONNREFUSED /path` → `connection refused (ECONNREFUSED)`
const plainErrno = (text: string): string =>
  text.replace(/\b(?:connect|read|write|spawn \S+) (E[A-Z]+)(?: \S+)?/, (all, code: string) =>
    ERRNO_WORDS[code] ? `${ERRNO_WORDS[code]} (${code})` : all)

const describeLibrary = (error: Tagged): string => {
  switch (error._tag) {
    case "LaunchFailure": {
      if (error.reason === "SpawnFailed") {
        const binary = error.command?.[0] ?? "QEMU"
        const code = (error.cause as NodeJS.ErrnoException | undefined)?.code
        const why = code ? ERRNO_WORDS[code] ?? code : firstLine(error.detail ?? causeText(error.cause))
        return `cannot start QEMU: ${binary}${why ? `: ${why}` : ""}`
      }
      const how = error.signal !== undefined
        ? ` (killed by ${error.signal})`
        : error.exitCode !== undefined
        ? ` (exit code ${error.exitCode})`
        : ""
      const said = firstLine(error.output ?? "")
      return `QEMU launch failed: ${error.reason}${how}${said ? `: ${escape(said)}` : ""}`
    }
    case "QmpConnectionError": {
      const detail = plainErrno(firstLine(error.detail ?? causeText(error.cause)))
      const peer = error.channel === "agent" ? "the guest agent" : error.channel === "console" ? "the console" : "QEMU"
      switch (error.reason) {
        case "Eof":
          return `QEMU closed ${peer === "QEMU" ? "the connection" : `${peer}'s socket`}${detail ? `: ${detail}` : ""}`
        case "SocketError":
          return `the connection to ${peer} failed${detail ? `: ${detail}` : ""}`
        case "Closed":
          return `the connection to ${peer} was closed${detail ? `: ${detail}` : ""}`
        case "ProtocolError":
          if (peer !== "QEMU") return `${peer}: ${escape(detail || firstLine(error.message))}`
          return `QEMU's greeting was not understood${detail ? `: ${escape(detail)}` : ""}`
        default:
          return detail || firstLine(error.message)
      }
    }
    case "QmpProtocolError":
      return `the peer does not speak QMP: ${escape(firstLine(error.message))}${
        error.raw ? ` (sent: ${escape(error.raw.slice(0, 200))})` : ""
      }`
    default:
      return escape(firstLine(error.message))
  }
}

/**
 * One line that says what went wrong, for any failure the tool can meet.
 *
 * @since 0.2.0
 * @category formatting
 */
export const describe = (error: unknown): string => {
  if (error instanceof CliFailure) return error.message
  if (isTagged(error) && error._tag !== "UnknownException") return describeLibrary(error)
  if (error instanceof Error) return escape(firstLine(error.message))
  return escape(firstLine(String(error)))
}

/**
 * Turns any failure into a `CliFailure` with the fatal exit status.
 *
 * @since 0.2.0
 * @category constructors
 */
export const fatal = (error: unknown): CliFailure =>
  error instanceof CliFailure ? error : new CliFailure({ message: describe(error), exitCode: EXIT_FATAL })
