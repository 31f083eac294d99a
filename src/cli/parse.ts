/**
 * The shell's input language (QEMU's qmp-shell), as a pure parser.
 *
 * - `cmd key=value ...` builds `{ execute: "cmd", arguments: { key: value } }`.
 * - A value is an integer, `true` / `false` (any case), JSON when it starts
 *   with `{` or `[` (spaces inside brackets and quotes are fine), a quoted
 *   string (`"..."` with JSON escapes, or `'...'` taken as is), else a string.
 * - Dotted keys build nested objects: `a.b=1 a.c=2` → `{ a: { b: 1, c: 2 } }`.
 * - A key given twice is an error, reported with its (1-based) column.
 * - `transaction(` starts a transaction: each following line is an action
 *   `type key=value ...`, and `)` (alone, or ending the last action's line)
 *   sends `transaction` with `actions: [{ type, data }]`. An action line with
 *   an error discards the whole transaction when it closes.
 * - A line starting with `{` is a whole QMP command in JSON.
 * - Blank lines and lines starting with `#` are ignored.
 *
 * @example
 * ```ts
 * const [step] = Parse.step(Parse.initial, "blockdev-add driver=null-co node-name=n0 size=1024")
 * // step: { _tag: "Command", command: { execute: "blockdev-add", arguments: { driver: "null-co", ... } } }
 * ```
 *
 * @since 0.2.0
 */

/**
 * A QMP command, as sent (without `id`).
 *
 * @since 0.2.0
 * @category models
 */
export interface Command {
  readonly execute: string
  readonly arguments?: Record<string, unknown>
}

/**
 * A transaction action being collected.
 *
 * @since 0.2.0
 * @category models
 */
export interface Action {
  readonly type: string
  readonly data: Record<string, unknown>
}

/**
 * Parser state between lines: outside or inside `transaction(` … `)`.
 *
 * @since 0.2.0
 * @category models
 */
export interface State {
  readonly transaction: { readonly actions: ReadonlyArray<Action>; readonly failed: boolean } | undefined
}

/**
 * What one line of input produced.
 *
 * @since 0.2.0
 * @category models
 */
export type Step =
  | { readonly _tag: "Command"; readonly command: Command }
  | { readonly _tag: "Pending" }
  | { readonly _tag: "Empty" }
  | { readonly _tag: "Error"; readonly message: string; readonly column: number }

/**
 * @since 0.2.0
 * @category constructors
 */
export const initial: State = { transaction: undefined }

/**
 * A word of the line and where it starts (1-based column).
 *
 * @since 0.2.0
 * @category models
 */
export interface Token {
  readonly text: string
  readonly column: number
}

/**
 * A parse failure at a column (1-based).
 *
 * @since 0.2.0
 * @category errors
 */
export class ParseError {
  readonly _tag = "ParseError"
  constructor(readonly message: string, readonly column: number) {}
}

const CLOSE: Record<string, string> = { "{": "}", "[": "]" }

/**
 * Splits a line on whitespace, keeping quoted strings and bracketed JSON
 * (with their spaces) inside one token.
 *
 * @since 0.2.0
 * @category parsing
 */
export const tokenize = (line: string): Array<Token> | ParseError => {
  const tokens: Array<Token> = []
  let i = 0
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i]!)) i++
    if (i >= line.length) break
    const start = i
    const stack: Array<{ close: string; at: number }> = []
    while (i < line.length && (stack.length > 0 || !/\s/.test(line[i]!))) {
      const c = line[i]!
      if (c === "\"" || c === "'") {
        const open = i
        i++
        while (i < line.length && line[i] !== c) i += c === "\"" && line[i] === "\\" ? 2 : 1
        if (i >= line.length) return new ParseError(`unterminated ${c === "\"" ? "double" : "single"} quote`, open + 1)
      } else if (c in CLOSE) {
        stack.push({ close: CLOSE[c]!, at: i })
      } else if (c === "}" || c === "]") {
        const top = stack.pop()
        if (top && top.close !== c) return new ParseError(`'${c}' closes '${top.close === "}" ? "{" : "["}'`, i + 1)
      }
      i++
    }
    if (stack.length > 0) return new ParseError(`unclosed '${line[stack[0]!.at]}'`, stack[0]!.at + 1)
    tokens.push({ text: line.slice(start, i), column: start + 1 })
  }
  return tokens
}

