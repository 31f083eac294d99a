/**
 * Driving a guest through the QEMU guest agent instead of its serial console:
 * ping it, read its info, run a program, move a file, power it off.
 *
 *   npx tsx examples/guest-agent.ts
 *
 * Boots the tiny test guest (built from Debian packages on first use, with
 * Debian's qemu-guest-agent inside) under TCG. `Guest.launch({ guestAgent: true })`
 * starts the agent in the guest and gives the machine its channel
 * (`QemuMachine.addGuestAgent`: a virtio-serial port on a socket in the
 * machine's private directory); `guest.agent` is `vm.guestAgent()`, which
 * waits until the agent answers. QEMU, its sockets and its directory go with
 * the scope. For your own machine: `QemuMachine.addGuestAgent(config)`, then
 * `yield* vm.guestAgent()`.
 */
import { Console, Duration, Effect, Option } from "effect"
import { Guest } from "../src/testing/index.js"

const since = (start: number) => `${((performance.now() - start) / 1000).toFixed(1)} s`
const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("utf8").trim()

const program = Effect.gen(function*() {
  const t0 = performance.now()
  const guest = yield* Guest.launch({ guestAgent: true })
  yield* Console.log(`guest: kernel ${guest.files.kernelVersion}, shell after ${Duration.format(guest.bootTime)}`)

  // Connects and syncs; the agent starts a few seconds after the kernel.
  const agent = yield* guest.agent
  yield* Console.log(`agent: ready ${since(t0)} after launch`)

  yield* agent.ping
  yield* Console.log("ping: ok")

  const info = yield* agent.info
  const enabled = info.supported_commands.filter((c) => c.enabled).length
  yield* Console.log(`info: qemu-ga ${info.version}, ${enabled} of ${info.supported_commands.length} commands enabled`)

  // A program runs without a shell of ours: its output and exit code come back.
  const run = yield* agent.exec("/bin/sh", { args: ["-c", "echo \"hello from $(uname -sr)\"; exit 3"] })
  yield* Console.log(`exec: stdout "${text(run.stdout)}", exit code ${run.exitCode}`)

  // Files move in chunks, any size.
  const payload = Buffer.from("effect-qemu\n".repeat(10_000))
  yield* agent.writeFile("/tmp/example.txt", payload)
  const back = yield* agent.readFile("/tmp/example.txt")
  const same = Buffer.from(back).equals(payload)
  yield* Console.log(`file: wrote ${payload.length} bytes, read back ${back.length}, ${same ? "identical" : "DIFFERENT"}`)

  // The agent sends no reply: this completes on QEMU's SHUTDOWN event.
  yield* agent.shutdown()
  yield* guest.vm.wait({ timeout: "30 seconds" })
  const code = yield* guest.vm.exitCode
  yield* Console.log(`shutdown: guest powered off, QEMU exit code ${Option.getOrElse(code, () => "unknown")}`)
  if (!same) return yield* Effect.dieMessage("the file read back differs from the one written")
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
