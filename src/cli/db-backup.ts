/**
 * `npm run db:backup -- --out FILE [--data-dir DIR]`: a consistent copy of Loa's database, safe to take while
 * the server runs (SQLite's online backup API reads one snapshot, WAL included, and blocks no writer).
 * The copy is written under a temporary name and only renamed to FILE once `PRAGMA integrity_check`
 * passes (backupDatabase), so FILE never names a half-written or damaged backup. Restoring:
 * docs/operations.md.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { ConfigError, loadConfig } from '../config.js';
import { backupDatabase } from '../db/index.js';

const USAGE =
  'usage: npm run db:backup -- --out FILE [--data-dir DIR]   (DIR defaults to DATA_DIR, then ./data)';

class UsageError extends Error {}

export async function main(argv: string[]): Promise<{ file: string; bytes: number }> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { out: { type: 'string' }, 'data-dir': { type: 'string' } },
      strict: true,
    }));
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${USAGE}`);
  }
  if (!values.out) throw new UsageError(`--out FILE is required\n${USAGE}`);

  // `npm run` moves to the package root; paths typed on the command line mean where the user stood.
  const cwd = (process.env.npm_lifecycle_event === 'db:backup' && process.env.INIT_CWD) || process.cwd();
  const dataDir = values['data-dir'] ? path.resolve(cwd, values['data-dir']) : undefined;
  const source = loadConfig({ ...process.env, ...(dataDir ? { DATA_DIR: dataDir } : {}) }).databaseFile;
  const out = path.resolve(cwd, values.out);

  if (!fs.existsSync(source)) {
    throw new UsageError(
      `No database at ${source}. Pass --data-dir (or set DATA_DIR) to the folder the server uses.`,
    );
  }
  if ([source, `${source}-wal`, `${source}-shm`].includes(out)) {
    throw new UsageError(`Refusing to write the backup over the live database files: ${out}`);
  }
  if (fs.existsSync(out)) throw new UsageError(`${out} already exists; choose another name or remove it.`);
  const outDir = path.dirname(out);
  try {
    fs.accessSync(outDir, fs.constants.W_OK);
  } catch {
    throw new UsageError(`Cannot write to ${outDir}: the folder does not exist or is not writable.`);
  }

  const db = new Database(source, { fileMustExist: true });
  try {
    // The server holds the write lock only for short transactions; wait for them rather than fail.
    db.pragma('busy_timeout = 10000');
    return { file: out, bytes: await backupDatabase(db, out) };
  } finally {
    db.close();
  }
}

const invokedDirectly =
  process.argv[1] !== undefined && path.resolve(process.argv[1]) === import.meta.filename;
if (invokedDirectly) {
  main(process.argv.slice(2)).then(
    ({ file, bytes }) => {
      console.log(`Backed up to ${file} (${bytes} bytes, integrity check ok)`);
    },
    (err: unknown) => {
      console.error(err instanceof UsageError || err instanceof ConfigError ? err.message : err);
      process.exit(1);
    },
  );
}