const INTEGER = /^[-+]?\d+$/

/**
 * Reads one value: integer, boolean, JSON object/array, quoted string, or the
 * text itself. `column` is where the value starts, for errors.
 *
 * @since 0.2.0
 * @category parsing
 */
export const parseValue = (text: string, column = 1): unknown | ParseError => {
  if (INTEGER.test(text)) {
    const n = Number(text)
    return Number.isSafeInteger(n)
      ? n
      : new ParseError(`integer ${text} is beyond ±2^53 (write it inside JSON or quote it)`, column)
  }
  const lower = text.toLowerCase()
  if (lower === "true") return true
  if (lower === "false") return false
  if (text.startsWith("{") || text.startsWith("[") || text.startsWith("\"")) {
    try {
      return JSON.parse(text) as unknown
    } catch (e) {
      return new ParseError(`invalid JSON: ${e instanceof Error ? e.message : String(e)}`, column)
    }
  }
  if (text.length >= 2 && text.startsWith("'") && text.endsWith("'")) return text.slice(1, -1)
  return text
}

const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

// An own member even when the key is `__proto__` (plain assignment would set the prototype:
// the member silently dropped from what is sent, and a later `__proto__.x` read as inherited).
const define = (target: Record<string, unknown>, key: string, value: unknown): void => {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })
}

/**
 * Builds an arguments object from `key=value` tokens (dotted keys nest).
 *
 * @since 0.2.0
 * @category parsing
 */
export const parseArguments = (tokens: ReadonlyArray<Token>): Record<string, unknown> | ParseError => {
  const args: Record<string, unknown> = {}
  for (const token of tokens) {
    const eq = token.text.indexOf("=")
    if (eq <= 0) {
      return new ParseError(
        eq === 0 ? `missing key before '='` : `expected key=value, got '${token.text}'`,
        token.column
      )
    }
    const key = token.text.slice(0, eq)
    const path = key.split(".")
    const empty = path.findIndex((part) => part.length === 0)
    if (empty >= 0) return new ParseError(`empty name in key '${key}'`, token.column)
    const value = parseValue(token.text.slice(eq + 1), token.column + eq + 1)
    if (value instanceof ParseError) return value
    let target = args
    for (let i = 0; i < path.length - 1; i++) {
      const part = path[i]!
      const existing = Object.hasOwn(target, part) ? target[part] : undefined
      if (existing === undefined) {
        const made: Record<string, unknown> = {}
        define(target, part, made)
        target = made
      } else if (isPlainObject(existing)) {
        target = existing
      } else {
        return new ParseError(`'${path.slice(0, i + 1).join(".")}' is already a value, not an object`, token.column)
      }
    }
    const last = path[path.length - 1]!
    if (Object.hasOwn(target, last)) return new ParseError(`key '${key}' given twice`, token.column)
    define(target, last, value)
  }
  return args
}

