/**
 * Retention of what grows with time (docs/operations.md "Storage and retention"): every hour, and once
 * shortly after start, rows older than their retention period are deleted:
 *
 * - command deliveries (one row per command and device) of commands created more than COMMAND_RETENTION_DAYS
 *   ago. The `commands` rows stay (small, and schedules, programmes and the playback log name them), as do
 *   the deliveries of emergency commands: an emergency's device-by-device record is read from them
 *   (src/modules/emergencies) and emergencies are rare;
 * - presence transitions older than PRESENCE_RETENTION_DAYS;
 * - resolved alerts resolved more than ALERT_RETENTION_DAYS ago (an open alert never goes);
 * - audit log entries older than AUDIT_RETENTION_DAYS.
 *
 * Telemetry (src/modules/health), the playback log (src/modules/playback), idempotency keys
 * (src/plugins/idempotency.ts), expired API tokens (src/modules/auth) and given-up webhook events
 * (src/modules/alerts) are pruned by their own modules.
 *
 * The work runs in slices of SLICE_ROWS rows, one transaction each, with a turn of the event loop between
 * two slices: deleting a year of a province's audit log must not hold up MQTT acks and HTTP for seconds.
 * At shutdown the run ends at the next slice (jobs.signal). Each delete walks an index (see the EXPLAIN
 * QUERY PLAN test in tests/retention.test.ts), never the whole table.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type Database from 'better-sqlite3';
import fp from 'fastify-plugin';
import type { Config } from '../../config.js';
import { sqliteOf } from '../../db/index.js';
import type { Clock } from '../../lib/clock.js';
import type { Metrics, RetentionTable } from '../../plugins/metrics.js';
import type { ModuleOptions } from '../module.js';

/** Rows per transaction: a few milliseconds of work, so nothing else waits long behind a slice. */
export const SLICE_ROWS = 2_000;
/** Devices whose presence transitions one slice looks at, at most (each is two index look-ups). */
const DEVICES_PER_SLICE = 500;
export const RETENTION_EVERY_MS = 3_600_000;
/** The first run after start: soon, but not in the middle of the start-up burst of reconnecting devices. */
export const RETENTION_FIRST_AFTER_MS = 60_000;
const OPTIMIZE_EVERY_MS = 86_400_000;
/** maintenance_marks: commands created before this have had their deliveries pruned already. */
const DELIVERIES_MARK = 'retention:command_deliveries';

export type RetentionCounts = Record<RetentionTable, number>;

export interface RetentionRun {
  deleted: RetentionCounts;
  ms: number;
  /** False when the run stopped early (shutdown); the next run carries on. */
  complete: boolean;
  optimized: boolean;
}

export interface RetentionOptions {
  sqlite: Database.Database;
  clock: Clock;
  periods: Config['retention'];
  log: { info(details: object, message: string): void };
  metrics: Pick<Metrics, 'retentionRowsDeleted'>;
  /** Aborted at shutdown: the run ends between two slices. */
  signal: AbortSignal;
  /** Rows per slice; tests make it small to see several slices. */
  sliceRows?: number;
}

/**
 * The queries, on the raw connection: rowid sub-selects with a LIMIT that drizzle cannot express. Exported
 * for the test that checks each one walks an index (EXPLAIN QUERY PLAN).
 */
