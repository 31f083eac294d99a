import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Real QEMU processes: generous per-test budget, but no timing assertions anywhere.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Three workers on two cores: much of the suite waits (a dead runner noticed after seconds,
    // deadlines, guests booting in their own processes), and a third file fills those waits:
    // 120 s instead of 152 s here, with the CPU ~95 % busy. minForks = maxForks: shrinking the
    // pool terminated a worker that had just been given the last file ("Terminating worker thread").
    pool: "forks",
    poolOptions: {
      forks: {
        maxForks: 3,
        minForks: 3,
        // Each worker keeps its modules from one test file to the next: importing Effect and the
        // library again for each of 45 files cost about 45 s of CPU on a 2-core machine, a quarter
        // of the suite. Files share no state but what they create and release themselves.
        isolate: false
      }
    },
    reporters: ["default"]
  }
})
