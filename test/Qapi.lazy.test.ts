/**
 * Introspection is lazy: nothing asks QEMU for `query-qmp-schema` while
 * connecting or launching, nor for a typed command (its reply is decoded with
 * the generated Schema); only `validateArgs`, `introspect` and `supports` do,
 * once per connection. Checked against a counting fake server, and against a
 * real QEMU through its own trace of every QMP request it handled.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { QemuMachine } from "../src/index.js"
import * as QmpClient from "../src/QmpClient.js"
import { fakeServer, schemaAnswering, schemaSnapshot } from "./helpers/fakeQmp.js"
import { noneConfig } from "./helpers/machine.js"
import { tempDir } from "./helpers/qemu.js"

const STATUS = { status: "running", running: true, singlestep: false }

/** Answers like QEMU 7.2 for the schema and query-status; records every command name. */
const counting = (received: Array<string>) => schemaAnswering(received, { "query-status": STATUS })

/** The requests QEMU handled, from its `handle_qmp_command` trace (`-trace … -D file`). */
const handled = (traceFile: string): Array<string> =>
  fs.existsSync(traceFile)
    ? [...fs.readFileSync(traceFile, "utf8").matchAll(/handle_qmp_command .* req: (.*)$/gm)].map((m) =>
      (JSON.parse(m[1]!) as { execute?: string; "exec-oob"?: string }).execute ?? "?"
    )
    : []

describe("introspection is fetched lazily", () => {
  it.scopedLive("connecting with validateArgs sends nothing but the negotiation", () =>
    Effect.gen(function*() {
      const received: Array<string> = []
      const server = yield* fakeServer(counting(received))
      yield* QmpClient.connect({ address: server.path, validateArgs: true })
      yield* Effect.sleep("50 millis")
      expect(received).toEqual([])
    }))

  it.scopedLive("a typed command without validateArgs is decoded without fetching the schema", () =>
    Effect.gen(function*() {
      const received: Array<string> = []
      const server = yield* fakeServer(counting(received))
      const qmp = yield* QmpClient.connect({ address: server.path })
      const status = yield* qmp.execute("query-status")
      expect(status.status).toBe("running")
      yield* qmp.execute("query-status")
      expect(received).toEqual(["query-status", "query-status"])
    }))

  it.scopedLive("supports, introspect and validateArgs fetch the schema once per connection, when first used", () =>
    Effect.gen(function*() {
      const received: Array<string> = []
      const server = yield* fakeServer(counting(received))
      const qmp = yield* QmpClient.connect({ address: server.path, validateArgs: true })
      expect(yield* qmp.supports("query-status")).toBe(true)
      expect(received).toEqual(["query-qmp-schema"])
      expect(yield* qmp.supports("no-such-command")).toBe(false)
      expect((yield* qmp.introspect).length).toBe(schemaSnapshot.length)
      yield* qmp.execute("query-status")
      expect(received).toEqual(["query-qmp-schema", "query-status"])
    }))

  it.scopedLive("launching a real QEMU with validateArgs sends no query-qmp-schema; the first validated command does, once", () =>
    Effect.gen(function*() {
      const base = yield* tempDir
      const trace = path.join(base, "qmp-trace.log")
      const config = noneConfig(base, { validateArgs: true }).pipe(
        QemuMachine.addArgs("-trace", "handle_qmp_command", "-D", trace)
      )
      const vm = yield* QemuMachine.launch(config)
      const atLaunch = handled(trace)
      expect(atLaunch).toContain("qmp_capabilities")
      expect(atLaunch).not.toContain("query-qmp-schema")

      yield* vm.command("query-status")
      yield* vm.command("query-status")
      const client = Option.getOrThrow(vm.qmpClient)
      yield* client.supports("query-name")
      const after = handled(trace).slice(atLaunch.length)
      expect(after).toEqual(["query-qmp-schema", "query-status", "query-status"])
    }))
})
