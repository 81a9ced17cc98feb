import type Database from 'better-sqlite3';
import { and, desc, eq, gt, gte, isNull, lt, sql, type SQL } from 'drizzle-orm';
import { sqliteOf, type Db } from '../../db/index.js';
import { emergencies, emergencyAreas, type EmergencyRow } from '../../db/schema/index.js';
import { DEVICE_STATUSES, type DeviceCounts, type DeviceStatus } from './emergencies.schemas.js';

/**
 * A device's status with an emergency, derived from what is already recorded: the delivery of the play
 * command (sent, acked) and the playback log record of its session (started, finished, cut short). The
 * log wins when it says more: a device that logged `started` plays even if its `done` ack was lost. A
 * session cut short (cancelled, or replaced by another emergency) is `stopped` as soon as the device says
 * so: its record stays open until the expiry (a schedule's session may resume), an emergency's never does.
 */
const STATUS_SQL = `CASE
  WHEN p.outcome = 'played' THEN 'played'
  WHEN p.outcome = 'failed' THEN 'failed'
  WHEN p.outcome IS NOT NULL AND p.started_at IS NOT NULL THEN 'stopped'
  WHEN p.outcome IS NOT NULL THEN 'undelivered'
  WHEN p.started_at IS NOT NULL AND p.playing_since IS NULL AND p.interruptions > 0 THEN 'stopped'
  WHEN p.started_at IS NOT NULL THEN 'playing'
  WHEN d.status = 'done' THEN 'playing'
  WHEN d.status = 'received' THEN 'received'
  WHEN d.status IN ('failed', 'rejected') THEN 'failed'
  WHEN d.status IN ('expired', 'offline') THEN 'undelivered'
  WHEN d.sent_at IS NOT NULL THEN 'sent'
  ELSE 'queued' END`;

/** When a device's status last changed: the SSE stream's cursor. */
const AT_SQL = `MAX(d.updated_at, COALESCE(d.sent_at, 0), COALESCE(p.updated_at, 0))`;

/** A delivery `d`'s device, its area and its playback record in the session `sessionExpr`. */
const deviceJoins = (sessionExpr: string) => `LEFT JOIN devices dev ON dev.id = d.device_id
  LEFT JOIN areas a ON a.id = dev.area_id
  LEFT JOIN playback_log p ON p.session_id = ${sessionExpr} AND p.device_id = d.device_id`;
/** Devices in the subtree @path (null: all). */
const IN_PATH = `(@path IS NULL OR (a.path >= @path AND a.path < @pathEnd))`;
/** The devices of a play command (@commandId) with their playback records in its session (@sessionId). */
const FROM_SQL = `FROM command_deliveries d ${deviceJoins('@sessionId')}
  WHERE d.command_id = @commandId AND ${IN_PATH}`;

export interface DeviceStateRow {
  deviceId: string;
  name: string | null;
  areaId: string | null;
  areaName: string | null;
  areaPath: string | null;
  online: number | null;
  lastSeenAt: number | null;
  status: DeviceStatus;
  reason: string | null;
  at: number;
}

export interface DeviceChange {
  deviceId: string;
  /** Null for a device deleted since. */
  areaPath: string | null;
  status: DeviceStatus;
  at: number;
}

/** Which of an emergency's devices to look at: its current play, seen from a subtree (null: all). */
export interface StateScope {
  commandId: string;
  sessionId: string;
  path: string | null;
}

export interface ListFilter {
  /** Subtrees whose emergencies the caller may see; null: all. */
  visibleFrom: string | null;
  /** Narrower: those that played in this area's subtree or from above it. */
  areaPath?: string | undefined;
  from?: Date | undefined;
  to?: Date | undefined;
  exercise?: boolean | undefined;
  limit: number;
  offset: number;
}

export function emptyCounts(): DeviceCounts {
  return Object.fromEntries(DEVICE_STATUSES.map((s) => [s, 0])) as DeviceCounts;
}

/** "Played in this subtree, or from above it": an area of the emergency is inside or an ancestor. */
function touches(path: string): SQL {
  return sql`EXISTS (SELECT 1 FROM ${emergencyAreas} ea WHERE ea.emergency_id = ${emergencies.id}
    AND ((ea.area_path >= ${path} AND ea.area_path < ${`${path.slice(0, -1)}0`})
      OR substr(${path}, 1, length(ea.area_path)) = ea.area_path))`;
}

