import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import * as Guest from "../src/testing/Guest.js"
import * as Cli from "./helpers/cli.js"
import { processesMentioning } from "./helpers/machine.js"
import { qemuServer, tempDir } from "./helpers/qemu.js"

// The CLI through pipes, as scripts use it: what reaches stdout, what reaches stderr, how it ends.

const SPAWNS = 120_000

const server = Effect.gen(function*() {
  const dir = yield* tempDir
  const sock = path.join(dir, "qmp.sock")
  const qemu = yield* qemuServer(sock)
  return { dir, sock, qemu }
})

const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`

const oneLine = (text: string) => {
  const lines = text.split("\n").filter((l) => l.trim() !== "")
  expect(lines).toHaveLength(1)
  expect(text).not.toMatch(/^\s+at /m)
  return lines[0]
}

// A server that greets with `bytes` and then says nothing.
const sayingServer = (sock: string, bytes: Buffer) =>
  Effect.acquireRelease(
    Effect.async<net.Server>((resume) => {
      const s = net.createServer((socket) => {
        // the CLI may hang up first: that is not this test's business
        socket.on("error", () => {})
        socket.write(bytes)
      })
      s.listen(sock, () => resume(Effect.succeed(s)))
    }),
    (s) => Effect.sync(() => s.close())
  )

/** `run` with a machine answering on it, and its QEMU's pid. */
const runningQemu = Effect.gen(function*() {
  const base = yield* tempDir
  const running = yield* Cli.spawn(["run", "--temp-dir", base, "--", "-machine", "none"])
  running.child.stdin.write("query-status\n")
  yield* running.waitFor((out) => out.includes(`"status":"running"`))
  // Only QEMU's command line holds its temp dir (the CLI's holds the base).
  const [qemu] = processesMentioning(`${base}/qemu-machine`)
  expect(qemu).toBeDefined()
  return { running, qemu: qemu! }
})

describe("effect-qemu through pipes", () => {
  it.scopedLive("a reader that goes away (| head -c 20) ends the shell quietly, no stack trace", () =>
    Effect.gen(function*() {
      const { sock } = yield* server
      const running = yield* Cli.spawn(["shell", sock], {
        wrap: (command) => ["sh", "-c", `${command.map(quote).join(" ")} | head -c 20`]
      })
      running.child.stdin.end("query-qmp-schema\nquery-qmp-schema\nquery-status\n")
      const result = yield* running.exit
      expect(result.stdout).toHaveLength(20)
      expect(result.stderr).toBe("")
    }), SPAWNS)

  it.scopedLive("a path that is no socket, a directory, a name that does not resolve: what is wrong, in one line", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = path.join(dir, "plain")
      fs.writeFileSync(file, "")
      const [plain, directory, dns] = yield* Effect.all([
        Cli.run(["shell", file]),
        Cli.run(["shell", dir]),
        Cli.run(["shell", "no-such-host.invalid:4444"])
      ], { concurrency: 2 })
      expect(oneLine(plain.stderr)).toBe(`effect-qemu: ${file} is not a socket (it is a regular file)`)
      expect(oneLine(directory.stderr)).toBe(`effect-qemu: ${dir} is not a socket (it is a directory)`)
      expect(oneLine(dns.stderr)).toMatch(/^effect-qemu: cannot resolve no-such-host\.invalid/)
      for (const r of [plain, directory, dns]) {
        expect(r.code).toBe(2)
        expect(r.stdout).toBe("")
        expect(r.stderr).not.toMatch(/Refused|Eof:|ECONNREFUSED/)
      }
    }), SPAWNS)

  it.scopedLive("takes QEMU's own unix:PATH and tcp:HOST:PORT address syntax", () =>
    Effect.gen(function*() {
      const { sock } = yield* server
      const [unix, tcp] = yield* Effect.all([
        Cli.run(["shell", `unix:${sock},server=on,wait=off`], "query-status\n"),
        Cli.run(["shell", "tcp:127.0.0.1:1"])
      ], { concurrency: 2 })
      expect(Cli.jsonLines(unix.stdout)[0]).toMatchObject({ return: { status: "running" } })
      expect(unix.code).toBe(0)
      expect(oneLine(tcp.stderr)).toBe("effect-qemu: cannot connect to 127.0.0.1:1: connection refused (ECONNREFUSED)")
    }), SPAWNS)

  it.scopedLive("--binary that does not exist is named; an unknown option is an unknown option", () =>
    Effect.gen(function*() {
      const { sock } = yield* server
      const [binary, bogus] = yield* Effect.all([
        Cli.run(["run", "--binary", "/nonexistent/qemu", "--", "-machine", "none"]),
        Cli.run(["shell", "--bogus", sock])
      ], { concurrency: 2 })
      expect(oneLine(binary.stderr)).toBe("effect-qemu: cannot start QEMU: /nonexistent/qemu: no such file")
      expect(oneLine(bogus.stderr)).toBe("effect-qemu: unknown option '--bogus' for 'shell' (see effect-qemu shell --help)")
      expect(binary.code).toBe(2)
      expect(bogus.code).toBe(2)
    }), SPAWNS)

  it.scopedLive("ga on a QMP socket says so at once", () =>
    Effect.gen(function*() {
      const { sock } = yield* server
      const started = Date.now()
      const result = yield* Cli.run(["ga", "--timeout", "60", sock])
      expect(oneLine(result.stderr)).toMatch(/^effect-qemu: .*qmp\.sock is a QMP monitor \(QEMU \d+\.\d+\.\d+\), not a guest agent/)
      expect(result.code).toBe(2)
      // Well under the 60 s the agent would be waited for (the CLI's own start-up included).
      expect(Date.now() - started).toBeLessThan(45_000)
    }), SPAWNS)

  it.scopedLive("raw bytes of a peer that is not QMP are printed escaped", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const sock = path.join(dir, "odd.sock")
      yield* sayingServer(sock, Buffer.from("\x01\x1b[31mhello\x07\n"))
      // stdin stays open: the shell must end because of what the peer sent, not because input ended first
      const ended = (args: ReadonlyArray<string>) => Effect.flatMap(Cli.spawn(args), (running) => running.exit)
      const [raw, negotiated] = yield* Effect.all([ended(["shell", "-N", sock]), ended(["shell", sock])], {
        concurrency: 2
      })
      for (const r of [raw, negotiated]) {
        expect(r.code).toBe(2)
        // eslint-disable-next-line no-control-regex
        expect(r.stderr).not.toMatch(/[\x00-\x09\x0b-\x1f]/)
      }
      expect(oneLine(raw.stderr)).toContain("\\x01\\x1b[31mhello\\x07")
    }), SPAWNS)

  it.scopedLive("a QEMU killed under run: stdout keeps JSON only, the warning goes to stderr", () =>
    Effect.gen(function*() {
      const { running, qemu } = yield* runningQemu
      process.kill(qemu, "SIGKILL")
      running.child.stdin.end()
      const result = yield* running.exit
      expect(() => Cli.jsonLines(result.stdout)).not.toThrow()
      expect(result.stdout).not.toMatch(/WARN|SIGKILL/)
      expect(result.stderr).toContain("effect-qemu: QEMU was killed by SIGKILL\n")
      expect(result.code).toBe(2)
    }), SPAWNS)

  it.scopedLive("a QEMU killed from outside while run shuts it down is reported as killed, as when seen first", () =>
    Effect.gen(function*() {
      const { running, qemu } = yield* runningQemu
      // Stopped, QEMU cannot answer the quit of the shutdown that input's end starts; killed then.
      process.kill(qemu, "SIGSTOP")
      running.child.stdin.end()
      yield* Effect.sleep("500 millis")
      process.kill(qemu, "SIGKILL")
      const result = yield* running.exit
      expect(result.stdout).not.toMatch(/WARN|SIGKILL/)
      expect(result.stderr).toContain("effect-qemu: QEMU was killed by SIGKILL\n")
      expect(result.stderr).not.toContain("did not shut down gracefully")
      expect(result.code).toBe(2)
    }), SPAWNS)

  it.scopedLive("help is local and from the live schema; --help has no colour codes; -l logs the session", () =>
    Effect.gen(function*() {
      const { dir, sock } = yield* server
      const logFile = path.join(dir, "session.log")
      const [session, usage] = yield* Effect.all([
        Cli.run(["shell", "-l", logFile, sock], "help query-status\n? blockdev-backup\nhelp\nhelp no-such\nquery-name\n"),
        Cli.run(["shell", "--help"])
      ], { concurrency: 2 })
      // stdout: the one reply; help text on stderr, nothing sent to QEMU for it.
      expect(Cli.jsonLines(session.stdout)).toEqual([{ return: {} }])
      expect(session.stderr).toContain("command query-status")
      expect(session.stderr).toMatch(/status: enum \(.*running.*\)/)
      expect(session.stderr).toMatch(/sync: enum \(top \| full \| none/)
      expect(session.stderr).toMatch(/commands \(\d+\)/)
      expect(session.stderr).toContain("effect-qemu: line 4: help: no command or event 'no-such'")
      expect(session.code).toBe(1)
      expect(Cli.jsonLines(fs.readFileSync(logFile, "utf8"))).toEqual([{ execute: "query-name" }, { return: {} }])
      // eslint-disable-next-line no-control-regex
      expect(usage.stdout).not.toMatch(/\x1b\[/)
      expect(usage.stdout).toContain("--log")
    }), SPAWNS)

  it.scopedLive("run --console=FILE appends the guest's console to FILE; stdout and stderr stay clean", () =>
    Effect.gen(function*() {
      const files = yield* Guest.build().pipe(Effect.orDie)
      const base = yield* tempDir
      const consoleFile = path.join(base, "console.log")
      const running = yield* Cli.spawn(Cli.runGuestArgs(files, { consoleOption: `--console=${consoleFile}`, tempDir: base }))
      const deadline = Date.now() + 150_000
      while (!(fs.existsSync(consoleFile) && fs.readFileSync(consoleFile, "utf8").includes(files.readyMarker))) {
        if (Date.now() > deadline) throw new Error(`no ready marker; stderr: ${running.stderr()}`)
        yield* Effect.sleep("200 millis")
      }
      running.child.stdin.end("query-status\n")
      const result = yield* running.exit
      expect(result.code).toBe(0)
      expect(Cli.jsonLines(result.stdout)[0]).toMatchObject({ return: { status: "running" } })
      expect(result.stdout + result.stderr).not.toContain(files.readyMarker)
    }), 240_000)
})
