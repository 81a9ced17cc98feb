/**
 * The playback log: what each device says it played (protocol.md §3.5 `log`), stored exactly once.
 * QoS 1 may deliver an entry twice, and a device re-sends what it produced while offline, so every entry
 * is stored under its own key and the caller learns whether it was new: whatever follows from an entry
 * (health counting failures, later reports) must happen once per entry, not once per copy.
 */
import type { Clock } from '../../lib/clock.js';
import type { PlaybackLogEntry } from '../../protocol/index.js';
import type { PlaybackRepository } from './playback.repository.js';

export class PlaybackService {
  constructor(
    private readonly repo: PlaybackRepository,
    private readonly clock: Clock,
  ) {}

  /** Stores a log entry of a device; false when that entry was already stored (a duplicate). */
  record(deviceId: string, entry: PlaybackLogEntry): boolean {
    return this.repo.insertOnce({
      deviceId,
      seq: entry.seq,
      sessionId: entry.sessionId,
      commandId: entry.commandId,
      event: entry.event,
      at: new Date(entry.at),
      receivedAt: this.clock.now(),
      reason: entry.reason ?? null,
    });
  }
}
