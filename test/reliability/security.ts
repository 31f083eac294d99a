/**
 * Case 6: security properties, each check one try.
 *
 * - The machine's temp dir (which holds the sockets) is 0700, QEMU's log 0600.
 * - A TCP monitor listens on loopback unless the user names another host:
 *   checked in `args` and in the kernel's table of listening sockets of this
 *   process while QEMU (held back by a wrapper) has not connected yet.
 * - Unix socket paths over 107 bytes are rejected before anything is spawned
 *   (a wrapper that would leave a marker file never runs); 107 is accepted.
 * - Secrets on the command line and in QMP commands stay out of Debug logs,
 *   LaunchFailure (message, fields, JSON), QmpCommandError and
 *   QmpTimeoutError messages, and the warning about a foreign signal.
 */
import { Cause, Effect, Exit, Option } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { QemuMachine } from "../../src/index.js"
import type { CaseResult, Context, LogCapture } from "./common.js"
import {
  bounded,
  captureLogs,
  describeExit,
  fail,
  leaksAfter,
  newResult,
  newTracker,
  noneConfig,
  run,
  takeBaseline
} from "./common.js"

type Check = (ctx: Context, logs: LogCapture) => Effect.Effect<Array<string>, unknown>

// ---------------------------------------------------------------------------------------------
// listening TCP sockets of this process, from /proc/net/tcp{,6}

const socketInodes = (): Set<string> => {
  const inodes = new Set<string>()
  for (const fd of fs.readdirSync("/proc/self/fd")) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/self/fd/${fd}`))
      if (m) inodes.add(m[1]!)
    } catch {
      // closed meanwhile
    }
  }
  return inodes
}

const decodeAddress = (hex: string, v6: boolean): string => {
  const [ip, port] = hex.split(":")
  const p = parseInt(port!, 16)
  if (!v6) {
    const bytes = ip!.match(/../g)!.map((b) => parseInt(b, 16)).reverse()
    return `${bytes.join(".")}:${p}`
  }
  // four little-endian 32-bit words
  const words = ip!.match(/.{8}/g)!.map((w) => w.match(/../g)!.reverse().join(""))
  const groups = words.join("").match(/.{4}/g)!.map((g) => g.replace(/^0+(?=.)/, ""))
  return `[${groups.join(":")}]:${p}`
}

/** "host:port" of every TCP socket this process listens on. */
const ourListeners = (): Array<string> => {
  const mine = socketInodes()
  const out: Array<string> = []
  for (const [file, v6] of [["/proc/net/tcp", false], ["/proc/net/tcp6", true]] as const) {
    let text = ""
    try {
      text = fs.readFileSync(file, "utf8")
    } catch {
      continue
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/)
      if (cols.length < 10 || cols[3] !== "0A") continue // 0A = LISTEN
      if (mine.has(cols[9]!)) out.push(decodeAddress(cols[1]!, v6))
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------

const modes: Check = (ctx) =>
  Effect.scoped(Effect.gen(function*() {
    const problems: Array<string> = []
    const vm = yield* QemuMachine.launch(noneConfig(ctx.base))
    const mode = (p: string) => (fs.statSync(p).mode & 0o777).toString(8)
    if (mode(vm.tempDir) !== "700") problems.push(`temp dir ${vm.tempDir} is ${mode(vm.tempDir)}`)
    if (mode(vm.sockDir) !== "700") problems.push(`socket dir ${vm.sockDir} is ${mode(vm.sockDir)}`)
    const log = path.join(vm.logDir, `${vm.name}.log`)
    if (fs.existsSync(log) && mode(log) !== "600") problems.push(`QEMU's log ${log} is ${mode(log)}`)
    return problems
  }))

/** Launches with a TCP monitor while QEMU waits 300 ms, and reports where we listened meanwhile. */
const tcp = (host: string | undefined, expected: string): Check => (ctx) =>
  Effect.scoped(Effect.gen(function*() {
    const problems: Array<string> = []
    const before = new Set(ourListeners())
    const seen = new Set<string>()
    const sampler = setInterval(() => {
      for (const l of ourListeners()) if (!before.has(l)) seen.add(l)
    }, 20)
    const vm = yield* QemuMachine.launch(
      noneConfig(ctx.base, {
        monitorAddress: host === undefined ? { port: 0 } : { host, port: 0 },
        wrapper: ["sh", "-c", 'sleep 0.3; exec "$@"', "sh"]
      })
    ).pipe(Effect.ensuring(Effect.sync(() => clearInterval(sampler))))
    const chardev = vm.args.find((a) => a.startsWith("socket,id=mon,"))
    if (!chardev?.includes(`host=${expected},`)) problems.push(`monitor chardev is ${chardev}, expected host=${expected}`)
    if (seen.size === 0) problems.push("no listening TCP socket seen while QEMU was held back")
    for (const l of seen) if (!l.startsWith(`${expected}:`)) problems.push(`listened on ${l}, expected ${expected}`)
    const status = yield* vm.command("query-status").pipe(Effect.exit)
    if (Exit.isFailure(status)) problems.push(`QMP over TCP failed: ${describeExit(status)}`)
    return problems
  }))

