/**
 * Upgrading a database that holds data: migrations that rebuild a table (0003 rebuilds `commands`, 0004
 * `users`) must keep every row that references it, a copy is taken first, and data whose references would
 * break refuses the start instead of running on. Also `npm run db:backup` against a server that is writing.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { afterEach, describe, expect, it } from 'vitest';
import { main as dbBackup } from '../src/cli/db-backup.js';
import { ForeignKeyViolationError, openDatabase, type DbLogger } from '../src/db/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';

const root = path.resolve(import.meta.dirname, '..');
const migrationsFolder = path.join(root, 'drizzle');
const journal = JSON.parse(fs.readFileSync(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as {
  entries: { tag: string }[];
};

const dirs: string[] = [];
function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-migrations-'));
  dirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

/** Brings the file to the first `count` migrations with drizzle's own migrator, as an older Loa did. */
function migrateTo(sqlite: Database.Database, count: number): void {
  const folder = tempDir();
  fs.mkdirSync(path.join(folder, 'meta'));
  const entries = journal.entries.slice(0, count);
  fs.writeFileSync(path.join(folder, 'meta', '_journal.json'), JSON.stringify({ ...journal, entries }));
  for (const e of entries)
    fs.copyFileSync(path.join(migrationsFolder, `${e.tag}.sql`), path.join(folder, `${e.tag}.sql`));
  migrate(drizzle(sqlite), { migrationsFolder: folder });
}

const T0 = Date.parse('2026-06-01T01:00:00Z');

/**
 * A database as the first releases left it: filled at 0000 (areas, users, tokens, devices, commands with
 * deliveries, audit), then upgraded to 0002 and given telemetry, presence and an alert.
 */
