/**
 * The one path every QMP event takes once decoded.
 *
 * - Streams: every subscriber sees every event, through its own bounded
 *   mailbox (`../fanOut.ts`); a slow one loses its oldest events with a warning.
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
import * as FanOut from "../fanOut.js"

export type CloseCause = QmpConnectionError | QmpProtocolError

export interface Options {
  /** Most unclaimed events kept. */
  readonly cacheSize: number
  /** Most bytes (as received) of unclaimed events kept. */
  readonly cacheBytes: number
  /** Events a stream subscriber may fall behind before it loses the oldest. */
  readonly streamBuffer: number
  /** Live stream subscribers above which a warning is logged once. Default `SUBSCRIBER_WARNING`. */
  readonly subscriberWarning?: number | undefined
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
}

/**
 * Unclaimed events in arrival order, bounded by count and bytes; the oldest go first.
 * The live entries are `entries[head..]`: dropping or taking the oldest moves `head` (the
 * array is compacted once that prefix is half of it), so a full cache that nobody reads
 * costs O(1) per event, not a copy of the whole cache (10,000 entries by default).
 */
const makeCache = (options: Options) => {
  let entries: Array<Entry | undefined> = []
  let head = 0
  let bytes = 0
  let overflowing = false
  const size = () => entries.length - head
  const live = () => entries.slice(head) as Array<Entry>
  // Compacts once the taken or dropped prefix is most of the array: amortized O(1) per entry.
  const shift = () => {
    entries[head++] = undefined
    if (head === entries.length) {
      entries = []
      head = 0
    } else if (head > 64 && head * 2 > entries.length) {
      entries = live()
      head = 0
    }
  }
  const drop = () => {
    while (size() > 0 && (size() > options.cacheSize || bytes > options.cacheBytes)) {
      bytes -= entries[head]!.bytes
      shift()
    }
    if (!overflowing) {
      overflowing = true
      options.warn(`unclaimed QMP events over ${options.cacheSize} events or ${options.cacheBytes} bytes: dropping the oldest`)
    }
  }
  return {
    insert: (entry: Entry) => {
      // An entry handed back by an interrupted waiter goes back to its place.
      let at = entries.length
      while (at > head && entries[at - 1]!.seq > entry.seq) at--
      if (at === entries.length) entries.push(entry)
      else entries.splice(at, 0, entry)
      bytes += entry.bytes
      if (size() > options.cacheSize || bytes > options.cacheBytes) drop()
    },
    take: (matches: (event: QmpMessage.Event) => boolean): Entry | undefined => {
      for (let i = head; i < entries.length; i++) {
        const entry = entries[i]!
        if (!matches(entry.event)) continue
        if (i === head) shift()
        else entries.splice(i, 1)
        bytes -= entry.bytes
        overflowing = false
        return entry
      }
      return undefined
    },
    takeAll: (): Array<QmpMessage.Event> => {
      const all = live().map((entry) => entry.event)
      entries = []
      head = 0
      bytes = 0
      overflowing = false
      return all
    }
  }
}

/** Live stream subscribers on one connection above which a warning is logged (once). */
export const SUBSCRIBER_WARNING = 1024

/**
 * A fan-out whose drops are reported once per subscriber: the first burst
 * with its count (once the burst is over), and, when that subscriber ends,
 * what it lost after that warning. Crowding is warned once (again only after
 * the subscribers have fallen to half the threshold).
 */
const makeStreams = (options: Options) => {
  // Per subscriber that dropped: drops not yet reported, and whether its first report went out.
  const drops = new Map<number, { pending: number; reported: boolean }>()
  const firstReport = (subscriber: number) => {
    const entry = drops.get(subscriber)
    if (entry === undefined || entry.reported) return
    entry.reported = true
    options.warn(
      `event stream subscriber #${subscriber} fell more than ${options.streamBuffer} events behind: ${entry.pending} oldest dropped` +
        " (its later drops are counted and reported when it unsubscribes)"
    )
    entry.pending = 0
  }
  const above = options.subscriberWarning ?? SUBSCRIBER_WARNING
  return FanOut.make<QmpMessage.Event>({
    capacity: options.streamBuffer,
    onDrop: (n, subscriber) => {
      const entry = drops.get(subscriber)
      if (entry === undefined) {
        drops.set(subscriber, { pending: n, reported: false })
        // Reported once the burst is over, with its count.
        setImmediate(() => firstReport(subscriber))
      } else {
        entry.pending += n
      }
    },
    onUnsubscribe: (subscriber) => {
      const entry = drops.get(subscriber)
      if (entry === undefined) return
      if (!entry.reported) firstReport(subscriber)
      else if (entry.pending > 0) {
        options.warn(`event stream subscriber #${subscriber} ended having dropped ${entry.pending} more events after its first warning`)
      }
      drops.delete(subscriber)
    },
    crowded: {
      above,
      warn: (subscribers) =>
        options.warn(
          `${subscribers} live event stream subscribers on one QMP connection (more than ${above}): each holds its own buffer of up to ` +
            `${options.streamBuffer} events and gets a copy of every event; share one stream (Stream.broadcast) instead of subscribing per consumer`
        )
    }
  })
}

