/**
 * `npm run bench`: the library against a raw baseline (bare node:child_process,
 * node:net and JSON.parse) in the same process run, interleaved so that machine
 * noise hits both alike. Prints a table and writes bench/results.json.
 *
 *   --quick        a few iterations of everything, no pass/fail, no results.json (CI smoke)
 *   --only=a,b     run only these metrics (launch, lifecycle, roundtrips, typed-roundtrips, inflight, events, console, concurrent, many,
 *                  guest-agent, clones)
 *   --merge        with --only: write the rows measured into results.json, replacing those of the same id (the rest kept)
 *   --guests       also boot 32 real test guests at once (TCG; minutes, needs `npm run guest`);
 *                  `--only=guests` runs that row alone
 *   --strict       exit 1 when a target is missed
 *   --load=N       N busy processes (one spinning core each) run beside the whole measurement, so
 *                  library and baseline share a loaded machine alike; a full run writes
 *                  bench/results-load-N.json instead of results.json
 */
import { Effect, Fiber } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import * as Lib from "./library.js"
import * as Raw from "./raw.js"
import { fmtMs, fmtRate, fmtUs, now, summarize } from "./stats.js"

const benchDir = import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname)
const argv = process.argv.slice(2)
const quick = argv.includes("--quick")
const strict = argv.includes("--strict")
const only = argv.find((a) => a.startsWith("--only="))?.slice("--only=".length).split(",")
const guests = argv.includes("--guests") || (only?.includes("guests") ?? false)
const enabled = (metric: string) => only === undefined || only.includes(metric)
const merge = argv.includes("--merge")
const load = Number(argv.find((a) => a.startsWith("--load="))?.slice("--load=".length) ?? 0)
if (!Number.isInteger(load) || load < 0 || load > 64) {
  process.stderr.write(`--load takes a number of busy processes from 0 to 64\n`)
  process.exit(2)
}

const plan = quick
  ? { warmup: 1, launch: 3, lifecycle: 3, rtRounds: 1, rtOps: 300, rtWarm: 50, inflight: 3, evWarm: 1, evRounds: 1, evPairs: 50, conRounds: 1, conSamples: 20, localSamples: 50, concRounds: 1, concCount: 32, manyRounds: 1, manyCount: 16, manyCommands: 10, guestCount: 2 }
  : { warmup: 5, launch: 150, lifecycle: 150, rtRounds: 7, rtOps: 10_000, rtWarm: 2_000, inflight: 80, evWarm: 3, evRounds: 9, evPairs: 1_000, conRounds: 6, conSamples: 200, localSamples: 4_000, concRounds: 6, concCount: 32, manyRounds: 5, manyCount: 256, manyCommands: 100, guestCount: 32 }

/** Rounds the launch-type samples are cut into for the spread of the ratio. */
const SPREAD_ROUNDS = 5

v8.setFlagsFromString("--expose-gc")
/** A full GC before each sample of the allocation-heavy metrics: the heap left by earlier metrics must not tax one side. */
const gc = vm.runInNewContext("gc") as () => void


/** Library effects in flight and machines kept open across runs, so that Ctrl-C can close them. */
const running = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
const openMachines = new Set<Effect.Effect<void>>()

const run = <A>(effect: Effect.Effect<A, unknown>): Promise<A> => {
  const fiber = Effect.runFork(effect)
  running.add(fiber)
  return Effect.runPromise(Fiber.join(fiber)).finally(() => running.delete(fiber))
}

const openMachine = async (config?: Parameters<typeof Lib.openMachine>[0]) => {
  const machine = await run(Lib.openMachine(config))
  openMachines.add(machine.close)
  return {
    vm: machine.vm,
    close: () => {
      openMachines.delete(machine.close)
      return run(machine.close)
    }
  }
}

/**
 * `--load=N`: N processes spinning on a core each, started before the first
 * measurement and stopped after the last. They are plain `sh` loops (no
 * Node start-up cost to skew the first rows), nice 0 like us, in their own
 * session so the kernel's autogroup scheduler treats them as other users'
 * work, which is what a shared CI machine looks like.
 */
const spinners: Array<cp.ChildProcess> = []
const startLoad = () => {
  for (let i = 0; i < load; i++) {
    spinners.push(cp.spawn("sh", ["-c", "while :; do :; done"], { stdio: "ignore", detached: true }))
  }
}
const stopLoad = () => {
  for (const child of spinners.splice(0)) {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL")
    } catch {
      // gone already
    }
  }
}

// Leave nothing behind, even on Ctrl-C or a crash: library scopes are closed (interrupting what
// runs), raw QEMUs are killed; a library QEMU that outlives us dies by PDEATHSIG.
const cleanUp = () => {
  stopLoad()
  Raw.killAll()
  for (const dir of Lib.tempDirs) fs.rmSync(dir, { recursive: true, force: true })
}
process.on("exit", cleanUp)
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    log(`${signal}: closing every machine`)
    const closeAll = Effect.zipRight(
      Effect.forEach(running, Fiber.interrupt, { discard: true }),
      Effect.forEach(openMachines, (close) => close, { discard: true })
    )
    Effect.runPromise(Effect.timeout(closeAll, "20 seconds")).finally(() => process.exit(130))
  })
}

