/**
 * The fleet with its embedded default (one runner in this process, SQLite
 * storage): launch through the cluster, drive the VM, typed errors over the
 * wire, no re-creation of a lost VM, release of a VM whose client went quiet.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Schedule, Schema } from "effect"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as cp from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Fleet, FleetErrors, MachineSpec } from "../src/fleet/index.js"
import { Errors, QemuMachine } from "../src/index.js"
import * as Proc from "../src/internal/process.js"
import { noneConfig, pollUntil, processesMentioning } from "./helpers/machine.js"
import { QEMU, tempDir } from "./helpers/qemu.js"

/** The tests' VMs live in temp dirs under the OS's: the runners' policy lets them. */
const policy = Fleet.policy({ dirs: [os.tmpdir()] })

const spec = (base: string): MachineSpec.MachineSpec => ({
  binary: QEMU,
  machine: "none",
  baseTempDir: base,
  args: ["-nodefaults", "-display", "none"]
})

/** The QEMU pid behind a remote VM of this process's runner. */
const pidOf = (vm: Fleet.RemoteMachine) =>
  vm.command("query-status").pipe(
    Effect.zipRight(Effect.sync(() => {
      const [pid] = (fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number)).filter((pid) => {
        try {
          return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(vm.name)
        } catch {
          return false
        }
      })
      return pid
    }))
  )

describe("MachineSpec", () => {
  it.effect("a config crosses the wire as a spec and comes back as the same command line", () =>
    Effect.gen(function*() {
      const config = QemuMachine.make({ binary: "qemu-system-x86_64", name: "m1", qmpTimeout: "5 seconds", args: ["-m", "64"] })
        .pipe(QemuMachine.setMachine("q35"), QemuMachine.setConsole({ index: 1 }), QemuMachine.addMonitorNull)
      const spec = yield* MachineSpec.fromConfig(config)
      const wire = yield* Schema.encode(Schema.parseJson(MachineSpec.MachineSpec))(spec)
      const back = MachineSpec.toConfig(yield* Schema.decode(Schema.parseJson(MachineSpec.MachineSpec))(wire))
      const resolved = { monitorAddress: "/run/m.sock", consolePath: "/run/c.sock" }
      expect(QemuMachine.commandLine(back, resolved)).toEqual(QemuMachine.commandLine(config, resolved))
      expect(back.qmpTimeout).toEqual(config.qmpTimeout)
    }))

  it.effect("every option of a config crosses the wire and comes back the same (all but passed fds)", () =>
    Effect.gen(function*() {
      const config = QemuMachine.make({
        binary: "qemu-system-x86_64",
        args: ["-m", "64"],
        wrapper: ["env"],
        name: "every",
        baseTempDir: "/srv/vms",
        monitorAddress: { host: "127.0.0.1", port: 4444 },
        sockDir: "/srv/vms/s",
        drainConsole: true,
        consoleLog: "/srv/vms/c.log",
        logDir: "/srv/vms/log",
        qmpTimeout: "7 seconds",
        eventCacheSize: 11,
        eventCacheBytes: 12_000,
        eventStreamBuffer: 13,
        validateArgs: true
      }).pipe(
        QemuMachine.setMachine("q35"),
        QemuMachine.setAccel("tcg"),
        QemuMachine.setConsole({ deviceType: "isa-serial", index: 2 }),
        QemuMachine.setQmpMonitor(false),
        QemuMachine.addGuestAgent,
        QemuMachine.addDisk({ path: "/srv/vms/d.qcow2", readOnly: true })
      )
      const spec = yield* MachineSpec.fromConfig(config)
      const wire = yield* Schema.encode(Schema.parseJson(MachineSpec.MachineSpec))(spec)
      const back = MachineSpec.toConfig(yield* Schema.decode(Schema.parseJson(MachineSpec.MachineSpec))(wire))
      const { fds: _a, ...sent } = config
      const { fds: _b, ...received } = back
      expect({ ...received, networks: [] }).toEqual({ ...sent, networks: [] })
      expect(QemuMachine.isConfig(back)).toBe(true)
      // and every field was set away from its default, so a dropped one shows
      const defaults = QemuMachine.make({ binary: "qemu-system-x86_64" }) as unknown as Record<string, unknown>
      const changed = Object.keys(sent).filter((key) => key !== "networks" && key !== "binary" && key !== "fds")
      for (const key of changed) expect(sent[key as keyof typeof sent], key).not.toEqual(defaults[key])
    }))

  it.effect("a config with passed file descriptors cannot travel", () =>
    Effect.gen(function*() {
      const config = QemuMachine.make({ binary: "qemu-system-x86_64" }).pipe(QemuMachine.addFd({ fd: 3, fdset: 1, opaque: "x" }))
      const error = yield* Effect.flip(MachineSpec.fromConfig(config))
      expect(error._tag).toBe("InvalidSpec")
    }))
})

