/**
 * The QMP wire format as `effect/Schema` definitions: the greeting, commands,
 * responses (success and error) and asynchronous events.
 *
 * Every message QEMU sends is decoded with these schemas; unknown fields are
 * tolerated (QEMU adds fields between versions).
 *
 * @example
 * ```ts
 * import { Schema } from "effect"
 * import { QmpMessage } from "effect-qemu"
 *
 * const event = Schema.decodeUnknownSync(QmpMessage.Event)({
 *   event: "STOP",
 *   timestamp: { seconds: 1700000000, microseconds: 0 }
 * })
 * console.log(event.event) // "STOP"
 * ```
 *
 * @since 0.1.0
 */
import { Either, ParseResult, Schema } from "effect"
import { QmpProtocolError } from "./Errors.js"

/**
 * @since 0.1.0
 * @category schemas
 */
export const QemuVersion = Schema.Struct({
  qemu: Schema.Struct({ major: Schema.Number, minor: Schema.Number, micro: Schema.Number }),
  package: Schema.String
})

/**
 * @since 0.1.0
 * @category models
 */
export interface QemuVersion extends Schema.Schema.Type<typeof QemuVersion> {}

/**
 * The first message QEMU sends on a QMP connection.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Greeting = Schema.Struct({
  QMP: Schema.Struct({
    version: QemuVersion,
    capabilities: Schema.Array(Schema.String)
  })
})

/**
 * @since 0.1.0
 * @category models
 */
export interface Greeting extends Schema.Schema.Type<typeof Greeting> {}

/**
 * A command as sent on the wire.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Command = Schema.Struct({
  execute: Schema.optional(Schema.String),
  "exec-oob": Schema.optional(Schema.String),
  arguments: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  id: Schema.optional(Schema.Unknown)
})

/**
 * @since 0.1.0
 * @category models
 */
export interface Command extends Schema.Schema.Type<typeof Command> {}

/**
 * @since 0.1.0
 * @category schemas
 */
export const SuccessResponse = Schema.Struct({
  return: Schema.Unknown,
  id: Schema.optional(Schema.Unknown)
})

/**
 * @since 0.1.0
 * @category models
 */
export interface SuccessResponse extends Schema.Schema.Type<typeof SuccessResponse> {}

/**
 * @since 0.1.0
 * @category schemas
 */
export const ErrorResponse = Schema.Struct({
  error: Schema.Struct({ class: Schema.String, desc: Schema.String }),
  id: Schema.optional(Schema.Unknown)
})

/**
 * @since 0.1.0
 * @category models
 */
export interface ErrorResponse extends Schema.Schema.Type<typeof ErrorResponse> {}

/**
 * The raw answer to a command: `{ return }` or `{ error }`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Response = Schema.Union(SuccessResponse, ErrorResponse)

/**
 * @since 0.1.0
 * @category models
 */
export type Response = SuccessResponse | ErrorResponse

/**
 * @since 0.1.0
 * @category schemas
 */
export const Timestamp = Schema.Struct({ seconds: Schema.Number, microseconds: Schema.Number })

/**
 * An asynchronous event, e.g. `STOP`, `RESUME`, `SHUTDOWN`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Event = Schema.Struct({
  event: Schema.String,
  data: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  timestamp: Timestamp
})

/**
 * @since 0.1.0
 * @category models
 */
export interface Event extends Schema.Schema.Type<typeof Event> {}

/**
 * Anything QEMU may send after the greeting.
 *
 * @since 0.1.0
 * @category models
 */
export type Message =
  | { readonly _tag: "Greeting"; readonly value: Greeting }
  | { readonly _tag: "Response"; readonly value: Response }
  | { readonly _tag: "Event"; readonly value: Event }

/**
 * @since 0.1.0
 * @category guards
 */
export const isErrorResponse = (response: Response): response is ErrorResponse => "error" in response

const decodeGreeting = Schema.decodeUnknownEither(Greeting)
const decodeSuccess = Schema.decodeUnknownEither(SuccessResponse)
const decodeError = Schema.decodeUnknownEither(ErrorResponse)
const decodeEvent = Schema.decodeUnknownEither(Event)

const RAW_LIMIT = 512

/** @internal */
export const truncateRaw = (raw: string): string =>
  raw.length > RAW_LIMIT ? `${raw.slice(0, RAW_LIMIT)}… (${raw.length} chars)` : raw

