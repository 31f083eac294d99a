/**
 * The library side of each measurement, through the public API only
 * (`QemuMachine.launch`, `vm.command`, `vm.qmp`, `QmpClient.subscribe`, `ConsoleSocket`).
 * Every timing is taken inside the Effect, around exactly the work measured.
 */
import { Deferred, Duration, Effect, ExecutionStrategy, Exit, Fiber, Option, Scope, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { QemuMachine as QemuMachineTypes } from "../src/index.js"
import { ConsoleSocket, Guest, QemuMachine } from "./lib.js"
import { QEMU, stopCont } from "./raw.js"
import { now } from "./stats.js"

/** Temp dirs the library created, checked for leftovers at the end. */
export const tempDirs = new Set<string>()

export const config = (...extraArgs: ReadonlyArray<string>): QemuMachineTypes.Config =>
  QemuMachine.make({ binary: QEMU }).pipe(QemuMachine.setMachine("none"), QemuMachine.addArgs(...extraArgs))

const launchTracked = (cfg: QemuMachineTypes.Config) =>
  Effect.tap(QemuMachine.launch(cfg), (vm) => Effect.sync(() => tempDirs.add(vm.tempDir)))

/** spawn → QMP negotiated; the shutdown that follows is not timed. */
export const launchToReady: Effect.Effect<number, unknown> = Effect.scoped(
  Effect.gen(function*() {
    const t0 = now()
    yield* launchTracked(config())
    return now() - t0
  })
)

/** launch → quit → exit → files removed (the scope's close does the last three). */
export const lifecycle: Effect.Effect<number, unknown> = Effect.gen(function*() {
  const t0 = now()
  yield* Effect.scoped(launchTracked(config()))
  return now() - t0
})

/** A machine that lives until `close` is run (for the measurements that reuse one). */
export const openMachine = (cfg: QemuMachineTypes.Config = config()) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const vm = yield* launchTracked(cfg).pipe(Scope.extend(scope))
    return { vm, close: Scope.close(scope, Exit.void) }
  })

/** `n` sequential calls of `call`; per-call latencies and the total. */
const timedTrips = (call: () => Effect.Effect<unknown, unknown>, n: number) =>
  Effect.gen(function*() {
    const latencies = new Float64Array(n)
    const t0 = now()
    for (let i = 0; i < n; i++) {
      const a = now()
      yield* call()
      latencies[i] = now() - a
    }
    return { total: now() - t0, latencies }
  })

/** `n` sequential `query-status` round trips, typed (the reply checked against its Schema). */
export const roundTrips = (vm: QemuMachineTypes.Machine, n: number) => timedTrips(() => vm.command("query-status"), n)

/** `n` sequential `query-status` round trips on the untyped path: `vm.qmp` returns the response as it came. */
export const untypedRoundTrips = (vm: QemuMachineTypes.Machine, n: number) => timedTrips(() => vm.qmp("query-status"), n)

const hundred = Array.from({ length: 100 }, (_, i) => i)

/** 100 `query-status` commands, all in flight at once or one after the other. */
export const batch = (vm: QemuMachineTypes.Machine, concurrent: boolean) =>
  Effect.gen(function*() {
    const t0 = now()
    yield* Effect.forEach(hundred, () => vm.command("query-status"), {
      concurrency: concurrent ? "unbounded" : 1,
      discard: true
    })
    return now() - t0
  })

/**
 * `pairs` stop/cont pairs, all issued at once (in order); time from the first
 * command until a stream consumer has counted `2 × pairs` events. The commands go
 * as one batch (`vm.commandAll`: written at once, one Effect step for the lot), as
 * the raw client writes them; `perFiber` issues them as `Effect.forEach` over
 * `vm.command` with unbounded concurrency instead, a fiber per command.
 */
export const eventThroughput = (vm: QemuMachineTypes.Machine, pairs: number, perFiber = false) =>
  Effect.scoped(
    Effect.gen(function*() {
      const client = Option.getOrThrow(vm.qmpClient)
      const expected = pairs * 2
      const commands = stopCont(pairs)
      const calls = commands.map((c) => [c] as const)
      // Subscribed before the first command, so no event can be missed.
      const events = yield* client.subscribe
      const t0 = now()
      const counter = yield* events.pipe(Stream.take(expected), Stream.runCount, Effect.fork)
      const issued = yield* Effect.fork(
        perFiber
          ? Effect.forEach(commands, (c) => vm.command(c), { concurrency: "unbounded", discard: true })
          : Effect.asVoid(vm.commandAll(calls))
      )
      const count = yield* Fiber.join(counter)
      const elapsed = now() - t0
      yield* Fiber.join(issued)
      yield* client.clearEvents
      if (count !== expected) return yield* Effect.dieMessage(`counted ${count} events, expected ${expected}`)
      return elapsed
    })
  ).pipe(Effect.timeout("60 seconds"))

