import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Guest from "../src/testing/Guest.js"
import * as Cli from "./helpers/cli.js"
import { qemuServer, tempDir } from "./helpers/qemu.js"

// The CLI inside a pseudo-terminal: `script` gives it a TTY on stdin and stdout (node-pty is not available).
const quote = (s: string) => `'${s.replace(/'/g, "'\\''")}'`
const inTerminal = (command: Array<string>) => ["script", "-q", "-e", "-c", command.map(quote).join(" "), "/dev/null"]

const PROMPT = "(QEMU) "

const session = (sock: string, history: string) =>
  Cli.spawn(["shell", sock], { env: { EFFECT_QEMU_HISTORY: history, TERM: "xterm" }, wrap: inTerminal })

const count = (text: string, part: string) => text.split(part).length - 1

describe("effect-qemu shell in a terminal", () => {
  it.scopedLive("completes command and argument names from the live schema, and keeps history across sessions", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const sock = path.join(dir, "qmp.sock")
      const history = path.join(dir, "history")
      yield* qemuServer(sock)

      const first = yield* session(sock, history)
      yield* first.waitFor((out) => out.includes(PROMPT))
      // A unique prefix completes to the whole command name.
      first.child.stdin.write("query-statu\t")
      yield* first.waitFor((out) => out.includes("query-status"))
      first.child.stdin.write("\r")
      yield* first.waitFor((out) => out.includes(`"status":"running"`))
      // Argument names come from the command's argument type.
      first.child.stdin.write("blockdev-add driver=null-co node-na\t")
      yield* first.waitFor((out) => out.includes("node-name="))
      first.child.stdin.write("n0\r")
      yield* first.waitFor((out) => count(out, PROMPT) >= 3 && out.includes(`{"return":{}}`))
      first.child.stdin.write("\x04")
      expect((yield* first.exit).code).toBe(0)
      expect(fs.readFileSync(history, "utf8")).toBe("query-status\nblockdev-add driver=null-co node-name=n0\n")

      // Up arrow twice in a new session brings back the first command of the last one.
      const second = yield* session(sock, history)
      yield* second.waitFor((out) => out.includes(PROMPT))
      second.child.stdin.write("\x1b[A\x1b[A\r")
      yield* second.waitFor((out) => out.includes(`"status":"running"`))
      second.child.stdin.write("\x04")
      const result = yield* second.exit
      expect(result.code).toBe(0)
      expect(fs.readFileSync(history, "utf8").split("\n").at(-2)).toBe("query-status")
    }), 240_000)

  it.scopedLive("greets with the QEMU version; Ctrl-C clears the line and cancels a transaction; help is local", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const sock = path.join(dir, "qmp.sock")
      yield* qemuServer(sock)
      const shell = yield* session(sock, path.join(dir, "history"))
      yield* shell.waitFor((out) => out.includes(PROMPT))
      expect(shell.stdout()).toMatch(/connected to QEMU \d+\.\d+\.\d+/)
      // Half a command, then Ctrl-C: the line is dropped and the shell stays.
      shell.child.stdin.write("query-sta")
      yield* shell.waitFor((out) => out.includes("query-sta"))
      shell.child.stdin.write("\x03")
      shell.child.stdin.write("query-name\r")
      yield* shell.waitFor((out) => out.includes(`{"return":{}}`))
      expect(shell.stdout()).not.toContain("query-staquery-name")
      expect(shell.stdout()).not.toContain("CommandNotFound")
      // Ctrl-C inside a transaction cancels it: back to the normal prompt.
      shell.child.stdin.write("transaction(\r")
      yield* shell.waitFor((out) => out.includes("... "))
      shell.child.stdin.write("\x03")
      yield* shell.waitFor((out) => out.includes("transaction cancelled"))
      // `help COMMAND` answers from the schema without asking QEMU.
      shell.child.stdin.write("help query-status\r")
      yield* shell.waitFor((out) => /status: enum \(/.test(out))
      shell.child.stdin.write("\x04")
      const result = yield* shell.exit
      expect(result.code).toBe(0)
    }), 240_000)

  it.scopedLive("completes HMP command names and info subcommands with -H", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const sock = path.join(dir, "qmp.sock")
      yield* qemuServer(sock)
      const shell = yield* Cli.spawn(["shell", "-H", sock], {
        env: { EFFECT_QEMU_HISTORY: path.join(dir, "history"), TERM: "xterm" },
        wrap: inTerminal
      })
      yield* shell.waitFor((out) => out.includes(PROMPT))
      shell.child.stdin.write("info statu\t")
      yield* shell.waitFor((out) => out.includes("info status"))
      shell.child.stdin.write("\r")
      yield* shell.waitFor((out) => out.includes("VM status: running"))
      shell.child.stdin.write("\x04")
      expect((yield* shell.exit).code).toBe(0)
    }), 240_000)

  it.scopedLive("run --console in a terminal prints the guest's console above the prompt", () =>
    Effect.gen(function*() {
      const files = yield* Guest.build().pipe(Effect.orDie)
      const dir = yield* tempDir
      const shell = yield* Cli.spawn(Cli.runGuestArgs(files, { consoleOption: "--console", tempDir: dir }), {
        env: { EFFECT_QEMU_HISTORY: path.join(dir, "history"), TERM: "xterm" },
        wrap: inTerminal
      })
      yield* shell.waitFor((out) => out.includes(files.readyMarker), 150_000)
      // The console line is a line of its own, and the prompt comes back after it.
      const after = shell.stdout().slice(shell.stdout().indexOf(files.readyMarker))
      yield* shell.waitFor((out) => out.slice(out.indexOf(files.readyMarker)).includes(PROMPT))
      expect(after.split(/\r?\n/)[0]).not.toContain("{")
      shell.child.stdin.write("query-status\r")
      yield* shell.waitFor((out) => out.includes(`"status":"running"`))
      shell.child.stdin.write("\x04")
      expect((yield* shell.exit).code).toBe(0)
    }), 240_000)
})
