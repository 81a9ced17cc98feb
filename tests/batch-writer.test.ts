/**
 * BatchWriter's retries: a batch that fails is tried again after a back-off (on a ManualClock), keeps its
 * place before later items, and is dropped only after its last attempt.
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
