/**
 * effect-qemu's main job in one run: build (or reuse) a tiny Linux guest, boot
 * it under QEMU, talk to it over QMP and the serial console, watch its events,
 * and power it off cleanly, with timings.
 *
 *   npm run demo
 *
 * Where no guest can be built (not a Debian host, no access to Debian's
 * packages), it says why and shows the same over `-machine none`.
 */
import { Console, Duration, Effect, Fiber, Option, Stream } from "effect"
import { QemuMachine } from "../src/index.js"
import type { QmpMessage } from "../src/index.js"
import { Guest } from "../src/testing/index.js"

const ms = (start: number) => `${(performance.now() - start).toFixed(1)} ms`

const showEvent = (event: QmpMessage.Event) =>
  Console.log(`  event  ${event.event}${event.data ? ` ${JSON.stringify(event.data)}` : ""}`)

/** Prints every QMP event as it arrives, until the machine goes away. */
const watchEvents = (vm: QemuMachine.Machine) =>
  vm.events.pipe(Stream.runForEach(showEvent), Effect.ignore, Effect.fork)

const version = (vm: QemuMachine.Machine) =>
  vm.qmpClient.pipe(
    (client) => client._tag === "Some" ? client.value.greeting.QMP.version : undefined,
    (v) => (v ? `${v.qemu.major}.${v.qemu.minor}.${v.qemu.micro} ${v.package}`.trim() : "unknown")
  )

const withGuest = ({ files, built }: { readonly files: Guest.Files; readonly built: string }) =>
  Effect.gen(function*() {
    yield* Console.log(`guest: kernel ${files.kernelVersion} in ${files.dir} (ready in ${built})`)
    const t0 = performance.now()
    const vm = yield* QemuMachine.launch(Guest.config(files))
    const launched = ms(t0)
    yield* Console.log(`QEMU ${version(vm)} started, pid ${yield* vm.pid.pipe(Effect.map((p) => p._tag === "Some" ? p.value : "?"))}`)
    yield* Console.log(`  command line: ${vm.args.join(" ")}`)
    const watcher = yield* watchEvents(vm)

    // QEMU drops serial output while nothing is connected: connect, then run the CPU.
    const console = yield* vm.console
    yield* Console.log(`status before boot: ${JSON.stringify(yield* vm.command("query-status"))}`)
    const bootStart = performance.now()
    yield* vm.command("cont")
    yield* console.expect(files.readyMarker, { timeout: "90 seconds" })
    yield* console.expect("# ", { timeout: "10 seconds" })
    const boot = ms(bootStart)
    yield* Console.log(`status after boot: ${JSON.stringify(yield* vm.command("query-status"))}`)

    const rtStart = performance.now()
    yield* console.write("uname -a; echo DONE\"\"-$?\n")
    const out = yield* console.expect(/DONE-\d+\r?\n/, { timeout: "30 seconds" })
    const roundTrip = ms(rtStart)
    const uname = out.split(/\r?\n/).find((line) => line.startsWith("Linux")) ?? out
    yield* Console.log(`guest says: ${uname.trim()}`)

    const qmpStart = performance.now()
    for (let i = 0; i < 100; i++) yield* vm.command("query-status")
    const qmpRound = `${((performance.now() - qmpStart) / 100).toFixed(3)} ms`

    yield* Console.log("asking the guest to power off (ACPI power button)...")
    const offStart = performance.now()
    yield* vm.command("system_powerdown")
    yield* vm.eventWait("SHUTDOWN", { match: { data: { guest: true } }, timeout: "30 seconds" })
    yield* vm.wait({ timeout: "30 seconds" })
    const off = ms(offStart)
    yield* Fiber.join(watcher)
    const code = Option.getOrUndefined(yield* vm.exitCode)
    yield* Console.log(`QEMU exited with code ${code}; temp files removed`)
    yield* Console.log("\ntimings")
    yield* Console.log(`  launch (spawn → QMP ready)       ${launched}`)
    yield* Console.log(`  boot (cont → shell prompt)       ${boot}`)
    yield* Console.log(`  console round trip (uname -a)    ${roundTrip}`)
    yield* Console.log(`  QMP round trip (query-status)    ${qmpRound}`)
    yield* Console.log(`  power-off (powerdown → exited)   ${off}`)
  }).pipe(Effect.scoped)

const withoutGuest = (why: string) =>
  Effect.gen(function*() {
    yield* Console.log(`no guest: ${why}\nfalling back to -machine none (QMP only, no guest kernel)`)
    const t0 = performance.now()
    const vm = yield* QemuMachine.launch(
      QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.setMachine("none"))
    )
    const launched = ms(t0)
    yield* Console.log(`QEMU ${version(vm)} started: ${vm.args.join(" ")}`)
    const watcher = yield* watchEvents(vm)
    yield* Console.log(`status: ${JSON.stringify(yield* vm.command("query-status"))}`)
    yield* vm.command("stop")
    yield* vm.command("cont")
    yield* vm.eventWait("RESUME", { timeout: "5 seconds" })
    const offStart = performance.now()
    yield* vm.shutdown()
    yield* Fiber.join(watcher)
    yield* Console.log(`\ntimings\n  launch ${launched}\n  shutdown ${ms(offStart)}`)
  }).pipe(Effect.scoped)

const buildGuest = Effect.gen(function*() {
  const t0 = performance.now()
  yield* Console.log("guest: building from Debian packages, or reusing the cache...")
  const files = yield* Guest.build()
  return { files, built: ms(t0) }
})

const main = buildGuest.pipe(
  Effect.matchEffect({
    onFailure: (e) => withoutGuest(e.message),
    onSuccess: withGuest
  }),
  Effect.timeout(Duration.minutes(5))
)

Effect.runPromiseExit(main).then((exit) => {
  if (exit._tag === "Failure") {
    console.error("demo failed:", exit.cause.toString())
    process.exitCode = 1
  }
})
