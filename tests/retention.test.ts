/**
 * Retention (src/modules/system/retention.ts) on a real migrated SQLite file: old rows go, young ones,
 * open alerts, the `commands` rows and emergencies' deliveries stay; the periods come from the settings; a
 * run works in slices and ends between two of them at shutdown; each delete walks an index; the WAL limit
 * is set at open. Also the periodic jobs it runs on (src/lib/clock.ts): async runs never overlap, a
 * rejection is logged, stop() waits for the run in flight.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { JOURNAL_SIZE_LIMIT_BYTES, openDatabase, sqliteOf } from '../src/db/index.js';
import { PeriodicJobs } from '../src/lib/clock.js';
import {
  RETENTION_FIRST_AFTER_MS,
  RETENTION_SQL,
  Retention,
  type RetentionOptions,
} from '../src/modules/system/retention.js';
import { createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { waitFor } from './support/wait.js';

const DAY = 86_400_000;
const METRICS_TOKEN = 'metrics-token-for-retention-1';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function freshDb(): Promise<Database.Database> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-retention-'));
  const { sqlite } = await openDatabase(path.join(dir, 'loa.sqlite'));
  cleanups.push(() => {
    sqlite.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return sqlite;
}

/** Seeds rows by hand, as the modules would have written them over the months. */
function seeder(sqlite: Database.Database) {
  let n = 0;
  const insertCommand = sqlite.prepare(
    `INSERT INTO commands (id, type, priority, params, created_at, expires_at, target_count, emergency_id)
     VALUES (@id, 'play', @priority, @params, @createdAt, @expiresAt, @targets, @emergencyId)`,
  );
  const insertDelivery = sqlite.prepare(
    `INSERT INTO command_deliveries (command_id, device_id, status, sent_at, expires_at, updated_at)
     VALUES (?, ?, 'done', ?, ?, ?)`,
  );
  return {
    command(at: number, devices: number, options: { expiresInMs?: number; emergencyId?: string } = {}) {
      const id = `cmd-${++n}`;
      const expiresAt = at + (options.expiresInMs ?? 600_000);
      insertCommand.run({
        id,
        priority: options.emergencyId ? 'emergency' : 'normal',
        params: JSON.stringify({ title: 'Thông báo lịch tiêm phòng dại – Thôn Đông' }),
        createdAt: at,
        expiresAt,
        targets: devices,
        emergencyId: options.emergencyId ?? null,
      });
      for (let d = 0; d < devices; d++) insertDelivery.run(id, `dev-${d}`, at, expiresAt, at + 1_000);
      return id;
    },
    presence(deviceId: string, at: number) {
      sqlite
        .prepare(
          `INSERT INTO presence_transitions (device_id, at, online, cause) VALUES (?, ?, 1, 'connect')`,
        )
        .run(deviceId, at);
    },
    alert(openedAt: number, resolvedAt: number | null) {
      sqlite
        .prepare(
          `INSERT INTO alerts (device_id, kind, state, reasons, opened_at, resolved_at)
           VALUES ('dev-0', 'offline', ?, '["Mất kết nối – Thôn Đông"]', ?, ?)`,
        )
        .run(resolvedAt === null ? 'open' : 'resolved', openedAt, resolvedAt);
    },
    audit(at: number) {
      sqlite
        .prepare(
          `INSERT INTO audit_log (at, action, target_type, details) VALUES (?, 'command.send', 'command', ?)`,
        )
        .run(at, JSON.stringify({ title: 'Thông báo lịch tiêm phòng dại – Thôn Đông' }));
    },
  };
}

const count = (sqlite: Database.Database, sql: string) =>
  (sqlite.prepare(`SELECT COUNT(*) AS n FROM ${sql}`).get() as { n: number }).n;

function retention(sqlite: Database.Database, clock: ManualClock, overrides: Partial<RetentionOptions> = {}) {
  const lines: { details: object; message: string }[] = [];
  const deletedByTable: Record<string, number> = {};
  const r = new Retention({
    sqlite,
    clock,
    periods: loadConfig({ ADMIN_PASSWORD: 'x'.repeat(12) }).retention,
    log: { info: (details, message) => lines.push({ details, message }) },
    metrics: {
      retentionRowsDeleted: (table, rows) => {
        deletedByTable[table] = (deletedByTable[table] ?? 0) + rows;
      },
    },
    signal: new AbortController().signal,
    ...overrides,
  });
  return { r, lines, deletedByTable };
}

