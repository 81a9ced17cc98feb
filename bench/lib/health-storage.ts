/**
 * The storage phase of bench:health: how much database N devices reporting on a 30 s heartbeat cost per
 * device and per day once telemetry is rolled up and pruned, and whether that maintenance stalls the event
 * loop.
 *
 * Time is compressed with a ManualClock (tests/support/clock.ts) driving an in-process Loa (buildApp, real
 * SQLite file): every simulated second, 1/30 of the devices report telemetry, then the clock moves on and
 * the server's own periodic jobs fire as they would (the 1 s telemetry flush, the 5-minute roll-up and
 * prune, the hourly retention), each given turns of the event loop to run its slices. Telemetry enters
 * through HealthService.recordTelemetry, the call the device gateway makes for each MQTT telemetry message:
 * what is measured is storage, not the MQTT path (the other phases of bench:health measure that).
 *
 * Sizes are page_count × page_size after a WAL checkpoint (what the file holds, free pages included), and
 * per table from the dbstat virtual table.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { sqliteOf } from '../../src/db/index.js';
import { ManualClock } from '../../tests/support/clock.js';
import { round } from './stats.js';

const DAY_MS = 86_400_000;
const ADMIN_PASSWORD = 'bench-Mật-khẩu-lưu-trữ-1';
/** Simulated seconds per step of the clock (the telemetry flush runs once a step, as every second). */
const STEP_S = 5;
const STEP_MS = STEP_S * 1000;
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

export interface StorageOptions {
  devices: number;
  days: number;
  heartbeatS: number;
  /** Where the database goes (a temporary folder by default); removed at the end. */
  dir?: string;
  progress: (message: string) => void;
}

export interface LoopDelay {
  p99Ms: number;
  maxMs: number;
  ms: number;
}

export interface StorageResult {
  devices: number;
  simulatedDays: number;
  heartbeatS: number;
  telemetryRawHours: number;
  telemetryRetentionDays: number;
  /** Database growth per device per simulated day over the last day, raw telemetry already at its 48 h. */
  dbBytesPerDeviceDay: number;
  /** Raw telemetry's share: the raw table's bytes per device per day of samples it holds. */
  rawBytesPerDeviceDay: number;
  /** The roll-ups' bytes per device per day rolled up. */
  rollupBytesPerDeviceDay: number;
  /** Growth of every other table per device per day (device status, presence, …), over the last day. */
  otherBytesPerDeviceDay: number;
  /**
   * raw × TELEMETRY_RAW_HOURS/24 + roll-ups × TELEMETRY_RETENTION_DAYS + everything else × 90 days (the
   * longest retention of what else grows per device), for 10,000 devices, in GB (10^9 bytes).
   */
  steadyStateGbFor10kDevices: number;
  /** The file, and per table, at the end of each simulated day. */
  days: { day: number; fileBytes: number; freeBytes: number; tables: Record<string, number> }[];
  maintenanceLoopDelayP99Ms: number;
  maintenanceLoopDelayMaxMs: number;
  idleLoopDelayP99Ms: number;
  idleLoopDelayMaxMs: number;
  /** One roll-up + prune + retention run at the end, timed. */
  maintenanceRunMs: number;
  simulationMs: number;
}

function tableBytes(app: FastifyInstance): Record<string, number> {
  const sqlite = sqliteOf(app.db);
  const rows = sqlite
    .prepare(
      `SELECT COALESCE(m.tbl_name, s.name) AS tbl, SUM(s.pgsize) AS bytes
       FROM dbstat s LEFT JOIN sqlite_schema m ON m.name = s.name
       GROUP BY 1 ORDER BY 2 DESC`,
    )
    .all() as { tbl: string; bytes: number }[];
  return Object.fromEntries(rows.map((r) => [r.tbl, r.bytes]));
}

function fileBytes(app: FastifyInstance): { fileBytes: number; freeBytes: number } {
  const sqlite = sqliteOf(app.db);
  sqlite.pragma('wal_checkpoint(TRUNCATE)');
  const pageSize = sqlite.pragma('page_size', { simple: true }) as number;
  const pages = sqlite.pragma('page_count', { simple: true }) as number;
  const free = sqlite.pragma('freelist_count', { simple: true }) as number;
  return { fileBytes: pages * pageSize, freeBytes: free * pageSize };
}

