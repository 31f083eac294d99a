import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import * as Guest from "../src/testing/Guest.js"
import * as Cli from "./helpers/cli.js"
import { processesMentioning } from "./helpers/machine.js"
import { qemuServer, tempDir } from "./helpers/qemu.js"

// A QEMU (-machine none) listening for QMP, for the length of the test.
const server = Effect.gen(function*() {
  const dir = yield* tempDir
  const sock = path.join(dir, "qmp.sock")
  yield* qemuServer(sock)
  return sock
})

// Each test spawns the CLI a few times: under tsx on a busy 2-core machine a start can take seconds.
const SPAWNS = 120_000

const replies = (lines: ReadonlyArray<Record<string, unknown>>) => lines.filter((l) => "return" in l || "error" in l)
const events = (lines: ReadonlyArray<Record<string, unknown>>) => lines.filter((l) => "event" in l)

describe("effect-qemu shell (stdin not a terminal)", () => {
  it.scopedLive("parses key=value arguments: ints, booleans, nested dotted keys, JSON, and rejects duplicates", () =>
    Effect.gen(function*() {
      const sock = yield* server
      const result = yield* Cli.run(["shell", sock], [
        "blockdev-add driver=null-co node-name=n0 size=1048576 read-only=true",
        "blockdev-add driver=raw node-name=r0 file.driver=null-co file.node-name=f0 file.size=4096",
        `blockdev-add driver=raw node-name=r1 file={"driver": "null-co", "node-name": "f1", "size": 8192}`,
        "blockdev-add driver=raw node-name=r2 file.driver=null-co file.driver=file",
        "query-named-block-nodes flat=true",
        "blockdev-add driver=null-co node-name=bad size=big"
      ].join("\n"))
      const out = Cli.jsonLines(result.stdout)
      // The duplicate line sends nothing: five replies for six lines.
      expect(replies(out)).toHaveLength(5)
      expect(out[0]).toEqual({ return: {} })
      expect(out[1]).toEqual({ return: {} })
      expect(out[2]).toEqual({ return: {} })
      const nodes = out[3]!.return as Array<{ "node-name": string; "ro": boolean; image: { "virtual-size": number } }>
      const byName = new Map(nodes.map((n) => [n["node-name"], n]))
      expect(byName.get("n0")?.ro).toBe(true)
      expect(byName.get("n0")?.image["virtual-size"]).toBe(1048576)
      expect(byName.get("f0")?.image["virtual-size"]).toBe(4096)
      expect(byName.get("f1")?.image["virtual-size"]).toBe(8192)
      expect(byName.has("r2")).toBe(false)
      // A string where QEMU wants an integer is QEMU's error, reported and counted.
      expect(out[4]).toMatchObject({ error: { class: "GenericError" } })
      expect(result.stderr).toContain("effect-qemu: line 4, column 58: key 'file.driver' given twice")
      expect(result.stderr).toMatch(/line 6: blockdev-add: GenericError: .*size/)
      expect(result.code).toBe(1)
    }), SPAWNS)

  it.scopedLive("sends HMP lines with -H", () =>
    Effect.gen(function*() {
      const sock = yield* server
      const result = yield* Cli.run(["shell", "-H", sock], "info status\ninfo name\nstop\ninfo status\n")
      const out = Cli.jsonLines(result.stdout)
      expect(replies(out).map((r) => r.return)).toEqual(["VM status: running\r\n", "", "", "VM status: paused\r\n"])
      expect(events(out).map((e) => e.event)).toEqual(["STOP"])
      expect(result.code).toBe(0)
    }), SPAWNS)

  it.scopedLive("runs a multi-line transaction, all or nothing", () =>
    Effect.gen(function*() {
      const sock = yield* server
      const result = yield* Cli.run(["shell", "-v", sock], [
        "blockdev-add driver=null-co node-name=n0",
        "transaction(",
        "  block-dirty-bitmap-add node=n0 name=b0",
        "  block-dirty-bitmap-add node=n0 name=b1 persistent=false",
        ")",
        "transaction( block-dirty-bitmap-add node=n0 name=b2",
        "  abort )",
        "query-named-block-nodes"
      ].join("\n"))
      const out = Cli.jsonLines(result.stdout)
      // -v echoes what was sent.
      expect(out[2]).toEqual({
        execute: "transaction",
        arguments: {
          actions: [
            { type: "block-dirty-bitmap-add", data: { node: "n0", name: "b0" } },
            { type: "block-dirty-bitmap-add", data: { node: "n0", name: "b1", persistent: false } }
          ]
        }
      })
      const r = replies(out)
      expect(r[1]).toEqual({ return: {} })
      expect(r[2]).toMatchObject({ error: { class: "GenericError" } })
      const nodes = r[3]!.return as Array<{ "node-name": string; "dirty-bitmaps"?: Array<{ name: string }> }>
      const n0 = nodes.find((n) => n["node-name"] === "n0")
      expect((n0?.["dirty-bitmaps"] ?? []).map((b) => b.name).sort()).toEqual(["b0", "b1"])
      expect(result.code).toBe(1)
    }), SPAWNS)

  it.scopedLive("prints events as they arrive, interleaved with replies", () =>
    Effect.gen(function*() {
      const sock = yield* server
      const result = yield* Cli.run(["shell", sock], "stop\nquery-status\ncont\nquery-status\n")
      const out = Cli.jsonLines(result.stdout)
      expect(out.map((l) => "event" in l ? l.event : "reply")).toEqual(["STOP", "reply", "reply", "RESUME", "reply", "reply"])
      expect(out[2]).toMatchObject({ return: { status: "paused" } })
      expect(out[5]).toMatchObject({ return: { status: "running" } })
      expect(result.code).toBe(0)
    }), SPAWNS)

  it.scopedLive("-N sends lines without negotiating and prints the greeting", () =>
    Effect.gen(function*() {
      const sock = yield* server
      const result = yield* Cli.run(["shell", "-N", sock], "query-status\nqmp_capabilities\nquery-status\n")
      const out = Cli.jsonLines(result.stdout)
      expect(out[0]).toHaveProperty("QMP")
      expect(out[1]).toMatchObject({ error: { class: "CommandNotFound" } })
      expect(out[2]).toEqual({ return: {} })
      expect(out[3]).toMatchObject({ return: { status: "running" } })
      expect(result.code).toBe(1)
    }), SPAWNS)

  it.scopedLive("takes the address from QMP_SOCKET and ends after quit", () =>
    Effect.gen(function*() {
      const sock = yield* server
      const result = yield* Cli.run(["shell"], "query-status\nquit\nquery-status\n", { env: { QMP_SOCKET: sock } })
      const out = Cli.jsonLines(result.stdout)
      expect(replies(out)).toHaveLength(2)
      expect(events(out).map((e) => e.event)).toContain("SHUTDOWN")
      expect(result.code).toBe(0)
    }), SPAWNS)
})

