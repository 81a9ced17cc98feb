/**
 * Lets a repeated log line through once per key (a device, say) and window, and counts the ones it holds
 * back, so that one misbehaving device cannot flood the server log: 5,000 refused SUBSCRIBEs from one
 * device once wrote 4,999 warnings in 0.6 s. The number held back is reported with the next line let
 * through; /metrics counts every occurrence, logged or not.
 */
export class LogWindow {
  private readonly windows = new Map<string, { start: number; held: number }>();

  constructor(
    private readonly clock: { now(): Date },
    private readonly windowMs: number,
    /** Keys remembered at most: device ids are bounded, but a bound here costs nothing. */
    private readonly maxKeys = 10_000,
  ) {}

  /** `undefined`: hold this line back. A number: log it, saying how many were held back before it. */
  pass(key: string): number | undefined {
    const now = this.clock.now().getTime();
    const window = this.windows.get(key);
    if (window && this.open(window, now)) {
      window.held += 1;
      return undefined;
    }
    if (!window && this.windows.size >= this.maxKeys) this.prune(now);
    this.windows.set(key, { start: now, held: 0 });
    return window?.held ?? 0;
  }

  // A clock set back counts as a new window, so a line is never held back for longer than intended.
  private open(window: { start: number }, now: number): boolean {
    return now >= window.start && now - window.start < this.windowMs;
  }

  private prune(now: number): void {
    for (const [key, window] of this.windows) if (!this.open(window, now)) this.windows.delete(key);
    // Every key still inside its window: forget the oldest rather than grow.
    const oldest = this.windows.keys().next();
    if (this.windows.size >= this.maxKeys && !oldest.done) this.windows.delete(oldest.value);
  }
}