interface Row {
  readonly id: string
  readonly metric: string
  readonly library: string
  readonly baseline: string
  readonly ratio: number
  readonly ratioText: string
  readonly target: string
  readonly pass: boolean | undefined
  readonly data: Record<string, unknown>
}
const rows: Array<Row> = []
const log = (message: string) => process.stderr.write(`${message}\n`)

/** Runs `lib` and `raw` alternately (which goes first alternates too), after `warmup` unrecorded pairs. */
const interleave = async <L, R>(
  count: number,
  warmup: number,
  lib: () => Promise<L>,
  raw: () => Promise<R>
): Promise<{ lib: Array<L>; raw: Array<R> }> => {
  const out = { lib: [] as Array<L>, raw: [] as Array<R> }
  for (let i = 0; i < warmup + count; i++) {
    const record = i >= warmup
    if (i % 2 === 0) {
      const l = await lib()
      const r = await raw()
      if (record) out.lib.push(l), out.raw.push(r)
    } else {
      const r = await raw()
      const l = await lib()
      if (record) out.lib.push(l), out.raw.push(r)
    }
  }
  return out
}

/** Like `interleave`, for any number of variants; the order rotates every round. */
const interleaveMany = async <A>(count: number, warmup: number, fns: ReadonlyArray<() => Promise<A>>): Promise<Array<Array<A>>> => {
  const out = fns.map(() => [] as Array<A>)
  for (let i = 0; i < warmup + count; i++) {
    for (let j = 0; j < fns.length; j++) {
      const k = (i + j) % fns.length
      const value = await fns[k]!()
      if (i >= warmup) out[k]!.push(value)
    }
  }
  return out
}

/** Informational figures printed under the table (not targets). */
const notes: Array<string> = []

/** Median of a plain array. */
const med = (xs: ReadonlyArray<number>) => summarize(xs).median

/** The smallest and largest of per-round ratios, as text next to a ratio. */
const spreadText = (ratios: ReadonlyArray<number>, digits = 2) =>
  ratios.length < 2 ? "" : ` (rounds ${Math.min(...ratios).toFixed(digits)}–${Math.max(...ratios).toFixed(digits)})`

/** Per-round ratios of medians when paired samples are cut into `rounds` consecutive rounds. */
const roundRatios = (lib: ReadonlyArray<number>, raw: ReadonlyArray<number>, rounds: number): Array<number> => {
  const size = Math.max(1, Math.floor(lib.length / rounds))
  const out: Array<number> = []
  for (let i = 0; i + size <= lib.length; i += size) out.push(med(lib.slice(i, i + size)) / med(raw.slice(i, i + size)))
  return out
}

const timeRow = (id: string, metric: string, lib: ReadonlyArray<number>, raw: ReadonlyArray<number>, max: number, rounds = SPREAD_ROUNDS): Row => {
  const l = summarize(lib)
  const b = summarize(raw)
  const ratio = l.median / b.median
  const perRound = roundRatios(lib, raw, rounds)
  return {
    id,
    metric,
    library: `${fmtMs(l.median)} (p95 ${fmtMs(l.p95)})`,
    baseline: `${fmtMs(b.median)} (p95 ${fmtMs(b.p95)})`,
    ratio,
    ratioText: `${ratio.toFixed(3)}×${spreadText(perRound)}`,
    target: `≤ ${max.toFixed(2)}× raw`,
    pass: ratio <= max,
    data: { library: l, baseline: b, unit: "ms", roundRatios: perRound }
  }
}

// --- the measurements --------------------------------------------------------------------------------

const rawLaunchTimed = (dieWithParent: boolean) => async () => {
  const t0 = now()
  const machine = await Raw.launch([], { dieWithParent })
  const elapsed = now() - t0
  await Raw.shutdown(machine)
  return elapsed
}

const rawLifecycleTimed = (dieWithParent: boolean) => async () => {
  const t0 = now()
  await Raw.shutdown(await Raw.launch([], { dieWithParent }))
  return now() - t0
}

const benchLaunch = async () => {
  log(`launch-to-ready: ${plan.launch} rounds`)
  const [lib, raw, rawSetpriv] = await interleaveMany(plan.launch, plan.warmup, [
    () => run(Lib.launchToReady),
    rawLaunchTimed(false),
    rawLaunchTimed(true)
  ])
  const row = timeRow("launch", "launch-to-ready (-machine none)", lib!, raw!, 1.05)
  const withSetpriv = summarize(rawSetpriv!)
  rows.push({ ...row, data: { ...row.data, baselineWithSetpriv: withSetpriv } })
  notes.push(`launch: raw behind the library's parent-death exec helper ${fmtMs(withSetpriv.median)}; library / that = ${(summarize(lib!).median / withSetpriv.median).toFixed(3)}×`)
}

const benchLifecycle = async () => {
  log(`full lifecycle: ${plan.lifecycle} rounds`)
  const [lib, raw, rawSetpriv] = await interleaveMany(plan.lifecycle, plan.warmup, [
    () => run(Lib.lifecycle),
    rawLifecycleTimed(false),
    rawLifecycleTimed(true)
  ])
  const row = timeRow("lifecycle", "full lifecycle (launch→quit→exit→rm)", lib!, raw!, 1.05)
  const withSetpriv = summarize(rawSetpriv!)
  rows.push({ ...row, data: { ...row.data, baselineWithSetpriv: withSetpriv } })
  notes.push(`lifecycle: raw behind the exec helper ${fmtMs(withSetpriv.median)}; library / that = ${(summarize(lib!).median / withSetpriv.median).toFixed(3)}×`)
}