const oneLine = (text: string) => {
  const lines = text.split("\n").filter((l) => l.trim() !== "")
  expect(lines).toHaveLength(1)
  expect(text).not.toMatch(/^\s+at /m)
  return lines[0]
}

describe("effect-qemu errors", () => {
  it.scopedLive("bad address, refused connection, missing address: one line and exit 2", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const [bad, missing, refused, none] = yield* Effect.all([
        Cli.run(["shell", "localhost:http"]),
        Cli.run(["shell", path.join(dir, "nothing.sock")]),
        Cli.run(["shell", "127.0.0.1:1"]),
        Cli.run(["shell"], "", { env: { QMP_SOCKET: "" } })
      ], { concurrency: 2 })
      expect(oneLine(bad.stderr)).toBe("effect-qemu: bad address 'localhost:http': the port must be a number from 1 to 65535")
      expect(oneLine(missing.stderr)).toMatch(/^effect-qemu: .*cannot connect to .*nothing\.sock.*ENOENT/)
      expect(oneLine(refused.stderr)).toMatch(/^effect-qemu: .*cannot connect to 127\.0\.0\.1:1.*ECONNREFUSED/)
      expect(oneLine(none.stderr)).toBe("effect-qemu: no address given (pass one, or set QMP_SOCKET)")
      for (const r of [bad, missing, refused, none]) {
        expect(r.code).toBe(2)
        expect(r.stdout).toBe("")
      }
    }), SPAWNS)

  it.scopedLive("a QEMU that fails to start is one line with QEMU's complaint; an unknown subcommand exits 2", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const [launch, usage] = yield* Effect.all([
        Cli.run(["run", "--temp-dir", base, "--", "-machine", "none", "-no-such-option"]),
        Cli.run(["frobnicate"])
      ], { concurrency: 2 })
      expect(oneLine(launch.stderr)).toMatch(/^effect-qemu: QEMU launch failed: ExitedEarly \(exit code 1\): .*-no-such-option: invalid option/)
      expect(launch.code).toBe(2)
      expect(fs.readdirSync(base)).toEqual([])
      expect(usage.code).toBe(2)
      expect(usage.stderr).toContain("Invalid subcommand")
      expect(usage.stdout).toBe("")
    }), SPAWNS)
})

