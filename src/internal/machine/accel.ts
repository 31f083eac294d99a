/**
 * Picking an accelerator: `QemuMachine.detectAccel` and the resolution of
 * `setAccel("auto")` at launch.
 *
 * KVM is taken only when `/dev/kvm` opens read-write *and* a probe machine
 * really runs a 64-bit guest under it, fast. The second half is the point:
 * a nested KVM (a VM inside a cloud VM) often opens, answers `query-kvm` with
 * `enabled: true` and runs SeaBIOS, yet a Linux kernel never gets through its
 * decompressor (measured on one such host: first touches of guest memory cost
 * ~7 ms per 4 KiB page, 32 MiB in a minute, where TCG needs 0.1 s).
 */
import { Command } from "@effect/platform"
import { NodeCommandExecutor, NodeFileSystem } from "@effect/platform-node"
import { Chunk, Clock, Data, Deferred, Duration, Effect, Either, Exit, FiberId, Stream } from "effect"
import { globalValue } from "effect/GlobalValue"
import * as fs from "node:fs"
import * as os from "node:os"
import * as nodePath from "node:path"
import type * as Api from "../../QemuMachine.js"
import * as Config from "./config.js"

/** Why a probe did not show a usable accelerator. */
export class ProbeFailed extends Data.TaggedError("ProbeFailed")<{ readonly reason: string }> {}

/** What `decide` looks at; injectable so that every answer can be tested without the hardware. */
export interface ProbeInputs {
  readonly platform: NodeJS.Platform
  /** Opens `/dev/kvm` read-write and closes it: right, or left with why it does not open. */
  readonly openDevKvm: () => Either.Either<void, string>
  /** Runs the probe machine under `accel`: what it saw, or why it failed. */
  readonly runProbe: (accel: "kvm" | "hvf") => Effect.Effect<string, ProbeFailed>
}

export const decide = (inputs: ProbeInputs): Effect.Effect<Api.DetectedAccel> => {
  const tcg = (reason: string) => Effect.succeed<Api.DetectedAccel>({ accel: "tcg", reason })
  const probe = (accel: "kvm" | "hvf", before: string) =>
    inputs.runProbe(accel).pipe(
      Effect.map((seen): Api.DetectedAccel => ({ accel, reason: `${before}${seen}` })),
      Effect.catchAll((e) => tcg(`${before}the ${accel.toUpperCase()} probe failed: ${e.reason}; using TCG`))
    )
  if (inputs.platform === "darwin") return probe("hvf", "")
  if (inputs.platform !== "linux") return tcg(`no hardware accelerator is probed on ${inputs.platform}; using TCG`)
  return Either.match(inputs.openDevKvm(), {
    onLeft: (why) => tcg(`/dev/kvm ${why}; using TCG`),
    onRight: () => probe("kvm", "/dev/kvm opens read-write; ")
  })
}

export const openDevKvm = (): Either.Either<void, string> => {
  try {
    fs.closeSync(fs.openSync("/dev/kvm", fs.constants.O_RDWR))
    return Either.right(undefined)
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === "ENOENT") return Either.left("does not exist (no KVM on this host, or the kvm module is not loaded)")
    if (code === "EACCES" || code === "EPERM") {
      return Either.left(`cannot be opened read-write (${code}: add the user to the kvm group)`)
    }
    return Either.left(`cannot be opened read-write (${code ?? String(e)})`)
  }
}

// --- the probe machine ---------------------------------------------------------------------------------

/*
 * The probe is a 64 KiB firmware image (`-bios`), hand-assembled (GNU as, linked at 0,
 * run at 0xF0000) from:
 *
 *   .code16: cli; ds = 0xf000; lgdtl gdt_desc; cr0.PE = 1; ljmpl $0x08, start32
 *   .code32: ds = es = ss = 0x10; zero 12 KiB at 0x10000 (rep stosl);
 *            PML4[0] = 0x11003, PDPT[0] = 0x12003,
 *            PD[i] = ((i & 0xff) << 21) | 0x83 for i < 512   (2 MiB pages: the first 512 MiB
 *                                                           identity, the next 512 MiB an alias of it)
 *            cr3 = 0x10000; cr4.PAE = 1; EFER.LME = 1 (rdmsr/wrmsr); cr0.PG = 1; ljmp $0x18, start64
 *   .code64: rbx = 0x9e3779b97f4a7c15
 *            for rcx < 0x400000: [0x21000000 + 8 rcx] = rcx * rbx   (32 MiB written through the alias)
 *            for rcx < 0x400000: [0x01000000 + 8 rcx] == rcx * rbx ? (read back through the identity map)
 *            all equal: outb 0x2a, 0xf4 (isa-debug-exit: QEMU exits with 0x2a << 1 | 1 = 85)
 *            else:      outb 0x01, 0xf4 (exit 3); then hlt forever
 *   gdt: null, 0x00cf9b000000ffff (code32), 0x00cf93000000ffff (data), 0x00af9b000000ffff (code64)
 *   at 0xfff0 (the reset vector): ljmp $0xf000, $0
 */
