/**
 * The interactive shell shared by `shell`, `run` and `ga`, over any backend
 * that can send a command and report unsolicited messages.
 *
 * On a terminal: a banner with the peer's version, a `(QEMU) ` prompt with
 * history (`~/.effect-qemu_history`, or `EFFECT_QEMU_HISTORY`) and Tab
 * completion from the live schema (HMP's own command names with `-H`);
 * events and console text are printed above the prompt as they arrive;
 * Ctrl-C clears the line (or cancels a transaction), Ctrl-D ends it.
 * `help [command]` (or `?`) answers from the live schema, locally.
 *
 * Otherwise (a pipe or a file on stdin): one command per input line; stdout
 * carries only JSON, one line per message: each reply (`{"return": …}` or
 * `{"error": …}`, the `id` removed), each event as it arrives, and with `-v`
 * each command sent. Complaints go to stderr as one readable line naming the
 * input line (parse errors with their column, QMP errors with class and
 * description), and the shell goes on with the next line; the exit status is
 * 1 when any line failed. Help text and the console go to stderr.
 *
 * With `-l FILE` every command sent and every message received is appended
 * to FILE, one JSON line each.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import * as Catalog from "./catalog.js"
import { CliFailure, EXIT_COMMAND_FAILED, EXIT_FATAL, EXIT_OK } from "./errors.js"
import * as Parse from "./parse.js"

/**
 * What the shell talks to.
 *
 * @since 0.2.0
 * @category models
 */
export interface Backend {
  /** Sends a command and returns the raw reply, `{ return }` or `{ error }`. */
  readonly execute: (command: Parse.Command) => Effect.Effect<Record<string, unknown>, CliFailure>
  /** Messages nobody asked for (events), printed as they arrive. */
  readonly unsolicited: Stream.Stream<unknown, unknown>
  /** Completes, with the reason, when the connection has ended. */
  readonly closed: Effect.Effect<CliFailure>
  /** Names for completion (fetched once, before the first prompt). */
  readonly catalog: Effect.Effect<Catalog.Catalog>
  /** Commands the peer never answers: sent without waiting. */
  readonly noReply?: ReadonlySet<string>
  /** What the banner says we are connected to, e.g. `QEMU 7.2.0`. */
  readonly peer?: string
  /** The guest's serial console (`run --console`). */
  readonly console?: Stream.Stream<Uint8Array, unknown>
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** `-H`: every line is an HMP command, sent with `human-monitor-command`. */
  readonly hmp: boolean
  /** `-p`: indent JSON output. */
  readonly pretty: boolean
  /** `-v`: print each command as sent. */
  readonly verbose: boolean
  /** The prompt on a terminal. */
  readonly prompt: string
  /** Force terminal mode on or off (default: whether stdin is a TTY). */
  readonly interactive?: boolean | undefined
  /** `-l FILE`: append every message sent and received to FILE. */
  readonly log?: string | undefined
  /** Where console text goes: a file, else above the prompt (terminal) or stderr. */
  readonly consoleFile?: string | undefined
  readonly input?: NodeJS.ReadableStream & { readonly isTTY?: boolean }
  readonly output?: NodeJS.WritableStream
  readonly errors?: NodeJS.WritableStream
}

/**
 * The history file: `EFFECT_QEMU_HISTORY`, else `~/.effect-qemu_history`.
 *
 * @since 0.2.0
 * @category history
 */
export const historyFile = (): string =>
  process.env.EFFECT_QEMU_HISTORY || path.join(os.homedir(), ".effect-qemu_history")

const HISTORY_SIZE = 1000

/**
 * The saved history, most recent first (readline's order).
 *
 * @since 0.2.0
 * @category history
 */
export const loadHistory = (file: string): Array<string> => {
  try {
    return fs.readFileSync(file, "utf8").split("\n").filter((l) => l.trim() !== "").slice(-HISTORY_SIZE).reverse()
  } catch {
    return []
  }
}

const appendHistory = (file: string, line: string): void => {
  try {
    fs.appendFileSync(file, `${line.replace(/\n/g, " ")}\n`, { mode: 0o600 })
  } catch {
    // A read-only home must not break the shell.
  }
}

const withoutId = (reply: Record<string, unknown>): Record<string, unknown> => {
  if (!("id" in reply)) return reply
  const { id: _id, ...rest } = reply
  return rest
}

const errorOf = (reply: Record<string, unknown>): { readonly class: string; readonly desc: string } | undefined => {
  const error = reply.error
  if (typeof error !== "object" || error === null) return undefined
  const e = error as { class?: unknown; desc?: unknown }
  return { class: String(e.class ?? "Error"), desc: String(e.desc ?? "") }
}

