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
  /** The highest telemetry_samples id: rows ever inserted (the ids are AUTOINCREMENT, never reused). */
  telemetrySamples: number;
  /** The highest presence_transitions id, likewise. */
  presenceTransitions: number;
}

export class DbCounter {
  private readonly db: Database.Database;
  private readonly maxSampleId: Database.Statement<[], { n: number | null }>;
  private readonly maxTransitionId: Database.Statement<[], { n: number | null }>;

  constructor(file: string) {
    this.db = new Database(file, { readonly: true, fileMustExist: true });
    // max(id) on the rowid is one B-tree descent; count(*) would scan an index of a table that grows by
    // thousands of rows a second, inside the measured window. Nothing deletes rows during a run
    // (telemetry is pruned after TELEMETRY_RETENTION_DAYS), so the difference of two maxima is the
    // number of rows inserted in between.
    this.maxSampleId = this.db.prepare('SELECT max(id) AS n FROM telemetry_samples');
    this.maxTransitionId = this.db.prepare('SELECT max(id) AS n FROM presence_transitions');
  }

  counts(): RowCounts {
    return {
      telemetrySamples: this.maxSampleId.get()?.n ?? 0,
      presenceTransitions: this.maxTransitionId.get()?.n ?? 0,
    };
  }

  /** Idempotent: the bench closes it as soon as it is done, and the clean-up closes it on failure. */
  close(): void {
    if (this.db.open) this.db.close();
  }
}
