/**
 * The machine handle users hold: commands and events delegate to the QMP
 * client (one event path), the console connects on first use, and `quit`
 * moves the run state before it is sent.
 */
import { Duration, Effect, Option, Scope, Stream } from "effect"
import * as fs from "node:fs"
import type * as ConsoleApi from "../../ConsoleSocket.js"
import type * as GuestAgentApi from "../../GuestAgent.js"
import { describeCause, MachineError } from "../../Errors.js"
import type { QmpArgumentError, QmpCommandError, QmpError } from "../../Errors.js"
import type * as Qapi from "../../Qapi.js"
import type * as Api from "../../QemuMachine.js"
import type * as QmpApi from "../../QmpClient.js"
import type * as QmpMessage from "../../QmpMessage.js"
import * as Console from "../console.js"
import * as GuestAgentService from "../guestAgent/service.js"
import * as Proc from "../process.js"
import * as Client from "../qmp/client.js"
import * as Save from "../snapshot/save.js"
import { withSpanIfTraced } from "../span.js"
import { TypeId } from "./config.js"
import type * as Lifecycle from "./lifecycle.js"
import * as Network from "./network.js"
import type { Prepared } from "./prepare.js"
import * as State from "./state.js"

const DEFAULT_EVENT_TIMEOUT = Duration.seconds(60)
const DEFAULT_GUEST_AGENT_TIMEOUT = Duration.seconds(60)

export const qmpDisabled = new MachineError({ message: "QMP is disabled for this machine (setQmpMonitor(false))" })

// On the per-command path a span costs as much as the round trip to QEMU (see span.ts).
const withCommandSpan = (name: string, command: string) => withSpanIfTraced(name, { attributes: { command } })

export interface ConsoleHolder {
  readonly get: Effect.Effect<ConsoleApi.ConsoleSocket, MachineError>
  readonly close: Effect.Effect<void>
}

/** The console, connected on first use (the same one after) and closed with the machine. */
export const makeConsole = (
  config: Api.Config,
  prepared: Prepared,
  scope: Scope.Scope,
  shutDown: () => boolean
): ConsoleHolder => {
  let connected: ConsoleApi.ConsoleSocket | undefined
  const lock = Effect.unsafeMakeSemaphore(1)
  const consolePath = prepared.consolePath
  return {
    get: lock.withPermits(1)(Effect.suspend(() => {
      if (connected) return Effect.succeed(connected)
      if (!consolePath) {
        return Effect.fail(new MachineError({ message: "no console configured for this machine (use setConsole)" }))
      }
      if (shutDown()) return Effect.fail(new MachineError({ message: "the machine has been shut down" }))
      return Console.connect(consolePath, { logFile: config.consoleLog }).pipe(
        Scope.extend(scope),
        Effect.tap((c) => Effect.sync(() => (connected = c))),
        Effect.mapError((e) => new MachineError({ message: `cannot connect to the console: ${e.message}`, cause: e }))
      )
    })),
    // No console configured: nothing to close, and no step to take for it at every close.
    close: consolePath ? Effect.suspend(() => (connected ? connected.close : Effect.void)) : Effect.void
  }
}

