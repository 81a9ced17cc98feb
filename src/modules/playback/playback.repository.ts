import type Database from 'better-sqlite3';
import { and, desc, eq, gte, inArray, isNull, lt, or, sql, type SQL } from 'drizzle-orm';
import { sqliteOf, type Db } from '../../db/index.js';
import {
  areas,
  commandDeliveries,
  playbackEvents,
  playbackLog,
  type DeliveryStatus,
  type PlaybackOutcome,
} from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';
import type { Priority } from '../../protocol/index.js';
import {
  applyEntry,
  CLOSE_GRACE_MS,
  decideOutcome,
  isFinal,
  type PlayPosition,
  type RecordProgress,
} from './outcome.js';

export type NewPlaybackEvent = typeof playbackEvents.$inferInsert;

export interface OpenRecordsInput {
  sessionId: string;
  commandId: string;
  deviceIds: readonly string[];
  priority: Priority;
  dueAt: Date;
  endsAt: Date;
  plannedMs: number | null;
  programmeId: string | null;
  programmeRevisionId: string | null;
  scheduleId: string | null;
  occurrenceId: number | null;
  /** An emergency's play: its title stands where a programme's would, and a drill is marked as one. */
  emergency?: { id: string; title: string; exercise: boolean } | undefined;
  closed?: { outcome: 'skipped'; reason: string };
}

export interface ResumableSession {
  sessionId: string;
  commandId: string;
  scheduleId: string;
  occurrenceId: number;
  priority: Priority;
  dueAt: Date;
  endsAt: Date;
}

export interface LogFilter {
  /** The subtree the caller may see (their own) and, narrower, the one asked for; null: everywhere. */
  paths: string[];
  deviceId?: string | undefined;
  programmeId?: string | undefined;
  scheduleId?: string | undefined;
  emergencyId?: string | undefined;
  /** true: drills only; false: everything but drills. */
  exercise?: boolean | undefined;
  from?: Date | undefined;
  to?: Date | undefined;
  outcome?: PlaybackOutcome | 'pending' | undefined;
}

export type LogRow = typeof playbackLog.$inferSelect & { areaName: string | null };

/** A record as the closing and the log entries read it (epoch ms). */
type ProgressRow = RecordProgress & {
  id: number;
  commandId: string;
  deviceId: string;
  endsAt: number;
  receivedAt: number | null;
};

const PROGRESS_COLUMNS = `id, command_id AS commandId, device_id AS deviceId, schedule_id AS scheduleId,
  due_at AS dueAt, ends_at AS endsAt, planned_ms AS plannedMs, started_at AS startedAt,
  finished_at AS finishedAt, aired_ms AS airedMs, playing_since AS playingSince, joined_at_ms AS joinedAtMs,
  interruptions, reason, outcome, received_at AS receivedAt`;

/** Records closed per transaction by the periodic job; more wait for its next run. */
const CLOSE_BATCH = 2_000;

/**
 * The hot statements (one per device of a broadcast, one per log entry) are plain better-sqlite3 statements
 * prepared once: they are INSERT … SELECT and JSON lookups drizzle's builder does not express, and binding
 * epoch ms directly skips its per-row encoders (as in commands.repository.ts).
 */
