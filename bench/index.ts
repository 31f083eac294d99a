/**
 * `npm run bench`: the library against a raw baseline (bare node:child_process,
 * node:net and JSON.parse) in the same process run, interleaved so that machine
 * noise hits both alike. Prints a table and writes bench/results.json.
 *
 *   --quick        a few iterations of everything, no pass/fail, no results.json (CI smoke)
 *   --only=a,b     run only these metrics (launch, lifecycle, roundtrips, inflight, events, console, concurrent)
 *   --strict       exit 1 when a target is missed
 */
import { Effect, Fiber } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Lib from "./library.js"
import * as Raw from "./raw.js"
import { fmtMb, fmtMs, fmtRate, fmtUs, now, summarize } from "./stats.js"
import type { Summary } from "./stats.js"

const benchDir = import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname)
const argv = process.argv.slice(2)
const quick = argv.includes("--quick")
const strict = argv.includes("--strict")
const only = argv.find((a) => a.startsWith("--only="))?.slice("--only=".length).split(",")
const enabled = (metric: string) => only === undefined || only.includes(metric)

const plan = quick
  ? { warmup: 1, launch: 3, lifecycle: 3, rtRounds: 1, rtOps: 300, rtWarm: 50, inflight: 3, evRounds: 1, evPairs: 50, conRounds: 1, conSamples: 20, localSamples: 50, concRounds: 1, concCount: 32 }
  : { warmup: 5, launch: 150, lifecycle: 150, rtRounds: 7, rtOps: 10_000, rtWarm: 2_000, inflight: 80, evRounds: 9, evPairs: 1_000, conRounds: 6, conSamples: 200, localSamples: 4_000, concRounds: 5, concCount: 32 }

const fmtDelta = (bytes: number) => `${bytes < 0 ? "−" : "+"}${fmtMb(Math.abs(bytes))}`

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