type Input =
  | { readonly _tag: "Line"; readonly line: string }
  | { readonly _tag: "End" }
  | { readonly _tag: "Cancel" }
  | { readonly _tag: "Closed"; readonly cause: CliFailure }

// The two faces of the shell's input and output: a terminal (readline with prompt, history and
// completion; text printed above the prompt) or plain streams (one line in, JSON lines out).
interface Io {
  readonly interactive: boolean
  readonly lines: Queue.Queue<Input>
  readonly print: (text: string) => void
  /** Text for the user, not data: above the prompt on a terminal, else stderr. */
  readonly note: (text: string) => void
  readonly complain: (text: string) => void
  readonly prompt: (text: string) => void
  readonly end: () => void
}

const openIo = (
  options: Options,
  completer: (line: string) => [Array<string>, string],
  interactive: boolean
): Effect.Effect<Io, never, Scope.Scope> =>
  Effect.gen(function*() {
    const input = options.input ?? process.stdin
    const out = options.output ?? process.stdout
    const err = options.errors ?? process.stderr
    const history = interactive ? historyFile() : undefined
    const lines = yield* Queue.unbounded<Input>()
    let prompting = false
    const rl = yield* Effect.acquireRelease(
      Effect.sync(() =>
        interactive
          ? readline.createInterface({
            input,
            output: out,
            terminal: true,
            prompt: options.prompt,
            history: history ? loadHistory(history) : [],
            historySize: HISTORY_SIZE,
            removeHistoryDuplicates: true,
            completer
          })
          : readline.createInterface({ input, terminal: false, crlfDelay: Infinity })
      ),
      (rl) => Effect.sync(() => rl.close())
    )
    rl.on("line", (line) => {
      prompting = false
      if (history && line.trim() !== "") appendHistory(history, line)
      lines.unsafeOffer({ _tag: "Line", line })
    })
    rl.on("close", () => lines.unsafeOffer({ _tag: "End" }))
    // Ctrl-C clears the line, as in bash; the shell decides whether a transaction is cancelled.
    if (interactive) {
      rl.on("SIGINT", () => {
        rl.write(null, { ctrl: true, name: "e" })
        rl.write(null, { ctrl: true, name: "u" })
        lines.unsafeOffer({ _tag: "Cancel" })
      })
    }

    const print = (text: string) => {
      if (interactive && prompting) {
        readline.clearLine(out, 0)
        readline.cursorTo(out, 0)
        out.write(`${text}\n`)
        rl.prompt(true)
      } else {
        out.write(`${text}\n`)
      }
    }
    return {
      interactive,
      lines,
      print,
      note: (text) => interactive ? print(text) : void err.write(`${text}\n`),
      complain: (text) => interactive ? print(`error: ${text}`) : void err.write(`effect-qemu: ${text}\n`),
      prompt: (text) => {
        if (!interactive) return
        rl.setPrompt(text)
        prompting = true
        rl.prompt()
      },
      end: () => {
        if (interactive) out.write("\n")
      }
    }
  })

/** `file` opened for appending (private), closed with the scope; one that cannot be opened is fatal. */
const openAppend = (file: string, what: string): Effect.Effect<number, CliFailure, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({
      try: () => fs.openSync(file, "a", 0o600),
      catch: (e) =>
        new CliFailure({
          message: `cannot open the ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`,
          exitCode: EXIT_FATAL
        })
    }),
    (fd) => Effect.sync(() => fs.closeSync(fd))
  )

// `-l FILE`: one JSON line per message, appended.
const openLog = (file: string | undefined): Effect.Effect<(value: unknown) => void, CliFailure, Scope.Scope> =>
  file === undefined
    ? Effect.succeed(() => {})
    : Effect.map(openAppend(file, "log file"), (fd) => (value: unknown) => {
      try {
        fs.writeSync(fd, `${JSON.stringify(value)}\n`)
      } catch {
        // A full disk must not end the session.
      }
    })

// `help`, `help NAME`, `?`, `? NAME` (QMP mode only: HMP has its own `help`).
const HELP = /^\s*(?:help|\?)(?:\s+(\S+))?\s*$/

// HMP's names for completion, from its own `help` and `help info`.
const hmpCatalog = (backend: Backend): Effect.Effect<Catalog.Catalog> => {
  const ask = (commandLine: string) =>
    backend.execute({ execute: "human-monitor-command", arguments: { "command-line": commandLine } }).pipe(
      Effect.map((reply) => typeof reply.return === "string" ? reply.return : ""),
      Effect.orElseSucceed(() => "")
    )
  return Effect.map(Effect.all([ask("help"), ask("help info")]), ([help, info]) => Catalog.fromHmpHelp(help, info))
}

