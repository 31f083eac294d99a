/**
 * Where the native parts built by node-gyp (`build/Release/…`) live. The same
 * code runs from src/internal (tests) and dist/internal (published), at
 * different depths below the package root, so search upwards; stopping at the
 * first package.json keeps us from picking up an unrelated parent's build.
 */
import { existsSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

export const findBuilt = (file: string): string | undefined => {
  const relative = join("build", "Release", file)
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const candidate = join(dir, relative)
    if (existsSync(candidate)) return candidate
    if (existsSync(join(dir, "package.json"))) return undefined
    const parent = dirname(dir)
    if (parent === dir) return undefined
    dir = parent
  }
}
