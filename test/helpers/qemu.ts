/**
 * Test helpers around the real QEMU binary: a scoped temp dir, and QEMU
 * processes started either as a QMP server (for `connect`) or as a client of a
 * listener of ours (for `accept`).
 */
import { Effect, Schedule } from "effect"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Proc from "../../src/internal/process.js"

export const QEMU = process.env.QEMU_BINARY ?? "qemu-system-x86_64"

/** `qemu-system-x86_64 --version` → "7.2.22" */
export const qemuVersion = (): string => {
  const out = cp.execFileSync(QEMU, ["--version"], { encoding: "utf8" })
  const m = /version (\d+)\.(\d+)\.(\d+)/.exec(out)
  if (!m) throw new Error(`cannot parse: ${out}`)
  return `${m[1]}.${m[2]}.${m[3]}`
}

export const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "eq-test-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/**
 * Whether a unix socket at `file` is listening, from /proc/net/unix (its flags
 * hold __SO_ACCEPTCON): QEMU creates the file at bind, a moment before listen,
 * and a connect in between is refused. Looking does not take QEMU's one QMP
 * connection, as a probing connect would.
 */
const isListening = (file: string): boolean => {
  try {
    return fs.readFileSync("/proc/net/unix", "utf8").split("\n").some((line) => {
      const fields = line.trim().split(/\s+/)
      return fields[7] === file && (parseInt(fields[3] ?? "0", 16) & 0x10000) !== 0
    })
  } catch {
    return fs.existsSync(file)
  }
}

const waitForListening = (file: string) =>
  Effect.sync(() => isListening(file)).pipe(
    Effect.filterOrFail((listening) => listening, () => new Error(`nothing listens at ${file}`)),
    Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.upTo("10 seconds"))),
    Effect.orDie
  )

/** QEMU listening for QMP at `sock` (`server=on,wait=off`), killed with the scope. */
export const qemuServer = (sock: string, extra: ReadonlyArray<string> = []) =>
  Effect.gen(function*() {
    const child = yield* Proc.spawn(
      [QEMU, "-machine", "none", "-display", "none", "-nodefaults", "-qmp", `unix:${sock},server=on,wait=off`, ...extra],
      { dieWithParent: true }
    ).pipe(Effect.orDie)
    yield* waitForListening(sock)
    return child
  })

/** QEMU connecting to our QMP listener at `sock`, killed with the scope. */
export const qemuClient = (sock: string, extra: ReadonlyArray<string> = []) =>
  Proc.spawn(
    [QEMU, "-machine", "none", "-display", "none", "-nodefaults", "-chardev", `socket,id=mon,path=${sock}`, "-mon", "chardev=mon,mode=control", ...extra],
    { dieWithParent: true }
  ).pipe(Effect.orDie)

/** Every live qemu-system process of ours (for leak checks). */
export const qemuPids = (): Array<number> => {
  try {
    return cp.execFileSync("pgrep", ["-f", "qemu-system"], { encoding: "utf8" }).trim().split("\n").filter(Boolean).map(Number)
      .filter(Proc.isAlive)
  } catch {
    return []
  }
}

/**
 * Our own live QEMUs (children of this process, not zombies), by pid. By command line,
 * not name: QEMU 10.0 and 11.1 run here behind their root's loader (`ld-linux… --argv0
 * qemu-system-x86_64`).
 */
export const childQemus = (): Array<number> => {
  const out = cp.spawnSync("ps", ["-o", "pid=,stat=,args=", "--ppid", String(process.pid)], { encoding: "utf8" }).stdout
  return out.split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter(([pid, stat, ...args]) => pid !== undefined && stat !== undefined && !stat.startsWith("Z") && args.join(" ").includes("qemu-system"))
    .map(([pid]) => Number(pid))
}
