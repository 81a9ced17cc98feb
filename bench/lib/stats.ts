/** Small statistics helpers for the benchmarks: nearest-rank percentiles and picking the median round. */

export interface LatencySummary {
  /** How many samples the figures cover. */
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

/**
 * Nearest-rank percentile of an ascending array: the smallest sample with at least p % of the samples at
 * or below it. No interpolation, so every figure reported is a latency some device really saw.
 */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] ?? NaN;
}

export function summarize(samples: readonly number[]): LatencySummary {
  const sorted = Float64Array.from(samples).sort();
  const values = Array.from(sorted);
  return {
    count: values.length,
    p50Ms: round(percentile(values, 50), 1),
    p99Ms: round(percentile(values, 99), 1),
    maxMs: round(values.at(-1) ?? NaN, 1),
  };
}

/**
 * The item whose key is the median of all keys (the lower middle one for an even count). Returning a whole
 * round rather than the median of each figure separately keeps p50, p99 and max from the same broadcast.
 */
export function medianBy<T>(items: readonly T[], key: (item: T) => number): T {
  if (items.length === 0) throw new RangeError('medianBy needs at least one item');
  const sorted = [...items].sort((a, b) => key(a) - key(b));
  return sorted[Math.floor((sorted.length - 1) / 2)] as T;
}

export function round(value: number, decimals: number): number {
  if (!Number.isFinite(value)) return value;
  const factor = 10 ** decimals;
  return Math.round(value * factor) / factor;
}