const PROBE_CODE =
  "fab800f08ed8660f011618010f20c06683c8010f22c066ea1e000f00080066b8" +
  "10008ed88ec08ed0bf0000010031c0b9000c0000f3abc7050000010003100100" +
  "c705001001000320010031c989c825ff000000c1e0150d830000008904cd0020" +
  "01004181f90002000072e1b8000001000f22d80f20e083c8200f22e0b9800000" +
  "c00f320d000100000f300f20c00d000000800f22c0ea9c000f00180048bb157c" +
  "4a7fb979379e4831c94889c8480fafc3488904cd0000002148ffc14881f90000" +
  "400072e54831c94889c8480fafc3483904cd00000001751248ffc14881f90000" +
  "400072e3b02ae6f4eb04b001e6f4f4ebfd8db400008d74000000000000000000" +
  "ffff0000009bcf00ffff00000093cf00ffff0000009baf001f00f8000f00"
const RESET_VECTOR = "ea0000" + "00f0"

/** The probe's firmware image. */
export const probeFirmware = (): Uint8Array => {
  const image = new Uint8Array(0x10000)
  image.set(Buffer.from(PROBE_CODE, "hex"), 0)
  image.set(Buffer.from(RESET_VECTOR, "hex"), 0xfff0)
  return image
}

/** The exit code of QEMU when the probe guest checked its memory and wrote its success code. */
export const PROBE_SUCCESS = 0x2a * 2 + 1
const PROBE_MISMATCH = 0x01 * 2 + 1

/** Real KVM starts QEMU and runs the probe guest (32 MiB written and read back) in a fraction of a second. */
export const PROBE_TIMEOUT = Duration.seconds(5)

export const probeArgs = (accel: Api.Accel, firmware: string): Array<string> => [
  "-accel",
  accel,
  "-machine",
  "q35",
  "-m",
  "64",
  "-nodefaults",
  "-display",
  "none",
  "-bios",
  firmware,
  "-device",
  "isa-debug-exit,iobase=0xf4,iosize=0x04",
  "-qmp",
  "stdio",
  "-S"
]

// Sent at once: QEMU answers them in order, then the guest runs and exits by itself.
const PROBE_QMP = [
  { execute: "qmp_capabilities" },
  { execute: "query-kvm", id: "kvm" },
  { execute: "cont" }
].map((c) => JSON.stringify(c)).join("\n") + "\n"

const firmwareFile = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = fs.mkdtempSync(nodePath.join(os.tmpdir(), "effect-qemu-accel-"))
    const file = nodePath.join(dir, "probe.bin")
    fs.writeFileSync(file, probeFirmware(), { mode: 0o600 })
    return { dir, file }
  }),
  ({ dir }) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map(({ file }) => file))

const text = (stream: Stream.Stream<Uint8Array, unknown>) =>
  Stream.runCollect(stream).pipe(
    Effect.map((chunks) => Buffer.concat(Chunk.toArray(chunks)).toString("utf8")),
    Effect.orElseSucceed(() => "")
  )

const kvmReply = (stdout: string): unknown => {
  for (const line of stdout.split("\n")) {
    try {
      const message = JSON.parse(line) as { readonly id?: unknown; readonly return?: unknown }
      if (message.id === "kvm") return message.return
    } catch {
      // Not JSON: QEMU's own output on stdout.
    }
  }
  return undefined
}

const lastLine = (output: string): string => output.trim().split("\n").filter(Boolean).slice(-2).join("; ")

/**
 * Runs the probe machine of `binary` under `accel` and says what it saw.
 * Fails when QEMU does not start under it, when `query-kvm` does not answer
 * `{ enabled: true, present: true }` (KVM only), when the guest reads back
 * other values than it wrote, or when it does not finish within `timeout`.
 */
