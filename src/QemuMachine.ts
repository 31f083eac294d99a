/**
 * A QEMU virtual machine as a scoped resource: QEMU's Python `QEMUMachine`,
 * rebuilt on Effect.
 *
 * Build an immutable {@link Config} with {@link make} and the pipeable
 * combinators, then {@link launch} it inside a scope. Closing the scope always
 * shuts QEMU down (soft `quit`, then SIGKILL) and removes every file the
 * machine created, even when the scope is interrupted in the middle of launch.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { QemuMachine } from "effect-qemu"
 *
 * const config = QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.setMachine("none"))
 *
 * const program = Effect.gen(function*() {
 *   const vm = yield* QemuMachine.launch(config)
 *   console.log(yield* vm.command("query-status"))
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import { FileSystem } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import {
  Cause,
  Context,
  Deferred,
  Duration,
  Effect,
  ExecutionStrategy,
  Exit,
  FiberId,
  Layer,
  Option,
  Pipeable,
  Scope,
  Stream
} from "effect"
import { dual } from "effect/Function"
import * as fs from "node:fs"
import * as nodePath from "node:path"
import * as ConsoleSocket from "./ConsoleSocket.js"
import {
  AbnormalShutdown,
  describeCause,
  LaunchFailure,
  MachineError,
  QmpConnectionError,
  QmpTimeoutError
} from "./Errors.js"
import type { LaunchFailureReason, QmpCommandError, QmpError, ShutdownStep } from "./Errors.js"
import * as EventMatch from "./EventMatch.js"
import * as Net from "./internal/net.js"
import * as Proc from "./internal/process.js"
import * as Redact from "./internal/redact.js"
import * as QmpClient from "./QmpClient.js"
import type * as QmpMessage from "./QmpMessage.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = Symbol.for("effect-qemu/QemuMachine")

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * Where the QMP monitor socket lives: a unix path, or a TCP address (the host
 * defaults to 127.0.0.1; port 0 picks a free port).
 *
 * @since 0.1.0
 * @category models
 */
export type MonitorAddress = string | { readonly host?: string | undefined; readonly port: number }

/**
 * A file descriptor passed to QEMU at launch (`-add-fd`).
 *
 * @since 0.1.0
 * @category models
 */
export interface PassedFd {
  readonly fd: number
  readonly fdset: number
  readonly opaque: string
  readonly opts?: string | undefined
}

/**
 * The constructor options of QEMU's `QEMUMachine`, camelCased.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Path (or name on PATH) of the QEMU binary. */
  readonly binary: string
  /** Arguments after the ones the machine adds itself. */
  readonly args?: ReadonlyArray<string> | undefined
  /** A command that runs QEMU (e.g. `["taskset", "-c", "0"]`). */
  readonly wrapper?: ReadonlyArray<string> | undefined
  /** Default `qemu-<pid>-<random>`. */
  readonly name?: string | undefined
  /** Where the machine's temp dir is created. Default `/var/tmp`. */
  readonly baseTempDir?: string | undefined
  /** Default `<sockDir>/<name>-monitor.sock`. */
  readonly monitorAddress?: MonitorAddress | undefined
  /** Directory of the socket files. Default: the machine's temp dir. */
  readonly sockDir?: string | undefined
  /** Connect the console at launch and keep reading it. */
  readonly drainConsole?: boolean | undefined
  /** Write the console's output to this file (implies `drainConsole`). */
  readonly consoleLog?: string | undefined
  /** Directory of QEMU's output log. Default: the machine's temp dir. */
  readonly logDir?: string | undefined
  /** Deadline for QEMU to connect and negotiate QMP. Default 30 seconds. */
  readonly qmpTimeout?: Duration.DurationInput | undefined
}

