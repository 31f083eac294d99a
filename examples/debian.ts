/**
 * A real Debian 12 guest: the image is built once with mmdebstrap (a few
 * minutes; cached in ~/.cache/effect-qemu), then each run boots its own
 * copy-on-write overlay under TCG, waits for systemd's "running" through the
 * guest agent, and runs commands over SSH through a forwarded port.
 *
 *   npx tsx examples/debian.ts
 */
import { Console, Effect } from "effect"
import { Image } from "../src/index.js"
import { DebianGuest } from "../src/testing/index.js"

const program = Effect.gen(function*() {
  const guest = yield* DebianGuest.launch({ consoleLog: process.env.DEBIAN_CONSOLE_LOG })
  yield* Console.log(`booted to "${guest.systemState}" in ${guest.bootTime.toString()}; ssh on 127.0.0.1:${guest.sshPort}`)

  const info = yield* Image.info(guest.disk, { forceShare: true })
  yield* Console.log(`disk: ${info.format} over ${info["backing-image"]?.filename}`)

  const { exitCode, stdout } = yield* guest.ssh("uname -r && systemctl is-system-running && ip -4 -brief addr show")
  yield* Console.log(`ssh exit ${exitCode}:\n${stdout}`)

  const agent = yield* guest.agent.exec("/usr/bin/hostname")
  yield* Console.log(`agent says hostname ${Buffer.from(agent.stdout).toString().trim()}`)
}).pipe(Effect.scoped)

Effect.runPromise(program).catch((error) => {
  console.error(error)
  process.exit(1)
})
