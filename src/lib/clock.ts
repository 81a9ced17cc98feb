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
 * Named periodic jobs on a clock. A job that throws (or whose promise rejects) is logged and runs again next
 * time: a failed prune must not take the broker down.
 *
 * A job may be async. A run never overlaps its own previous run: a tick that comes while the last run is still
 * in flight (a long prune on a slow disk) is skipped, not queued. `stop()` clears the timers, aborts `signal`
 * so that a sliced job can end between two slices, and resolves once the runs in flight have finished, so the
 * database can close after it without a job writing into a closed handle.
 */
export class PeriodicJobs {
  private readonly intervals: unknown[] = [];
  private readonly timeouts = new Set<unknown>();
  /** One entry per every() call (names need not be unique), holding its run in flight. */
  private readonly inFlight = new Map<object, Promise<void>>();
  private readonly controller = new AbortController();

  constructor(
    private readonly clock: Clock,
    private readonly log: { error(obj: object, msg: string): void },
  ) {}

  /** Aborted by stop(): a job working in slices checks it between slices and returns early. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /**
   * Runs `job` every `ms`. With `firstAfterMs`, also once that long after now (a daily job that should not
   * wait a whole day after a restart to run the first time).
   */
  every(name: string, ms: number, job: () => unknown, options: { firstAfterMs?: number } = {}): void {
    if (this.signal.aborted) return;
    const key = {};
    this.intervals.push(this.clock.setInterval(() => this.run(key, name, job), ms));
    if (options.firstAfterMs !== undefined) {
      const handle = this.clock.setTimeout(() => {
        this.timeouts.delete(handle);
        this.run(key, name, job);
      }, options.firstAfterMs);
      this.timeouts.add(handle);
    }
  }

  /** Clears the timers, aborts `signal` and resolves once every run in flight has ended. */
  async stop(): Promise<void> {
    this.controller.abort();
    for (const handle of this.intervals.splice(0)) this.clock.clearInterval(handle);
    for (const handle of this.timeouts) this.clock.clearTimeout(handle);
    this.timeouts.clear();
    await Promise.all(this.inFlight.values());
  }

  private run(key: object, name: string, job: () => unknown): void {
    if (this.signal.aborted || this.inFlight.has(key)) return;
    let result: unknown;
    try {
      result = job();
    } catch (err) {
      this.log.error({ err, job: name }, 'periodic job failed');
      return;
    }
    if (!isPromiseLike(result)) return;
    const running = Promise.resolve(result).then(
      () => undefined,
      (err: unknown) => this.log.error({ err, job: name }, 'periodic job failed'),
    );
    this.inFlight.set(key, running);
    void running.finally(() => this.inFlight.delete(key));
  }
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return (
    typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function'
  );
}
