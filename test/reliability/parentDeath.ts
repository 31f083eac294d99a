/**
 * Case 5: parent death. A child Node process launches N machines and is
 * SIGKILLed; its QEMUs must be gone within 1 s (the library starts QEMU under
 * `setpriv --pdeathsig KILL`). The child cannot clean its temp dirs; they are
 * counted in the notes and removed here, not reported as leaks.
 */
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import type { CaseResult, Context } from "./common.js"
import { fail, isAlive, leftovers, newResult, ourProcesses, settle } from "./common.js"

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), "parentDeathChild.ts")

const trial = async (ctx: Context, vms: number): Promise<{ problems: Array<string>; ms: number; dirs: number }> => {
  const dir = fs.mkdtempSync(path.join(ctx.base, "pd-"))
  // Same node, same loader flags (tsx), so the child runs the TypeScript sources.
  const child = cp.spawn(process.execPath, [...process.execArgv, childScript, dir, String(vms)], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  let err = ""
  child.stdout.on("data", (d) => (out += d))
  child.stderr.on("data", (d) => (err += d))
  const ready = await settle(() => out.includes("\n") || child.exitCode !== null, 30_000)
  if (!ready || !out.includes("\n")) {
    child.kill("SIGKILL")
    return { problems: [`the child did not report its VMs: ${err.slice(0, 500)}`], ms: 0, dirs: 0 }
  }
  const { pids } = JSON.parse(out.split("\n")[0]!) as { pids: Array<number> }
  const problems: Array<string> = []
  if (pids.length !== vms || !pids.every(isAlive)) problems.push(`expected ${vms} live QEMUs, got ${JSON.stringify(pids)}`)
  const start = Date.now()
  child.kill("SIGKILL")
  const gone = await settle(() => !pids.some(isAlive), 1000)
  const ms = Date.now() - start
  if (!gone) {
    problems.push(`QEMUs still alive 1 s after the parent died: ${pids.filter(isAlive).join(", ")}`)
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // gone
      }
    }
  }
  await settle(() => child.exitCode !== null || child.signalCode !== null, 2000)
  const stray = ourProcesses(dir)
  if (stray.length > 0) problems.push(`processes mentioning the child's dir: ${stray.join(", ")}`)
  const dirs = leftovers(dir).length
  fs.rmSync(dir, { recursive: true, force: true })
  return { problems, ms, dirs }
}

export const parentDeath = async (ctx: Context): Promise<CaseResult> => {
  const result = newResult("parent death (SIGKILL the launcher)")
  const trials = ctx.quick ? 1 : 5
  const vms = 4
  const times: Array<number> = []
  let dirs = 0
  for (let i = 0; i < trials; i++) {
    result.tried++
    const { problems, ms, dirs: left } = await trial(ctx, vms)
    times.push(ms)
    dirs += left
    if (problems.length === 0) result.survived++
    else {
      result.leaked += problems.some((p) => p.includes("alive") || p.includes("processes")) ? 1 : 0
      fail(result, `trial ${i}: ${problems.join("; ")}`)
    }
  }
  result.notes.push(
    `${trials} x (a child Node launched ${vms} VMs, then SIGKILL): all QEMUs gone after ${times.join(", ")} ms; ` +
      `${dirs} temp dirs the dead parent could not remove (removed by the harness)`
  )
  return result
}
