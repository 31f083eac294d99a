/**
 * Uncaught exceptions and unhandled rejections seen while the harness runs.
 * A throw inside a socket callback of the library would crash a user's
 * process; here it is counted (and the run goes on) so it shows as a failure.
 */
export const crashes = {
  count: 0,
  last: "",
  install() {
    const record = (what: string) => (e: unknown) => {
      crashes.count++
      crashes.last = `${what}: ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack?.split("\n").slice(1, 30).join("\n")}` : String(e)}`
    }
    process.on("uncaughtException", record("uncaughtException"))
    process.on("unhandledRejection", record("unhandledRejection"))
  }
}
