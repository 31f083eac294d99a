/**
 * Newline framing for QMP's JSON stream. QEMU writes one JSON object per line
 * (terminated by "\r\n"), but a socket read may hold half a message, many
 * messages, or one message hundreds of KiB long (`query-qmp-schema`).
 *
 * The decoder keeps the unterminated tail as a list of chunks, so a long
 * message costs one concat when its newline arrives instead of one per read.
 */

/** Raised (as a value, not thrown) when a line exceeds the limit. */
export interface Oversized {
  readonly _tag: "Oversized"
  readonly size: number
  readonly head: string
}

export class LineDecoder {
  private chunks: Array<Buffer> = []
  private pending = 0

  constructor(readonly maxLineBytes: number) {}

  /**
   * Feeds one read. Calls `onLine` for each complete line (without the line
   * terminator, blank lines skipped). Returns an `Oversized` value when the
   * unterminated tail grows past the limit; the decoder is then unusable.
   */
  push(data: Buffer, onLine: (line: string) => void): Oversized | undefined {
    let start = 0
    let nl = data.indexOf(10, start)
    while (nl !== -1) {
      // The limit is in bytes, checked before decoding.
      const bytes = this.pending + nl - start
      if (bytes > this.maxLineBytes) {
        const head = this.pending > 0 ? this.chunks[0]! : data.subarray(start, nl)
        return this.oversized(bytes, head.subarray(0, 256).toString("utf8"))
      }
      let line: string
      if (this.pending > 0) {
        this.chunks.push(data.subarray(start, nl))
        line = Buffer.concat(this.chunks, bytes).toString("utf8")
        this.chunks = []
        this.pending = 0
      } else {
        line = data.toString("utf8", start, nl)
      }
      if (line.length > 0 && !(line.length === 1 && line === "\r")) onLine(line)
      start = nl + 1
      nl = data.indexOf(10, start)
    }
    if (start < data.length) {
      const rest = data.subarray(start)
      this.chunks.push(rest)
      this.pending += rest.length
      if (this.pending > this.maxLineBytes) {
        return this.oversized(this.pending, this.chunks[0]!.subarray(0, 256).toString("utf8"))
      }
    }
    return undefined
  }

  /** Bytes received after the last newline. */
  get buffered(): number {
    return this.pending
  }

  private oversized(size: number, head: string): Oversized {
    this.chunks = []
    this.pending = 0
    return { _tag: "Oversized", size, head: head.slice(0, 256) }
  }
}
