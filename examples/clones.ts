/**
 * Snapshots and clones: boot a guest once, then start copies of it in a
 * fraction of a boot, each with its own RAM and its own disk.
 *
 *   npx tsx examples/clones.ts
 *
 * Boots the tiny test guest (built from Debian packages on first use) under
 * TCG, cold, to time a boot; then `Guest.template` boots it once more with
 * its RAM in a file and saves it, and three clones start from that state:
 * RAM mapped copy-on-write, device state loaded, each writing to its own
 * qcow2 overlay of one base disk (which stays unchanged). Last, a snapshot
 * of a clone is saved to a directory, reopened with `Snapshot.open` (as
 * another process would) and restored once the clone has stopped. Everything (QEMUs, overlays, the
 * template's RAM file, the snapshot) goes with the scope.
 */
import { Console, Duration, Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { QemuMachine, Snapshot } from "../src/index.js"
import { Guest } from "../src/testing/index.js"

const ms = (start: number) => `${Math.round(performance.now() - start)} ms`

/** A private directory for the base disk and the snapshot, removed with the scope. */
const workDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "clones-example-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const program = Effect.gen(function*() {
  const dir = yield* workDir
  const base = path.join(dir, "base.raw")
  fs.writeFileSync(base, Buffer.alloc(4 << 20))

  // A cold boot, to compare with.
  let t = performance.now()
  yield* Effect.scoped(Effect.flatMap(Guest.launch(), (g) => g.run("true")))
  yield* Console.log(`cold launch to a shell answer: ${ms(t)}`)

  t = performance.now()
  const tpl = yield* Guest.template({ disks: [{ path: base }] })
  yield* Console.log(`template (one boot, saved): ${ms(t)}, in ${tpl.template.dir}`)

  // Three clones at once; each answers on its console.
  t = performance.now()
  const clones = yield* Effect.all([tpl.clone(), tpl.clone(), tpl.clone()], { concurrency: "unbounded" })
  yield* Effect.forEach(clones, (c) => c.run("true"), { concurrency: "unbounded" })
  yield* Console.log(`3 clones ready at once: ${ms(t)} (each took ${clones.map((c) => Duration.format(c.bootTime)).join(", ")})`)

  // Writes in one clone (RAM and disk) are not seen by the others.
  const [a, b] = clones
  yield* a!.run("echo only-in-a > /tmp/note && echo only-in-a | dd of=/dev/vda conv=fsync 2>/dev/null")
  yield* Console.log(`clone a: /tmp/note = ${(yield* a!.run("cat /tmp/note")).output}, disk starts with ${(yield* a!.run("head -c 9 /dev/vda")).output}`)
  yield* Console.log(`clone b: cat /tmp/note exits ${(yield* b!.run("cat /tmp/note 2>/dev/null")).status}, disk starts with ${(yield* b!.run("head -c 4 /dev/vda | od -An -tx1")).output.trim()}`)
  yield* Console.log(`base disk still zero: ${fs.readFileSync(base).subarray(0, 9).every((x) => x === 0)}`)

  // A snapshot of clone a, reopened from its directory and restored once a has stopped (the
  // snapshot records a's disk overlay, which a holds while it runs; it is removed with the scope).
  t = performance.now()
  const snap = yield* a!.vm.snapshot({ dir: path.join(dir, "snap") })
  yield* a!.vm.shutdown({ hard: true })
  yield* Console.log(`snapshot of clone a: ${ms(t)}, ${(snap.manifest.bytes / 2 ** 20).toFixed(1)} MiB, QEMU ${snap.manifest.qemuVersion}, ${snap.manifest.machineType}`)
  const reopened = yield* Snapshot.open(snap.dir)
  t = performance.now()
  const restored = yield* QemuMachine.restore(reopened)
  const console = yield* restored.console
  yield* console.write("cat /tmp/note\n")
  yield* console.expect("only-in-a", { timeout: "30 seconds" })
  yield* Console.log(`restored clone a reads its /tmp/note: ${ms(t)} after restore started`)
}).pipe(Effect.scoped)

Effect.runPromise(program).then(
  () => console.log("done: QEMUs, overlays, the template and the snapshot are gone"),
  (error) => {
    console.error(error)
    process.exitCode = 1
  }
)
