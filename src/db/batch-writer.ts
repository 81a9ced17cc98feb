/**
 * Collects writes that arrive one MQTT message at a time (acks, states) and applies them in one
 * transaction per tick. 2,000 acks arriving together cost one fsync-free transaction instead of 2,000.
 *
 * A batch that fails (SQLITE_BUSY past the busy timeout, a full disk) is tried again after a back-off
 * instead of being dropped: both causes are often over within seconds, and a lost `done` ack leaves a
 * delivery pending until it expires. After the last attempt it is handed to `onError` and dropped, so one
 * bad batch cannot hold the writes behind it for ever.
 *
 * While a batch waits for its retry, new items queue behind it, and a database that stays down for an hour
 * would let that queue grow with every message. So the writer holds at most `maxQueued` items; past that,
 * new items are dropped (counted through `onOverflow`, warned about at most once a minute). The newest are
 * dropped rather than the oldest because:
 * - dropping from the front of a 50,000-item array costs 60-130 µs per item (measured): seconds of event
 *   loop for an ack storm, just when the server is already struggling;
 * - what is stored stays a gapless prefix of what arrived, so "nothing after 10:42 was stored" is the whole
 *   story;
 * - the newest items are the ones the system recovers best: the device status is rewritten from memory,
 *   and a delivery whose last ack was dropped stays pending and is re-sent, to which the device answers
 *   with its final ack again (protocol.md rule 2).
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
  /** Items held at most, the batch waiting for a retry included; past it, new items are dropped. */
  maxQueued?: number;
  /** An item was dropped because the queue was full (to count it: this runs for every one). */
  onOverflow?: (item: T) => void;
  /**
   * For the log: the first overflow drop, then at most once per `overflowWarnMs`, how many items were
   * dropped since the last call. One line per minute however many items an outage drops.
   */
  onOverflowWarning?: (dropped: number) => void;
  overflowWarnMs?: number;
  /**
   * False: items are written only by flush() (a periodic job) or when a batch is full, not at the end of
   * every tick; for writes that may wait, such as telemetry samples.
   */
  flushEachTick?: boolean;
}

// 5 tries over 0.5 + 1 + 2 + 4 = 7.5 s: longer than SQLite's busy waits, short enough that the acks
// queued behind a dropped batch are not held long.
const DEFAULT_ATTEMPTS = 5;
const DEFAULT_RETRY_DELAY_MS = 500;
// A few MB of small objects: minutes of acks from 10,000 devices, far beyond a retried batch's 7.5 s.
const DEFAULT_MAX_QUEUED = 50_000;
const DEFAULT_OVERFLOW_WARN_MS = 60_000;

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
  private readonly maxQueued: number;
  private readonly onOverflow: BatchWriterOptions<T>['onOverflow'];
  private readonly onOverflowWarning: BatchWriterOptions<T>['onOverflowWarning'];
  private readonly overflowWarnMs: number;
  private readonly flushEachTick: boolean;
  /** Overflow drops not yet reported through onOverflowWarning, and the window that holds them back. */
  private unwarnedDrops = 0;
  private warnWindow: unknown;

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
    this.maxQueued = Math.max(1, o.maxQueued ?? DEFAULT_MAX_QUEUED);
    // A batch larger than the queue could never fill up before the queue overflows.
    this.maxBatch = Math.min(o.maxBatch ?? 2_000, this.maxQueued);
    this.attempts = Math.max(1, o.attempts ?? DEFAULT_ATTEMPTS);
    this.retryDelayMs = o.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
    this.timers = o.timers ?? systemTimers;
    this.onRetry = o.onRetry;
    this.onOverflow = o.onOverflow;
    this.onOverflowWarning = o.onOverflowWarning;
    this.overflowWarnMs = o.overflowWarnMs ?? DEFAULT_OVERFLOW_WARN_MS;
    this.flushEachTick = o.flushEachTick ?? true;
  }

  push(item: T): void {
    if (this.pending >= this.maxQueued) {
      this.overflow(item);
      return;
    }
    this.queue.push(item);
    // Behind a failed batch: written when its retry succeeds or it is dropped, in arrival order.
    if (this.retrying) return;
    if (this.queue.length >= this.maxBatch) {
      this.flush();
      return;
    }
    if (!this.scheduled && this.flushEachTick) {
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
    if (this.warnWindow !== undefined) this.timers.clearTimeout(this.warnWindow);
    this.warnWindow = undefined;
    if (this.unwarnedDrops > 0) this.warnOverflow(false);
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

  /** What is not written yet, oldest first (a copy): readers that must see writes still on their way. */
  snapshot(): T[] {
    return [...(this.retrying?.items ?? []), ...this.queue];
  }

  private overflow(item: T): void {
    this.onOverflow?.(item);
    this.unwarnedDrops += 1;
    if (this.warnWindow === undefined) this.warnOverflow(true);
  }

  /** Reports the drops held back; with `rearm`, holds back the next ones until the window ends. */
  private warnOverflow(rearm: boolean): void {
    const dropped = this.unwarnedDrops;
    this.unwarnedDrops = 0;
    this.onOverflowWarning?.(dropped);
    if (!rearm) return;
    this.warnWindow = this.timers.setTimeout(() => {
      this.warnWindow = undefined;
      if (this.unwarnedDrops > 0) this.warnOverflow(true);
    }, this.overflowWarnMs);
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
