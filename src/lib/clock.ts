/**
 * The clock and timers are side effects behind a seam, so tests drive time instead of sleeping.
 */
export interface Clock {
  now(): Date;
  /** Returns an opaque handle for clearInterval. */
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => new Date(),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (handle) => clearInterval(handle as NodeJS.Timeout),
};
