/**
 * BatchWriter's retries: a batch that fails is tried again after a back-off (on a ManualClock), keeps its
 * place before later items, and is dropped only after its last attempt. While it waits, the queue behind
 * it is bounded: new items past the limit are dropped, counted, and warned about at most once a window.
 */
import { describe, expect, it } from 'vitest';
import { BatchWriter } from '../src/db/batch-writer.js';
import { ManualClock } from './support/clock.js';

/** An `apply` that throws SQLITE_BUSY the first `failures` times, then records what it writes. */
function flakyStore(failures: number) {
  const written: number[][] = [];
  let calls = 0;
  return {
    written,
    get calls() {
      return calls;
    },
    apply(items: number[]) {
      calls += 1;
      if (calls <= failures) throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
      written.push([...items]);
    },
  };
}

function writer(store: ReturnType<typeof flakyStore>, clock: ManualClock, attempts = 5) {
  const dropped: number[][] = [];
  const retries: { attempt: number; delayMs: number; items: number[] }[] = [];
  const w = new BatchWriter<number>(
    (items) => store.apply(items),
    (_err, items) => dropped.push([...items]),
    {
      attempts,
      retryDelayMs: 100,
      timers: clock,
      onRetry: (_err, items, attempt, delayMs) => retries.push({ attempt, delayMs, items: [...items] }),
    },
  );
  return { w, dropped, retries };
}

describe('BatchWriter retries', () => {
  it('retries a batch that fails twice, with a growing back-off, and writes it once', () => {
    const clock = new ManualClock();
    const store = flakyStore(2);
    const { w, dropped, retries } = writer(store, clock);
    w.push(1);
    w.push(2);
    w.flush();
    expect(store.written).toEqual([]);
    expect(retries).toEqual([{ attempt: 1, delayMs: 100, items: [1, 2] }]);
    expect(w.pending).toBe(2);

    clock.advance(99);
    expect(store.calls).toBe(1);
    clock.advance(1);
    expect(retries).toEqual([
      { attempt: 1, delayMs: 100, items: [1, 2] },
      { attempt: 2, delayMs: 200, items: [1, 2] },
    ]);
    clock.advance(200);
    expect(store.written).toEqual([[1, 2]]);
    expect(dropped).toEqual([]);
    expect(w.pending).toBe(0);
    // No retry left behind.
    clock.advance(60_000);
    expect(store.calls).toBe(3);
  });

  it('keeps later items behind the failed batch, in order, even when flushed meanwhile', () => {
    const clock = new ManualClock();
    const store = flakyStore(1);
    const { w } = writer(store, clock);
    w.push(1);
    w.flush();
    w.push(2);
    w.push(3);
    // Callers flush often (before reading pending commands): that must not jump the queue.
    w.flush();
    expect(store.written).toEqual([]);
    clock.advance(100);
    expect(store.written).toEqual([[1], [2, 3]]);
    expect(w.pending).toBe(0);
  });

  it('drops a batch after its last attempt and goes on with the next', () => {
    const clock = new ManualClock();
    const store = flakyStore(3);
    const { w, dropped, retries } = writer(store, clock, 3);
    w.push(1);
    w.flush();
    w.push(2);
    clock.advance(100 + 200);
    expect(retries.map((r) => r.attempt)).toEqual([1, 2]);
    expect(dropped).toEqual([[1]]);
    expect(store.written).toEqual([[2]]);
    clock.advance(60_000);
    expect(store.calls).toBe(4);
  });

  it('drain() writes a waiting batch at once, without waiting for its back-off', () => {
    const clock = new ManualClock();
    const store = flakyStore(1);
    const { w, dropped } = writer(store, clock);
    w.push(1);
    w.flush();
    w.push(2);
    w.drain();
    expect(store.written).toEqual([[1, 2]]);
    expect(dropped).toEqual([]);
    // The cancelled retry does not write the batch a second time.
    clock.advance(60_000);
    expect(store.written).toEqual([[1, 2]]);
  });
});

describe('BatchWriter queue bound', () => {
  /** A writer whose store always fails and whose retry waits an hour: the queue only grows. */
  function stuck(clock: ManualClock, maxQueued: number) {
    const store = flakyStore(Number.POSITIVE_INFINITY);
    const overflowed: number[] = [];
    const warnings: number[] = [];
    const w = new BatchWriter<number>(
      (items) => store.apply(items),
      () => undefined,
      {
        retryDelayMs: 3_600_000,
        timers: clock,
        maxQueued,
        overflowWarnMs: 60_000,
        onOverflow: (item) => overflowed.push(item),
        onOverflowWarning: (dropped) => warnings.push(dropped),
      },
    );
    return { w, store, overflowed, warnings };
  }

  it('holds at most maxQueued items behind a failed batch, dropping and counting the newest', () => {
    const clock = new ManualClock();
    const store = flakyStore(1);
    const overflowed: number[] = [];
    const w = new BatchWriter<number>(
      (items) => store.apply(items),
      () => undefined,
      { retryDelayMs: 100, timers: clock, maxQueued: 3, onOverflow: (item) => overflowed.push(item) },
    );
    w.push(1);
    w.flush();
    w.push(2);
    w.push(3);
    // The failed batch counts towards the limit: it is held in memory too.
    expect(w.pending).toBe(3);
    w.push(4);
    w.push(5);
    expect(w.pending).toBe(3);
    expect(overflowed).toEqual([4, 5]);

    clock.advance(100);
    expect(store.written).toEqual([[1], [2, 3]]);
    // Room again: the next item is taken.
    w.push(6);
    w.flush();
    expect(store.written).toEqual([[1], [2, 3], [6]]);
    expect(overflowed).toEqual([4, 5]);
  });

  it('warns at the first drop, then at most once per window with the drops held back', () => {
    const clock = new ManualClock();
    const { w, overflowed, warnings } = stuck(clock, 1);
    w.push(1);
    w.flush();
    for (let i = 2; i <= 4; i++) w.push(i);
    expect(overflowed).toEqual([2, 3, 4]);
    expect(warnings).toEqual([1]);

    clock.advance(59_999);
    expect(warnings).toEqual([1]);
    clock.advance(1);
    expect(warnings).toEqual([1, 2]);
    // A window without drops ends quietly, and the next drop is warned about at once.
    clock.advance(60_000);
    expect(warnings).toEqual([1, 2]);
    clock.advance(60_000);
    w.push(5);
    expect(warnings).toEqual([1, 2, 1]);
    w.push(6);
    // At shutdown, the drops held back are reported, and no window is left running.
    w.drain();
    expect(warnings).toEqual([1, 2, 1, 1]);
    expect(clock.pendingTimeouts()).toEqual([]);
    expect(overflowed).toEqual([2, 3, 4, 5, 6]);
  });

  it('defaults to a generous bound: 50,000 items', () => {
    const clock = new ManualClock();
    const store = flakyStore(Number.POSITIVE_INFINITY);
    const overflowed: number[] = [];
    const w = new BatchWriter<number>(
      (items) => store.apply(items),
      () => undefined,
      { timers: clock, onOverflow: (item) => overflowed.push(item) },
    );
    w.push(0);
    w.flush();
    for (let i = 1; i < 50_000; i++) w.push(i);
    expect(overflowed).toEqual([]);
    w.push(50_000);
    expect(overflowed).toEqual([50_000]);
    expect(w.pending).toBe(50_000);
  });
});