// Console bytes as lines printed above the prompt; a partial line waits a moment for its end.
const consoleLines = (emit: (line: string) => void) => {
  let pending = ""
  let timer: ReturnType<typeof setTimeout> | undefined
  const flush = () => {
    timer = undefined
    if (pending !== "") emit(pending)
    pending = ""
  }
  return (bytes: Uint8Array) => {
    pending += Buffer.from(bytes).toString("utf8")
    const parts = pending.split(/\r?\n/)
    pending = parts.pop()!
    for (const line of parts) emit(line.replace(/\r/g, ""))
    if (timer) clearTimeout(timer)
    if (pending !== "") timer = setTimeout(flush, 100)
  }
}

// The banner on a terminal: which shell, what it is connected to, how to get help and leave.
const banner = (io: Io, backend: Backend, options: Options): void => {
  const mode = options.hmp ? "HMP" : options.prompt.includes("GA") ? "guest agent" : "QMP"
  io.print(`Welcome to the ${mode} shell of effect-qemu${backend.peer ? `, connected to ${backend.peer}` : ""}.`)
  io.print(`'help' lists the commands${options.hmp ? "" : ", 'help COMMAND' shows its arguments"}; Ctrl-D leaves.`)
}

// Events (what nobody asked for), logged and printed as they arrive; the fiber is the caller's to end.
const printUnsolicited = (
  backend: Backend,
  io: Io,
  log: (value: unknown) => void,
  json: (value: unknown) => string
): Effect.Effect<Fiber.RuntimeFiber<void>, never, Scope.Scope> =>
  backend.unsolicited.pipe(
    Stream.runForEach((message) =>
      Effect.sync(() => {
        log(message)
        io.print(json(message))
      })
    ),
    Effect.ignore,
    Effect.forkScoped
  )

// Where console bytes go: `--console=FILE` (appended), above the prompt on a terminal, else stderr.
const consoleSink = (options: Options, io: Io): Effect.Effect<(bytes: Uint8Array) => void, CliFailure, Scope.Scope> => {
  const toFile = options.consoleFile
  if (toFile === undefined) {
    return Effect.succeed(
      io.interactive
        ? consoleLines((line) => io.print(line))
        : (bytes: Uint8Array) => void (options.errors ?? process.stderr).write(bytes)
    )
  }
  return Effect.map(openAppend(toFile, "console file"), (fd) => (bytes: Uint8Array) => void fs.writeSync(fd, bytes))
}

const printConsole = (
  console: Stream.Stream<Uint8Array, unknown>,
  options: Options,
  io: Io
): Effect.Effect<void, CliFailure, Scope.Scope> =>
  Effect.flatMap(consoleSink(options, io), (write) =>
    console.pipe(
      Stream.runForEach((bytes) => Effect.sync(() => write(bytes))),
      Effect.ignore,
      Effect.forkScoped,
      Effect.asVoid
    ))

// One run of the shell: what it talks through, and what the exit status and complaints come from.
interface Session {
  readonly backend: Backend
  readonly options: Options
  readonly io: Io
  readonly log: (value: unknown) => void
  readonly json: (value: unknown) => string
  /** The schema for `help`. */
  readonly helpCatalog: Effect.Effect<Catalog.Catalog>
  parse: Parse.State
  failures: number
  lineNo: number
  quitSent: boolean
}

// Where a complaint points: the column on a terminal, the input line (and column) otherwise.
const where = (session: Session, column?: number): string =>
  session.io.interactive
    ? column === undefined ? "" : `column ${column}: `
    : `line ${session.lineNo}${column === undefined ? "" : `, column ${column}`}: `

// Sends one command and prints its reply; after `quit`, a lost connection is the expected end.
const send = (session: Session, command: Parse.Command): Effect.Effect<void, CliFailure> =>
  Effect.gen(function*() {
    const { backend, io, json, log, options } = session
    if (options.verbose) io.print(json(command))
    log(command)
    if (command.execute === "quit") session.quitSent = true
    if (backend.noReply?.has(command.execute)) {
      yield* backend.execute(command).pipe(Effect.ignore, Effect.fork)
      return
    }
    const reply = yield* backend.execute(command).pipe(
      Effect.catchAll((e) => session.quitSent ? Effect.succeed(undefined) : Effect.fail(e))
    )
    if (reply === undefined) return
    // QEMU sends a command's events before its reply: let the printer show them first.
    yield* Effect.yieldNow()
    const error = errorOf(reply)
    if (error) session.failures++
    log(withoutId(reply))
    const hmpText = options.hmp && io.interactive && typeof reply.return === "string" ? reply.return : undefined
    if (hmpText !== undefined) {
      if (hmpText.trim() !== "") io.print(hmpText.replace(/\r?\n$/, ""))
    } else {
      io.print(json(withoutId(reply)))
    }
    if (error && !io.interactive) io.complain(`${where(session)}${command.execute}: ${error.class}: ${error.desc}`)
  })

