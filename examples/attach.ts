/**
 * Attaching to a QEMU that someone else started with a QMP server socket:
 *
 *   qemu-system-x86_64 -machine none -display none -qmp unix:/tmp/qmp.sock,server=on,wait=off &
 *   npx tsx examples/attach.ts /tmp/qmp.sock
 *
 * Without an argument, the example starts such a QEMU itself (and stops it).
 */
import { Console, Effect } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { QmpClient } from "../src/index.js"

/** A QEMU listening for QMP on a unix socket, stopped when the scope closes. */
const standaloneQemu = Effect.acquireRelease(
  Effect.promise(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "attach-"))
    const sock = path.join(dir, "qmp.sock")
    const child = cp.spawn("qemu-system-x86_64", [
      "-machine", "none", "-display", "none", "-qmp", `unix:${sock},server=on,wait=off`
    ], { stdio: "ignore" })
    while (!fs.existsSync(sock)) await new Promise((r) => setTimeout(r, 10))
    return { sock, dir, child }
  }),
  ({ child, dir }) =>
    Effect.sync(() => {
      child.kill("SIGKILL")
      fs.rmSync(dir, { recursive: true, force: true })
    })
)

// The program only needs a QmpClient; where it comes from is the layer's business.
const program = Effect.gen(function*() {
  const qmp = yield* QmpClient.QmpClient
  const { qemu } = qmp.greeting.QMP.version
  yield* Console.log(`attached to QEMU ${qemu.major}.${qemu.minor}.${qemu.micro}`)
  yield* Console.log(`status: ${JSON.stringify(yield* qmp.execute("query-status"))}`)
  const commands = (yield* qmp.execute("query-commands")) as ReadonlyArray<{ name: string }>
  yield* Console.log(`${commands.length} commands available`)
})

const main = Effect.gen(function*() {
  const sock = process.argv[2] ?? (yield* standaloneQemu).sock
  yield* program.pipe(Effect.provide(QmpClient.layer({ address: sock })))
}).pipe(Effect.scoped)

Effect.runPromise(main).catch((e) => {
  console.error(String(e))
  process.exitCode = 1
})

