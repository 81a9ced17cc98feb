import { sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { playbackEvents } from '../../db/schema/index.js';

export type NewPlaybackEvent = typeof playbackEvents.$inferInsert;

export class PlaybackRepository {
  /** Prepared once: it runs for every entry. Values are bound raw (epoch ms), bypassing drizzle's encoders. */
  private readonly insertOnceStmt;

  constructor(private readonly db: Db) {
    const raw = (name: string) => sql`${sql.placeholder(name)}`;
    this.insertOnceStmt = db
      .insert(playbackEvents)
      .values({
        deviceId: raw('deviceId'),
        seq: raw('seq'),
        sessionId: raw('sessionId'),
        commandId: raw('commandId'),
        event: raw('event'),
        at: raw('at'),
        receivedAt: raw('receivedAt'),
        reason: raw('reason'),
      })
      .onConflictDoNothing()
      .returning({ id: playbackEvents.id })
      .prepare();
  }

  /**
   * Stores the entries in one transaction, each unless the same one (device, seq, command, event, device
   * time) is already there, and returns the indexes of those that were new. The unique index decides, so
   * a copy is caught whether it arrives in the same batch or at any later time.
   */
  insertNew(entries: readonly NewPlaybackEvent[]): number[] {
    return this.db.transaction(() => {
      const inserted: number[] = [];
      entries.forEach((e, i) => {
        const row = this.insertOnceStmt.get({
          deviceId: e.deviceId,
          seq: e.seq,
          sessionId: e.sessionId,
          commandId: e.commandId,
          event: e.event,
          at: e.at.getTime(),
          receivedAt: e.receivedAt.getTime(),
          reason: e.reason ?? null,
        });
        if (row) inserted.push(i);
      });
      return inserted;
    });
  }
}