function prepare(sqlite: Database.Database) {
  return {
    programmeTitle: sqlite.prepare<[string | null, string | null], { title: string | null }>(
      `SELECT COALESCE((SELECT title FROM programme_revisions WHERE id = ?),
                         (SELECT title FROM programmes WHERE id = ?)) AS title`,
    ),
    // One statement for every target: names and area paths joined in SQLite, ids passed as one JSON array
    // (no variable limit, no statement per chunk size). Devices deleted meanwhile get no record.
    open: sqlite.prepare(
      `INSERT INTO playback_log (session_id, command_id, device_id, device_name, area_id, area_path,
         schedule_id, occurrence_id, programme_id, programme_revision_id, programme_title, emergency_id, exercise,
         priority, due_at, ends_at, planned_ms, outcome, reason, updated_at)
       SELECT @sessionId, @commandId, d.id, d.name, a.id, a.path, @scheduleId, @occurrenceId, @programmeId,
         @programmeRevisionId, @programmeTitle, @emergencyId, @exercise, @priority, @dueAt, @endsAt, @plannedMs,
         @outcome, @reason, @now
       FROM json_each(@deviceIds) AS j JOIN devices d ON d.id = j.value JOIN areas a ON a.id = d.area_id
       WHERE true
       ON CONFLICT (session_id, device_id) DO NOTHING`,
    ),
    record: sqlite.prepare<[string, string], ProgressRow>(
      `SELECT ${PROGRESS_COLUMNS} FROM playback_log WHERE session_id = ? AND device_id = ?`,
    ),
    position: sqlite.prepare<[string], { offsetMs: number | null; startAt: string | null }>(
      `SELECT json_extract(params, '$.offsetMs') AS offsetMs, json_extract(params, '$.startAt') AS startAt
       FROM commands WHERE id = ?`,
    ),
    progress: sqlite.prepare(
      `UPDATE playback_log SET started_at = @startedAt, finished_at = @finishedAt, aired_ms = @airedMs,
         playing_since = @playingSince, joined_at_ms = @joinedAtMs, interruptions = @interruptions,
         reason = @reason, outcome = @outcome, updated_at = @now
       WHERE id = @id`,
    ),
    delivery: sqlite.prepare<
      [string, string],
      { status: DeliveryStatus; reason: string | null; sentAt: number | null; updatedAt: number }
    >(
      `SELECT status, reason, sent_at AS sentAt, updated_at AS updatedAt FROM command_deliveries
       WHERE command_id = ? AND device_id = ?`,
    ),
    close: sqlite.prepare(
      `UPDATE playback_log SET outcome = @outcome, reason = @reason, aired_ms = @airedMs,
         joined_at_ms = @joinedAtMs, playing_since = NULL, sent_at = COALESCE(sent_at, @sentAt),
         received_at = COALESCE(received_at, @receivedAt), updated_at = @now
       WHERE id = @id`,
    ),
    dueForClosing: sqlite.prepare<[number, number], ProgressRow>(
      `SELECT ${PROGRESS_COLUMNS} FROM playback_log WHERE outcome IS NULL AND ends_at < ? LIMIT ?`,
    ),
    // The delivery only keeps its latest status and time, so what it says is copied while the slot is open:
    // `received_at` is the first time this sees the delivery received or done (within one closing period).
    syncDeliveries: sqlite.prepare(
      `UPDATE playback_log SET
         sent_at = COALESCE(sent_at, (SELECT d.sent_at FROM command_deliveries d
           WHERE d.command_id = playback_log.command_id AND d.device_id = playback_log.device_id)),
         received_at = COALESCE(received_at, (SELECT d.updated_at FROM command_deliveries d
           WHERE d.command_id = playback_log.command_id AND d.device_id = playback_log.device_id
             AND d.status IN ('received', 'done')))
       WHERE outcome IS NULL AND (sent_at IS NULL OR received_at IS NULL)`,
    ),
    resumable: sqlite.prepare<
      [string, number],
      {
        sessionId: string;
        commandId: string;
        scheduleId: string;
        occurrenceId: number;
        priority: Priority;
        dueAt: number;
        endsAt: number;
      }
    >(
      // Interrupted by anything but a stop (someone meant it to end), or refused because something of
      // higher priority was playing when it arrived.
      `SELECT p.session_id AS sessionId, p.command_id AS commandId, p.schedule_id AS scheduleId,
         p.occurrence_id AS occurrenceId, p.priority, p.due_at AS dueAt, p.ends_at AS endsAt
       FROM playback_log p
       LEFT JOIN command_deliveries d ON d.command_id = p.command_id AND d.device_id = p.device_id
       WHERE p.device_id = ? AND p.outcome IS NULL AND p.schedule_id IS NOT NULL AND p.ends_at > ?
         AND p.playing_since IS NULL AND p.finished_at IS NULL
         AND ((p.interruptions > 0 AND p.reason NOT LIKE 'stopped%')
              OR (d.status = 'rejected' AND d.reason = 'lower_priority'))
       ORDER BY p.due_at DESC`,
    ),
    pruneRecords: sqlite.prepare(
      `DELETE FROM playback_log WHERE id IN (SELECT id FROM playback_log WHERE due_at < ? LIMIT ?)`,
    ),
    pruneEvents: sqlite.prepare(
      `DELETE FROM playback_events WHERE id IN (SELECT id FROM playback_events WHERE at < ? LIMIT ?)`,
    ),
  };
}

export class PlaybackRepository {
  /** Prepared once: it runs for every entry. Values are bound raw (epoch ms), bypassing drizzle's encoders. */
  private readonly insertOnceStmt;
  private readonly sqlite: Database.Database;
  private readonly stmts: ReturnType<typeof prepare>;

