/**
 * Queries over the raw telemetry and its 5-minute roll-ups (src/db/schema/health.ts) that maintenance and
 * long history ranges need. Plain SQL on the better-sqlite3 connection, prepared once: the maintenance
 * runs them tens of thousands of times per pass (one seek per device), and drizzle would prepare each call.
 *
 * Both tables are keyed (device, time) WITHOUT ROWID, so every query here is a seek into one device's
 * range of the key; nothing scans a table. Devices are enumerated from the tables' own keys (a skip-scan:
 * one seek per device), not from `devices`, so a deleted device's rows are rolled up and pruned like any.
 */
import type Database from 'better-sqlite3';
import { sqliteOf, type Db } from '../../db/index.js';
import { METRICS, type Metric } from './health.repository.js';

/** The roll-up bucket: 5 minutes, aligned to multiples of 5 minutes since the epoch (UTC). */
export const ROLLUP_BUCKET_MS = 300_000;

/** The mark in maintenance_marks: every bucket that starts before it has been rolled up. */
export const ROLLUP_JOB = 'telemetry_rollup';

/**
 * How each metric is stored: its raw column, its roll-up columns and the roll-up's integer unit (`scale`
 * raw units per stored unit: 10 → 0.1 dB). Booleans keep their count of true samples instead.
 */
const METRIC_STORAGE: Record<
  Metric,
  | { raw: string; kind: 'number'; n: string; min: string; max: string; avg: string; scale: number }
  | {
      raw: string;
      kind: 'boolean';
      n: string;
      trueCount: string;
    }
> = {
  rssiDbm: {
    raw: 'rssi_dbm',
    kind: 'number',
    n: 'rssi_n',
    min: 'rssi_min_ddbm',
    max: 'rssi_max_ddbm',
    avg: 'rssi_avg_ddbm',
    scale: 10,
  },
  supplyVoltage: {
    raw: 'supply_voltage',
    kind: 'number',
    n: 'supply_n',
    min: 'supply_min_mv',
    max: 'supply_max_mv',
    avg: 'supply_avg_mv',
    scale: 1000,
  },
  ampTempC: {
    raw: 'amp_temp_c',
    kind: 'number',
    n: 'amp_temp_n',
    min: 'amp_temp_min_dc',
    max: 'amp_temp_max_dc',
    avg: 'amp_temp_avg_dc',
    scale: 10,
  },
  uptimeS: {
    raw: 'uptime_s',
    kind: 'number',
    n: 'samples',
    min: 'uptime_min_s',
    max: 'uptime_max_s',
    avg: 'uptime_avg_s',
    scale: 1,
  },
  onBattery: { raw: 'on_battery', kind: 'boolean', n: 'on_battery_n', trueCount: 'on_battery_true' },
  speakerFault: {
    raw: 'speaker_fault',
    kind: 'boolean',
    n: 'speaker_fault_n',
    trueCount: 'speaker_fault_true',
  },
};

/** One metric over one bucket, in the metric's own unit: enough to merge buckets without losing anything. */
export interface Aggregate {
  n: number;
  sum: number;
  min: number | null;
  max: number | null;
}

export type BucketAggregates = { at: number } & Record<Metric, Aggregate>;

type Row = Record<string, number | null>;
type NextDevice = { deviceId: string; at: number } | undefined;

export class TelemetryRepository {
  private readonly sqlite: Database.Database;
  private readonly getMarkStmt: Database.Statement<[string], { at: number }>;
  private readonly setMarkStmt: Database.Statement<[string, number]>;
  private readonly nextRawDevice: Database.Statement<[string], { deviceId: string; at: number }>;
  private readonly nextRollupDevice: Database.Statement<[string], { deviceId: string; at: number }>;
  private readonly rollUpStmt: Database.Statement<[string, number, number]>;
  private readonly nthRawAt: Database.Statement<[string, number, number], { at: number }>;
  private readonly deleteRawStmt: Database.Statement<[string, number]>;
  private readonly nthRollupAt: Database.Statement<[string, number, number], { at: number }>;
  private readonly deleteRollupsStmt: Database.Statement<[string, number]>;
  private readonly rollupBuckets: Database.Statement<[Record<string, number | string>], Row>;
  private readonly rawBuckets: Database.Statement<[Record<string, number | string>], Row>;

