#!/usr/bin/env node
/**
 * `effect-qemu`: QEMU's qmp-shell rebuilt on effect-qemu, a machine runner,
 * a schema comparison and a guest agent shell.
 *
 * ```sh
 * effect-qemu shell /tmp/qmp.sock            # or QMP_SOCKET=/tmp/qmp.sock effect-qemu shell
 * effect-qemu run --console -- -machine q35 -accel tcg -kernel vmlinuz -S
 * effect-qemu schema --json
 * effect-qemu ga /tmp/qga.sock
 * ```
 *
 * Exit status: 0 success, 1 some command or input line failed, 2 the tool
 * could not do its job (usage, address, connection, launch), 130 interrupted.
 *
 * @since 0.2.0
 */
import * as Args from "@effect/cli/Args"
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as fs from "node:fs"
import * as Address from "./address.js"
import { CliFailure, describe, EXIT_FATAL, EXIT_INTERRUPTED, EXIT_OK, fatal } from "./errors.js"
import * as Argv from "./argv.js"

// What a subcommand needs is loaded when it runs: start-up pays only for the parser.
const Backends = Effect.promise(() => import("./backends.js"))
const Shell = Effect.promise(() => import("./shell.js"))
const Schema = Effect.promise(() => import("./schema.js"))
const Machine = Effect.promise(() => import("./machine.js"))

// src/cli/main.ts and dist/cli/main.js are both two levels below the package root.
const VERSION = (() => {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: unknown }
    return typeof pkg.version === "string" ? pkg.version : "unknown"
  } catch {
    return "unknown"
  }
})()

const hmp = Options.boolean("hmp").pipe(
  Options.withAlias("H"),
  Options.withDescription("HMP mode: each line is a human monitor command (human-monitor-command)")
)
const pretty = Options.boolean("pretty").pipe(Options.withAlias("p"), Options.withDescription("indent JSON output"))
const verbose = Options.boolean("verbose").pipe(
  Options.withAlias("v"),
  Options.withDescription("print each command as sent")
)
const noNegotiation = Options.boolean("no-negotiation").pipe(
  Options.withAlias("N"),
  Options.withDescription("do not negotiate capabilities: lines go out as typed, the greeting is printed")
)
const binary = Options.text("binary").pipe(
  Options.withDefault("qemu-system-x86_64"),
  Options.withDescription("the QEMU binary")
)
const log = Options.text("log").pipe(
  Options.withAlias("l"),
  Options.withDescription("append every command sent and message received to this file (JSON lines)"),
  Options.optional
)
const address = Args.text({ name: "ADDRESS" }).pipe(
  Args.withDescription("a unix socket path or host:port, or QEMU's unix:PATH / tcp:HOST:PORT (default: $QMP_SOCKET)"),
  Args.optional
)

// A missing address falls back to QMP_SOCKET; a bad one is a one-line error.
const resolveAddress = (given: Option.Option<string>, fallback = true) =>
  Effect.suspend(() => {
    const text = Option.getOrElse(given, () => fallback ? process.env.QMP_SOCKET ?? "" : "")
    return Either.match(Address.parse(text), {
      onLeft: (message) => Effect.fail(new CliFailure({ message, exitCode: EXIT_FATAL })),
      onRight: Effect.succeed
    })
  })

// Handlers report their status by failing with it: @effect/cli handlers return void.
const finish = (code: number) => code === EXIT_OK ? Effect.void : Effect.fail(new CliFailure({ message: "", exitCode: code }))

const shell = Command.make(
  "shell",
  { address, hmp, pretty, verbose, noNegotiation, log },
  (options) =>
    Effect.gen(function*() {
      const where = yield* resolveAddress(options.address)
      const [backends, shell] = yield* Effect.all([Backends, Shell])
      const backend = options.noNegotiation ? yield* backends.raw(where) : yield* backends.qmp(where)
      return yield* shell.run(backend, { ...options, log: Option.getOrUndefined(options.log), prompt: "(QEMU) " })
    }).pipe(Effect.scoped, Effect.flatMap(finish))
).pipe(Command.withDescription("QMP shell (qmp-shell's language) on a running QEMU"))

const run = Command.make(
  "run",
  {
    console: Options.text("console").pipe(
      Options.withDescription(
        "show the serial console: --console alone prints it above the prompt (terminal) or on stderr; --console=FILE appends it to FILE"
      ),
      Options.optional
    ),
    log,
    binary,
    tempDir: Options.directory("temp-dir").pipe(
      Options.withDescription("where the machine's temp dir is created (default /var/tmp)"),
      Options.optional
    ),
    hmp,
    pretty,
    verbose,
    qemuArgs: Args.text({ name: "QEMU_ARGS" }).pipe(Args.repeated)
  },
  (options) =>
    Effect.gen(function*() {
      const [machine, shell] = yield* Effect.all([Machine, Shell])
      const consoleTo = Option.getOrUndefined(options.console)
      return yield* machine.machine({
        binary: options.binary,
        args: options.qemuArgs,
        console: consoleTo !== undefined,
        baseTempDir: Option.getOrUndefined(options.tempDir)
      }, (backend) =>
        shell.run(backend, {
          ...options,
          log: Option.getOrUndefined(options.log),
          consoleFile: consoleTo === Argv.CONSOLE_DEFAULT ? undefined : consoleTo,
          prompt: "(QEMU) "
        }))
    }).pipe(Effect.scoped, Effect.flatMap(finish))
).pipe(Command.withDescription("launch QEMU (after --, its arguments) and open the shell on it; EOF or Ctrl-C shuts it down"))

