/**
 * The one line framer for every JSON-lines socket: QMP, the guest agent and
 * the CLI's raw line client. A socket read may hold half a line, many lines,
 * or part of one line hundreds of KiB long (`query-qmp-schema`).
 *
 * - Lines are split on `\n` and handed on without it; a trailing `\r` is kept
 *   (JSON ignores it); empty lines and lone `\r` are skipped.
 * - The limit counts bytes, checked before decoding, so multi-byte text cannot
 *   slip past it; a line is decoded once complete, so a character split
 *   across reads arrives whole.
 * - A line over the limit is reported once (its size so far and its first
 *   256 bytes), what was buffered is dropped, and the rest of it is skipped up
 *   to its newline. Callers for which that is fatal end their session there.
 * - A partial line is kept until its newline; one still open when the stream
 *   ends is never handed on.
 * - With a `delimiter` (the guest agent's 0xFF sync byte, never valid in
 *   UTF-8), the byte drops any partial line before it.
 *
 * The unterminated tail is a list of chunks, so a long line costs one concat
 * when its newline arrives instead of one per read, and a line that arrives in
 * one read is decoded straight from it. Plain synchronous code: this runs for
 * every line on the QMP hot path.
 *
 * @example
 * ```ts
 * const push = LineFramer.make({ maxLineBytes: 1024 }, { onLine, onOversized })
 * socket.on("data", push)
 * ```
 */

export interface Options {
  /** The longest line accepted, in bytes, without its `\n`. */
  readonly maxLineBytes: number
  /** A byte that drops the partial line before it (and is itself dropped). */
  readonly delimiter?: number | undefined
}

export interface Handlers {
  /** A complete line, without its `\n`. */
  readonly onLine: (line: string) => void
  /** A line grew past the limit: `size` bytes so far, `head` its first 256 bytes decoded. */
  readonly onOversized: (size: number, head: string) => void
}

const NEWLINE = 10
const HEAD_BYTES = 256

/** Returns the function to feed every read to, in order. */
export const make = (options: Options, handlers: Handlers): (chunk: Buffer) => void => {
  const { maxLineBytes, delimiter } = options
  const { onLine, onOversized } = handlers
  let parts: Array<Buffer> = []
  let pending = 0
  // The line in progress went over the limit and was reported: drop it up to its newline.
  let skipping = false

  // Drops what was buffered and reports it; `skip` when the rest of the line is still to come.
  const oversized = (size: number, last: Buffer | undefined, skip: boolean) => {
    const head = Buffer.concat(last === undefined ? parts : [...parts, last], Math.min(size, HEAD_BYTES))
    parts = []
    pending = 0
    skipping = skip
    onOversized(size, head.toString("utf8"))
  }

  const feed = (data: Buffer): void => {
    let start = 0
    let nl = data.indexOf(NEWLINE)
    while (nl !== -1) {
      const bytes = pending + nl - start
      if (skipping) {
        // The newline ends the oversized line; a fresh one starts after it.
        skipping = false
      } else if (bytes > maxLineBytes) {
        oversized(bytes, data.subarray(start, nl), false)
      } else {
        let line: string
        if (pending > 0) {
          parts.push(data.subarray(start, nl))
          line = Buffer.concat(parts, bytes).toString("utf8")
          parts = []
          pending = 0
        } else {
          line = data.toString("utf8", start, nl)
        }
        if (line.length > 0 && line !== "\r") onLine(line)
      }
      start = nl + 1
      nl = data.indexOf(NEWLINE, start)
    }
    if (start < data.length && !skipping) {
      const rest = start === 0 ? data : data.subarray(start)
      parts.push(rest)
      pending += rest.length
      if (pending > maxLineBytes) oversized(pending, undefined, true)
    }
  }

  if (delimiter === undefined) return feed
  return (chunk) => {
    let start = 0
    let at = chunk.indexOf(delimiter)
    while (at !== -1) {
      feed(chunk.subarray(start, at))
      parts = []
      pending = 0
      skipping = false
      start = at + 1
      at = chunk.indexOf(delimiter, start)
    }
    feed(start === 0 ? chunk : chunk.subarray(start))
  }
}
