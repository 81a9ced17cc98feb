/**
 * Row counters read straight from the server's SQLite file, for bench/health.ts: how many telemetry
 * samples and presence transitions the server has written. Counting in the database, rather than trusting
 * the server's word, shows what really reached the disk.
 *
 * Opened read-only while the server writes: the server runs in WAL mode, where a reader sees the last
 * committed transaction and never blocks the writer (nor the writer it). A reader does hold the WAL from
 * being checkpointed back into the main file while a read runs; these reads take microseconds.
 */
import Database from 'better-sqlite3';

export interface RowCounts {
  /** Rows in telemetry_samples (nothing prunes them during a run: they are kept TELEMETRY_RAW_HOURS). */
  telemetrySamples: number;
  /** The highest presence_transitions id, likewise. */
  presenceTransitions: number;
}

export class DbCounter {
  private readonly db: Database.Database;
  private readonly sampleCount: Database.Statement<[], { n: number }>;
  private readonly maxTransitionId: Database.Statement<[], { n: number | null }>;

  constructor(file: string) {
    this.db = new Database(file, { readonly: true, fileMustExist: true });
    // telemetry_samples has no id any more (keyed by device and time, WITHOUT ROWID), so its rows are
    // counted: a scan of the table, a few milliseconds per 100,000 rows a run holds. It runs in this
    // process, not the server's, so the server's CPU figures do not include it. Nothing deletes samples
    // during a run (they are kept TELEMETRY_RAW_HOURS), so the difference of two counts is the number of
    // rows inserted in between. presence_transitions keeps its AUTOINCREMENT id: max(id) is one descent.
    this.sampleCount = this.db.prepare('SELECT count(*) AS n FROM telemetry_samples');
    this.maxTransitionId = this.db.prepare('SELECT max(id) AS n FROM presence_transitions');
  }

  counts(): RowCounts {
    return {
      telemetrySamples: this.sampleCount.get()?.n ?? 0,
      presenceTransitions: this.maxTransitionId.get()?.n ?? 0,
    };
  }

  /** Idempotent: the bench closes it as soon as it is done, and the clean-up closes it on failure. */
  close(): void {
    if (this.db.open) this.db.close();
  }
}