/** Sequential round trips: per-trip latencies and the total. */
interface Trips {
  readonly total: number
  readonly latencies: Float64Array
}

/** `plan.rtRounds` runs of `plan.rtOps` round trips per side, each run interleaved in blocks so that noise hits both alike. */
const interleavedTrips = async (lib: (n: number) => Promise<Trips>, baseline: (n: number) => Promise<Trips>) => {
  const block = Math.min(1_000, plan.rtOps)
  const blocks = Math.ceil(plan.rtOps / block)
  const joined = (xs: Array<Trips>): Trips => ({
    total: xs.reduce((t, x) => t + x.total, 0),
    latencies: concat(xs.map((x) => x.latencies))
  })
  const r = { lib: [] as Array<Trips>, raw: [] as Array<Trips> }
  for (let round = 0; round < plan.rtRounds; round++) {
    const [l, b] = await interleaveMany<Trips>(blocks, 0, [() => lib(block), () => baseline(block)])
    r.lib.push(joined(l!))
    r.raw.push(joined(b!))
  }
  return r
}

/** A round-trip row: the median run's rate, latencies over every trip, the spread of the per-run ratio. */
const tripsRow = (id: string, metric: string, r: { lib: Array<Trips>; raw: Array<Trips> }, min: number, against: string): Row => {
  const rate = (x: Trips) => (x.latencies.length / x.total) * 1000
  const libRate = summarize(r.lib.map(rate))
  const rawRate = summarize(r.raw.map(rate))
  const libLat = summarize(concat(r.lib.map((x) => x.latencies)))
  const rawLat = summarize(concat(r.raw.map((x) => x.latencies)))
  const ratio = libRate.median / rawRate.median
  const perRound = r.lib.map((x, i) => rate(x) / rate(r.raw[i]!))
  return {
    id,
    metric,
    library: `${fmtRate(libRate.median)} (p50 ${fmtUs(libLat.median)}, p95 ${fmtUs(libLat.p95)})`,
    baseline: `${fmtRate(rawRate.median)} (p50 ${fmtUs(rawLat.median)}, p95 ${fmtUs(rawLat.p95)})`,
    ratio,
    ratioText: `${ratio.toFixed(3)}×${spreadText(perRound)}`,
    target: `≥ ${min.toFixed(2)}× ${against}`,
    pass: ratio >= min,
    data: { libraryRate: libRate, baselineRate: rawRate, libraryLatencyMs: libLat, baselineLatencyMs: rawLat, unit: "round trips/s", roundRatios: perRound }
  }
}

/** The measurements that reuse one machine per side. */
const benchOnOneMachine = async () => {
  const lib = await openMachine()
  const raw = await Raw.launch()
  try {
    if (enabled("roundtrips")) {
      log(`sequential query-status: ${plan.rtRounds} rounds of ${plan.rtOps}`)
      await run(Lib.roundTrips(lib.vm, plan.rtWarm))
      await Raw.roundTrips(raw, plan.rtWarm)
      const r = await interleavedTrips((n) => run(Lib.roundTrips(lib.vm, n)), (n) => Raw.roundTrips(raw, n))
      rows.push(tripsRow("roundtrips", `sequential query-status (${plan.rtOps.toLocaleString("en")} round trips)`, r, 0.93, "raw rate"))
    }

    if (enabled("typed-roundtrips")) {
      // Both sides on the library's machine: what differs is the typed path (unwrap, result Schema check).
      log(`typed vs untyped query-status: ${plan.rtRounds} rounds of ${plan.rtOps}`)
      await run(Lib.roundTrips(lib.vm, plan.rtWarm))
      await run(Lib.untypedRoundTrips(lib.vm, plan.rtWarm))
      const r = await interleavedTrips((n) => run(Lib.roundTrips(lib.vm, n)), (n) => run(Lib.untypedRoundTrips(lib.vm, n)))
      rows.push(tripsRow("typed-roundtrips", `typed round trips: vm.command vs vm.qmp ("query-status", ${plan.rtOps.toLocaleString("en")})`, r, 0.95, "untyped rate"))
    }

    if (enabled("inflight")) {
      log(`100 in flight: ${plan.inflight} rounds`)
      const r = await interleave(plan.inflight, plan.warmup, () => run(Lib.batch(lib.vm, true)), () => run(Lib.batch(lib.vm, false)))
      const concurrent = summarize(r.lib)
      const sequential = summarize(r.raw)
      const pipelined: Array<number> = []
      for (let i = 0; i < plan.warmup + plan.inflight; i++) {
        const ms = await Raw.batch(raw)
        if (i >= plan.warmup) pipelined.push(ms)
      }
      const rawPipelined = summarize(pipelined)
      const ratio = sequential.median / concurrent.median
      const perRound = roundRatios(r.raw, r.lib, SPREAD_ROUNDS)
      notes.push(`100 in flight: raw, 100 written at once ${fmtMs(rawPipelined.median)} (both sides enable QMP's oob capability, so QEMU reads up to 8 commands ahead of the one it runs)`)
      rows.push({
        id: "inflight",
        metric: "100 commands in flight (vs 100 sequential)",
        library: `${fmtMs(concurrent.median)} (p95 ${fmtMs(concurrent.p95)})`,
        baseline: `${fmtMs(sequential.median)} seq (p95 ${fmtMs(sequential.p95)})`,
        ratio,
        ratioText: `${ratio.toFixed(2)}×${spreadText(perRound)}`,
        target: "≥ 1.0× library sequential",
        pass: ratio >= 1,
        data: { concurrent, sequential, rawPipelined, unit: "ms per 100 commands", roundRatios: perRound }
      })
    }

  } finally {
    await lib.close()
    await Raw.shutdown(raw)
  }
}