/**
 * Console latency through QEMU: an HMP monitor on a socket chardev echoes every
 * byte written to it. Write one byte, then time until `expect` returns it, or
 * until a `stream` consumer sees it.
 */
export const consoleLatency = (path: string, samples: number) =>
  Effect.scoped(
    Effect.gen(function*() {
      const console = yield* ConsoleSocket.connect(path)
      yield* console.expect("(qemu) ", { timeout: "10 seconds" })
      // Digits: "\r" then runs the line as an HMP command, and no HMP command is a digit ("q" would quit).
      const letter = (i: number) => String(i % 10)
      // Clears the HMP line after each echo (untimed): the line stays one byte long.
      const reset = Effect.zipRight(console.write("\r"), console.expect("(qemu) ", { timeout: "10 seconds" }))

      const viaExpect = new Float64Array(samples)
      for (let i = 0; i < samples; i++) {
        const t0 = now()
        yield* console.write(letter(i))
        yield* console.expect(letter(i), { timeout: "10 seconds" })
        viaExpect[i] = now() - t0
        yield* reset
      }

      // A stream consumer stamps the time at which the awaited byte reaches it.
      let awaited: { letter: string; done: Deferred.Deferred<number> } | undefined
      const consumer = yield* console.stream.pipe(
        Stream.runForEach((chunk) =>
          Effect.suspend(() => {
            const at = now()
            if (awaited && Buffer.from(chunk).toString("latin1").includes(awaited.letter)) {
              return Deferred.succeed(awaited.done, at)
            }
            return Effect.void
          })
        ),
        Effect.forkScoped
      )
      // Let the consumer subscribe before the first write.
      yield* Effect.sleep("10 millis")
      const viaStream = new Float64Array(samples)
      for (let i = 0; i < samples; i++) {
        const done = yield* Deferred.make<number>()
        awaited = { letter: letter(i), done }
        const t0 = now()
        yield* console.write(letter(i))
        viaStream[i] = (yield* Deferred.await(done).pipe(Effect.timeout("10 seconds"))) - t0
        yield* reset
      }
      yield* Fiber.interrupt(consumer)
      return { viaExpect, viaStream }
    })
  )

/** The consumer path alone: a local unix socket pair, a raw writer on one end, ConsoleSocket on the other. */
export const consoleLocal = (client: import("node:net").Socket, writer: import("node:net").Socket, samples: number) =>
  Effect.scoped(
    Effect.gen(function*() {
      const console = yield* ConsoleSocket.fromSocket(client)
      const out = new Float64Array(samples)
      for (let i = 0; i < samples; i++) {
        const letter = String.fromCharCode(97 + (i % 26))
        const t0 = now()
        writer.write(letter)
        yield* console.expect(letter, { timeout: "10 seconds" })
        out[i] = now() - t0
      }
      return out
    })
  )

/** Descriptors open in this process (Linux). */
export const openFds = (): number => fs.readdirSync("/proc/self/fd").length - 1

/**
 * `count` machines launched concurrently, then `commands` sequential
 * `query-status` on each (all machines at once), then all closed at once.
 * Wall time of each phase; RSS, heap and descriptors held while they run.
 * The scope closes its machines in parallel, as the raw side's `Promise.all`
 * does (a default `Scope.make()` closes them one after the other).
 */
