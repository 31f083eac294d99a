/**
 * Where a sequential round trip's time goes, library against raw, split at the socket:
 *
 *   npx tsx bench/split.ts [TRIPS_PER_BLOCK=1000] [BLOCKS=24]
 *   BENCH_DIST=/tmp/old/dist npx tsx bench/split.ts   # another build (A/B: run both)
 *
 * Every `net.Socket` write and `data` event of this process is timestamped, so each
 * `query-status` round trip splits into call → write (the client's send path), write →
 * reply read (QEMU, the kernel, and whatever keeps this process from reading), and reply →
 * caller resumed (decoding, routing, resuming the caller). Three variants run in one
 * process on their own QEMUs, in blocks whose order goes through all six permutations (a
 * fixed rotation always runs a variant after the same other one, which alone put two
 * identical builds 16 µs apart): the library (`vm.command`), the raw client, and the raw
 * client driven from an Effect loop (what the Effect runtime costs by itself). Prints the
 * p50 of each part; informational, no target (bench/index.ts's round-trip row has one).
 */
import { Effect } from "effect"
import * as net from "node:net"
import * as Lib from "./library.js"
import * as Raw from "./raw.js"
import { now, summarize } from "./stats.js"

const [tripsText, blocksText] = process.argv.slice(2)
const trips = Number(tripsText ?? 1_000)
const blocks = Number(blocksText ?? 24)

let wroteAt = 0
let readAt = 0
const write = net.Socket.prototype.write
const emit = net.Socket.prototype.emit
net.Socket.prototype.write = function(this: net.Socket, ...args: Array<unknown>) {
  wroteAt = now()
  return (write as (...a: Array<unknown>) => boolean).apply(this, args)
} as typeof write
net.Socket.prototype.emit = function(this: net.Socket, event: string | symbol, ...args: Array<unknown>) {
  if (event === "data") readAt = now()
  return (emit as (...a: Array<unknown>) => boolean).call(this, event, ...args)
} as typeof emit

interface Parts {
  readonly send: Array<number>
  readonly server: Array<number>
  readonly receive: Array<number>
  readonly total: Array<number>
}
const parts = (): Parts => ({ send: [], server: [], receive: [], total: [] })
const record = (into: Parts, start: number, end: number) => {
  into.send.push(wroteAt - start)
  into.server.push(readAt - wroteAt)
  into.receive.push(end - readAt)
  into.total.push(end - start)
}

const PERMUTATIONS = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]] as const

const main = async () => {
  const lib = await Effect.runPromise(Lib.openMachine())
  const raw = await Raw.launch()
  const rawInEffect = await Raw.launch()
  try {
    const libTrips = (into: Parts | undefined) =>
      Effect.runPromise(Effect.gen(function*() {
        for (let i = 0; i < trips; i++) {
          const start = now()
          yield* lib.vm.command("query-status")
          if (into) record(into, start, now())
        }
      }))
    const effectTrips = (into: Parts | undefined) =>
      Effect.runPromise(Effect.gen(function*() {
        for (let i = 0; i < trips; i++) {
          const start = now()
          yield* Effect.promise(() => rawInEffect.qmp.execute("query-status"))
          if (into) record(into, start, now())
        }
      }))
    const rawTrips = async (into: Parts | undefined) => {
      for (let i = 0; i < trips; i++) {
        const start = now()
        await raw.qmp.execute("query-status")
        if (into) record(into, start, now())
      }
    }
    const variants = [
      { name: "library (vm.command)", run: libTrips, parts: parts() },
      { name: "raw client", run: rawTrips, parts: parts() },
      { name: "raw client in an Effect loop", run: effectTrips, parts: parts() }
    ]
    for (const v of variants) await v.run(undefined)
    for (let b = 0; b < blocks; b++) {
      for (const k of PERMUTATIONS[b % PERMUTATIONS.length]!) await variants[k]!.run(variants[k]!.parts)
    }
    const us = (xs: Array<number>) => (summarize(xs).median * 1000).toFixed(1)
    console.log(`${trips * blocks} round trips per variant, p50 in µs\n`)
    console.log("| variant | call → write | write → reply read | reply → caller resumed | total |")
    console.log("|---|---|---|---|---|")
    for (const v of variants) {
      const p = v.parts
      console.log(`| ${v.name} | ${us(p.send)} | ${us(p.server)} | ${us(p.receive)} | ${us(p.total)} |`)
    }
  } finally {
    await Effect.runPromise(lib.close)
    await Raw.shutdown(raw)
    await Raw.shutdown(rawInEffect)
  }
}

await main()