/**
 * Events on machines of their own, launched fresh for this metric on both
 * sides: what ran before (hundreds of thousands of commands on the shared
 * machines) must not decide the verdict, so `--only=events` and the full run agree.
 */
const benchEvents = async () => {
  const lib = await openMachine()
  const raw = await Raw.launch()
  try {
    const expected = plan.evPairs * 2
    log(`event throughput: ${plan.evRounds} rounds of ${expected} events`)
    // The same warm-up and a full GC before every sample whatever ran before, so that
    // `--only=events` and the full run measure the same thing; and this process's CPU per
    // event, per sample (the last `evRounds` are the recorded ones).
    const cpu = { lib: [] as Array<number>, raw: [] as Array<number>, perFiber: [] as Array<number>, effect: [] as Array<number> }
    const withCpu = <A>(into: Array<number>, sample: () => Promise<A>) => async () => {
      gc()
      const before = process.cpuUsage()
      const value = await sample()
      const used = process.cpuUsage(before)
      into.push((used.user + used.system) / expected)
      return value
    }
    const r = await interleave(
      plan.evRounds,
      plan.evWarm,
      withCpu(cpu.lib, () => run(Lib.eventThroughput(lib.vm, plan.evPairs))),
      withCpu(cpu.raw, () => Raw.eventThroughput(raw, plan.evPairs))
    )
    const rate = (ms: number) => (expected / ms) * 1000
    const libRate = summarize(r.lib.map(rate))
    const rawRate = summarize(r.raw.map(rate))
    const ratio = libRate.median / rawRate.median
    const perRound = r.lib.map((ms, i) => r.raw[i]! / ms)
    // In rounds of their own after the interleaved ones, so the row's method is unchanged: the
    // library with a fiber per command (`Effect.forEach` unbounded over `vm.command`, this row's
    // method until the batch API), and the raw client driven in that same pattern (a fiber per
    // command, a Mailbox stream), which runs none of the library's code: how much of the
    // per-fiber gap is the pattern's in Effect, how much the library's own.
    if (!quick) {
      const rounds = async (sample: () => Promise<number>) => {
        const out: Array<number> = []
        for (let i = 0; i < plan.evWarm + plan.evRounds; i++) out.push(await sample())
        return med(out.slice(-plan.evRounds))
      }
      const perFiber = await rounds(withCpu(cpu.perFiber, () => run(Lib.eventThroughput(lib.vm, plan.evPairs, true))))
      const viaEffect = await rounds(withCpu(cpu.effect, () => run(Raw.eventThroughputFromEffect(raw, plan.evPairs))))
      const recorded = (xs: Array<number>) => med(xs.slice(-plan.evRounds))
      const versus = (ms: number) => `${fmtRate(rate(ms))}, ${(rate(ms) / rawRate.median).toFixed(3)}× raw`
      notes.push(
        `events: the library with a fiber per command (Effect.forEach unbounded over vm.command) ${versus(perFiber)}; ` +
          `the raw client driven the same way (a fiber per command, a Mailbox stream) ${versus(viaEffect)} ` +
          `(rounds of their own, after the others); this process's CPU per event: library ${recorded(cpu.lib).toFixed(0)} µs, ` +
          `raw ${recorded(cpu.raw).toFixed(0)} µs, library per fiber ${recorded(cpu.perFiber).toFixed(0)} µs, ` +
          `raw from Effect ${recorded(cpu.effect).toFixed(0)} µs`
      )
    }
    rows.push({
      id: "events",
      metric: `event throughput (${plan.evPairs} stop/cont pairs, one batch)`,
      library: `${fmtRate(libRate.median)} (${fmtMs(summarize(r.lib).median)})`,
      baseline: `${fmtRate(rawRate.median)} (${fmtMs(summarize(r.raw).median)})`,
      ratio,
      ratioText: `${ratio.toFixed(3)}×${spreadText(perRound)}`,
      target: "≥ 0.95× raw",
      pass: ratio >= 0.95,
      data: { libraryRate: libRate, baselineRate: rawRate, libraryMs: summarize(r.lib), baselineMs: summarize(r.raw), unit: "events/s", roundRatios: perRound }
    })
  } finally {
    await lib.close()
    await Raw.shutdown(raw)
  }
}

const concat = (arrays: ReadonlyArray<Float64Array>): Float64Array => {
  const out = new Float64Array(arrays.reduce((n, a) => n + a.length, 0))
  let offset = 0
  for (const a of arrays) out.set(a, offset), (offset += a.length)
  return out
}