  constructor(db: Db) {
    const sqlite = sqliteOf(db);
    this.sqlite = sqlite;
    this.getMarkStmt = sqlite.prepare('SELECT at FROM maintenance_marks WHERE job = ?');
    this.setMarkStmt = sqlite.prepare('INSERT OR REPLACE INTO maintenance_marks (job, at) VALUES (?, ?)');
    // The first key after `device_id`: the next device and its oldest row, in one seek.
    this.nextRawDevice = sqlite.prepare(
      'SELECT device_id AS deviceId, at FROM telemetry_samples WHERE device_id > ? ORDER BY device_id, at LIMIT 1',
    );
    this.nextRollupDevice = sqlite.prepare(
      'SELECT device_id AS deviceId, bucket_at AS at FROM telemetry_rollups WHERE device_id > ? ORDER BY device_id, bucket_at LIMIT 1',
    );

    // Integer units, rounded (half away from zero); `at` is an INTEGER, so the division truncates.
    const scaled = (fn: string, column: string, scale: number) =>
      `CAST(round(${fn}(${column})${scale === 1 ? '' : ` * ${scale}`}) AS INTEGER)`;
    const rollupColumns: string[] = ['device_id', 'bucket_at', 'samples'];
    const rollupValues: string[] = [
      'device_id',
      `at / ${ROLLUP_BUCKET_MS} * ${ROLLUP_BUCKET_MS} AS bucket`,
      'count(*)',
    ];
    for (const metric of METRICS) {
      const s = METRIC_STORAGE[metric];
      if (s.kind === 'number') {
        if (s.n !== 'samples') {
          rollupColumns.push(s.n);
          rollupValues.push(`count(${s.raw})`);
        }
        rollupColumns.push(s.min, s.max, s.avg);
        rollupValues.push(
          scaled('min', s.raw, s.scale),
          scaled('max', s.raw, s.scale),
          scaled('avg', s.raw, s.scale),
        );
      } else {
        rollupColumns.push(s.n, s.trueCount);
        rollupValues.push(`count(${s.raw})`, `ifnull(sum(${s.raw}), 0)`);
      }
    }
    // A whole bucket is replaced at once, so running it twice over the same range changes nothing.
    this.rollUpStmt = sqlite.prepare(
      `INSERT OR REPLACE INTO telemetry_rollups (${rollupColumns.join(', ')})
       SELECT ${rollupValues.join(', ')} FROM telemetry_samples
       WHERE device_id = ? AND at >= ? AND at < ? GROUP BY bucket`,
    );

    // For deletes bounded in rows: the time of the (limit + 1)-th oldest row before the cut-off, if any.
    this.nthRawAt = sqlite.prepare(
      'SELECT at FROM telemetry_samples WHERE device_id = ? AND at < ? ORDER BY at LIMIT 1 OFFSET ?',
    );
    this.deleteRawStmt = sqlite.prepare('DELETE FROM telemetry_samples WHERE device_id = ? AND at < ?');
    this.nthRollupAt = sqlite.prepare(
      'SELECT bucket_at AS at FROM telemetry_rollups WHERE device_id = ? AND bucket_at < ? ORDER BY bucket_at LIMIT 1 OFFSET ?',
    );
    this.deleteRollupsStmt = sqlite.prepare(
      'DELETE FROM telemetry_rollups WHERE device_id = ? AND bucket_at < ?',
    );

    // History over long ranges. Bound numbers arrive as REAL, hence the CAST to truncate the division.
    const rollupAggregates: string[] = [];
    const rawAggregates: string[] = [];
    for (const metric of METRICS) {
      const s = METRIC_STORAGE[metric];
      if (s.kind === 'number') {
        // The sum of a bucket is its average times its count: exact up to the roll-up's rounding.
        rollupAggregates.push(
          `sum(${s.n}) AS ${metric}_n`,
          `sum(${s.avg} * ${s.n}) / ${s.scale}.0 AS ${metric}_sum`,
          `min(${s.min}) / ${s.scale}.0 AS ${metric}_min`,
          `max(${s.max}) / ${s.scale}.0 AS ${metric}_max`,
        );
      } else {
        rollupAggregates.push(
          `sum(${s.n}) AS ${metric}_n`,
          `sum(${s.trueCount}) AS ${metric}_sum`,
          // False samples exist where fewer were true than were counted; true ones where any was.
          `CASE WHEN sum(${s.n}) = 0 THEN NULL WHEN sum(${s.trueCount}) = sum(${s.n}) THEN 1 ELSE 0 END AS ${metric}_min`,
          `CASE WHEN sum(${s.n}) = 0 THEN NULL WHEN sum(${s.trueCount}) > 0 THEN 1 ELSE 0 END AS ${metric}_max`,
        );
      }
      rawAggregates.push(
        `count(${s.raw}) AS ${metric}_n`,
        `ifnull(sum(${s.raw}), 0) AS ${metric}_sum`,
        `min(${s.raw}) AS ${metric}_min`,
        `max(${s.raw}) AS ${metric}_max`,
      );
    }
    this.rollupBuckets = sqlite.prepare(
      `SELECT CAST(bucket_at / @bucket AS INTEGER) * @bucket AS at, ${rollupAggregates.join(', ')}
       FROM telemetry_rollups WHERE device_id = @deviceId AND bucket_at >= @from AND bucket_at <= @to
       GROUP BY 1 ORDER BY 1`,
    );
    this.rawBuckets = sqlite.prepare(
      `SELECT CAST(at / @bucket AS INTEGER) * @bucket AS at, ${rawAggregates.join(', ')}
       FROM telemetry_samples WHERE device_id = @deviceId AND at >= @from AND at <= @to
       GROUP BY 1 ORDER BY 1`,
    );
  }

