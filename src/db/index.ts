import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { drizzle, type BetterSQLite3Database } from 'drizzle-orm/better-sqlite3';
import { readMigrationFiles } from 'drizzle-orm/migrator';
import * as schema from './schema/index.js';

export type Db = BetterSQLite3Database<typeof schema>;

/**
 * The better-sqlite3 connection behind a Db, for the few queries that drizzle cannot express or that must
 * stream (prepared once, iterated in chunks). drizzle keeps it as `$client`; the Db type does not spell it out.
 */
export function sqliteOf(db: Db): Database.Database {
  return (db as unknown as { $client: Database.Database }).$client;
}

/** A UNIQUE index refused the write. better-sqlite3 reports it with a code; drizzle may wrap the error in its own. */
export function isUniqueViolation(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if ((e as { code?: unknown }).code === 'SQLITE_CONSTRAINT_UNIQUE') return true;
  }
  return false;
}

/** drizzle/ sits at the project root, both when running from src/ (tsx) and from dist/src/ (node). */
function findMigrationsFolder(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, 'drizzle');
    if (fs.existsSync(path.join(candidate, 'meta', '_journal.json'))) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('drizzle/ migrations folder not found');
    dir = parent;
  }
}

export interface OpenedDb {
  db: Db;
  sqlite: Database.Database;
}

/** Structurally a subset of pino's logger, so `app.log` fits without db/ depending on Fastify. */
export interface DbLogger {
  info(details: object, message: string): void;
  warn(details: object, message: string): void;
}

export interface OpenDatabaseOptions {
  /** Where the automatic pre-migration backups go; `backups/` beside the database file by default. */
  backupDir?: string;
  log?: DbLogger;
}

/** Rows that reference a missing parent after the migrations ran: start-up is refused and nothing is kept. */
export class ForeignKeyViolationError extends Error {
  override name = 'ForeignKeyViolationError';
  constructor(readonly violations: { table: string; parent: string; rows: number }[]) {
    const list = violations.map((v) => `${v.table} (${v.rows} rows referencing a missing ${v.parent})`);
    super(
      `Refusing to start: after migrating, ${list.join(', ')} would break foreign keys. ` +
        'The migrations were rolled back and the database is unchanged; see docs/operations.md.',
    );
  }
}

const MIGRATIONS_TABLE = '__drizzle_migrations';
/** How large the WAL file may stay after a checkpoint (openDatabase). */
export const JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024;
const silent: DbLogger = { info: () => {}, warn: () => {} };

/**
 * Opens (creating if needed) the SQLite file and brings its schema up to date, first backing up a database
 * that holds data. Rejects with ForeignKeyViolationError if the migrated data would break a foreign key.
 */
export async function openDatabase(file: string, options: OpenDatabaseOptions = {}): Promise<OpenedDb> {
  const log = options.log ?? silent;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const sqlite = new Database(file);
  try {
    // WAL lets HTTP reads run while the broker writes acks; NORMAL is durable across process crashes in WAL
    // mode (only an OS crash can lose the last transactions), and is several times faster than FULL.
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('busy_timeout = 5000');
    // The WAL file grows while readers hold back a checkpoint (a long backup, a CSV export) and SQLite then
    // only rewinds it, never shrinks it: a day of heavy writes could leave gigabytes of disk held for good.
    // With a limit, each checkpoint that resets the WAL truncates the file back to at most 64 MB. The
    // automatic checkpoint every 1000 pages (wal_autocheckpoint, left at its default) keeps the WAL small in
    // normal running; the limit only returns the space after a burst.
    sqlite.pragma(`journal_size_limit = ${JOURNAL_SIZE_LIMIT_BYTES}`);
    // Off while migrating: drizzle-kit rebuilds a table to change a column (create new, copy, DROP old,
    // rename), and with foreign keys on that DROP deletes every row that references the old table through
    // ON DELETE CASCADE (deliveries of each command, tokens of each user). The migrations' own
    // `PRAGMA foreign_keys=OFF` cannot help: inside a transaction that pragma does nothing.
    sqlite.pragma('foreign_keys = OFF');

    const migrationsFolder = findMigrationsFolder();
    const migrations = readMigrationFiles({ migrationsFolder });
    const tags = migrationTags(migrationsFolder);
    const pending = pendingMigrations(sqlite, migrations, log);
    if (pending.length > 0) {
      if (hasData(sqlite)) {
        const before = tags.get(pending[0]!.folderMillis) ?? String(pending[0]!.folderMillis);
        const backupDir = options.backupDir ?? path.join(path.dirname(file), 'backups');
        const backup = await backupBefore(sqlite, backupDir, before);
        log.info({ backup: backup.file, bytes: backup.bytes }, 'backed up the database before migrating');
      }
      applyMigrations(sqlite, pending);
      log.info(
        { migrations: pending.map((m) => tags.get(m.folderMillis) ?? m.folderMillis) },
        'applied database migrations',
      );
    }
    sqlite.pragma('foreign_keys = ON');
    return { db: drizzle(sqlite, { schema }), sqlite };
  } catch (err) {
    sqlite.close();
    throw err;
  }
}

type Migration = ReturnType<typeof readMigrationFiles>[number];