  constructor(private readonly db: Db) {
    this.sqlite = sqliteOf(db);
    this.stmts = prepare(this.sqlite);
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
   * One record per (session, device) for the devices that exist. Plain statements, no transaction of its
   * own: called inside the caller's (the command's) transaction, it commits or rolls back with it.
   */
  openRecords(input: OpenRecordsInput, now: Date): void {
    if (input.deviceIds.length === 0) return;
    const title = input.emergency
      ? input.emergency.title
      : input.programmeId === null && input.programmeRevisionId === null
        ? null
        : (this.stmts.programmeTitle.get(input.programmeRevisionId, input.programmeId)?.title ?? null);
    this.stmts.open.run({
      sessionId: input.sessionId,
      commandId: input.commandId,
      scheduleId: input.scheduleId,
      occurrenceId: input.occurrenceId,
      programmeId: input.programmeId,
      programmeRevisionId: input.programmeRevisionId,
      programmeTitle: title,
      emergencyId: input.emergency?.id ?? null,
      exercise: input.emergency?.exercise ? 1 : 0,
      priority: input.priority,
      dueAt: input.dueAt.getTime(),
      endsAt: input.endsAt.getTime(),
      plannedMs: input.plannedMs,
      outcome: input.closed?.outcome ?? null,
      reason: input.closed?.reason ?? null,
      now: now.getTime(),
      deviceIds: JSON.stringify(input.deviceIds),
    });
  }

