/**
 * Starting QEMU: spawn it (tied to our lifetime), then race QEMU connecting
 * to the QMP listener against its exit and one deadline for connect plus
 * negotiation. Any failure kills QEMU first, so the `LaunchFailure` carries
 * its complete output.
 */
import { Duration, Effect, FiberRef, LogLevel, Option, Scope } from "effect"
import * as fs from "node:fs"
import { LaunchFailure, QmpTimeoutError } from "../../Errors.js"
import type { LaunchFailureReason } from "../../Errors.js"
import type * as Api from "../../QemuMachine.js"
import type * as QmpApi from "../../QmpClient.js"
import * as Deadline from "../deadline.js"
import * as Proc from "../process.js"
import * as Redact from "../redact.js"
import { describeExit } from "./lifecycle.js"
import type { Prepared } from "./prepare.js"

export const readText = (file: string): string => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch {
    return ""
  }
}

const describeFsCode = (e: Error): string => {
  const code = (e as NodeJS.ErrnoException).code
  return code === "ENOSPC"
    ? "the file system is full (ENOSPC)"
    : code === "EDQUOT"
    ? "the disk quota is exhausted (EDQUOT)"
    : e.message
}

/**
 * What QEMU gets as its environment: ours, plus `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`
 * when `GLIBC_TUNABLES` is not set at all. glibc (2.35 and later) then backs QEMU's heap
 * with transparent huge pages where the kernel allows them on request (THP `madvise`,
 * Debian's default). QEMU touches some 9 MB of heap while it starts, one page fault per
 * 4 KiB without this: measured with `perf stat` on a clone's start (a 2-vCPU host where a
 * fault is dear), 5,200 faults and 140 ms of CPU against 3,000 and 82 ms, for 3% more
 * PSS. Other C libraries ignore the variable, as does glibc for a setuid program.
 * Setting `GLIBC_TUNABLES` yourself, to anything, even empty, leaves QEMU's as it is.
 */
export const qemuEnv = (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv =>
  env.GLIBC_TUNABLES !== undefined ? env : { ...env, GLIBC_TUNABLES: "glibc.malloc.hugetlb=1" }

export interface Started {
  readonly child: Proc.Child
  readonly qmp: QmpApi.QmpClient.Service | undefined
  /** Kills QEMU, waits for it, and fails with a `LaunchFailure` carrying its output. */
  readonly killAndFail: (reason: LaunchFailureReason, cause: unknown, detail?: string) => Effect.Effect<never, LaunchFailure>
}

const EXIT_WAIT = Duration.seconds(10)
const EXIT_REPORT_WAIT = Duration.seconds(2)

export const start = (
  config: Api.Config,
  prepared: Prepared
): Effect.Effect<Started, LaunchFailure, Scope.Scope> =>
  Effect.gen(function*() {
    const { args, listener, logFile, name } = prepared
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

    // The redacted command line is built only when debug logs are kept: it is work on every launch.
    if (!LogLevel.lessThan(LogLevel.Debug, yield* FiberRef.get(FiberRef.currentMinimumLogLevel))) {
      yield* Effect.logDebug(`launching ${Redact.redactArgs(args).join(" ")}`).pipe(Effect.annotateLogs("machine", name))
    }
    const child = yield* Proc.spawn(args, {
      env: qemuEnv(process.env),
      logFile,
      passFds: config.fds.map(({ fd }) => ({ fd, target: fd })),
      dieWithParent: true
    }).pipe(
      Effect.mapError((e) =>
        e.phase === "log"
          // The log file is ours to create: a full disk or a read-only log dir is the user's setup.
          ? new LaunchFailure({
            reason: "InvalidConfig",
            exitCode: undefined,
            signal: undefined,
            command: Redact.redactArgs(args),
            output: "",
            cause: e.cause,
            detail: `cannot create the log file ${logFile}: ${describeFsCode(e.cause)}`
          })
          : failure("SpawnFailed", undefined, e.cause, e.message)
      )
    )

    const killAndFail = (reason: LaunchFailureReason, cause: unknown, detail?: string) =>
      Effect.gen(function*() {
        child.signal("SIGKILL")
        const exit = yield* child.exited.pipe(Effect.timeout(EXIT_WAIT), Effect.option)
        return yield* Effect.fail(failure(reason, Option.getOrUndefined(exit), cause, detail))
      })

    if (!listener) return { child, qmp: undefined, killAndFail }

    // QEMU exiting before it is connected ends the wait at once: closing the listener fails
    // the accept. One deadline covers connecting and negotiating.
    const unwatch = child.onExit(() => Effect.runSync(listener.close))
    const accepted = listener.accept({
      negotiationTimeout: Duration.infinity,
      name,
      eventCacheSize: config.eventCacheSize,
      eventCacheBytes: config.eventCacheBytes,
      eventStreamBuffer: config.eventStreamBuffer,
      validateArgs: config.validateArgs
    })
    const timedOut = () => new QmpTimeoutError({ operation: "QEMU connecting to the QMP monitor", timeout: config.qmpTimeout })
    const qmp = yield* Deadline.onLiveClock(
      // At the deadline QEMU is killed, which ends the accept (the listener closes on the exit) or the
      // negotiation (EOF); the flag says why it ended. One timer, no racing fibers (see deadline.ts).
      () => {
        let expired = false
        const disarm = Deadline.arm(config.qmpTimeout, () => {
          expired = true
          child.signal("SIGKILL")
        })
        return accepted.pipe(
          Effect.ensuring(Effect.sync(disarm)),
          Effect.catchAll((e) => Effect.fail(expired ? timedOut() : e)),
          Effect.flatMap((client) => (expired ? Effect.fail(timedOut()) : Effect.succeed(client)))
        )
      },
      () => Effect.timeoutFail(accepted, { duration: config.qmpTimeout, onTimeout: timedOut })
    ).pipe(
      Effect.ensuring(Effect.sync(unwatch)),
      Effect.catchAll((e) =>
        e._tag === "QmpTimeoutError"
          ? killAndFail("Timeout", e, e.message)
          // A closed listener or an EOF: QEMU is exiting, and the exit may be reported a moment later.
          : Effect.flatMap(child.exited.pipe(Effect.timeout(EXIT_REPORT_WAIT), Effect.option), (exit) =>
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
    return { child, qmp, killAndFail }
  })