const benchConsole = async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "eq-bench-"))
  try {
    // Two HMP readline monitors on socket chardevs: one for the library, one for the raw reader.
    const libSock = path.join(dir, "hmp-lib.sock")
    const rawSock = path.join(dir, "hmp-raw.sock")
    const machine = await openMachine(Lib.config(
      "-chardev", `socket,id=c0,path=${libSock},server=on,wait=off`, "-mon", "chardev=c0,mode=readline",
      "-chardev", `socket,id=c1,path=${rawSock},server=on,wait=off`, "-mon", "chardev=c1,mode=readline"
    ))
    try {
      log(`console latency (QEMU HMP echo): ${plan.conRounds} rounds of ${plan.conSamples}`)
      const r = await interleave(plan.conRounds, 1, () => run(Lib.consoleLatency(libSock, plan.conSamples)), () => Raw.consoleEcho(rawSock, plan.conSamples))
      const viaExpect = summarize(concat(r.lib.map((x) => x.viaExpect)))
      const viaStream = summarize(concat(r.lib.map((x) => x.viaStream)))
      const rawEcho = summarize(concat(r.raw))
      for (const [id, what, s] of [["console-expect", "expect", viaExpect], ["console-stream", "stream", viaStream]] as const) {
        rows.push({
          id,
          metric: `console latency, QEMU echo → ${what}`,
          library: `p50 ${fmtMs(s.median)} (p95 ${fmtMs(s.p95)})`,
          baseline: `p50 ${fmtMs(rawEcho.median)} (p95 ${fmtMs(rawEcho.p95)})`,
          ratio: s.median / rawEcho.median,
          ratioText: `${(s.median / rawEcho.median).toFixed(2)}×`,
          target: "p50 < 2 ms",
          pass: s.median < 2,
          data: { library: s, baseline: rawEcho, unit: "ms" }
        })
      }
    } finally {
      await machine.close()
    }

    log(`console consumer path (local socket pair): ${plan.localSamples} samples`)
    const libPair = await Raw.socketPair(path.join(dir, "pair-lib.sock"))
    const rawPair = await Raw.socketPair(path.join(dir, "pair-raw.sock"))
    const half = Math.ceil(plan.localSamples / 2)
    const lib: Array<Float64Array> = []
    const raw: Array<Float64Array> = []
    // One connection per side, so the halves run back to back in both orders.
    lib.push(await run(Lib.consoleLocal(libPair.client, libPair.writer, half)))
    raw.push(await Raw.consoleLocal(rawPair.client, rawPair.writer, plan.localSamples))
    const libPair2 = await Raw.socketPair(path.join(dir, "pair-lib2.sock"))
    lib.push(await run(Lib.consoleLocal(libPair2.client, libPair2.writer, plan.localSamples - half)))
    for (const p of [libPair, rawPair, libPair2]) p.writer.destroy(), p.client.destroy()
    const l = summarize(concat(lib))
    const b = summarize(concat(raw))
    rows.push({
      id: "console-local",
      metric: "console consumer path (socket pair → expect)",
      library: `p50 ${fmtMs(l.median)} (p95 ${fmtMs(l.p95)})`,
      baseline: `p50 ${fmtMs(b.median)} (p95 ${fmtMs(b.p95)})`,
      ratio: l.median / b.median,
      ratioText: `${(l.median / b.median).toFixed(2)}×`,
      target: "p50 < 2 ms",
      pass: l.median < 2,
      data: { library: l, baseline: b, unit: "ms" }
    })
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

interface ManyResult {
  readonly wall: number
  readonly commands: number
  readonly commandsCpu: number
  readonly rssDelta: number
  readonly heapDelta: number
  readonly fdsDelta: number
  readonly close: number
  readonly tempDirs: Array<string>
}

/** One round of `count` machines in a fresh process (see bench/concurrent.ts). */
const manyRound = (side: "library" | "raw" | "raw-effect" | "guests", count: number, commands: number) => async (): Promise<ManyResult> => {
  const out = await new Promise<string>((resolve, reject) =>
    cp.execFile(process.execPath, [...process.execArgv, path.join(benchDir, "concurrent.ts"), side, String(count), String(commands)], { encoding: "utf8", maxBuffer: 64 * 1024 * 1024 }, (error, stdout) =>
      error ? reject(error) : resolve(stdout))
  )
  const parsed = JSON.parse(out.trim().split("\n").pop()!) as ManyResult
  for (const dir of parsed.tempDirs) Lib.tempDirs.add(dir)
  return parsed
}

const fmtKb = (bytes: number) => `${(bytes / 1024).toFixed(0)} KB`

/**
 * `count` machines at once, `commands` round trips on each, all closed:
 * rows for all-ready, the commands (when any), all-closed, and memory.
 */
const benchMany = async (id: string, count: number, commands: number, rounds: number, rssTarget: number | undefined) => {
  log(`${count} machines at once${commands > 0 ? `, ${commands} commands each` : ""}: ${rounds} rounds`)
  // One unrecorded pair warms the page cache and QEMU's files for both sides alike.
  const r = await interleave(rounds, quick ? 0 : 1, manyRound("library", count, commands), manyRound("raw", count, commands))
  const pick = (k: "wall" | "commands" | "close") => [r.lib.map((x) => x[k]), r.raw.map((x) => x[k])] as const
  const [readyL, readyB] = pick("wall")
  rows.push(timeRow(`${id}-ready`, `${count} machines at once: all ready`, readyL, readyB, 1.15, rounds))
  if (commands > 0) {
    const [cmdL, cmdB] = pick("commands")
    const row = timeRow(`${id}-commands`, `${count} machines: ${commands} query-status each, all at once`, cmdL, cmdB, 1.1, rounds)
    // this process's CPU per command (µs): where the difference comes from when Node is the bottleneck
    const cpu = (side: ReadonlyArray<ManyResult>) => summarize(side.map((x) => x.commandsCpu / (count * commands)))
    const [cpuL, cpuB] = [cpu(r.lib), cpu(r.raw)]
    // The raw client driven from Effect fibers, in rounds of its own after the interleaved ones
    // (so the row's method is unchanged): how much of the gap is Effect's, how much the library's.
    const viaEffect: Array<ManyResult> = []
    if (!quick) for (let i = 0; i < rounds; i++) viaEffect.push(await manyRound("raw-effect", count, commands)())
    const cpuE = viaEffect.length > 0 ? cpu(viaEffect) : undefined
    const effectText = cpuE === undefined
      ? ""
      : `; the raw client driven from Effect fibers (Effect.forEach + Effect.promise) ${cpuE.median.toFixed(1)} µs, its commands ${
        (med(viaEffect.map((x) => x.commands)) / med(cmdB)).toFixed(3)
      }× raw (rounds of its own, after the others)`
    notes.push(`${id}: Node CPU per command ${cpuL.median.toFixed(1)} µs (library) vs ${cpuB.median.toFixed(1)} µs (raw)${effectText}`)
    rows.push({
      ...row,
      data: {
        ...row.data,
        cpuPerCommandUs: { library: cpuL, baseline: cpuB, ...(cpuE ? { rawFromEffect: cpuE } : {}) },
        ...(cpuE ? { rawFromEffectMs: summarize(viaEffect.map((x) => x.commands)) } : {})
      }
    })
  }
  const [closeL, closeB] = pick("close")
  rows.push(timeRow(`${id}-closed`, `${count} machines at once: all closed`, closeL, closeB, 1.3, rounds))
  const rss = summarize(r.lib.map((x) => x.rssDelta / count))
  const rawRss = summarize(r.raw.map((x) => x.rssDelta / count))
  const heap = summarize(r.lib.map((x) => x.heapDelta / count))
  const rawHeap = summarize(r.raw.map((x) => x.heapDelta / count))
  const fds = summarize(r.lib.map((x) => x.fdsDelta / count))
  const rawFds = summarize(r.raw.map((x) => x.fdsDelta / count))
  rows.push({
    id: `${id}-memory`,
    metric: `${count} machines: our RSS (heap) and fds per machine`,
    library: `${fmtKb(rss.median)} (heap ${fmtKb(heap.median)}), ${fds.median.toFixed(1)} fds`,
    baseline: `${fmtKb(rawRss.median)} (heap ${fmtKb(rawHeap.median)}), ${rawFds.median.toFixed(1)} fds`,
    ratio: rss.median / rawRss.median,
    ratioText: `${rss.median >= rawRss.median ? "+" : "−"}${fmtKb(Math.abs(rss.median - rawRss.median))} RSS`,
    target: rssTarget === undefined ? "RSS delta < 60 MB in all" : `≤ ${fmtKb(rssTarget)} RSS per machine`,
    pass: rssTarget === undefined ? rss.max * count < 60 * 1024 * 1024 : rss.median <= rssTarget,
    data: { rssPerMachine: rss, baselineRssPerMachine: rawRss, heapPerMachine: heap, baselineHeapPerMachine: rawHeap, fdsPerMachine: fds, baselineFdsPerMachine: rawFds }
  })
}

interface GuestsResult {
  readonly wall: number
  readonly booted: number
  readonly atPrompt: Array<number>
  readonly bootMs: Array<number>
  readonly failures: Array<string>
  readonly rssDelta: number
  readonly heapDelta: number
  readonly rssHeld: number
  readonly heapHeld: number
  readonly close: number
}

const benchGuests = async () => {
  const count = plan.guestCount
  log(`${count} test guests booted at once (TCG), library only`)
  const r = (await manyRound("guests", count, 0)()) as unknown as GuestsResult
  const perGuest = Math.max(r.booted, 1)
  const boot = summarize(r.bootMs.length > 0 ? r.bootMs : [Number.NaN])
  for (const failure of new Set(r.failures)) notes.push(`guests: ${r.failures.filter((f) => f === failure).length} failed to boot: ${failure}`)
  rows.push({
    id: "guests",
    metric: `${count} test guests booted at once to the shell (TCG)`,
    library: `${r.booted}/${count} at the prompt in ${fmtMs(r.wall)} (each cont→prompt p50 ${fmtMs(boot.median)}, p95 ${fmtMs(boot.p95)}), closed ${fmtMs(r.close)}; per guest: RSS ${fmtKb(r.rssHeld / perGuest)} given back by closing (${fmtKb(r.rssDelta / perGuest)} over the start), heap ${fmtKb(r.heapDelta / perGuest)}`,
    baseline: "—",
    ratio: Number.NaN,
    ratioText: "—",
    target: "informational",
    pass: r.booted === count ? undefined : false,
    data: { bootedGuests: r.booted, allAtPromptMs: r.wall, bootMs: boot, closeMs: r.close, rssPerGuest: r.rssDelta / perGuest, rssHeldPerGuest: r.rssHeld / perGuest, heapPerGuest: r.heapDelta / perGuest, heapHeldPerGuest: r.heapHeld / perGuest, failures: r.failures }
  })
}

interface GuestAgentSummary {
  readonly n: number
  readonly median: number
  readonly p95: number
  readonly min: number
  readonly max: number
}

interface GuestAgentResult {
  readonly agentReadyMs: GuestAgentSummary
  readonly portOpenToSyncMs: GuestAgentSummary
  readonly execRoundTripMs: GuestAgentSummary
  readonly writeMBps: GuestAgentSummary
  readonly readMBps: GuestAgentSummary
  readonly fileMiB: number
}

/** The guest agent on the real test guest (TCG), library only, in a fresh process (see bench/guestAgent.ts). */
const benchGuestAgent = async () => {
  log("guest agent on the test guest (TCG): boots, exec round trips, file transfer")
  let r: GuestAgentResult
  try {
    const out = await new Promise<string>((resolve, reject) =>
      cp.execFile(process.execPath, [...process.execArgv, path.join(benchDir, "guestAgent.ts"), "--json", ...(quick ? ["--quick"] : [])], { encoding: "utf8", maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) =>
        error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout))
    )
    r = JSON.parse(out.trim().split("\n").pop()!) as GuestAgentResult
  } catch (error) {
    notes.push(`guest-agent: not measured: ${String(error).split("\n").slice(0, 3).join(" ")}`)
    return
  }
  const informational = { baseline: "—", ratio: Number.NaN, ratioText: "—", target: "informational", pass: undefined } as const
  rows.push({
    id: "guest-agent-ready",
    metric: "guest agent ready after launch (launch → first sync, TCG)",
    library: `p50 ${fmtMs(r.agentReadyMs.median)} (min ${fmtMs(r.agentReadyMs.min)}, max ${fmtMs(r.agentReadyMs.max)}, n=${r.agentReadyMs.n}); port open → sync p50 ${fmtMs(r.portOpenToSyncMs.median)}`,
    ...informational,
    data: { agentReadyMs: r.agentReadyMs, portOpenToSyncMs: r.portOpenToSyncMs, unit: "ms" }
  })
  rows.push({
    id: "guest-agent-exec",
    metric: "guest agent exec round trip (/bin/true: guest-exec + status polls)",
    library: `p50 ${fmtMs(r.execRoundTripMs.median)} (p95 ${fmtMs(r.execRoundTripMs.p95)}, n=${r.execRoundTripMs.n})`,
    ...informational,
    data: { execRoundTripMs: r.execRoundTripMs, unit: "ms" }
  })
  rows.push({
    id: "guest-agent-file",
    metric: `guest agent file throughput (${r.fileMiB} MiB writeFile / readFile)`,
    library: `write ${r.writeMBps.median.toFixed(1)} MB/s, read ${r.readMBps.median.toFixed(1)} MB/s (n=${r.writeMBps.n})`,
    ...informational,
    data: { writeMBps: r.writeMBps, readMBps: r.readMBps, fileMiB: r.fileMiB, unit: "MB/s" }
  })
}

