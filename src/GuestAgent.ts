/**
 * A client of the QEMU guest agent (qemu-ga) as an Effect service: run
 * commands and move files inside the guest over a virtio-serial channel,
 * without a shell on the serial console.
 *
 * The host side is a socket chardev behind a virtio-serial port named
 * `org.qemu.guest_agent.0` (`QemuMachine.addGuestAgent()`, or
 * `-chardev socket,path=P,server=on,wait=off,id=qga0 -device virtio-serial-pci
 * -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0`). The
 * agent has no greeting: the client syncs with `guest-sync-delimited` (after
 * a 0xFF byte that resets the agent's parser) and drops stale replies by id,
 * since requests sent before the agent runs are answered when it starts.
 * The socket is QEMU's and stays connected when the agent restarts in the
 * guest; after garbage on the channel or a timeout the client re-syncs
 * before its next command.
 *
 * QEMU accepts one client per chardev socket at a time.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { GuestAgent } from "effect-qemu"
 *
 * const program = Effect.gen(function*() {
 *   const agent = yield* GuestAgent.connect({ address: "/run/vm1/qga.sock" })
 *   const { exitCode, stdout } = yield* agent.exec("/bin/uname", { args: ["-r"] })
 *   yield* agent.writeFile("/tmp/hello", "hello\n")
 *   const back = yield* agent.readFile("/tmp/hello")
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.2.0
 */
import type { Duration, Effect, Scope } from "effect"
import { Context, Layer } from "effect"
import type { GuestAgentError, QmpConnectionError, QmpError } from "./Errors.js"
import type * as Net from "./internal/net.js"
import * as args from "./internal/guestAgent/args.js"
import * as Commands from "./internal/guestAgent/commands.js"
import * as internal from "./internal/guestAgent/service.js"

/**
 * @since 0.2.0
 * @category type ids
 */
export const TypeId: unique symbol = internal.TypeId

/**
 * @since 0.2.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * The QEMU version of the agent schema the commands are typed from.
 *
 * @since 0.2.0
 * @category models
 */
export const schemaVersion: string = Commands.schemaVersion

/**
 * For every command of the agent's schema: `{ args, result }` Schemas,
 * `successResponse` (false for `guest-shutdown` and the suspend commands,
 * which send no reply on success), `allowOob` and `features`.
 *
 * @since 0.2.0
 * @category models
 */
export const commands: typeof Commands.commands = Commands.commands

/**
 * Every command of the agent's schema (any other name is untyped).
 *
 * @since 0.2.0
 * @category models
 */
export type CommandName = Commands.Name

/**
 * The arguments of a typed command.
 *
 * @since 0.2.0
 * @category models
 */
export type Args<N extends CommandName> = Commands.Args<N>

/**
 * The decoded result of a typed command.
 *
 * @since 0.2.0
 * @category models
 */
export type Result<N extends CommandName> = Commands.Result<N>

/**
 * What `info` returns: the agent's version and every command it knows, with
 * whether it is enabled.
 *
 * @since 0.2.0
 * @category models
 */
export type Info = Result<"guest-info">

/**
 * @since 0.2.0
 * @category models
 */
