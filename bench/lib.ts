/**
 * The library under measurement: the built `dist/` (what users run), typed
 * from the sources so that the bench typechecks before anything is built.
 * `npm run bench` builds first.
 */
import type * as Built from "../src/index.js"
import type * as BuiltProcess from "../src/internal/process.js"

const load = async <A>(path: string): Promise<A> => {
  try {
    return (await import(path)) as A
  } catch (e) {
    throw new Error(`cannot load ${path}: run \`npm run build\` first (npm run bench does it)`, { cause: e })
  }
}

const dist = await load<typeof Built>(new URL("../dist/index.js", import.meta.url).href)
const distProcess = await load<typeof BuiltProcess>(new URL("../dist/internal/process.js", import.meta.url).href)

export const { ConsoleSocket, QemuMachine } = dist
export const { dieWithParentPrefix } = distProcess
