import type { Clock } from '../../src/lib/clock.js';

/** A clock the test moves by hand; intervals fire as time passes, in order. */
export class ManualClock implements Clock {
  private current: number;
  private readonly intervals = new Map<number, { fn: () => void; every: number; next: number }>();
  private nextHandle = 1;

  constructor(start = '2026-06-01T01:00:00.000Z') {
    this.current = Date.parse(start);
  }

  now(): Date {
    return new Date(this.current);
  }

  setInterval(fn: () => void, ms: number) {
    const handle = this.nextHandle++;
    this.intervals.set(handle, { fn, every: ms, next: this.current + ms });
    return { handle };
  }

  clearInterval(handle: unknown): void {
    this.intervals.delete((handle as { handle: number }).handle);
  }

  /**
   * Moves time forward, firing each interval that falls due on the way, in time order. An interval that
   * missed several periods fires once, at the last of them (as after a blocked event loop), so long jumps
   * stay cheap.
   */
  advance(ms: number): void {
    const target = this.current + ms;
    const due = [...this.intervals.values()]
      .filter((i) => i.next <= target)
      .map((timer) => ({
        timer,
        last: timer.next + Math.floor((target - timer.next) / timer.every) * timer.every,
      }))
      .sort((a, b) => a.last - b.last);
    for (const { timer, last } of due) {
      this.current = last;
      timer.next = last + timer.every;
      timer.fn();
    }
    this.current = target;
  }
}
