/**
 * What the shell talks to: a QEMU over QMP (`QmpClient.connect`), raw JSON
 * lines without negotiation (`-N`), or a guest agent socket (`ga`); a
 * machine we launch (`run`) is in `machine.ts`, loaded only by `run`.
 *
 * @since 0.2.0
 */
import { type Duration, Effect, Scope, Stream } from "effect"
import * as net from "node:net"
import type { GuestAgentError, QmpError } from "../Errors.js"
import * as GuestAgent from "../GuestAgent.js"
import * as QmpClient from "../QmpClient.js"
import * as Address from "./address.js"
import * as Catalog from "./catalog.js"
import { CliFailure, escape, EXIT_FATAL, fatal } from "./errors.js"
import * as LineClient from "./lineClient.js"
import type * as Parse from "./parse.js"
import type * as Shell from "./shell.js"

/** @internal */
export const asRecord = (u: unknown): Record<string, unknown> => u as Record<string, unknown>

const versionOf = (qmp: QmpClient.QmpClient.Service): string => {
  const v = qmp.greeting.QMP.version.qemu
  return `QEMU ${v.major}.${v.minor}.${v.micro}`
}

/** @internal */
export const fromClient = (qmp: QmpClient.QmpClient.Service): Effect.Effect<Shell.Backend, never, Scope.Scope> =>
  Effect.map(qmp.subscribe, (events) => ({
    peer: versionOf(qmp),
    execute: (command: Parse.Command) =>
      qmp.executeRaw(command.execute, command.arguments).pipe(Effect.map(asRecord), Effect.mapError(fatal)),
    unsolicited: events,
    closed: Effect.map(qmp.closed, fatal),
    catalog: qmp.execute("query-qmp-schema").pipe(Effect.map(Catalog.fromSchema), Effect.orElseSucceed(() => Catalog.empty))
  }))

/**
 * QMP through the library's client: negotiated, events subscribed before the
 * first command.
 *
 * @since 0.2.0
 * @category constructors
 */
export const qmp = (address: QmpClient.Address): Effect.Effect<Shell.Backend, CliFailure, Scope.Scope> =>
  Address.check(address).pipe(
    Effect.zipRight(QmpClient.connect({ address, connectTimeout: "10 seconds" })),
    Effect.mapError(fatal),
    Effect.flatMap(fromClient)
  )

/**
 * `-N`: raw lines, no negotiation; the greeting is printed like an event.
 * Completion knows the command names of the generated types (`Qapi`).
 *
 * @since 0.2.0
 * @category constructors
 */
export const raw = (address: QmpClient.Address): Effect.Effect<Shell.Backend, CliFailure, Scope.Scope> =>
  Effect.map(Effect.zipRight(Address.check(address), LineClient.connect(address)), (client) => ({
    execute: (command: Parse.Command) => client.request({ ...command }),
    unsolicited: client.unsolicited,
    closed: client.closed,
    // Before negotiation QEMU answers nothing but qmp_capabilities: names come from the generated types.
    catalog: Effect.promise(() => import("./schema.js")).pipe(
      Effect.flatMap((Schema) => Schema.loadGenerated),
      Effect.map((names) => Catalog.fromNames(["qmp_capabilities", ...names.commands])),
      Effect.orElseSucceed(() => Catalog.empty)
    )
  }))

// Agent commands that never answer on success.
const GA_NO_REPLY: ReadonlySet<string> = new Set([
  "guest-shutdown",
  "guest-suspend-disk",
  "guest-suspend-ram",
  "guest-suspend-hybrid"
])

// What answers on a socket, asked the agent's way (0xFF, then guest-sync-delimited): a QMP
// monitor greets at once, an agent answers the sync. Nothing within the timeout: let the agent
// client decide (it waits and resyncs on its own).
const probeAgent = (address: QmpClient.Address, timeout: Duration.DurationInput) =>
  Effect.async<void, CliFailure>((resume) => {
    const socket = typeof address === "string" ? net.connect(address) : net.connect(address.port, address.host)
    let buffer = ""
    let finished = false
    const done = (result: Effect.Effect<void, CliFailure>) => {
      if (finished) return
      finished = true
      socket.destroy()
      resume(result)
    }
    socket.on("connect", () => {
      socket.write(Buffer.concat([Buffer.from([0xff]), Buffer.from(`{"execute":"guest-sync-delimited","arguments":{"id":${process.pid}}}\n`)]))
    })
    socket.on("data", (data: Buffer) => {
      buffer += data.toString("latin1")
      const line = buffer.replace(/\xff/g, "").split("\n").find((l) => l.trim() !== "")
      if (line === undefined || !buffer.includes("\n")) return
      let message: unknown
      try {
        message = JSON.parse(line)
      } catch {
        return done(Effect.fail(
          new CliFailure({
            message: `${Address.format(address)} is not a guest agent: it sent ${escape(line.slice(0, 120))}`,
            exitCode: EXIT_FATAL
          })
        ))
      }
      const qmp = typeof message === "object" && message !== null && "QMP" in message
        ? (message as { QMP: { version?: { qemu?: { major?: number; minor?: number; micro?: number } } } }).QMP
        : undefined
      if (qmp) {
        const v = qmp.version?.qemu
        return done(Effect.fail(
          new CliFailure({
            message: `${Address.format(address)} is a QMP monitor${
              v ? ` (QEMU ${v.major}.${v.minor}.${v.micro})` : ""
            }, not a guest agent: use 'effect-qemu shell'`,
            exitCode: EXIT_FATAL
          })
        ))
      }
      done(Effect.void)
    })
    socket.on("error", () => done(Effect.void))
    socket.on("close", () => done(Effect.void))
    const timer = setTimeout(() => done(Effect.void), 1000)
    socket.on("close", () => clearTimeout(timer))
    return Effect.sync(() => {
      clearTimeout(timer)
      socket.destroy()
    })
  }).pipe(Effect.timeout(timeout), Effect.catchTag("TimeoutException", () => Effect.void))

/**
 * A guest agent socket, through `GuestAgent.connect` (resynchronised with
 * `guest-sync-delimited`); command names for completion from `guest-info`.
 * The agent's `{ error }` is printed as a reply like QMP's.
 *
 * @since 0.2.0
 * @category constructors
 */
export const guestAgent = (
  address: QmpClient.Address,
  timeout: Duration.DurationInput
): Effect.Effect<Shell.Backend, CliFailure, Scope.Scope> =>
  Effect.map(
    Address.check(address).pipe(
      Effect.zipRight(probeAgent(address, timeout)),
      Effect.zipRight(Effect.mapError(GuestAgent.connect({ address, timeout }), fatal))
    ),
    (agent) => ({
      peer: "the guest agent",
      execute: (command: Parse.Command): Effect.Effect<Record<string, unknown>, CliFailure> =>
        (agent.execute(command.execute as string, command.arguments) as Effect.Effect<unknown, GuestAgentError | QmpError>).pipe(
          Effect.map((value): Record<string, unknown> => ({ return: value })),
          Effect.catchTag("GuestAgentError", (e) => Effect.succeed({ error: { class: e.errorClass, desc: e.desc } })),
          Effect.mapError(fatal)
        ),
      unsolicited: Stream.empty,
      closed: Effect.map(agent.closed, fatal),
      catalog: agent.info.pipe(
        Effect.map((info) =>
          Catalog.fromNames(info.supported_commands.flatMap((c) => c.enabled ? [c.name] : []))
        ),
        Effect.orElseSucceed(() => Catalog.empty)
      ),
      noReply: GA_NO_REPLY
    })
  )
