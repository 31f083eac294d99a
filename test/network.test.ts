/**
 * User-mode networking: the command line addNetwork builds, the parser of
 * HMP `info usernet`, and on the test guest: ephemeral host ports read back,
 * a forward added at runtime, and waitForPort telling a listening guest port
 * from a closed one (slirp accepts on the host side either way).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit } from "effect"
import * as net from "node:net"
import { QemuMachine } from "../src/index.js"
import { parseUsernet } from "../src/internal/machine/network.js"
import { Guest } from "../src/testing/index.js"

const readBanner = (port: number) =>
  Effect.async<string>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    let data = ""
    socket.on("data", (chunk) => (data += chunk.toString()))
    socket.on("error", () => {})
    socket.on("close", () => resume(Effect.succeed(data)))
    setTimeout(() => socket.destroy(), 3000)
  })

describe("addNetwork (no QEMU)", () => {
  it("puts a user-mode netdev bound to loopback and a virtio-net device on the command line", () => {
    const config = QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(
      QemuMachine.addNetwork({ forwards: [{ guest: 22 }, { guest: 80, host: 8080 }, { guest: 53, protocol: "udp" }] })
    )
    const line = QemuMachine.commandLine(config, { monitorAddress: undefined, consolePath: undefined } as never)
    expect(line).toContain("user,id=net0,hostfwd=tcp:127.0.0.1:0-:22,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:0-:53")
    expect(line).toContain("virtio-net-pci,netdev=net0,id=net0-dev")
  })

  it("refuses a port outside 1..65535 at once", () => {
    expect(() => QemuMachine.make({ binary: "x" }).pipe(QemuMachine.addNetwork({ forwards: [{ guest: 70000 }] }))).toThrow(
      /guest port/
    )
  })

  it("parses info usernet", () => {
    const text = [
      "Hub -1 (net0):",
      "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ",
      "  TCP[HOST_FORWARD]   9       127.0.0.1 45077       10.0.2.15  8080     0     0",
      "  TCP[ESTABLISHED]   17       127.0.0.1 50312       10.0.2.15  8080     0     0",
      "  UDP[236 sec]       12       127.0.0.1 40000       10.0.2.15    53     0     0"
    ].join("\r\n")
    expect(parseUsernet(text)).toEqual([
      { netdev: "net0", protocol: "tcp", state: "HOST_FORWARD", sourcePort: 45077, destPort: 8080 },
      { netdev: "net0", protocol: "tcp", state: "ESTABLISHED", sourcePort: 50312, destPort: 8080 },
      { netdev: "net0", protocol: "udp", state: "236 sec", sourcePort: 40000, destPort: 53 }
    ])
  })
})

describe("networking on the test guest", { timeout: 120_000 }, () => {
  it.scopedLive("forwards ephemeral host ports, adds one at runtime and waits for a guest port to answer", () =>
    Effect.gen(function*() {
      const files = yield* Guest.build()
      const vm = yield* QemuMachine.launch(
        Guest.config(files).pipe(QemuMachine.addNetwork({ forwards: [{ guest: 8080 }, { guest: 8081, host: 0 }] }))
      )
      const console = yield* vm.console
      yield* vm.command("cont")
      yield* console.expect(files.readyMarker, { timeout: "90 seconds" })
      yield* console.expect("# ", { timeout: "30 seconds" })

      const port = yield* vm.forwardedPort(8080)
      expect(port).toBeGreaterThan(0)
      expect(yield* vm.forwardedPort(8081)).not.toBe(port)
      const none = yield* Effect.exit(vm.forwardedPort(9999))
      expect(Exit.isFailure(none) && JSON.stringify(none.cause)).toContain("MachineError")

      // Nothing listens yet: the host side accepts, the guest resets, no answer.
      const closed = yield* Effect.exit(vm.waitForPort(8080, { timeout: "1500 millis" }))
      expect(Exit.isFailure(closed) && JSON.stringify(closed.cause)).toContain("QmpTimeoutError")

      // A banner on 8080; a listener that never writes on 8082 (added at runtime).
      yield* console.write("(while true; do echo hello-from-guest | nc -l -p 8080; done) >/dev/null 2>&1 &\n")
      yield* console.write("(sleep 600 | nc -l -p 8082) >/dev/null 2>&1 &\n")
      yield* vm.waitForPort(8080, { timeout: "30 seconds" })
      // waitForPort's own connection took the first banner: nc listens again a moment later.
      const banner = yield* readBanner(port).pipe(
        Effect.tap((text) => text === "" ? Effect.sleep("200 millis") : Effect.void),
        Effect.repeat({ until: (text) => text !== "", times: 20 })
      )
      expect(banner).toContain("hello-from-guest")

      const added = yield* vm.addForward({ guest: 8082 })
      expect(added).toBeGreaterThan(0)
      expect(yield* vm.forwardedPort(8082)).toBe(added)
      yield* vm.waitForPort(8082, { timeout: "30 seconds" })
    }))
})
