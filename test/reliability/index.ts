/**
 * The reliability harness: `npm run reliability` (full, < 15 min) or
 * `npm run reliability:quick` (< 90 s, for CI and `npm test`).
 *
 * Each case prints what it tried and what survived; the run ends with a
 * table `case | tried | survived | leaked` and exits non-zero when any try
 * failed or anything leaked.
 *
 * Flags: `--quick`, `--only=name[,name]` (faults, bad-input, interrupt, soak,
 * parent-death, security, snapshots), `--seed=N` (replay), `--json=FILE` (the table as
 * JSON, for the vitest wrapper).
 */
import * as fs from "node:fs"
import type { CaseResult, Context } from "./common.js"
import { gc, ignoreExistingChildren, makeBase, makeRng, newResult, ourProcesses } from "./common.js"
import { crashes } from "./crashes.js"

type Case = (ctx: Context) => Promise<CaseResult>

// Loaded on demand, so that `--only` runs do not pay for the others.
const cases: ReadonlyArray<readonly [string, () => Promise<Case>]> = [
  ["faults", () => import("./faults.js").then((m) => m.faults)],
  ["bad-input", () => import("./badInput.js").then((m) => m.badInput)],
  ["interrupt", () => import("./interruption.js").then((m) => m.interruption)],
  ["soak", () => import("./soak.js").then((m) => m.soak)],
  ["parent-death", () => import("./parentDeath.js").then((m) => m.parentDeath)],
  ["security", () => import("./security.js").then((m) => m.security)],
  ["snapshots", () => import("./snapshots.js").then((m) => m.snapshots)]
]

export interface Summary {
  readonly quick: boolean
  readonly seed: number
  readonly seconds: number
  readonly ok: boolean
  readonly cases: ReadonlyArray<Omit<CaseResult, "notes" | "failures"> & { readonly failures: ReadonlyArray<string> }>
}

const flag = (name: string): string | undefined => {
  const arg = process.argv.find((a) => a === `--${name}` || a.startsWith(`--${name}=`))
  return arg === undefined ? undefined : arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : ""
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + " ".repeat(n - s.length))
const padLeft = (s: string, n: number) => (s.length >= n ? s : " ".repeat(n - s.length) + s)

export const table = (results: ReadonlyArray<CaseResult>): string => {
  const rows = results.map((r) => [r.name, String(r.tried), String(r.survived), String(r.leaked)])
  const head = ["case", "tried", "survived", "leaked"]
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) =>
    "| " + cells.map((c, i) => (i === 0 ? pad(c, widths[i]!) : padLeft(c, widths[i]!))).join(" | ") + " |"
  return [
    line(head),
    "|" + widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")).join("|") + "|",
    ...rows.map(line)
  ].join("\n")
}

const main = async () => {
  crashes.install()
  gc() // fail early if a GC cannot be had
  ignoreExistingChildren()
  const quick = flag("quick") !== undefined
  const seed = Number(flag("seed") ?? Date.now() % 1_000_000)
  const only = flag("only")?.split(",").filter(Boolean)
  const json = flag("json")
  const base = makeBase()
  // Interrupted from outside (Ctrl-C, a timeout): the machines die with us (pdeathsig), the dir goes too.
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      fs.rmSync(base, { recursive: true, force: true })
      process.exit(130)
    })
  }
  const say = (line: string) => process.stdout.write(line + "\n")
  const ctx: Context = { quick, base, rng: makeRng(seed), say }
  say(`effect-qemu reliability (${quick ? "quick" : "full"}), seed ${seed}, private dir ${base}, pid ${process.pid}`)

  const started = Date.now()
  const results: Array<CaseResult> = []
  for (const [name, load] of cases) {
    if (only && !only.includes(name)) continue
    say(`\n== ${name}`)
    const t = Date.now()
    let result: CaseResult
    try {
      result = await (await load())(ctx)
    } catch (e) {
      result = newResult(name)
      result.tried = 1
      result.failures.push(`the case itself threw: ${e instanceof Error ? e.stack : String(e)}`)
    }
    for (const note of result.notes) say(`  ${note}`)
    for (const f of result.failures) say(`  FAIL ${f}`)
    say(`  -> ${result.survived}/${result.tried} survived, ${result.leaked} leaked (${((Date.now() - t) / 1000).toFixed(1)} s)`)
    results.push(result)
  }

  // Whatever a case left behind counts against the run.
  const stray = ourProcesses(base)
  if (stray.length > 0) say(`\nprocesses left at the end: ${stray.join(", ")}`)
  const files = fs.readdirSync(base)
  if (files.length > 0) say(`\nfiles left in ${base}: ${files.join(", ")}`)
  fs.rmSync(base, { recursive: true, force: true })
  if (crashes.count > 0) say(`\nuncaught exceptions: ${crashes.count}; last: ${crashes.last}`)

  const seconds = (Date.now() - started) / 1000
  const ok = results.every((r) => r.survived === r.tried && r.leaked === 0 && r.failures.length === 0) &&
    stray.length === 0 && files.length === 0 && crashes.count === 0
  say(`\n${table(results)}\n`)
  say(`${ok ? "OK" : "FAILED"} in ${seconds.toFixed(1)} s (seed ${seed})`)
  if (json) {
    const summary: Summary = {
      quick,
      seed,
      seconds,
      ok,
      cases: results.map(({ notes: _notes, ...r }) => r)
    }
    fs.writeFileSync(json, JSON.stringify(summary, null, 2))
  }
  return ok
}

main().then(
  (ok) => process.exit(ok ? 0 : 1),
  (e) => {
    process.stderr.write(`reliability harness crashed: ${e instanceof Error ? e.stack : String(e)}\n`)
    process.exit(2)
  }
)