export const concurrentLaunch = (count: number, commands: number, gc: () => void) =>
  Effect.gen(function*() {
    gc()
    const before = process.memoryUsage()
    const fdsBefore = openFds()
    const scope = yield* Scope.make(ExecutionStrategy.parallel)
    const t0 = now()
    const vms = yield* Effect.forEach(
      Array.from({ length: count }, () => config()),
      (cfg) => launchTracked(cfg).pipe(Scope.extend(scope)),
      { concurrency: "unbounded" }
    ).pipe(Effect.onError(() => Scope.close(scope, Exit.void)))
    const wall = now() - t0
    const t1 = now()
    const cpu1 = process.cpuUsage()
    // Not even one command when `commands` is 0, as the baseline (repeatN(_, -1) would run one)
    const drive = (vm: QemuMachineTypes.Machine) =>
      commands > 0 ? Effect.repeatN(vm.command("query-status"), commands - 1) : Effect.void
    yield* Effect.forEach(vms, drive, {
      concurrency: "unbounded",
      discard: true
    }).pipe(Effect.onError(() => Scope.close(scope, Exit.void)))
    const commandsMs = commands > 0 ? now() - t1 : 0
    const cpu = process.cpuUsage(cpu1)
    gc()
    const after = process.memoryUsage()
    const fds = openFds() - fdsBefore
    const t2 = now()
    yield* Scope.close(scope, Exit.void)
    return {
      wall,
      commands: commandsMs,
      // this process's CPU (µs, user and system) while the commands ran
      commandsCpu: commands > 0 ? cpu.user + cpu.system : 0,
      rssDelta: after.rss - before.rss,
      heapDelta: after.heapUsed - before.heapUsed,
      fdsDelta: fds,
      close: now() - t2
    }
  })

/** The last non-empty lines of a guest's console log (why a guest that failed to boot failed). */
const consoleTail = (file: string, lines = 8): string => {
  try {
    const text = fs.readFileSync(file, "utf8").replace(/\u001b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r/g, "")
    return text.split("\n").filter((l) => l.trim() !== "").slice(-lines).join(" | ")
  } catch (e) {
    return `no console log (${String(e)})`
  }
}

/**
 * `count` test guests booted at once (TCG) to the shell prompt; RSS of this process while they run.
 * A guest that fails to boot is counted and its error kept with the tail of its console log, so one
 * failure does not hide the others' figures.
 */
export const guestsBoot = (count: number, gc: () => void) =>
  Effect.gen(function*() {
    // Build (or find) the guest first, so the memory measured is the guests' and not the first use of the module.
    yield* Guest.build()
    const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "eq-bench-guests-"))
    tempDirs.add(logDir)
    // V8's memory reducer hands start-up garbage back to the OS ~8 s after start (measured: RSS 222 → 194 MB
    // in an idle bench process): take the baseline after it, or it hides the guests' memory.
    gc()
    yield* Effect.sleep("10 seconds")
    gc()
    const before = process.memoryUsage()
    const scope = yield* Scope.make(ExecutionStrategy.parallel)
    const t0 = now()
    const outcomes = yield* Effect.forEach(
      Array.from({ length: count }, (_, i) => i),
      (i) => {
        const consoleLog = path.join(logDir, `guest-${i}.log`)
        return Guest.launch({ bootTimeout: "10 minutes", consoleLog }).pipe(
          Scope.extend(scope),
          Effect.tap((g) => Effect.sync(() => tempDirs.add(g.vm.tempDir))),
          Effect.map((g) => ({ atPrompt: now() - t0, bootMs: Duration.toMillis(g.bootTime) })),
          Effect.mapError((e) => `${String((e as { message?: string }).message ?? e)}; console: ${consoleTail(consoleLog)}`),
          Effect.either
        )
      },
      { concurrency: "unbounded" }
    ).pipe(Effect.onInterrupt(() => Scope.close(scope, Exit.void)))
    const wall = now() - t0
    gc()
    gc()
    const after = process.memoryUsage()
    const booted = outcomes.flatMap((o) => o._tag === "Right" ? [o.right] : [])
    const failures = outcomes.flatMap((o) => o._tag === "Left" ? [o.left] : [])
    const t1 = now()
    yield* Scope.close(scope, Exit.void)
    const close = now() - t1
    fs.rmSync(logDir, { recursive: true, force: true })
    gc()
    gc()
    const closed = process.memoryUsage()
    return {
      wall,
      booted: booted.length,
      atPrompt: booted.map((b) => b.atPrompt),
      bootMs: booted.map((b) => b.bootMs),
      failures,
      rssDelta: after.rss - before.rss,
      heapDelta: after.heapUsed - before.heapUsed,
      // What closing gave back: the start-up garbage V8 returns meanwhile cannot hide it.
      rssHeld: after.rss - closed.rss,
      heapHeld: after.heapUsed - closed.heapUsed,
      close
    }
  })