/** A monitor path of exactly `bytes` bytes (in a subdir of the base dir); a wrapper leaves a marker if it runs. */
const unixPath = (bytes: number, multibyte: boolean, accepted: boolean): Check => (ctx) =>
  Effect.gen(function*() {
    const problems: Array<string> = []
    const dir = fs.mkdtempSync(path.join(ctx.base, "u-"))
    const marker = path.join(dir, "spawned")
    const prefix = dir + "/"
    const room = bytes - Buffer.byteLength(prefix) - ".sock".length
    const filler = multibyte ? "é".repeat(Math.floor(room / 2)) + "x".repeat(room % 2) : "m".repeat(room)
    const sock = prefix + filler + ".sock"
    if (Buffer.byteLength(sock) !== bytes) problems.push(`test bug: ${Buffer.byteLength(sock)} bytes`)
    const exit = yield* Effect.scoped(
      Effect.flatMap(
        QemuMachine.launch(
          noneConfig(ctx.base, { monitorAddress: sock, wrapper: ["sh", "-c", 'touch "$0"; exec "$@"', marker] })
        ),
        (vm) => vm.command("query-status")
      )
    ).pipe(Effect.exit)
    if (accepted) {
      if (Exit.isFailure(exit)) problems.push(`a ${bytes}-byte path was refused: ${describeExit(exit)}`)
    } else {
      const e = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
      const failure = Option.getOrUndefined(e) as { _tag?: string; reason?: string; message?: string } | undefined
      if (failure?._tag !== "LaunchFailure" || failure.reason !== "InvalidConfig") {
        problems.push(`a ${bytes}-byte path gave ${describeExit(exit)}, not LaunchFailure(InvalidConfig)`)
      } else if (!failure.message?.includes("107")) problems.push(`the message does not say why: ${failure.message}`)
      if (fs.existsSync(marker)) problems.push(`QEMU (its wrapper) was spawned for a ${bytes}-byte path`)
    }
    if (fs.existsSync(sock)) problems.push(`socket file left: ${sock}`)
    fs.rmSync(dir, { recursive: true, force: true })
    return problems
  })

/** A console socket path over the limit (through a long machine name) is refused before spawning too. */
const consolePath: Check = (ctx) =>
  Effect.gen(function*() {
    const marker = path.join(ctx.base, "console-spawned")
    const exit = yield* Effect.scoped(
      QemuMachine.launch(
        noneConfig(ctx.base, { name: "n".repeat(100), wrapper: ["sh", "-c", 'touch "$0"; exec "$@"', marker] }).pipe(
          QemuMachine.setConsole()
        )
      )
    ).pipe(Effect.exit)
    const problems: Array<string> = []
    const failure = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
    if ((failure as { reason?: string } | undefined)?.reason !== "InvalidConfig") {
      problems.push(`an over-long console path gave ${describeExit(exit)}`)
    }
    if (fs.existsSync(marker)) problems.push("spawned although the console path is too long")
    fs.rmSync(marker, { force: true })
    return problems
  })

// ---------------------------------------------------------------------------------------------
// secrets

const SECRETS = ["S3cr3t-Cmdline-Keyval", "S3cr3t-Cmdline-Json", "S3cr3t-Qmp-Object", "S3cr3t-Launch-Fail", "S3cr3t-Iscsi-Pw"]

const leaked = (where: string, text: string): Array<string> =>
  SECRETS.filter((s) => text.includes(s)).map((s) => `${s} appears in ${where}: …${text.slice(Math.max(0, text.indexOf(s) - 80), text.indexOf(s) + 30)}…`)

const errorTexts = (e: unknown): string => {
  let json = ""
  try {
    json = JSON.stringify(e)
  } catch {
    // circular causes
  }
  return `${String(e)}\n${(e as { message?: string }).message}\n${json}`
}

const secretArgs = [
  "-object", `secret,id=sec0,data=${SECRETS[0]}`,
  "-object", `{"qom-type":"secret","id":"sec1","data":"${SECRETS[1]}"}`
]

