// A user's program, type-checked and run against the packed tarball (scripts/check-package.sh):
// launch a machine, ask for its status, shut it down.
import { Effect } from "effect"
import { EventMatch, QemuMachine } from "effect-qemu"

const config = QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.setMachine("none"))

const program = Effect.gen(function*() {
  const vm = yield* QemuMachine.launch(config)
  const status = yield* vm.command("query-status")
  const state = yield* vm.state
  yield* vm.shutdown()
  const after = yield* vm.state
  console.log(JSON.stringify({ status, state: state._tag, after: after._tag, match: EventMatch.eventMatch({ a: 1 }, { a: 1 }) }))
}).pipe(Effect.scoped)

Effect.runPromise(program).catch((e) => {
  console.error(e)
  process.exit(1)
})