// Leave nothing behind, even on Ctrl-C or a crash: library scopes are closed (interrupting what
// runs), raw QEMUs are killed; a library QEMU that outlives us dies by PDEATHSIG.
const cleanUp = () => {
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

const timeRow = (id: string, metric: string, lib: Summary, raw: Summary, max: number): Row => {
  const ratio = lib.median / raw.median
  return {
    id,
    metric,
    library: `${fmtMs(lib.median)} (p95 ${fmtMs(lib.p95)})`,
    baseline: `${fmtMs(raw.median)} (p95 ${fmtMs(raw.p95)})`,
    ratio,
    ratioText: `${ratio.toFixed(3)}×`,
    target: `≤ ${max.toFixed(2)}× raw`,
    pass: ratio <= max,
    data: { library: lib, baseline: raw, unit: "ms" }
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
  const row = timeRow("launch", "launch-to-ready (-machine none)", summarize(lib!), summarize(raw!), 1.05)
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
  const row = timeRow("lifecycle", "full lifecycle (launch→quit→exit→rm)", summarize(lib!), summarize(raw!), 1.05)
  const withSetpriv = summarize(rawSetpriv!)
  rows.push({ ...row, data: { ...row.data, baselineWithSetpriv: withSetpriv } })
  notes.push(`lifecycle: raw behind the exec helper ${fmtMs(withSetpriv.median)}; library / that = ${(summarize(lib!).median / withSetpriv.median).toFixed(3)}×`)
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
      // Each run is rtOps round trips per side, interleaved in blocks so that noise hits both alike.
      const block = Math.min(1_000, plan.rtOps)
      const blocks = Math.ceil(plan.rtOps / block)
      type Trips = { total: number; latencies: Float64Array }
      const r = { lib: [] as Array<Trips>, raw: [] as Array<Trips> }
      const merge = (xs: Array<Trips>): Trips => ({
        total: xs.reduce((t, x) => t + x.total, 0),
        latencies: concat(xs.map((x) => x.latencies))
      })
      for (let round = 0; round < plan.rtRounds; round++) {
        const [l, b] = await interleaveMany<Trips>(blocks, 0, [
          () => run(Lib.roundTrips(lib.vm, block)),
          () => Raw.roundTrips(raw, block)
        ])
        r.lib.push(merge(l!))
        r.raw.push(merge(b!))
      }
      const rate = (x: { total: number; latencies: Float64Array }) => (x.latencies.length / x.total) * 1000
      const libRate = summarize(r.lib.map(rate))
      const rawRate = summarize(r.raw.map(rate))
      const libLat = summarize(concat(r.lib.map((x) => x.latencies)))
      const rawLat = summarize(concat(r.raw.map((x) => x.latencies)))
      const ratio = libRate.median / rawRate.median
      rows.push({
        id: "roundtrips",
        metric: `sequential query-status (${plan.rtOps.toLocaleString("en")} round trips)`,
        library: `${fmtRate(libRate.median)} (p50 ${fmtUs(libLat.median)}, p95 ${fmtUs(libLat.p95)})`,
        baseline: `${fmtRate(rawRate.median)} (p50 ${fmtUs(rawLat.median)}, p95 ${fmtUs(rawLat.p95)})`,
        ratio,
        ratioText: `${ratio.toFixed(3)}×`,
        target: "≥ 0.90× raw rate",
        pass: ratio >= 0.9,
        data: { libraryRate: libRate, baselineRate: rawRate, libraryLatencyMs: libLat, baselineLatencyMs: rawLat, unit: "round trips/s" }
      })
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
      notes.push(`100 in flight: raw, 100 written at once ${fmtMs(rawPipelined.median)} — QEMU runs one QMP command at a time, so pipelining cannot beat ~1×`)
      rows.push({
        id: "inflight",
        metric: "100 commands in flight (vs 100 sequential)",
        library: `${fmtMs(concurrent.median)} (p95 ${fmtMs(concurrent.p95)})`,
        baseline: `${fmtMs(sequential.median)} seq (p95 ${fmtMs(sequential.p95)})`,
        ratio,
        ratioText: `${ratio.toFixed(2)}×`,
        target: "≥ 2× library sequential",
        pass: ratio >= 2,
        data: { concurrent, sequential, rawPipelined, unit: "ms per 100 commands" }
      })
    }

    if (enabled("events")) {
      const expected = plan.evPairs * 2
      log(`event throughput: ${plan.evRounds} rounds of ${expected} events`)
      const r = await interleave(
        plan.evRounds,
        1,
        () => run(Lib.eventThroughput(lib.vm, plan.evPairs)),
        () => Raw.eventThroughput(raw, plan.evPairs)
      )
      const rate = (ms: number) => (expected / ms) * 1000
      const libRate = summarize(r.lib.map(rate))
      const rawRate = summarize(r.raw.map(rate))
      const ratio = libRate.median / rawRate.median
      rows.push({
        id: "events",
        metric: `event throughput (${plan.evPairs} stop/cont pairs)`,
        library: `${fmtRate(libRate.median)} (${fmtMs(summarize(r.lib).median)})`,
        baseline: `${fmtRate(rawRate.median)} (${fmtMs(summarize(r.raw).median)})`,
        ratio,
        ratioText: `${ratio.toFixed(3)}×`,
        target: "≥ 0.95× raw",
        pass: ratio >= 0.95,
        data: { libraryRate: libRate, baselineRate: rawRate, libraryMs: summarize(r.lib), baselineMs: summarize(r.raw), unit: "events/s" }
      })
    }
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

const benchConcurrent = async () => {
  log(`${plan.concCount} machines at once: ${plan.concRounds} rounds`)
  // Each round in a fresh process (see bench/concurrent.ts).
  const round = (side: "library" | "raw") => async () => {
    const out = await new Promise<string>((resolve, reject) =>
      cp.execFile(process.execPath, [...process.execArgv, path.join(benchDir, "concurrent.ts"), side, String(plan.concCount)], { encoding: "utf8" }, (error, stdout) =>
        error ? reject(error) : resolve(stdout))
    )
    const parsed = JSON.parse(out.trim().split("\n").pop()!) as { wall: number; rssDelta: number; heapDelta: number; close: number; tempDirs: Array<string> }
    for (const dir of parsed.tempDirs) Lib.tempDirs.add(dir)
    return parsed
  }
  const r = await interleave(plan.concRounds, 0, round("library"), round("raw"))
  const rss = summarize(r.lib.map((x) => x.rssDelta))
  const heap = summarize(r.lib.map((x) => x.heapDelta))
  const rawHeap = summarize(r.raw.map((x) => x.heapDelta))
  const rawRss = summarize(r.raw.map((x) => x.rssDelta))
  const wall = summarize(r.lib.map((x) => x.wall))
  const rawWall = summarize(r.raw.map((x) => x.wall))
  const close = summarize(r.lib.map((x) => x.close))
  const rawClose = summarize(r.raw.map((x) => x.close))
  rows.push({
    id: "concurrent",
    metric: `${plan.concCount} machines launched concurrently`,
    library: `RSS ${fmtDelta(rss.max)} (heap ${fmtDelta(heap.median)}), ready ${fmtMs(wall.median)}, closed ${fmtMs(close.median)}`,
    baseline: `RSS ${fmtDelta(rawRss.max)} (heap ${fmtDelta(rawHeap.median)}), ready ${fmtMs(rawWall.median)}, closed ${fmtMs(rawClose.median)}`,
    ratio: wall.median / rawWall.median,
    ratioText: `${(wall.median / rawWall.median).toFixed(2)}× wall`,
    target: "RSS delta < 60 MB",
    pass: rss.max < 60 * 1024 * 1024,
    data: { rssDeltaBytes: rss, baselineRssDeltaBytes: rawRss, heapUsedDeltaBytes: heap, baselineHeapUsedDeltaBytes: rawHeap, wallMs: wall, baselineWallMs: rawWall, closeMs: close, baselineCloseMs: rawClose }
  })
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

const main = async () => {
  const started = now()
  const qemuVersion = cp.execFileSync(Raw.QEMU, ["--version"], { encoding: "utf8" }).split("\n")[0]
  log(`effect-qemu bench${quick ? " (quick)" : ""}: ${qemuVersion}, node ${process.version}, ${os.cpus().length} cpus`)
  if (enabled("launch")) await benchLaunch()
  if (enabled("lifecycle")) await benchLifecycle()
  if (enabled("roundtrips") || enabled("inflight") || enabled("events")) await benchOnOneMachine()
  if (enabled("console")) await benchConsole()
  if (enabled("concurrent")) await benchConcurrent()
  const seconds = (now() - started) / 1000

  const header = quick
    ? ["metric", "library", "baseline", "ratio"]
    : ["metric", "library", "baseline", "ratio", "target", "result"]
  const body = rows.map((r) => {
    const cells = [r.metric, r.library, r.baseline, r.ratioText]
    return quick ? cells : [...cells, r.target, r.pass ? "pass" : "FAIL"]
  })
  process.stdout.write(`\n${table(header, body)}\n\n`)
  for (const note of notes) process.stdout.write(`- ${note}\n`)
  if (notes.length > 0) process.stdout.write("\n")
  const left = leftovers()
  process.stdout.write(`${left.length === 0 ? "nothing left behind" : `LEFT BEHIND: ${left.join("; ")}`}; ${seconds.toFixed(0)} s\n`)

  if (!quick && only === undefined) {
    const results = {
      date: new Date().toISOString(),
      durationSeconds: Math.round(seconds),
      environment: { node: process.version, qemu: qemuVersion, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, platform: `${os.type()} ${os.release()}` },
      plan,
      notes,
      metrics: rows.map(({ id, metric, library, baseline, ratio, target, pass, data }) => ({ id, metric, libraryText: library, baselineText: baseline, ratio, target, pass, ...data }))
    }
    const file = path.join(benchDir, "results.json")
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
