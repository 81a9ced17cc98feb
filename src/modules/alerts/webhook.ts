/**
 * Delivers alert events to an operator's webhook (a chat bot, an SMS gateway) with retries. Events go out
 * one at a time, in order, so a receiver never sees a resolution before the opening it resolves.
 */
import type { FastifyBaseLogger } from 'fastify';
import { systemClock, type Clock } from '../../lib/clock.js';

export interface AlertEvent {
  event: 'alert.opened' | 'alert.resolved';
  alert: Record<string, unknown>;
  sentAt: string;
}

export interface AlertNotifier {
  notify(event: AlertEvent): void;
  /** Waits for what is queued, giving up after `timeoutMs`. */
  drain(timeoutMs: number): Promise<void>;
}

/** Used when no webhook is configured. */
export const noNotifier: AlertNotifier = { notify: () => undefined, drain: async () => undefined };

// A receiver that is down for an hour must not make the queue grow without bound.
const MAX_QUEUE = 1_000;

export class WebhookNotifier implements AlertNotifier {
  private queue: AlertEvent[] = [];
  private running: Promise<void> | null = null;
  private stopped = false;
  /** Set when shutdown begins: a back-off in progress ends at once, so each event gets one last try. */
  private readonly draining = new AbortController();
  /** Set when the shutdown deadline has passed: aborts the request in flight. */
  private readonly stop = new AbortController();

  constructor(
    private readonly url: string,
    private readonly attempts: number,
    private readonly log: FastifyBaseLogger,
    /** Times the back-off, so tests move time instead of waiting for it. */
    private readonly clock: Clock = systemClock,
    /** First retry delay; doubles on every attempt, capped at a minute. */
    private readonly baseDelayMs = 2_000,
  ) {}

  notify(event: AlertEvent): void {
    if (this.stopped) return;
    if (this.queue.length >= MAX_QUEUE) {
      const dropped = this.queue.shift();
      this.log.error(
        { dropped: dropped?.event, alertId: dropped?.alert.id },
        'alert webhook queue full; dropped the oldest event',
      );
    }
    this.queue.push(event);
    this.running ??= this.run().finally(() => (this.running = null));
  }

  async drain(timeoutMs: number): Promise<void> {
    this.draining.abort();
    const running = this.running;
    // A shutdown deadline is real time whatever clock drives the back-off: the process must exit.
    let deadline: NodeJS.Timeout | undefined;
    if (running)
      await Promise.race([running, new Promise((resolve) => (deadline = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(deadline);
    if (this.running) {
      this.log.warn(
        { queued: this.queue.length },
        'alert webhook stopped before delivering every event; the rest are dropped',
      );
    }
    this.stopped = true;
    this.stop.abort();
  }

  private async run(): Promise<void> {
    for (let event = this.queue.shift(); event && !this.stopped; event = this.queue.shift())
      await this.deliver(event);
  }

  /** Resolves after `ms` on the injected clock, or as soon as shutdown begins. */
  private backOff(ms: number): Promise<void> {
    const signal = this.draining.signal;
    return new Promise((resolve) => {
      if (signal.aborted) {
        resolve();
        return;
      }
      const done = () => {
        this.clock.clearTimeout(handle);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const handle = this.clock.setTimeout(done, ms);
      signal.addEventListener('abort', done);
    });
  }

  private async deliver(event: AlertEvent): Promise<void> {
    const body = JSON.stringify(event);
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      try {
        const res = await fetch(this.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json; charset=utf-8', 'user-agent': 'loa-alerts/1' },
          body,
          signal: AbortSignal.any([AbortSignal.timeout(10_000), this.stop.signal]),
        });
        if (res.ok) return;
        this.log.warn(
          { status: res.status, attempt, alertId: event.alert.id },
          'alert webhook refused the event',
        );
      } catch (err) {
        this.log.warn(
          { err: (err as Error).message, attempt, alertId: event.alert.id },
          'alert webhook unreachable',
        );
      }
      if (this.stopped || this.draining.signal.aborted) break;
      if (attempt < this.attempts) {
        await this.backOff(Math.min(60_000, this.baseDelayMs * 2 ** (attempt - 1)));
      }
    }
    this.log.error(
      { event: event.event, alertId: event.alert.id, attempts: this.attempts },
      'alert webhook gave up on the event',
    );
  }
}
