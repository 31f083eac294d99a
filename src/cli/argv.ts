/**
 * The command line before `@effect/cli` reads it: an option a subcommand
 * does not know is reported as such (the parser would take `--bogus` for the
 * address and blame the next word), and `run --console` without a value is
 * given the value that means "the default place".
 *
 * @since 0.3.0
 */
import * as Either from "effect/Either"

/**
 * The value `--console` alone stands for: above the prompt on a terminal, else stderr.
 *
 * @since 0.3.0
 * @category constants
 */
export const CONSOLE_DEFAULT = "-"

// Per subcommand: its options, and which of them take a value.
const FLAGS: Record<string, { readonly flags: ReadonlyArray<string>; readonly valued: ReadonlyArray<string> }> = {
  shell: { flags: ["-H", "--hmp", "-p", "--pretty", "-v", "--verbose", "-N", "--no-negotiation"], valued: ["-l", "--log"] },
  run: {
    flags: ["-H", "--hmp", "-p", "--pretty", "-v", "--verbose", "--console"],
    valued: ["--binary", "--temp-dir", "-l", "--log"]
  },
  schema: { flags: ["--json"], valued: ["--binary"] },
  ga: { flags: ["-p", "--pretty", "-v", "--verbose"], valued: ["--timeout", "-l", "--log"] }
}

// @effect/cli's own options, valid everywhere.
const BUILT_IN_FLAGS = ["-h", "--help", "--version", "--wizard"]
const BUILT_IN_VALUED = ["--completions", "--log-level"]

/**
 * Checks the options of the subcommand and rewrites `--console` alone;
 * `Left` holds the message for an unknown option.
 *
 * @since 0.3.0
 * @category parsing
 */
export const prepare = (argv: ReadonlyArray<string>): Either.Either<Array<string>, string> => {
  const out = argv.slice(0, 2)
  const args = argv.slice(2)
  const sub = args.findIndex((a) => !a.startsWith("-"))
  const known = sub >= 0 ? FLAGS[args[sub]!] : undefined
  if (known === undefined) return Either.right([...argv])
  out.push(...args.slice(0, sub + 1))
  for (let i = sub + 1; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "--") {
      out.push(...args.slice(i))
      break
    }
    if (!arg.startsWith("-") || arg === "-") {
      out.push(arg)
      continue
    }
    const eq = arg.indexOf("=")
    const name = arg.startsWith("--") && eq > 0 ? arg.slice(0, eq) : arg
    // Short flags may be grouped (`-pv`) when each letter is one; else the word is one option (`-machine`).
    const letters = !arg.startsWith("--") && arg.length > 2 ? [...arg.slice(1)].map((c) => `-${c}`) : []
    const group = letters.length > 0 && letters.every((f) => known.flags.includes(f)) ? letters : [name]
    for (const flag of group) {
      if (![...known.flags, ...known.valued, ...BUILT_IN_FLAGS, ...BUILT_IN_VALUED].includes(flag)) {
        const hint = args[sub] === "run" ? "; QEMU's own options go after --" : ""
        return Either.left(`unknown option '${flag}' for '${args[sub]}' (see effect-qemu ${args[sub]} --help${hint})`)
      }
    }
    if (args[sub] === "run" && arg === "--console") {
      out.push(`--console=${CONSOLE_DEFAULT}`)
      continue
    }
    out.push(arg)
    if (eq < 0 && group.length === 1 && [...known.valued, ...BUILT_IN_VALUED].includes(name) && i + 1 < args.length) {
      out.push(args[++i]!)
    }
  }
  return Either.right(out)
}
