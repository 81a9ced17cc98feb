import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  ADMIN_PASSWORD,
  createAreaTree,
  createTestApp,
  problem,
  USER_PASSWORD,
  type TestApp,
} from './support/app.js';
import { ManualClock } from './support/clock.js';
import { LoginThrottle, type LoginLimits } from '../src/modules/auth/login-throttle.js';
import { AppError } from '../src/errors.js';
import type * as crypto from '../src/lib/crypto.js';
import { verifyPassword } from '../src/lib/crypto.js';

// The real verifyPassword, counted: how many guesses reached the slow hash is what the throttle limits.
vi.mock('../src/lib/crypto.js', async (importOriginal) => {
  const actual = await importOriginal<typeof crypto>();
  return { ...actual, verifyPassword: vi.fn(actual.verifyPassword) };
});

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

  it('revokes only the token used for logout, and audits it', async () => {
    const { communeA } = await createAreaTree(t);
    const other = await t.createUser('broadcaster', communeA.id);
    const token = await t.login('admin', ADMIN_PASSWORD);
    expect((await t.request('POST', '/api/v1/auth/logout', { token })).statusCode).toBe(204);
    expect((await t.request('GET', '/api/v1/areas', { token })).statusCode).toBe(401);
    // The same user's other session and another user's session are untouched.
    expect((await t.request('GET', '/api/v1/areas', { token: t.adminToken })).statusCode).toBe(200);
    expect((await t.request('GET', '/api/v1/areas', { token: other })).statusCode).toBe(200);
    expect(t.query("SELECT action FROM audit_log WHERE action = 'auth.logout'")).toHaveLength(1);
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

describe('login throttle over HTTP', () => {
  let t: TestApp;
  let clock: ManualClock;
  beforeEach(async () => {
    clock = new ManualClock();
    t = await createTestApp({ clock });
  });
  afterEach(async () => t.close());

  const loginFrom = (remoteAddress: string, username: string, password: string) =>
    t.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      remoteAddress,
      payload: { username, password },
    });
  const failedLogins = () => t.query("SELECT id FROM audit_log WHERE action = 'auth.login_failed'").length;

  it('verifies at most five of 40 guesses sent in parallel; the others get 429 without being checked', async () => {
    vi.mocked(verifyPassword).mockClear();
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) => loginFrom('10.0.0.66', 'admin', `guess-${i}`)),
    );
    const statuses = answers.map((r) => r.statusCode);
    expect(statuses.filter((s) => s === 401)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(35);
    // Each verified wrong guess leaves one audit row; the refused ones never reached the password check.
    expect(failedLogins()).toBe(5);
    expect(vi.mocked(verifyPassword)).toHaveBeenCalledTimes(5);
    const refused = answers.find((r) => r.statusCode === 429)!;
    expect(problem(refused).code).toBe('too_many_requests');
    expect(Number(refused.headers['retry-after'])).toBe(900);
  });

  it('does not let a flood from one address lock the real user out from another', async () => {
    for (let i = 0; i < 30; i++) await loginFrom('203.0.113.66', 'admin', `guess-${i}`);
    expect((await loginFrom('203.0.113.66', 'admin', ADMIN_PASSWORD)).statusCode).toBe(429);
    expect(failedLogins()).toBe(5);
    const fromOffice = await loginFrom('198.51.100.7', 'admin', ADMIN_PASSWORD);
    expect(fromOffice.statusCode).toBe(200);
  });

  it('stops one address trying many usernames, not the others', async () => {
    for (let i = 0; i < 20; i++) {
      expect((await loginFrom('203.0.113.9', `ghost${i}`, 'wrong-password')).statusCode).toBe(401);
    }
    expect((await loginFrom('203.0.113.9', 'admin', ADMIN_PASSWORD)).statusCode).toBe(429);
    expect((await loginFrom('203.0.113.10', 'admin', ADMIN_PASSWORD)).statusCode).toBe(200);
  });

  it('counts wrong current passwords on POST /auth/password against the same limit', async () => {
    for (let i = 0; i < 5; i++) {
      const res = await t.request('POST', '/api/v1/auth/password', {
        token: t.adminToken,
        body: { currentPassword: `guess-${i}`, newPassword: 'mật-khẩu-mới-dài' },
      });
      expect(res.statusCode).toBe(400);
    }
    const blocked = await t.request('POST', '/api/v1/auth/password', {
      token: t.adminToken,
      body: { currentPassword: ADMIN_PASSWORD, newPassword: 'mật-khẩu-mới-dài' },
    });
    expect(blocked.statusCode).toBe(429);
    clock.advance(15 * 60_000);
    const later = await t.request('POST', '/api/v1/auth/password', {
      token: t.adminToken,
      body: { currentPassword: ADMIN_PASSWORD, newPassword: 'mật-khẩu-mới-dài' },
    });
    expect(later.statusCode).toBe(204);
  });
});