/**
 * An immutable machine configuration. Build with {@link make} and the
 * combinators; nothing happens until {@link launch}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Config extends Pipeable.Pipeable {
  readonly [TypeId]: TypeId
  readonly binary: string
  readonly args: ReadonlyArray<string>
  readonly wrapper: ReadonlyArray<string>
  readonly name: string | undefined
  readonly baseTempDir: string
  readonly monitorAddress: MonitorAddress | undefined
  readonly sockDir: string | undefined
  readonly drainConsole: boolean
  readonly consoleLog: string | undefined
  readonly logDir: string | undefined
  readonly qmpTimeout: Duration.Duration
  readonly machine: string | undefined
  readonly console: { readonly deviceType: string | undefined; readonly index: number } | undefined
  readonly qmp: boolean
  readonly fds: ReadonlyArray<PassedFd>
}

const ConfigProto = {
  [TypeId]: TypeId,
  pipe() {
    // eslint-disable-next-line prefer-rest-params
    return Pipeable.pipeArguments(this, arguments)
  }
}

const makeConfig = (fields: Omit<Config, TypeId | "pipe">): Config => Object.assign(Object.create(ConfigProto), fields)

const update = (self: Config, patch: Partial<Omit<Config, TypeId | "pipe">>): Config => makeConfig({ ...self, ...patch })

/**
 * Creates a configuration from the seed's constructor options.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Config =>
  makeConfig({
    binary: options.binary,
    args: [...(options.args ?? [])],
    wrapper: [...(options.wrapper ?? [])],
    name: options.name,
    baseTempDir: options.baseTempDir ?? "/var/tmp",
    monitorAddress: options.monitorAddress,
    sockDir: options.sockDir,
    drainConsole: options.drainConsole ?? options.consoleLog !== undefined,
    consoleLog: options.consoleLog,
    logDir: options.logDir,
    qmpTimeout: Duration.decode(options.qmpTimeout ?? Duration.seconds(30)),
    machine: undefined,
    console: undefined,
    qmp: true,
    fds: []
  })

/**
 * Appends arguments to the command line (seed: `add_args`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const addArgs = (...args: ReadonlyArray<string>) => (self: Config): Config =>
  update(self, { args: [...self.args, ...args] })

/**
 * Sets `-machine TYPE` (seed: `set_machine`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const setMachine: {
  (machineType: string): (self: Config) => Config
  (self: Config, machineType: string): Config
} = dual(2, (self: Config, machineType: string): Config => update(self, { machine: machineType }))

/**
 * Adds a console on a socket chardev (seed: `set_console`): as the
 * `index`-th serial port (earlier ones get `-serial null`), or as a device of
 * `deviceType` (e.g. `isa-serial`, `virtconsole`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const setConsole = (options: { readonly deviceType?: string | undefined; readonly index?: number | undefined } = {}) =>
(self: Config): Config => update(self, { console: { deviceType: options.deviceType, index: options.index ?? 0 } })

/**
 * Enables or disables the QMP monitor (seed: `set_qmp_monitor`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const setQmpMonitor: {
  (enabled: boolean): (self: Config) => Config
  (self: Config, enabled: boolean): Config
} = dual(2, (self: Config, enabled: boolean): Config => update(self, { qmp: enabled }))

/**
 * Adds `-monitor null`, an unused HMP monitor (seed: `add_monitor_null`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const addMonitorNull = (self: Config): Config => update(self, { args: [...self.args, "-monitor", "null"] })

/**
 * Passes one of our file descriptors to QEMU, inherited at the same number,
 * as `-add-fd fd=N,set=N,opaque=S[,opts]` (seed: `add_fd`).
 *
 * @since 0.1.0
 * @category combinators
 */
export const addFd = (passed: PassedFd) => (self: Config): Config => {
  const options = [`fd=${passed.fd}`, `set=${passed.fdset}`, `opaque=${passed.opaque}`]
  if (passed.opts) options.push(passed.opts)
  return update(self, { args: [...self.args, "-add-fd", options.join(",")], fds: [...self.fds, passed] })
}

/**
 * Paths and addresses a launch resolves before starting QEMU.
 *
 * @since 0.1.0
 * @category models
 */
export interface Resolved {
  readonly name: string
  readonly tempDir: string
  readonly sockDir: string
  readonly logDir: string
  readonly monitorAddress: string | { readonly host: string; readonly port: number } | undefined
  readonly consolePath: string | undefined
}

