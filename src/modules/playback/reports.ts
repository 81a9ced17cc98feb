/**
 * The monthly broadcast report (báo cáo phát thanh): the figures a district judges each commune's radio by,
 * per commune and per hamlet below it, for the records due in one Vietnamese calendar month. Every figure
 * is an SQL aggregate over the (area_path, due_at) index: a year of a province is never loaded as rows.
 */
import { sqliteOf, type Db } from '../../db/index.js';
import { localDateTime } from '../schedules/timing.js';
import type { AreaRow } from '../../db/schema/index.js';
import type { AlertFigures, Figures } from './playback.schemas.js';

/** Outcomes whose reasons are a failure to air (partial plays aired; their reasons are in the log). */
const FAILURES = `('failed', 'expired', 'undelivered', 'skipped')`;
const TOP_REASONS = 5;

/** The records of area `a` (its subtree) due in [@from, @to). */
const RECORDS_OF_AREA = `playback_log p ON p.area_path >= a.path
  AND p.area_path < substr(a.path, 1, length(a.path) - 1) || '0' AND p.due_at >= @from AND p.due_at < @to`;

/**
 * What a record aired: a programme or manual play, a real emergency, or a drill. Emergencies and drills are
 * counted apart (playback_log.emergency_id, .exercise), so that a drill can never pass for a real alert
 * nor either for a programme.
 */
const KIND = `CASE WHEN p.emergency_id IS NULL THEN 'programme' WHEN p.exercise THEN 'exercise'
  ELSE 'emergency' END`;
type Kind = 'programme' | 'emergency' | 'exercise';

interface CountsRow {
  areaId: string;
  kind: Kind;
  occurrences: number;
  emergencies: number;
  records: number;
  played: number;
  partial: number;
  failed: number;
  skipped: number;
  expired: number;
  undelivered: number;
  pending: number;
  airedMs: number;
}

export class BroadcastReports {
  private readonly stmts;

  constructor(db: Db) {
    const sqlite = sqliteOf(db);
    const areasIn = `a.id IN (SELECT value FROM json_each(@areaIds))`;
    this.stmts = {
      areas: sqlite.prepare<{ path: string; upper: string; id: string }, AreaRow>(
        `SELECT id, name, level, parent_id AS parentId, path FROM areas
         WHERE id = @id OR (path >= @path AND path < @upper AND level IN ('commune', 'hamlet'))
         ORDER BY path`,
      ),
      counts: sqlite.prepare<{ areaIds: string; from: number; to: number }, CountsRow>(
        `SELECT a.id AS areaId, ${KIND} AS kind, COUNT(DISTINCT p.session_id) AS occurrences,
           COUNT(DISTINCT p.emergency_id) AS emergencies, COUNT(*) AS records,
           TOTAL(p.outcome = 'played') AS played, TOTAL(p.outcome = 'partial') AS partial,
           TOTAL(p.outcome = 'failed') AS failed, TOTAL(p.outcome = 'skipped') AS skipped,
           TOTAL(p.outcome = 'expired') AS expired, TOTAL(p.outcome = 'undelivered') AS undelivered,
           SUM(p.outcome IS NULL) AS pending, SUM(p.aired_ms) AS airedMs
         FROM areas a JOIN ${RECORDS_OF_AREA}
         WHERE ${areasIn} GROUP BY a.id, kind`,
      ),
      bulletins: sqlite.prepare<
        { areaIds: string; from: number; to: number },
        {
          areaId: string;
          programmeId: string;
          title: string | null;
          occurrences: number;
          targeted: number;
          played: number;
          partial: number;
        }
      >(
        `SELECT a.id AS areaId, p.programme_id AS programmeId, MAX(p.programme_title) AS title,
           COUNT(DISTINCT p.session_id) AS occurrences, COUNT(*) AS targeted,
           TOTAL(p.outcome = 'played') AS played, TOTAL(p.outcome = 'partial') AS partial
         FROM areas a JOIN ${RECORDS_OF_AREA}
         WHERE ${areasIn} AND p.programme_id IS NOT NULL AND p.emergency_id IS NULL
         GROUP BY a.id, p.programme_id ORDER BY a.id, title, p.programme_id`,
      ),
      reasons: sqlite.prepare<
        { areaIds: string; from: number; to: number; top: number },
        { areaId: string; outcome: string; reason: string | null; count: number }
      >(
        `SELECT areaId, outcome, reason, count FROM (
           SELECT a.id AS areaId, p.outcome AS outcome, p.reason AS reason, COUNT(*) AS count,
             ROW_NUMBER() OVER (PARTITION BY a.id ORDER BY COUNT(*) DESC, p.outcome, p.reason) AS rank
           FROM areas a JOIN ${RECORDS_OF_AREA}
           WHERE ${areasIn} AND p.outcome IN ${FAILURES} AND p.emergency_id IS NULL
           GROUP BY a.id, p.outcome, p.reason)
         WHERE rank <= @top ORDER BY areaId, rank`,
      ),
      // Per device first: a device that played an updated text in full played the emergency, even though
      // the revision it was playing when the update came is `partial`.
      alerts: sqlite.prepare<
        { areaIds: string; from: number; to: number },
        {
          areaId: string;
          exercise: number;
          emergencyId: string;
          title: string | null;
          sentAt: number;
          targeted: number;
          played: number;
          partial: number;
        }
      >(
        `SELECT areaId, exercise, emergencyId,
           COALESCE((SELECT e.title FROM emergencies e WHERE e.id = emergencyId), MAX(title)) AS title,
           MIN(dueAt) AS sentAt, COUNT(*) AS targeted, SUM(played) AS played,
           SUM(partial AND NOT played) AS partial
         FROM (
           SELECT a.id AS areaId, p.exercise AS exercise, p.emergency_id AS emergencyId,
             MAX(p.programme_title) AS title, MIN(p.due_at) AS dueAt,
             MAX(COALESCE(p.outcome = 'played', 0)) AS played,
             MAX(COALESCE(p.outcome = 'partial', 0)) AS partial
           FROM areas a JOIN ${RECORDS_OF_AREA}
           WHERE ${areasIn} AND p.emergency_id IS NOT NULL
           GROUP BY a.id, p.emergency_id, p.exercise, p.device_id)
         GROUP BY areaId, emergencyId, exercise ORDER BY areaId, sentAt, emergencyId`,
      ),
    };
  }