describe('LoginThrottle', () => {
  const limits: LoginLimits = {
    perUsernameAndAddress: 5,
    perAddress: 20,
    perUsername: 100,
    windowMs: 900_000,
  };
  /** Seconds to wait when refused, 0 when the attempt was let through (and charged). */
  const tryOnce = async (throttle: LoginThrottle, username: string, address: string) => {
    try {
      await throttle.attempt(username, address);
      return 0;
    } catch (err) {
      if (err instanceof AppError && err.code === 'too_many_requests') return err.extra.retryAfterS;
      throw err;
    }
  };

  it('allows five wrong guesses per username and address, until the window of the injected clock ends', async () => {
    const clock = new ManualClock();
    const throttle = new LoginThrottle(clock, limits);
    for (let i = 0; i < 5; i++) expect(await tryOnce(throttle, 'an', '10.0.0.1')).toBe(0);
    expect(await tryOnce(throttle, 'an', '10.0.0.1')).toBe(900);
    expect(await tryOnce(throttle, 'an', '10.0.0.2')).toBe(0);
    clock.advance(600_000);
    expect(await tryOnce(throttle, 'an', '10.0.0.1')).toBe(300);
    clock.advance(300_000);
    expect(await tryOnce(throttle, 'an', '10.0.0.1')).toBe(0);
  });

  it('forgives the guesses of a pair once the password was right', async () => {
    const throttle = new LoginThrottle(new ManualClock(), limits);
    for (let i = 0; i < 4; i++) await tryOnce(throttle, 'an', '10.0.0.1');
    await throttle.succeeded(await throttle.attempt('an', '10.0.0.1'));
    for (let i = 0; i < 5; i++) expect(await tryOnce(throttle, 'an', '10.0.0.1')).toBe(0);
    expect(await tryOnce(throttle, 'an', '10.0.0.1')).toBeGreaterThan(0);
  });

  it('limits a username loosely across addresses, and never counts attempts a stricter limit refused', async () => {
    const throttle = new LoginThrottle(new ManualClock(), limits);
    // One address hammering: only its first five attempts reach the per-username count.
    for (let i = 0; i < 50; i++) await tryOnce(throttle, 'admin', '10.9.9.9');
    for (let a = 0; a < 19; a++) {
      for (let i = 0; i < 5; i++) expect(await tryOnce(throttle, 'admin', `10.1.0.${a}`)).toBe(0);
    }
    // 100 wrong guesses from 20 addresses: the username is now slowed everywhere, other users are not.
    expect(await tryOnce(throttle, 'admin', '10.2.0.1')).toBeGreaterThan(0);
    expect(await tryOnce(throttle, 'binh', '10.2.0.1')).toBe(0);
  });

  it('counts an IPv6 /64 as one address', async () => {
    const throttle = new LoginThrottle(new ManualClock(), limits);
    for (let i = 0; i < 20; i++)
      expect(await tryOnce(throttle, `user${i}`, `2001:db8:1:2::${i + 1}`)).toBe(0);
    expect(await tryOnce(throttle, 'another', '2001:0db8:0001:0002:ffff::9')).toBeGreaterThan(0);
    expect(await tryOnce(throttle, 'another', '2001:db8:1:3::1')).toBe(0);
  });
});

