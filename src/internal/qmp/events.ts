/**
 * The one path every QMP event takes once decoded.
 *
 * - Streams: every subscriber sees every event, through its own bounded
 *   mailbox (`FanOut`); a slow one loses its oldest events with a warning.
 * - Waiters (`eventWait`, `getQmpEvent`, ...): each takes the first event, in
 *   arrival order, that matches its pattern and nobody else took; an event
 *   several waiters want goes to the one that started waiting first.
 * - The cache: events no waiter took, for later calls (the seed's semantics),
 *   bounded by count and bytes; the oldest are dropped, one warning per overflow.
 */
import { Duration, Effect, Option, Scope, Stream } from "effect"
import { QmpTimeoutError } from "../../Errors.js"
import type { QmpConnectionError, QmpProtocolError } from "../../Errors.js"
import type * as QmpMessage from "../../QmpMessage.js"
import * as Session from "../session.js"

export type CloseCause = QmpConnectionError | QmpProtocolError

export interface Options {
  /** Most unclaimed events kept. */
  readonly cacheSize: number
  /** Most bytes (as received) of unclaimed events kept. */
  readonly cacheBytes: number
  /** Events a stream subscriber may fall behind before it loses the oldest. */
  readonly streamBuffer: number
  readonly warn: (message: string) => void
}

interface Entry {
  readonly event: QmpMessage.Event
  readonly bytes: number
  readonly seq: number
}

interface Waiter {
  readonly matches: (event: QmpMessage.Event) => boolean
  // Set once: delivered an entry, or failed. `resume` is there while the caller is suspended.
  settled: boolean
  delivered: Entry | undefined
  resume: ((entry: Entry | CloseCause) => void) | undefined
}

export interface Router {
  /** Routes one event (with its size on the wire). */
  readonly publish: (event: QmpMessage.Event, bytes: number) => void
  /** Fails every waiter with the cause and ends every stream; the cache stays readable. */
  readonly close: (cause: CloseCause) => void
  /** Subscribes a stream now. */
  readonly subscribe: Effect.Effect<Stream.Stream<QmpMessage.Event>, never, Scope.Scope>
  /** Takes the first cached event that matches, without waiting. */
  readonly poll: (matches: (event: QmpMessage.Event) => boolean) => Option.Option<QmpMessage.Event>
  /** Takes the first matching event: a cached one, else the next to arrive (no deadline when `timeout` is undefined). */
  readonly take: (
    matches: (event: QmpMessage.Event) => boolean,
    timeout: Duration.Duration | undefined,
    operation: string
  ) => Effect.Effect<QmpMessage.Event, QmpTimeoutError | CloseCause>
  /** Takes every cached event. */
  readonly takeAll: () => Array<QmpMessage.Event>
  readonly cached: () => number
}

