import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ADMIN_PASSWORD,
  createAreaTree,
  createTestApp,
  problem,
  USER_PASSWORD,
  type TestApp,
} from './support/app.js';
import { ManualClock } from './support/clock.js';

describe('authentication', () => {
  let t: TestApp;
  let clock: ManualClock;
  beforeEach(async () => {
    clock = new ManualClock();
    t = await createTestApp({ clock });
  });
  afterEach(async () => t.close());

  it('GET /healthz answers without a token', async () => {
    const res = await t.request('GET', '/healthz');
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ok' });
  });

  it('refuses every API route without a token, with problem+json', async () => {
    for (const url of [
      '/api/v1/areas',
      '/api/v1/devices',
      '/api/v1/commands',
      '/api/v1/users',
      '/api/v1/auth/me',
    ]) {
      const res = await t.request('GET', url);
      expect(res.statusCode, url).toBe(401);
      expect(problem(res).code).toBe('unauthenticated');
    }
  });

  it('refuses a malformed or unknown bearer token', async () => {
    for (const header of ['Bearer nope', 'Bearer loa_unknown', 'Basic YWRtaW46eA==', 'Bearer']) {
      const res = await t.app.inject({
        method: 'GET',
        url: '/api/v1/areas',
        headers: { authorization: header },
      });
      expect(res.statusCode, header).toBe(401);
    }
  });

  it('logs in and tells who the token belongs to', async () => {
    const res = await t.request('POST', '/api/v1/auth/login', {
      body: { username: 'admin', password: ADMIN_PASSWORD },
    });
    expect(res.statusCode).toBe(200);
    const body = res.json<{ token: string; expiresAt: string; user: { username: string; role: string } }>();
    expect(body.user).toMatchObject({ username: 'admin', role: 'admin' });
    const me = await t.request('GET', '/api/v1/auth/me', { token: body.token });
    expect(me.json()).toMatchObject({ user: { username: 'admin', role: 'admin' } });
  });

  it('gives the same answer for a wrong password and an unknown user', async () => {
    const wrong = await t.request('POST', '/api/v1/auth/login', {
      body: { username: 'admin', password: 'wrong-password' },
    });
    const unknown = await t.request('POST', '/api/v1/auth/login', {
      body: { username: 'ghost', password: 'wrong-password' },
    });
    expect(wrong.statusCode).toBe(401);
    expect(unknown.statusCode).toBe(401);
    expect(problem(wrong)).toEqual(problem(unknown));
  });

  it('validates the login body and names the field', async () => {
    const res = await t.request('POST', '/api/v1/auth/login', { body: { username: 'admin' } });
    expect(res.statusCode).toBe(400);
    expect(problem(res).errors?.map((e) => e.field)).toEqual(['body.password']);
  });

  it('answers non-JSON bodies with a problem, not a crash', async () => {
    const res = await t.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      headers: { 'content-type': 'application/json' },
      payload: '{"username": "admin", ',
    });
    expect(res.statusCode).toBe(400);
    expect(problem(res).code).toBe('bad_request');
  });

  it('rate-limits repeated failures with 429 and Retry-After, then lets the user in again', async () => {
    for (let i = 0; i < 5; i++) {
      const res = await t.request('POST', '/api/v1/auth/login', {
        body: { username: 'admin', password: `bad-${i}` },
      });
      expect(res.statusCode).toBe(401);
    }
    const blocked = await t.request('POST', '/api/v1/auth/login', {
      body: { username: 'admin', password: ADMIN_PASSWORD },
    });
    expect(blocked.statusCode).toBe(429);
    expect(problem(blocked).code).toBe('too_many_requests');
    expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(0);

    clock.advance(15 * 60_000);
    const again = await t.request('POST', '/api/v1/auth/login', {
      body: { username: 'admin', password: ADMIN_PASSWORD },
    });
    expect(again.statusCode).toBe(200);
  });

  it('expires tokens after their lifetime', async () => {
    clock.advance(11 * 3_600_000);
    expect((await t.request('GET', '/api/v1/areas', { token: t.adminToken })).statusCode).toBe(200);
    clock.advance(2 * 3_600_000);
    const res = await t.request('GET', '/api/v1/areas', { token: t.adminToken });
    expect(res.statusCode).toBe(401);
    expect(problem(res).detail).toMatch(/expired/);
  });

  it('revokes a token on logout', async () => {
    const token = await t.login('admin', ADMIN_PASSWORD);
    expect((await t.request('POST', '/api/v1/auth/logout', { token })).statusCode).toBe(204);
    expect((await t.request('GET', '/api/v1/areas', { token })).statusCode).toBe(401);
    expect((await t.request('GET', '/api/v1/areas', { token: t.adminToken })).statusCode).toBe(200);
  });

  it('stores passwords and tokens only as hashes', async () => {
    const { communeA } = await createAreaTree(t);
    await t.createUser('broadcaster', communeA.id, 'phat.thanh');
    const token = await t.login('phat.thanh', USER_PASSWORD);
    const dump = JSON.stringify([t.query('SELECT * FROM users'), t.query('SELECT * FROM api_tokens')]);
    expect(dump).not.toContain(USER_PASSWORD);
    expect(dump).not.toContain(ADMIN_PASSWORD);
    expect(dump).not.toContain(token);
    expect(dump).toContain('scrypt$');
  });

  it('records logins in the audit log', async () => {
    await t.request('POST', '/api/v1/auth/login', { body: { username: 'admin', password: 'nope-nope' } });
    const res = await t.request('GET', '/api/v1/audit', { token: t.adminToken });
    const actions = res.json<{ items: { action: string }[] }>().items.map((i) => i.action);
    expect(actions).toContain('auth.login');
    expect(actions).toContain('auth.login_failed');
  });
});