/**
 * The arguments the machine puts before the user's (seed: `_base_args`).
 *
 * @since 0.1.0
 * @category accessors
 */
export const baseArgs = (config: Config, resolved: Pick<Resolved, "monitorAddress" | "consolePath">): Array<string> => {
  const args = ["-display", "none", "-vga", "none"]
  if (config.qmp && resolved.monitorAddress !== undefined) {
    const address = resolved.monitorAddress
    const chardev = typeof address === "string"
      ? `socket,id=mon,path=${address}`
      : `socket,id=mon,host=${address.host},port=${address.port}`
    args.push("-chardev", chardev, "-mon", "chardev=mon,mode=control")
  }
  if (config.machine !== undefined) args.push("-machine", config.machine)
  if (config.console) {
    for (let i = 0; i < config.console.index; i++) args.push("-serial", "null")
    args.push("-chardev", `socket,id=console,path=${resolved.consolePath},server=on,wait=off`)
    if (config.console.deviceType === undefined) args.push("-serial", "chardev:console")
    else args.push("-device", `${config.console.deviceType},chardev=console`)
  }
  return args
}

/**
 * The full command line: wrapper, binary, base arguments, user arguments.
 *
 * @since 0.1.0
 * @category accessors
 */
export const commandLine = (config: Config, resolved: Pick<Resolved, "monitorAddress" | "consolePath">): Array<string> => [
  ...config.wrapper,
  config.binary,
  ...baseArgs(config, resolved),
  ...config.args
]

/**
 * Options of {@link Machine.shutdown}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ShutdownOptions {
  /** Skip the graceful step: SIGKILL at once. */
  readonly hard?: boolean | undefined
  /** Deadline for the graceful step. Default 30 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface EventWaitOptions {
  /** A pattern for `EventMatch.eventMatch`, applied to the whole event. */
  readonly match?: EventMatch.Match
  /** Default 60 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * A launched machine.
 *
 * @since 0.1.0
 * @category models
 */