export const runProbe = (
  binary: string,
  accel: "kvm" | "hvf",
  timeout: Duration.DurationInput = PROBE_TIMEOUT
): Effect.Effect<string, ProbeFailed> =>
  Effect.gen(function*() {
    const firmware = yield* firmwareFile
    const started = yield* Clock.currentTimeMillis
    const child = yield* Command.make(binary, ...probeArgs(accel, firmware)).pipe(Command.feed(PROBE_QMP), Command.start)
    const [stdout, stderr, exitCode] = yield* Effect.all([text(child.stdout), text(child.stderr), child.exitCode], {
      concurrency: "unbounded"
    }).pipe(
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () =>
          new ProbeFailed({
            reason: `the probe guest (64-bit mode, 32 MiB written and read back) did not finish within ${
              Duration.format(timeout)
            } (a nested or emulated KVM that is too slow or hangs: real kernels do not boot on it)`
          })
      }),
      // QEMU stuck in the guest is killed outright; the scope's SIGTERM is for the rest.
      Effect.tapError(() => child.kill("SIGKILL").pipe(Effect.ignore))
    )
    const elapsed = (yield* Clock.currentTimeMillis) - started
    const kvm = kvmReply(stdout)
    if (accel === "kvm") {
      const ok = typeof kvm === "object" && kvm !== null && "enabled" in kvm && kvm.enabled === true &&
        "present" in kvm && kvm.present === true
      if (!ok && exitCode !== PROBE_SUCCESS) {
        return yield* new ProbeFailed({ reason: `QEMU exited with code ${exitCode}: ${lastLine(stderr) || "no output"}` })
      }
      if (!ok) return yield* new ProbeFailed({ reason: `query-kvm answered ${JSON.stringify(kvm) ?? "nothing"}` })
    }
    if (exitCode === PROBE_MISMATCH) {
      return yield* new ProbeFailed({ reason: "the probe guest read back other values than it wrote through its page tables" })
    }
    if (exitCode !== PROBE_SUCCESS) {
      return yield* new ProbeFailed({ reason: `QEMU exited with code ${exitCode}: ${lastLine(stderr) || "no output"}` })
    }
    const query = accel === "kvm" ? "query-kvm says enabled and present, and " : ""
    return `${query}a probe guest ran in 64-bit mode and checked 32 MiB through its page tables in ${elapsed} ms`
  }).pipe(
    Effect.scoped,
    Effect.mapError((e) =>
      e._tag === "ProbeFailed"
        ? e
        : new ProbeFailed({
          reason: e._tag === "SystemError" && e.method === "exitCode"
            // A signal death, e.g. QEMU crashing on a broken KVM.
            ? `QEMU died: ${e.description ?? e.reason}`
            : `cannot run ${binary}: ${e._tag === "SystemError" ? `${e.reason}${e.description ? ` (${e.description})` : ""}` : e.message}`
        })
    ),
    Effect.provide(NodeCommandExecutor.layer),
    Effect.provide(NodeFileSystem.layer)
  )

const probe = (binary: string): Effect.Effect<Api.DetectedAccel> =>
  decide({ platform: process.platform, openDevKvm, runProbe: (accel) => runProbe(binary, accel) }).pipe(
    Effect.withSpan("QemuMachine.detectAccel", { attributes: { binary } })
  )

// One probe per binary per process, shared by concurrent launches: the answer does not change while we run.
const cache = globalValue(Symbol.for("effect-qemu/accel/cache"), () => new Map<string, Deferred.Deferred<Api.DetectedAccel>>())

/** `QemuMachine.detectAccel`: a fresh probe every call, whose answer later `setAccel("auto")` launches reuse. */
export const detect = (options: { readonly binary?: string | undefined } = {}): Effect.Effect<Api.DetectedAccel> => {
  const binary = options.binary ?? "qemu-system-x86_64"
  return Effect.tap(probe(binary), (found) =>
    Effect.sync(() => {
      const done = Deferred.unsafeMake<Api.DetectedAccel>(FiberId.none)
      Deferred.unsafeDone(done, Exit.succeed(found))
      cache.set(binary, done)
    }))
}

/** The cached answer for `binary`, probing once; an interrupted probe is not cached, and its waiters probe again. */
export const detectCached = (binary: string): Effect.Effect<Api.DetectedAccel> =>
  Effect.suspend(() => {
    const pending = cache.get(binary)
    if (pending) return Deferred.await(pending).pipe(Effect.catchAllCause(() => detectCached(binary)))
    const deferred = Deferred.unsafeMake<Api.DetectedAccel>(FiberId.none)
    cache.set(binary, deferred)
    return probe(binary).pipe(
      Effect.onExit((exit) => {
        if (exit._tag === "Success") return Deferred.succeed(deferred, exit.value)
        cache.delete(binary)
        return Deferred.failCause(deferred, exit.cause)
      })
    )
  })

/** A config with `auto` replaced by what the probe found (other configs as they are). */
export const resolve = (config: Api.Config): Effect.Effect<Api.Config> =>
  config.accel !== "auto" ? Effect.succeed(config) : detectCached(config.binary).pipe(
    Effect.tap((found) => Effect.logDebug(`accelerator auto: ${found.accel} (${found.reason})`)),
    Effect.map((found) => Config.setAccel(config, found.accel))
  )