interface ClonesResult {
  readonly rounds: number
  readonly count: number
  readonly rows: Array<{ readonly id: string; readonly lib: number; readonly base: number; readonly target: number | undefined; readonly ratio: number; readonly pass: boolean | undefined }>
}

/**
 * Clones of a `Guest.template` against cold launches of the same guest (TCG), in a fresh
 * process (see bench/clones.ts): ready to the console and to the agent (p50s of interleaved
 * pairs), N at once, and the PSS of N running guests. The template's own boot is not timed.
 */
const benchClones = async () => {
  const count = quick ? 2 : 16
  log(`clones vs cold launches of the test guest (TCG), ${count} at once`)
  let r: ClonesResult
  try {
    const out = await new Promise<string>((resolve, reject) =>
      cp.execFile(process.execPath, [...process.execArgv, path.join(benchDir, "clones.ts"), "--json", `--count=${count}`, ...(quick ? ["--quick"] : [])], { encoding: "utf8", maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) =>
        error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout))
    )
    r = JSON.parse(out.trim().split("\n").pop()!) as ClonesResult
  } catch (error) {
    notes.push(`clones: not measured: ${String(error).split("\n").slice(0, 3).join(" ")}`)
    rows.push({ id: "clones", metric: "clones vs cold launches", library: "failed", baseline: "—", ratio: Number.NaN, ratioText: "—", target: "measured", pass: false, data: {} })
    return
  }
  const metric: Record<string, string> = {
    "clones-ready-console": `clone ready (one spare QEMU) vs cold launch: the console answers (p50 of ${r.rounds})`,
    "clones-ready-agent": `clone ready (one spare QEMU) vs cold launch: the agent answers guest-ping (p50 of ${r.rounds})`,
    "clones-fresh-ready-console": `clone ready (no spare) vs cold launch: the console answers (p50 of ${r.rounds})`,
    "clones-fresh-ready-agent": `clone ready (no spare) vs cold launch: the agent answers guest-ping (p50 of ${r.rounds})`,
    [`clones-${r.count}-ready`]: `${r.count} clones at once vs ${r.count} cold launches: all ready`,
    [`clones-${r.count}-pss`]: `${r.count} running clones vs ${r.count} cold guests: total PSS`
  }
  for (const row of r.rows) {
    const fmt = row.id.endsWith("pss") ? (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB` : fmtMs
    rows.push({
      id: row.id,
      metric: metric[row.id] ?? row.id,
      library: fmt(row.lib),
      baseline: fmt(row.base),
      ratio: row.ratio,
      ratioText: `${row.ratio.toFixed(3)}×`,
      target: row.target === undefined ? "informational" : `≤ ${row.target}× cold`,
      pass: row.pass,
      data: { clone: row.lib, cold: row.base, unit: row.id.endsWith("pss") ? "bytes" : "ms", rounds: r.rounds, count: r.count }
    })
  }
}

// --- report ----------------------------------------------------------------------------------------------

const table = (header: ReadonlyArray<string>, body: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...body.map(line)].join("\n")
}

const leftovers = (): Array<string> => {
  const found: Array<string> = []
  for (const dir of Lib.tempDirs) if (fs.existsSync(dir)) found.push(`temp dir ${dir}`)
  try {
    const children = cp.execFileSync("pgrep", ["-a", "-P", String(process.pid)], { encoding: "utf8" }).trim()
    if (children) found.push(...children.split("\n").filter((c) => c.includes("qemu")).map((c) => `process ${c}`))
  } catch {
    // pgrep exits 1 when nothing matches
  }
  return found
}

/** The quiet run's figures, or the loaded run's beside them. */
const resultsFile = load > 0 ? `results-load-${load}.json` : "results.json"

const main = async () => {
  const started = now()
  const qemuVersion = cp.execFileSync(Raw.QEMU, ["--version"], { encoding: "utf8" }).split("\n")[0]
  log(`effect-qemu bench${quick ? " (quick)" : ""}: ${qemuVersion}, node ${process.version}, ${os.cpus().length} cpus${load > 0 ? `, ${load} busy processes beside it` : ""}`)
  startLoad()
  if (enabled("launch")) await benchLaunch()
  if (enabled("lifecycle")) await benchLifecycle()
  if (enabled("roundtrips") || enabled("typed-roundtrips") || enabled("inflight")) await benchOnOneMachine()
  if (enabled("events")) await benchEvents()
  if (enabled("console")) await benchConsole()
  if (enabled("concurrent")) await benchMany("concurrent", plan.concCount, 0, plan.concRounds, undefined)
  if (enabled("many")) await benchMany("many", plan.manyCount, plan.manyCommands, plan.manyRounds, 200 * 1024)
  if (enabled("guest-agent")) await benchGuestAgent()
  if (enabled("clones")) await benchClones()
  if (guests) await benchGuests()
  stopLoad()
  const seconds = (now() - started) / 1000

  const header = quick
    ? ["metric", "library", "baseline", "ratio"]
    : ["metric", "library", "baseline", "ratio", "target", "result"]
  const body = rows.map((r) => {
    const cells = [r.metric, r.library, r.baseline, r.ratioText]
    return quick ? cells : [...cells, r.target, r.pass === undefined ? "—" : r.pass ? "pass" : "FAIL"]
  })
  process.stdout.write(`\n${table(header, body)}\n\n`)
  for (const note of notes) process.stdout.write(`- ${note}\n`)
  if (notes.length > 0) process.stdout.write("\n")
  const left = leftovers()
  process.stdout.write(`${left.length === 0 ? "nothing left behind" : `LEFT BEHIND: ${left.join("; ")}`}; ${seconds.toFixed(0)} s\n`)

  const toMetric = ({ id, metric, library, baseline, ratio, target, pass, data }: Row) => ({ id, metric, libraryText: library, baselineText: baseline, ratio, target, pass, ...data })
  if (!quick && only !== undefined && merge && rows.length > 0) {
    // A partial run updates its own rows; the others keep the figures (and date) of the run that measured them.
    const file = path.join(benchDir, resultsFile)
    const results = JSON.parse(fs.readFileSync(file, "utf8")) as { metrics: Array<{ id: string; measuredAt?: string }> }
    const fresh = rows.map((r) => ({ ...toMetric(r), measuredAt: new Date().toISOString() }))
    const ids = new Set(fresh.map((m) => m.id))
    const kept = results.metrics.filter((m) => !ids.has(m.id))
    const at = results.metrics.findIndex((m) => ids.has(m.id))
    results.metrics = at < 0 ? [...kept, ...fresh] : [...kept.slice(0, at), ...fresh, ...kept.slice(at)]
    fs.writeFileSync(`${file}.tmp`, `${JSON.stringify(results, null, 2)}\n`)
    fs.renameSync(`${file}.tmp`, file)
    process.stdout.write(`merged ${[...ids].join(", ")} into ${path.relative(process.cwd(), file)}\n`)
  }
  if (!quick && only === undefined) {
    const results = {
      date: new Date().toISOString(),
      durationSeconds: Math.round(seconds),
      environment: { node: process.version, qemu: qemuVersion, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, platform: `${os.type()} ${os.release()}`, busyProcesses: load },
      plan,
      notes,
      metrics: rows.map(toMetric)
    }
    const file = path.join(benchDir, resultsFile)
    fs.writeFileSync(`${file}.tmp`, `${JSON.stringify(results, null, 2)}\n`)
    fs.renameSync(`${file}.tmp`, file)
    process.stdout.write(`wrote ${path.relative(process.cwd(), file)}\n`)
  }
  const failed = rows.filter((r) => r.pass === false)
  if (!quick && failed.length > 0) process.stdout.write(`targets missed: ${failed.map((r) => r.id).join(", ")}\n`)
  if (left.length > 0 || (strict && !quick && failed.length > 0)) process.exitCode = 1
}

main().catch((error) => {
  cleanUp()
  console.error(error)
  process.exit(1)
})
