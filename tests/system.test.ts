/**
 * /readyz: the unauthenticated readiness probe for load balancers, orchestrators and the Docker HEALTHCHECK.
 * Readiness is checked for real: a write lock taken by another connection, a connection that may not write,
 * a broker that stopped listening.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestApp, problem, type TestApp } from './support/app.js';

describe('probes', () => {
  let t: TestApp;
  beforeEach(async () => {
    t = await createTestApp();
  });
  afterEach(async () => t.close());

  const appConnection = () => (t.app.db as unknown as { $client: Database.Database }).$client;

  it('GET /readyz is 200 when the database takes writes and the broker listens, without authentication', async () => {
    const res = await t.request('GET', '/readyz');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({
      status: 'ready',
      checks: { database: 'ok', broker: 'ok' },
      // No scheduled backup yet (tests/backups.test.ts covers them).
      backup: { lastSuccessAt: null, ageSeconds: null, lastError: null },
    });
  });

  it('GET /readyz is 503 while another process holds the write lock, and 200 once it lets go', async () => {
    const other = new Database(path.join(t.dataDir, 'loa.sqlite'));
    const busyTimeout = appConnection().pragma('busy_timeout', { simple: true });
    try {
      other.exec('BEGIN IMMEDIATE');
      const res = await t.request('GET', '/readyz');
      expect(res.statusCode).toBe(503);
      const body = problem(res);
      expect(body.code).toBe('not_ready');
      const { checks } = res.json<{ checks: { database: string; broker: string } }>();
      expect(checks.broker).toBe('ok');
      expect(checks.database).toMatch(/SQLITE_BUSY/);
      expect(body.detail).toMatch(/database/);
      // The probe shortened the wait for the lock only for itself.
      expect(appConnection().pragma('busy_timeout', { simple: true })).toBe(busyTimeout);

      other.exec('ROLLBACK');
      expect((await t.request('GET', '/readyz')).statusCode).toBe(200);
    } finally {
      other.close();
    }
  });

  it('GET /readyz is 503 when the database connection may not write', async () => {
    appConnection().pragma('query_only = ON');
    const res = await t.request('GET', '/readyz');
    expect(res.statusCode).toBe(503);
    expect(problem(res).code).toBe('not_ready');
    expect(res.json<{ checks: { database: string } }>().checks.database).toMatch(/SQLITE_READONLY/);
    appConnection().pragma('query_only = OFF');
  });

  it('the write probe leaves the database as it was', async () => {
    const before = appConnection().pragma('user_version', { simple: true });
    const timeout = appConnection().pragma('busy_timeout', { simple: true });
    expect((await t.request('GET', '/readyz')).statusCode).toBe(200);
    expect(appConnection().pragma('user_version', { simple: true })).toBe(before);
    expect(appConnection().pragma('busy_timeout', { simple: true })).toBe(timeout);
    expect(appConnection().inTransaction).toBe(false);
  });

  it('GET /readyz is 503 naming the broker once the MQTT listener has stopped', async () => {
    await t.app.broker.close();
    const res = await t.request('GET', '/readyz');
    expect(res.statusCode).toBe(503);
    const body = problem(res);
    expect(body.detail).toMatch(/broker/);
    expect(res.json<{ checks: { database: string; broker: string } }>().checks).toEqual({
      database: 'ok',
      broker: expect.stringMatching(/not accepting/) as unknown,
    });
  });
});
