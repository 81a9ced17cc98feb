import { and, asc, count, eq, inArray, lt } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { webhookOutbox } from '../../db/schema/index.js';

export type OutboxRow = typeof webhookOutbox.$inferSelect;

/** The webhook outbox (src/db/schema/health.ts): alert events waiting to be POSTed, oldest first. */
export class WebhookOutboxRepository {
  constructor(private readonly db: Db) {}

  /** Called inside the transaction that changes the alerts, so an event exists exactly when its change does. */
  add(events: Record<string, unknown>[], at: Date): void {
    if (events.length === 0) return;
    this.db
      .insert(webhookOutbox)
      .values(events.map((event) => ({ event, createdAt: at, state: 'pending' as const, nextAttemptAt: at })))
      .run();
  }

  /**
   * The oldest pending events, in the order they were written. Not filtered on next_attempt_at: the head
   * of the queue decides when the next request may go, and newer events wait behind it (a resolution must
   * never overtake the opening it resolves).
   */
  head(limit: number): OutboxRow[] {
    return this.db
      .select()
      .from(webhookOutbox)
      .where(eq(webhookOutbox.state, 'pending'))
      .orderBy(asc(webhookOutbox.id))
      .limit(limit)
      .all();
  }

  delete(ids: number[]): void {
    this.db.delete(webhookOutbox).where(inArray(webhookOutbox.id, ids)).run();
  }

  /**
   * One failed request: every event it carried has one more attempt. Those that reached `maxAttempts` are
   * given up (their next_attempt_at then records when, for pruning); the others wait until
   * `retryAt(attempts made)`.
   */
  failed(
    rows: Pick<OutboxRow, 'id' | 'attempts'>[],
    error: string,
    maxAttempts: number,
    now: Date,
    retryAt: (attempts: number) => Date,
  ): void {
    const exhausted = rows.filter((r) => r.attempts + 1 >= maxAttempts).map((r) => r.id);
    // Rows of one batch may have different attempt counts (newer events join a batch being retried).
    const byAttempts = new Map<number, number[]>();
    for (const row of rows) {
      if (row.attempts + 1 >= maxAttempts) continue;
      const ids = byAttempts.get(row.attempts) ?? [];
      ids.push(row.id);
      byAttempts.set(row.attempts, ids);
    }
    this.db.transaction(() => {
      for (const [attempts, ids] of byAttempts) {
        this.db
          .update(webhookOutbox)
          .set({ attempts: attempts + 1, lastError: error, nextAttemptAt: retryAt(attempts + 1) })
          .where(inArray(webhookOutbox.id, ids))
          .run();
      }
      if (exhausted.length > 0) {
        this.db
          .update(webhookOutbox)
          .set({ state: 'given_up', attempts: maxAttempts, lastError: error, nextAttemptAt: now })
          .where(inArray(webhookOutbox.id, exhausted))
          .run();
      }
    });
  }

  /** Events per state, for /metrics. */
  countByState(): { pending: number; givenUp: number } {
    const rows = this.db
      .select({ state: webhookOutbox.state, n: count() })
      .from(webhookOutbox)
      .groupBy(webhookOutbox.state)
      .all();
    const of = (state: string) => rows.find((r) => r.state === state)?.n ?? 0;
    return { pending: of('pending'), givenUp: of('given_up') };
  }

  /** Deletes given-up events given up before `before`; returns how many. */
  pruneGivenUp(before: Date): number {
    return this.db
      .delete(webhookOutbox)
      .where(and(eq(webhookOutbox.state, 'given_up'), lt(webhookOutbox.nextAttemptAt, before)))
      .run().changes;
  }
}
