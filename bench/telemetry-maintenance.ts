/**
 * Telemetry maintenance benchmark: how long rolling up and pruning a large raw-telemetry backlog takes, and
 * that the server keeps answering meanwhile (the work runs in slices that yield to the event loop).
 *
 *   npm run bench:telemetry -- [--devices 2000] [--hours 3]
 *
 * Fills a fresh database with `devices` × `hours` of raw telemetry (one sample every 30 s, written directly
 * into the file), starts Loa on it with TELEMETRY_RAW_HOURS=1 and a clock set so that the whole backlog is
 * due (every bucket complete, every raw sample past the raw window), then runs one maintenance pass: the
 * roll-up of every bucket, then the deletion of every raw sample. Meanwhile it sends HTTP requests to the
 * server (GET /healthz over a real socket, one after the other) and records the event loop's delay, which is
 * what MQTT would wait too: the same figures without maintenance running are the reference.
 *
 * Loa runs in this process, so a request's latency includes the client's own share of the event loop; a
 * stall of the loop shows in both figures alike. Progress goes to stderr; stdout gets one JSON object.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { systemClock, type Clock } from '../src/lib/clock.js';
import { parseBenchArgs } from './lib/cli.js';
import { progress } from './lib/processes.js';
import { round, summarize } from './lib/stats.js';

const USAGE = `Usage: npm run bench:telemetry -- [options]

Rolls up and prunes a raw-telemetry backlog in one maintenance pass while sending HTTP requests to the
server, and prints (JSON) how long it took and the request latency and event-loop delay during it.

Options:
  --devices <n>   devices with telemetry (default 2000)
  --hours <h>     hours of raw telemetry per device, one sample every 30 s (default 3)
  -h, --help      show this help`;

const HEARTBEAT_MS = 30_000;
const BASELINE_MS = 2_000;

async function main(): Promise<void> {
  const { values, number } = parseBenchArgs(
    { devices: { type: 'string', default: '2000' }, hours: { type: 'string', default: '3' } },
    USAGE,
  );
  const devices = number('devices', values.devices, 1);
  const hours = number('hours', values.hours, 1);

  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-bench-telemetry-'));
  try {
    const env = {
      DATA_DIR: dataDir,
      PORT: '0',
      MQTT_PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      ADMIN_PASSWORD: 'bench-Mật-khẩu-1',
      TELEMETRY_RAW_HOURS: '1',
    };
    const start = Date.parse('2026-06-01T00:00:00.000Z');
    const end = start + hours * 3_600_000;
    // Past the raw window of the last sample: everything is due at once.
    const offset = end + 3_600_000 + 10 * 60_000 - Date.now();
    const clock: Clock = { ...systemClock, now: () => new Date(Date.now() + offset) };

    // Creates the schema, then the backlog goes straight into the file.
    const first = await buildApp({ config: loadConfig(env), clock });
    await first.ready();
    await first.close();
    const rows = fill(loadConfig(env).databaseFile, devices, start, end);

    const app = await buildApp({ config: loadConfig(env), clock });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    if (!address || typeof address === 'string') throw new Error('no port');
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const get = () =>
      new Promise<number>((resolve, reject) => {
        const t0 = performance.now();
        http
          .get({ host: '127.0.0.1', port: address.port, path: '/healthz', agent }, (res) => {
            res.resume();
            res.on('end', () => resolve(performance.now() - t0));
          })
          .on('error', reject);
      });
    /** Requests one after the other until `until` resolves; returns their latencies and the loop's delay. */
    const probe = async (until: Promise<unknown>) => {
      const latencies: number[] = [];
      const loop = monitorEventLoopDelay({ resolution: 1 });
      loop.enable();
      let finished = false;
      void until.finally(() => (finished = true));
      while (!finished) latencies.push(await get());
      loop.disable();
      return {
        requests: summarize(latencies),
        eventLoopDelayP99Ms: round(loop.percentile(99) / 1e6, 1),
        eventLoopDelayMaxMs: round(loop.max / 1e6, 1),
      };
    };

    try {
      progress('reference: requests without maintenance');
      const baseline = await probe(new Promise((resolve) => setTimeout(resolve, BASELINE_MS)));
      progress(`rolling up and pruning ${rows} raw samples of ${devices} devices`);
      const t0 = performance.now();
      const run = app.services.health.maintainTelemetry();
      const during = await probe(run);
      const result = await run;
      const ms = performance.now() - t0;
      const db = new Database(loadConfig(env).databaseFile, { readonly: true });
      const left = (db.prepare('SELECT count(*) AS n FROM telemetry_samples').get() as { n: number }).n;
      const rollups = (db.prepare('SELECT count(*) AS n FROM telemetry_rollups').get() as { n: number }).n;
      db.close();
      const report = {
        devices,
        hours,
        rawSamples: rows,
        bucketsRolledUp: result.bucketsRolledUp,
        rollupRows: rollups,
        rawDeleted: result.rawDeleted,
        rawLeft: left,
        maintenanceMs: Math.round(ms),
        rawSamplesPerS: Math.round(rows / (ms / 1000)),
        baseline,
        during,
      };
      console.log(JSON.stringify(report));
      progress(
        `${rows} samples rolled up into ${rollups} buckets and deleted in ${Math.round(ms)} ms; ` +
          `${during.requests.count} requests answered meanwhile, p99 ${during.requests.p99Ms} ms ` +
          `(without: ${baseline.requests.p99Ms} ms), event-loop delay max ${during.eventLoopDelayMaxMs} ms`,
      );
    } finally {
      agent.destroy();
      await app.close();
    }
  } finally {
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Writes `devices` × the span of raw samples, in time order per device, as the server would have. */
function fill(file: string, devices: number, start: number, end: number): number {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  const insert = db.prepare(
    `INSERT INTO telemetry_samples (device_id, at, device_at, uptime_s, rssi_dbm, supply_voltage, on_battery, amp_temp_c, speaker_fault)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  let rows = 0;
  for (let d = 0; d < devices; d++) {
    const id = `dev_${String(d).padStart(6, '0')}`;
    db.transaction(() => {
      for (let at = start + (d % 30) * 1_000, k = 0; at < end; at += HEARTBEAT_MS, k++) {
        insert.run(id, at, at, k * 30, -70 - (k % 20), 12.6 + (k % 7) / 100, 0, 35 + (k % 9), 0);
        rows++;
      }
    })();
    if (d % 1000 === 999) progress(`${d + 1} devices written`);
  }
  db.close();
  return rows;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