export interface Machine {
  readonly [TypeId]: TypeId
  readonly name: string
  /** The full command line, wrapper included. */
  readonly args: ReadonlyArray<string>
  readonly tempDir: string
  readonly sockDir: string
  readonly logDir: string
  /** The QMP client, when QMP is enabled. */
  readonly qmpClient: Option.Option<QmpClient.QmpClient.Service>
  /** QEMU's pid while it runs. */
  readonly pid: Effect.Effect<Option.Option<number>>
  readonly isRunning: Effect.Effect<boolean>
  /** The exit code once exited; a negative signal number for a signal death. */
  readonly exitCode: Effect.Effect<Option.Option<number>>
  /** Runs a command and returns the raw response. `quit` counts as issued. */
  readonly qmp: (
    command: string,
    args?: QmpClient.Arguments
  ) => Effect.Effect<QmpMessage.Response, QmpError | MachineError>
  /** Runs a command and returns its `return` value. */
  readonly command: (
    command: string,
    args?: QmpClient.Arguments
  ) => Effect.Effect<unknown, QmpCommandError | QmpError | MachineError>
  /** Every event received from the moment the stream runs. */
  readonly events: Stream.Stream<QmpMessage.Event, MachineError>
  readonly getQmpEvent: (
    options?: QmpClient.WaitOptions
  ) => Effect.Effect<Option.Option<QmpMessage.Event>, QmpError | MachineError>
  readonly getQmpEvents: (
    options?: QmpClient.WaitOptions
  ) => Effect.Effect<ReadonlyArray<QmpMessage.Event>, QmpError | MachineError>
  /** Waits for an event named `name` (matching `match`); others seen meanwhile are kept. */
  readonly eventWait: (
    name: string,
    options?: EventWaitOptions
  ) => Effect.Effect<QmpMessage.Event, QmpError | MachineError>
  /** Waits for the first event matching any `[name, match]` pair. */
  readonly eventsWait: (
    events: ReadonlyArray<readonly [string, EventMatch.Match?]>,
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<QmpMessage.Event, QmpError | MachineError>
  /** Stops QEMU (soft, then hard) and cleans up. Idempotent. */
  readonly shutdown: (options?: ShutdownOptions) => Effect.Effect<void, AbnormalShutdown>
  /** SIGKILL, wait, clean up. */
  readonly kill: Effect.Effect<void>
  /** Expects QEMU to exit by itself (e.g. guest power-off), then cleans up. */
  readonly wait: (
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<void, AbnormalShutdown>
  /** QEMU's combined stdout and stderr, once it has exited. */
  readonly log: Effect.Effect<Option.Option<string>>
  /** The serial console (connects on first use, the same one after). */
  readonly console: Effect.Effect<ConsoleSocket.ConsoleSocket, MachineError>
  /** Sends a file descriptor (or a file opened read-only) to QEMU with SCM_RIGHTS. */
  readonly sendFdScm: (
    fd: number | { readonly path: string }
  ) => Effect.Effect<void, QmpConnectionError | MachineError>
}

/**
 * The machine as a service, for {@link layer}.
 *
 * @since 0.1.0
 * @category tags
 */
export class QemuMachine extends Context.Tag("effect-qemu/QemuMachine")<QemuMachine, Machine>() {}

// Effect's built-in tracer records spans nowhere, and on the per-command path a span
// costs as much as the round trip to QEMU: commands get theirs under a real tracer only.
const builtinTracer = Effect.runSync(Effect.tracer)
const withCommandSpan = (name: string, command: string) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.tracerWith((tracer) => tracer === builtinTracer ? self : Effect.withSpan(self, name, { attributes: { command } }))

const qmpDisabled = new MachineError({ message: "QMP is disabled for this machine (setQmpMonitor(false))" })

const randomSuffix = () => Math.floor(Math.random() * 0x1000000).toString(16).padStart(6, "0")

/**
 * Launches QEMU. The machine lives until the scope closes, which shuts it
 * down (a failure there is logged: call `shutdown` yourself to see it).
 *
 * @since 0.1.0
 * @category constructors
 */
export const launch = (config: Config): Effect.Effect<Machine, LaunchFailure, Scope.Scope> =>
  Effect.gen(function*() {
    const parent = yield* Effect.scope
    const scope = yield* Scope.fork(parent, ExecutionStrategy.sequential)
    return yield* build(config, scope).pipe(
      Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
    )
  }).pipe(
    Effect.provideService(FileSystem.FileSystem, nodeFileSystem),
    Effect.withSpan("QemuMachine.launch", { attributes: { binary: config.binary } })
  )

// Built once: providing the layer to every launch rebuilt it each time (a fifth of a millisecond).
const nodeFileSystem = Effect.runSync(Effect.provide(FileSystem.FileSystem, NodeFileSystem.layer))

const build = (config: Config, scope: Scope.CloseableScope) =>
  Effect.gen(function*() {
    const fsys = yield* FileSystem.FileSystem
    const name = config.name ?? `qemu-${process.pid}-${randomSuffix()}`
    const invalid = (detail: string, cause?: unknown) =>
      new LaunchFailure({
        reason: "InvalidConfig",
        exitCode: undefined,
        signal: undefined,
        command: [...config.wrapper, config.binary],
        output: "",
        detail,
        cause
      })

    // Created and registered for removal in one uninterruptible step: an interrupt in between leaked it.
    const tempDir = yield* fsys.makeTempDirectory({ directory: config.baseTempDir, prefix: "qemu-machine-" }).pipe(
      // Removed synchronously: the async remove costs a threadpool round trip on every shutdown.
      Effect.tap((dir) => Scope.addFinalizer(scope, Effect.ignore(Effect.try(() => fs.rmSync(dir, { recursive: true }))))),
      Effect.uninterruptible,
      Effect.mapError((e) => invalid(`cannot create a temp dir under ${config.baseTempDir}: ${e.message}`, e))
    )
    // mkdtemp creates the directory 0700: private to us, sockets included.
    const sockDir = config.sockDir ?? tempDir
    const logDir = config.logDir ?? tempDir
    const monitorAddress: Resolved["monitorAddress"] = !config.qmp
      ? undefined
      : config.monitorAddress === undefined
      ? nodePath.join(sockDir, `${name}-monitor.sock`)
      : typeof config.monitorAddress === "string"
      ? config.monitorAddress
      : { host: config.monitorAddress.host ?? "127.0.0.1", port: config.monitorAddress.port }
    const consolePath = config.console ? nodePath.join(sockDir, `${name}-console.sock`) : undefined
    for (const path of [typeof monitorAddress === "string" ? monitorAddress : undefined, consolePath]) {
      const complaint = path === undefined ? undefined : Net.checkUnixPath(path)
      if (complaint) return yield* Effect.fail(invalid(complaint))
    }
    for (const { fd } of config.fds) {
      if (!Number.isInteger(fd) || fd < 3) return yield* Effect.fail(invalid(`addFd: fd ${fd} must be an integer >= 3`))
    }
    // Files we create outside the temp dir are removed with the machine.
    const removeFiles = [consolePath, typeof monitorAddress === "string" ? monitorAddress : undefined].filter(
      (p): p is string => p !== undefined && !p.startsWith(tempDir + nodePath.sep)
    )
    yield* Scope.addFinalizer(
      scope,
      Effect.sync(() => removeFiles.forEach((p) => fs.rmSync(p, { force: true })))
    )

    // Listen before QEMU starts: it connects to us.
    const listener = monitorAddress === undefined ? undefined : yield* QmpClient.listen(monitorAddress).pipe(
      Scope.extend(scope),
      Effect.mapError((e) => invalid(e.message, e))
    )
    const resolvedMonitor = listener?.address as Resolved["monitorAddress"]
    const args = commandLine(config, { monitorAddress: resolvedMonitor, consolePath })
    const logFile = nodePath.join(logDir, `${name}.log`)

    const failure = (reason: LaunchFailureReason, exit: Proc.ExitInfo | undefined, cause: unknown, detail?: string) =>
      new LaunchFailure({
        reason,
        exitCode: exit && exit.signal === null ? exit.code ?? undefined : undefined,
        signal: exit?.signal ?? undefined,
        // Secrets on the command line (and QEMU's echo of it) stay out of errors.
        command: Redact.redactArgs(args),
        output: Redact.redactText(readText(logFile), args),
        cause,
        ...(detail ? { detail } : {})
      })

    yield* Effect.logDebug(`launching ${Redact.redactArgs(args).join(" ")}`).pipe(Effect.annotateLogs("machine", name))
    const child = yield* Proc.spawn(args, {
      logFile,
      passFds: config.fds.map(({ fd }) => ({ fd, target: fd })),
      dieWithParent: true
    }).pipe(
      Scope.extend(scope),
      Effect.mapError((e) => failure("SpawnFailed", undefined, e.cause, e.message))
    )

    const state = {
      quitIssued: false,
      shutdown: undefined as Deferred.Deferred<void, AbnormalShutdown> | undefined,
      log: Option.none<string>(),
      eventCache: [] as Array<QmpMessage.Event>
    }

    // Anything that fails from here on kills QEMU first, so its output is complete.
    const killAndFail = (reason: LaunchFailureReason, cause: unknown, detail?: string) =>
      Effect.gen(function*() {
        child.signal("SIGKILL")
        const exit = yield* child.exited.pipe(Effect.timeout(Duration.seconds(10)), Effect.option)
        return yield* Effect.fail(failure(reason, Option.getOrUndefined(exit), cause, detail))
      })

    let qmp: QmpClient.QmpClient.Service | undefined
    if (listener) {
      // QEMU exiting before it is connected ends the wait at once: closing the listener fails
      // the accept. One deadline covers connecting and negotiating.
      const unwatch = child.onExit(() => Effect.runSync(listener.close))
      qmp = yield* listener.accept({ negotiationTimeout: Duration.infinity, name }).pipe(
        Scope.extend(scope),
        Effect.timeoutFail({
          duration: config.qmpTimeout,
          onTimeout: () => new QmpTimeoutError({ operation: "QEMU connecting to the QMP monitor", timeout: config.qmpTimeout })
        }),
        Effect.ensuring(Effect.sync(unwatch)),
        Effect.catchAll((e) =>
          e._tag === "QmpTimeoutError"
            ? killAndFail("Timeout", e, e.message)
            // A closed listener or an EOF: QEMU is exiting, and the exit may be reported a moment later.
            : Effect.flatMap(child.exited.pipe(Effect.timeout(Duration.seconds(2)), Effect.option), (exit) =>
              Option.isSome(exit)
                ? Effect.fail(failure(
                  "ExitedEarly",
                  exit.value,
                  e,
                  `QEMU exited before the QMP connection was made (${describeExit(exit.value)})`
                ))
                : killAndFail("QmpFailed", e, e.message))
        )
      )
      // QEMU is connected: the listening socket has done its job.
      yield* listener.close
    }

    // --- the machine handle ---------------------------------------------------------------------

    let consoleSocket: ConsoleSocket.ConsoleSocket | undefined
    const consoleLock = yield* Effect.makeSemaphore(1)
    const consoleEffect: Effect.Effect<ConsoleSocket.ConsoleSocket, MachineError> = consoleLock.withPermits(1)(
      Effect.suspend(() => {
        if (consoleSocket) return Effect.succeed(consoleSocket)
        if (!consolePath) {
          return Effect.fail(new MachineError({ message: "no console configured for this machine (use setConsole)" }))
        }
        if (state.shutdown) return Effect.fail(new MachineError({ message: "the machine has been shut down" }))
        return ConsoleSocket.connect(consolePath, { logFile: config.consoleLog }).pipe(
          Scope.extend(scope),
          Effect.tap((c) => Effect.sync(() => (consoleSocket = c))),
          Effect.mapError((e) => new MachineError({ message: `cannot connect to the console: ${e.message}`, cause: e }))
        )
      })
    )

    if (config.console && config.drainConsole) {
      yield* consoleEffect.pipe(Effect.catchAll((e) => killAndFail("QmpFailed", e, e.message)))
    }

    const requireQmp = qmp ? Effect.succeed(qmp) : Effect.fail(qmpDisabled)

    const qmpRaw = (command: string, args?: QmpClient.Arguments) =>
      Effect.flatMap(requireQmp, (client) => {
        if (command !== "quit") return client.executeRaw(command, args)
        state.quitIssued = true
        // QEMU may close the socket before or after it answers quit: both are success.
        return client.executeRaw(command, args).pipe(
          Effect.catchTag("QmpConnectionError", () => Effect.succeed<QmpMessage.Response>({ return: {} }))
        )
      }).pipe(withCommandSpan("QemuMachine.qmp", command))

    const command = (name: string, args?: QmpClient.Arguments) =>
      Effect.flatMap(requireQmp, (client) =>
        name === "quit"
          ? Effect.flatMap(qmpRaw(name, args), (r) =>
            "error" in r ? client.execute(name, args) : Effect.succeed(r.return))
          : client.execute(name, args)).pipe(withCommandSpan("QemuMachine.command", name))

    const eventsWait = (
      pairs: ReadonlyArray<readonly [string, EventMatch.Match?]>,
      options?: { readonly timeout?: Duration.DurationInput | undefined }
    ) =>
      Effect.flatMap(requireQmp, (client) => {
        const matches = (event: QmpMessage.Event) =>
          pairs.some(([name, match]) => event.event === name && EventMatch.eventMatch(event, match))
        const timeout = Duration.decode(options?.timeout ?? Duration.seconds(60))
        const cached = state.eventCache.findIndex(matches)
        if (cached >= 0) return Effect.succeed(state.eventCache.splice(cached, 1)[0]!)
        const pull: Effect.Effect<QmpMessage.Event, QmpError> = Effect.flatMap(
          client.pullEvent({ wait: true }),
          (event) => {
            if (Option.isNone(event)) return pull
            if (matches(event.value)) return Effect.succeed(event.value)
            state.eventCache.push(event.value)
            return pull
          }
        )
        return Effect.timeoutFail(pull, {
          duration: timeout,
          onTimeout: () =>
            new QmpTimeoutError({ operation: `waiting for event ${pairs.map(([n]) => n).join(" | ")}`, timeout })
        })
      })

    // --- shutdown ladder ---------------------------------------------------------------------------

    const closeConsole = Effect.suspend(() => (consoleSocket ? consoleSocket.close : Effect.void))

    const waitExit = (timeout: Duration.Duration, what: string) =>
      child.exited.pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new QmpTimeoutError({ operation: what, timeout })
        })
      )

