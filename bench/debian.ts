/**
 * The real Debian guest under TCG:
 *
 *   npx tsx bench/debian.ts [--rounds=N] [--json]
 *
 * - image build: cold (the build's own time, from image.json: packages
 *   downloaded and installed) and cached (`DebianImage.build()` finding it);
 * - ready: launch → systemd "running" (through the agent) and SSH answering,
 *   a cold `DebianGuest.launch` against a `DebianGuest.template().clone()`,
 *   p50 of each and their ratio. The template's own boot is not timed.
 */
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { DebianGuest, DebianImage } from "../src/testing/index.js"
import { fmtMs, now, summarize } from "./stats.js"

const argv = process.argv.slice(2)
const json = argv.includes("--json")
const rounds = Number(argv.find((a) => a.startsWith("--rounds="))?.slice(9) ?? 2)

const main = Effect.gen(function*() {
  const files = yield* DebianImage.build()
  const t0 = now()
  yield* DebianImage.build()
  const cached = now() - t0
  const cold = (JSON.parse(fs.readFileSync(path.join(files.dir, "image.json"), "utf8")) as { buildMs: number }).buildMs

  const tpl = yield* DebianGuest.template()
  const boots: Array<number> = []
  const clones: Array<number> = []
  for (let i = 0; i < rounds; i++) {
    for (const [kind, make] of [["cold", DebianGuest.launch()], ["clone", tpl.clone()]] as const) {
      yield* Effect.scoped(Effect.gen(function*() {
        const start = now()
        const guest = yield* make
        const { exitCode } = yield* guest.ssh("true")
        if (exitCode !== 0) return yield* Effect.dieMessage(`ssh true: exit ${exitCode}`)
        ;(kind === "cold" ? boots : clones).push(now() - start)
      }))
    }
  }
  const p50 = (xs: Array<number>) => summarize(xs).median
  const rows = {
    rounds,
    imageBuildColdMs: cold,
    imageBuildCachedMs: cached,
    coldBootReadyMs: p50(boots),
    cloneReadyMs: p50(clones),
    ratio: p50(clones) / p50(boots)
  }
  if (json) console.log(JSON.stringify(rows))
  else {
    console.log(`image build         cold ${fmtMs(cold).padStart(10)}  cached ${fmtMs(cached).padStart(10)}`)
    console.log(`ready (running+ssh) cold ${fmtMs(rows.coldBootReadyMs).padStart(10)}  clone  ${fmtMs(rows.cloneReadyMs).padStart(10)}  ${rows.ratio.toFixed(3)}x`)
  }
}).pipe(Effect.scoped)

Effect.runPromise(main).catch((e) => {
  console.error(e)
  process.exitCode = 1
})