export class EmergenciesRepository {
  private readonly sqlite: Database.Database;
  private readonly stmts;

  constructor(private readonly db: Db) {
    this.sqlite = sqliteOf(db);
    const s = this.sqlite;
    this.stmts = {
      states: s.prepare<StateParams, DeviceStateRow>(
        `SELECT d.device_id AS deviceId, dev.name AS name, dev.area_id AS areaId, a.name AS areaName,
           a.path AS areaPath, dev.online AS online, dev.last_seen_at AS lastSeenAt,
           ${STATUS_SQL} AS status, COALESCE(p.reason, d.reason) AS reason, ${AT_SQL} AS at
         ${FROM_SQL}`,
      ),
      counts: s.prepare<StateParams, { status: DeviceStatus; n: number; at: number | null }>(
        `SELECT ${STATUS_SQL} AS status, COUNT(*) AS n, MAX(${AT_SQL}) AS at ${FROM_SQL} GROUP BY 1`,
      ),
      countsMany: s.prepare<
        { pairs: string; path: string | null; pathEnd: string | null },
        { i: number; status: DeviceStatus; n: number }
      >(
        `SELECT j.key AS i, ${STATUS_SQL} AS status, COUNT(*) AS n
         FROM json_each(@pairs) j
         JOIN command_deliveries d ON d.command_id = json_extract(j.value, '$[0]')
         ${deviceJoins("json_extract(j.value, '$[1]')")}
         WHERE ${IN_PATH}
         GROUP BY 1, 2`,
      ),
      changes: s.prepare<StateParams & { since: number }, DeviceChange>(
        `SELECT * FROM (SELECT d.device_id AS deviceId, a.path AS areaPath, ${STATUS_SQL} AS status,
           ${AT_SQL} AS at ${FROM_SQL})
         WHERE at >= @since`,
      ),
      deliveryCounts: s.prepare<[string], { status: string; n: number }>(
        `SELECT status, COUNT(*) AS n FROM command_deliveries WHERE command_id = ? GROUP BY status`,
      ),
      earlierPlays: s.prepare<[string, string], { commandId: string; sessionId: string }>(
        `SELECT id AS commandId, json_extract(params, '$.sessionId') AS sessionId FROM commands
         WHERE emergency_id = ? AND type = 'play' AND id <> ? ORDER BY created_at`,
      ),
      deviceIds: s.prepare<[string], { deviceId: string }>(
        `SELECT device_id AS deviceId FROM command_deliveries WHERE command_id = ?`,
      ),
      drillParticipants: s.prepare<[string], { id: string }>(
        `SELECT d.id FROM json_each(?) j JOIN devices d ON d.id = j.value WHERE d.drill_participant = 1`,
      ),
      areasOn: s.prepare<[string], { id: string; name: string; level: string; code: string | null }>(
        `SELECT a.id, a.name, a.level, a.code FROM json_each(?) j JOIN areas a ON a.id = j.value`,
      ),
      extendRecords: s.prepare<[number, number, string]>(
        `UPDATE playback_log SET ends_at = ?, updated_at = ? WHERE session_id = ? AND outcome IS NULL`,
      ),
      retitleRecords: s.prepare<[string, number, string]>(
        `UPDATE playback_log SET programme_title = ?, updated_at = ? WHERE session_id = ?`,
      ),
    };
  }

  /** The emergency and its areas, in the caller's transaction (the one that writes its play command). */
  insert(row: EmergencyRow, areas: readonly { areaId: string; areaPath: string }[]): void {
    this.db.insert(emergencies).values(row).run();
    if (areas.length > 0) {
      this.db
        .insert(emergencyAreas)
        .values(areas.map((a) => ({ emergencyId: row.id, ...a })))
        .onConflictDoNothing()
        .run();
    }
  }

  find(id: string): EmergencyRow | undefined {
    return this.db.select().from(emergencies).where(eq(emergencies.id, id)).get();
  }

  areaPaths(id: string): string[] {
    return this.db
      .select({ path: emergencyAreas.areaPath })
      .from(emergencyAreas)
      .where(eq(emergencyAreas.emergencyId, id))
      .all()
      .map((r) => r.path);
  }

  update(id: string, set: Partial<EmergencyRow>): void {
    this.db.update(emergencies).set(set).where(eq(emergencies.id, id)).run();
  }