describe('retention', () => {
  it('deletes only what outlived its period and keeps open alerts, commands and emergencies', async () => {
    const sqlite = await freshDb();
    const clock = new ManualClock('2027-06-01T01:00:00.000Z');
    const now = clock.now().getTime();
    const seed = seeder(sqlite);

    const oldCommand = seed.command(now - 91 * DAY, 3);
    const youngCommand = seed.command(now - 89 * DAY, 2);
    const oldEmergency = seed.command(now - 200 * DAY, 4, { emergencyId: 'emg-1' });
    seed.presence('dev-0', now - 91 * DAY);
    seed.presence('dev-0', now - 89 * DAY);
    seed.presence('dev-1', now - 120 * DAY);
    seed.presence('dev-2', now - DAY);
    seed.alert(now - 400 * DAY, now - 366 * DAY); // resolved long ago: goes
    seed.alert(now - 400 * DAY, now - 300 * DAY); // resolved within the year: stays
    seed.alert(now - 500 * DAY, null); // open for ever: never goes
    seed.audit(now - 731 * DAY);
    seed.audit(now - 729 * DAY);

    const { r, lines, deletedByTable } = retention(sqlite, clock);
    const run = await r.run();

    expect(run.complete).toBe(true);
    expect(run.deleted).toEqual({ command_deliveries: 3, presence_transitions: 2, alerts: 1, audit_log: 1 });
    expect(deletedByTable).toEqual(run.deleted);
    expect(run.optimized).toBe(true);
    expect(lines).toHaveLength(1);
    expect(lines[0]!.message).toBe('retention: pruned old rows');
    expect(lines[0]!.details).toMatchObject({ deleted: run.deleted });

    // The commands themselves stay, with their target count; only the per-device rows of the old one go.
    expect(count(sqlite, 'commands')).toBe(3);
    const deliveries = sqlite
      .prepare(`SELECT command_id AS c, COUNT(*) AS n FROM command_deliveries GROUP BY 1 ORDER BY 1`)
      .all();
    expect(deliveries).toEqual(
      [
        { c: youngCommand, n: 2 },
        { c: oldEmergency, n: 4 },
      ].sort((a, b) => a.c.localeCompare(b.c)),
    );
    expect(
      sqlite.prepare(`SELECT COUNT(*) AS n FROM command_deliveries WHERE command_id = ?`).get(oldCommand),
    ).toEqual({ n: 0 });
    expect(sqlite.prepare(`SELECT device_id AS d, at FROM presence_transitions ORDER BY at`).all()).toEqual([
      { d: 'dev-0', at: now - 89 * DAY },
      { d: 'dev-2', at: now - DAY },
    ]);
    expect(sqlite.prepare(`SELECT state, opened_at AS o FROM alerts ORDER BY opened_at`).all()).toEqual([
      { state: 'open', o: now - 500 * DAY },
      { state: 'resolved', o: now - 400 * DAY },
    ]);
    expect(sqlite.prepare(`SELECT at, details FROM audit_log`).all()).toEqual([
      {
        at: now - 729 * DAY,
        details: JSON.stringify({ title: 'Thông báo lịch tiêm phòng dại – Thôn Đông' }),
      },
    ]);

    // Nothing more to do an hour later: no log line, and PRAGMA optimize only once a day.
    clock.advance(3_600_000);
    const again = await r.run();
    expect(again.deleted).toEqual({
      command_deliveries: 0,
      presence_transitions: 0,
      alerts: 0,
      audit_log: 0,
    });
    expect(lines).toHaveLength(1);
    expect(again.optimized).toBe(false);
    // A day later it runs again.
    clock.advance(DAY);
    expect((await r.run()).optimized).toBe(true);
  });

  it('refreshes the planner statistics daily even when it had nothing to delete', async () => {
    const sqlite = await freshDb();
    const clock = new ManualClock('2026-06-01T00:00:00.000Z');
    const { r, lines } = retention(sqlite, clock);
    const first = await r.run();
    expect(Object.values(first.deleted).every((n) => n === 0)).toBe(true);
    expect(first.optimized).toBe(true);
    expect(lines).toHaveLength(0);
    clock.advance(3_600_000);
    expect((await r.run()).optimized).toBe(false);
    clock.advance(86_400_000);
    expect((await r.run()).optimized).toBe(true);
  });

  it('honours the retention settings', async () => {
    const sqlite = await freshDb();
    const clock = new ManualClock('2027-06-01T01:00:00.000Z');
    const now = clock.now().getTime();
    const seed = seeder(sqlite);
    seed.command(now - 8 * DAY, 2);
    const kept = seed.command(now - 6 * DAY, 1);
    seed.presence('dev-0', now - 3 * DAY);
    seed.presence('dev-0', now - 1 * DAY);
    seed.alert(now - 40 * DAY, now - 31 * DAY);
    seed.alert(now - 40 * DAY, now - 29 * DAY);
    seed.audit(now - 61 * DAY);
    seed.audit(now - 59 * DAY);

    const config = loadConfig({
      ADMIN_PASSWORD: 'x'.repeat(12),
      COMMAND_RETENTION_DAYS: '7',
      PRESENCE_RETENTION_DAYS: '2',
      ALERT_RETENTION_DAYS: '30',
      AUDIT_RETENTION_DAYS: '60',
    });
    const { r } = retention(sqlite, clock, { periods: config.retention });
    expect((await r.run()).deleted).toEqual({
      command_deliveries: 2,
      presence_transitions: 1,
      alerts: 1,
      audit_log: 1,
    });
    expect(sqlite.prepare(`SELECT command_id AS c FROM command_deliveries`).all()).toEqual([{ c: kept }]);
  });

  it('keeps the deliveries of a command still deliverable at the cutoff, and prunes them once it is not', async () => {
    const sqlite = await freshDb();
    const clock = new ManualClock('2027-06-01T01:00:00.000Z');
    const now = clock.now().getTime();
    const seed = seeder(sqlite);
    const periods = { ...loadConfig({ ADMIN_PASSWORD: 'x'.repeat(12) }).retention, commandDeliveriesMs: DAY };
    // Created two days ago with a week to live: its deliveries are still being acted on.
    const longLived = seed.command(now - 2 * DAY, 2, { expiresInMs: 7 * DAY });
    seed.command(now - 3 * DAY, 1);
    const { r } = retention(sqlite, clock, { periods });

    expect((await r.run()).deleted.command_deliveries).toBe(1);
    expect(sqlite.prepare(`SELECT DISTINCT command_id AS c FROM command_deliveries`).all()).toEqual([
      { c: longLived },
    ]);
    // Later runs start at the mark left by the previous one: it must not have moved past the live command.
    seed.command(now - 1.5 * DAY, 1);
    clock.advance(6 * DAY);
    expect((await r.run()).deleted.command_deliveries).toBe(3);
    expect(count(sqlite, 'command_deliveries')).toBe(0);
    expect(count(sqlite, 'commands')).toBe(3);
  });

  it('works in slices and stops between two slices when the server closes', async () => {
    const sqlite = await freshDb();
    const clock = new ManualClock('2027-06-01T01:00:00.000Z');
    const now = clock.now().getTime();
    const seed = seeder(sqlite);
    for (let i = 0; i < 10; i++) seed.command(now - (200 + i) * DAY, 5); // 50 deliveries
    for (let d = 0; d < 4; d++) for (let i = 0; i < 7; i++) seed.presence(`dev-${d}`, now - (100 + i) * DAY);
    for (let i = 0; i < 12; i++) seed.audit(now - (800 + i) * DAY);

    // A full run in slices of 4 rows: everything old goes, in many transactions.
    const slices: number[] = [];
    const full = retention(sqlite, clock, {
      sliceRows: 4,
      metrics: { retentionRowsDeleted: (_table, rows) => slices.push(rows) },
    });
    const run = await full.r.run();
    expect(run.deleted).toEqual({
      command_deliveries: 50,
      presence_transitions: 28,
      alerts: 0,
      audit_log: 12,
    });
    expect(Math.max(...slices)).toBeLessThanOrEqual(4);
    expect(slices.length).toBeGreaterThanOrEqual(Math.ceil(90 / 4));

    // Shutdown aborts the signal while a slice is being counted: the run ends before the next slice.
    for (let i = 0; i < 12; i++) seed.audit(now - (900 + i) * DAY);
    const controller = new AbortController();
    let seen = 0;
    const stopping = retention(sqlite, clock, {
      sliceRows: 4,
      signal: controller.signal,
      metrics: {
        retentionRowsDeleted: (_table, rows) => {
          seen += rows;
          if (seen >= 8) controller.abort();
        },
      },
    });
    const stopped = await stopping.r.run();
    expect(stopped.complete).toBe(false);
    expect(stopped.optimized).toBe(false);
    expect(stopped.deleted.audit_log).toBe(8);
    expect(count(sqlite, 'audit_log')).toBe(4);
    // The next run carries on where it stopped.
    expect((await full.r.run()).deleted.audit_log).toBe(4);
  });

  it('walks an index for every delete, never the whole table', async () => {
    const sqlite = await freshDb();
    for (const [name, sql] of Object.entries(RETENTION_SQL)) {
      const texts: Record<string, string> = { rowids: '[]', job: 'j', after: '', deviceId: 'dev-0' };
      const params: Record<string, string | number> = Object.fromEntries(
        [...sql.matchAll(/@(\w+)/g)].map(([, p]) => [p!, texts[p!] ?? 0]),
      );
      const plan = sqlite
        .prepare(`EXPLAIN QUERY PLAN ${sql}`)
        .all(params)
        .map((row) => (row as { detail: string }).detail);
      // "SCAN t" (with or without USING INDEX) reads a whole table or index; a bounded walk is "SEARCH".
      // json_each is the list of rowids passed in. A temporary B-tree would sort the whole range each slice.
      const scans = plan.filter(
        (d) => (/^SCAN /.test(d) && !/^SCAN json_each/.test(d)) || d.includes('TEMP B-TREE'),
      );
      expect(scans, `${name}: ${plan.join(' | ')}`).toEqual([]);
    }
  });

  it('limits the size the WAL file keeps after a checkpoint', async () => {
    const sqlite = await freshDb();
    expect(sqlite.pragma('journal_size_limit', { simple: true })).toBe(JOURNAL_SIZE_LIMIT_BYTES);
    expect(sqlite.pragma('wal_autocheckpoint', { simple: true })).toBe(1000);
  });

  it('runs shortly after start and hourly in the server, and counts what it deleted', async () => {
    const clock = new ManualClock('2027-06-01T01:00:00.000Z');
    const t: TestApp = await createTestApp({
      clock,
      env: { METRICS_TOKEN, AUDIT_RETENTION_DAYS: '30' },
    });
    cleanups.push(() => t.close());
    const sqlite = sqliteOf(t.app.db);
    const seed = seeder(sqlite);
    const now = clock.now().getTime();
    seed.audit(now - 31 * DAY);
    seed.audit(now - 32 * DAY);
    const audit = () => count(sqlite, 'audit_log WHERE at < ' + String(now - 30 * DAY));
    expect(audit()).toBe(2);

    clock.advance(RETENTION_FIRST_AFTER_MS);
    await waitFor(() => audit() === 0, 'the first retention run');
    seed.audit(now - 40 * DAY);
    clock.advance(3_600_000);
    await waitFor(() => audit() === 0, 'the hourly retention run');

    const res = await t.app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: `Bearer ${METRICS_TOKEN}` },
    });
    expect(res.body).toContain('loa_retention_rows_deleted_total{table="audit_log"} 3');
    expect(res.body).toContain('loa_retention_rows_deleted_total{table="alerts"} 0');
  });
});

