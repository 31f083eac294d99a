/**
 * Type-level tests of the real typed API (checked by `tsc`: `npm run
 * typecheck`; an `@ts-expect-error` line that compiles fails the check):
 * `vm.command`, `QmpClient.execute` and `vm.eventWait` for known names, and
 * the untyped form for any other string.
 */
import type { Effect } from "effect"
import { describe, expectTypeOf, it } from "vitest"
import type { Qapi, QemuMachine, QmpClient, QmpMessage } from "../src/index.js"

declare const vm: QemuMachine.Machine
declare const qmp: QmpClient.QmpClient.Service
declare const someName: string

type Success<T> = T extends Effect.Effect<infer A, infer _E, infer _R> ? A : never
type Failure<T> = T extends Effect.Effect<infer _A, infer E, infer _R> ? E : never

describe("vm.command", () => {
  it("types the reply of a known command", () => {
    const status = vm.command("query-status")
    expectTypeOf<Success<typeof status>["status"]>().toEqualTypeOf<Qapi.RunState>()
  })

  it("types the arguments of a known command", () => {
    vm.command("blockdev-add", { driver: "null-co", "node-name": "n", size: 1024 })
    vm.command("migrate-set-capabilities", { capabilities: [{ capability: "xbzrle", state: true }] })
    // @ts-expect-error a misspelt member
    vm.command("blockdev-add", { driver: "null-co", "node_name": "n" })
    // @ts-expect-error a wrong type
    vm.command("migrate-set-capabilities", { capabilities: [{ capability: "xbzrle", state: "on" }] })
    // @ts-expect-error an enum value QEMU does not have
    vm.command("migrate-set-capabilities", { capabilities: [{ capability: "no-such", state: true }] })
    // @ts-expect-error required arguments missing
    vm.command("blockdev-mirror")
  })

  it("keeps any other string untyped", () => {
    const raw = vm.command(someName, { anything: 1 })
    expectTypeOf<Success<typeof raw>>().toEqualTypeOf<unknown>()
    expectTypeOf<"QmpArgumentError">().toMatchTypeOf<Failure<typeof raw>["_tag"]>()
  })
})

describe("QmpClient.execute", () => {
  it("types known commands and keeps options", () => {
    const version = qmp.execute("query-version", undefined, { timeout: "1 second" })
    expectTypeOf<Success<typeof version>>().toEqualTypeOf<Qapi.VersionInfo>()
    // @ts-expect-error a known name never falls back to the untyped form
    qmp.execute("query-status", { bogus: true })
    expectTypeOf<Success<ReturnType<typeof qmp.executeRaw>>>().toEqualTypeOf<QmpMessage.Response>()
  })
})

describe("vm.eventWait", () => {
  it("types the event and its match", () => {
    const shutdown = vm.eventWait("SHUTDOWN", { match: { data: { guest: true } }, timeout: "1 second" })
    expectTypeOf<Success<typeof shutdown>["data"]["reason"]>().toEqualTypeOf<Qapi.ShutdownCause>()
    // @ts-expect-error the match names a member SHUTDOWN does not have
    vm.eventWait("SHUTDOWN", { match: { data: { gues: true } } })
    // @ts-expect-error the match has the wrong type
    vm.eventWait("SHUTDOWN", { match: { data: { guest: "yes" } } })
    const other = vm.eventWait(someName)
    expectTypeOf<Success<typeof other>>().toEqualTypeOf<QmpMessage.Event>()
  })
})

describe("vm.commandAll and QmpClient.executeAll", () => {
  it("types each result of a tuple of calls, in order", () => {
    const all = vm.commandAll([["stop"], ["query-status"], ["query-name"], [someName, { a: 1 }]])
    expectTypeOf<Success<typeof all>[1]["status"]>().toEqualTypeOf<Qapi.RunState>()
    expectTypeOf<Success<typeof all>[2]>().toEqualTypeOf<Qapi.NameInfo>()
    expectTypeOf<Success<typeof all>[3]>().toEqualTypeOf<unknown>()
    expectTypeOf<Success<typeof all>["length"]>().toEqualTypeOf<4>()
    const viaClient = qmp.executeAll([["query-status"]], { timeout: "1 second" })
    expectTypeOf<Success<typeof viaClient>[0]>().toEqualTypeOf<Qapi.StatusInfo>()
  })

  it("types an array of calls made at run time", () => {
    const calls = Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? ["stop"] as const : ["cont"] as const))
    const all = vm.commandAll(calls)
    expectTypeOf<Success<typeof all>>().toEqualTypeOf<Array<Qapi.Result<"stop"> | Qapi.Result<"cont">>>()
    const spread = vm.commandAll([...calls, ["query-status"]])
    expectTypeOf<Success<typeof spread>>().toEqualTypeOf<[...Array<Qapi.Result<"stop"> | Qapi.Result<"cont">>, Qapi.StatusInfo]>()
    const none = vm.commandAll([])
    expectTypeOf<Success<typeof none>>().toEqualTypeOf<[]>()
  })

  it("checks the arguments of known commands", () => {
    vm.commandAll([["blockdev-add", { driver: "null-co", "node-name": "n" }], ["query-status"]])
    // @ts-expect-error a misspelt member
    vm.commandAll([["query-status"], ["blockdev-add", { driver: "null-co", "node_name": "n" }]])
    // @ts-expect-error required arguments missing
    vm.commandAll([["blockdev-mirror"]])
  })

  it("fails with the errors of vm.command", () => {
    const all = vm.commandAll([["query-status"]])
    expectTypeOf<"QmpCommandError" | "MachineError" | "QmpArgumentError">().toMatchTypeOf<Failure<typeof all>["_tag"]>()
  })
})
