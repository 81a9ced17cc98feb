/**
 * Scheduled online backups: every BACKUP_EVERY_MIN minutes a consistent copy of the live database goes to
 * DATA_DIR/backups/loa-YYYYMMDD-HHMMSS.sqlite (UTC), and only the newest BACKUP_KEEP of them are kept. The
 * copy is backupDatabase's (the same as `npm run db:backup`): SQLite's online backup API, written under a
 * temporary name and renamed only once its integrity check passes, so a backup's name never holds a torn file.
 * A failed backup is logged and counted, never thrown: a full backup disk must not take the broker down.
 */
import fs from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import fp from 'fastify-plugin';
import { backupDatabase, sqliteOf } from '../../db/index.js';
import type { Clock } from '../../lib/clock.js';
import type { Metrics } from '../../plugins/metrics.js';
import type { ModuleOptions } from '../module.js';

/**
 * Only names of exactly this shape are scheduled backups, counted and pruned. The pre-migration backups that
 * share the folder (`loa-20260601T013000Z-before-0003_….sqlite`, src/db/index.ts), copies an operator put
 * there and `.partial-` files never match, so pruning never deletes them.
 */
const SCHEDULED_NAME = /^loa-(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})\.sqlite$/;

/** A copy in progress (backupDatabase's temporary name), or one left behind by a process killed mid-copy. */
const PARTIAL_NAME = /^loa-.*\.sqlite\.partial-\d+$/;

/**
 * A copy in progress writes pages continuously, so a partial file untouched for this long was left by a
 * process that died mid-backup (it may be large: as large as the database). Its pid cannot tell: in a
 * container every run is pid 1, and `npm run db:backup` may be copying into the same folder right now.
 */
const ABANDONED_PARTIAL_MS = 3_600_000;

/** The file name of a backup taken at `at`, in UTC (sorts by time as text). */
export function backupFileName(at: Date): string {
  const stamp = at.toISOString(); // 2026-06-01T01:00:00.000Z
  return `loa-${stamp.slice(0, 10).replaceAll('-', '')}-${stamp.slice(11, 19).replaceAll(':', '')}.sqlite`;
}

function timeOfName(name: string): Date | null {
  const m = SCHEDULED_NAME.exec(name);
  if (!m) return null;
  const [, y, mo, d, h, mi, s] = m;
  const at = new Date(`${y}-${mo}-${d}T${h}:${mi}:${s}Z`);
  return Number.isNaN(at.getTime()) ? null : at;
}

export interface BackupStatus {
  /** When the newest good scheduled backup was taken (this process's or found on disk at start), or null. */
  lastSuccessAt: Date | null;
  lastFile: string | null;
  /** Why the latest attempt failed; null once a later one succeeds. */
  lastError: string | null;
}

export interface BackupsLog {
  info(details: object, message: string): void;
  error(details: object, message: string): void;
}

export interface BackupsOptions {
  sqlite: Database.Database;
  dir: string;
  keep: number;
  clock: Clock;
  log: BackupsLog;
  metrics: Pick<Metrics, 'backupSucceeded' | 'backupFailed'>;
}

export class Backups {
  private status: BackupStatus = { lastSuccessAt: null, lastFile: null, lastError: null };
  private running: Promise<void> | null = null;

  constructor(private readonly options: BackupsOptions) {}

  /** Picks up the newest backup an earlier run left, so /readyz and /metrics know its age after a restart. */
  loadExisting(): void {
    this.removeAbandonedPartials();
    const newest = this.scheduledFiles().at(-1);
    if (!newest) return;
    this.status = {
      ...this.status,
      lastSuccessAt: newest.at,
      lastFile: path.join(this.options.dir, newest.name),
    };
    this.options.metrics.backupSucceeded(newest.at);
  }

  current(): BackupStatus {
    return { ...this.status };
  }