export const RETENTION_SQL = {
  // commands_created_idx in time order, then the deliveries' primary key (command_id, device_id). The unary
  // `+` keeps the planner off commands_emergency_idx: "emergency_id IS NULL" is nearly every command, and
  // walking that index would read them all and sort them on each slice.
  oldDeliveries: `SELECT d.rowid AS rowid, c.created_at AS createdAt
    FROM commands c JOIN command_deliveries d ON d.command_id = c.id
    WHERE c.created_at >= @from AND c.created_at < @before AND c.expires_at <= @before
      AND +c.emergency_id IS NULL
    ORDER BY c.created_at
    LIMIT @limit`,
  deleteDeliveries: `DELETE FROM command_deliveries WHERE rowid IN (SELECT value FROM json_each(@rowids))`,
  // A command created before the cutoff but still deliverable then (a 7-day expiry): the mark stops there.
  firstUnexpired: `SELECT MIN(created_at) AS at FROM commands
    WHERE created_at >= @from AND created_at < @before AND expires_at > @before`,
  mark: `SELECT at FROM maintenance_marks WHERE job = @job`,
  setMark: `INSERT INTO maintenance_marks (job, at) VALUES (@job, @at)
    ON CONFLICT(job) DO UPDATE SET at = excluded.at`,
  // No index on `at` alone: the devices are walked one by one on presence_device_at_idx (each step a
  // look-up, not a scan), and each device's old transitions are a range of that index.
  nextPresenceDevice: `SELECT device_id AS deviceId FROM presence_transitions
    WHERE device_id > @after ORDER BY device_id LIMIT 1`,
  deletePresence: `DELETE FROM presence_transitions WHERE id IN
    (SELECT id FROM presence_transitions WHERE device_id = @deviceId AND at < @before LIMIT @limit)`,
  // alerts_state_idx is (state, opened_at): an alert resolved before the cutoff was opened before it too,
  // so the range on opened_at bounds the walk; resolved_at then picks among those. Open alerts never match.
  deleteAlerts: `DELETE FROM alerts WHERE id IN (SELECT id FROM alerts
    WHERE state = 'resolved' AND opened_at < @before AND resolved_at < @before LIMIT @limit)`,
  deleteAudit: `DELETE FROM audit_log WHERE id IN
    (SELECT id FROM audit_log WHERE at < @before LIMIT @limit)`,
} as const;

function prepareStatements(s: Database.Database) {
  const q = RETENTION_SQL;
  return {
    oldDeliveries: s.prepare<
      [{ from: number; before: number; limit: number }],
      { rowid: number; createdAt: number }
    >(q.oldDeliveries),
    deleteDeliveries: s.prepare<[{ rowids: string }]>(q.deleteDeliveries),
    firstUnexpired: s.prepare<[{ from: number; before: number }], { at: number | null }>(q.firstUnexpired),
    mark: s.prepare<[{ job: string }], { at: number }>(q.mark),
    setMark: s.prepare<[{ job: string; at: number }]>(q.setMark),
    nextPresenceDevice: s.prepare<[{ after: string }], { deviceId: string }>(q.nextPresenceDevice),
    deletePresence: s.prepare<[{ deviceId: string; before: number; limit: number }]>(q.deletePresence),
    deleteAlerts: s.prepare<[{ before: number; limit: number }]>(q.deleteAlerts),
    deleteAudit: s.prepare<[{ before: number; limit: number }]>(q.deleteAudit),
  };
}

