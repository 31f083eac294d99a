/**
 * The library under measurement: the built `dist/` (what users run), typed
 * from the sources so that the bench typechecks before anything is built.
 * `npm run bench` builds first.
 */
import type * as Built from "../src/index.js"
import type * as BuiltProcess from "../src/internal/process.js"
import type * as BuiltTesting from "../src/testing/index.js"
import { pathToFileURL } from "node:url"

const load = async <A>(path: string): Promise<A> => {
  try {
    return (await import(path)) as A
  } catch (e) {
    throw new Error(`cannot load ${path}: run \`npm run build\` first (npm run bench does it)`, { cause: e })
  }
}

// BENCH_DIST=/path/to/dist measures another build (e.g. the previous commit's) against the same baseline.
const distDir = process.env.BENCH_DIST === undefined
  ? new URL("../dist/", import.meta.url)
  : pathToFileURL(`${process.env.BENCH_DIST.replace(/\/$/, "")}/`)
const dist = await load<typeof Built>(new URL("index.js", distDir).href)
const distProcess = await load<typeof BuiltProcess>(new URL("internal/process.js", distDir).href)
const distTesting = await load<typeof BuiltTesting>(new URL("testing/index.js", distDir).href)

export const { ConsoleSocket, QemuMachine } = dist
export const { dieWithParentPrefix } = distProcess
export const { Guest } = distTesting
