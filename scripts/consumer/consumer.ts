// A user's program, type-checked and run against the packed tarball (scripts/check-package.sh):
// launch a machine, ask for its status, shut it down.
import { Effect } from "effect"
import { EventMatch, QemuMachine } from "effect-qemu"

const config = QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.setMachine("none"))

const program = Effect.gen(function*() {
  const vm = yield* QemuMachine.launch(config)
  // Typed from the shipped declarations: if they were lost, `status` would be `any` and the
  // expect-error lines below would compile, failing this check.
  const status = yield* vm.command("query-status")
  const running: boolean = status.running
  // @ts-expect-error the reply is typed: StatusInfo has no member "bogus"
  status.bogus
  // @ts-expect-error the arguments are typed
  vm.command("blockdev-add", { driver: "null-co", node_name: "n" })
  const state = yield* vm.state
  yield* vm.shutdown()
  const after = yield* vm.state
  console.log(JSON.stringify({ status, running, state: state._tag, after: after._tag, match: EventMatch.eventMatch({ a: 1 }, { a: 1 }) }))
}).pipe(Effect.scoped)

Effect.runPromise(program).catch((e) => {
  console.error(e)
  process.exit(1)
})