// `help [NAME]`, answered locally from the schema.
const help = (session: Session, name: string | undefined): Effect.Effect<void> =>
  Effect.map(session.helpCatalog, (known) => {
    const { io, options } = session
    const columns = (options.output ?? process.stdout) as { readonly columns?: number }
    const text = known.help(name, io.interactive && columns.columns ? columns.columns - 2 : undefined)
    if (text === undefined) {
      session.failures++
      io.complain(`${where(session)}help: no command or event '${name}'`)
    } else if (text === "") {
      io.note("help: the command list is not available")
    } else {
      io.note(text)
    }
  })

// Reads and runs lines until end of input, `quit`, or the connection's end (a failure unless after `quit`).
const readLines = (session: Session): Effect.Effect<void, CliFailure> =>
  Effect.gen(function*() {
    const { backend, io, options } = session
    while (true) {
      const prompt = session.parse.transaction ? "... " : options.prompt
      io.prompt(prompt)
      const next = yield* Queue.take(io.lines)
      if (next._tag === "Closed") {
        if (session.quitSent || next.cause.exitCode === EXIT_OK) return
        return yield* Effect.fail(next.cause)
      }
      if (next._tag === "Cancel") {
        if (session.parse.transaction) {
          session.parse = Parse.initial
          io.print("transaction cancelled")
        }
        continue
      }
      if (next._tag === "End") {
        const end = Parse.finish(session.parse)
        if (end._tag === "Error") {
          session.failures++
          io.complain(`${where(session)}${end.message}`)
        }
        io.end()
        return
      }
      session.lineNo++
      const asksHelp = !options.hmp && !session.parse.transaction ? HELP.exec(next.line) : null
      if (asksHelp) {
        yield* help(session, asksHelp[1])
        continue
      }
      const [step, parsed] = options.hmp ? [Parse.hmp(next.line), session.parse] : Parse.step(session.parse, next.line)
      session.parse = parsed
      if (step._tag === "Error") {
        session.failures++
        if (io.interactive) io.print(`${" ".repeat(prompt.length + step.column - 1)}^`)
        io.complain(`${where(session, step.column)}${step.message}`)
      } else if (step._tag === "Command") {
        yield* send(session, step.command)
      }
      if (session.quitSent) {
        // QEMU closes the connection after `quit`: wait for that rather than reading on.
        yield* Effect.raceFirst(backend.closed, Effect.sleep("5 seconds"))
        return
      }
    }
  })

/**
 * Runs the shell until end of input (Ctrl-D on a terminal, or `quit`);
 * returns the exit status. A lost connection fails with `CliFailure`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const run = (backend: Backend, options: Options): Effect.Effect<number, CliFailure, Scope.Scope> =>
  Effect.gen(function*() {
    const interactive = options.interactive ?? (options.input ?? process.stdin).isTTY === true
    const log = yield* openLog(options.log)
    const catalog = interactive
      ? yield* (options.hmp ? hmpCatalog(backend) : backend.catalog)
      : Catalog.empty
    const completer = options.hmp
      ? (line: string) => Catalog.completeHmp(catalog, line)
      : (line: string) => Catalog.complete(catalog, line)
    const io = yield* openIo(options, completer, interactive)
    const json = (value: unknown) => options.pretty ? JSON.stringify(value, null, 2) : JSON.stringify(value)
    // The schema for `help` when stdin is not a terminal: fetched on the first `help`.
    const helpCatalog = interactive ? Effect.succeed(catalog) : yield* Effect.cached(backend.catalog)

    if (interactive) banner(io, backend, options)
    const printer = yield* printUnsolicited(backend, io, log, json)
    if (backend.console) yield* printConsole(backend.console, options, io)
    yield* Effect.forkScoped(Effect.flatMap(backend.closed, (cause) => io.lines.offer({ _tag: "Closed", cause })))

    const session: Session = {
      backend,
      options,
      io,
      log,
      json,
      helpCatalog,
      parse: Parse.initial,
      failures: 0,
      lineNo: 0,
      quitSent: false
    }
    yield* readLines(session)
    // Events that arrived with the last reply are still on their way to the printer.
    yield* Effect.sleep("20 millis")
    yield* Fiber.interrupt(printer)
    return session.failures > 0 ? EXIT_COMMAND_FAILED : EXIT_OK
  })