function buildOldDatabase(file: string): void {
  const sqlite = new Database(file);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('foreign_keys = ON');
  migrateTo(sqlite, 1);
  const area = sqlite.prepare('INSERT INTO areas VALUES (?, ?, ?, ?, ?, ?, ?)');
  area.run('ar_tinh', 'Tỉnh Quảng Trị', 'province', null, '/ar_tinh/', T0, T0);
  area.run('ar_huyen', 'Huyện Hải Lăng', 'district', 'ar_tinh', '/ar_tinh/ar_huyen/', T0, T0);
  area.run('ar_xa', 'Xã Hải Thượng', 'commune', 'ar_huyen', '/ar_tinh/ar_huyen/ar_xa/', T0, T0);
  area.run('ar_thon', 'Thôn Đông', 'hamlet', 'ar_xa', '/ar_tinh/ar_huyen/ar_xa/ar_thon/', T0, T0);
  const user = sqlite.prepare('INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?)');
  user.run('usr_admin', 'admin', 'Quản trị viên', 'scrypt$a', 'admin', null, T0);
  user.run('usr_hang', 'hang', 'Nguyễn Thị Hằng', 'scrypt$b', 'district_operator', 'ar_huyen', T0);
  user.run('usr_duong', 'duong', 'Trần Văn Dương', 'scrypt$c', 'broadcaster', 'ar_xa', T0);
  const token = sqlite.prepare('INSERT INTO api_tokens VALUES (?, ?, ?, ?)');
  for (const u of ['usr_admin', 'usr_hang', 'usr_duong']) {
    for (const n of [1, 2]) token.run(`hash_${u}_${n}`, u, T0, T0 + 3_600_000);
  }
  const device = sqlite.prepare(
    `INSERT INTO devices (id, name, sort_name, kind, area_id, secret_hash, created_at, updated_at, firmware)
     VALUES (?, ?, ?, ?, ?, 'secret', ?, ?, '1.4.0')`,
  );
  const devices = [
    ['dev_1', 'Cụm loa thôn Đông', 'cluster', 'ar_thon'],
    ['dev_2', 'Đài xã Hải Thượng', 'station', 'ar_xa'],
    ['dev_3', 'Cụm loa chợ Dương Lễ', 'cluster', 'ar_xa'],
    ['dev_4', 'Cụm loa bến đò Ưu Điềm', 'cluster', 'ar_thon'],
  ] as const;
  for (const [id, name, kind, areaId] of devices)
    device.run(id, name, name.toLowerCase(), kind, areaId, T0, T0);
  const command = sqlite.prepare('INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
  const delivery = sqlite.prepare('INSERT INTO command_deliveries VALUES (?, ?, ?, ?, ?, ?, ?)');
  const authors = ['usr_admin', 'usr_hang', 'usr_duong'];
  for (let c = 0; c < 3; c++) {
    const params = JSON.stringify({ text: `Thông báo lũ lụt số ${c + 1}: sơ tán khẩn cấp` });
    command.run(`cmd_${c}`, 'play', 'emergency', params, authors[c], T0 + c, T0 + 600_000, devices.length);
    for (const [i, [deviceId]] of devices.entries()) {
      const status = ['done', 'received', 'pending', 'failed'][i]!;
      delivery.run(
        `cmd_${c}`,
        deviceId,
        status,
        status === 'failed' ? 'hỏng loa' : null,
        T0,
        T0 + 600_000,
        T0,
      );
    }
  }
  sqlite
    .prepare(
      'INSERT INTO audit_log (at, actor_id, actor_username, action, target_type, target_id, details) VALUES (?, ?, ?, ?, ?, ?, ?)',
    )
    .run(T0, 'usr_hang', 'hang', 'command.create', 'command', 'cmd_1', JSON.stringify({ ghiChú: 'Đã gửi' }));

  migrateTo(sqlite, 3);
  const sample = sqlite.prepare(
    'INSERT INTO telemetry_samples (device_id, at, device_at, uptime_s, rssi_dbm, supply_voltage) VALUES (?, ?, ?, ?, ?, ?)',
  );
  for (const [id] of devices) for (let k = 0; k < 3; k++) sample.run(id, T0 + k, T0 + k, 100 + k, -70, 12.6);
  sqlite
    .prepare('INSERT INTO presence_transitions (device_id, at, online, cause) VALUES (?, ?, ?, ?)')
    .run('dev_1', T0, 1, 'connect');
  sqlite
    .prepare('INSERT INTO alerts (device_id, kind, state, reasons, opened_at) VALUES (?, ?, ?, ?, ?)')
    .run('dev_4', 'degraded', 'open', JSON.stringify(['nhiệt độ cao']), T0);
  sqlite.close();
}

const TABLES = [
  'areas',
  'users',
  'api_tokens',
  'devices',
  'commands',
  'command_deliveries',
  'audit_log',
  'telemetry_samples',
  'presence_transitions',
  'alerts',
] as const;

/** Every row of every table, with only the columns the old schema had (new columns are compared apart). */
function dump(sqlite: Database.Database, columnsOf?: Record<string, string[]>): Record<string, unknown[]> {
  return Object.fromEntries(
    TABLES.map((t) => {
      const columns = columnsOf?.[t]?.map((c) => `"${c}"`).join(', ') ?? '*';
      return [t, sqlite.prepare(`SELECT ${columns} FROM ${t} ORDER BY 1, 2`).all()];
    }),
  );
}

function columns(sqlite: Database.Database): Record<string, string[]> {
  return Object.fromEntries(
    TABLES.map((t) => [
      t,
      sqlite.prepare(`SELECT name FROM pragma_table_info('${t}')`).pluck().all() as string[],
    ]),
  );
}

function snapshot(file: string) {
  const sqlite = new Database(file, { readonly: true });
  try {
    return { rows: dump(sqlite), columns: columns(sqlite) };
  } finally {
    sqlite.close();
  }
}

function recordingLog() {
  const lines: { details: Record<string, unknown>; message: string }[] = [];
  const log: DbLogger = {
    info: (details, message) => lines.push({ details: details as Record<string, unknown>, message }),
    warn: (details, message) => lines.push({ details: details as Record<string, unknown>, message }),
  };
  return { log, lines };
}

describe('migrating a database that holds data', () => {
  it('keeps every row when 0003 and 0004 rebuild commands and users, children and Vietnamese text included', async () => {
    const file = path.join(tempDir(), 'loa.sqlite');
    buildOldDatabase(file);
    const before = snapshot(file);
    expect(before.rows.command_deliveries).toHaveLength(12);
    expect(before.rows.api_tokens).toHaveLength(6);

    const { sqlite } = await openDatabase(file);
    try {
      // 0012 drops telemetry's rowid column on purpose (keyed by device and time, WITHOUT ROWID); every
      // other value stays.
      const kept = {
        ...before.columns,
        telemetry_samples: before.columns.telemetry_samples!.filter((c) => c !== 'id'),
      };
      const keptRows = {
        ...before.rows,
        telemetry_samples: before.rows.telemetry_samples!.map((row) => {
          const { id: _dropped, ...rest } = row as Record<string, unknown>;
          return rest;
        }),
      };
      expect(dump(sqlite, kept)).toEqual(keptRows);
      expect(sqlite.prepare('SELECT count(*) FROM "__drizzle_migrations"').pluck().get()).toBe(
        journal.entries.length,
      );
      expect(sqlite.pragma('foreign_keys', { simple: true })).toBe(1);
      expect(sqlite.pragma('foreign_key_check')).toEqual([]);
      // The exact values a rebuild would lose first: authorship (ON DELETE SET NULL) and the cascaded children.
      expect(sqlite.prepare('SELECT id, created_by FROM commands ORDER BY id').all()).toEqual([
        { id: 'cmd_0', created_by: 'usr_admin' },
        { id: 'cmd_1', created_by: 'usr_hang' },
        { id: 'cmd_2', created_by: 'usr_duong' },
      ]);
      expect(
        sqlite.prepare('SELECT command_id, count(*) AS n FROM command_deliveries GROUP BY command_id').all(),
      ).toEqual([
        { command_id: 'cmd_0', n: 4 },
        { command_id: 'cmd_1', n: 4 },
        { command_id: 'cmd_2', n: 4 },
      ]);
      expect(
        sqlite.prepare("SELECT display_name, disabled_at FROM users WHERE id = 'usr_hang'").get(),
      ).toEqual({
        display_name: 'Nguyễn Thị Hằng',
        disabled_at: null,
      });
      expect(
        sqlite.prepare("SELECT count(*) FROM api_tokens WHERE user_id = 'usr_duong'").pluck().get(),
      ).toBe(2);
      expect(sqlite.prepare("SELECT name FROM devices WHERE id = 'dev_4'").pluck().get()).toBe(
        'Cụm loa bến đò Ưu Điềm',
      );
      expect(
        sqlite.prepare("SELECT reason FROM command_deliveries WHERE status = 'failed' LIMIT 1").pluck().get(),
      ).toBe('hỏng loa');
    } finally {
      sqlite.close();
    }
  });

  it('backs the database up into backups/ before migrating it, and logs where', async () => {
    const dataDir = tempDir();
    const file = path.join(dataDir, 'loa.sqlite');
    buildOldDatabase(file);
    const before = snapshot(file);
    const { log, lines } = recordingLog();

    const { sqlite } = await openDatabase(file, { log });
    sqlite.close();

    const backups = fs.readdirSync(path.join(dataDir, 'backups'));
    expect(backups).toHaveLength(1);
    expect(backups[0]).toMatch(/^loa-\d{8}T\d{6}Z-before-0003_accounts_and_server_commands\.sqlite$/);
    const backupFile = path.join(dataDir, 'backups', backups[0]!);
    expect(lines).toContainEqual({
      details: { backup: backupFile, bytes: fs.statSync(backupFile).size },
      message: 'backed up the database before migrating',
    });
    // The copy is the old database as it was, on its own: no -wal file needed beside it.
    expect(fs.existsSync(`${backupFile}-wal`)).toBe(false);
    const copy = snapshot(backupFile);
    expect(copy).toEqual(before);
    const old = new Database(backupFile, { readonly: true });
    try {
      expect(old.prepare('SELECT count(*) FROM "__drizzle_migrations"').pluck().get()).toBe(3);
      expect(old.pragma('integrity_check', { simple: true })).toBe('ok');
    } finally {
      old.close();
    }
  });

  it('takes no backup of a brand-new database, nor when nothing is pending', async () => {
    const dataDir = tempDir();
    const file = path.join(dataDir, 'loa.sqlite');
    const first = await openDatabase(file);
    first.sqlite
      .prepare(
        "INSERT INTO areas (id, name, level, parent_id, path, created_at, updated_at) VALUES ('ar_1', 'Xã Hải Phú', 'commune', NULL, '/ar_1/', 0, 0)",
      )
      .run();
    first.sqlite.close();
    const { log, lines } = recordingLog();
    const second = await openDatabase(file, { log });
    second.sqlite.close();
    expect(fs.existsSync(path.join(dataDir, 'backups'))).toBe(false);
    expect(lines).toEqual([]);
  });

  it('refuses to start, naming the table, when the migrated data would break a foreign key; changes nothing', async () => {
    const file = path.join(tempDir(), 'loa.sqlite');
    buildOldDatabase(file);
    const broken = new Database(file);
    broken.pragma('foreign_keys = OFF');
    broken
      .prepare("INSERT INTO command_deliveries VALUES ('cmd_gone', 'dev_1', 'pending', NULL, NULL, 0, 0)")
      .run();
    broken
      .prepare("INSERT INTO command_deliveries VALUES ('cmd_gone', 'dev_2', 'pending', NULL, NULL, 0, 0)")
      .run();
    broken.close();
    const before = snapshot(file);

    const attempt = openDatabase(file);
    await expect(attempt).rejects.toThrow(ForeignKeyViolationError);
    await expect(attempt).rejects.toThrow(/command_deliveries \(2 rows referencing a missing commands\)/);
    // Rolled back: still the old schema, so the next start refuses again instead of running on.
    expect(snapshot(file)).toEqual(before);
    await expect(openDatabase(file)).rejects.toThrow(/command_deliveries/);
  });

  it('records migrations as drizzle’s migrator does, so drizzle and drizzle-kit find nothing left to do', async () => {
    const ours = path.join(tempDir(), 'loa.sqlite');
    const theirs = path.join(tempDir(), 'loa.sqlite');
    (await openDatabase(ours)).sqlite.close();
    const reference = new Database(theirs);
    migrate(drizzle(reference), { migrationsFolder });
    reference.close();

    const read = (file: string) => {
      const sqlite = new Database(file);
      try {
        migrate(drizzle(sqlite), { migrationsFolder });
        return {
          migrations: sqlite
            .prepare('SELECT hash, created_at FROM "__drizzle_migrations" ORDER BY created_at')
            .all(),
          schema: (
            sqlite.prepare('SELECT type, name, sql FROM sqlite_master ORDER BY name').all() as {
              sql: string | null;
            }[]
          ).map((o) => ({
            ...o,
            sql: o.sql?.replace(/\s+/g, ' ').replace(/\( /g, '(').replace(/ \)/g, ')'),
          })),
        };
      } finally {
        sqlite.close();
      }
    };
    const result = read(ours);
    expect(result.migrations).toHaveLength(journal.entries.length);
    expect(result).toEqual(read(theirs));
  });
});

describe('npm run db:backup', () => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  it('copies a running server’s database, WAL included, as one consistent snapshot while it writes', async () => {
    t = await createTestApp();
    const app = t;
    const tree = await createAreaTree(app);
    const devices = [
      await app.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông'),
      await app.createDevice(tree.hamletB.id, 'Cụm loa thôn Tây'),
      await app.createDevice(tree.communeA.id, 'Đài xã Hải Phú', 'station'),
    ];
    const send = async () => {
      const res = await app.request('POST', '/api/v1/commands', {
        token: app.adminToken,
        body: { type: 'volume', params: { level: 40 }, targets: { deviceIds: devices.map((d) => d.id) } },
      });
      expect(res.statusCode).toBe(202);
    };
    // A reader that stays in one transaction (a long report, say) stops SQLite from copying later WAL frames
    // back into loa.sqlite, so the commands below exist only in the WAL: a plain copy of the file lacks them.
    const reader = new Database(path.join(app.dataDir, 'loa.sqlite'), { readonly: true });
    reader.exec('BEGIN');
    expect(reader.prepare('SELECT count(*) FROM commands').pluck().get()).toBe(0);
    for (let i = 0; i < 5; i++) await send();

    const out = path.join(tempDir(), 'sao-lưu.sqlite');
    const child = spawn(
      path.join(root, 'node_modules', '.bin', 'tsx'),
      ['src/cli/db-backup.ts', '--out', out, '--data-dir', app.dataDir],
      {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    let exitCode: number | null | undefined;
    const exited = new Promise<void>((resolve) =>
      child.on('exit', (code) => {
        exitCode = code;
        resolve();
      }),
    );
    // The server keeps writing commands (each one with its deliveries and audit entry in one transaction)
    // for as long as the backup runs.
    let during = 0;
    do {
      await send();
      during += 1;
    } while (exitCode === undefined);
    await exited;
    reader.exec('COMMIT');
    reader.close();

    expect(exitCode, output).toBe(0);
    expect(output).toContain(`Backed up to ${out} (${fs.statSync(out).size} bytes, integrity check ok)`);
    expect(fs.readdirSync(path.dirname(out))).toEqual(['sao-lưu.sqlite']);
    const copy = new Database(out, { readonly: true });
    try {
      expect(copy.pragma('integrity_check', { simple: true })).toBe('ok');
      const commands = copy.prepare('SELECT count(*) FROM commands').pluck().get() as number;
      expect(commands).toBeGreaterThanOrEqual(5);
      expect(commands).toBeLessThanOrEqual(5 + during);
      // One snapshot: no command without all its deliveries and its audit entry.
      expect(
        copy
          .prepare(
            `SELECT count(*) FROM commands c
             WHERE target_count != (SELECT count(*) FROM command_deliveries d WHERE d.command_id = c.id)`,
          )
          .pluck()
          .get(),
      ).toBe(0);
      expect(
        copy.prepare("SELECT count(*) FROM audit_log WHERE action = 'command.create'").pluck().get(),
      ).toBe(commands);
      expect(copy.prepare('SELECT name FROM devices ORDER BY name').pluck().all()).toEqual(
        ['Cụm loa thôn Đông', 'Cụm loa thôn Tây', 'Đài xã Hải Phú'].sort(),
      );
    } finally {
      copy.close();
    }
  });

  it('says clearly when there is no database, or the output cannot be written', async () => {
    const empty = tempDir();
    await expect(dbBackup(['--out', path.join(empty, 'b.sqlite'), '--data-dir', empty])).rejects.toThrow(
      `No database at ${path.join(empty, 'loa.sqlite')}`,
    );
    await expect(dbBackup(['--data-dir', empty])).rejects.toThrow('--out FILE is required');

    const dataDir = tempDir();
    (await openDatabase(path.join(dataDir, 'loa.sqlite'))).sqlite.close();
    await expect(
      dbBackup(['--out', path.join(dataDir, 'missing', 'b.sqlite'), '--data-dir', dataDir]),
    ).rejects.toThrow(`Cannot write to ${path.join(dataDir, 'missing')}`);
    await expect(
      dbBackup(['--out', path.join(dataDir, 'loa.sqlite'), '--data-dir', dataDir]),
    ).rejects.toThrow('Refusing to write the backup over the live database');
    const existing = path.join(dataDir, 'old.sqlite');
    fs.writeFileSync(existing, 'keep me');
    await expect(dbBackup(['--out', existing, '--data-dir', dataDir])).rejects.toThrow('already exists');
    expect(fs.readFileSync(existing, 'utf8')).toBe('keep me');
  });
});
