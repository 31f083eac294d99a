/**
 * Clones against cold launches on the real test guest under TCG:
 *
 *   npx tsx bench/clones.ts [--quick] [--json] [--count=N] [--strict]
 *
 * - ready (console): launch → the shell answers a command on the console,
 *   a cold `Guest.launch` against `template.clone()` of a `Guest.template` with
 *   one spare QEMU (`spares: 1`), interleaved, p50 of each and their ratio
 *   (target ≤ 0.1×);
 * - ready (agent): the same to the agent answering `guest-ping`;
 * - both again, informational, from a template without spares (each clone
 *   starts its own QEMU);
 * - N at once: all N ready (console), N clones of the template without spares
 *   against N cold launches (≤ 0.1×);
 * - memory: total PSS of the N running clones against N cold guests (≤ 0.25×).
 *
 * Every row compares the same guest, with its agent, on both sides.
 *
 * The templates' own builds (one boot each) are not timed. `--strict` exits 1 on a missed target.
 */
import { Effect } from "effect"
import * as fs from "node:fs"
import { Guest } from "../src/testing/index.js"
import { fmtMs, now, summarize } from "./stats.js"

const argv = process.argv.slice(2)
const quick = argv.includes("--quick")
const json = argv.includes("--json")
const strict = argv.includes("--strict")
const count = Number(argv.find((a) => a.startsWith("--count="))?.slice(8) ?? (quick ? 2 : 8))
const rounds = quick ? 2 : 5

const pss = (pid: number): number => {
  const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8")
  return Number(/^Pss:\s+(\d+) kB/m.exec(text)?.[1] ?? 0) * 1024
}

const consoleReady = (guest: Guest.Guest) => guest.run("echo ready", { timeout: "120 seconds" })

const main = Effect.gen(function*() {
  // Clones from a template with one spare QEMU (`spares: 1`, what a suite that clones again and
  // again uses), and from one without (every clone starts its own QEMU).
  const tpl = yield* Guest.template({ guestAgent: true, spares: 1 })
  const fresh = yield* Guest.template({ guestAgent: true })
  const samples = () => ({ console: [] as Array<number>, agent: [] as Array<number> })
  const times = { cold: samples(), clone: samples(), fresh: samples() }
  for (let i = 0; i < rounds; i++) {
    const kinds = [["cold", Guest.launch({ guestAgent: true })], ["clone", tpl.clone()], ["fresh", fresh.clone()]] as const
    for (const [kind, make] of kinds) {
      yield* Effect.scoped(Effect.gen(function*() {
        const t0 = now()
        const guest = yield* make
        yield* consoleReady(guest)
        const t1 = now()
        const agent = yield* guest.agent
        yield* agent.ping
        const t2 = now()
        const into = times[kind]
        into.console.push(t1 - t0)
        into.agent.push(t2 - t0)
      }))
    }
  }
  const many = (make: () => Effect.Effect<Guest.Guest, unknown, import("effect").Scope.Scope>) =>
    Effect.scoped(Effect.gen(function*() {
      const t0 = now()
      const guests = yield* Effect.all(
        Array.from({ length: count }, () => Effect.tap(make(), consoleReady)),
        { concurrency: "unbounded" }
      )
      const wall = now() - t0
      let bytes = 0
      for (const g of guests) {
        const pid = yield* g.vm.pid
        if (pid._tag === "Some") bytes += pss(pid.value)
      }
      return { wall, bytes }
    }))
  const manyClones = yield* many(() => fresh.clone())
  // The same guest on both sides, as in the rows above: the clones come from a template with the
  // agent (and set the guest clock through it), so the cold guests boot with the agent too.
  const manyCold = yield* many(() => Guest.launch({ guestAgent: true }))
  const p50 = (xs: Array<number>) => summarize(xs).median
  const rows = [
    { id: "clones-ready-console", lib: p50(times.clone.console), base: p50(times.cold.console), target: 0.1 },
    { id: "clones-ready-agent", lib: p50(times.clone.agent), base: p50(times.cold.agent), target: 0.1 },
    { id: "clones-fresh-ready-console", lib: p50(times.fresh.console), base: p50(times.cold.console), target: undefined },
    { id: "clones-fresh-ready-agent", lib: p50(times.fresh.agent), base: p50(times.cold.agent), target: undefined },
    { id: `clones-${count}-ready`, lib: manyClones.wall, base: manyCold.wall, target: 0.1 },
    { id: `clones-${count}-pss`, lib: manyClones.bytes, base: manyCold.bytes, target: 0.25 }
  ].map((r) => ({ ...r, ratio: r.lib / r.base, pass: r.target === undefined ? undefined : r.lib / r.base <= r.target }))
  if (json) console.log(JSON.stringify({ rounds, count, rows }))
  else {
    for (const r of rows) {
      const fmt = r.id.endsWith("pss") ? (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB` : fmtMs
      console.log(`${r.id.padEnd(24)} clone ${fmt(r.lib).padStart(10)}  cold ${fmt(r.base).padStart(10)}  ` +
        (r.target === undefined ? `${r.ratio.toFixed(3)}x (informational)` : `${r.ratio.toFixed(3)}x (target <= ${r.target}x) ${r.pass ? "PASS" : "FAIL"}`))
    }
  }
  if (strict && !quick && rows.some((r) => r.pass === false)) process.exitCode = 1
}).pipe(Effect.scoped)

Effect.runPromise(main).catch((e) => {
  console.error(e)
  process.exitCode = 1
})
