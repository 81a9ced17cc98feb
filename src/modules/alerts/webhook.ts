/**
 * Delivers alert events to an operator's webhook (a chat bot, an SMS gateway) from a durable outbox
 * (docs/health.md "Webhook"). The alerts service writes each event into `webhook_outbox` in the same
 * transaction as the alert change it tells of; this sender POSTs the oldest pending events in batches, in
 * order, so a province-wide outage that opens 10,000 alerts makes a handful of requests, a receiver never
 * sees a resolution before the opening it resolves, and nothing is lost to a restart.
 */
import { createHmac } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { Clock } from '../../lib/clock.js';
import type { OutboxRow, WebhookOutboxRepository } from './outbox.repository.js';

/** One event as stored in the outbox and sent in a batch's `events`. */
export type AlertEvent = {
  event: 'alert.opened' | 'alert.resolved';
  /** When the alert opened or resolved (ISO 8601). */
  at: string;
  alert: Record<string, unknown>;
};

/** What the alerts service needs of the webhook. */
export interface AlertEventSink {
  /** Called inside the transaction that changes the alerts. */
  enqueue(events: AlertEvent[], at: Date): void;
  /** Called after that transaction committed: a batch goes out shortly. */
  wake(): void;
}

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

export interface WebhookSenderOptions {
  url: string;
  /** Attempts per event before it is given up (ALERT_WEBHOOK_ATTEMPTS). */
  attempts: number;
  /** Most events in one request (ALERT_WEBHOOK_BATCH_MAX). */
  batchMax: number;
  /** HMAC key signing every request; undefined: requests go unsigned. */
  secret: string | undefined;
  /** How long new events wait for others to join their batch. */
  lingerMs?: number;
  /** First retry delay; doubles on every attempt, up to `maxDelayMs`. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** A request that has not been answered in this long has failed. */
  timeoutMs?: number;
}

/** Told of each request and give-up, for /metrics. */
export interface WebhookSenderEvents {
  requested(outcome: 'delivered' | 'failed'): void;
  gaveUp(events: number): void;
}

/** Sends the outbox. One request at a time; its timers are on the injected clock so tests move time. */
export class WebhookSender implements AlertEventSink {
  private readonly lingerMs: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly timeoutMs: number;
  /** The linger or back-off timer, when one is set. */
  private timer: unknown = null;
  /**
   * True while the send loop runs; cleared by the loop itself in the same tick as its last look at the
   * outbox, so an event added after that look always finds it false and schedules the next run.
   */
  private busy = false;
  private inFlight: Promise<void> = Promise.resolve();
  private stopped = false;
  /** Aborts the request in flight when the shutdown grace is over. */
  private readonly abort = new AbortController();

  constructor(
    private readonly outbox: WebhookOutboxRepository,
    private readonly options: WebhookSenderOptions,
    private readonly clock: Clock,
    private readonly log: FastifyBaseLogger,
    private readonly events: WebhookSenderEvents,
  ) {
    this.lingerMs = options.lingerMs ?? 1_000;
    this.baseDelayMs = options.baseDelayMs ?? 2_000;
    this.maxDelayMs = options.maxDelayMs ?? 600_000;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  enqueue(events: AlertEvent[], at: Date): void {
    this.outbox.add(events, at);
  }

  wake(): void {
    this.schedule(this.lingerMs);
  }

  /** At start-up: sends what was left pending before a restart (after its back-off, if it had one). */
  start(): void {
    this.kick();
  }

  /**
   * Stops between requests; a request in flight gets `graceMs` (real time: the process must exit whatever
   * clock drives the back-off), then is aborted. What is not delivered stays pending for the next start.
   */
  async stop(graceMs: number): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    let deadline: NodeJS.Timeout | undefined;
    await Promise.race([this.inFlight, new Promise((resolve) => (deadline = setTimeout(resolve, graceMs)))]);
    clearTimeout(deadline);
    this.abort.abort();
    await this.inFlight;
  }

  /** Runs the send loop after `ms`, unless it is running or already due. */
  private schedule(ms: number): void {
    if (this.stopped || this.busy || this.timer !== null) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = null;
      this.kick();
    }, ms);
  }

  private kick(): void {
    if (this.stopped || this.busy) return;
    this.busy = true;
    this.inFlight = this.run();
  }

  /** Sends batch after batch until the outbox is empty or its head must wait for its back-off. */
  private async run(): Promise<void> {
    let wakeInMs: number | null = null;
    try {
      while (!this.stopped) {
        const rows = this.outbox.head(this.options.batchMax);
        const head = rows[0];
        if (!head) break;
        const waitMs = head.nextAttemptAt.getTime() - this.clock.now().getTime();
        if (waitMs > 0) {
          wakeInMs = waitMs;
          break;
        }
        await this.send(rows);
      }
    } catch (err) {
      // The database failed (busy, disk full): the events are still there; look again later.
      this.log.error({ err }, 'alert webhook outbox could not be read or updated; will retry');
      wakeInMs = this.baseDelayMs;
    } finally {
      this.busy = false;
    }
    if (wakeInMs !== null) this.schedule(wakeInMs);
  }

  private retryDelay(attempt: number): number {
    return Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1));
  }

  private async send(rows: OutboxRow[]): Promise<void> {
    const sentAt = this.clock.now();
    // Serialised once, as bytes: what is signed is exactly what goes on the wire.
    const body = Buffer.from(
      JSON.stringify({ events: rows.map((r) => r.event), sentAt: sentAt.toISOString() }),
      'utf8',
    );
    let error: string;
    try {
      const res = await fetch(this.options.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json; charset=utf-8',
          'user-agent': 'loa-alerts/2',
          ...(this.options.secret ? signatureHeaders(this.options.secret, sentAt, body) : {}),
        },
        body,
        // A 3xx is a failed attempt, not followed: after a 301 or 302 fetch would send a body-less GET (an
        // http:// URL behind a redirect to https://), and its 2xx would delete events nobody received.
        redirect: 'manual',
        signal: AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.abort.signal]),
      });
      // Read to the end, so the connection can be reused.
      await res.arrayBuffer().catch(() => undefined);
      if (res.ok) {
        this.outbox.delete(rows.map((r) => r.id));
        this.events.requested('delivered');
        return;
      }
      error = `HTTP ${res.status}`;
    } catch (err) {
      // Aborted by shutdown: not an attempt; the events stay pending for the next start.
      if (this.abort.signal.aborted) return;
      const cause = (err as Error).cause;
      error = `${(err as Error).message}${cause instanceof Error ? `: ${cause.message}` : ''}`;
    }
    this.events.requested('failed');
    const now = this.clock.now();
    this.outbox.failed(
      rows,
      error,
      this.options.attempts,
      now,
      (attempt) => new Date(now.getTime() + this.retryDelay(attempt)),
    );
    const exhausted = rows.filter((r) => r.attempts + 1 >= this.options.attempts);
    if (exhausted.length > 0) {
      this.log.error(
        {
          events: exhausted.length,
          alertIds: exhausted.map((r) => (r.event as { alert?: { id?: unknown } }).alert?.id),
          attempts: this.options.attempts,
          error,
        },
        'alert webhook gave up on events',
      );
      this.events.gaveUp(exhausted.length);
    }
    if (exhausted.length < rows.length) {
      const attempt = rows.find((r) => r.attempts + 1 < this.options.attempts)!.attempts + 1;
      this.log.warn(
        { events: rows.length - exhausted.length, attempt, retryInMs: this.retryDelay(attempt), error },
        'alert webhook request failed; will retry',
      );
    }
  }
}