describe("effect-qemu shell, connection lost", () => {
  it.scopedLive("QEMU dying under the shell is one line and exit 2", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const sock = path.join(dir, "qmp.sock")
      const qemu = yield* qemuServer(sock)
      const running = yield* Cli.spawn(["shell", sock])
      running.child.stdin.write("query-status\n")
      yield* running.waitFor((out) => out.includes(`"status":"running"`))
      process.kill(qemu.pid, "SIGKILL")
      const result = yield* running.exit
      expect(result.code).toBe(2)
      // In the CLI's words, without the library's reason tags.
      expect(oneLine(result.stderr)).toMatch(/^effect-qemu: (QEMU closed the connection|the connection to QEMU failed)/)
      expect(result.stderr).not.toMatch(/Eof|SocketError|Refused/)
    }), SPAWNS)
})

describe("effect-qemu run", () => {
  it.scopedLive("mirrors the serial console on stderr, stdout keeps JSON only; EOF shuts QEMU down and removes its temp dir", () =>
    Effect.gen(function*() {
      const files = yield* Guest.build().pipe(Effect.orDie)
      const base = yield* tempDir
      const running = yield* Cli.spawn(Cli.runGuestArgs(files, { consoleOption: "--console", tempDir: base, paused: true }))
      running.child.stdin.write("query-status\ncont\n")
      yield* running.waitFor((out) => out.includes(files.readyMarker), 120_000, "stderr")
      expect(fs.readdirSync(base)).toHaveLength(1)
      expect(processesMentioning(base).length).toBeGreaterThan(0)
      running.child.stdin.end()
      const result = yield* running.exit
      expect(result.code).toBe(0)
      // 7.2 also sends "singlestep":false (gone since QEMU 9.0)
      expect(result.stdout).toMatch(/\{"return":\{"status":"prelaunch",("singlestep":false,)?"running":false\}\}/)
      expect(result.stdout).toContain(`"event":"RESUME"`)
      // Every stdout line is one JSON message: no console text, not even on a reply's line.
      expect(() => Cli.jsonLines(result.stdout)).not.toThrow()
      expect(result.stdout).not.toContain(files.readyMarker)
      expect(processesMentioning(base)).toEqual([])
      expect(fs.readdirSync(base)).toEqual([])
    }), 180_000)

  it.scopedLive("SIGINT shuts QEMU down and removes its temp dir", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const running = yield* Cli.spawn(["run", "--temp-dir", base, "--", "-machine", "none"])
      running.child.stdin.write("query-name\n")
      yield* running.waitFor((out) => out.includes(`{"return":{}}`))
      expect(processesMentioning(base).length).toBeGreaterThan(0)
      running.child.kill("SIGINT")
      const result = yield* running.exit
      expect(result.code).toBe(130)
      expect(processesMentioning(base)).toEqual([])
      expect(fs.readdirSync(base)).toEqual([])
    }), SPAWNS)
})

