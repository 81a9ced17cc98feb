import type { Clock } from '../../src/lib/clock.js';

type Timer =
  | { kind: 'interval'; fn: () => void; every: number; next: number }
  | { kind: 'timeout'; fn: () => void; due: number };

/** A clock the test moves by hand; intervals and timeouts fire as time passes, in time order. */
export class ManualClock implements Clock {
  private current: number;
  private readonly timers = new Map<number, Timer>();
  private nextHandle = 1;

  constructor(start = '2026-06-01T01:00:00.000Z') {
    this.current = Date.parse(start);
  }

  now(): Date {
    return new Date(this.current);
  }

  setInterval(fn: () => void, ms: number) {
    return this.add({ kind: 'interval', fn, every: ms, next: this.current + ms });
  }

  clearInterval(handle: unknown): void {
    this.timers.delete((handle as { handle: number }).handle);
  }

  setTimeout(fn: () => void, ms: number) {
    return this.add({ kind: 'timeout', fn, due: this.current + Math.max(0, ms) });
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete((handle as { handle: number }).handle);
  }

  /**
   * Milliseconds left on each pending timeout, soonest first: lets a test wait until the code under test
   * has started waiting (a retry back-off, say) before it moves time.
   */
  pendingTimeouts(): number[] {
    return [...this.timers.values()]
      .flatMap((timer) => (timer.kind === 'timeout' ? [timer.due - this.current] : []))
      .sort((x, y) => x - y);
  }

  /**
   * Moves time forward, firing each timer that falls due on the way, in time order (ties in the order
   * they were set). An interval that missed several periods fires once, at the last of them (as after a
   * blocked event loop), so long jumps stay cheap. A timer set or cleared by a firing callback is honoured
   * within the same advance.
   */
  advance(ms: number): void {
    const target = this.current + ms;
    for (;;) {
      let next: { handle: number; timer: Timer; at: number } | undefined;
      for (const [handle, timer] of this.timers) {
        const at =
          timer.kind === 'timeout'
            ? timer.due
            : timer.next + Math.floor((target - timer.next) / timer.every) * timer.every;
        const due = timer.kind === 'timeout' ? timer.due <= target : timer.next <= target;
        if (due && (next === undefined || at < next.at)) next = { handle, timer, at };
      }
      if (!next) break;
      this.current = next.at;
      if (next.timer.kind === 'timeout') this.timers.delete(next.handle);
      else next.timer.next = next.at + next.timer.every;
      next.timer.fn();
    }
    this.current = target;
  }

  private add(timer: Timer) {
    const handle = this.nextHandle++;
    this.timers.set(handle, timer);
    return { handle };
  }
}
