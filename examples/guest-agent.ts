/**
 * Driving a guest through the QEMU guest agent instead of its serial console:
 * run programs, move files, read the guest's OS info, power it off.
 *
 *   npx tsx examples/guest-agent.ts
 *
 * Boots the tiny test guest (built from Debian packages on first use, with
 * Debian's qemu-guest-agent inside) under TCG. The agent channel is a
 * virtio-serial port backed by a unix socket in a private directory (for any
 * other machine, `GuestAgent.commandLineArgs(socket)` gives the QEMU options),
 * and `GuestAgent.connect` waits until the agent answers.
 */
import { Console, Duration, Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as GuestAgent from "../src/GuestAgent.js"
import { QemuMachine } from "../src/index.js"
import { Guest } from "../src/testing/index.js"

const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("utf8").trim()

/** A private (0700) directory for the agent socket, removed at the end. */
const socketDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "qga-example-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

const program = Effect.gen(function*() {
  const files = yield* Guest.build()
  const sockDir = yield* socketDir
  const socket = Guest.agentSocketPath(sockDir)

  // The kernel, the initramfs and `effect_qemu.ga=1` (start the agent), plus GuestAgent.commandLineArgs(socket).
  const vm = yield* QemuMachine.launch(Guest.config(files, { guestAgent: true, sockDir }))
  yield* vm.command("cont")
  const t0 = performance.now()
  // Requests sent before the agent runs wait in QEMU's socket: connect syncs as soon as it starts.
  const agent = yield* GuestAgent.connect({
    address: socket,
    timeout: "120 seconds",
    shutdownComplete: vm.eventWait("SHUTDOWN", { timeout: "60 seconds" })
  })
  yield* Console.log(`agent ready ${(performance.now() - t0).toFixed(0)} ms after cont`)

  const info = yield* agent.info
  const enabled = info.supported_commands.filter((c) => c.enabled).length
  yield* Console.log(`qemu-ga ${info.version}: ${enabled} of ${info.supported_commands.length} commands enabled`)

  // Typed commands: the result is decoded and typed from the agent's schema.
  const osInfo = yield* agent.execute("guest-get-osinfo")
  yield* Console.log(`guest OS: ${osInfo["pretty-name"]}, kernel ${osInfo["kernel-release"]}`)

  // Programs run without a shell; output and exit code come back.
  const uname = yield* agent.exec("/bin/uname", { args: ["-a"] })
  yield* Console.log(`uname -a → ${text(uname.stdout)} (exit ${uname.exitCode})`)
  const failing = yield* agent.exec("/bin/sh", { args: ["-c", "echo to-stderr >&2; exit 7"] })
  yield* Console.log(`sh -c 'exit 7' → exit ${failing.exitCode}, stderr "${text(failing.stderr)}"`)
  const sorted = yield* agent.exec("/usr/bin/sort", { input: "pear\napple\nfig\n" })
  yield* Console.log(`sort < input → ${text(sorted.stdout).split("\n").join(", ")}`)

  // Files move in chunks, any size.
  const payload = Buffer.alloc(256 * 1024, "effect-qemu ")
  const t1 = performance.now()
  yield* agent.writeFile("/tmp/payload.txt", payload)
  const back = yield* agent.readFile("/tmp/payload.txt")
  yield* Console.log(
    `256 KiB file round trip: ${Buffer.from(back).equals(payload) ? "identical" : "DIFFERENT"} in ${(performance.now() - t1).toFixed(0)} ms`
  )

  // Errors keep the agent's class.
  const missing = yield* Effect.flip(agent.readFile("/no/such/file"))
  yield* Console.log(`reading a missing file → ${missing._tag}: ${missing.message}`)

  // No reply on success: shutdown completes on QEMU's SHUTDOWN event (or when the socket closes).
  yield* agent.shutdown()
  yield* vm.wait({ timeout: "30 seconds" })
  yield* Console.log(`guest powered off; QEMU exit code ${(yield* vm.exitCode).pipe((c) => c._tag === "Some" ? c.value : "?")}`)
}).pipe(Effect.scoped)

Effect.runPromiseExit(program.pipe(
  Effect.catchTag("GuestUnavailable", (e) => Console.log(`no test guest here: ${e.reason}`)),
  Effect.timeout(Duration.minutes(5))
)).then((exit) => {
  if (exit._tag === "Failure") {
    console.error("guest-agent example failed:", exit.cause.toString())
    process.exitCode = 1
  }
})
