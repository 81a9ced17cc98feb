/**
 * Delivers alert events to an operator's webhook (a chat bot, an SMS gateway) with retries. Events go out
 * one at a time, in order, so a receiver never sees a resolution before the opening it resolves.
 */
import type { FastifyBaseLogger } from 'fastify';

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

  constructor(
    private readonly url: string,
    private readonly attempts: number,
    private readonly log: FastifyBaseLogger,
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
    const running = this.running;
    if (running)
      await Promise.race([running, new Promise((resolve) => setTimeout(resolve, timeoutMs).unref())]);
    this.stopped = true;
  }

  private async run(): Promise<void> {
    for (let event = this.queue.shift(); event; event = this.queue.shift()) await this.deliver(event);
  }

  private async deliver(event: AlertEvent): Promise<void> {
    const body = JSON.stringify(event);
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      try {
        const res = await fetch(this.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json; charset=utf-8', 'user-agent': 'loa-alerts/1' },
          body,
          signal: AbortSignal.timeout(10_000),
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
      if (attempt < this.attempts && !this.stopped) {
        await new Promise((resolve) =>
          setTimeout(resolve, Math.min(60_000, this.baseDelayMs * 2 ** (attempt - 1))),
        );
      }
    }
    this.log.error(
      { event: event.event, alertId: event.alert.id, attempts: this.attempts },
      'alert webhook gave up on the event',
    );
  }
}