describe("RemoteMachine types", () => {
  it("command and eventWait are typed like vm.command and vm.eventWait for known names", () => {
    // compile-time only: the effects are built, never run
    const check = (vm: Fleet.RemoteMachine) => {
      const status: Effect.Effect<{ readonly running: boolean }, Fleet.CallError> = vm.command("query-status")
      const other: Effect.Effect<unknown, Fleet.CallError> = vm.command("x-not-in-the-schema", { any: 1 })
      // @ts-expect-error: query-status takes no such argument
      vm.command("query-status", { nope: 1 })
      const event = vm.eventWait("SHUTDOWN", { match: { data: { guest: true } }, timeout: "1 second" })
      const guest: Effect.Effect<boolean, Fleet.CallError> = Effect.map(event, (e) => e.data.guest)
      return [status, other, guest]
    }
    expect(typeof check).toBe("function")
  })
})

describe("Errors on the wire", () => {
  it.effect("the library's errors encode and decode as themselves, causes as name and message", () =>
    Effect.gen(function*() {
      const errors = [
        new Errors.LaunchFailure({
          reason: "ExitedEarly",
          exitCode: 1,
          signal: undefined,
          command: ["qemu-system-x86_64", "-nope"],
          output: "invalid option",
          cause: new Error("boom")
        }),
        new Errors.AbnormalShutdown({ cause: "quit ignored", steps: [{ step: "soft", outcome: "failed", detail: "timeout" }] }),
        new Errors.QmpCommandError({ command: "x", errorClass: "GenericError", desc: "no" }),
        new Errors.QmpConnectionError({ reason: "Eof", detail: "closed" }),
        new Errors.QmpProtocolError({ message: "bad", raw: "{", path: "return.x" }),
        new Errors.QmpTimeoutError({ operation: "eventWait X", timeout: Duration.seconds(2) }),
        new Errors.MachineError({ message: "no console" }),
        new Errors.QmpArgumentError({ command: "x", path: "arguments.y", message: "missing" }),
        new Errors.GuestAgentError({ command: "guest-ping", errorClass: "GenericError", desc: "no" }),
        new Errors.VmLost({ id: "vm", runner: "h:1" }),
        new Errors.SnapshotError({ reason: "Io", message: "disk full" }),
        new Errors.PolicyDenied({ id: "vm", what: "command", reason: "human-monitor-command is refused" })
      ]
      for (const error of errors) {
        const schema = Schema.parseJson(error.constructor as unknown as Schema.Schema<typeof error, unknown>)
        const back = yield* Schema.decodeUnknown(schema)(yield* Schema.encode(schema)(error))
        expect(back).toBeInstanceOf(error.constructor)
        expect(back._tag).toBe(error._tag)
        expect(Errors.isEffectQemuError(back)).toBe(true)
        expect(back.message).toBe(error.message)
      }
    }))
})

