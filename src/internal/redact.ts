/**
 * Keeps secrets given on QEMU's command line out of logs and error messages.
 *
 * QEMU takes secrets inline: `-object secret,id=s0,data=…` (or its JSON form
 * `-object {"qom-type":"secret","id":"s0","data":"…"}`), `password=…` in
 * `-iscsi` and friends. The command line is logged at Debug level and carried
 * by `LaunchFailure`, and QEMU echoes a rejected option in its error output:
 * all three go through here. The machine's own `args` stay intact.
 */

const MASK = "***"

// A keyval value runs to the next single comma (",," is an escaped comma).
const KEYVAL_PASSWORD = /(^|,)(password)=((?:[^,]|,,)*)/g
const KEYVAL_DATA = /(^|,)(data)=((?:[^,]|,,)*)/g
const KEYVAL_SECRET_OBJECT = /^secret(,|$)|(^|,)qom-type=secret(,|$)/
const JSON_FIELD = /("(?:data|password|secret)"\s*:\s*)"(?:[^"\\]|\\.)*"/g
const BOOLEAN = /^(on|off|yes|no|true|false)$/

const redactJson = (value: unknown, secretObject: boolean): unknown => {
  if (Array.isArray(value)) return value.map((v) => redactJson(v, false))
  if (typeof value !== "object" || value === null) return value
  const record = value as Record<string, unknown>
  const isSecret = secretObject || record["qom-type"] === "secret"
  const out: Record<string, unknown> = {}
  for (const [key, v] of Object.entries(record)) {
    out[key] = (key === "password" || key === "secret" || (key === "data" && isSecret)) && typeof v === "string"
      ? MASK
      : redactJson(v, false)
  }
  return out
}

/** One argument with its secret values masked; the argument itself when it has none. */
export const redactArg = (arg: string): string => {
  if (arg.startsWith("{")) {
    try {
      return JSON.stringify(redactJson(JSON.parse(arg), false))
    } catch {
      // Not JSON after all (QEMU will say so): mask what looks like a secret field.
      return arg.replace(JSON_FIELD, `$1"${MASK}"`)
    }
  }
  let out = arg.replace(KEYVAL_PASSWORD, (all, sep: string, key: string, value: string) =>
    BOOLEAN.test(value) ? all : `${sep}${key}=${MASK}`)
  if (KEYVAL_SECRET_OBJECT.test(arg)) out = out.replace(KEYVAL_DATA, `$1$2=${MASK}`)
  return out
}

/** The command line with secret values masked, for logs and errors. */
export const redactArgs = (args: ReadonlyArray<string>): Array<string> => args.map(redactArg)

/** `text` (QEMU's output) with every argument that holds a secret replaced by its masked form. */
export const redactText = (text: string, args: ReadonlyArray<string>): string => {
  let out = text
  for (const arg of args) {
    const masked = redactArg(arg)
    if (masked !== arg) out = out.split(arg).join(masked)
  }
  return out
}
