/**
 * Telemetry storage stays bounded: raw samples are rolled up into 5-minute buckets, raw samples are pruned
 * after TELEMETRY_RAW_HOURS and roll-ups after TELEMETRY_RETENTION_DAYS, and the history endpoint answers
 * from whichever covers the range. A real SQLite file; samples are written into it directly (as the
 * telemetry flush would) so that days of history take milliseconds; the clock is driven by the test.
 */
import fs from 'node:fs';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { ADMIN_PASSWORD, createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { captureLog, type LogLine } from './support/log.js';
import { waitFor } from './support/wait.js';

const MIN = 60_000;
const HOUR = 60 * MIN;
const DAY = 24 * HOUR;
const T0 = Date.parse('2026-06-01T00:00:00.000Z'); // a multiple of 10 minutes since the epoch

interface Sample {
  deviceId: string;
  at: number;
  uptimeS: number;
  rssiDbm: number | null;
  supplyVoltage: number | null;
  onBattery: boolean | null;
  ampTempC: number | null;
  speakerFault: boolean | null;
}

/**
 * A sample every 30 s from `from` (1.234 s into each half minute), ten per 5-minute bucket. Values are
 * chosen so that each bucket's average is exact in the roll-ups' units (whole dB and °C over ten samples
 * average to a tenth; hundredths of a volt to a millivolt): the roll-up's rounding then loses nothing and
 * the test can compare exactly. `full: false` sends only what a basic cluster reports (no optional metric
 * but the supply voltage).
 */
function samples(deviceId: string, from: number, to: number, full = true): Sample[] {
  const out: Sample[] = [];
  for (let at = from + 1_234, k = 0; at < to; at += 30_000, k++) {
    out.push({
      deviceId,
      at,
      uptimeS: 1_000 + k * 30,
      rssiDbm: full ? -60 - (k % 7) : null,
      supplyVoltage: 12 + (k % 13) / 100,
      onBattery: full ? k % 3 === 0 : null,
      ampTempC: full ? 30 + (k % 5) : null,
      speakerFault: full ? k % 4 === 0 : null,
    });
  }
  return out;
}

function insert(file: string, rows: readonly Sample[]): void {
  const db = new Database(file);
  try {
    const bit = (b: boolean | null) => (b === null ? null : b ? 1 : 0);
    const stmt = db.prepare(
      `INSERT INTO telemetry_samples (device_id, at, device_at, uptime_s, rssi_dbm, supply_voltage, on_battery, amp_temp_c, speaker_fault)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    db.transaction(() => {
      for (const s of rows) {
        stmt.run(
          s.deviceId,
          s.at,
          s.at,
          s.uptimeS,
          s.rssiDbm,
          s.supplyVoltage,
          bit(s.onBattery),
          s.ampTempC,
          bit(s.speakerFault),
        );
      }
    })();
  } finally {
    db.close();
  }
}

const METRICS = ['rssiDbm', 'supplyVoltage', 'ampTempC', 'uptimeS', 'onBattery', 'speakerFault'] as const;
type Point = { at: string; avg: number | null; min: number | null; max: number | null; count: number };

/** The history computed from the raw samples, independently of the server: buckets of `bucketMs`. */
function expectedSeries(rows: readonly Sample[], from: number, to: number, bucketMs: number) {
  const series: Record<string, Point[]> = {};
  for (const metric of METRICS) {
    const buckets = new Map<number, number[]>();
    for (const s of rows) {
      const v = s[metric];
      if (v === null || s.at < from || s.at > to) continue;
      const at = Math.floor(s.at / bucketMs) * bucketMs;
      const list = buckets.get(at) ?? [];
      list.push(typeof v === 'boolean' ? Number(v) : v);
      buckets.set(at, list);
    }
    series[metric] = [...buckets.entries()]
      .sort(([a], [b]) => a - b)
      .map(([at, values]) => ({
        at: new Date(at).toISOString(),
        avg: values.reduce((x, y) => x + y, 0) / values.length,
        min: Math.min(...values),
        max: Math.max(...values),
        count: values.length,
      }));
  }
  return series;
}

function expectSameSeries(actual: Record<string, Point[]>, expected: Record<string, Point[]>) {
  expect(Object.keys(actual)).toEqual(Object.keys(expected));
  for (const metric of Object.keys(expected)) {
    const a = actual[metric] ?? [];
    const e = expected[metric] ?? [];
    expect(
      a.map((p) => [p.at, p.count, p.min, p.max]),
      metric,
    ).toEqual(e.map((p) => [p.at, p.count, p.min, p.max]));
    a.forEach((p, i) => expect(p.avg, `${metric} ${p.at}`).toBeCloseTo(e[i]?.avg ?? NaN, 9));
  }
}

type Rollup = {
  device_id: string;
  bucket_at: number;
  samples: number;
  uptime_min_s: number;
  uptime_max_s: number;
  uptime_avg_s: number;
  rssi_n: number;
  rssi_min_ddbm: number | null;
  rssi_max_ddbm: number | null;
  rssi_avg_ddbm: number | null;
  supply_n: number;
  supply_min_mv: number | null;
  supply_max_mv: number | null;
  supply_avg_mv: number | null;
  amp_temp_n: number;
  amp_temp_min_dc: number | null;
  amp_temp_max_dc: number | null;
  amp_temp_avg_dc: number | null;
  on_battery_n: number;
  on_battery_true: number;
  speaker_fault_n: number;
  speaker_fault_true: number;
};

/** What a bucket's roll-up row must hold, computed from the raw samples in it. */
function expectedRollup(rows: readonly Sample[]): Rollup {
  const first = rows[0]!;
  const stats = (values: (number | null)[], scale: number) => {
    const present = values.filter((v): v is number => v !== null);
    if (present.length === 0) return { n: 0, min: null, max: null, avg: null };
    return {
      n: present.length,
      min: Math.round(Math.min(...present) * scale),
      max: Math.round(Math.max(...present) * scale),
      avg: Math.round((present.reduce((a, b) => a + b, 0) / present.length) * scale),
    };
  };
  const flags = (values: (boolean | null)[]) => ({
    n: values.filter((v) => v !== null).length,
    true: values.filter((v) => v === true).length,
  });
  const up = stats(
    rows.map((s) => s.uptimeS),
    1,
  );
  const rssi = stats(
    rows.map((s) => s.rssiDbm),
    10,
  );
  const supply = stats(
    rows.map((s) => s.supplyVoltage),
    1000,
  );
  const temp = stats(
    rows.map((s) => s.ampTempC),
    10,
  );
  const battery = flags(rows.map((s) => s.onBattery));
  const fault = flags(rows.map((s) => s.speakerFault));
  return {
    device_id: first.deviceId,
    bucket_at: Math.floor(first.at / 300_000) * 300_000,
    samples: rows.length,
    uptime_min_s: up.min!,
    uptime_max_s: up.max!,
    uptime_avg_s: up.avg!,
    rssi_n: rssi.n,
    rssi_min_ddbm: rssi.min,
    rssi_max_ddbm: rssi.max,
    rssi_avg_ddbm: rssi.avg,
    supply_n: supply.n,
    supply_min_mv: supply.min,
    supply_max_mv: supply.max,
    supply_avg_mv: supply.avg,
    amp_temp_n: temp.n,
    amp_temp_min_dc: temp.min,
    amp_temp_max_dc: temp.max,
    amp_temp_avg_dc: temp.avg,
    on_battery_n: battery.n,
    on_battery_true: battery.true,
    speaker_fault_n: fault.n,
    speaker_fault_true: fault.true,
  };
}

function byBucket(rows: readonly Sample[]): Sample[][] {
  const groups = new Map<string, Sample[]>();
  for (const s of rows) {
    const key = `${s.deviceId} ${Math.floor(s.at / 300_000)}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  return [...groups.values()];
}

describe('telemetry roll-up and bounded storage', () => {
  let t: TestApp | undefined;
  let clock: ManualClock;
  const extraDirs: string[] = [];

  afterEach(async () => {
    await t?.close();
    t = undefined;
    for (const dir of extraDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Log lines of the app, parsed. */
  let logs: LogLine[] = [];
  const start = async (env: Record<string, string> = {}) => {
    clock = new ManualClock(new Date(T0).toISOString());
    const log = captureLog();
    logs = log.lines;
    t = await createTestApp({ clock, env, logger: { level: 'info', stream: log.stream } });
    return t;
  };
  const file = () => loadConfig({ DATA_DIR: t!.dataDir, ADMIN_PASSWORD }).databaseFile;
  const maintain = () => t!.app.services.health.maintainTelemetry();
  const count = (table: string, where = '1') =>
    (t!.query(`SELECT count(*) AS n FROM ${table} WHERE ${where}`)[0] as { n: number }).n;
  const rollups = () => t!.query('SELECT * FROM telemetry_rollups ORDER BY device_id, bucket_at') as Rollup[];
  const mark = () =>
    (
      t!.query("SELECT at FROM maintenance_marks WHERE job = 'telemetry_rollup'")[0] as
        { at: number } | undefined
    )?.at;

  it('rolls complete 5-minute buckets up into min / avg / max per metric, in integer units', async () => {
    await start();
    const full = samples('dev_a', T0, T0 + 15 * MIN);
    const basic = samples('dev_b', T0 + 5 * MIN, T0 + 17 * MIN, false); // the last bucket is not complete
    insert(file(), [...full, ...basic]);
    clock.advance(17 * MIN + 30_000);

    // The periodic job has started meanwhile (the clock moved past its time): this run waits for it.
    const result = await maintain();

    // Complete buckets end at least a minute ago: up to 00:15 (the one ending at 00:20 is still open).
    expect(result).toMatchObject({ mark: T0 + 15 * MIN, rawDeleted: 0, aborted: false });
    expect(mark()).toBe(T0 + 15 * MIN);
    expect(count('telemetry_samples')).toBe(full.length + basic.length);
    const inRolledBuckets = [...full, ...basic].filter((s) => s.at < T0 + 15 * MIN);
    expect(rollups()).toEqual(byBucket(inRolledBuckets).map(expectedRollup));
    // Spot-check the units against hand-computed values: the first bucket of dev_a.
    expect(rollups()[0]).toMatchObject({
      samples: 10,
      uptime_min_s: 1_000,
      uptime_max_s: 1_270,
      uptime_avg_s: 1_135,
      rssi_min_ddbm: -660,
      rssi_max_ddbm: -600,
      rssi_avg_ddbm: -624, // (-60-61-62-63-64-65-66-60-61-62) / 10 = -62.4 dB
      supply_min_mv: 12_000,
      supply_max_mv: 12_090,
      supply_avg_mv: 12_045,
      amp_temp_avg_dc: 320,
      on_battery_n: 10,
      on_battery_true: 4,
      speaker_fault_true: 3,
    });
    // The device that reports no optional metric: counts of zero and no values.
    expect(rollups().find((r) => r.device_id === 'dev_b')).toMatchObject({
      samples: 10,
      rssi_n: 0,
      rssi_min_ddbm: null,
      rssi_avg_ddbm: null,
      supply_n: 10,
      amp_temp_n: 0,
      on_battery_n: 0,
      on_battery_true: 0,
      speaker_fault_n: 0,
    });

    // One info line for the run that did the work, none for the one that found nothing to do.
    const reported = () => logs.filter((l) => l.msg === 'telemetry rolled up and pruned');
    expect(reported()).toEqual([
      expect.objectContaining({ level: 30, bucketsRolledUp: 5, rawDeleted: 0, rollupsDeleted: 0 }),
    ]);

    // Nothing new is complete: a second run writes nothing (and logs nothing).
    expect(await maintain()).toMatchObject({ bucketsRolledUp: 0, mark: T0 + 15 * MIN });
    expect(reported()).toHaveLength(1);
  });

  it('prunes raw samples after the raw window and roll-ups after the retention, those of deleted devices too', async () => {
    // Short windows: moving the clock by a month fires every other module's timers along the way (slow).
    await start({ TELEMETRY_RAW_HOURS: '24', TELEMETRY_RETENTION_DAYS: '3' });
    const tree = await createAreaTree(t!);
    const kept = await t!.createDevice(tree.hamletA.id, 'Cụm loa Thôn Đông – cổng chợ');
    const gone = await t!.createDevice(tree.hamletB.id, 'Cụm loa Thôn Tây');
    insert(file(), [...samples(kept.id, T0, T0 + 10 * MIN), ...samples(gone.id, T0, T0 + 10 * MIN, false)]);
    clock.advance(11 * MIN);
    await maintain();
    expect(count('telemetry_rollups')).toBe(4);
    const deleted = await t!.request('DELETE', `/api/v1/devices/${gone.id}`, { token: t!.adminToken });
    expect(deleted.statusCode).toBe(204);

    // Just inside the raw window: nothing is pruned yet.
    clock.advance(24 * HOUR - 11 * MIN);
    await maintain();
    expect(count('telemetry_samples')).toBe(40);
    expect(count('telemetry_rollups')).toBe(4);

    // The periodic job does it on its own once the raw window is over: raw gone, roll-ups kept.
    clock.advance(10 * MIN);
    await waitFor(() => count('telemetry_samples') === 0, 'raw samples pruned by the periodic job');
    expect(count('telemetry_rollups')).toBe(4);
    expect(count('telemetry_rollups', `device_id = '${gone.id}'`)).toBe(2);

    // After the retention, the roll-ups go too: the deleted device's as well.
    clock.advance(3 * DAY - 24 * HOUR);
    await maintain();
    expect(count('telemetry_rollups')).toBe(0);
  });

  it('resumes from its mark after a restart: no bucket rolled up twice, none skipped', async () => {
    await start();
    const first = samples('dev_a', T0, T0 + 15 * MIN);
    insert(file(), first);
    clock.advance(16 * MIN);
    await maintain();
    expect(mark()).toBe(T0 + 15 * MIN);
    const dataDir = t!.dataDir;
    await t!.app.close();
    t = undefined;
    extraDirs.push(dataDir);

    // While the server is down: a marker in a rolled-up bucket (a re-roll would overwrite it), and samples
    // received just before the stop that are not rolled up yet.
    const db = new Database(loadConfig({ DATA_DIR: dataDir, ADMIN_PASSWORD }).databaseFile);
    db.prepare('UPDATE telemetry_rollups SET uptime_avg_s = -1 WHERE bucket_at = ?').run(T0);
    db.close();
    const second = samples('dev_a', T0 + 15 * MIN, T0 + 25 * MIN);
    insert(loadConfig({ DATA_DIR: dataDir, ADMIN_PASSWORD }).databaseFile, second);

    const clock2 = new ManualClock(new Date(T0 + 40 * MIN).toISOString());
    const app = await buildApp({
      config: loadConfig({
        DATA_DIR: dataDir,
        PORT: '0',
        MQTT_PORT: '0',
        HOST: '127.0.0.1',
        ADMIN_PASSWORD,
        LOG_LEVEL: 'silent',
      }),
      clock: clock2,
    });
    try {
      await app.ready();
      const result = await app.services.health.maintainTelemetry();
      expect(result).toMatchObject({ bucketsRolledUp: 2, mark: T0 + 35 * MIN });
      const reader = new Database(loadConfig({ DATA_DIR: dataDir, ADMIN_PASSWORD }).databaseFile, {
        readonly: true,
      });
      const rows = reader.prepare('SELECT * FROM telemetry_rollups ORDER BY bucket_at').all() as Rollup[];
      reader.close();
      expect(rows.map((r) => [r.bucket_at, r.uptime_avg_s])).toEqual([
        [T0, -1], // not rolled up again
        [T0 + 5 * MIN, expectedRollup(first.slice(10, 20)).uptime_avg_s],
        [T0 + 10 * MIN, expectedRollup(first.slice(20, 30)).uptime_avg_s],
        [T0 + 15 * MIN, expectedRollup(second.slice(0, 10)).uptime_avg_s], // not skipped
        [T0 + 20 * MIN, expectedRollup(second.slice(10, 20)).uptime_avg_s],
      ]);
      expect(rows.slice(1)).toEqual(byBucket([...first.slice(10), ...second]).map(expectedRollup));
    } finally {
      await app.close();
    }
  });

  it('answers a 3-day history from the roll-ups (and the raw samples after them), in the shape of a raw one', async () => {
    await start({ TOKEN_TTL_HOURS: '168' }); // the clock moves 3 days: tokens must outlive that
    const tree = await createAreaTree(t!);
    const device = await t!.createDevice(tree.hamletA.id, 'Đài truyền thanh xã Hải Phú');
    const now = T0 + 3 * DAY + 10 * MIN;
    const rows = samples(device.id, T0, now);
    insert(file(), rows);
    clock.advance(now - T0);
    await maintain();
    const technician = await t!.createUser('technician', tree.district.id);
    // Rolled up to 5 minutes before now; raw samples older than 48 hours are gone.
    expect(mark()).toBe(now - 5 * MIN);
    expect(count('telemetry_samples', `at < ${now - 48 * HOUR}`)).toBe(0);
    expect(count('telemetry_samples')).toBe(rows.filter((r) => r.at >= now - 48 * HOUR).length);

    const res = await t!.request(
      'GET',
      `/api/v1/devices/${device.id}/telemetry?from=${new Date(T0).toISOString()}&to=${new Date(now).toISOString()}`,
      { token: technician },
    );
    expect(res.statusCode).toBe(200);
    const body = res.json<{
      deviceId: string;
      from: string;
      to: string;
      bucketS: number;
      series: Record<string, Point[]>;
    }>();
    // 3 days and 10 minutes in at most 500 buckets of whole 5 minutes: 10 minutes.
    expect(body).toMatchObject({
      deviceId: device.id,
      from: new Date(T0).toISOString(),
      to: new Date(now).toISOString(),
      bucketS: 600,
    });
    const expected = expectedSeries(rows, T0, now, 600_000);
    expect(expected.rssiDbm).toHaveLength(3 * 144 + 1);
    expectSameSeries(body.series, expected);
    // The last bucket straddles the mark: 5 minutes of roll-up and 5 of raw samples, merged.
    expect(body.series.uptimeS?.at(-1)).toMatchObject({
      at: new Date(now - 10 * MIN).toISOString(),
      count: 20,
    });

    // One metric only.
    const one = await t!.request(
      'GET',
      `/api/v1/devices/${device.id}/telemetry?metric=onBattery&from=${new Date(T0 + DAY).toISOString()}&to=${new Date(T0 + 2 * DAY).toISOString()}`,
      { token: technician },
    );
    const oneBody = one.json<{ bucketS: number; series: Record<string, Point[]> }>();
    expect(oneBody.bucketS).toBe(300);
    expectSameSeries(oneBody.series, {
      onBattery: expectedSeries(rows, T0 + DAY, T0 + 2 * DAY, 300_000).onBattery!,
    });

    // The last hour: raw samples as they are.
    const recent = await t!.request(
      'GET',
      `/api/v1/devices/${device.id}/telemetry?from=${new Date(now - HOUR).toISOString()}`,
      { token: technician },
    );
    const recentBody = recent.json<{ bucketS: number | null; series: Record<string, Point[]> }>();
    expect(recentBody.bucketS).toBeNull();
    expectSameSeries(recentBody.series, expectedSeries(rows, now - HOUR, now, 1));
    expect(recentBody.series.rssiDbm).toHaveLength(120);
  });

  it('works in slices that let other work run in between', async () => {
    await start();
    const devices = Array.from({ length: 1_000 }, (_, i) => `dev_${String(i).padStart(4, '0')}`);
    insert(
      file(),
      devices.map((deviceId) => samples(deviceId, T0, T0 + 30_000)[0]!),
    );
    clock.advance(6 * MIN);

    // (The clock moved past the periodic job's time: it runs first and does the work; maintain() waits.)
    // A callback queued on every turn of the event loop sees the roll-up part done: it ran between slices.
    const seen: number[] = [];
    let done = false;
    const probe = () => {
      seen.push(count('telemetry_rollups'));
      if (!done) setImmediate(probe);
    };
    const order: string[] = [];
    const run = maintain().then((r) => {
      done = true;
      order.push('maintenance');
      return r;
    });
    setImmediate(probe);
    // An HTTP request made while it runs is answered before it ends.
    const res = await t!.request('GET', '/healthz');
    order.push(`http ${res.statusCode}`);
    await run;
    expect(count('telemetry_rollups')).toBe(1_000);

    expect(seen.some((n) => n > 0 && n < 1_000)).toBe(true);
    expect(order).toEqual(['http 200', 'maintenance']);
  });

  it('stops between two slices when its signal aborts, and the next run finishes the work', async () => {
    await start();
    // Samples 10 minutes back: due now, without moving the clock (and firing the periodic job).
    const devices = Array.from({ length: 1_000 }, (_, i) => `dev_${String(i).padStart(4, '0')}`);
    insert(
      file(),
      devices.map((deviceId) => samples(deviceId, T0 - 10 * MIN, T0 - 10 * MIN + 30_000)[0]!),
    );
    const controller = new AbortController();
    const run = t!.app.services.health.maintainTelemetry(controller.signal);
    setImmediate(() => controller.abort());
    const result = await run;
    expect(result.aborted).toBe(true);
    const partial = count('telemetry_rollups');
    expect(partial).toBeLessThan(1_000);
    expect(mark()).toBe(T0 - 10 * MIN); // where the first run started: the window was not finished

    expect(await maintain()).toMatchObject({ aborted: false, mark: T0 - 5 * MIN });
    expect(count('telemetry_rollups')).toBe(1_000);
  });
});