  /** Not cancelled and not expired at `now`: those whose unanswered devices are re-sent to. */
  active(now: Date): EmergencyRow[] {
    return this.db
      .select()
      .from(emergencies)
      .where(and(isNull(emergencies.cancelledAt), gt(emergencies.expiresAt, now)))
      .all();
  }

  list(filter: ListFilter): EmergencyRow[] {
    const where: SQL[] = [];
    if (filter.visibleFrom !== null) where.push(touches(filter.visibleFrom));
    if (filter.areaPath !== undefined) where.push(touches(filter.areaPath));
    if (filter.from) where.push(gte(emergencies.createdAt, filter.from));
    if (filter.to) where.push(lt(emergencies.createdAt, filter.to));
    if (filter.exercise !== undefined) where.push(eq(emergencies.exercise, filter.exercise));
    return this.db
      .select()
      .from(emergencies)
      .where(and(...where))
      .orderBy(desc(emergencies.createdAt), desc(emergencies.id))
      .limit(filter.limit)
      .offset(filter.offset)
      .all();
  }

  /** Whether the emergency played in the subtree at `path` or from above it. */
  isVisibleFrom(id: string, path: string): boolean {
    return (
      this.db
        .select({ one: sql<number>`1` })
        .from(emergencies)
        .where(and(eq(emergencies.id, id), touches(path)))
        .get() !== undefined
    );
  }

  states(scope: StateScope): DeviceStateRow[] {
    return this.stmts.states.all(params(scope));
  }

  /** Devices per status, and the latest change among them (the stream's cursor). */
  counts(scope: StateScope): { counts: DeviceCounts; cursor: number } {
    const counts = emptyCounts();
    let cursor = 0;
    for (const r of this.stmts.counts.all(params(scope))) {
      counts[r.status] = r.n;
      cursor = Math.max(cursor, r.at ?? 0);
    }
    return { counts, cursor };
  }

  /** Devices per status of several emergencies at once (a page of the history), in the order given. */
  countsMany(
    plays: readonly { commandId: string; sessionId: string }[],
    path: string | null,
  ): DeviceCounts[] {
    const out = plays.map(() => emptyCounts());
    const rows = this.stmts.countsMany.all({
      pairs: JSON.stringify(plays.map((p) => [p.commandId, p.sessionId])),
      path,
      pathEnd: path === null ? null : `${path.slice(0, -1)}0`,
    });
    for (const r of rows) (out[r.i] as DeviceCounts)[r.status] = r.n;
    return out;
  }

  /** Devices whose status changed at or after `since` (ms), with their area's path. */
  changes(scope: StateScope, since: number): DeviceChange[] {
    return this.stmts.changes.all({ ...params(scope), since });
  }

  deliveryCounts(commandId: string): Record<string, number> {
    return Object.fromEntries(this.stmts.deliveryCounts.all(commandId).map((r) => [r.status, r.n]));
  }

  /** The play commands of the emergency's earlier revisions (before `currentCommandId`). */
  earlierPlays(emergencyId: string, currentCommandId: string): { commandId: string; sessionId: string }[] {
    return this.stmts.earlierPlays.all(emergencyId, currentCommandId);
  }

  deviceIdsOf(commandId: string): string[] {
    return this.stmts.deviceIds.all(commandId).map((r) => r.deviceId);
  }

  drillParticipants(deviceIds: readonly string[]): string[] {
    return this.stmts.drillParticipants.all(JSON.stringify(deviceIds)).map((r) => r.id);
  }

  areasByIds(ids: readonly string[]) {
    return this.stmts.areasOn.all(JSON.stringify(ids));
  }

  /** A later expiry reaches the playback records still open, so they are not closed at the old one. */
  extendRecords(sessionId: string, endsAt: Date, now: Date): void {
    this.stmts.extendRecords.run(endsAt.getTime(), now.getTime(), sessionId);
  }

  retitleRecords(sessionId: string, title: string, now: Date): void {
    this.stmts.retitleRecords.run(title, now.getTime(), sessionId);
  }

  transaction<T>(fn: () => T): T {
    return this.sqlite.transaction(fn)();
  }
}

interface StateParams {
  commandId: string;
  sessionId: string;
  path: string | null;
  pathEnd: string | null;
}

function params(scope: StateScope): StateParams {
  return {
    commandId: scope.commandId,
    sessionId: scope.sessionId,
    path: scope.path,
    pathEnd: scope.path === null ? null : `${scope.path.slice(0, -1)}0`,
  };
}
