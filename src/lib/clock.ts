/**
 * The clock and timers are side effects behind a seam, so tests drive time instead of sleeping.
 */
export interface Clock {
  now(): Date;
  /** Returns an opaque handle for clearInterval. */
  setInterval(fn: () => void, ms: number): unknown;
  clearInterval(handle: unknown): void;
  /** Runs `fn` once after `ms`; returns an opaque handle for clearTimeout. */
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => new Date(),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (handle) => clearInterval(handle as NodeJS.Timeout),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

/**
 * Named periodic jobs on a clock. A job that throws is logged and runs again next time: a failed prune
 * must not take the broker down.
 */
export class PeriodicJobs {
  private readonly handles: unknown[] = [];

  constructor(
    private readonly clock: Clock,
    private readonly log: { error(obj: object, msg: string): void },
  ) {}

  every(name: string, ms: number, job: () => unknown): void {
    this.handles.push(
      this.clock.setInterval(() => {
        try {
          job();
        } catch (err) {
          this.log.error({ err, job: name }, 'periodic job failed');
        }
      }, ms),
    );
  }

  stop(): void {
    for (const handle of this.handles.splice(0)) this.clock.clearInterval(handle);
  }
}
