// Runs the example test files: `npx vitest run --root examples`.
// (The project's own config only picks up test/**.)
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
