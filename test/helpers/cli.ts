/**
 * Runs the `effect-qemu` command line tool as a real process: the built
 * `dist/cli/main.js` when it exists and is newer than every source file
 * (CI builds before testing), else the sources through tsx.
 */
import { Effect, Scope } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..")

const newestMtime = (dir: string): number => {
  let newest = 0
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(full) : fs.statSync(full).mtimeMs)
  }
  return newest
}

/** The command that starts the CLI: `[program, ...args]`. */
export const cliCommand = (): Array<string> => {
  const built = path.join(root, "dist", "cli", "main.js")
  try {
    if (fs.statSync(built).mtimeMs >= newestMtime(path.join(root, "src"))) return [process.execPath, built]
  } catch {
    // not built
  }
  // One process (no npx wrapper), so signals reach the CLI itself.
  return [process.execPath, "--import", "tsx", path.join(root, "src", "cli", "main.ts")]
}

export interface Result {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

export interface Running {
  readonly child: cp.ChildProcessWithoutNullStreams
  /** Everything printed so far. */
  readonly stdout: () => string
  readonly stderr: () => string
  /** Waits until stdout (or stderr) satisfies `test`; fails after `timeout` ms with what was printed. */
  readonly waitFor: (test: (out: string) => boolean, timeout?: number, stream?: "stdout" | "stderr") => Effect.Effect<void>
  /** Waits for the process to exit. */
  readonly exit: Effect.Effect<Result>
}

/** Starts the CLI (or, with `wrap`, a wrapper around its command line); killed with the scope if still running. */
export const spawn = (
  args: ReadonlyArray<string>,
  options: { readonly env?: Record<string, string>; readonly wrap?: (command: Array<string>) => Array<string> } = {}
): Effect.Effect<Running, never, Scope.Scope> =>
  Effect.gen(function*() {
    const command = (options.wrap ?? ((c) => c))([...cliCommand(), ...args])
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        cp.spawn(command[0]!, command.slice(1), {
          cwd: root,
          env: { ...process.env, ...options.env },
          stdio: ["pipe", "pipe", "pipe"]
        })
      ),
      (child) =>
        Effect.sync(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
        })
    )
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString("utf8")
    })
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString("utf8")
    })
    child.stdin.on("error", () => {})
    const exited = new Promise<Result>((resolve) => {
      child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }))
    })
    const waitFor = (test: (out: string) => boolean, timeout = 60_000, stream: "stdout" | "stderr" = "stdout") =>
      Effect.gen(function*() {
        const deadline = Date.now() + timeout
        while (!test(stream === "stdout" ? stdout : stderr)) {
          if (Date.now() > deadline) {
            return yield* Effect.die(new Error(`timed out waiting for output; stdout:\n${stdout}\nstderr:\n${stderr}`))
          }
          if (child.exitCode !== null || child.signalCode !== null) {
            yield* Effect.sleep("50 millis")
            if (test(stream === "stdout" ? stdout : stderr)) return
            return yield* Effect.die(new Error(`the CLI exited (${child.exitCode ?? child.signalCode}); stdout:\n${stdout}\nstderr:\n${stderr}`))
          }
          yield* Effect.sleep("20 millis")
        }
      })
    return {
      child,
      stdout: () => stdout,
      stderr: () => stderr,
      waitFor,
      exit: Effect.promise(() => exited)
    }
  })

/** Runs the CLI to the end with `input` on stdin. */
export const run = (
  args: ReadonlyArray<string>,
  input = "",
  options: { readonly env?: Record<string, string> } = {}
): Effect.Effect<Result> =>
  Effect.scoped(
    Effect.gen(function*() {
      const running = yield* spawn(args, options)
      running.child.stdin.end(input)
      return yield* running.exit
    })
  )

/** The JSON lines of an output (every line must be JSON). */
export const jsonLines = (out: string): Array<Record<string, unknown>> =>
  out.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as Record<string, unknown>)

/** The `run` arguments that boot the test guest (q35 under TCG, its kernel and initramfs), with `consoleOption`. */
export const runGuestArgs = (
  files: { readonly kernel: string; readonly initrd: string },
  options: { readonly consoleOption: string; readonly tempDir: string; readonly paused?: boolean }
): Array<string> => [
  "run",
  options.consoleOption,
  "--temp-dir",
  options.tempDir,
  "--",
  ...["-machine", "q35", "-accel", "tcg", "-m", "256", "-nodefaults", "-no-reboot"],
  ...["-kernel", files.kernel, "-initrd", files.initrd, "-append", "console=ttyS0 quiet panic=-1"],
  ...(options.paused ? ["-S"] : [])
]
