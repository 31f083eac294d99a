import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Option, Stream } from "effect"
import * as path from "node:path"
import { QmpClient } from "../src/index.js"
import { qemuClient, qemuServer, qemuVersion, tempDir } from "./helpers/qemu.js"

/** A negotiated client on a fresh QEMU that connected to our listener. */
const acceptQemu = (extra: ReadonlyArray<string> = []) =>
  Effect.gen(function*() {
    const dir = yield* tempDir
    const sock = path.join(dir, "qmp.sock")
    const listener = yield* QmpClient.listen(sock)
    const child = yield* qemuClient(sock, extra)
    const qmp = yield* listener.accept()
    return { qmp, child, dir }
  })

describe("QmpClient against real QEMU", () => {
  it.scopedLive("decodes the greeting, whose version matches qemu --version", () =>
    Effect.gen(function*() {
      const { qmp } = yield* acceptQemu()
      const { major, minor, micro } = qmp.greeting.QMP.version.qemu
      expect(`${major}.${minor}.${micro}`).toBe(qemuVersion())
      expect(qmp.greeting.QMP.capabilities).toContain("oob")
    }))

  it.scopedLive("answers query-status", () =>
    Effect.gen(function*() {
      const { qmp } = yield* acceptQemu()
      const status = yield* qmp.execute("query-status")
      expect(status).toMatchObject({ running: true, status: "running" })
    }))

  it.scopedLive("fails an unknown command with QmpCommandError of class CommandNotFound", () =>
    Effect.gen(function*() {
      const { qmp } = yield* acceptQemu()
      const error = yield* Effect.flip(qmp.execute("no-such-command"))
      expect(error._tag).toBe("QmpCommandError")
      if (error._tag !== "QmpCommandError") return
      expect(error.errorClass).toBe("CommandNotFound")
      expect(error.command).toBe("no-such-command")
      // The connection survives a command error.
      expect(yield* qmp.execute("query-status")).toMatchObject({ status: "running" })
    }))

  it.scopedLive("decodes query-qmp-schema, a reply far over 64 KiB", () =>
    Effect.gen(function*() {
      const { qmp } = yield* acceptQemu()
      const schema = yield* qmp.executeRaw("query-qmp-schema")
      expect(JSON.stringify(schema).length).toBeGreaterThan(64 * 1024)
      expect("return" in schema && Array.isArray(schema.return)).toBe(true)
    }))

  it.scopedLive("routes 200 commands from 8 concurrent fibers to their own callers", () =>
    Effect.gen(function*() {
      const { qmp } = yield* acceptQemu()
      // Every answer names what its caller asked for: half add a uniquely named object and
      // read its type back, half ask for a unique missing path whose error names the path.
      const results = yield* Effect.forEach(
        Array.from({ length: 8 }, (_, fiber) => fiber),
        (fiber) =>
          Effect.forEach(Array.from({ length: 25 }, (_, i) => `obj-${fiber}-${i}`), (name) =>
            qmp.execute("qom-get", { path: `/no-such/${name}`, property: "type" }).pipe(
              Effect.flip,
              Effect.map((e) => ({ name, answer: e._tag === "QmpCommandError" ? e.desc : e._tag }))
            ), { concurrency: "unbounded" }),
        { concurrency: "unbounded" }
      )
      const flat = results.flat()
      expect(flat).toHaveLength(200)
      for (const { answer, name } of flat) expect(answer).toContain(`/no-such/${name}'`)
    }))

  it.scopedLive("negotiates oob by default and none with oob: false; 40 commands in flight reach their callers either way", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      for (const [oob, enabled] of [[undefined, ["oob"]], [false, []]] as const) {
        const sock = path.join(dir, `server-${String(oob)}.sock`)
        yield* qemuServer(sock)
        const qmp = yield* QmpClient.connect({ address: sock, oob })
        expect(qmp.capabilities).toEqual(enabled)
        // With oob QEMU reads ahead of the command it runs: every answer still names its caller.
        const names = Array.from({ length: 40 }, (_, i) => `obj-${String(oob)}-${i}`)
        const answers = yield* Effect.forEach(names, (name) =>
          qmp.execute("qom-get", { path: `/no-such/${name}`, property: "type" }).pipe(
            Effect.flip,
            Effect.map((e) => (e._tag === "QmpCommandError" ? e.desc : e._tag))
          ), { concurrency: "unbounded" })
        answers.forEach((answer, i) => expect(answer).toContain(`/no-such/${names[i]}'`))
        // Out-of-band execution is QEMU's to refuse for a command that does not allow it.
        if (oob === undefined) {
          const refused = yield* Effect.flip(qmp.execute("query-status", undefined, { oob: true }))
          expect(refused._tag).toBe("QmpCommandError")
        }
      }
    }))

  it.scopedLive("streams STOP then RESUME events in order for stop/cont", () =>
    Effect.gen(function*() {
      const { qmp } = yield* acceptQemu()
      const events = yield* qmp.subscribe
      const collected = yield* Stream.take(events, 4).pipe(Stream.runCollect, Effect.fork)
      yield* qmp.execute("stop")
      yield* qmp.execute("cont")
      yield* qmp.execute("stop")
      yield* qmp.execute("cont")
      const names = Chunk.toArray(yield* Fiber.join(collected)).map((e) => e.event)
      expect(names).toEqual(["STOP", "RESUME", "STOP", "RESUME"])
      // The same events are buffered for pull-style draining.
      const pulled = yield* qmp.getEvents()
      expect(pulled.map((e) => e.event)).toEqual(["STOP", "RESUME", "STOP", "RESUME"])
      expect(yield* qmp.pullEvent()).toEqual(Option.none())
    }))

  it.scopedLive("executeAll: 400 stop/cont in one batch, results and events in order", () =>
    Effect.gen(function*() {
      const { qmp } = yield* acceptQemu()
      const events = yield* qmp.subscribe
      const collected = yield* Stream.take(events, 400).pipe(Stream.runCollect, Effect.fork)
      const calls = Array.from({ length: 400 }, (_, i) => (i % 2 === 0 ? ["stop"] as const : ["cont"] as const))
      const results = yield* qmp.executeAll([...calls, ["query-status"]])
      expect(results).toHaveLength(401)
      expect(results.slice(0, 400)).toEqual(calls.map(() => ({})))
      expect(results[400]).toMatchObject({ running: true, status: "running" })
      const names = Chunk.toArray(yield* Fiber.join(collected)).map((e) => e.event)
      expect(names).toEqual(calls.map(([c]) => (c === "stop" ? "STOP" : "RESUME")))
    }))

  it.scopedLive("executeAll fails with the first failing command by position; the commands after it still ran", () =>
    Effect.gen(function*() {
      const { qmp } = yield* acceptQemu()
      const error = yield* Effect.flip(qmp.executeAll([
        ["query-status"],
        ["no-such-command"],
        ["stop"],
        ["qom-get", { path: "/no-such", property: "type" }]
      ]))
      expect(error._tag).toBe("QmpCommandError")
      if (error._tag !== "QmpCommandError") return
      expect(error.command).toBe("no-such-command")
      expect(error.errorClass).toBe("CommandNotFound")
      expect(yield* qmp.execute("query-status")).toMatchObject({ status: "paused" })
    }))

  it.scopedLive("fails pending commands with QmpConnectionError when QEMU is SIGKILLed", () =>
    Effect.gen(function*() {
      const { qmp, child } = yield* acceptQemu()
      yield* qmp.execute("stop")
      // Commands that cannot complete: QEMU is paused only for the guest, so pin them with a
      // long-running request sequence and kill QEMU while they are in flight.
      const pending = yield* Effect.fork(
        Effect.all(Array.from({ length: 50 }, () => qmp.execute("query-qmp-schema")), { concurrency: "unbounded" })
      )
      child.signal("SIGKILL")
      const error = yield* Effect.flip(Fiber.join(pending))
      expect(error._tag).toBe("QmpConnectionError")
      expect(yield* qmp.isConnected).toBe(false)
      // Later calls fail at once with the same kind of error.
      const later = yield* Effect.flip(qmp.execute("query-status"))
      expect(later._tag).toBe("QmpConnectionError")
      // The event stream ends instead of hanging.
      expect(Chunk.size(yield* Stream.runCollect(qmp.events))).toBe(0)
    }))

  it.scopedLive("attaches to a QEMU started with -qmp unix:...,server=on,wait=off", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const sock = path.join(dir, "server.sock")
      yield* qemuServer(sock)
      const qmp = yield* QmpClient.connect({ address: sock, oob: true })
      expect(qmp.capabilities).toEqual(["oob"])
      expect(yield* qmp.execute("query-status")).toMatchObject({ status: "running" })
      expect(yield* qmp.execute("query-status", undefined, { oob: false })).toMatchObject({ running: true })
    }))

  it.scopedLive("provides the QmpClient tag through QmpClient.layer", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const sock = path.join(dir, "server.sock")
      yield* qemuServer(sock)
      const status = yield* Effect.flatMap(QmpClient.QmpClient, (qmp) => qmp.execute("query-status")).pipe(
        Effect.provide(QmpClient.layer({ address: sock }))
      )
      expect(status).toMatchObject({ status: "running" })
    }))

  it.scopedLive("fails connect to a missing socket with QmpConnectionError", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const error = yield* Effect.flip(QmpClient.connect({ address: path.join(dir, "nothing.sock") }))
      expect(error._tag).toBe("QmpConnectionError")
    }))
})
