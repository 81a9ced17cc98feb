import { and, asc, desc, eq, gte, isNotNull, lte, sql } from 'drizzle-orm';
import { inSubtree } from '../../lib/scope.js';
import type { Db } from '../../db/index.js';
import {
  areas,
  devices,
  presenceTransitions,
  telemetrySamples,
  type DeviceRow,
  type PresenceCause,
} from '../../db/schema/index.js';
import type { Telemetry } from '../../protocol/index.js';

/** The live columns of a device, as the health service keeps them. */
export type LiveColumns = Pick<
  DeviceRow,
  | 'online'
  | 'onlineSince'
  | 'lastSeenAt'
  | 'firmware'
  | 'volume'
  | 'playing'
  | 'stateAt'
  | 'telemetry'
  | 'telemetryAt'
  | 'playbackFailures'
  | 'health'
  | 'healthReasons'
  | 'healthSince'
>;

export interface Transition {
  deviceId: string;
  at: Date;
  online: boolean;
  cause: PresenceCause;
}

export interface Sample {
  deviceId: string;
  at: Date;
  telemetry: Telemetry;
}

export const METRICS = [
  'rssiDbm',
  'supplyVoltage',
  'ampTempC',
  'uptimeS',
  'onBattery',
  'speakerFault',
] as const;
export type Metric = (typeof METRICS)[number];
const METRIC_COLUMNS = {
  rssiDbm: telemetrySamples.rssiDbm,
  supplyVoltage: telemetrySamples.supplyVoltage,
  ampTempC: telemetrySamples.ampTempC,
  uptimeS: telemetrySamples.uptimeS,
  onBattery: telemetrySamples.onBattery,
  speakerFault: telemetrySamples.speakerFault,
} as const;

export interface SummaryRow {
  childId: string | null;
  total: number;
  online: number;
  playing: number;
  ok: number;
  degraded: number;
  fault: number;
}

export class HealthRepository {
  /**
   * Prepared once: it runs for every device that reported since the last flush. Values are bound raw
   * (epoch ms, 0/1, JSON text), bypassing drizzle's encoders.
   */
  private readonly updateLive;
  private readonly insertTransition;
  private readonly insertSample;

  constructor(private readonly db: Db) {
    const raw = (name: string) => sql`${sql.placeholder(name)}`;
    this.insertTransition = db
      .insert(presenceTransitions)
      .values({ deviceId: raw('deviceId'), at: raw('at'), online: raw('online'), cause: raw('cause') })
      .prepare();
    this.insertSample = db
      .insert(telemetrySamples)
      .values({
        deviceId: raw('deviceId'),
        at: raw('at'),
        deviceAt: raw('deviceAt'),
        uptimeS: raw('uptimeS'),
        rssiDbm: raw('rssiDbm'),
        supplyVoltage: raw('supplyVoltage'),
        onBattery: raw('onBattery'),
        ampTempC: raw('ampTempC'),
        speakerFault: raw('speakerFault'),
      })
      // The key is (device, time): a second message from a device within the same millisecond is dropped.
      .onConflictDoNothing()
      .prepare();
    this.updateLive = db
      .update(devices)
      .set({
        online: raw('online'),
        onlineSince: raw('onlineSince'),
        lastSeenAt: raw('lastSeenAt'),
        firmware: raw('firmware'),
        volume: raw('volume'),
        playing: raw('playing'),
        stateAt: raw('stateAt'),
        telemetry: raw('telemetry'),
        telemetryAt: raw('telemetryAt'),
        playbackFailures: raw('playbackFailures'),
        health: raw('health'),
        healthReasons: raw('healthReasons'),
        healthSince: raw('healthSince'),
      })
      .where(eq(devices.id, sql.placeholder('id')))
      .prepare();
  }

  /** Everything the health service needs to know about every device at start-up. */
  loadAll(): ({ id: string } & LiveColumns)[] {
    return this.liveQuery().all();
  }

  private liveQuery() {
    return this.db
      .select({
        id: devices.id,
        online: devices.online,
        onlineSince: devices.onlineSince,
        lastSeenAt: devices.lastSeenAt,
        firmware: devices.firmware,
        volume: devices.volume,
        playing: devices.playing,
        stateAt: devices.stateAt,
        telemetry: devices.telemetry,
        telemetryAt: devices.telemetryAt,
        playbackFailures: devices.playbackFailures,
        health: devices.health,
        healthReasons: devices.healthReasons,
        healthSince: devices.healthSince,
      })
      .from(devices);
  }

  loadOne(id: string): ({ id: string } & LiveColumns) | undefined {
    return this.liveQuery().where(eq(devices.id, id)).get();
  }

