/**
 * Delivers alert events to an operator's webhook (a chat bot, an SMS gateway) with retries. Events go out
 * one at a time, in order, so a receiver never sees a resolution before the opening it resolves.
 */
import { createHmac } from 'node:crypto';
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

/**
 * The signature headers of one request (the GitHub/Stripe convention, docs/health.md): an HMAC-SHA256 of
 * "<timestamp>.<body>" over the body's exact bytes. The timestamp is inside the MAC so a receiver can refuse
 * a captured request replayed later.
 */
export function signatureHeaders(secret: string, at: Date, body: Buffer): Record<string, string> {
  const timestamp = String(Math.floor(at.getTime() / 1000));
  const mac = createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
  return { 'x-loa-timestamp': timestamp, 'x-loa-signature': `sha256=${mac}` };
}

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
    /** HMAC key signing every request; undefined: requests go unsigned. */
    private readonly secret: string | undefined,
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
    // Serialised once, as bytes: what is signed is exactly what goes on the wire, on every attempt.
    const body = Buffer.from(JSON.stringify(event), 'utf8');
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      try {
        // Signed afresh on each attempt: a retry carries its own timestamp, so it is not refused as stale.
        const signature = this.secret ? signatureHeaders(this.secret, this.clock.now(), body) : {};
        const res = await fetch(this.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json; charset=utf-8',
            'user-agent': 'loa-alerts/1',
            ...signature,
          },
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
