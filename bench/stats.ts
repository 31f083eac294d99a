/**
 * Small statistics and formatting helpers for the benchmark.
 */

export interface Summary {
  readonly n: number
  readonly median: number
  readonly p95: number
  readonly mean: number
  readonly min: number
  readonly max: number
}

const quantile = (sorted: ArrayLike<number>, q: number): number => {
  if (sorted.length === 0) return Number.NaN
  // Nearest-rank: the smallest value with at least q of the samples at or below it.
  const rank = Math.max(1, Math.ceil(q * sorted.length))
  return sorted[Math.min(sorted.length, rank) - 1]!
}

export const summarize = (samples: ArrayLike<number>): Summary => {
  const sorted = Float64Array.from(samples).sort()
  let sum = 0
  for (let i = 0; i < sorted.length; i++) sum += sorted[i]!
  return {
    n: sorted.length,
    median: sorted.length % 2 === 1 || sorted.length === 0
      ? quantile(sorted, 0.5)
      : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2,
    p95: quantile(sorted, 0.95),
    mean: sum / sorted.length,
    min: sorted[0] ?? Number.NaN,
    max: sorted[sorted.length - 1] ?? Number.NaN
  }
}

export const now = (): number => performance.now()

export const fmtMs = (ms: number): string =>
  Number.isNaN(ms) ? "-" : ms >= 100 ? `${ms.toFixed(0)} ms` : ms >= 10 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(2)} ms`

export const fmtUs = (ms: number): string => `${(ms * 1000).toFixed(0)} µs`

export const fmtRate = (perSecond: number): string =>
  perSecond >= 10_000 ? `${(perSecond / 1000).toFixed(1)}k/s` : `${perSecond.toFixed(0)}/s`

export const fmtMb = (bytes: number): string => `${(bytes / (1024 * 1024)).toFixed(1)} MB`