  /** Writes the live columns of changed devices, new transitions and telemetry samples in one transaction. */
  write(
    changed: ReadonlyMap<string, LiveColumns>,
    transitions: readonly Transition[],
    samples: readonly Sample[],
  ): void {
    const ms = (d: Date | null) => d?.getTime() ?? null;
    const json = (v: unknown) => (v === null || v === undefined ? null : JSON.stringify(v));
    this.db.transaction(() => {
      for (const [id, live] of changed) {
        this.updateLive.run({
          id,
          online: live.online ? 1 : 0,
          onlineSince: ms(live.onlineSince),
          lastSeenAt: ms(live.lastSeenAt),
          firmware: live.firmware,
          volume: live.volume,
          playing: json(live.playing),
          stateAt: ms(live.stateAt),
          telemetry: json(live.telemetry),
          telemetryAt: ms(live.telemetryAt),
          playbackFailures: live.playbackFailures,
          health: live.health,
          healthReasons: json(live.healthReasons),
          healthSince: ms(live.healthSince),
        });
      }
      const bit = (b: boolean | undefined) => (b === undefined ? null : b ? 1 : 0);
      for (const t of transitions) {
        this.insertTransition.run({
          deviceId: t.deviceId,
          at: t.at.getTime(),
          online: bit(t.online),
          cause: t.cause,
        });
      }
      for (const { deviceId, at, telemetry: t } of samples) {
        this.insertSample.run({
          deviceId,
          at: at.getTime(),
          deviceAt: Date.parse(t.at),
          uptimeS: t.uptimeS,
          rssiDbm: t.rssiDbm ?? null,
          supplyVoltage: t.supplyVoltage ?? null,
          onBattery: bit(t.onBattery),
          ampTempC: t.ampTempC ?? null,
          speakerFault: bit(t.speakerFault),
        });
      }
    });
  }

  recentTransitions(deviceId: string, limit: number) {
    return this.db
      .select()
      .from(presenceTransitions)
      .where(eq(presenceTransitions.deviceId, deviceId))
      .orderBy(desc(presenceTransitions.at), desc(presenceTransitions.id))
      .limit(limit)
      .all();
  }

  /**
   * A metric's time series between two instants, averaged into buckets of `bucketMs` (1 ms buckets
   * return the raw samples). Booleans come back as the share of samples that were true.
   */
  series(deviceId: string, metric: Metric, from: Date, to: Date, bucketMs: number) {
    const column = METRIC_COLUMNS[metric];
    // better-sqlite3 binds JS numbers as REAL, so the division must be truncated explicitly.
    const bucket = sql<number>`CAST(${telemetrySamples.at} / ${bucketMs} AS INTEGER) * ${bucketMs}`;
    return this.db
      .select({
        at: bucket,
        avg: sql<number | null>`avg(${column})`,
        min: sql<number | null>`min(${column})`,
        max: sql<number | null>`max(${column})`,
        count: sql<number>`count(${column})`,
      })
      .from(telemetrySamples)
      .where(
        and(
          eq(telemetrySamples.deviceId, deviceId),
          gte(telemetrySamples.at, from),
          lte(telemetrySamples.at, to),
          isNotNull(column),
        ),
      )
      .groupBy(bucket)
      .orderBy(asc(bucket))
      .all();
  }

  /** Online and offline devices per top-level area (a province, usually), for the metrics endpoint. */
  countByTopArea(): { areaId: string; areaName: string; online: number; offline: number }[] {
    // The top-level area is the first id of the path: '/ar_top/ar_child/' → 'ar_top'.
    const top = sql`substr(${areas.path}, 2, instr(substr(${areas.path}, 2), '/') - 1)`;
    const rows = this.db.all<{ areaId: string; areaName: string; online: number; total: number }>(sql`
      SELECT t.id AS areaId, t.name AS areaName, sum(d.online) AS online, count(*) AS total
      FROM ${devices} d JOIN ${areas} ON ${areas.id} = d.area_id JOIN ${areas} t ON t.id = ${top}
      GROUP BY t.id, t.name`);
    return rows.map((r) => ({
      areaId: r.areaId,
      areaName: r.areaName,
      online: r.online,
      offline: r.total - r.online,
    }));
  }

  /**
   * Counts per child of the area at `path` (devices directly in the area have childId null). One grouped
   * query over the indexed path prefix: a province of 10,000 devices answers in milliseconds.
   */
  summary(path: string): SummaryRow[] {
    // Count per area first (one pass over devices by area), then fold the areas of the subtree into the
    // direct child they fall under: a province of 10,000 devices answers in a few milliseconds.
    const rest = sql`substr(a.path, ${path.length + 1})`;
    return this.db.all<SummaryRow>(sql`
      WITH per_area AS (
        SELECT area_id, count(*) AS total, sum(online) AS online,
               sum(playing IS NOT NULL AND online = 1) AS playing,
               sum(health = 'ok') AS ok, sum(health = 'degraded') AS degraded, sum(health = 'fault') AS fault
        FROM ${devices} GROUP BY area_id)
      SELECT nullif(substr(${rest}, 1, instr(${rest}, '/') - 1), '') AS childId,
             sum(c.total) AS total, sum(c.online) AS online, sum(c.playing) AS playing,
             sum(c.ok) AS ok, sum(c.degraded) AS degraded, sum(c.fault) AS fault
      FROM per_area c JOIN ${areas} a ON a.id = c.area_id
      WHERE ${inSubtree(sql`a.path`, path)}
      GROUP BY childId`);
  }
}
