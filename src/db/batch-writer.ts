/**
 * Collects writes that arrive one MQTT message at a time (acks, states) and applies them in one
 * transaction per tick. 2,000 acks arriving together cost one fsync-free transaction instead of 2,000.
 */
export class BatchWriter<T> {
  private queue: T[] = [];
  private scheduled = false;

  constructor(
    private readonly apply: (items: T[]) => void,
    private readonly onError: (err: unknown, items: readonly T[]) => void,
    private readonly maxBatch = 2_000,
  ) {}

  push(item: T): void {
    this.queue.push(item);
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

  flush(): void {
    this.scheduled = false;
    if (this.queue.length === 0) return;
    const items = this.queue;
    this.queue = [];
    try {
      this.apply(items);
    } catch (err) {
      this.onError(err, items);
    }
  }

  get pending(): number {
    return this.queue.length;
  }
}
