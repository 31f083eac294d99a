/**
 * Guest agent figures on the real test guest under TCG:
 *
 *   npx tsx bench/guestAgent.ts [--quick] [--json] [--chunk=BYTES]
 *
 * --quick: one boot, ten execs, a 2 MiB file (a smoke run); --json: one JSON line.
 *
 * - agent ready after boot: QEMU launch → the agent's first answered sync
 *   (`QemuMachine.addGuestAgent`, `vm.guestAgent()`; kernel boot, module
 *   load, qemu-ga start included), and the client's share of it: QEMU's
 *   `VSERPORT_CHANGE { open: true }` → the sync reply;
 * - exec round trip: `exec("/bin/true")` (guest-exec + guest-exec-status polls), p50/p95;
 * - file throughput: a 16 MiB `writeFile` and `readFile`, MB/s.
 *
 * Builds the guest first when it is not cached (not timed). `npm run bench`
 * runs it in a fresh process (the `guest-agent` rows).
 */
import { Console, Effect, Fiber } from "effect"
import * as crypto from "node:crypto"
import * as os from "node:os"
import * as QemuMachine from "../src/QemuMachine.js"
import { Guest } from "../src/testing/index.js"
import { fmtMs, now, summarize } from "./stats.js"

const argv = process.argv.slice(2)
const quick = argv.includes("--quick")
const json = argv.includes("--json")
const chunkArg = argv.find((a) => a.startsWith("--chunk="))
const chunkSize = chunkArg ? Number(chunkArg.slice("--chunk=".length)) : undefined
// --quick is a smoke run: one boot, a 2 MiB file (writes run at ~1 MB/s under TCG).
const plan = quick ? { boots: 1, execs: 10, fileRounds: 1, fileMiB: 2 } : { boots: 5, execs: 200, fileRounds: 3, fileMiB: 16 }
const FILE_BYTES = plan.fileMiB * 1024 * 1024

/** Launches the guest with its agent and connects as early as possible; returns the agent and the time to its first sync. */
const boot = (files: Guest.Files) =>
  Effect.gen(function*() {
    const started = now()
    const vm = yield* QemuMachine.launch(Guest.config(files, { guestAgent: true }))
    // QEMU reports the agent opening its port: the time from there to our first sync is the client's share.
    const portOpen = yield* Effect.fork(vm.eventWait("VSERPORT_CHANGE", { match: { data: { open: true } }, timeout: "120 seconds" }))
    yield* vm.command("cont")
    const agent = yield* vm.guestAgent({ timeout: "120 seconds" })
    const readyMs = now() - started
    const syncedAt = Date.now()
    const event = yield* Fiber.join(portOpen)
    const openToSyncMs = syncedAt - (event.timestamp.seconds * 1000 + event.timestamp.microseconds / 1000)
    return { vm, agent, readyMs, openToSyncMs }
  })

const mbPerSecond = (bytes: number, ms: number) => bytes / 1e6 / (ms / 1000)

const program = Effect.gen(function*() {
  const files = yield* Guest.build()
  const ready: Array<number> = []
  const openToSync: Array<number> = []
  for (let i = 0; i < plan.boots; i++) {
    const b = yield* Effect.scoped(Effect.map(boot(files), ({ openToSyncMs, readyMs }) => ({ openToSyncMs, readyMs })))
    ready.push(b.readyMs)
    openToSync.push(b.openToSyncMs)
  }

  const measured = yield* Effect.scoped(Effect.gen(function*() {
    const { agent } = yield* boot(files)
    for (let i = 0; i < 5; i++) yield* agent.exec("/bin/true")
    const exec: Array<number> = []
    for (let i = 0; i < plan.execs; i++) {
      const t = now()
      const result = yield* agent.exec("/bin/true")
      exec.push(now() - t)
      if (result.exitCode !== 0) return yield* Effect.dieMessage(`/bin/true exited with ${result.exitCode}`)
    }
    const data = new Uint8Array(crypto.randomBytes(FILE_BYTES))
    const write: Array<number> = []
    const read: Array<number> = []
    for (let i = 0; i < plan.fileRounds; i++) {
      let t = now()
      yield* agent.writeFile("/tmp/bench.bin", data, { chunkSize })
      write.push(mbPerSecond(FILE_BYTES, now() - t))
      t = now()
      const back = yield* agent.readFile("/tmp/bench.bin", { chunkSize })
      read.push(mbPerSecond(FILE_BYTES, now() - t))
      if (!Buffer.from(back).equals(Buffer.from(data))) return yield* Effect.dieMessage(`${plan.fileMiB} MiB round trip differs`)
      yield* agent.exec("/bin/rm", { args: ["/tmp/bench.bin"] })
    }
    return { exec, write, read }
  }))

  const readyS = summarize(ready)
  const openS = summarize(openToSync)
  const execS = summarize(measured.exec)
  const writeS = summarize(measured.write)
  const readS = summarize(measured.read)
  if (json) {
    yield* Console.log(JSON.stringify({ agentReadyMs: readyS, portOpenToSyncMs: openS, execRoundTripMs: execS, writeMBps: writeS, readMBps: readS, fileMiB: plan.fileMiB, chunkSize }))
    return
  }
  yield* Console.log(`guest agent (TCG, ${os.cpus().length} cores${chunkSize ? `, chunk ${chunkSize} B` : ""})`)
  yield* Console.log(`  agent ready after launch     p50 ${fmtMs(readyS.median)}  (n=${readyS.n}, min ${fmtMs(readyS.min)}, max ${fmtMs(readyS.max)})`)
  yield* Console.log(`  port open → first sync        p50 ${fmtMs(openS.median)}  (QEMU's VSERPORT_CHANGE to our sync reply)`)
  yield* Console.log(`  exec /bin/true round trip    p50 ${fmtMs(execS.median)}  p95 ${fmtMs(execS.p95)}  (n=${execS.n})`)
  yield* Console.log(`  ${String(plan.fileMiB).padStart(2)} MiB writeFile             ${writeS.median.toFixed(1)} MB/s  (n=${writeS.n})`)
  yield* Console.log(`  ${String(plan.fileMiB).padStart(2)} MiB readFile              ${readS.median.toFixed(1)} MB/s  (n=${readS.n})`)
})

Effect.runPromise(program).catch((e) => {
  process.exitCode = 1
  // eslint-disable-next-line no-console
  console.error(e)
})
