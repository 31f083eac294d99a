import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Real QEMU processes: generous per-test budget, but no timing assertions anywhere.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores: QEMU under TCG competes with vitest workers.
    pool: "forks",
    poolOptions: {
      forks: {
        maxForks: 2,
        minForks: 1,
        // Each worker keeps its modules from one test file to the next: importing Effect and the
        // library again for each of 45 files cost about 45 s of CPU on a 2-core machine, a quarter
        // of the suite. Files share no state but what they create and release themselves.
        isolate: false
      }
    },
    reporters: ["default"]
  }
})