const protocolError = (message: string, raw: string) => new QmpProtocolError({ message, raw: truncateRaw(raw) })

/**
 * Classifies and decodes one JSON text received from QEMU. The key that
 * identifies the message kind is looked up first, so that each message is
 * decoded by exactly one schema.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode = (text: string): Either.Either<Message, QmpProtocolError> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return Either.left(protocolError(`malformed JSON: ${(e as Error).message}`, text))
  }
  return decodeValue(json, text)
}

/**
 * Like {@link decode}, for an already parsed JSON value.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeValue = (json: unknown, text?: string): Either.Either<Message, QmpProtocolError> => {
  const raw = () => text ?? safeStringify(json)
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return Either.left(protocolError("QMP message is not a JSON object", raw()))
  }
  const fast = decodeCommon(json as Record<string, unknown>)
  if (fast !== undefined) return Either.right(fast)
  const check = <A>(tag: Message["_tag"], result: Either.Either<A, ParseResult.ParseError>) =>
    Either.match(result, {
      onLeft: (e) => Either.left(protocolError(`invalid ${tag.toLowerCase()}: ${formatParseError(e)}`, raw())),
      onRight: (value) => Either.right({ _tag: tag, value } as Message)
    })
  if ("return" in json) return check("Response", decodeSuccess(json))
  if ("error" in json) return check("Response", decodeError(json))
  if ("event" in json) return check("Event", decodeEvent(json))
  if ("QMP" in json) return check("Greeting", decodeGreeting(json))
  return Either.left(protocolError("unrecognised QMP message", raw()))
}

const has = (o: object, key: string): boolean => Object.prototype.hasOwnProperty.call(o, key)
const isObject = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

// Every command's reply and most events take this path: it builds exactly the
// value the schemas would (same keys, same order, unknown fields dropped) at a
// fraction of the cost. Anything it does not recognise — greetings, every
// malformed message — is left to the schemas (`undefined`).
const decodeCommon = (json: Record<string, unknown>): Message | undefined => {
  if ("return" in json) {
    if (!has(json, "return")) return undefined
    return { _tag: "Response", value: has(json, "id") ? { return: json.return, id: json.id } : { return: json.return } }
  }
  if ("error" in json) {
    const error = json.error
    if (!has(json, "error") || !isObject(error) || !has(error, "class") || !has(error, "desc")) return undefined
    if (typeof error.class !== "string" || typeof error.desc !== "string") return undefined
    const value = { error: { class: error.class, desc: error.desc } }
    return { _tag: "Response", value: has(json, "id") ? { ...value, id: json.id } : value }
  }
  if ("event" in json) {
    const timestamp = json.timestamp
    if (!has(json, "event") || typeof json.event !== "string") return undefined
    if (!has(json, "timestamp") || !isObject(timestamp) || !has(timestamp, "seconds") || !has(timestamp, "microseconds")) {
      return undefined
    }
    if (typeof timestamp.seconds !== "number" || typeof timestamp.microseconds !== "number") return undefined
    const time = { seconds: timestamp.seconds, microseconds: timestamp.microseconds }
    if (!("data" in json)) return { _tag: "Event", value: { event: json.event, timestamp: time } }
    // `data` as a record: an object of JSON's (string keys only), copied as the schema would.
    const data = json.data
    if (!has(json, "data") || !isObject(data) || Array.isArray(data) || Object.getPrototypeOf(data) !== Object.prototype) {
      return undefined
    }
    // JSON.parse makes "__proto__" an own key, which the schema's copy turns into a prototype.
    if (has(data, "__proto__")) return undefined
    return { _tag: "Event", value: { event: json.event, data: { ...data }, timestamp: time } }
  }
  return undefined
}

// The formatter prints the offending value recursively: a deeply nested one
// (`[[[[…]]]]` 100k levels, which JSON.parse accepts) overflows the stack.
const formatParseError = (e: ParseResult.ParseError): string => {
  try {
    return ParseResult.TreeFormatter.formatErrorSync(e)
  } catch {
    return "the value is too deeply nested to describe"
  }
}

const safeStringify = (u: unknown): string => {
  try {
    return JSON.stringify(u) ?? String(u)
  } catch {
    return String(u)
  }
}
