import type Database from 'better-sqlite3';

/** What /readyz reports per dependency: `ok`, or why it is not ready. */
export type CheckResult = { ok: true } | { ok: false; reason: string };

/**
 * A write wait longer than this is reported as "not writable" rather than blocking the event loop (better-
 * sqlite3 is synchronous) for the connection's whole busy timeout.
 */
const PROBE_BUSY_TIMEOUT_MS = 250;

/**
 * Whether the database accepts writes now: takes the write lock and writes the header's user_version (its
 * own value, so nothing changes), then rolls back. `BEGIN IMMEDIATE` alone is not enough: it succeeds on a
 * read-only connection, a read-only file or a `query_only` connection; the write is what fails there
 * (SQLITE_READONLY), as it does when another process holds the write lock (SQLITE_BUSY). A full disk is
 * only seen at commit, which a probe that must not change anything cannot reach.
 */
export function checkDatabaseWritable(sqlite: Database.Database): CheckResult {
  if (!sqlite.open) return { ok: false, reason: 'the database is closed' };
  // Our own connection is inside a write: it is writable (and a nested BEGIN would fail).
  if (sqlite.inTransaction) return { ok: true };
  const busyTimeout = sqlite.pragma('busy_timeout', { simple: true }) as number;
  sqlite.pragma(`busy_timeout = ${Math.min(busyTimeout, PROBE_BUSY_TIMEOUT_MS)}`);
  try {
    sqlite.exec('BEGIN IMMEDIATE');
    try {
      const version = sqlite.pragma('user_version', { simple: true }) as number;
      sqlite.pragma(`user_version = ${Math.trunc(version)}`);
    } finally {
      sqlite.exec('ROLLBACK');
    }
    return { ok: true };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const message = err instanceof Error ? err.message : String(err);
    return { ok: false, reason: `not writable: ${typeof code === 'string' ? `${code} ` : ''}${message}` };
  } finally {
    sqlite.pragma(`busy_timeout = ${busyTimeout}`);
  }
}

export function checkBrokerListening(broker: { listening: boolean }): CheckResult {
  return broker.listening
    ? { ok: true }
    : { ok: false, reason: 'the MQTT listener is not accepting connections' };
}
