import type { Clock } from '../../lib/clock.js';

interface Window {
  failures: number;
  startedAt: number;
}

/**
 * Counts failed logins per username and per client address in a fixed window. Past the limit, logins
 * are refused with 429 until the window ends, whatever the password: guessing is slowed to a crawl while
 * a broadcaster who mistyped twice is not locked out. In memory: one process owns the API.
 */
export class LoginThrottle {
  private readonly windows = new Map<string, Window>();

  constructor(
    private readonly clock: Clock,
    private readonly limits = { perUsername: 5, perAddress: 20, windowMs: 15 * 60_000 },
  ) {}

  /** Seconds until the caller may try again, or 0 when a login attempt is allowed now. */
  retryAfterS(username: string, address: string): number {
    const now = this.clock.now().getTime();
    const waits = [
      this.wait(`u:${username}`, this.limits.perUsername, now),
      this.wait(`a:${address}`, this.limits.perAddress, now),
    ];
    return Math.max(...waits);
  }

  fail(username: string, address: string): void {
    const now = this.clock.now().getTime();
    for (const key of [`u:${username}`, `a:${address}`]) {
      const w = this.current(key, now);
      w.failures += 1;
      this.windows.set(key, w);
    }
    if (this.windows.size > 50_000) this.prune(now);
  }

  succeed(username: string): void {
    this.windows.delete(`u:${username}`);
  }

  private wait(key: string, limit: number, now: number): number {
    const w = this.current(key, now);
    return w.failures >= limit ? Math.ceil((w.startedAt + this.limits.windowMs - now) / 1000) : 0;
  }

  private current(key: string, now: number): Window {
    const w = this.windows.get(key);
    return w && now - w.startedAt < this.limits.windowMs ? w : { failures: 0, startedAt: now };
  }

  private prune(now: number): void {
    for (const [key, w] of this.windows) {
      if (now - w.startedAt >= this.limits.windowMs) this.windows.delete(key);
    }
  }
}
