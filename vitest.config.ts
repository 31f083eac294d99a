import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Real QEMU processes: generous per-test budget, but no timing assertions anywhere.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: QEMU under TCG competes with vitest workers.
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    reporters: ["default"]
  }
})
