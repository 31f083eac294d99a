/**
 * The interactive shell shared by `shell`, `run` and `ga`, over any backend
 * that can send a command and report unsolicited messages.
 *
 * On a terminal: a `(QEMU) ` prompt with history (`~/.effect-qemu_history`,
 * or `EFFECT_QEMU_HISTORY`) and Tab completion from the live schema; events
 * are printed above the prompt as they arrive; Ctrl-C or Ctrl-D ends it.
 *
 * Otherwise (a pipe or a file on stdin): one command per input line; stdout
 * carries only JSON, one line per message: each reply (`{"return": …}` or
 * `{"error": …}`, the `id` removed), each event as it arrives, and with `-v`
 * each command sent. Complaints go to stderr as one readable line naming the
 * input line (parse errors with their column, QMP errors with class and
 * description), and the shell goes on with the next line; the exit status is
 * 1 when any line failed.
 *
 * @since 0.2.0
 */
import { Effect, Fiber, Queue, Scope, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import * as Catalog from "./catalog.js"
import { CliFailure, EXIT_COMMAND_FAILED, EXIT_OK } from "./errors.js"
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

type Input = { readonly _tag: "Line"; readonly line: string } | { readonly _tag: "End" } | {
  readonly _tag: "Closed"
  readonly cause: CliFailure
}

// The two faces of the shell's input and output: a terminal (readline with prompt, history and
// completion; text printed above the prompt) or plain streams (one line in, JSON lines out).
interface Io {
  readonly interactive: boolean
  readonly lines: Queue.Queue<Input>
  readonly print: (text: string) => void
  readonly complain: (text: string) => void
  readonly prompt: (text: string) => void
  readonly end: () => void
}

const openIo = (options: Options, catalog: Catalog.Catalog, interactive: boolean): Effect.Effect<Io, never, Scope.Scope> =>
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
            completer: (line: string) => Catalog.complete(catalog, line)
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
    if (interactive) rl.on("SIGINT", () => rl.close())

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

/**
 * Runs the shell until end of input (or Ctrl-C on a terminal, or `quit`);
 * returns the exit status. A lost connection fails with `CliFailure`.
 *
 * @since 0.2.0
 * @category constructors
 */
export const run = (backend: Backend, options: Options): Effect.Effect<number, CliFailure, Scope.Scope> =>
  Effect.gen(function*() {
    const interactive = options.interactive ?? (options.input ?? process.stdin).isTTY === true
    const catalog = interactive && !options.hmp ? yield* backend.catalog : Catalog.empty
    const io = yield* openIo(options, catalog, interactive)
    const json = (value: unknown) => options.pretty ? JSON.stringify(value, null, 2) : JSON.stringify(value)

    const printer = yield* backend.unsolicited.pipe(
      Stream.runForEach((message) => Effect.sync(() => io.print(json(message)))),
      Effect.ignore,
      Effect.forkScoped
    )
    yield* Effect.forkScoped(Effect.flatMap(backend.closed, (cause) => io.lines.offer({ _tag: "Closed", cause })))

    let state = Parse.initial
    let failures = 0
    let lineNo = 0
    let quitSent = false
    const where = (column?: number) =>
      interactive
        ? column === undefined ? "" : `column ${column}: `
        : `line ${lineNo}${column === undefined ? "" : `, column ${column}`}: `

    const send = (command: Parse.Command) =>
      Effect.gen(function*() {
        if (options.verbose) io.print(json(command))
        if (command.execute === "quit") quitSent = true
        if (backend.noReply?.has(command.execute)) {
          yield* backend.execute(command).pipe(Effect.ignore, Effect.fork)
          return
        }
        const reply = yield* backend.execute(command).pipe(
          Effect.catchAll((e) => quitSent ? Effect.succeed(undefined) : Effect.fail(e))
        )
        if (reply === undefined) return
        // QEMU sends a command's events before its reply: let the printer show them first.
        yield* Effect.yieldNow()
        const error = errorOf(reply)
        if (error) failures++
        const hmpText = options.hmp && interactive && typeof reply.return === "string" ? reply.return : undefined
        if (hmpText !== undefined) {
          if (hmpText.trim() !== "") io.print(hmpText.replace(/\r?\n$/, ""))
        } else {
          io.print(json(withoutId(reply)))
        }
        if (error && !interactive) io.complain(`${where()}${command.execute}: ${error.class}: ${error.desc}`)
      })

    while (true) {
      const prompt = state.transaction ? "... " : options.prompt
      io.prompt(prompt)
      const next = yield* Queue.take(io.lines)
      if (next._tag === "Closed") {
        if (quitSent || next.cause.exitCode === EXIT_OK) break
        return yield* Effect.fail(next.cause)
      }
      if (next._tag === "End") {
        const end = Parse.finish(state)
        if (end._tag === "Error") {
          failures++
          io.complain(`${where()}${end.message}`)
        }
        io.end()
        break
      }
      lineNo++
      const [step, nextState] = options.hmp ? [Parse.hmp(next.line), state] : Parse.step(state, next.line)
      state = nextState
      if (step._tag === "Error") {
        failures++
        if (interactive) io.print(`${" ".repeat(prompt.length + step.column - 1)}^`)
        io.complain(`${where(step.column)}${step.message}`)
      } else if (step._tag === "Command") {
        yield* send(step.command)
      }
      if (quitSent) {
        // QEMU closes the connection after `quit`: wait for that rather than reading on.
        yield* Effect.raceFirst(backend.closed, Effect.sleep("5 seconds"))
        break
      }
    }
    // Events that arrived with the last reply are still on their way to the printer.
    yield* Effect.sleep("20 millis")
    yield* Fiber.interrupt(printer)
    return failures > 0 ? EXIT_COMMAND_FAILED : EXIT_OK
  })