export class Retention {
  private readonly stmts;
  private readonly sliceRows: number;
  private lastOptimizeAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly options: RetentionOptions) {
    this.stmts = prepareStatements(options.sqlite);
    this.sliceRows = options.sliceRows ?? SLICE_ROWS;
  }

  /**
   * One pass over every table, then, once a day, PRAGMA optimize: whether or not this pass deleted anything,
   * since telemetry's own job deletes and inserts millions of rows a day.
   */
  async run(): Promise<RetentionRun> {
    const { clock, periods, signal, log, metrics } = this.options;
    const started = performance.now();
    const now = clock.now().getTime();
    const deleted: RetentionCounts = {
      command_deliveries: 0,
      presence_transitions: 0,
      alerts: 0,
      audit_log: 0,
    };
    const tasks: [RetentionTable, () => AsyncGenerator<number, boolean>][] = [
      ['command_deliveries', () => this.deliveries(now - periods.commandDeliveriesMs)],
      ['presence_transitions', () => this.presence(now - periods.presenceTransitionsMs)],
      [
        'alerts',
        () =>
          this.simple(
            (limit) => this.stmts.deleteAlerts.run({ before: now - periods.resolvedAlertsMs, limit }).changes,
          ),
      ],
      [
        'audit_log',
        () =>
          this.simple(
            (limit) => this.stmts.deleteAudit.run({ before: now - periods.auditMs, limit }).changes,
          ),
      ],
    ];
    let complete = true;
    for (const [table, task] of tasks) {
      const slices = task();
      for (;;) {
        if (signal.aborted) {
          complete = false;
          break;
        }
        const step = await slices.next();
        if (step.done) break;
        deleted[table] += step.value;
        metrics.retentionRowsDeleted(table, step.value);
        await nextTurn();
      }
      if (!complete) break;
    }

    const total = Object.values(deleted).reduce((a, b) => a + b, 0);
    let optimized = false;
    if (!signal.aborted && now - this.lastOptimizeAt >= OPTIMIZE_EVERY_MS) {
      this.optimize();
      this.lastOptimizeAt = now;
      optimized = true;
    }
    const ms = Math.round(performance.now() - started);
    if (total > 0) log.info({ deleted, ms, complete, optimized }, 'retention: pruned old rows');
    return { deleted, ms, complete, optimized };
  }

  /**
   * Refreshes the query planner's statistics where many rows went, so it keeps choosing the indexes. The
   * analysis limit bounds the work on large tables to a sample (a few milliseconds, not a full scan).
   */
  private optimize(): void {
    this.options.sqlite.pragma('analysis_limit = 400');
    this.options.sqlite.pragma('optimize');
  }

  /** Slices of one delete statement taking a row limit, until it deletes fewer than a slice. */
  private async *simple(deleteSlice: (limit: number) => number): AsyncGenerator<number, boolean> {
    for (;;) {
      const n = this.options.sqlite.transaction(() => deleteSlice(this.sliceRows))();
      if (n > 0) yield n;
      if (n < this.sliceRows) return true;
    }
  }

  /**
   * Deliveries of commands created before `before`, oldest command first. The walk starts at the mark the
   * previous complete run left (no deliveries are ever added to an existing command), and within the run
   * at the command the previous slice reached.
   */
  private async *deliveries(before: number): AsyncGenerator<number, boolean> {
    const { sqlite, signal } = this.options;
    let from = this.stmts.mark.get({ job: DELIVERIES_MARK })?.at ?? 0;
    const startFrom = from;
    for (;;) {
      const n = sqlite.transaction(() => {
        const rows = this.stmts.oldDeliveries.all({ from, before, limit: this.sliceRows });
        if (rows.length === 0) return 0;
        this.stmts.deleteDeliveries.run({ rowids: JSON.stringify(rows.map((r) => r.rowid)) });
        from = rows.at(-1)!.createdAt;
        return rows.length;
      })();
      if (n > 0) yield n;
      if (n < this.sliceRows) break;
    }
    if (signal.aborted) return false;
    const unexpired = this.stmts.firstUnexpired.get({ from: startFrom, before })?.at ?? null;
    this.stmts.setMark.run({
      job: DELIVERIES_MARK,
      at: Math.max(startFrom, Math.min(before, unexpired ?? before)),
    });
    return true;
  }

  /** Each device's transitions before `before`, device by device in id order. */
  private async *presence(before: number): AsyncGenerator<number, boolean> {
    let cursor = '';
    for (;;) {
      let finished = false;
      const n = this.options.sqlite.transaction(() => {
        let deleted = 0;
        for (let visited = 0; visited < DEVICES_PER_SLICE && deleted < this.sliceRows; visited++) {
          const next = this.stmts.nextPresenceDevice.get({ after: cursor });
          if (!next) {
            finished = true;
            break;
          }
          const room = this.sliceRows - deleted;
          const removed = this.stmts.deletePresence.run({
            deviceId: next.deviceId,
            before,
            limit: room,
          }).changes;
          deleted += removed;
          // A device with more old rows than the room left is visited again in the next slice.
          if (removed < room) cursor = next.deviceId;
        }
        return deleted;
      })();
      if (n > 0) yield n;
      else if (!finished) yield 0;
      if (finished) return true;
    }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    retention: Retention;
  }
}

/** Registered with the modules (app.ts); the job starts once the app is ready, on the injected clock. */
export default fp<ModuleOptions>(
  async (app, { config, clock, jobs }) => {
    const retention = new Retention({
      sqlite: sqliteOf(app.db),
      clock,
      periods: config.retention,
      log: app.log.child({ module: 'retention' }),
      metrics: app.metrics,
      signal: jobs.signal,
    });
    app.decorate('retention', retention);
    app.addHook('onReady', async () => {
      jobs.every('prune old rows', RETENTION_EVERY_MS, () => retention.run(), {
        firstAfterMs: RETENTION_FIRST_AFTER_MS,
      });
    });
  },
  { name: 'retention-module', fastify: '5.x', dependencies: ['db', 'metrics'] },
);