  /** The area itself and the communes and hamlets in its subtree, in path order (a parent before its children). */
  areasOf(area: AreaRow): AreaRow[] {
    return this.stmts.areas.all({ id: area.id, path: area.path, upper: `${area.path.slice(0, -1)}0` });
  }

  /** The figures of each area (its whole subtree), for the records due in [from, to). */
  figures(areaIds: readonly string[], from: Date, to: Date): Map<string, Figures> {
    const params = { areaIds: JSON.stringify(areaIds), from: from.getTime(), to: to.getTime() };
    const out = new Map<string, Figures>();
    for (const id of areaIds) out.set(id, emptyFigures());
    for (const r of this.stmts.counts.all(params)) {
      const { areaId, kind, airedMs, occurrences, emergencies, ...counts } = r;
      const f = out.get(areaId)!;
      const minutesOnAir = Math.round((airedMs ?? 0) / 6_000) / 10;
      if (kind === 'programme') Object.assign(f, counts, { occurrences, minutesOnAir });
      else
        Object.assign(f[kind === 'exercise' ? 'exercises' : 'emergencies'], counts, {
          count: emergencies,
          minutesOnAir,
        });
    }
    for (const { areaId, exercise, sentAt, ...a } of this.stmts.alerts.all(params)) {
      out.get(areaId)![exercise ? 'exercises' : 'emergencies'].items.push({
        ...a,
        sentAt: localDateTime(new Date(sentAt)),
        share: a.targeted ? Math.round((a.played / a.targeted) * 1000) / 1000 : 0,
      });
    }
    for (const { areaId, ...b } of this.stmts.bulletins.all(params)) {
      out
        .get(areaId)!
        .bulletins.push({ ...b, share: b.targeted ? Math.round((b.played / b.targeted) * 1000) / 1000 : 0 });
    }
    for (const { areaId, ...r } of this.stmts.reasons.all({ ...params, top: TOP_REASONS })) {
      out.get(areaId)!.topFailureReasons.push(r);
    }
    return out;
  }
}

export function emptyFigures(): Figures {
  return {
    occurrences: 0,
    records: 0,
    played: 0,
    partial: 0,
    failed: 0,
    skipped: 0,
    expired: 0,
    undelivered: 0,
    pending: 0,
    minutesOnAir: 0,
    bulletins: [],
    topFailureReasons: [],
    emergencies: emptyAlertFigures(),
    exercises: emptyAlertFigures(),
  };
}

function emptyAlertFigures(): AlertFigures {
  return {
    count: 0,
    records: 0,
    played: 0,
    partial: 0,
    failed: 0,
    skipped: 0,
    expired: 0,
    undelivered: 0,
    pending: 0,
    minutesOnAir: 0,
    items: [],
  };
}
