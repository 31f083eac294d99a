import { Schema } from "effect"

/**
 * `Schema.TaggedError`, whose constructor trusts its fields: our own code builds
 * these errors with the compiler checking the fields, and the run-time check cost
 * 60-120 us per error (an EOF error is built at every machine's close). Decoding
 * one (a fleet client receiving it) still checks everything. Pass `false` as the
 * second constructor argument to check anyway.
 */
export const TaggedError = <Self = never>(identifier: string) =>
<Tag extends string, Fields extends Schema.Struct.Fields>(tag: Tag, fields: Fields) => {
  const checked = Schema.TaggedError<Self>(identifier)(tag, fields)
  const Base = checked as unknown as new(props: unknown, options?: Schema.MakeOptions) => object
  return class extends Base {
    constructor(props: unknown, options: Schema.MakeOptions = true) {
      super(props, options)
    }
  } as unknown as typeof checked
}