describe("Fleet (embedded default)", () => {
  it.scopedLive("launches a VM through the cluster and answers QMP commands", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const { pid, runner } = yield* Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        const vm = yield* fleet.launch("vm-a", spec(base))
        expect(yield* vm.command("query-status")).toMatchObject({ status: "running" })
        const raw = yield* vm.qmp("query-name")
        expect(raw).toHaveProperty("return")
        expect(yield* vm.state).toEqual({ _tag: "Running" })
        const pid = yield* pidOf(vm)
        // QEMU ends by itself: the remote state says so
        const other = yield* fleet.launch("vm-a2", spec(base))
        yield* Effect.ignore(other.command("quit"))
        const exited = yield* other.state.pipe(
          Effect.filterOrFail((s) => s._tag === "Exited"),
          Effect.retry({ schedule: Schedule.spaced("20 millis"), times: 500 })
        )
        expect(exited).toEqual({ _tag: "Exited", exitCode: 0, expected: true })
        // a VM that ended by itself makes room for a new one under the same id
        const next = yield* fleet.launch("vm-a2", spec(base))
        expect(yield* next.state).toEqual({ _tag: "Running" })
        expect(pid).toBeGreaterThan(0)
        return { pid, runner: vm.runner }
      }).pipe(Effect.scoped, Effect.provide(Fleet.runnerLayer({ policy })))
      expect(runner).toMatch(/:/)
      // the scope ended: QEMU is gone and its temp dir removed
      expect(Proc.isAlive(pid)).toBe(false)
      expect(fs.readdirSync(base)).toEqual([])
    }))

  it.scopedLive("QMP errors, launch failures and unknown ids cross the wire as typed errors", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      yield* Effect.gen(function*() {
      const fleet = yield* Fleet.Fleet
      const vm = yield* fleet.launch("vm-b", noneConfig(base))
      const attached = yield* fleet.attach("vm-b")
      expect({ runner: attached.runner, name: attached.name }).toEqual({ runner: vm.runner, name: vm.name })
      const error = yield* Effect.flip(vm.command("no-such-command"))
      // the library's own error class, not a copy of it
      expect(error).toBeInstanceOf(Errors.QmpCommandError)
      expect(error).toBeInstanceOf(FleetErrors.QmpCommandError)
      expect(error).toMatchObject({ _tag: "QmpCommandError", command: "no-such-command", errorClass: "CommandNotFound" })

      const timeout = yield* Effect.flip(vm.eventWait("NEVER", { timeout: "50 millis" }))
      expect(timeout._tag).toBe("QmpTimeoutError")

      const again = yield* Effect.flip(fleet.launch("vm-b", spec(base)))
      expect(again).toMatchObject({ _tag: "VmAlreadyLaunched", id: "vm-b" })

      const failed = yield* Effect.flip(fleet.launch("vm-c", { ...spec(base), args: ["-no-such-option"] }))
      expect(failed._tag).toBe("LaunchFailure")
      if (failed._tag === "LaunchFailure") expect(failed.output).toContain("no-such-option")

      const unknown = yield* Effect.flip(fleet.attach("vm-never"))
      expect(unknown).toMatchObject({ _tag: "VmNotFound", id: "vm-never" })
      }).pipe(Effect.scoped, Effect.provide(Fleet.runnerLayer({ policy })))
      expect(fs.readdirSync(base)).toEqual([])
    }))

  it.scopedLive("shutdown stops the VM; the id can be launched again", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      yield* Effect.gen(function*() {
      const fleet = yield* Fleet.Fleet
      const vm = yield* fleet.launch("vm-d", spec(base))
      const pid = yield* pidOf(vm)
      yield* vm.shutdown()
      expect(Proc.isAlive(pid)).toBe(false)
      expect(yield* Effect.flip(vm.command("query-status"))).toMatchObject({ _tag: "VmNotFound" })
      const second = yield* fleet.launch("vm-d", spec(base))
      expect(yield* second.command("query-status")).toMatchObject({ running: true })
      }).pipe(Effect.scoped, Effect.provide(Fleet.runnerLayer({ policy })))
      expect(fs.readdirSync(base)).toEqual([])
    }))

  it.scopedLive("an id recorded as running on another runner answers VmLost and is never relaunched", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const filename = path.join(base, "fleet.sqlite")
      yield* Effect.gen(function*() {
        // a runner that died left its record behind
        const sql = yield* SqliteClient.SqliteClient
        yield* sql`INSERT INTO effect_qemu_fleet_vms (id, runner, status, updated_at) VALUES ('vm-e', 'ghost:1', 'running', 0)`

        const fleet = yield* Fleet.Fleet
        const lost = yield* Effect.flip(fleet.attach("vm-e"))
        expect(lost).toMatchObject({ _tag: "VmLost", id: "vm-e", runner: "ghost:1" })
        const relaunch = yield* Effect.flip(fleet.launch("vm-e", spec(base)))
        expect(relaunch).toMatchObject({ _tag: "VmLost", id: "vm-e", runner: "ghost:1" })
        expect(fs.readdirSync(base).filter((f) => !f.startsWith("fleet.sqlite"))).toEqual([])

        // a VM lost on this host: its temp dir is removed by the runner that finds it lost
        const leftover = fs.mkdtempSync(path.join(base, "qemu-machine-"))
        fs.writeFileSync(path.join(leftover, "qemu.log"), "")
        yield* sql`INSERT INTO effect_qemu_fleet_vms (id, runner, status, host, temp_dir, updated_at)
                   VALUES ('vm-h', 'ghost:1', 'running', ${os.hostname()}, ${leftover}, 0)`
        expect(yield* Effect.flip(fleet.attach("vm-h"))).toMatchObject({ _tag: "VmLost", runner: "ghost:1" })
        expect(yield* pollUntil(() => !fs.existsSync(leftover), "10 seconds")).toBe(true)

        // an explicit shutdown forgets the lost VM; then the id is free again
        yield* fleet.shutdown("vm-e")
        const again = yield* fleet.launch("vm-e", spec(base))
        expect(yield* again.command("query-status")).toMatchObject({ running: true })
      }).pipe(
        Effect.provide(Layer.merge(Fleet.runnerLayer({ storage: Fleet.sqlite(filename), policy }), SqliteClient.layer({ filename })))
      )
    }))

  it.scopedLive("a VM launched in a scope that outlives the runner layer goes with the runner", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const pid = yield* Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        const vm = yield* fleet.launch("vm-f", spec(base))
        return yield* pidOf(vm)
      }).pipe(Effect.provide(Fleet.runnerLayer({ policy })))
      expect(Proc.isAlive(pid)).toBe(false)
      expect(fs.readdirSync(base)).toEqual([])
    }))

  it.scopedLive("a VM whose client stops its heartbeat is shut down and then reported lost; a heartbeat keeps it", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      yield* Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        const kept = yield* fleet.launch("vm-kept", spec(base), { heartbeat: "200 millis" })
        const vm = yield* fleet.launch("vm-g", spec(base), { heartbeat: "1 hour" })
        const pid = yield* pidOf(vm)
        const keptPid = yield* pidOf(kept)
        // the runner's reaper looks every 5 s at least
        expect(yield* pollUntil(() => !Proc.isAlive(pid), "20 seconds")).toBe(true)
        const lost = yield* Effect.flip(vm.command("query-status"))
        expect(lost).toMatchObject({ _tag: "VmLost", id: "vm-g" })
        expect(Proc.isAlive(keptPid)).toBe(true)
        expect(yield* kept.state).toEqual({ _tag: "Running" })
      }).pipe(Effect.scoped, Effect.provide(Fleet.runnerLayer({ vmIdleTimeout: "1 second", policy })))
      expect(fs.readdirSync(base)).toEqual([])
    }))
})