  /** What /readyz shows: the newest good backup, its age on the injected clock, the latest failure. */
  report(): { lastSuccessAt: string | null; ageSeconds: number | null; lastError: string | null } {
    const { lastSuccessAt, lastError } = this.status;
    return {
      lastSuccessAt: lastSuccessAt?.toISOString() ?? null,
      ageSeconds: lastSuccessAt
        ? Math.max(0, Math.floor((this.options.clock.now().getTime() - lastSuccessAt.getTime()) / 1000))
        : null,
      lastError,
    };
  }

  /**
   * Takes one backup and prunes; never rejects. A tick that comes while the previous backup still runs
   * (a large database on a slow disk) is skipped rather than queued: two copies at once would only race.
   */
  run(): Promise<void> {
    this.running ??= this.backup().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  /** Resolves once no backup is in progress (tests, shutdown). */
  async idle(): Promise<void> {
    await this.running;
  }

  private async backup(): Promise<void> {
    const { sqlite, dir, clock, log, metrics } = this.options;
    const at = clock.now();
    const file = path.join(dir, backupFileName(at));
    try {
      fs.mkdirSync(dir, { recursive: true });
      const started = performance.now();
      const bytes = await backupDatabase(sqlite, file);
      this.status = { lastSuccessAt: at, lastFile: file, lastError: null };
      metrics.backupSucceeded(at);
      log.info(
        { backup: file, bytes, ms: Math.round(performance.now() - started) },
        'backed up the database',
      );
    } catch (err) {
      this.status = { ...this.status, lastError: err instanceof Error ? err.message : String(err) };
      metrics.backupFailed();
      log.error({ err, backup: file }, 'scheduled database backup failed');
      return;
    }
    this.prune();
    this.removeAbandonedPartials();
  }

  /** Deletes the temporary files of copies that never finished (see ABANDONED_PARTIAL_MS). */
  private removeAbandonedPartials(): void {
    let names: string[];
    try {
      names = fs.readdirSync(this.options.dir);
    } catch {
      return;
    }
    const cutoff = this.options.clock.now().getTime() - ABANDONED_PARTIAL_MS;
    for (const name of names.filter((n) => PARTIAL_NAME.test(n))) {
      const file = path.join(this.options.dir, name);
      try {
        if (fs.statSync(file).mtimeMs >= cutoff) continue;
        fs.rmSync(file, { force: true });
        this.options.log.info({ file }, 'deleted an unfinished backup copy left by an earlier process');
      } catch (err) {
        this.options.log.error({ err, file }, 'could not delete an unfinished backup copy');
      }
    }
  }

  /** Deletes all but the newest `keep` scheduled backups; a file that will not go is logged and left. */
  private prune(): void {
    const files = this.scheduledFiles();
    for (const old of files.slice(0, Math.max(0, files.length - this.options.keep))) {
      const file = path.join(this.options.dir, old.name);
      try {
        fs.rmSync(file, { force: true });
      } catch (err) {
        this.options.log.error({ err, backup: file }, 'could not delete an old database backup');
      }
    }
  }

  /** Scheduled backups in the folder, oldest first. */
  private scheduledFiles(): { name: string; at: Date }[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.options.dir);
    } catch {
      return [];
    }
    return names
      .flatMap((name) => {
        const at = timeOfName(name);
        return at ? [{ name, at }] : [];
      })
      .sort((a, b) => a.at.getTime() - b.at.getTime());
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    backups: Backups;
  }
}

/** Registered with the modules (app.ts); the job starts once the app is ready, on the injected clock. */
export default fp<ModuleOptions>(
  async (app, { config, clock, jobs }) => {
    const backups = new Backups({
      sqlite: sqliteOf(app.db),
      dir: config.backups.dir,
      keep: config.backups.keep,
      clock,
      log: app.log.child({ module: 'backups' }),
      metrics: app.metrics,
    });
    app.decorate('backups', backups);
    backups.loadExisting();

    app.addHook('onReady', async () => {
      if (config.backups.everyMs > 0)
        jobs.every('back up the database', config.backups.everyMs, () => backups.run());
    });
    // Before the database closes (onClose hooks run in reverse order): let a copy in progress finish.
    app.addHook('onClose', async () => backups.idle());
  },
  { name: 'backups-module', fastify: '5.x', dependencies: ['db', 'metrics'] },
);
