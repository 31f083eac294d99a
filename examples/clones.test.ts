/**
 * One booted guest per file, a clone of it per test: the template boots the
 * test guest once (a few seconds under TCG), and each test gets its own copy
 * in a fraction of a second — its own RAM (copy-on-write) and its own disk
 * overlay, gone when the test ends. Tests cannot see each other's changes.
 *
 *   npx vitest run --root examples clones
 */
import { expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { Guest } from "../src/testing/index.js"

/** The template, shared by the file's tests: built when the layer starts, removed when it ends. */
class GuestTemplate extends Context.Tag("examples/GuestTemplate")<GuestTemplate, Guest.Template>() {}

const TemplateLive = Layer.scoped(GuestTemplate, Guest.template())

/** Each test's fixture: a fresh clone, shut down with the test's scope. */
const freshGuest = Effect.flatMap(GuestTemplate, (tpl) => tpl.clone())

// `excludeTestServices` keeps the real clock: QEMU lives in real time.
layer(TemplateLive, { timeout: "120 seconds", excludeTestServices: true })("each test on its own clone", (it) => {
  it.scoped("a clone answers on its console", () =>
    Effect.gen(function*() {
      const guest = yield* freshGuest
      expect((yield* guest.run("echo $((6 * 7))")).output).toBe("42")
    }))

  it.scoped("writes in one clone...", () =>
    Effect.gen(function*() {
      const guest = yield* freshGuest
      yield* guest.run("echo mine > /tmp/state")
      expect((yield* guest.run("cat /tmp/state")).output).toBe("mine")
    }))

  it.scoped("...are not seen by the next", () =>
    Effect.gen(function*() {
      const guest = yield* freshGuest
      expect((yield* guest.run("cat /tmp/state")).status).not.toBe(0)
    }))
})