// ---------------------------------------------------------------------------
// failure semantics across processes (SQLite file shared on this host)

const member = path.join(import.meta.dirname, "fixtures", "fleet-member.ts")

const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    server.close(() => resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0)))
  })
})

/**
 * A fleet member in its own process (test/fixtures/fleet-member.ts), killed
 * with the scope; succeeds with the first stdout line matching `ready`.
 */
const spawnMember = (args: ReadonlyArray<string>, ready: RegExp) =>
  Effect.gen(function*() {
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        cp.spawn(process.execPath, ["--import", "tsx", member, ...args], { stdio: ["ignore", "pipe", "pipe"] })
      ),
      (child) =>
        Effect.async<void>((resume) => {
          if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
          child.once("exit", () => resume(Effect.void))
          child.kill("SIGKILL")
        })
    )
    let stderr = ""
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    const match = yield* Effect.async<RegExpMatchArray, Error>((resume) => {
      let seen = ""
      child.stdout!.on("data", (chunk: Buffer) => {
        seen += chunk.toString()
        const m = ready.exec(seen)
        if (m) resume(Effect.succeed(m))
      })
      child.once("exit", (code) => resume(Effect.fail(new Error(`fleet member exited (${code}): ${stderr}`))))
    }).pipe(Effect.timeoutFail({ duration: "60 seconds", onTimeout: () => new Error(`fleet member not ready: ${stderr}`) }))
    return { child, match }
  })

