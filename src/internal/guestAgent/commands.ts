/**
 * Schemas of the guest agent commands this library uses itself (argument and
 * result shapes of QEMU 7.2's qga schema, written from its wire format).
 * `execute` decodes the result of a command listed here; any other command is
 * untyped. When the generated `src/generated/qga.ts` lands, this table is
 * replaced by it.
 */
import { Schema } from "effect"

const Empty = Schema.Struct({})

const SupportedCommand = Schema.Struct({
  name: Schema.String,
  enabled: Schema.Boolean,
  "success-response": Schema.Boolean
})

/** `guest-info`. */
export const Info = Schema.Struct({
  version: Schema.String,
  supported_commands: Schema.Array(SupportedCommand)
})

/** `guest-exec-status`. */
export const ExecStatus = Schema.Struct({
  exited: Schema.Boolean,
  exitcode: Schema.optional(Schema.Number),
  signal: Schema.optional(Schema.Number),
  "out-data": Schema.optional(Schema.String),
  "err-data": Schema.optional(Schema.String),
  "out-truncated": Schema.optional(Schema.Boolean),
  "err-truncated": Schema.optional(Schema.Boolean)
})

/** `guest-file-read`. */
export const FileRead = Schema.Struct({
  count: Schema.Number,
  "buf-b64": Schema.String,
  eof: Schema.Boolean
})

/** `guest-file-write`. */
export const FileWrite = Schema.Struct({
  count: Schema.Number,
  eof: Schema.Boolean
})

/** `guest-get-osinfo`. */
export const OsInfo = Schema.Struct({
  "kernel-release": Schema.optional(Schema.String),
  "kernel-version": Schema.optional(Schema.String),
  machine: Schema.optional(Schema.String),
  id: Schema.optional(Schema.String),
  name: Schema.optional(Schema.String),
  "pretty-name": Schema.optional(Schema.String),
  version: Schema.optional(Schema.String),
  "version-id": Schema.optional(Schema.String),
  variant: Schema.optional(Schema.String),
  "variant-id": Schema.optional(Schema.String)
})

const IpAddress = Schema.Struct({
  "ip-address-type": Schema.Literal("ipv4", "ipv6"),
  "ip-address": Schema.String,
  prefix: Schema.Number
})

/** `guest-network-get-interfaces`. */
export const NetworkInterfaces = Schema.Array(Schema.Struct({
  name: Schema.String,
  "hardware-address": Schema.optional(Schema.String),
  "ip-addresses": Schema.optional(Schema.Array(IpAddress)),
  statistics: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.Number }))
}))

/** Argument and result Schemas of each known command. */
export const commands = {
  "guest-ping": { args: Empty, result: Empty },
  "guest-info": { args: Empty, result: Info },
  "guest-sync-delimited": { args: Schema.Struct({ id: Schema.Number }), result: Schema.Number },
  "guest-sync": { args: Schema.Struct({ id: Schema.Number }), result: Schema.Number },
  "guest-get-osinfo": { args: Empty, result: OsInfo },
  "guest-network-get-interfaces": { args: Empty, result: NetworkInterfaces },
  "guest-get-time": { args: Empty, result: Schema.Number },
  "guest-get-host-name": { args: Empty, result: Schema.Struct({ "host-name": Schema.String }) },
  "guest-exec": {
    args: Schema.Struct({
      path: Schema.String,
      arg: Schema.optional(Schema.Array(Schema.String)),
      env: Schema.optional(Schema.Array(Schema.String)),
      "input-data": Schema.optional(Schema.String),
      "capture-output": Schema.optional(Schema.Boolean)
    }),
    result: Schema.Struct({ pid: Schema.Number })
  },
  "guest-exec-status": { args: Schema.Struct({ pid: Schema.Number }), result: ExecStatus },
  "guest-file-open": {
    args: Schema.Struct({ path: Schema.String, mode: Schema.optional(Schema.String) }),
    result: Schema.Number
  },
  "guest-file-read": {
    args: Schema.Struct({ handle: Schema.Number, count: Schema.optional(Schema.Number) }),
    result: FileRead
  },
  "guest-file-write": {
    args: Schema.Struct({ handle: Schema.Number, "buf-b64": Schema.String, count: Schema.optional(Schema.Number) }),
    result: FileWrite
  },
  "guest-file-close": { args: Schema.Struct({ handle: Schema.Number }), result: Empty },
  "guest-file-flush": { args: Schema.Struct({ handle: Schema.Number }), result: Empty },
  "guest-shutdown": {
    args: Schema.Struct({ mode: Schema.optional(Schema.Literal("powerdown", "halt", "reboot")) }),
    result: Empty
  }
} as const

/** A command with known Schemas. */
export type Name = keyof typeof commands

/** The arguments of a known command. */
export type Args<N extends Name> = Schema.Schema.Type<(typeof commands)[N]["args"]>

/** The decoded result of a known command. */
export type Result<N extends Name> = Schema.Schema.Type<(typeof commands)[N]["result"]>

export const isName = (command: string): command is Name => Object.prototype.hasOwnProperty.call(commands, command)