describe('first start', () => {
  it('creates admin with a generated password when ADMIN_PASSWORD is unset, and logs it once', async () => {
    const lines: string[] = [];
    const { buildApp } = await import('../src/app.js');
    const { loadConfig } = await import('../src/config.js');
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-first-'));
    const config = loadConfig({ DATA_DIR: dataDir, PORT: '0', MQTT_PORT: '0', HOST: '127.0.0.1' });
    const stream = { write: (line: string) => lines.push(line) };
    const app = await buildApp({ config, logger: { level: 'info', stream } });
    await app.ready();
    const entry = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.initialPassword);
    expect(entry).toBeDefined();
    const login = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { username: 'admin', password: entry!.initialPassword },
    });
    expect(login.statusCode).toBe(200);
    await app.close();

    // Second start on the same database: nothing is generated or printed again.
    lines.length = 0;
    const again = await buildApp({ config, logger: { level: 'info', stream } });
    await again.ready();
    expect(lines.some((l) => l.includes('initialPassword'))).toBe(false);
    await again.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });
});

describe('HTTP plumbing', () => {
  let t: TestApp;
  beforeEach(async () => {
    t = await createTestApp();
  });
  afterEach(async () => t.close());

  it('tags every response with a request id, keeping a well-formed one the client sent', async () => {
    const own = await t.app.inject({
      method: 'GET',
      url: '/healthz',
      headers: { 'x-request-id': 'xa-hai-lang-42' },
    });
    expect(own.headers['x-request-id']).toBe('xa-hai-lang-42');
    const generated = await t.app.inject({
      method: 'GET',
      url: '/healthz',
      headers: { 'x-request-id': 'bad id\n' },
    });
    expect(generated.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('answers unknown routes and wrong content types with problem+json', async () => {
    const missing = await t.request('GET', '/api/v1/nothing-here', { token: t.adminToken });
    expect(missing.statusCode).toBe(404);
    expect(problem(missing).code).toBe('not_found');
    const text = await t.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      headers: { 'content-type': 'application/xml' },
      payload: '<login>admin</login>',
    });
    expect(text.statusCode).toBe(415);
    expect(problem(text).code).toBe('unsupported_media_type');
  });

  it('serves the OpenAPI document generated from the schemas, with bearer security', async () => {
    const res = await t.request('GET', '/docs/json');
    expect(res.statusCode).toBe(200);
    const doc = res.json<{
      openapi: string;
      paths: Record<string, unknown>;
      components: { securitySchemes: unknown };
    }>();
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/api/v1/commands', '/api/v1/devices/{id}', '/api/v1/areas', '/healthz']),
    );
    expect(doc.components.securitySchemes).toEqual({ bearer: { type: 'http', scheme: 'bearer' } });
    expect((await t.request('GET', '/docs')).statusCode).toBeLessThan(400);
  });
});
