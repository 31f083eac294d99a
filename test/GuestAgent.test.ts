/**
 * The guest agent protocol against a scripted fake agent (stale replies,
 * garbage, oversized lines, a silent shutdown) and against a real QEMU whose
 * guest never runs an agent.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Either, Exit, Fiber } from "effect"
import * as net from "node:net"
import * as path from "node:path"
import * as GuestAgent from "../src/GuestAgent.js"
import * as QemuMachine from "../src/QemuMachine.js"
import * as GuestAgentService from "../src/internal/guestAgent/service.js"
import { makeFramer } from "../src/internal/guestAgent/transport.js"
import * as MachineConfig from "../src/internal/machine/config.js"
import { Guest } from "../src/testing/index.js"
import { QEMU, tempDir } from "./helpers/qemu.js"

interface Request {
  readonly execute: string
  readonly arguments?: Record<string, unknown>
  readonly id?: unknown
}

type Script = (request: Request, reply: (line: string | Buffer) => void, socket: net.Socket) => void

/** A fake agent on a unix socket: answers the 0xFF flush like qemu-ga, then hands each request to `script`. */
const fakeAgent = (script: Script, onConnect?: (socket: net.Socket) => void) =>
  Effect.gen(function*() {
    const dir = yield* tempDir
    const address = path.join(dir, "qga.sock")
    const seen: Array<Request> = []
    yield* Effect.acquireRelease(
      Effect.async<net.Server>((resume) => {
        const server = net.createServer((socket) => {
          onConnect?.(socket)
          let pending = ""
          socket.on("data", (chunk: Buffer) => {
            for (const byte of chunk) {
              if (byte === 0xff) {
                pending = ""
                socket.write(`{"error": {"class": "GenericError", "desc": "JSON parse error, stray '\\uFFFD'"}}\n`)
                continue
              }
              if (byte !== 10) {
                pending += String.fromCharCode(byte)
                continue
              }
              const request = JSON.parse(pending) as Request
              pending = ""
              seen.push(request)
              script(request, (line) => socket.write(line), socket)
            }
          })
          socket.on("error", () => {})
        })
        server.listen(address, () => {
          resume(Effect.succeed(server))
        })
      }),
      (server) =>
        Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
        })
    )
    return { address, seen }
  })

/** Answers syncs the way qemu-ga does: the 0xFF delimiter, then the id. */
const answerSync = (request: Request, reply: (line: string | Buffer) => void): boolean => {
  if (request.execute !== "guest-sync-delimited") return false
  reply(Buffer.concat([Buffer.of(0xff), Buffer.from(`{"return": ${JSON.stringify(request.arguments?.id)}}\n`)]))
  return true
}

const ok = (request: Request, value: unknown = {}) => JSON.stringify({ return: value, id: request.id }) + "\n"

const b64 = (bytes: Uint8Array | string) => Buffer.from(bytes).toString("base64")

/**
 * Waits for a condition the fake agent's side makes true, polling; a generous
 * deadline fails the test with `what` instead of hanging (no fixed sleep: the
 * passing case waits only as long as it takes).
 */
const eventually = (what: string, condition: () => boolean, deadline: Duration.DurationInput = "10 seconds") =>
  Effect.gen(function*() {
    while (!condition()) yield* Effect.sleep("5 millis")
  }).pipe(Effect.timeoutFail({ duration: deadline, onTimeout: () => new Error(`timed out waiting until ${what}`) }))