describe("effect-qemu schema", () => {
  it.scopedLive("--json compares the live QEMU with the generated types", () =>
    Effect.gen(function*() {
      const sock = yield* server
      const [result, launched] = yield* Effect.all([
        Cli.run(["schema", sock, "--json"]),
        // Without an address it starts the installed QEMU itself.
        Cli.run(["schema", "--json"], "", { env: { QMP_SOCKET: "" } })
      ], { concurrency: 2 })
      expect(launched.code).toBe(0)
      expect(JSON.parse(launched.stdout)).toEqual(JSON.parse(result.stdout))
      const diff = JSON.parse(result.stdout) as {
        live: { version: string; commands: number; events: number }
        generated: { version: string }
        commands: { onlyLive: Array<string>; onlyGenerated: Array<string> }
        events: { onlyLive: Array<string>; onlyGenerated: Array<string> }
      }
      expect(diff.live.version).toMatch(/^\d+\.\d+\.\d+$/)
      expect(diff.live.commands).toBeGreaterThan(100)
      expect(diff.live.events).toBeGreaterThan(10)
      // The generated types come from this QEMU release (npm run qapi:gen).
      expect(diff.generated.version).toMatch(/^\d+\.\d+/)
      expect(diff.commands).toEqual({ onlyLive: [], onlyGenerated: [] })
      expect(diff.events).toEqual({ onlyLive: [], onlyGenerated: [] })
      expect(result.code).toBe(0)
    }), SPAWNS)
})

// A fake guest agent: answers guest-sync-delimited after a 0xFF, guest-info and guest-ping, echoing
// the request's id as qemu-ga does; it first sends a stale reply that the client must drop.
const fakeAgent = (sock: string) =>
  Effect.acquireRelease(
    Effect.async<net.Server>((resume) => {
      const server = net.createServer((socket) => {
        // the CLI may hang up while a reply is on its way (EPIPE): not this fake agent's concern
        socket.on("error", () => {})
        socket.write("{\"return\": \"stale\", \"id\": 1}\n")
        let buffer = ""
        const reply = (body: Record<string, unknown>, id: unknown) =>
          socket.write(JSON.stringify(id === undefined ? body : { ...body, id }) + "\n")
        socket.on("data", (data: Buffer) => {
          buffer += data.toString("latin1").replace(/\xff/g, "")
          let nl = buffer.indexOf("\n")
          while (nl >= 0) {
            const request = JSON.parse(buffer.slice(0, nl)) as { execute: string; arguments?: { id?: number }; id?: unknown }
            buffer = buffer.slice(nl + 1)
            nl = buffer.indexOf("\n")
            if (request.execute === "guest-sync-delimited") socket.write(`\xff{"return": ${request.arguments?.id}}\n`, "latin1")
            else if (request.execute === "guest-ping") reply({ return: {} }, request.id)
            else if (request.execute === "guest-info") {
              reply({ return: { version: "7.2", supported_commands: [{ name: "guest-ping", enabled: true, "success-response": true }] } }, request.id)
            } else reply({ error: { class: "CommandNotFound", desc: `no ${request.execute}` } }, request.id)
          }
        })
      })
      server.listen(sock, () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.sync(() => server.close())
  )

describe("effect-qemu ga", () => {
  it.scopedLive("syncs with the agent (0xFF, guest-sync-delimited) and runs commands", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const sock = path.join(dir, "qga.sock")
      yield* fakeAgent(sock)
      const result = yield* Cli.run(["ga", sock], "guest-ping\nguest-nope\n")
      const out = Cli.jsonLines(result.stdout)
      expect(out).toEqual([{ return: {} }, { error: { class: "CommandNotFound", desc: "no guest-nope" } }])
      expect(result.stderr).toBe("effect-qemu: line 2: guest-nope: CommandNotFound: no guest-nope\n")
      expect(result.code).toBe(1)
    }), SPAWNS)

  it.scopedLive("talks to the real agent in the test guest", () =>
    Effect.gen(function*() {
      const guest = yield* Guest.launch({ guestAgent: true }).pipe(Effect.orDie)
      const result = yield* Cli.run(["ga", "--timeout", "90", guest.agentAddress!], "guest-ping\nguest-info\nguest-exec-status pid=999999\n")
      const out = Cli.jsonLines(result.stdout)
      expect(out[0]).toEqual({ return: {} })
      const info = out[1]!.return as { version: string; supported_commands: Array<{ name: string }> }
      expect(info.supported_commands.map((c) => c.name)).toContain("guest-ping")
      expect(out[2]).toMatchObject({ error: { class: "GenericError" } })
      expect(result.stderr).toMatch(/^effect-qemu: line 3: guest-exec-status: GenericError: /)
      expect(result.code).toBe(1)
    }), 180_000)
})
