/**
 * Runs `qemu-img` through `@effect/platform`'s `Command`, with Node's
 * executor provided here so `Image` callers need nothing more than `Scope`
 * where a function owns a file.
 */
import { Command } from "@effect/platform"
import { NodeCommandExecutor, NodeFileSystem } from "@effect/platform-node"
import { Chunk, Effect, Layer, Stream } from "effect"
import { ImageError } from "../../Errors.js"

/** `qemu-img` from `PATH`, as the machines take `qemu-system-*` from it. */
export const binary = "qemu-img"

const executor = NodeCommandExecutor.layer.pipe(Layer.provide(NodeFileSystem.layer))

export interface Output {
  readonly exitCode: number
  readonly stdout: string
  readonly stderr: string
}

const text = <E>(stream: Stream.Stream<Uint8Array, E>) =>
  Stream.runCollect(stream).pipe(
    Effect.map((chunks) => Buffer.concat(Chunk.toReadonlyArray(chunks)).toString("utf8"))
  )

/** Runs `qemu-img ARGS`; a spawn failure is an `ImageError` without exit code. */
export const exec = (operation: string, args: ReadonlyArray<string>): Effect.Effect<Output, ImageError> => {
  const command = [binary, ...args]
  return Effect.scoped(
    Effect.gen(function*() {
      const proc = yield* Command.start(Command.make(binary, ...args))
      const [stdout, stderr, exitCode] = yield* Effect.all([text(proc.stdout), text(proc.stderr), proc.exitCode], {
        concurrency: "unbounded"
      })
      return { exitCode: Number(exitCode), stdout, stderr }
    })
  ).pipe(
    Effect.provide(executor),
    Effect.mapError((cause) => new ImageError({ operation, exitCode: undefined, stderr: cause.message, command, cause })),
    Effect.withSpan(`Image.${operation}`, { attributes: { command: command.join(" ") } })
  )
}

/** Runs `qemu-img ARGS` and fails with `ImageError` unless it exits with one of `ok` (default 0). */
export const run = (
  operation: string,
  args: ReadonlyArray<string>,
  ok: ReadonlyArray<number> = [0]
): Effect.Effect<Output, ImageError> =>
  Effect.flatMap(exec(operation, args), (out) =>
    ok.includes(out.exitCode)
      ? Effect.succeed(out)
      : Effect.fail(new ImageError({ operation, exitCode: out.exitCode, stderr: out.stderr, command: [binary, ...args] })))

/** Bad input refused before `qemu-img` runs. */
export const refuse = (operation: string, why: string): ImageError =>
  new ImageError({ operation, exitCode: undefined, stderr: why })