describe("GuestAgent protocol", () => {
  it.scopedLive("connect syncs past stale replies and a partial line left on the channel", () =>
    Effect.gen(function*() {
      const { address, seen } = yield* fakeAgent(
        (request, reply) => {
          if (answerSync(request, reply)) return
          reply(ok(request, request.execute === "guest-info" ? { version: "7.2.0", supported_commands: [] } : {}))
        },
        // What a previous client left behind: a stale reply and half a message.
        (socket) => socket.write(`{"return": {}, "id": 1}\n{"return": {"pid": 4`)
      )
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      yield* agent.ping
      expect((yield* agent.info).version).toBe("7.2.0")
      expect(seen.map((r) => r.execute)).toEqual(["guest-sync-delimited", "guest-ping", "guest-info"])
      // Every command carries a fresh id.
      expect(new Set(seen.slice(1).map((r) => r.id)).size).toBe(2)
    }))

  it.scopedLive("syncs sent while the agent is not answering are answered late: the latest one counts", () =>
    Effect.gen(function*() {
      const held: Array<Request> = []
      const { address, seen } = yield* fakeAgent((request, reply) => {
        if (request.execute === "guest-sync-delimited" && held.length < 3) {
          held.push(request)
          if (held.length === 3) for (const r of held) answerSync(r, reply)
          return
        }
        if (answerSync(request, reply)) return
        reply(ok(request))
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "20 seconds" })
      yield* agent.ping
      expect(seen.filter((r) => r.execute === "guest-sync-delimited").length).toBeGreaterThanOrEqual(3)
    }))

  it.scopedLive("garbage fails the call in flight with QmpProtocolError; the next call re-syncs and works", () =>
    Effect.gen(function*() {
      let pings = 0
      const { address, seen } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (request.execute === "guest-ping" && pings++ === 0) return reply("this is {not json\n")
        reply(ok(request))
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      const first = yield* Effect.flip(agent.ping)
      expect(first).toMatchObject({ _tag: "QmpProtocolError", raw: "this is {not json" })
      yield* agent.ping
      expect(seen.map((r) => r.execute)).toEqual(["guest-sync-delimited", "guest-ping", "guest-sync-delimited", "guest-ping"])
      expect(yield* agent.isConnected).toBe(true)
    }))

  it.scopedLive("a request the agent never answers (it died holding it) times out; the next call re-syncs first", () =>
    Effect.gen(function*() {
      let swallow = true
      const { address, seen } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (swallow) {
          swallow = false
          return
        }
        reply(ok(request))
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      const lost = yield* Effect.flip(agent.execute("guest-ping", undefined, { timeout: "300 millis" }))
      expect(lost).toMatchObject({ _tag: "QmpTimeoutError", operation: expect.stringContaining("guest-ping") })
      yield* agent.ping
      expect(seen.map((r) => r.execute)).toEqual(["guest-sync-delimited", "guest-ping", "guest-sync-delimited", "guest-ping"])
    }))

  it.scopedLive("an oversized message is a QmpProtocolError and the channel recovers", () =>
    Effect.gen(function*() {
      let big = true
      const { address } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (request.execute === "guest-get-host-name" && big) {
          big = false
          return reply(ok(request, { "host-name": "x".repeat(10_000) }))
        }
        reply(ok(request, request.execute === "guest-get-host-name" ? { "host-name": "small" } : {}))
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds", maxMessageSize: 4096 })
      const error = yield* Effect.flip(agent.execute("guest-get-host-name"))
      expect(error._tag).toBe("QmpProtocolError")
      expect(yield* agent.execute("guest-get-host-name")).toEqual({ "host-name": "small" })
    }))

  it.scopedLive("a reply that does not fit the command's schema is a QmpProtocolError naming the member", () =>
    Effect.gen(function*() {
      const { address } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        reply(ok(request, { version: 7, supported_commands: [] }))
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      const error = yield* Effect.flip(agent.info)
      expect(error._tag).toBe("QmpProtocolError")
      expect(error.message).toContain("version")
    }))

  it.scopedLive("an agent error becomes GuestAgentError with its class; untyped commands pass through", () =>
    Effect.gen(function*() {
      const { address, seen } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (request.execute === "guest-custom") return reply(ok(request, { echoed: request.arguments }))
        if (request.execute === "guest-exec" || request.execute === "guest-ping") {
          return reply(JSON.stringify({ id: request.id, error: { class: "GenericError", desc: `bad arguments ${JSON.stringify(request.arguments)}` } }) + "\n")
        }
        reply(JSON.stringify({ id: request.id, error: { class: "CommandNotFound", desc: `The command ${request.execute} has not been found` } }) + "\n")
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      expect(yield* agent.execute("guest-custom", { a: [1] })).toEqual({ echoed: { a: [1] } })
      // Known names are typed from the generated agent schema: wrong arguments do not compile.
      // @ts-expect-error guest-exec needs a path
      const wrongArgs = () => agent.execute("guest-exec", {})
      // @ts-expect-error guest-ping takes no arguments
      const extraArgs = () => agent.execute("guest-ping", { x: 1 })
      // At run time nothing is checked here: such a call goes out as written and the agent judges it.
      expect(yield* Effect.flip(wrongArgs())).toMatchObject({ _tag: "GuestAgentError", command: "guest-exec", desc: "bad arguments {}" })
      expect(yield* Effect.flip(extraArgs())).toMatchObject({ _tag: "GuestAgentError", command: "guest-ping", desc: "bad arguments {\"x\":1}" })
      expect(seen.filter((r) => r.execute === "guest-exec" || r.execute === "guest-ping").map((r) => [r.execute, r.arguments]))
        .toEqual([["guest-exec", {}], ["guest-ping", { x: 1 }]])
      const error = yield* Effect.flip(agent.execute("guest-nope"))
      expect(error).toMatchObject({ _tag: "GuestAgentError", command: "guest-nope", errorClass: "CommandNotFound" })
    }))

  it.scopedLive("concurrent callers each get their own reply", () =>
    Effect.gen(function*() {
      const { address } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        // Replies arrive a little later, in separate writes.
        setTimeout(() => reply(ok(request, { "host-name": `h${String(request.id)}` })), 2)
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      const names = yield* Effect.all(
        Array.from({ length: 20 }, () => agent.execute("guest-get-host-name")),
        { concurrency: "unbounded" }
      )
      expect(new Set(names.map((n) => n["host-name"])).size).toBe(20)
    }))

  it.scopedLive("a call whose wait was interrupted leaves a stale reply that the next call ignores", () =>
    Effect.gen(function*() {
      const late: Array<() => void> = []
      const { address } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (request.execute === "guest-get-host-name" && late.length === 0) {
          late.push(() => reply(ok(request, { "host-name": "stale" })))
          return
        }
        // The stale reply goes out right before this one.
        for (const send of late.splice(0)) send()
        reply(ok(request, { "host-name": "fresh" }))
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      const slow = yield* Effect.fork(agent.execute("guest-get-host-name"))
      // Interrupted only once the agent holds the request, so its reply does come late.
      yield* eventually("the agent holds the first guest-get-host-name", () => late.length === 1)
      yield* Fiber.interrupt(slow)
      const fresh = yield* agent.execute("guest-get-host-name", undefined, { timeout: "5 seconds" })
      expect(fresh).toEqual({ "host-name": "fresh" })
    }))

  it.scopedLive("shutdown completes when the agent socket closes; an agent error fails it", () =>
    Effect.gen(function*() {
      let refuse = true
      const { address } = yield* fakeAgent((request, reply, socket) => {
        if (answerSync(request, reply)) return
        if (request.execute !== "guest-shutdown") return reply(ok(request))
        if (refuse) {
          refuse = false
          return reply(JSON.stringify({ id: request.id, error: { class: "GenericError", desc: "no" } }) + "\n")
        }
        // Success: no reply, the guest (and QEMU) go away.
        setTimeout(() => socket.destroy(), 20)
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      const refused = yield* Effect.flip(agent.shutdown({ mode: "halt" }))
      expect(refused).toMatchObject({ _tag: "GuestAgentError", command: "guest-shutdown" })
      yield* agent.shutdown({ timeout: "10 seconds" })
      expect(yield* agent.isConnected).toBe(false)
      const closed = yield* Effect.flip(agent.shutdown())
      expect(closed._tag).toBe("QmpConnectionError")
    }))

  it.scopedLive("shutdown completes on the caller's completion signal", () =>
    Effect.gen(function*() {
      const { address } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (request.execute !== "guest-shutdown") reply(ok(request))
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds", shutdownComplete: Effect.sleep("100 millis") })
      yield* agent.shutdown({ timeout: "10 seconds" })
      expect(yield* agent.isConnected).toBe(true)
    }))

  it.scopedLive("shutdown starts watching before guest-shutdown is sent, so an immediate shutdown is not missed", () =>
    Effect.gen(function*() {
      const steps: Array<string> = []
      const shutDown = yield* Deferred.make<void>()
      const { address } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (request.execute !== "guest-shutdown") return reply(ok(request))
        // The guest is gone the moment the request arrives, before anything else happens.
        steps.push("received")
        Deferred.unsafeDone(shutDown, Exit.void)
      })
      const watch = Effect.acquireRelease(
        Effect.sync(() => steps.push("watching")),
        () => Effect.sync(() => steps.push("released"))
      ).pipe(Effect.as(Deferred.await(shutDown)))
      const agent = yield* GuestAgentService.connect({ address, timeout: "10 seconds", shutdownWatch: watch })
      yield* agent.shutdown({ timeout: "10 seconds" })
      expect(steps).toEqual(["watching", "received", "released"])
    }))

  it.scopedLive("readFile and writeFile close the guest handle when a chunk fails", () =>
    Effect.gen(function*() {
      const { address, seen } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (request.execute === "guest-file-open") return reply(ok(request, 1000))
        if (request.execute === "guest-file-close") return reply(ok(request))
        reply(JSON.stringify({ id: request.id, error: { class: "GenericError", desc: "I/O error" } }) + "\n")
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      const read = yield* Effect.flip(agent.readFile("/f"))
      expect(read).toMatchObject({ _tag: "GuestAgentError", command: "guest-file-read", desc: "I/O error" })
      const write = yield* Effect.flip(agent.writeFile("/f", "data"))
      expect(write).toMatchObject({ _tag: "GuestAgentError", command: "guest-file-write" })
      expect(seen.filter((r) => r.execute !== "guest-sync-delimited").map((r) => r.execute)).toEqual([
        "guest-file-open",
        "guest-file-read",
        "guest-file-close",
        "guest-file-open",
        "guest-file-write",
        "guest-file-close"
      ])
      expect(seen.filter((r) => r.execute === "guest-file-close").map((r) => r.arguments)).toEqual([{ handle: 1000 }, { handle: 1000 }])
    }))

  it.scopedLive("exec sends its input in base64, polls until the program exited, and decodes its output to bytes", () =>
    Effect.gen(function*() {
      const stdout = Uint8Array.of(0x68, 0x69, 0x0a, 0x00, 0xff, 0xfe, 0x80)
      let polls = 0
      const { address, seen } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (request.execute === "guest-exec") return reply(ok(request, { pid: 4242 }))
        if (request.execute === "guest-exec-status") {
          return reply(ok(request, polls++ === 0
            ? { exited: false }
            : { exited: true, exitcode: 3, "out-data": b64(stdout), "err-data": b64("héllo\n"), "out-truncated": false }))
        }
        reply(ok(request))
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      const result = yield* agent.exec("/bin/tool", { args: ["-x"], input: Uint8Array.of(0, 1, 0xff) })
      expect(result.pid).toBe(4242)
      expect(result.exitCode).toBe(3)
      expect(Buffer.from(result.stdout)).toEqual(Buffer.from(stdout))
      expect(Buffer.from(result.stderr).toString("utf8")).toBe("héllo\n")
      expect(result.truncated).toBe(false)
      const exec = seen.find((r) => r.execute === "guest-exec")!
      expect(exec.arguments).toEqual({ path: "/bin/tool", arg: ["-x"], "input-data": b64(Uint8Array.of(0, 1, 0xff)), "capture-output": true })
      expect(seen.filter((r) => r.execute === "guest-exec-status").map((r) => r.arguments)).toEqual([{ pid: 4242 }, { pid: 4242 }])
    }))

  it.scopedLive("exec of a program killed by a signal gives the negative signal number as its exit code", () =>
    Effect.gen(function*() {
      const { address } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (request.execute === "guest-exec") return reply(ok(request, { pid: 7 }))
        if (request.execute === "guest-exec-status") return reply(ok(request, { exited: true, signal: 9, "err-truncated": true }))
        reply(ok(request))
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      const result = yield* agent.exec("/bin/sleep", { args: ["100"] })
      expect(result.exitCode).toBe(-9)
      expect(result.stdout).toEqual(new Uint8Array(0))
      expect(result.truncated).toBe(true)
    }))

  it.scopedLive("readFile decodes each chunk's buf-b64 and joins them; writeFile sends the bytes in base64 chunks", () =>
    Effect.gen(function*() {
      const content = Buffer.from([...Buffer.from("line one\n"), 0x00, 0xff, 0x80, ...Buffer.from("ünïcode")])
      const chunks = [content.subarray(0, 6), content.subarray(6, 12), content.subarray(12)]
      let reads = 0
      const { address, seen } = yield* fakeAgent((request, reply) => {
        if (answerSync(request, reply)) return
        if (request.execute === "guest-file-open") return reply(ok(request, 1000))
        if (request.execute === "guest-file-read") {
          const chunk = chunks[reads++] ?? Buffer.alloc(0)
          return reply(ok(request, { count: chunk.length, "buf-b64": b64(chunk), eof: reads >= chunks.length }))
        }
        if (request.execute === "guest-file-write") {
          return reply(ok(request, { count: Buffer.from(String(request.arguments?.["buf-b64"]), "base64").length, eof: false }))
        }
        reply(ok(request))
      })
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      const read = yield* agent.readFile("/f", { chunkSize: 6 })
      expect(Buffer.from(read)).toEqual(content)
      expect(reads).toBe(3)
      yield* agent.writeFile("/g", content, { chunkSize: 8 })
      const written = seen.filter((r) => r.execute === "guest-file-write")
        .map((r) => Buffer.from(String(r.arguments?.["buf-b64"]), "base64"))
      expect(written.map((b) => b.length)).toEqual([8, 8, 5])
      expect(Buffer.concat(written)).toEqual(content)
    }))

  it.scopedLive("interrupting connect while it waits for the sync closes the socket", () =>
    Effect.gen(function*() {
      let closed = false
      const { address, seen } = yield* fakeAgent(
        () => {},
        (socket) => socket.on("close", () => (closed = true))
      )
      const connecting = yield* Effect.fork(Effect.scoped(GuestAgent.connect({ address, timeout: "30 seconds" })))
      yield* eventually("the agent sees the first sync", () => seen.length > 0)
      expect(seen.map((r) => r.execute)).toEqual(["guest-sync-delimited"])
      const exit = yield* Fiber.interrupt(connecting)
      expect(Exit.isInterrupted(exit)).toBe(true)
      // Well before connect's own 30 s deadline: the interruption closed the socket.
      yield* eventually("the agent's end of the socket closes", () => closed, "5 seconds")
    }))

  it.scopedLive("a connect that fails releases its socket at once, though the caller's scope lives on", () =>
    Effect.gen(function*() {
      let open = 0
      let answer = false
      const { address } = yield* fakeAgent(
        (request, reply) => {
          if (answer) answerSync(request, reply)
        },
        (socket) => {
          open++
          socket.on("close", () => open--)
        }
      )
      const failed = yield* Effect.flip(GuestAgent.connect({ address, timeout: "300 millis" }))
      expect(failed._tag).toBe("QmpTimeoutError")
      yield* eventually("the failed connect's socket closes", () => open === 0, "5 seconds")
      answer = true
      const agent = yield* GuestAgent.connect({ address, timeout: "10 seconds" })
      expect(yield* agent.isConnected).toBe(true)
      expect(open).toBe(1)
    }))

  it.scopedLive("no socket at the address: QmpTimeoutError at the deadline", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const error = yield* Effect.flip(GuestAgent.connect({ address: path.join(dir, "absent.sock"), timeout: "300 millis" }))
      expect(error).toMatchObject({ _tag: "QmpTimeoutError" })
    }))

  it.scopedLive("a real QEMU whose guest runs no agent: QmpTimeoutError at the deadline, nothing left behind", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const address = path.join(dir, "qga.sock")
      // The CPU never starts (-S): the port exists, nobody opens it in the guest.
      const vm = yield* QemuMachine.launch(
        QemuMachine.make({ binary: QEMU, args: ["-accel", "tcg", "-display", "none", "-nodefaults", "-S"] }).pipe(
          QemuMachine.setMachine("q35"),
          QemuMachine.addArgs(...GuestAgent.commandLineArgs(address))
        )
      )
      const error = yield* Effect.flip(Effect.scoped(GuestAgent.connect({ address, timeout: "1500 millis" })))
      expect(error).toMatchObject({ _tag: "QmpTimeoutError" })
      expect(error._tag === "QmpTimeoutError" && error.operation).toContain("sync")
      // The chardev took our connection and let it go: a second client connects and times out the same way.
      const again = yield* Effect.either(Effect.scoped(GuestAgent.connect({ address, timeout: "500 millis" })))
      expect(Either.isLeft(again) && again.left._tag).toBe("QmpTimeoutError")
      expect(yield* vm.isRunning).toBe(true)
    }))
})

