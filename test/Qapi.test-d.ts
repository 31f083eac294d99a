/**
 * Type-level tests of the typed QAPI overloads (checked by `tsc`, i.e. `npm run
 * typecheck`; `@ts-expect-error` lines fail the typecheck when they compile).
 * They run against local functions declared with `Qapi.Execute` / `Qapi.EventWait`,
 * the shapes `vm.command`, `QmpClient.execute` and `vm.eventWait` take.
 */
import type { Effect } from "effect"
import { describe, expectTypeOf, it } from "vitest"
import type { QmpCommandError } from "../src/Errors.js"
import type * as Qapi from "../src/Qapi.js"

interface Options {
  readonly timeout?: string
}
interface RawEvent {
  readonly event: string
  readonly data?: Record<string, unknown>
}
declare const execute: Qapi.Execute<Options, QmpCommandError, never>
declare const eventWait: Qapi.EventWait<Options, RawEvent, QmpCommandError, never>
declare const someName: string

describe("typed execute", () => {
  it("types the result of a known command", () => {
    expectTypeOf(execute("query-status")).toEqualTypeOf<Effect.Effect<Qapi.StatusInfo, QmpCommandError>>()
    expectTypeOf<Qapi.Result<"query-status">["status"]>().toEqualTypeOf<Qapi.RunState>()
    expectTypeOf<Qapi.Result<"query-block">>().toEqualTypeOf<ReadonlyArray<Qapi.BlockInfo>>()
  })

  it("lets commands without arguments, or with optional ones only, omit them", () => {
    execute("query-status")
    execute("query-status", undefined, { timeout: "1 second" })
    execute("system_powerdown")
    execute("query-cpus-fast")
    execute("query-named-block-nodes")
    execute("query-named-block-nodes", { flat: true })
    expectTypeOf<Qapi.ArgsTuple<"query-status">>().toEqualTypeOf<[args?: Readonly<Record<string, never>> | undefined]>()
    expectTypeOf<Qapi.ArgsTuple<"query-named-block-nodes">>().toEqualTypeOf<
      [args?: Qapi.Args<"query-named-block-nodes"> | undefined]
    >()
    expectTypeOf<Qapi.Args<"query-status">>().toEqualTypeOf<void>()
  })

  it("requires the arguments of commands that have required members", () => {
    // @ts-expect-error blockdev-add needs its arguments
    execute("blockdev-add")
    // @ts-expect-error migrate-set-capabilities needs its capabilities
    execute("migrate-set-capabilities")
    expectTypeOf<Qapi.ArgsTuple<"blockdev-add">>().toEqualTypeOf<[args: Qapi.BlockdevOptions]>()
  })

  it("rejects wrong argument names and types", () => {
    // @ts-expect-error a command without arguments takes none
    execute("query-status", { verbose: true })
    // @ts-expect-error misspelt member
    execute("migrate-set-capabilities", { capabilites: [] })
    // @ts-expect-error wrong enum value
    execute("migrate-set-capabilities", { capabilities: [{ capability: "xbzrle2", state: true }] })
    // @ts-expect-error wrong JSON type
    execute("migrate-set-capabilities", { capabilities: [{ capability: "xbzrle", state: "yes" }] })
    // @ts-expect-error unknown union branch
    execute("blockdev-add", { driver: "not-a-driver", "node-name": "n" })
    // @ts-expect-error member of another branch
    execute("blockdev-add", { driver: "null-co", "node-name": "n", filename: "/x" })
    // @ts-expect-error missing required member of the branch
    execute("blockdev-add", { driver: "file", "node-name": "n" })
    // @ts-expect-error object-add: wrong member type for the memory-backend-ram branch
    execute("object-add", { "qom-type": "memory-backend-ram", id: "m", size: "1G" })
    // @ts-expect-error device_add: `driver` is required
    execute("device_add", { id: "x" })
  })

  it("accepts good arguments, and narrows unions by their tag", () => {
    execute("migrate-set-capabilities", { capabilities: [{ capability: "xbzrle", state: true }] })
    execute("blockdev-add", { driver: "file", "node-name": "n", filename: "/tmp/x" })
    execute("blockdev-add", {
      driver: "qcow2",
      "node-name": "q",
      file: { driver: "file", filename: "/tmp/x.qcow2" }
    })
    execute("blockdev-add", { driver: "raw", "node-name": "r", file: "n" })
    execute("object-add", { "qom-type": "memory-backend-ram", id: "m", size: 1 << 20 })
    // device_add takes any device property besides driver/bus/id
    execute("device_add", { driver: "virtio-net-pci", id: "n0", mac: "52:54:00:12:34:56" })
    const narrow = (o: Qapi.BlockdevOptions): string | undefined => (o.driver === "file" ? o.filename : undefined)
    expectTypeOf(narrow).returns.toEqualTypeOf<string | undefined>()
  })

  it("keeps the untyped form for other names, and never for known ones", () => {
    expectTypeOf(execute("x-vendor-command", { anything: 1 })).toEqualTypeOf<Effect.Effect<unknown, QmpCommandError>>()
    expectTypeOf(execute(someName, { anything: 1 })).toEqualTypeOf<Effect.Effect<unknown, QmpCommandError>>()
    // @ts-expect-error a known name with wrong arguments does not fall back to the untyped form
    execute("query-status", { anything: 1 })
  })
})

describe("typed eventWait", () => {
  it("types the event and its match", () => {
    expectTypeOf(eventWait("SHUTDOWN")).toEqualTypeOf<Effect.Effect<Qapi.Event<"SHUTDOWN">, QmpCommandError>>()
    expectTypeOf<Qapi.Event<"SHUTDOWN">["data"]["reason"]>().toEqualTypeOf<Qapi.ShutdownCause>()
    eventWait("SHUTDOWN", { match: { data: { guest: true } }, timeout: "1 second" })
    eventWait("SHUTDOWN", { match: { data: { reason: "guest-shutdown", guest: null } } })
    eventWait("BLOCK_JOB_COMPLETED", { match: { data: { device: "job0" } } })
    // @ts-expect-error wrong type in the match
    eventWait("SHUTDOWN", { match: { data: { guest: "yes" } } })
    // @ts-expect-error unknown member in the match
    eventWait("SHUTDOWN", { match: { data: { gust: true } } })
    // @ts-expect-error bad enum value in the match
    eventWait("SHUTDOWN", { match: { data: { reason: "guest-shutdwn" } } })
  })

  it("keeps events without data and unknown events usable", () => {
    expectTypeOf<Qapi.Event<"STOP">["data"]>().toEqualTypeOf<Qapi.Empty | undefined>()
    expectTypeOf(eventWait("X_VENDOR_EVENT", { match: { data: { a: 1 } } })).toEqualTypeOf<
      Effect.Effect<RawEvent, QmpCommandError>
    >()
  })

  it("makes Event without a parameter the union of every event", () => {
    const name = (e: Qapi.Event): Qapi.EventName => e.event
    expectTypeOf(name).returns.toEqualTypeOf<Qapi.EventName>()
  })
})