export interface GuestAgentHolder {
  readonly get: (
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<GuestAgentApi.GuestAgent.Service, QmpError | MachineError>
}

/**
 * The guest agent, connected and synced on first use (the same one after). Its
 * `shutdown` completes when QEMU reports the guest's SHUTDOWN or exits.
 */
export const makeGuestAgent = (
  prepared: Prepared,
  scope: Scope.Scope,
  child: Proc.Child,
  qmp: QmpApi.QmpClient.Service | undefined,
  shutDown: () => boolean
): GuestAgentHolder => {
  let connected: GuestAgentApi.GuestAgent.Service | undefined
  const lock = Effect.unsafeMakeSemaphore(1)
  const address = prepared.guestAgentPath
  // Subscribed before guest-shutdown is sent (the watch runs first): a SHUTDOWN that
  // arrives before the agent's socket says anything is not missed. A subscription
  // takes nothing from the event cache, so `vm.eventWait("SHUTDOWN")` still sees it.
  const guestShutdown: GuestAgentService.ShutdownWatch = qmp
    ? Effect.map(qmp.subscribe, (events) =>
      Effect.asVoid(Effect.raceFirst(
        child.exited,
        Stream.runHead(Stream.filter(events, (event) => event.event === "SHUTDOWN"))
      )))
    : Effect.succeed(Effect.asVoid(child.exited))
  return {
    get: (options) =>
      lock.withPermits(1)(Effect.suspend((): Effect.Effect<GuestAgentApi.GuestAgent.Service, QmpError | MachineError> => {
        if (connected) return Effect.succeed(connected)
        if (!address) {
          return Effect.fail(new MachineError({ message: "no guest agent configured for this machine (use addGuestAgent)" }))
        }
        if (shutDown()) return Effect.fail(new MachineError({ message: "the machine has been shut down" }))
        return GuestAgentService.connect({
          address,
          timeout: options?.timeout ?? DEFAULT_GUEST_AGENT_TIMEOUT,
          shutdownWatch: guestShutdown
        }).pipe(
          Scope.extend(scope),
          Effect.tap((agent) => Effect.sync(() => (connected = agent)))
        )
      }))
  }
}

export interface HandleDeps {
  readonly prepared: Prepared
  readonly child: Proc.Child
  readonly qmp: QmpApi.QmpClient.Service | undefined
  readonly state: State.StateRef
  readonly shutdown: Lifecycle.Shutdown
  readonly console: ConsoleHolder
  readonly guestAgent: GuestAgentHolder
  readonly log: () => Option.Option<string>
  /** The configuration a snapshot records (a restored machine's is the one it was restored from). */
  readonly recorded: Api.Config
}

const sendFdScm = (client: QmpApi.QmpClient.Service, fd: number | { readonly path: string }) => {
  if (typeof fd === "number") return client.sendFdScm(fd)
  return Effect.acquireUseRelease(
    Effect.try({
      try: () => fs.openSync(fd.path, "r"),
      catch: (e) => new MachineError({ message: `cannot open ${fd.path}: ${describeCause(e)}`, cause: e })
    }),
    client.sendFdScm,
    (opened) => Effect.sync(() => fs.closeSync(opened))
  )
}

export const make = (deps: HandleDeps): Api.Machine => {
  const { child, prepared, qmp, state, shutdown } = deps
  const requireQmp = qmp ? Effect.succeed(qmp) : Effect.fail(qmpDisabled)

  const qmpRaw = (command: string, args?: QmpApi.Arguments) =>
    Effect.flatMap(requireQmp, (client) => {
      if (command !== "quit") return client.executeRaw(command, args)
      // QEMU may close the socket before or after it answers quit: both are success.
      return Effect.zipRight(
        state.transition(State.MachineState.QuitIssued()),
        client.executeRaw(command, args).pipe(
          Effect.catchTag("QmpConnectionError", () => Effect.succeed<QmpMessage.Response>({ return: {} }))
        )
      )
    }).pipe(withCommandSpan("QemuMachine.qmp", command))

  type CommandError = QmpError | QmpCommandError | QmpArgumentError | MachineError
  const command = (name: string, args?: QmpApi.Arguments): Effect.Effect<unknown, CommandError> =>
    withCommandSpan("QemuMachine.command", name)<unknown, CommandError, never>(
      name === "quit"
        ? Effect.flatMap(qmpRaw(name, args), Client.unwrap(name))
        : qmp
        ? qmp.execute(name, args)
        : Effect.fail(qmpDisabled)
    )

  const commandAll = (calls: ReadonlyArray<Qapi.Call>): Effect.Effect<Array<unknown>, CommandError> =>
    !qmp
      ? Effect.fail(qmpDisabled)
      : calls.some(([name]) => name === "quit")
      ? Effect.fail(new MachineError({ message: "quit cannot be batched (commandAll): use vm.shutdown or vm.command(\"quit\")" }))
      : qmp.executeAll(calls as never) as Effect.Effect<Array<unknown>, CommandError>

  const eventsWait = (
    pairs: ReadonlyArray<readonly [string, unknown?]>,
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ): Effect.Effect<QmpMessage.Event, QmpError | MachineError> =>
    Effect.flatMap(requireQmp, (client) =>
      client.eventsWait(pairs, {
        timeout: options?.timeout ?? DEFAULT_EVENT_TIMEOUT
      }))

  const network = Network.make({
    networks: deps.recorded.networks ?? [],
    hmp: (line) =>
      Effect.flatMap(requireQmp, (client) => client.execute("human-monitor-command", { "command-line": line })).pipe(
        Effect.map((out) => typeof out === "string" ? out : String(out))
      )
  })

  const machine: Api.Machine = {
    [TypeId]: TypeId,
    name: prepared.name,
    args: prepared.args,
    tempDir: prepared.tempDir,
    sockDir: prepared.sockDir,
    logDir: prepared.logDir,
    qmpClient: Option.fromNullable(qmp),
    pid: Effect.sync(() => (child.exitInfo() ? Option.none() : Option.some(child.pid))),
    isRunning: Effect.sync(() => child.exitInfo() === undefined),
    exitCode: Effect.sync(() => Option.map(Option.fromNullable(child.exitInfo()), Proc.exitCodeOf)),
    state: state.get,
    stateChanges: state.changes,
    qmp: qmpRaw,
    command: command as Api.Machine["command"],
    commandAll: commandAll as Api.Machine["commandAll"],
    events: qmp ? qmp.events : Stream.fail(qmpDisabled),
    getQmpEvent: (options) => Effect.flatMap(requireQmp, (client) => client.pullEvent(options)),
    getQmpEvents: (options) => Effect.flatMap(requireQmp, (client) => client.getEvents(options)),
    eventWait: ((eventName: string, options?: Api.EventWaitOptions) =>
      eventsWait([[eventName, options?.match]], options)) as Api.Machine["eventWait"],
    eventsWait,
    shutdown: shutdown.run,
    kill: Effect.ignore(shutdown.run({ hard: true })),
    wait: shutdown.wait,
    log: Effect.sync(deps.log),
    console: deps.console.get,
    guestAgent: deps.guestAgent.get,
    sendFdScm: (fd) => Effect.flatMap(requireQmp, (client) => sendFdScm(client, fd)),
    snapshot: (options) => Save.save(machine, deps.recorded, options),
    forwardedPort: network.forwardedPort,
    addForward: network.addForward,
    waitForPort: network.waitForPort
  }
  return machine
}
