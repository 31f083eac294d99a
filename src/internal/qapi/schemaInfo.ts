/**
 * The shape of QEMU's `query-qmp-schema` introspection (QAPI `SchemaInfo`),
 * shared by the code generator and the live argument validator.
 *
 * Type names are masked by QEMU (`"0"`, `"[10]"`): they are not part of the
 * wire ABI, only the command and event names are.
 */

export interface MemberInfo {
  readonly name: string
  readonly type: string
  /** Present (always `null` in QEMU 7.2) when the member is optional. */
  readonly default?: unknown
  readonly features?: ReadonlyArray<string>
}

export interface VariantInfo {
  readonly case: string
  readonly type: string
}

export interface EnumMemberInfo {
  readonly name: string
  readonly features?: ReadonlyArray<string>
}

export type SchemaInfo =
  | {
    readonly "meta-type": "command"
    readonly name: string
    readonly "arg-type": string
    readonly "ret-type": string
    readonly "allow-oob"?: boolean
    readonly features?: ReadonlyArray<string>
  }
  | {
    readonly "meta-type": "event"
    readonly name: string
    readonly "arg-type": string
    readonly features?: ReadonlyArray<string>
  }
  | {
    readonly "meta-type": "object"
    readonly name: string
    readonly members: ReadonlyArray<MemberInfo>
    readonly tag?: string
    readonly variants?: ReadonlyArray<VariantInfo>
    readonly features?: ReadonlyArray<string>
  }
  | {
    readonly "meta-type": "enum"
    readonly name: string
    readonly values: ReadonlyArray<string>
    readonly members?: ReadonlyArray<EnumMemberInfo>
    readonly features?: ReadonlyArray<string>
  }
  | {
    readonly "meta-type": "array"
    readonly name: string
    readonly "element-type": string
    readonly features?: ReadonlyArray<string>
  }
  | {
    readonly "meta-type": "alternate"
    readonly name: string
    readonly members: ReadonlyArray<{ readonly type: string }>
    readonly features?: ReadonlyArray<string>
  }
  | {
    readonly "meta-type": "builtin"
    readonly name: string
    readonly "json-type": "string" | "number" | "int" | "boolean" | "null" | "object" | "array" | "value"
    readonly features?: ReadonlyArray<string>
  }

export type SchemaInfoOf<M extends SchemaInfo["meta-type"]> = Extract<SchemaInfo, { readonly "meta-type": M }>

export const isSchemaInfoList = (u: unknown): u is ReadonlyArray<SchemaInfo> =>
  Array.isArray(u) &&
  u.every((e) =>
    typeof e === "object" && e !== null && typeof (e as { name?: unknown }).name === "string" &&
    typeof (e as { "meta-type"?: unknown })["meta-type"] === "string"
  )