const command = (tokens: ReadonlyArray<Token>): Command | ParseError => {
  const [name, ...rest] = tokens
  if (name === undefined) return new ParseError("expected a command", 1)
  if (name.text.includes("=") || /^[{["']/.test(name.text)) {
    return new ParseError(`expected a command name, got '${name.text}'`, name.column)
  }
  const args = parseArguments(rest)
  if (args instanceof ParseError) return args
  return rest.length === 0 ? { execute: name.text } : { execute: name.text, arguments: args }
}

const rawJson = (line: string): Command | ParseError => {
  let parsed: unknown
  try {
    parsed = JSON.parse(line)
  } catch (e) {
    return new ParseError(`invalid JSON: ${e instanceof Error ? e.message : String(e)}`, 1)
  }
  if (!isPlainObject(parsed) || typeof parsed.execute !== "string") {
    return new ParseError(`a JSON command needs an "execute" member naming the command`, 1)
  }
  const args = parsed.arguments
  if (args !== undefined && !isPlainObject(args)) return new ParseError(`"arguments" must be an object`, 1)
  return args === undefined ? { execute: parsed.execute } : { execute: parsed.execute, arguments: args }
}

const error = (e: ParseError): Step => ({ _tag: "Error", message: e.message, column: e.column })

const inTransaction = (
  tx: NonNullable<State["transaction"]>,
  tokens: ReadonlyArray<Token>
): [Step, State] => {
  if (tokens.length === 0) return [{ _tag: "Pending" }, { transaction: tx }]
  const first = tokens[0]!
  if (first.text === ")") {
    if (tokens.length > 1) {
      return [error(new ParseError("unexpected input after ')'", tokens[1]!.column)), { transaction: { ...tx, failed: true } }]
    }
    return close(tx, first.column)
  }
  const last = tokens[tokens.length - 1]!
  const closes = last.text === ")"
  const actionTokens = closes ? tokens.slice(0, -1) : tokens
  const parsed = command(actionTokens)
  if (parsed instanceof ParseError) return [error(parsed), { transaction: { ...tx, failed: true } }]
  const next = { actions: [...tx.actions, { type: parsed.execute, data: parsed.arguments ?? {} }], failed: tx.failed }
  return closes ? close(next, last.column) : [{ _tag: "Pending" }, { transaction: next }]
}

const close = (tx: NonNullable<State["transaction"]>, column: number): [Step, State] =>
  tx.failed
    ? [error(new ParseError("transaction not sent: one of its actions had an error", column)), initial]
    : [{ _tag: "Command", command: { execute: "transaction", arguments: { actions: tx.actions } } }, initial]

/**
 * Feeds one line of input. Returns what it produced and the state for the
 * next line.
 *
 * @since 0.2.0
 * @category parsing
 */
export const step = (state: State, line: string): [Step, State] => {
  const trimmed = line.trim()
  if (state.transaction === undefined && (trimmed === "" || trimmed.startsWith("#"))) return [{ _tag: "Empty" }, state]
  if (state.transaction === undefined && trimmed.startsWith("{")) {
    const parsed = rawJson(trimmed)
    return [parsed instanceof ParseError ? error(parsed) : { _tag: "Command", command: parsed }, state]
  }
  const tokens = tokenize(line)
  if (tokens instanceof ParseError) {
    return [error(tokens), state.transaction ? { transaction: { ...state.transaction, failed: true } } : state]
  }
  if (state.transaction !== undefined) {
    if (tokens.length > 0 && tokens[0]!.text.startsWith("#")) return [{ _tag: "Pending" }, state]
    return inTransaction(state.transaction, tokens)
  }
  if (tokens[0]!.text === "transaction(") {
    return inTransaction({ actions: [], failed: false }, tokens.slice(1))
  }
  const parsed = command(tokens)
  return [parsed instanceof ParseError ? error(parsed) : { _tag: "Command", command: parsed }, state]
}

/**
 * What the end of input means in this state: an error when a transaction is
 * still open.
 *
 * @since 0.2.0
 * @category parsing
 */
export const finish = (state: State): Step =>
  state.transaction === undefined
    ? { _tag: "Empty" }
    : { _tag: "Error", message: "input ended inside 'transaction(': no ')' (nothing sent)", column: 1 }

/**
 * The line sent for an HMP command (`-H` mode).
 *
 * @since 0.2.0
 * @category parsing
 */
export const hmp = (line: string): Step => {
  const trimmed = line.trim()
  return trimmed === ""
    ? { _tag: "Empty" }
    : { _tag: "Command", command: { execute: "human-monitor-command", arguments: { "command-line": trimmed } } }
}