/** Until both runners hold shard locks in the shared storage, and every shard is held. */
const untilShardsSplit = (addresses: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const sql = yield* SqliteClient.SqliteClient
    const count = sql<{ readonly address: string; readonly n: number }>`
      SELECT address, count(*) AS n FROM cluster_locks GROUP BY address`
    const split = (rows: ReadonlyArray<{ readonly address: string; readonly n: number }>) =>
      addresses.every((a) => rows.some((r) => r.address === a && r.n > 0)) &&
      rows.reduce((sum, r) => sum + r.n, 0) >= 300
    yield* count.pipe(
      Effect.filterOrFail(split, () => new Error("shards not split between the runners")),
      Effect.retry({ schedule: Schedule.spaced("250 millis"), times: 480 })
    )
  })

describe("Fleet (runners and clients in other processes)", () => {
  it.scopedLive(
    "a dead runner's VMs answer VmLost within 30 s and are never re-created; new launches go to the live runner",
    () =>
      Effect.gen(function*() {
        const base = yield* tempDir
        const filename = path.join(base, "fleet.sqlite")
        const vms = path.join(base, "vms")
        fs.mkdirSync(vms)
        const [here, there] = [yield* freePort, yield* freePort]
        const self = `127.0.0.1:${here}`
        const other = `127.0.0.1:${there}`
        yield* Effect.gen(function*() {
          const fleet = yield* Fleet.Fleet
          const { child } = yield* spawnMember(["runner", filename, String(there)], /^ready$/m)
          yield* untilShardsSplit([self, other])
          yield* Effect.sleep("3 seconds") // this runner's view of the assignments catches up

          // launch until both runners hold VMs (ids hash to shards; each runner owns about half)
          const launched: Array<Fleet.RemoteMachine> = []
          for (let i = 0; i < 16; i++) {
            launched.push(yield* fleet.launch(`vm-${i}`, spec(vms)))
            const mine = launched.filter((vm) => vm.runner === self).length
            if (mine >= 1 && launched.length - mine >= 2) break
          }
          const doomed = launched.filter((vm) => vm.runner === other)
          const survivors = launched.filter((vm) => vm.runner === self)
          expect(doomed.length).toBeGreaterThanOrEqual(1)
          expect(survivors.length).toBeGreaterThanOrEqual(1)
          expect(launched.every((vm) => vm.runner === self || vm.runner === other)).toBe(true)
          const doomedQemus = doomed.flatMap((vm) => processesMentioning(vm.name))
          expect(doomedQemus.length).toBe(doomed.length)
          const doomedDirs = fs.readdirSync(vms).map((dir) => path.join(vms, dir)).filter((dir) =>
            fs.readdirSync(dir).some((file) => doomed.some((vm) => file.includes(vm.name)))
          )
          expect(doomedDirs.length).toBe(doomed.length)

          child.kill("SIGKILL")

          // every call on the dead runner's VMs ends in VmLost naming it, within the 30 s
          for (const vm of doomed) {
            const error = yield* Effect.flip(vm.command("query-status")).pipe(
              Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error(`${vm.id}: no answer within 30 s`) })
            )
            expect(error).toMatchObject({ _tag: "VmLost", id: vm.id, runner: other })
          }
          // …and so does every later call, including a launch under the same id
          for (const vm of doomed) {
            expect(yield* Effect.flip(vm.state)).toMatchObject({ _tag: "VmLost", runner: other })
            expect(yield* Effect.flip(fleet.attach(vm.id))).toMatchObject({ _tag: "VmLost", runner: other })
            expect(yield* Effect.flip(fleet.launch(vm.id, spec(vms)))).toMatchObject({ _tag: "VmLost", runner: other })
          }
          // the live runner's VMs keep answering
          for (const vm of survivors) {
            expect(yield* vm.command("query-status")).toMatchObject({ running: true })
          }
          // new launches land on the live runner
          for (let i = 0; i < 4; i++) {
            const vm = yield* fleet.launch(`vm-new-${i}`, spec(vms))
            expect(vm.runner).toBe(self)
            expect(yield* vm.command("query-status")).toMatchObject({ running: true })
          }
          // the dead runner's QEMUs died with it; their temp dirs are swept by the runner that found them lost
          expect(yield* pollUntil(() => doomedQemus.every((pid) => !Proc.isAlive(pid)), "10 seconds")).toBe(true)
          expect(yield* pollUntil(() => doomedDirs.every((dir) => !fs.existsSync(dir)), "20 seconds")).toBe(true)
        }).pipe(
          Effect.scoped,
          Effect.provide(Layer.merge(
            Fleet.runnerLayer({ storage: Fleet.sqlite(filename), address: { host: "127.0.0.1", port: here }, policy }),
            SqliteClient.layer({ filename })
          ))
        )
        expect(yield* pollUntil(() => fs.readdirSync(vms).length === 0, "20 seconds")).toBe(true)
      }),
    180_000
  )

  it.scopedLive("a client process that dies lets its VMs be shut down by their runner", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const filename = path.join(base, "fleet.sqlite")
      const here = yield* freePort
      yield* Effect.gen(function*() {
        const fleet = yield* Fleet.Fleet
        const { child, match } = yield* spawnMember(["client", filename, base], /^launched (\S+) (\S+)$/m)
        expect(match[1]).toBe(`127.0.0.1:${here}`)
        const [qemu] = processesMentioning(match[2]!)
        expect(qemu).toBeGreaterThan(0)
        // the client keeps it alive while it beats
        expect(yield* (yield* fleet.attach("orphan")).state).toEqual({ _tag: "Running" })

        child.kill("SIGKILL")
        expect(yield* pollUntil(() => !Proc.isAlive(qemu!), "30 seconds")).toBe(true)
        expect(yield* Effect.flip(fleet.attach("orphan"))).toMatchObject({ _tag: "VmLost", id: "orphan" })
      }).pipe(
        Effect.scoped,
        Effect.provide(Fleet.runnerLayer({
          storage: Fleet.sqlite(filename),
          policy,
          address: { host: "127.0.0.1", port: here },
          vmIdleTimeout: "2 seconds"
        }))
      )
      expect(fs.readdirSync(base).filter((f) => !f.startsWith("fleet.sqlite"))).toEqual([])
    }), 120_000)
})