async function measureLoopDelay(work: () => Promise<unknown>): Promise<LoopDelay> {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  const started = performance.now();
  await work();
  const ms = performance.now() - started;
  histogram.disable();
  return {
    p99Ms: round(histogram.percentile(99) / 1e6, 2),
    maxMs: round(histogram.max / 1e6, 2),
    ms: round(ms, 1),
  };
}

export async function measureStorage(options: StorageOptions): Promise<StorageResult> {
  const { devices: N, days, heartbeatS, progress } = options;
  const dir = options.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'loa-bench-storage-'));
  const config = loadConfig({
    DATA_DIR: dir,
    PORT: '0',
    MQTT_PORT: '0',
    HOST: '127.0.0.1',
    ADMIN_PASSWORD,
    LOG_LEVEL: 'warn',
    HEARTBEAT_S: String(heartbeatS),
    BACKUP_EVERY_MIN: '0',
  });
  const clock = new ManualClock('2026-06-01T00:00:00.000Z');
  const app = await buildApp({ config, clock });
  try {
    await app.ready();
    const admin = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { username: 'admin', password: ADMIN_PASSWORD },
    });
    const token = admin.json<{ token: string }>().token;
    const headers = { authorization: `Bearer ${token}` };
    const area = await app.inject({
      method: 'POST',
      url: '/api/v1/areas',
      headers,
      payload: { name: 'Xã Hải Phú', level: 'commune' },
    });
    const areaId = area.json<{ id: string }>().id;
    progress(`storage: registering ${N} devices`);
    const ids: string[] = [];
    for (let i = 0; i < N; i++) {
      const res = await app.inject({
        method: 'POST',
        url: '/api/v1/devices',
        headers,
        payload: { name: `Cụm loa thôn Đông ${i + 1}`, kind: 'cluster', areaId },
      });
      if (res.statusCode !== 201) throw new Error(`device ${i}: ${res.statusCode} ${res.body}`);
      ids.push(res.json<{ id: string }>().id);
    }
    const health = app.services.health;
    for (const id of ids) health.deviceConnected(id, 'connect');

    // Each device reports once every heartbeatS, at its own phase within it: STEP_S apart, so that a
    // simulated day is 17,280 steps of the clock rather than 86,400 (a step is mostly the turns it yields).
    const slots = Math.max(1, Math.round(heartbeatS / STEP_S));
    const phases: string[][] = Array.from({ length: slots }, () => []);
    ids.forEach((id, i) => phases[i % slots]!.push(id));
    const uptimeBase = clock.now().getTime();
    const telemetryOf = (i: number) => ({
      at: clock.now().toISOString(),
      uptimeS: Math.floor((clock.now().getTime() - uptimeBase) / 1000),
      rssiDbm: -70 - (i % 20),
      supplyVoltage: 13.2 + (i % 7) / 10,
      onBattery: false,
      ampTempC: 40 + (i % 15),
      speakerFault: false,
    });

    const ingestStep = (s: number) => {
      let i = 0;
      for (const id of phases[s % slots]!) health.recordTelemetry(id, telemetryOf(i++));
    };

    const result: StorageResult['days'] = [];
    const started = performance.now();
    const base = fileBytes(app);
    progress(
      `storage: ${N} devices × ${days} simulated days at a ${heartbeatS} s heartbeat (` +
        `${Math.round((N * DAY_MS) / 1000 / heartbeatS)} messages a day), database ${round(base.fileBytes / 1e6, 1)} MB empty`,
    );
    for (let day = 1; day <= days; day++) {
      const dayStarted = performance.now();
      for (let s = 0; s < DAY_MS / STEP_MS; s++) {
        ingestStep(s);
        clock.advance(STEP_MS);
        // Turns for the jobs the tick started (the telemetry flush and, now and then, maintenance slices).
        await nextTurn();
        await nextTurn();
      }
      // The day's last roll-up and prune, and retention, complete before the file is measured.
      await health.maintainTelemetry();
      await app.retention.run();
      const size = fileBytes(app);
      result.push({ day, ...size, tables: tableBytes(app) });
      progress(
        `storage: day ${day}: file ${round(size.fileBytes / 1e6, 1)} MB (${round(size.freeBytes / 1e6, 1)} MB free pages), ` +
          `raw ${round((result.at(-1)!.tables.telemetry_samples ?? 0) / 1e6, 1)} MB, ` +
          `roll-ups ${round((result.at(-1)!.tables.telemetry_rollups ?? 0) / 1e6, 1)} MB, ` +
          `${Math.round(performance.now() - dayStarted)} ms`,
      );
    }
    const simulationMs = Math.round(performance.now() - started);

    // Event-loop delay: idle, then during the roll-up + prune run the server starts every 5 minutes (its
    // job fires at the tick that ends the next 5 minutes of telemetry), followed by a retention run.
    const idle = await measureLoopDelay(() => new Promise((resolve) => setTimeout(resolve, 1_000)));
    const steps = 300_000 / STEP_MS;
    for (let s = 0; s < steps - 1; s++) {
      ingestStep(s);
      clock.advance(STEP_MS);
      await nextTurn();
      await nextTurn();
    }
    ingestStep(steps - 1);
    const maintenance = await measureLoopDelay(async () => {
      clock.advance(STEP_MS);
      await health.maintainTelemetry(); // waits for the job's run, then finds nothing left to do
      await app.retention.run();
    });

    const last = result.at(-1)!;
    const prev = result.at(-2) ?? { fileBytes: base.fileBytes, tables: {} };
    const rawHours = config.health.telemetryRawMs / 3_600_000;
    const rollupDays = config.health.telemetryRetentionMs / DAY_MS;
    const rawDaysHeld = Math.min(days, rawHours / 24);
    const rawBytesPerDeviceDay = (last.tables.telemetry_samples ?? 0) / N / rawDaysHeld;
    // Roll-ups of every day so far (they are kept 30 days: none pruned yet at a few simulated days).
    const rollupBytesPerDeviceDay = (last.tables.telemetry_rollups ?? 0) / N / days;
    const dbBytesPerDeviceDay = (last.fileBytes - prev.fileBytes) / N;
    // What else grew over the last day: every table but the two telemetry ones, whose shares are counted
    // above (the raw table, already at its 48 h, still moves by a page here and there).
    const otherBytes = (tables: Record<string, number>) =>
      Object.entries(tables)
        .filter(([name]) => name !== 'telemetry_samples' && name !== 'telemetry_rollups')
        .reduce((sum, [, bytes]) => sum + bytes, 0);
    const otherBytesPerDeviceDay = Math.max(0, (otherBytes(last.tables) - otherBytes(prev.tables)) / N);
    const steadyBytesPerDevice =
      rawBytesPerDeviceDay * (rawHours / 24) +
      rollupBytesPerDeviceDay * rollupDays +
      otherBytesPerDeviceDay * 90;
    return {
      devices: N,
      simulatedDays: days,
      heartbeatS,
      telemetryRawHours: rawHours,
      telemetryRetentionDays: rollupDays,
      dbBytesPerDeviceDay: Math.round(dbBytesPerDeviceDay),
      rawBytesPerDeviceDay: Math.round(rawBytesPerDeviceDay),
      rollupBytesPerDeviceDay: Math.round(rollupBytesPerDeviceDay),
      otherBytesPerDeviceDay: Math.round(otherBytesPerDeviceDay),
      steadyStateGbFor10kDevices: round((steadyBytesPerDevice * 10_000 + base.fileBytes) / 1e9, 2),
      days: result,
      maintenanceLoopDelayP99Ms: maintenance.p99Ms,
      maintenanceLoopDelayMaxMs: maintenance.maxMs,
      idleLoopDelayP99Ms: idle.p99Ms,
      idleLoopDelayMaxMs: idle.maxMs,
      maintenanceRunMs: maintenance.ms,
      simulationMs,
    };
  } finally {
    await app.close();
    if (options.dir === undefined) fs.rmSync(dir, { recursive: true, force: true });
  }
}