/** Secrets on a command line that launches, in commands that fail, a timeout, and a foreign kill. */
const secretsRunning: Check = (ctx, logs) =>
  Effect.scoped(Effect.gen(function*() {
    const problems: Array<string> = []
    const from = logs.messages.length
    const vm = yield* QemuMachine.launch(noneConfig(ctx.base, { args: secretArgs }))
    const add = { "qom-type": "secret", id: "sec2", data: SECRETS[2] }
    // Untyped on purpose: some of these arguments are wrong, and QEMU must be the one to say so.
    const objectAdd = "object-add" as string
    yield* vm.command(objectAdd, add)
    // Failing commands that carried the secret: duplicate id, bad base64, unknown parameter.
    const failing = [
      add,
      { "qom-type": "secret", id: "sec3", data: SECRETS[2], format: "base64" },
      { "qom-type": "secret", id: "sec4", data: SECRETS[2], bogus: 1 }
    ]
    for (const args of failing) {
      const e = yield* Effect.flip(vm.command(objectAdd, args))
      if (e._tag !== "QmpCommandError") problems.push(`object-add gave ${e._tag}`)
      problems.push(...leaked("a QmpCommandError", errorTexts(e)))
    }
    // A timeout of a command carrying a secret.
    const client = Option.getOrThrow(vm.qmpClient)
    const pid = Option.getOrThrow(yield* vm.pid)
    process.kill(pid, "SIGSTOP")
    const timeout = yield* Effect.flip(client.execute(objectAdd, { ...add, id: "sec5" }, { timeout: "50 millis" }))
    process.kill(pid, "SIGCONT")
    problems.push(...leaked("a QmpTimeoutError", errorTexts(timeout)))
    // A foreign SIGKILL makes the machine log a warning with the command line.
    process.kill(pid, "SIGKILL")
    yield* vm.shutdown().pipe(Effect.ignore)
    const logged = logs.messages.slice(from).join("\n")
    if (!logged.includes("launching")) problems.push("the Debug log of the launch was not captured")
    if (!logged.includes("received signal")) problems.push("the warning about the foreign SIGKILL was not captured")
    problems.push(...leaked("the logs", logged))
    return problems
  }))

/** Secrets on a command line QEMU rejects: LaunchFailure, its output (QEMU echoes the option) and the logs. */
const secretsLaunchFailure: Check = (ctx, logs) =>
  Effect.gen(function*() {
    const problems: Array<string> = []
    const from = logs.messages.length
    const e = yield* Effect.flip(Effect.scoped(QemuMachine.launch(
      noneConfig(ctx.base, {
        args: [...secretArgs, "-iscsi", `user=u,password=${SECRETS[4]}`, "-object", `secret,id=bad,data=${SECRETS[3]},bogus=1`]
      })
    )))
    if (e._tag !== "LaunchFailure") problems.push(`expected LaunchFailure, got ${e._tag}`)
    if (!e.output.includes("bogus")) problems.push(`QEMU's complaint is missing from the output: ${e.output}`)
    if (!e.message.includes("data=***")) problems.push("the masked option is not in the message")
    problems.push(...leaked("a LaunchFailure", errorTexts(e) + e.command.join(" ") + e.output))
    problems.push(...leaked("the logs", logs.messages.slice(from).join("\n")))
    return problems
  })

// ---------------------------------------------------------------------------------------------

const checks: ReadonlyArray<readonly [string, Check]> = [
  ["temp dir 0700, log 0600", modes],
  ["TCP monitor defaults to loopback", tcp(undefined, "127.0.0.1")],
  ["TCP monitor on a host the user names", tcp("0.0.0.0", "0.0.0.0")],
  ["unix path of 107 bytes accepted", unixPath(107, false, true)],
  ["unix path of 108 bytes refused before spawning", unixPath(108, false, false)],
  ["unix path of 108 bytes (multi-byte chars) refused", unixPath(108, true, false)],
  ["console path over 107 bytes refused before spawning", consolePath],
  ["secrets kept out of logs and command/timeout errors", secretsRunning],
  ["secrets kept out of LaunchFailure and its output", secretsLaunchFailure]
]

export const security = async (ctx: Context): Promise<CaseResult> => {
  const result = newResult("security (modes, bind address, paths, secrets)")
  const logs = captureLogs(5000)
  for (const [name, check] of checks) {
    const baseline = await takeBaseline()
    const tracker = newTracker()
    result.tried++
    const exit = await run(check(ctx, logs).pipe(bounded(name, 30_000)), logs, tracker)
    const problems = Exit.isSuccess(exit) ? exit.value : [describeExit(exit)]
    const leaks = await leaksAfter(ctx.base, baseline, tracker)
    if (leaks.length > 0) {
      result.leaked++
      fail(result, `${name}: leaked ${leaks.join("; ")}`)
    }
    if (problems.length === 0) {
      result.survived++
      ctx.say(`  ok   ${name}`)
    } else {
      ctx.say(`  FAIL ${name}`)
      fail(result, `${name}: ${problems.join("; ")}`)
    }
  }
  return result
}