function migrationTags(migrationsFolder: string): Map<number, string> {
  const journalFile = path.join(migrationsFolder, 'meta', '_journal.json');
  const journal = JSON.parse(fs.readFileSync(journalFile, 'utf8')) as {
    entries: { when: number; tag: string }[];
  };
  return new Map(journal.entries.map((e) => [e.when, e.tag]));
}

/** Which migrations drizzle's migrator would apply: those newer than the newest one recorded. */
function pendingMigrations(sqlite: Database.Database, migrations: Migration[], log: DbLogger): Migration[] {
  const table = sqlite
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?")
    .get(MIGRATIONS_TABLE);
  if (!table) return migrations;
  const last = sqlite
    .prepare(`SELECT created_at FROM "${MIGRATIONS_TABLE}" ORDER BY created_at DESC LIMIT 1`)
    .pluck()
    .get() as number | string | null | undefined;
  if (last === undefined || last === null) return migrations;
  const newest = Math.max(...migrations.map((m) => m.folderMillis));
  if (Number(last) > newest) {
    // Running an older release on a database that a newer one migrated: its code may not match the schema.
    log.warn({ databaseMigration: Number(last), newestKnown: newest }, 'the database is newer than this Loa');
  }
  return migrations.filter((m) => Number(last) < m.folderMillis);
}

/** A brand-new file has no tables; the migrations table alone does not count as data. */
function hasData(sqlite: Database.Database): boolean {
  const tables = sqlite
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
    .pluck()
    .all() as string[];
  return tables
    .filter((t) => t !== MIGRATIONS_TABLE)
    .some(
      (t) =>
        sqlite
          .prepare(`SELECT EXISTS (SELECT 1 FROM "${t.replaceAll('"', '""')}")`)
          .pluck()
          .get() === 1,
    );
}

/**
 * The same steps and bookkeeping as drizzle's own migrator (same table, hash and created_at, so drizzle-kit
 * and a later drizzle migrate() agree), plus the foreign key check inside the same transaction: if the
 * migrated data would break a reference, everything is rolled back and every later start refuses again,
 * instead of refusing once and then running on a damaged database.
 */
function applyMigrations(sqlite: Database.Database, pending: Migration[]): void {
  sqlite.exec(
    `CREATE TABLE IF NOT EXISTS "${MIGRATIONS_TABLE}" (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)`,
  );
  const record = sqlite.prepare(`INSERT INTO "${MIGRATIONS_TABLE}" ("hash", "created_at") VALUES (?, ?)`);
  sqlite.transaction(() => {
    for (const migration of pending) {
      for (const statement of migration.sql) sqlite.prepare(statement).run();
      record.run(migration.hash, migration.folderMillis);
    }
    const broken = sqlite.pragma('foreign_key_check') as { table: string; parent: string }[];
    if (broken.length > 0) {
      const byTable = new Map<string, { table: string; parent: string; rows: number }>();
      for (const row of broken) {
        const key = `${row.table}→${row.parent}`;
        const entry = byTable.get(key) ?? { table: row.table, parent: row.parent, rows: 0 };
        entry.rows += 1;
        byTable.set(key, entry);
      }
      throw new ForeignKeyViolationError([...byTable.values()]);
    }
  })();
}

async function backupBefore(
  sqlite: Database.Database,
  dir: string,
  migrationTag: string,
): Promise<{ file: string; bytes: number }> {
  fs.mkdirSync(dir, { recursive: true });
  const stamp = new Date()
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
  let file = path.join(dir, `loa-${stamp}-before-${migrationTag}.sqlite`);
  for (let n = 2; fs.existsSync(file); n++) {
    file = path.join(dir, `loa-${stamp}-${n}-before-${migrationTag}.sqlite`);
  }
  return { file, bytes: await backupDatabase(sqlite, file) };
}

/**
 * A consistent copy of an open database through SQLite's online backup API, including what is still in
 * the WAL, as one self-contained file (rollback journal mode: no -wal/-shm to carry along). Copies every
 * page in one step: a step-by-step backup starts over whenever another connection writes in between, so
 * against a busy server it might never finish. In WAL mode that one step is a read that blocks no writer.
 * The copy is written under a temporary name and renamed to `destination` only once `PRAGMA
 * integrity_check` passes, so a process killed mid-copy (docker stop, a crash) or a full disk never leaves
 * a damaged file under a backup's name. Returns the size of the copy in bytes.
 */
export async function backupDatabase(source: Database.Database, destination: string): Promise<number> {
  const partial = `${destination}.partial-${process.pid}`;
  try {
    await source.backup(partial, { progress: () => 0x7fffffff });
    const copy = new Database(partial);
    let check: string[];
    try {
      copy.pragma('journal_mode = DELETE');
      check = (copy.pragma('integrity_check') as { integrity_check: string }[]).map((r) => r.integrity_check);
    } finally {
      copy.close();
    }
    if (check.length !== 1 || check[0] !== 'ok') {
      throw new Error(`The copy failed its integrity check (nothing was kept):\n${check.join('\n')}`);
    }
    fs.renameSync(partial, destination);
  } finally {
    fs.rmSync(partial, { force: true });
  }
  return fs.statSync(destination).size;
}

export { schema };
