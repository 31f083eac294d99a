/**
 * Builds (or finds in the cache) the Debian test image of
 * `effect-qemu/testing`'s DebianImage and prints its directory: CI runs it
 * once before the examples and the suites, which then find it cached.
 *
 *   npx tsx scripts/debian-image.ts [PACKAGE ...]
 */
import { Effect } from "effect"
import { DebianImage } from "../src/testing/index.js"

const started = performance.now()
Effect.runPromise(DebianImage.build({ packages: process.argv.slice(2) })).then(
  (files) => {
    console.error(`debian-image: ${files.dir} (kernel ${files.kernelVersion}) in ${Math.round(performance.now() - started)} ms`)
    console.log(files.dir)
  },
  (error) => {
    console.error(error instanceof Error ? error.message : error)
    process.exit(1)
  }
)
