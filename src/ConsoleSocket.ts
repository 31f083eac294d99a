/**
 * A guest's serial console over QEMU's socket chardev
 * (`-chardev socket,id=console,path=P,server=on,wait=off`).
 *
 * QEMU writes serial output a byte at a time and blocks the guest when the
 * socket buffer is full, so the console is read from the moment it is
 * connected, always, pushed by the socket (never polled). What arrives goes
 * into a bounded in-memory buffer and, when asked, a log file; `expect`,
 * `stream` and `lines` read from there.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { QemuMachine } from "effect-qemu"
 *
 * const config = QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(
 *   QemuMachine.setConsole(),
 *   QemuMachine.addArgs("-kernel", "vmlinuz", "-initrd", "initrd.img", "-append", "console=ttyS0", "-S")
 * )
 *
 * const program = Effect.gen(function*() {
 *   const vm = yield* QemuMachine.launch(config)
 *   const serial = yield* vm.console // connected while the guest is still stopped (-S)
 *   yield* vm.command("cont")
 *   yield* serial.expect("# ", { timeout: "60 seconds" })
 *   yield* serial.write("uname -a\n")
 *   const text = yield* serial.expect(/Linux \S+/, { timeout: "10 seconds" })
 *   console.log(text)
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import type { Duration, Effect, Scope, Stream } from "effect"
import type * as net from "node:net"
import type { MachineError, QmpConnectionError, QmpTimeoutError } from "./Errors.js"
import * as internal from "./internal/console.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export const TypeId: unique symbol = internal.TypeId

/**
 * @since 0.1.0
 * @category type ids
 */
export type TypeId = typeof TypeId

/**
 * @since 0.1.0
 * @category models
 */
export interface ExpectOptions {
  /** Default 60 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ConsoleSocket {
  readonly [TypeId]: TypeId
  /** Bytes from the guest, from the moment the stream runs; ends when the console closes. */
  readonly stream: Stream.Stream<Uint8Array>
  /** Text lines from the guest (without line terminators), from the moment the stream runs. */
  readonly lines: Stream.Stream<string>
  /** Sends bytes (or UTF-8 text) to the guest. */
  readonly write: (data: string | Uint8Array) => Effect.Effect<void, QmpConnectionError>
  /**
   * Waits until the text received since the previous `expect` (or since
   * connecting) matches `pattern`; returns that text up to and including the
   * match and consumes it.
   */
  readonly expect: (
    pattern: string | RegExp,
    options?: ExpectOptions
  ) => Effect.Effect<string, QmpTimeoutError | QmpConnectionError>
  /** Text received and not yet consumed by `expect`. */
  readonly pending: Effect.Effect<string>
  /** Every byte received so far (the in-memory buffer keeps at most `bufferSize` bytes). */
  readonly received: Effect.Effect<number>
  /** Whether the console is still connected. */
  readonly isConnected: Effect.Effect<boolean>
  /** Closes the console (and flushes the log file). Idempotent. */
  readonly close: Effect.Effect<void>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Also write everything received to this file (truncated first). */
  readonly logFile?: string | undefined
  /** Most text kept for `expect`; older unconsumed text is dropped. Default 1 MiB. */
  readonly bufferSize?: number | undefined
  /** Retry connecting this long while QEMU creates the socket. Default 10 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
}

/**
 * Reads a connected socket as a console. The socket belongs to the caller's
 * scope; closing the scope closes the console. Fails with `MachineError` when
 * the `logFile` cannot be opened.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromSocket: (
  socket: net.Socket,
  options?: Options
) => Effect.Effect<ConsoleSocket, MachineError, Scope.Scope> = internal.fromSocket

/**
 * Connects to QEMU's console socket, retrying while QEMU has not created it
 * yet, and starts reading at once.
 *
 * @since 0.1.0
 * @category constructors
 */
export const connect: (
  path: string,
  options?: Options
) => Effect.Effect<ConsoleSocket, QmpConnectionError | MachineError, Scope.Scope> = internal.connect

/**
 * @since 0.1.0
 * @category refinements
 */
export const isConsoleSocket = (u: unknown): u is ConsoleSocket => typeof u === "object" && u !== null && TypeId in u