  /**
   * Stores the entries in one transaction, each unless the same one (device, seq, command, event, device
   * time) is already there, applies each new one to its playback record in the same transaction, and
   * returns the indexes of those that were new. The unique index decides, so a copy is caught whether it
   * arrives in the same batch or at any later time, and counts once in the record.
   */
  insertNew(entries: readonly NewPlaybackEvent[], now: Date): number[] {
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
        if (!row) return;
        inserted.push(i);
        this.applyToRecord(e, now.getTime());
      });
      return inserted;
    });
  }

  private applyToRecord(e: NewPlaybackEvent, now: number): void {
    const row = this.stmts.record.get(e.sessionId, e.deviceId);
    // Older commands, or one the server does not know: the entry is only stored.
    if (!row) return;
    let record: ProgressRow = row;
    if (record.outcome !== null) {
      // Closed before any entry of its own (the device was out of reach, or acknowledged a start and then
      // lost its link): its log, re-sent after a reconnect, says what really happened. The record opens
      // again and the closing job decides it on its next run (at once when final), so that every entry of
      // the burst counts, however many batches it arrives in. A record its own entries decided stays so.
      const untouched = row.startedAt === null && row.finishedAt === null && row.interruptions === 0;
      if (!untouched || row.outcome === 'failed') return;
      record = { ...record, outcome: null, reason: null };
    }
    let position: PlayPosition | null = null;
    if (e.event === 'started' && record.joinedAtMs === null) {
      const params = this.stmts.position.get(e.commandId);
      if (params) {
        position = {
          offsetMs: params.offsetMs ?? 0,
          startAt: params.startAt === null ? null : Date.parse(params.startAt),
        };
      }
    }
    const next = { ...record, ...applyEntry(record, e, e.at.getTime(), position) };
    this.stmts.progress.run({
      id: row.id,
      startedAt: next.startedAt,
      finishedAt: next.finishedAt,
      airedMs: next.airedMs,
      playingSince: next.playingSince,
      joinedAtMs: next.joinedAtMs,
      interruptions: next.interruptions,
      reason: next.reason,
      outcome: next.outcome,
      now,
    });
    if (isFinal(next)) this.closeOne(next, now);
  }

  private closeOne(row: ProgressRow, now: number): void {
    const delivery = this.stmts.delivery.get(row.commandId, row.deviceId) ?? null;
    const receivedAt =
      delivery && (delivery.status === 'received' || delivery.status === 'done') ? delivery.updatedAt : null;
    const closing = decideOutcome({ ...row, receivedAt: row.receivedAt ?? receivedAt }, delivery, now);
    this.stmts.close.run({
      id: row.id,
      outcome: closing.outcome,
      reason: closing.reason,
      airedMs: closing.airedMs,
      joinedAtMs: closing.joinedAtMs,
      sentAt: delivery?.sentAt ?? null,
      receivedAt,
      now,
    });
  }

  /**
   * Copies sent/received from the deliveries into the open records, then closes up to CLOSE_BATCH records
   * whose slot ended more than the grace ago; returns how many it closed (the caller runs it again while
   * that is a full batch).
   */
  closeDue(now: Date): number {
    const at = now.getTime();
    return this.db.transaction(() => {
      this.stmts.syncDeliveries.run();
      const due = this.stmts.dueForClosing.all(at - CLOSE_GRACE_MS, CLOSE_BATCH);
      for (const row of due) this.closeOne(row, at);
      return due.length;
    });
  }

  resumable(deviceId: string, now: Date): ResumableSession[] {
    return this.stmts.resumable.all(deviceId, now.getTime()).map((r) => ({
      ...r,
      dueAt: new Date(r.dueAt),
      endsAt: new Date(r.endsAt),
    }));
  }

  skipSessions(sessionIds: readonly string[], reason: string, now: Date): void {
    if (sessionIds.length === 0) return;
    this.db
      .update(playbackLog)
      .set({ outcome: 'skipped', reason, updatedAt: now })
      .where(and(inArray(playbackLog.sessionId, [...sessionIds]), isNull(playbackLog.outcome)))
      .run();
  }

  /** Deletes up to `batch` records due before `before`; returns how many. */
  pruneRecords(before: Date, batch: number): number {
    return this.stmts.pruneRecords.run(before.getTime(), batch).changes;
  }

  /** Deletes up to `batch` raw log entries made (device time) before `before`; returns how many. */
  pruneEvents(before: Date, batch: number): number {
    return this.stmts.pruneEvents.run(before.getTime(), batch).changes;
  }

  private where(f: LogFilter): SQL | undefined {
    return and(
      ...f.paths.map((p) => inSubtree(playbackLog.areaPath, p)),
      f.deviceId !== undefined ? eq(playbackLog.deviceId, f.deviceId) : undefined,
      f.programmeId !== undefined ? eq(playbackLog.programmeId, f.programmeId) : undefined,
      f.scheduleId !== undefined ? eq(playbackLog.scheduleId, f.scheduleId) : undefined,
      f.emergencyId !== undefined ? eq(playbackLog.emergencyId, f.emergencyId) : undefined,
      f.exercise !== undefined ? eq(playbackLog.exercise, f.exercise) : undefined,
      f.from !== undefined ? gte(playbackLog.dueAt, f.from) : undefined,
      f.to !== undefined ? lt(playbackLog.dueAt, f.to) : undefined,
      f.outcome === 'pending'
        ? isNull(playbackLog.outcome)
        : f.outcome !== undefined
          ? eq(playbackLog.outcome, f.outcome)
          : undefined,
    );
  }

  /**
   * Records with their area's current name. While a record is open its sent/received times come from the
   * delivery of its command (the record keeps them from its closing on, after the delivery may be gone).
   */
  private select() {
    return this.db
      .select({
        log: playbackLog,
        areaName: areas.name,
        sentAt: sql<number | null>`COALESCE(${playbackLog.sentAt}, ${commandDeliveries.sentAt})`,
        receivedAt: sql<number | null>`COALESCE(${playbackLog.receivedAt}, CASE WHEN
          ${commandDeliveries.status} IN ('received', 'done') THEN ${commandDeliveries.updatedAt} END)`,
      })
      .from(playbackLog)
      .leftJoin(areas, eq(areas.id, playbackLog.areaId))
      .leftJoin(
        commandDeliveries,
        and(
          eq(commandDeliveries.commandId, playbackLog.commandId),
          eq(commandDeliveries.deviceId, playbackLog.deviceId),
        ),
      );
  }

  private static toRow(
    this: void,
    r: {
      log: typeof playbackLog.$inferSelect;
      areaName: string | null;
      sentAt: number | null;
      receivedAt: number | null;
    },
  ): LogRow {
    return {
      ...r.log,
      areaName: r.areaName,
      sentAt: r.sentAt === null ? null : new Date(r.sentAt),
      receivedAt: r.receivedAt === null ? null : new Date(r.receivedAt),
    };
  }

  /** Newest due first; ties in the order opened, newest first. */
  list(f: LogFilter, limit: number, offset: number): LogRow[] {
    return this.select()
      .where(this.where(f))
      .orderBy(desc(playbackLog.dueAt), desc(playbackLog.id))
      .limit(limit)
      .offset(offset)
      .all()
      .map(PlaybackRepository.toRow);
  }

  /**
   * The rows after `after` in list order, at most `limit`: each chunk of an export is its own short
   * statement, found through the (due, id) keyset, so no cursor stays open while the client reads.
   */
  chunkAfter(f: LogFilter, after: { dueAt: Date; id: number } | null, limit: number): LogRow[] {
    const keyset = after
      ? or(
          lt(playbackLog.dueAt, after.dueAt),
          and(eq(playbackLog.dueAt, after.dueAt), lt(playbackLog.id, after.id)),
        )
      : undefined;
    return this.select()
      .where(and(this.where(f), keyset))
      .orderBy(desc(playbackLog.dueAt), desc(playbackLog.id))
      .limit(limit)
      .all()
      .map(PlaybackRepository.toRow);
  }
}
