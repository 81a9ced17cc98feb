/**
 * Scheduled online backups (src/modules/system/backups.ts): taken as the injected clock moves, pruned to
 * BACKUP_KEEP, each a consistent SQLite file, restorable (a server started on one has the data of that moment),
 * and a failure is logged and counted without taking the server down.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { AppOptions } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { backupFileName } from '../src/modules/system/backups.js';
import { createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';

const HOUR = 3_600_000;
const METRICS_TOKEN = 'metrics-token-for-backups-1';

const open: TestApp[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const t of open.splice(0)) await t.close();
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

async function start(clock: ManualClock, env: Record<string, string> = {}, logger?: AppOptions['logger']) {
  const t = await createTestApp({
    clock,
    env: { BACKUP_EVERY_MIN: '60', BACKUP_KEEP: '2', METRICS_TOKEN, ...env },
    ...(logger ? { logger } : {}),
  });
  open.push(t);
  return t;
}

const backupDir = (t: TestApp) => path.join(t.dataDir, 'backups');

async function tick(t: TestApp, clock: ManualClock, ms: number) {
  clock.advance(ms);
  await t.app.backups.idle();
}

async function readyz(t: TestApp) {
  const res = await t.request('GET', '/readyz');
  expect(res.statusCode).toBe(200);
  return res.json<{
    status: string;
    backup: { lastSuccessAt: string | null; ageSeconds: number | null; lastError: string | null };
  }>();
}

async function metric(t: TestApp, name: string): Promise<number> {
  const res = await t.app.inject({
    method: 'GET',
    url: '/metrics',
    headers: { authorization: `Bearer ${METRICS_TOKEN}` },
  });
  const line = res.body.split('\n').find((l) => l.startsWith(`${name} `));
  expect(line, name).toBeDefined();
  return Number(line!.split(' ')[1]);
}

async function areaNames(t: TestApp): Promise<string[]> {
  const res = await t.request('GET', '/api/v1/areas', { token: t.adminToken });
  expect(res.statusCode).toBe(200);
  return res.json<{ items: { name: string }[] }>().items.map((a) => a.name);
}

describe('scheduled backups', () => {
  it('reads BACKUP_EVERY_MIN (default a day, 0 = off) and BACKUP_KEEP (default 7)', () => {
    const defaults = loadConfig({ DATA_DIR: '/srv/loa' });
    expect(defaults.backups).toEqual({ dir: path.resolve('/srv/loa/backups'), everyMs: 86_400_000, keep: 7 });
    expect(loadConfig({ BACKUP_EVERY_MIN: '0', BACKUP_KEEP: '30' }).backups).toMatchObject({
      everyMs: 0,
      keep: 30,
    });
    expect(() => loadConfig({ BACKUP_KEEP: '0' })).toThrow(/BACKUP_KEEP/);
    expect(() => loadConfig({ BACKUP_EVERY_MIN: 'hourly' })).toThrow(/BACKUP_EVERY_MIN/);
  });

  it('names backups by UTC time', () => {
    expect(backupFileName(new Date('2026-06-01T01:02:03.456Z'))).toBe('loa-20260601-010203.sqlite');
  });

  it('takes a consistent backup when the clock reaches the interval, shown in /readyz and /metrics', async () => {
    const clock = new ManualClock('2026-06-01T01:00:00.000Z');
    const t = await start(clock);
    await t.createArea({ name: 'Thôn Đông – Xã Hải Phú', level: 'hamlet' });

    expect((await readyz(t)).backup).toEqual({ lastSuccessAt: null, ageSeconds: null, lastError: null });
    await tick(t, clock, HOUR - 1);
    expect(fs.existsSync(backupDir(t))).toBe(false);

    await tick(t, clock, 1);
    expect(fs.readdirSync(backupDir(t))).toEqual(['loa-20260601-020000.sqlite']);
    const file = path.join(backupDir(t), 'loa-20260601-020000.sqlite');
    const copy = new Database(file, { readonly: true });
    try {
      expect(copy.pragma('integrity_check', { simple: true })).toBe('ok');
      // One self-contained file: no WAL to carry along.
      expect(copy.pragma('journal_mode', { simple: true })).toBe('delete');
      expect(copy.prepare('SELECT name FROM areas').pluck().all()).toContain('Thôn Đông – Xã Hải Phú');
    } finally {
      copy.close();
    }

    clock.advance(10 * 60_000);
    expect((await readyz(t)).backup).toEqual({
      lastSuccessAt: '2026-06-01T02:00:00.000Z',
      ageSeconds: 600,
      lastError: null,
    });
    expect(await metric(t, 'loa_backup_last_success_timestamp_seconds')).toBe(
      Date.parse('2026-06-01T02:00:00.000Z') / 1000,
    );
    expect(await metric(t, 'loa_backup_failures_total')).toBe(0);
  });

  it('keeps the newest BACKUP_KEEP scheduled backups and never touches other files in the folder', async () => {
    const clock = new ManualClock('2026-06-01T01:00:00.000Z');
    const t = await start(clock);
    fs.mkdirSync(backupDir(t), { recursive: true });
    const others = ['loa-20260501T000000Z-before-0003_accounts.sqlite', 'trước-khi-nâng-cấp.sqlite'];
    for (const name of others) fs.writeFileSync(path.join(backupDir(t), name), 'kept');

    for (let i = 0; i < 4; i++) await tick(t, clock, HOUR);

    expect(fs.readdirSync(backupDir(t)).sort()).toEqual(
      [...others, 'loa-20260601-040000.sqlite', 'loa-20260601-050000.sqlite'].sort(),
    );
  });

  it('deletes unfinished copies left by a process killed mid-backup, never one still being written', async () => {
    const clock = new ManualClock('2026-06-01T01:00:00.000Z');
    const t = await start(clock);
    fs.mkdirSync(backupDir(t), { recursive: true });
    const abandoned = path.join(backupDir(t), 'loa-20260531-230000.sqlite.partial-1');
    const inProgress = path.join(backupDir(t), 'loa-20260601-005900.sqlite.partial-4242');
    fs.writeFileSync(abandoned, 'torn');
    fs.writeFileSync(inProgress, 'still copying');
    // Modification times on the injected clock, as seen at the backup an hour from now: three hours old,
    // and one minute old.
    const before = (ms: number) => new Date(clock.now().getTime() + HOUR - ms);
    fs.utimesSync(abandoned, before(3 * HOUR), before(3 * HOUR));
    fs.utimesSync(inProgress, before(60_000), before(60_000));

    await tick(t, clock, HOUR);

    expect(fs.readdirSync(backupDir(t)).sort()).toEqual(
      ['loa-20260601-020000.sqlite', 'loa-20260601-005900.sqlite.partial-4242'].sort(),
    );
  });

  it('restores: a server started on a backup has the data of that moment', async () => {
    const clock = new ManualClock('2026-06-01T01:00:00.000Z');
    const t = await start(clock);
    await t.createArea({ name: 'Xã Hải Phú', level: 'commune' });
    await tick(t, clock, HOUR);
    await t.createArea({ name: 'Thôn Tây (sau bản sao lưu)', level: 'hamlet' });
    expect(await areaNames(t)).toEqual(expect.arrayContaining(['Xã Hải Phú', 'Thôn Tây (sau bản sao lưu)']));

    // docs/operations.md "Restoring": the backup becomes DATA_DIR/loa.sqlite, with no -wal/-shm beside it.
    const restored = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-restored-'));
    dirs.push(restored);
    fs.mkdirSync(path.join(restored, 'backups'));
    const backup = path.join(backupDir(t), 'loa-20260601-020000.sqlite');
    fs.copyFileSync(backup, path.join(restored, 'loa.sqlite'));
    fs.copyFileSync(backup, path.join(restored, 'backups', 'loa-20260601-020000.sqlite'));
    expect(fs.readdirSync(restored).sort()).toEqual(['backups', 'loa.sqlite']);

    const later = new ManualClock('2026-06-01T05:00:00.000Z');
    const r = await start(later, { DATA_DIR: restored });
    const names = await areaNames(r);
    expect(names).toContain('Xã Hải Phú');
    expect(names).not.toContain('Thôn Tây (sau bản sao lưu)');
    // The restored server takes writes and knows the backups its folder already holds.
    await r.createArea({ name: 'Thôn Đông mới', level: 'hamlet' });
    expect((await readyz(r)).backup).toEqual({
      lastSuccessAt: '2026-06-01T02:00:00.000Z',
      ageSeconds: 3 * 3600,
      lastError: null,
    });
  });

  it('logs and counts a failed backup, keeps answering /readyz, and recovers once the folder is fixed', async () => {
    const lines: string[] = [];
    const clock = new ManualClock('2026-06-01T01:00:00.000Z');
    const t = await start(clock, {}, { level: 'info', stream: { write: (l: string) => lines.push(l) } });
    // A file where the backups folder should be: nothing can be written there.
    fs.writeFileSync(backupDir(t), 'không phải thư mục');

    await tick(t, clock, HOUR);
    const failure = lines
      .map((l) => JSON.parse(l) as { msg: string; backup?: string; err?: { message: string } })
      .find((l) => l.msg === 'scheduled database backup failed');
    expect(failure?.backup).toBe(path.join(backupDir(t), 'loa-20260601-020000.sqlite'));
    expect(failure?.err?.message).toMatch(/EEXIST|ENOTDIR/);
    const ready = await readyz(t);
    expect(ready.status).toBe('ready');
    expect(ready.backup.lastSuccessAt).toBeNull();
    expect(ready.backup.lastError).toMatch(/EEXIST|ENOTDIR/);
    expect(await metric(t, 'loa_backup_failures_total')).toBe(1);
    expect(await metric(t, 'loa_backup_last_success_timestamp_seconds')).toBe(0);

    fs.rmSync(backupDir(t));
    await tick(t, clock, HOUR);
    expect(fs.readdirSync(backupDir(t))).toEqual(['loa-20260601-030000.sqlite']);
    expect((await readyz(t)).backup).toMatchObject({
      lastSuccessAt: '2026-06-01T03:00:00.000Z',
      lastError: null,
    });
    expect(lines.some((l) => l.includes('"msg":"backed up the database"'))).toBe(true);
  });

  it('takes no backups with BACKUP_EVERY_MIN=0', async () => {
    const clock = new ManualClock();
    const t = await start(clock, { BACKUP_EVERY_MIN: '0' });
    await tick(t, clock, 25 * HOUR);
    expect(fs.existsSync(backupDir(t))).toBe(false);
  });
});