describe('periodic jobs', () => {
  const log = () => {
    const errors: { obj: object; msg: string }[] = [];
    return { errors, error: (obj: object, msg: string) => errors.push({ obj, msg }) };
  };

  it('never overlaps an async run with its previous one, logs a rejection and runs again next time', async () => {
    const clock = new ManualClock();
    const l = log();
    const jobs = new PeriodicJobs(clock, l);
    let runs = 0;
    let release: () => void = () => {};
    jobs.every('slow', 1_000, () => {
      runs += 1;
      return new Promise<void>((resolve) => (release = resolve));
    });
    let failures = 0;
    jobs.every('failing', 1_000, () => {
      failures += 1;
      return Promise.reject(new Error('đĩa đầy'));
    });

    const settle = () => new Promise((resolve) => setImmediate(resolve));
    for (let i = 0; i < 3; i++) {
      clock.advance(1_000);
      await settle();
    }
    expect(runs).toBe(1); // the two ticks while it ran were skipped
    release();
    await settle();
    clock.advance(1_000);
    await settle();
    expect(runs).toBe(2);
    expect(failures).toBe(4);
    expect(l.errors.filter((e) => e.msg === 'periodic job failed')).toHaveLength(4);
    expect(l.errors[0]!.obj).toMatchObject({ job: 'failing' });
    release();
    await jobs.stop();
  });

  it('runs a first time after firstAfterMs, and stop() aborts the signal and waits for the run in flight', async () => {
    const clock = new ManualClock();
    const jobs = new PeriodicJobs(clock, log());
    const slicesDone: number[] = [];
    let finished = false;
    jobs.every(
      'sliced',
      3_600_000,
      async () => {
        for (let slice = 1; slice <= 1_000; slice++) {
          if (jobs.signal.aborted) break;
          slicesDone.push(slice);
          await new Promise((resolve) => setImmediate(resolve));
        }
        finished = true;
      },
      { firstAfterMs: 60_000 },
    );
    clock.advance(59_999);
    expect(slicesDone).toEqual([]);
    clock.advance(1);
    expect(slicesDone).toEqual([1]);
    await new Promise((resolve) => setImmediate(resolve));
    await jobs.stop();
    expect(finished).toBe(true);
    expect(jobs.signal.aborted).toBe(true);
    expect(slicesDone.length).toBeLessThan(1_000);
    const ran = slicesDone.length;
    clock.advance(10 * 3_600_000);
    expect(slicesDone).toHaveLength(ran); // no timers left
  });
});