const schema = Command.make(
  "schema",
  { address, json: Options.boolean("json").pipe(Options.withDescription("print the comparison as JSON")), binary },
  (options) =>
    Effect.gen(function*() {
      const given = Option.orElse(options.address, () => Option.fromNullable(process.env.QMP_SOCKET || undefined))
      const where = Option.isSome(given) ? Option.some(yield* resolveAddress(given)) : Option.none()
      const schema = yield* Schema
      if (Option.isSome(where)) yield* Address.check(where.value)
      const live = yield* Option.match(where, {
        onSome: (a) => schema.fetchLive(a),
        onNone: () => schema.fetchFromBinary(options.binary)
      })
      const generated = yield* schema.loadGeneratedFor(live.version)
      const diff = schema.compare(live, generated)
      process.stdout.write(options.json ? `${JSON.stringify(diff)}\n` : schema.render(diff))
      return schema.isSame(diff) ? EXIT_OK : 1
    }).pipe(Effect.scoped, Effect.flatMap(finish))
).pipe(Command.withDescription("compare what the live QEMU supports with the generated types (Qapi); exit 1 when they differ"))

const ga = Command.make(
  "ga",
  {
    address: Args.text({ name: "ADDRESS" }).pipe(Args.withDescription("the guest agent's socket (path or host:port)")),
    timeout: Options.integer("timeout").pipe(
      Options.withDefault(30),
      Options.withDescription("seconds to wait for the agent to answer its first sync")
    ),
    pretty,
    verbose,
    log
  },
  (options) =>
    Effect.gen(function*() {
      const where = yield* resolveAddress(Option.some(options.address), false)
      const [backends, shell] = yield* Effect.all([Backends, Shell])
      const backend = yield* backends.guestAgent(where, Duration.seconds(options.timeout))
      return yield* shell.run(backend, { ...options, log: Option.getOrUndefined(options.log), hmp: false, prompt: "(QEMU-GA) " })
    }).pipe(Effect.scoped, Effect.flatMap(finish))
).pipe(Command.withDescription("the same shell on a QEMU guest agent socket"))

const root = Command.make("effect-qemu").pipe(
  Command.withDescription("drive QEMU over QMP from the command line"),
  Command.withSubcommands([shell, run, schema, ga])
)

const cli = Command.run(root, { name: "effect-qemu", version: VERSION })

// Warnings of the library go to stderr: stdout carries JSON only.
const logger = Logger.replace(
  Logger.defaultLogger,
  Logger.make(({ logLevel, message }) => {
    const text = Array.isArray(message) ? message.map(String).join(" ") : String(message)
    process.stderr.write(`effect-qemu: ${logLevel.label.toLowerCase()}: ${text}\n`)
  })
)

// Help and usage errors without colour codes when they do not go to a terminal.
const ANSI = /\x1b\[[0-9;]*m/g
const plainWhenPiped = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Effect.console, (base) => {
    const strip = (tty: boolean | undefined, args: ReadonlyArray<unknown>) =>
      tty ? args : args.map((a) => typeof a === "string" ? a.replace(ANSI, "") : a)
    return Effect.withConsole(effect, {
      ...base,
      log: (...args: ReadonlyArray<unknown>) => base.log(...strip(process.stdout.isTTY, args)),
      error: (...args: ReadonlyArray<unknown>) => base.error(...strip(process.stderr.isTTY, args))
    })
  })

// A reader that went away (`| head`) ends the session quietly: the scope closes (a machine of
// `run` is shut down) and nothing more is printed.
const brokenPipe = Deferred.unsafeMake<number>(FiberId.none)
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    Deferred.unsafeDone(brokenPipe, Exit.succeed(error.code === "EPIPE" ? EXIT_OK : EXIT_FATAL))
  })
}

const program = Effect.suspend(() => {
  const argv = Argv.prepare(process.argv)
  if (Either.isLeft(argv)) {
    process.stderr.write(`effect-qemu: ${argv.left}\n`)
    return Effect.succeed(EXIT_FATAL)
  }
  return Effect.raceFirst(
    plainWhenPiped(cli(argv.right)).pipe(
      Effect.as(EXIT_OK),
      Effect.catchAll((error) => {
        if (ValidationError.isValidationError(error)) return Effect.succeed(EXIT_FATAL)
        const failure = fatal(error)
        if (failure.message) process.stderr.write(`effect-qemu: ${failure.message}\n`)
        return Effect.succeed(failure.exitCode)
      }),
      Effect.catchAllDefect((defect) => {
        process.stderr.write(`effect-qemu: internal error: ${describe(defect)}\n`)
        return Effect.succeed(EXIT_FATAL)
      })
    ),
    Deferred.await(brokenPipe)
  )
}).pipe(
  // What @effect/cli needs, and no more (NodeContext would also load the process and worker modules).
  Effect.provide(Layer.mergeAll(
    NodeFileSystem.layer,
    NodePath.layer,
    NodeTerminal.layer,
    CliConfig.layer({ isCaseSensitive: true, showBuiltIns: false }),
    logger,
    Logger.minimumLogLevel(LogLevel.Warning)
  ))
)

NodeRuntime.runMain(program, {
  disableErrorReporting: true,
  disablePrettyLogger: true,
  teardown: (exit) => {
    const code: number = Exit.isSuccess(exit) && typeof exit.value === "number"
      ? exit.value
      : Exit.isSuccess(exit)
      ? EXIT_OK
      : Cause.isInterruptedOnly(exit.cause)
      ? EXIT_INTERRUPTED
      : EXIT_FATAL
    if (Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)) {
      process.stderr.write(`effect-qemu: ${describe(Cause.squash(exit.cause))}\n`)
    }
    process.exit(code)
  }
})