export interface ExecuteOptions {
  /** Deadline of this call, sync included. Default: the connection's `commandTimeout`. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export interface ExecOptions {
  /** Arguments after the program (not run through a shell). */
  readonly args?: ReadonlyArray<string> | undefined
  /** The environment, as `NAME=value` strings (the agent's own when absent). */
  readonly env?: ReadonlyArray<string> | undefined
  /** Bytes (or UTF-8 text) written to the program's stdin, which is then closed. */
  readonly input?: string | Uint8Array | undefined
  /**
   * How long to wait for the program to exit. Default: the connection's
   * `commandTimeout`. A timeout fails with `QmpTimeoutError` and kills nothing:
   * the program keeps running in the guest.
   */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export interface ExecResult {
  /** The guest's process id. */
  readonly pid: number
  /** The exit status; the negative signal number when a signal ended it. */
  readonly exitCode: number
  readonly stdout: Uint8Array
  readonly stderr: Uint8Array
  /** The agent keeps at most 16 MiB of each stream: whether it cut one. */
  readonly truncated: boolean
}

/**
 * @since 0.2.0
 * @category models
 */
export interface FileOptions {
  /** Bytes per agent command. Default 1 MiB. */
  readonly chunkSize?: number | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export interface ShutdownOptions {
  /** Default `powerdown`. */
  readonly mode?: "powerdown" | "halt" | "reboot" | undefined
  /** Default: the connection's `commandTimeout`. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.2.0
 * @category tags
 */
export class GuestAgent extends Context.Tag("effect-qemu/GuestAgent")<GuestAgent, GuestAgent.Service>() {}

/**
 * @since 0.2.0
 * @category models
 */
export declare namespace GuestAgent {
  /**
   * @since 0.2.0
   * @category models
   */
  export interface Service {
    readonly [TypeId]: TypeId
    /**
     * Runs an agent command and returns its `return` value (decoded, for a
     * typed command); the agent's `{ error }` answer becomes a
     * `GuestAgentError` with its class (`CommandNotFound` for a command the
     * agent lacks or disables).
     */
    readonly execute: {
      <N extends CommandName>(command: N, ...rest: Commands.ArgsWithOptions<N, ExecuteOptions>): Effect.Effect<Result<N>, GuestAgentError | QmpError>
      <S extends string>(
        command: S & Commands.Untyped<S>,
        args?: Readonly<Record<string, unknown>>,
        options?: ExecuteOptions
      ): Effect.Effect<unknown, GuestAgentError | QmpError>
    }
    /** `guest-ping`. */
    readonly ping: Effect.Effect<void, GuestAgentError | QmpError>
    /** `guest-info`. */
    readonly info: Effect.Effect<Info, GuestAgentError | QmpError>
    /**
     * Runs a program in the guest with its output captured (`guest-exec`),
     * polls `guest-exec-status` until it exits, and returns its exit code and
     * output.
     */
    readonly exec: (path: string, options?: ExecOptions) => Effect.Effect<ExecResult, GuestAgentError | QmpError>
    /** Reads a whole guest file, in chunks; the guest handle is closed on every path. */
    readonly readFile: (path: string, options?: FileOptions) => Effect.Effect<Uint8Array, GuestAgentError | QmpError>
    /** Writes (or, with `append`, appends to) a guest file, in chunks; the handle is closed on every path. */
    readonly writeFile: (
      path: string,
      data: string | Uint8Array,
      options?: FileOptions & { readonly append?: boolean | undefined }
    ) => Effect.Effect<void, GuestAgentError | QmpError>
    /**
     * Asks the guest to shut down (`guest-shutdown`). The agent sends no reply
     * on success: this completes when the agent socket closes (QEMU exits) or
     * when the connection's `shutdownComplete` signal does; an agent error
     * fails it.
     */
    readonly shutdown: (options?: ShutdownOptions) => Effect.Effect<void, GuestAgentError | QmpError>
    /** Re-syncs now (the client also does it by itself when the channel's state is unknown). */
    readonly sync: (options?: { readonly timeout?: Duration.DurationInput | undefined }) => Effect.Effect<void, QmpError>
    /** Whether the agent socket is still connected. */
    readonly isConnected: Effect.Effect<boolean>
    /** Completes, with the cause, when the agent socket has closed. */
    readonly closed: Effect.Effect<QmpConnectionError>
  }
}

/**
 * @since 0.2.0
 * @category models
 */
export interface ConnectOptions {
  /** The chardev's socket: a unix path, or a TCP host and port. */
  readonly address: Net.Address
  /** How long to wait for the socket and the agent's first sync. Default 60 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Default deadline of each command. Default 60 seconds. */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /** Longest message accepted from the agent. Default 64 MiB. */
  readonly maxMessageSize?: number | undefined
  /**
   * Completes when the guest has shut down (e.g. QEMU's SHUTDOWN event):
   * `shutdown` succeeds then, besides when the socket closes. It is started
   * before `guest-shutdown` is sent and interrupted when `shutdown` ends; a
   * failure of it counts as not complete.
   */
  readonly shutdownComplete?: Effect.Effect<unknown, unknown> | undefined
}

/**
 * Connects to a guest agent socket and waits until the agent answers a sync
 * (`QmpTimeoutError` at the deadline when it never does). Everything is
 * released with the scope.
 *
 * @since 0.2.0
 * @category constructors
 */
export const connect: (options: ConnectOptions) => Effect.Effect<GuestAgent.Service, QmpError, Scope.Scope> =
  internal.connect

/**
 * A layer providing `GuestAgent` from {@link connect}.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: ConnectOptions): Layer.Layer<GuestAgent, QmpError> =>
  Layer.scoped(GuestAgent, internal.connect(options))

/**
 * The QEMU arguments of an agent channel on a unix socket: a socket chardev
 * QEMU listens on (`server=on,wait=off`), a `virtio-serial-pci` controller
 * and a `virtserialport` named `org.qemu.guest_agent.0` with the device id
 * `qga0-port` (so QMP reports `VSERPORT_CHANGE` when the agent opens or
 * closes its end).
 *
 * @since 0.2.0
 * @category constructors
 */
export const commandLineArgs: (socketPath: string) => Array<string> = args.guestAgentArgs

/**
 * @since 0.2.0
 * @category refinements
 */
export const isGuestAgent = (u: unknown): u is GuestAgent.Service => typeof u === "object" && u !== null && TypeId in u