    const soft = (timeout: Duration.Duration) =>
      Effect.gen(function*() {
        // The console is always drained, so it cannot block QEMU; when the guest is
        // expected to exit by itself, it keeps reading (the last words, input still in flight).
        if (!state.quitIssued) yield* closeConsole
        if (child.exitInfo() && !state.quitIssued) {
          return yield* Effect.fail(
            new MachineError({ message: `QEMU had already exited (${describeExit(child.exitInfo()!)})` })
          )
        }
        let sentQuit = false
        if (qmp) {
          if (!state.quitIssued) {
            state.quitIssued = true
            sentQuit = true
            yield* qmp.execute("quit").pipe(Effect.catchTag("QmpConnectionError", () => Effect.void))
          }
          // Read QMP to its end, so every event QEMU sent before exiting is kept.
          yield* child.exited
          if (yield* qmp.isConnected) yield* qmp.closed.pipe(Effect.timeout(Duration.seconds(1)), Effect.ignore)
          yield* qmp.close
        } else if (!state.quitIssued) {
          child.signal("SIGTERM")
        }
        const exit = yield* child.exited
        // A dropped connection after our quit is success only if QEMU quit: a foreign
        // signal (e.g. an external SIGKILL racing this shutdown) is not a graceful exit.
        if (sentQuit && exit.signal !== null && !child.sentSignals.has(exit.signal)) {
          return yield* Effect.fail(new MachineError({ message: `QEMU was ${describeExit(exit)} instead of quitting` }))
        }
        return "QEMU exited after quit"
      }).pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new QmpTimeoutError({ operation: "graceful shutdown", timeout })
        })
      )

    const hard = Effect.gen(function*() {
      yield* closeConsole
      child.signal("SIGKILL")
      yield* waitExit(Duration.seconds(60), "waiting for QEMU to die after SIGKILL").pipe(Effect.orDie)
    })

    const cleanup = Effect.gen(function*() {
      if (qmp) yield* qmp.close
      yield* closeConsole
      const exit = child.exitInfo()
      if (Option.isNone(state.log)) state.log = Option.some(readText(logFile))
      yield* Scope.close(scope, Exit.void)
      if (exit?.signal && !child.sentSignals.has(exit.signal)) {
        yield* Effect.logWarning(`QEMU received signal ${exit.signal}; command: ${Redact.redactArgs(args).join(" ")}`).pipe(
          Effect.annotateLogs("machine", name)
        )
      }
    })

    const runShutdown = (options?: ShutdownOptions): Effect.Effect<void, AbnormalShutdown> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          if (state.shutdown) return Effect.ignore(restore(Deferred.await(state.shutdown)))
          const done = Deferred.unsafeMake<void, AbnormalShutdown>(FiberId.none)
          state.shutdown = done
          const steps: Array<ShutdownStep> = []
          const timeout = Duration.decode(options?.timeout ?? Duration.seconds(30))
          const ladder: Effect.Effect<void, AbnormalShutdown> = options?.hard
            ? Effect.tap(hard, () => Effect.sync(() => steps.push({ step: "hard", outcome: "ok", detail: "SIGKILL, QEMU exited" })))
            : restore(soft(timeout)).pipe(
              Effect.tap((detail) => Effect.sync(() => steps.push({ step: "soft", outcome: "ok", detail }))),
              Effect.asVoid,
              Effect.catchAllCause((cause) =>
                Effect.gen(function*() {
                  const error = Cause.squash(cause)
                  steps.push({ step: "soft", outcome: "failed", detail: describeCause(error) })
                  yield* hard
                  steps.push({ step: "hard", outcome: "ok", detail: "SIGKILL, QEMU exited" })
                  return yield* Effect.fail(new AbnormalShutdown({ cause: error, steps: [...steps] }))
                })
              )
            )
          return ladder.pipe(
            Effect.ensuring(cleanup),
            Effect.onExit((exit) => Deferred.done(done, Exit.asVoid(exit))),
            Effect.withSpan("QemuMachine.shutdown"),
            Effect.annotateLogs("machine", name)
          )
        })
      )

    // The scope's own finalizer: callers who care about a failure call shutdown themselves.
    yield* Scope.addFinalizer(
      scope,
      // When shutdown already ran, it is what is closing this scope: nothing to wait for.
      Effect.suspend(() => state.shutdown ? Effect.void : runShutdown()).pipe(
        Effect.catchAll((e) => Effect.logWarning(`shutdown of ${name} was not graceful: ${e.message}`))
      )
    )
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))

    const machine: Machine = {
      [TypeId]: TypeId,
      name,
      args,
      tempDir,
      sockDir,
      logDir,
      qmpClient: Option.fromNullable(qmp),
      pid: Effect.sync(() => (child.exitInfo() ? Option.none() : Option.some(child.pid))),
      isRunning: Effect.sync(() => child.exitInfo() === undefined),
      exitCode: Effect.sync(() => Option.map(Option.fromNullable(child.exitInfo()), Proc.exitCodeOf)),
      qmp: qmpRaw,
      command,
      events: qmp ? qmp.events : Stream.fail(qmpDisabled),
      getQmpEvent: (options) =>
        Effect.flatMap(requireQmp, (client) =>
          state.eventCache.length > 0
            ? Effect.succeed(Option.some(state.eventCache.shift()!))
            : client.pullEvent(options)),
      getQmpEvents: (options) =>
        Effect.flatMap(requireQmp, (client) => {
          const cached = state.eventCache.splice(0)
          return Effect.map(
            client.getEvents(cached.length > 0 ? {} : options),
            (fresh) => [...cached, ...fresh]
          )
        }),
      eventWait: (eventName, options) => eventsWait([[eventName, options?.match]], options),
      eventsWait,
      shutdown: runShutdown,
      kill: Effect.ignore(runShutdown({ hard: true })),
      wait: (options) =>
        Effect.suspend(() => {
          state.quitIssued = true
          return runShutdown({ timeout: options?.timeout })
        }),
      log: Effect.sync(() => state.log),
      console: consoleEffect,
      sendFdScm: (fd) =>
        Effect.flatMap(requireQmp, (client) => {
          if (typeof fd === "number") return client.sendFdScm(fd)
          return Effect.acquireUseRelease(
            Effect.try({
              try: () => fs.openSync(fd.path, "r"),
              catch: (e) => new MachineError({ message: `cannot open ${fd.path}: ${describeCause(e)}`, cause: e })
            }),
            client.sendFdScm,
            (opened) => Effect.sync(() => fs.closeSync(opened))
          )
        })
    }
    return machine
  })

const readText = (file: string): string => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch {
    return ""
  }
}

const describeExit = (exit: Proc.ExitInfo): string =>
  exit.signal !== null ? `killed by ${exit.signal}` : `exit code ${exit.code}`


/**
 * A layer that launches the machine and provides both `QemuMachine` and
 * `QmpClient` (the latter fails with `MachineError` when QMP is disabled).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  config: Config
): Layer.Layer<QemuMachine | QmpClient.QmpClient, LaunchFailure | MachineError> =>
  Layer.scopedContext(
    Effect.gen(function*() {
      const machine = yield* launch(config)
      const qmp = yield* Option.match(machine.qmpClient, {
        onNone: () => Effect.fail(qmpDisabled),
        onSome: Effect.succeed
      })
      return Context.make(QemuMachine, machine).pipe(Context.add(QmpClient.QmpClient, qmp))
    })
  )

/**
 * @since 0.1.0
 * @category refinements
 */
export const isConfig = (u: unknown): u is Config => typeof u === "object" && u !== null && TypeId in u && "binary" in u

/**
 * @since 0.1.0
 * @category refinements
 */
export const isMachine = (u: unknown): u is Machine => typeof u === "object" && u !== null && TypeId in u && "pid" in u