  /** Runs `fn` in one transaction (a slice of maintenance). */
  transaction<T>(fn: () => T): T {
    return this.sqlite.transaction(fn)();
  }

  getMark(job: string): number | null {
    return this.getMarkStmt.get(job)?.at ?? null;
  }

  setMark(job: string, at: number): void {
    this.setMarkStmt.run(job, at);
  }

  /** The first device after `after` that has raw samples, with the time of its oldest one. */
  nextDeviceWithSamples(after: string): NextDevice {
    return this.nextRawDevice.get(after);
  }

  nextDeviceWithRollups(after: string): NextDevice {
    return this.nextRollupDevice.get(after);
  }

  /** Rolls up a device's raw samples in [from, to) (bucket-aligned) into 5-minute buckets; buckets written. */
  rollUp(deviceId: string, from: number, to: number): number {
    return this.rollUpStmt.run(deviceId, from, to).changes;
  }

  /**
   * Deletes up to `limit` of a device's oldest raw samples before `before`; `more` when some remain.
   * Bounded so that one device with a long backlog cannot make a slice long.
   */
  deleteSamples(deviceId: string, before: number, limit: number): { deleted: number; more: boolean } {
    return this.boundedDelete(this.nthRawAt, this.deleteRawStmt, deviceId, before, limit);
  }

  deleteRollups(deviceId: string, before: number, limit: number): { deleted: number; more: boolean } {
    return this.boundedDelete(this.nthRollupAt, this.deleteRollupsStmt, deviceId, before, limit);
  }

  private boundedDelete(
    nth: Database.Statement<[string, number, number], { at: number }>,
    remove: Database.Statement<[string, number]>,
    deviceId: string,
    before: number,
    limit: number,
  ): { deleted: number; more: boolean } {
    // Times are unique per device (the key), so deleting before the (limit + 1)-th removes exactly `limit`.
    const stop = nth.get(deviceId, before, limit)?.at;
    const deleted = remove.run(deviceId, stop ?? before).changes;
    return { deleted, more: stop !== undefined };
  }

  /** A device's roll-ups with `bucket_at` in [from, to], merged into buckets of `bucketMs` (a multiple of 5 min). */
  rollupAggregates(deviceId: string, from: number, to: number, bucketMs: number): BucketAggregates[] {
    return this.rollupBuckets.all({ deviceId, from, to, bucket: bucketMs }).map(toAggregates);
  }

  /** A device's raw samples in [from, to], aggregated into buckets of `bucketMs`. */
  rawAggregates(deviceId: string, from: number, to: number, bucketMs: number): BucketAggregates[] {
    return this.rawBuckets.all({ deviceId, from, to, bucket: bucketMs }).map(toAggregates);
  }
}

function toAggregates(row: Row): BucketAggregates {
  const out = { at: row.at as number } as BucketAggregates;
  for (const metric of METRICS) {
    out[metric] = {
      n: row[`${metric}_n`] ?? 0,
      sum: row[`${metric}_sum`] ?? 0,
      min: row[`${metric}_min`] ?? null,
      max: row[`${metric}_max`] ?? null,
    };
  }
  return out;
}
