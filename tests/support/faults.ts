/**
 * Faults outside Loa's control, made real: a second connection to the app's SQLite file adds a trigger that
 * makes the database refuse writes to a table, as a full disk would, and drops it again.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';

export class RefusedWrites {
  private readonly outsider: Database.Database;

  constructor(dataDir: string) {
    this.outsider = new Database(path.join(dataDir, 'loa.sqlite'));
  }

  refuse(table: string, operation: 'INSERT' | 'UPDATE'): void {
    this.outsider.exec(
      `CREATE TRIGGER disk_full_${table} BEFORE ${operation} ON ${table} BEGIN SELECT RAISE(ABORT, 'disk full'); END`,
    );
  }

  allow(table: string): void {
    this.outsider.exec(`DROP TRIGGER disk_full_${table}`);
  }

  /** The outside connection itself, for other tricks (renaming a table under the app). */
  get db(): Database.Database {
    return this.outsider;
  }

  close(): void {
    this.outsider.close();
  }
}

/** The current value of one Prometheus series (`name{labels}`) of the app; NaN when absent. */
export async function metricValue(app: FastifyInstance, series: string): Promise<number> {
  const text = await app.metrics.render();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return Number(line?.split(' ').pop() ?? NaN);
}