/**
 * Waits for a waiter's event. The deadline settles the waiter in the same
 * synchronous step that checks it, so an event and the deadline never both win;
 * an event handed to a caller interrupted before it could take it is re-routed.
 */
const awaitWaiter = (
  waiter: Waiter,
  timeout: Duration.Duration | undefined,
  operation: string,
  cancel: (waiter: Waiter) => void,
  reroute: (entry: Entry) => void,
  closeCause: () => CloseCause | undefined
): Effect.Effect<QmpMessage.Event, QmpTimeoutError | CloseCause> => {
  const delivered = Effect.async<Entry, CloseCause>((resume) => {
    if (waiter.settled) return resume(waiter.delivered ? Effect.succeed(waiter.delivered) : Effect.fail(closeCause()!))
    waiter.resume = (outcome) => resume("event" in outcome ? Effect.succeed(outcome) : Effect.fail(outcome))
    return Effect.sync(() => {
      waiter.resume = undefined
      cancel(waiter)
    })
  })
  const deadline = timeout === undefined || !Duration.isFinite(timeout)
    ? Effect.never
    : Effect.flatMap(Effect.sleep(timeout), () => {
      if (waiter.settled) return Effect.never
      cancel(waiter)
      return Effect.fail(new QmpTimeoutError({ operation, timeout }))
    })
  return Effect.uninterruptibleMask((restore) =>
    restore(Effect.raceFirst(delivered, deadline)).pipe(
      Effect.onInterrupt(() =>
        Effect.sync(() => {
          const entry = waiter.delivered
          waiter.delivered = undefined
          if (entry) reroute(entry)
        })
      ),
      Effect.map((entry) => entry.event)
    )
  )
}

export const make = (options: Options): Router => {
  const cache = makeCache(options)
  const streams = makeStreams(options)
  // In the order they started waiting.
  const waiters: Array<Waiter> = []
  let seq = 0
  let closeCause: CloseCause | undefined

  const cancel = (waiter: Waiter) => {
    if (waiter.settled) return
    waiter.settled = true
    const i = waiters.indexOf(waiter)
    if (i >= 0) waiters.splice(i, 1)
  }

  // To the first waiter that wants it, else into the cache.
  const route = (entry: Entry) => {
    const i = waiters.findIndex((waiter) => waiter.matches(entry.event))
    if (i < 0) return cache.insert(entry)
    const [waiter] = waiters.splice(i, 1)
    waiter!.settled = true
    waiter!.delivered = entry
    waiter!.resume?.(entry)
  }

  return {
    publish: (event, bytes) => {
      streams.publish(event)
      route({ event, bytes, seq: ++seq })
    },
    close: (cause) => {
      if (closeCause) return
      closeCause = cause
      for (const waiter of waiters.splice(0)) {
        waiter.settled = true
        waiter.resume?.(cause)
      }
      streams.end()
    },
    subscribe: streams.subscribe,
    poll: (matches) => Option.map(Option.fromNullable(cache.take(matches)), (entry) => entry.event),
    take: (matches, timeout, operation) =>
      Effect.suspend(() => {
        const cached = cache.take(matches)
        if (cached) return Effect.succeed(cached.event)
        if (closeCause) return Effect.fail(closeCause)
        const waiter: Waiter = { matches, settled: false, delivered: undefined, resume: undefined }
        waiters.push(waiter)
        return awaitWaiter(waiter, timeout, operation, cancel, route, () => closeCause)
      }),
    takeAll: cache.takeAll
  }
}
