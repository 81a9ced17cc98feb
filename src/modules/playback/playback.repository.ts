import type { Db } from '../../db/index.js';
import { playbackEvents } from '../../db/schema/index.js';

export type NewPlaybackEvent = typeof playbackEvents.$inferInsert;

export class PlaybackRepository {
  constructor(private readonly db: Db) {}

  /**
   * Stores an entry unless the same one (device, seq, command, event, device time) is already there;
   * true when it was new. The unique index decides, so a copy arriving at any later time is caught too.
   */
  insertOnce(entry: NewPlaybackEvent): boolean {
    return this.db.insert(playbackEvents).values(entry).onConflictDoNothing().run().changes > 0;
  }
}
