/**
 * Collects writes that arrive one MQTT message at a time (acks, states) and applies them in one
 * transaction per tick. 2,000 acks arriving together cost one fsync-free transaction instead of 2,000.
 *
 * A batch that fails (SQLITE_BUSY past the busy timeout, a full disk) is tried again after a back-off
 * instead of being dropped: both causes are often over within seconds, and a lost `done` ack leaves a
 * delivery pending until it expires. After the last attempt it is handed to `onError` and dropped, so one
 * bad batch cannot hold the writes behind it for ever.
 */

/** The timers the back-off runs on; a test passes a ManualClock and moves time itself. */
export interface RetryTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface BatchWriterOptions<T> {
  /** A batch this large is applied at once instead of at the end of the tick. */
  maxBatch?: number;
  /** Tries per batch, the first included, before it is dropped. 1: never retried. */
  attempts?: number;
  /** The wait before the first retry, doubled before each next one. */
  retryDelayMs?: number;
  timers?: RetryTimers;
  /** A batch failed and will be tried again in `delayMs` (for logs and metrics). */
  onRetry?: (err: unknown, items: readonly T[], attempt: number, delayMs: number) => void;
}

// 5 tries over 0.5 + 1 + 2 + 4 = 7.5 s: longer than SQLite's busy waits, short enough that the acks
// queued behind a dropped batch are not held long.
const DEFAULT_ATTEMPTS = 5;
const DEFAULT_RETRY_DELAY_MS = 500;

const systemTimers: RetryTimers = {
  setTimeout: (fn, ms) => {
    const timer = setTimeout(fn, ms);
    // A pending retry must not keep a stopping process alive; drain() is the last chance to write.
    timer.unref();
    return timer;
  },
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export class BatchWriter<T> {
  private queue: T[] = [];
  private scheduled = false;
  /** The failed batch waiting for its next try; while there is one, later items wait behind it. */
  private retrying: { items: T[]; attempt: number; timer: unknown } | undefined;
  private readonly maxBatch: number;
  private readonly attempts: number;
  private readonly retryDelayMs: number;
  private readonly timers: RetryTimers;
  private readonly onRetry: BatchWriterOptions<T>['onRetry'];

  /**
   * `onError` gets a batch that failed its last attempt, as it is dropped. `options` may be a number:
   * the batch size limit alone, as before retries existed.
   */
  constructor(
    private readonly apply: (items: T[]) => void,
    private readonly onError: (err: unknown, items: readonly T[]) => void,
    options: number | BatchWriterOptions<T> = {},
  ) {
    const o = typeof options === 'number' ? { maxBatch: options } : options;
    this.maxBatch = o.maxBatch ?? 2_000;
    this.attempts = Math.max(1, o.attempts ?? DEFAULT_ATTEMPTS);
    this.retryDelayMs = o.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
    this.timers = o.timers ?? systemTimers;
    this.onRetry = o.onRetry;
  }

  push(item: T): void {
    this.queue.push(item);
    // Behind a failed batch: written when its retry succeeds or it is dropped, in arrival order.
    if (this.retrying) return;
    if (this.queue.length >= this.maxBatch) {
      this.flush();
      return;
    }
    if (!this.scheduled) {
      this.scheduled = true;
      // setImmediate lets every message already read from the sockets join this batch.
      setImmediate(() => this.flush());
    }
  }

  /**
   * Applies what is queued now. While a failed batch waits for its retry this does nothing: callers flush
   * often (before reading pending commands, on every expiry sweep) and must neither cut the back-off short
   * nor write later items before earlier ones.
   */
  flush(): void {
    this.scheduled = false;
    if (this.retrying) return;
    this.writeQueue();
  }

  /**
   * The last chance to write, at shutdown: tries the waiting batch and the queue once more at once, and
   * drops (through `onError`) whatever fails.
   */
  drain(): void {
    this.scheduled = false;
    const waiting = this.retrying;
    if (waiting) this.timers.clearTimeout(waiting.timer);
    this.retrying = undefined;
    const items = [...(waiting?.items ?? []), ...this.queue];
    this.queue = [];
    if (items.length === 0) return;
    try {
      this.apply(items);
    } catch (err) {
      this.onError(err, items);
    }
  }

  get pending(): number {
    return this.queue.length + (this.retrying?.items.length ?? 0);
  }

  private writeQueue(): void {
    // Batches of at most maxBatch, so that the items queued behind a retry are not one huge transaction.
    while (this.queue.length > 0 && !this.retrying) {
      const items = this.queue.splice(0, this.maxBatch);
      this.attempt(items, 1);
    }
  }

  private attempt(items: T[], attempt: number): void {
    try {
      this.apply(items);
      return;
    } catch (err) {
      if (attempt >= this.attempts) {
        this.onError(err, items);
        return;
      }
      const delayMs = this.retryDelayMs * 2 ** (attempt - 1);
      this.onRetry?.(err, items, attempt, delayMs);
      const timer = this.timers.setTimeout(() => {
        this.retrying = undefined;
        this.attempt(items, attempt + 1);
        // Succeeded or dropped: what queued up behind it goes next.
        this.writeQueue();
      }, delayMs);
      this.retrying = { items, attempt, timer };
    }
  }
}
