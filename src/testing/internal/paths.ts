/**
 * Where the testing helpers find their scripts and keep what they build.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

/** The folder of effect-qemu's package.json: a checkout, or `node_modules/effect-qemu`. */
export const packageRoot = (): string => {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  while (!fs.existsSync(path.join(dir, "package.json"))) {
    const parent = path.dirname(dir)
    if (parent === dir) break
    dir = parent
  }
  return dir
}

/** `$XDG_CACHE_HOME/effect-qemu` (when absolute, as the XDG spec asks), else `~/.cache/effect-qemu`. */
export const userCacheDir = (): string => {
  const xdg = process.env.XDG_CACHE_HOME
  return path.join(xdg && path.isAbsolute(xdg) ? xdg : path.join(os.homedir(), ".cache"), "effect-qemu")
}