describe("GuestAgent framing", () => {
  it("a 0xFF byte drops the partial line before it; lines split across reads join", () => {
    const lines: Array<string> = []
    const push = makeFramer(1024, { onLine: (l) => lines.push(l), onOversized: () => lines.push("OVERSIZED") })
    push(Buffer.from("{\"a\":1}\n{\"par"))
    push(Buffer.concat([Buffer.from("tial"), Buffer.of(0xff), Buffer.from("{\"return\": 5}\n{\"b\"")]))
    push(Buffer.from(":2}\r\n"))
    expect(lines).toEqual(["{\"a\":1}", "{\"return\": 5}", "{\"b\":2}\r"])
  })

  it("a line over the limit is reported once and the framer goes on", () => {
    const lines: Array<string> = []
    const push = makeFramer(8, { onLine: (l) => lines.push(l), onOversized: (size) => lines.push(`OVERSIZED ${size}`) })
    push(Buffer.from("0123456789abc\nok\n0123"))
    push(Buffer.from("456789"))
    push(Buffer.from("more of the same long line\nfine\n"))
    expect(lines).toEqual(["OVERSIZED 13", "ok", "OVERSIZED 10", "fine"])
  })
})

describe("GuestAgent command line", () => {
  it("commands: the agent schema's 42 commands, the ones without a success reply marked", () => {
    const names = Object.keys(GuestAgent.commands)
    expect(names).toHaveLength(42)
    expect(names.filter((n) => !GuestAgent.commands[n as GuestAgent.CommandName].successResponse).sort()).toEqual([
      "guest-shutdown",
      "guest-suspend-disk",
      "guest-suspend-hybrid",
      "guest-suspend-ram"
    ])
    expect(GuestAgent.schemaVersion).toMatch(/^7\.2\./)
  })

  it("commandLineArgs: a socket chardev QEMU listens on, virtio-serial, the named port with a device id", () => {
    expect(GuestAgent.commandLineArgs("/run/vm,1/qga.sock")).toEqual([
      "-chardev",
      "socket,path=/run/vm,,1/qga.sock,server=on,wait=off,id=qga0",
      "-device",
      "virtio-serial-pci",
      "-device",
      "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0,id=qga0-port"
    ])
  })

  it("Guest.config with guestAgent asks the guest to start the agent and adds the channel with QemuMachine.addGuestAgent", () => {
    const files: Guest.Files = {
      dir: "/g",
      kernel: "/g/vmlinuz",
      initrd: "/g/initramfs.cpio.gz",
      readyMarker: "R",
      kernelVersion: "6.1",
      pvpanic: false,
      guestAgent: true
    }
    const withAgent = Guest.config(files, { guestAgent: true, sockDir: "/s", guestAgentDisabled: ["guest-exec", "guest-file-open"] })
    const append = withAgent.args[withAgent.args.indexOf("-append") + 1]
    expect(append).toContain(" effect_qemu.ga=1 effect_qemu.ga_block=guest-exec,guest-file-open")
    expect(withAgent.sockDir).toBe("/s")
    expect(withAgent.guestAgent).toBe(true)
    // No hand-written channel: the machine adds it where it puts its sockets.
    expect(withAgent.args.join(" ")).not.toContain("virtserialport")
    const socket = Guest.agentSocketPath("/s")
    expect(socket).toBe("/s/guest-qga.sock")
    const line = MachineConfig.commandLine(withAgent, { monitorAddress: "/s/guest.sock", consolePath: "/s/guest-console.sock", guestAgentPath: socket }).join(" ")
    expect(line).toContain(GuestAgent.commandLineArgs(socket).join(" "))
    expect(Guest.config(files, { guestAgent: true }).guestAgent).toBe(true)
    const without = Guest.config(files)
    expect(without.args.join(" ")).not.toContain("effect_qemu.ga")
    expect(without.args.join(" ")).not.toContain("virtserialport")
    expect(without.guestAgent).toBe(false)
  })
})