describe('changing your own password', () => {
  let t: TestApp;
  beforeEach(async () => {
    t = await createTestApp();
  });
  afterEach(async () => t.close());

  const change = (token: string, body: unknown) =>
    t.request('POST', '/api/v1/auth/password', { token, body });

  it('changes it, keeps the calling session and revokes the others', async () => {
    const other = await t.login('admin', ADMIN_PASSWORD);
    const res = await change(t.adminToken, {
      currentPassword: ADMIN_PASSWORD,
      newPassword: 'Mật-khẩu-mới-2026',
    });
    expect(res.statusCode).toBe(204);
    expect((await t.request('GET', '/api/v1/auth/me', { token: t.adminToken })).statusCode).toBe(200);
    expect((await t.request('GET', '/api/v1/auth/me', { token: other })).statusCode).toBe(401);
    const old = await t.request('POST', '/api/v1/auth/login', {
      body: { username: 'admin', password: ADMIN_PASSWORD },
    });
    expect(old.statusCode).toBe(401);
    await t.login('admin', 'Mật-khẩu-mới-2026');
    expect(t.query("SELECT actor_username FROM audit_log WHERE action = 'auth.password_change'")).toEqual([
      { actor_username: 'admin' },
    ]);
  });

  it('refuses a wrong current password or a weak new one, naming the field, and changes nothing', async () => {
    const wrong = await change(t.adminToken, { currentPassword: 'not-it', newPassword: 'Mật-khẩu-mới-2026' });
    expect(wrong.statusCode).toBe(400);
    expect(problem(wrong).errors?.map((e) => e.field)).toEqual(['body.currentPassword']);
    const weak = await change(t.adminToken, { currentPassword: ADMIN_PASSWORD, newPassword: 'short' });
    expect(weak.statusCode).toBe(400);
    expect(problem(weak).errors?.map((e) => e.field)).toEqual(['body.newPassword']);
    const same = await change(t.adminToken, { currentPassword: ADMIN_PASSWORD, newPassword: ADMIN_PASSWORD });
    expect(problem(same).errors?.map((e) => e.field)).toEqual(['body.newPassword']);
    await t.login('admin', ADMIN_PASSWORD);
    expect(t.query("SELECT id FROM audit_log WHERE action = 'auth.password_change_failed'")).toHaveLength(1);
  });

  it('needs a token', async () => {
    const res = await t.request('POST', '/api/v1/auth/password', {
      body: { currentPassword: ADMIN_PASSWORD, newPassword: 'Mật-khẩu-mới-2026' },
    });
    expect(res.statusCode).toBe(401);
  });
});

describe('TRUST_PROXY', () => {
  let t: TestApp | undefined;
  afterEach(async () => t?.close());

  /** The address the server saw, as recorded for a failed login. */
  const seenAddress = async (remoteAddress: string, forwardedFor: string) => {
    await t!.app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      remoteAddress,
      headers: { 'x-forwarded-for': forwardedFor },
      payload: { username: 'ghost', password: 'wrong-password' },
    });
    const rows = t!.query(
      "SELECT json_extract(details, '$.address') AS address FROM audit_log WHERE action = 'auth.login_failed' ORDER BY id DESC LIMIT 1",
    ) as { address: string }[];
    return rows[0]?.address;
  };

  it('believes X-Forwarded-For from a listed proxy only', async () => {
    t = await createTestApp({ env: { TRUST_PROXY: '127.0.0.1, 10.20.0.0/16' } });
    expect(await seenAddress('127.0.0.1', '203.0.113.5')).toBe('203.0.113.5');
    expect(await seenAddress('10.20.3.4', '203.0.113.6')).toBe('203.0.113.6');
    expect(await seenAddress('192.0.2.1', '203.0.113.7')).toBe('192.0.2.1');
  });

  it('ignores X-Forwarded-For when the caller is not a listed proxy', async () => {
    t = await createTestApp({ env: { TRUST_PROXY: '10.0.0.1' } });
    expect(await seenAddress('127.0.0.1', '203.0.113.5')).toBe('127.0.0.1');
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
