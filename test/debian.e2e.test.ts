/**
 * The real Debian guest: built (or taken from the cache), booted under TCG
 * to systemd's "running" through the agent, reached over SSH through its
 * forwarded port; the cached base image is unchanged afterwards.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import { DebianGuest, DebianImage } from "../src/testing/index.js"

const sha = (file: string) =>
  Effect.promise(() =>
    new Promise<string>((resolve, reject) => {
      const hash = crypto.createHash("sha256")
      fs.createReadStream(file).on("data", (d) => hash.update(d)).on("end", () => resolve(hash.digest("hex"))).on("error", reject)
    })
  )

describe("Debian guest", { timeout: 900_000 }, () => {
  it.scopedLive("boots to systemd running, answers the agent and SSH, and leaves the base image unchanged", () =>
    Effect.gen(function*() {
      const files = yield* DebianImage.build()
      const before = yield* sha(files.disk)
      yield* Effect.scoped(Effect.gen(function*() {
        const guest = yield* DebianGuest.launch()
        yield* Effect.logInfo(`Debian boot to running: ${guest.bootTime.toString()}`)
        expect(guest.systemState).toBe("running")
        yield* guest.agent.ping
        const uname = yield* guest.agent.exec("/usr/bin/uname", { args: ["-r"] })
        expect(Buffer.from(uname.stdout).toString().trim()).toBe(files.kernelVersion)

        const ssh = yield* guest.ssh("systemctl is-system-running; echo oops >&2; exit 3")
        expect(ssh).toEqual({ exitCode: 3, stdout: "running\n", stderr: "oops\n" })
        const write = yield* guest.ssh("cat > /root/from-host && cat /root/from-host", { input: "hello" })
        expect(write.stdout).toBe("hello")
        expect(fs.existsSync(guest.disk)).toBe(true)
      }))
      expect(yield* sha(files.disk)).toBe(before)
    }))

  it.scopedLive("clones a booted template: two at once, each with its own disk and SSH port, from a spare and not", () =>
    Effect.gen(function*() {
      const files = yield* DebianImage.build()
      const before = yield* sha(files.disk)
      yield* Effect.scoped(Effect.gen(function*() {
        // One spare: one of the two takes the QEMU started ahead (its overlay and port made
        // then), the other starts its own; the third takes the spare started after the first.
        const tpl = yield* DebianGuest.template({ spares: 1 })
        const [a, b] = yield* Effect.all([tpl.clone(), tpl.clone()], { concurrency: 2 })
        yield* Effect.logInfo(`Debian clones ready: ${a.bootTime.toString()}, ${b.bootTime.toString()}`)
        expect(a.sshPort).not.toBe(b.sshPort)
        expect(a.disk).not.toBe(b.disk)
        expect((yield* a.ssh("echo a > /root/mine && sync && cat /root/mine")).stdout).toBe("a\n")
        expect((yield* b.ssh("cat /root/mine 2>/dev/null; systemctl is-system-running")).stdout).toBe("running\n")
        yield* b.agent.ping
        const c = yield* tpl.clone()
        expect(new Set([a.sshPort, b.sshPort, c.sshPort]).size).toBe(3)
        expect(new Set([a.disk, b.disk, c.disk]).size).toBe(3)
        expect((yield* c.ssh("cat /root/mine 2>/dev/null; systemctl is-system-running")).stdout).toBe("running\n")
      }))
      expect(yield* sha(files.disk)).toBe(before)
    }))
})