export const make = (options: Options): Router => {
  let cache: Array<Entry> = []
  let cacheBytes = 0
  let overflowing = false
  let seq = 0
  let closeCause: CloseCause | undefined
  // In the order they started waiting.
  const waiters: Array<Waiter> = []

  let dropped = 0
  const fanOut = Session.makeFanOut<QmpMessage.Event>({
    capacity: options.streamBuffer,
    // Counted per burst and reported once the burst is over: a warning per dropped event would flood.
    onDrop: (n) => {
      if (dropped === 0) {
        setImmediate(() => {
          options.warn(`an event stream subscriber fell more than ${options.streamBuffer} events behind: ${dropped} oldest dropped`)
          dropped = 0
        })
      }
      dropped += n
    }
  })

  const removeWaiter = (waiter: Waiter) => {
    const i = waiters.indexOf(waiter)
    if (i >= 0) waiters.splice(i, 1)
  }

  // To the first waiter that wants it, else into the cache (kept in arrival order).
  const route = (entry: Entry) => {
    for (let i = 0; i < waiters.length; i++) {
      const waiter = waiters[i]!
      if (!waiter.matches(entry.event)) continue
      waiters.splice(i, 1)
      waiter.settled = true
      waiter.delivered = entry
      waiter.resume?.(entry)
      return
    }
    let at = cache.length
    while (at > 0 && cache[at - 1]!.seq > entry.seq) at--
    cache.splice(at, 0, entry)
    cacheBytes += entry.bytes
    if (cache.length <= options.cacheSize && cacheBytes <= options.cacheBytes) return
    let drop = 0
    let bytes = cacheBytes
    while (drop < cache.length && (cache.length - drop > options.cacheSize || bytes > options.cacheBytes)) {
      bytes -= cache[drop]!.bytes
      drop++
    }
    cache = cache.slice(drop)
    cacheBytes = bytes
    if (!overflowing) {
      overflowing = true
      options.warn(
        `unclaimed QMP events over ${options.cacheSize} events or ${options.cacheBytes} bytes: dropping the oldest`
      )
    }
  }

  const takeCached = (matches: (event: QmpMessage.Event) => boolean): Entry | undefined => {
    const i = cache.findIndex((entry) => matches(entry.event))
    if (i < 0) return undefined
    const [entry] = cache.splice(i, 1)
    cacheBytes -= entry!.bytes
    overflowing = false
    return entry
  }

  const take = (
    matches: (event: QmpMessage.Event) => boolean,
    timeout: Duration.Duration | undefined,
    operation: string
  ): Effect.Effect<QmpMessage.Event, QmpTimeoutError | CloseCause> =>
    Effect.suspend(() => {
      const cached = takeCached(matches)
      if (cached) return Effect.succeed(cached.event)
      if (closeCause) return Effect.fail(closeCause)
      const waiter: Waiter = { matches, settled: false, delivered: undefined, resume: undefined }
      waiters.push(waiter)
      const delivered = Effect.async<Entry, CloseCause>((resume) => {
        if (waiter.settled) {
          return resume(waiter.delivered ? Effect.succeed(waiter.delivered) : Effect.fail(closeCause!))
        }
        waiter.resume = (outcome) => resume("event" in outcome ? Effect.succeed(outcome) : Effect.fail(outcome))
        return Effect.sync(() => {
          waiter.resume = undefined
          if (!waiter.settled) {
            waiter.settled = true
            removeWaiter(waiter)
          }
        })
      })
      // The deadline settles the waiter in the same synchronous step that checks it, so an
      // event and the deadline can never both win.
      const deadline = timeout === undefined || !Duration.isFinite(timeout)
        ? Effect.never
        : Effect.flatMap(Effect.sleep(timeout), () => {
          if (waiter.settled) return Effect.never
          waiter.settled = true
          removeWaiter(waiter)
          return Effect.fail(new QmpTimeoutError({ operation, timeout }))
        })
      return Effect.uninterruptibleMask((restore) =>
        restore(Effect.raceFirst(delivered, deadline)).pipe(
          // Delivered, but the caller was interrupted before it could take it: the event goes
          // back where it was, for the next waiter or the cache.
          Effect.onInterrupt(() =>
            Effect.sync(() => {
              const entry = waiter.delivered
              waiter.delivered = undefined
              if (entry) route(entry)
            })
          ),
          Effect.map((entry) => entry.event)
        )
      )
    })

  return {
    publish: (event, bytes) => {
      fanOut.publish(event)
      route({ event, bytes, seq: ++seq })
    },
    close: (cause) => {
      if (closeCause) return
      closeCause = cause
      for (const waiter of waiters.splice(0)) {
        waiter.settled = true
        waiter.resume?.(cause)
      }
      fanOut.end()
    },
    subscribe: fanOut.subscribe,
    poll: (matches) => Option.map(Option.fromNullable(takeCached(matches)), (entry) => entry.event),
    take,
    takeAll: () => {
      const all = cache.map((entry) => entry.event)
      cache = []
      cacheBytes = 0
      overflowing = false
      return all
    },
    cached: () => cache.length
  }
}
