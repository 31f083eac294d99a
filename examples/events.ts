/**
 * QMP events as a Stream, filtered with EventMatch:
 *
 *   npx tsx examples/events.ts
 *
 * Pauses and resumes a `-machine none` QEMU a few times, and shows three ways
 * to consume events: a live stream, a one-off wait, and draining the buffer;
 * then a burst of commands as one batch (`vm.commandAll`).
 */
import { Chunk, Console, Effect, Fiber, Stream } from "effect"
import { EventMatch, QemuMachine } from "../src/index.js"

const program = Effect.gen(function*() {
  const vm = yield* QemuMachine.launch(
    QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.setMachine("none"))
  )

  // 1. A live stream: only STOP events, the first three, collected in the background.
  const stops = yield* vm.events.pipe(
    Stream.filter(EventMatch.eventMatch({ event: "STOP" })),
    Stream.take(3),
    Stream.runCollect,
    Effect.fork
  )
  yield* Effect.sleep("20 millis") // let the stream subscribe

  for (let i = 0; i < 3; i++) {
    yield* vm.command("stop")
    yield* vm.command("cont")
  }
  yield* Console.log(`stream saw ${Chunk.size(yield* Fiber.join(stops))} STOP events`)

  // 2. A one-off wait with a pattern. Events it skips stay cached for later calls.
  const resume = yield* vm.eventWait("RESUME", { timeout: "5 seconds" })
  yield* Console.log(`eventWait got ${resume.event} at ${resume.timestamp.seconds}.${resume.timestamp.microseconds}`)

  // 3. Drain whatever is buffered.
  const rest = yield* vm.getQmpEvents()
  yield* Console.log(`buffered: ${rest.map((e) => e.event).join(", ")}`)

  // 4. A burst as one batch: written at once and in order, one Effect step for all of them,
  //    typed results in order. Each stop/cont's event arrives before its reply.
  const [, , status] = yield* vm.commandAll([["stop"], ["cont"], ["query-status"]])
  yield* Console.log(`batch: ${status.status}`)
  const burst = Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? ["stop"] as const : ["cont"] as const))
  yield* vm.commandAll(burst)
  yield* Console.log(`a batch of ${burst.length}: ${(yield* vm.getQmpEvents()).length} events buffered`)
}).pipe(Effect.scoped)

Effect.runPromise(program).catch((e) => {
  console.error(String(e))
  process.exitCode = 1
})
