/** The Idempotency-Key header on POST /api/v1/commands (src/plugins/idempotency.ts, docs/commands.md). */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';

describe('commands: Idempotency-Key', () => {
  let t: TestApp;
  let clock: ManualClock;
  let deviceId: string;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  beforeEach(async () => {
    clock = new ManualClock('2026-06-01T01:00:00.000Z');
    // Tokens outlive the day the test moves through.
    t = await createTestApp({ clock, env: { TOKEN_TTL_HOURS: '72' } });
    tree = await createAreaTree(t);
    deviceId = (await t.createDevice(tree.hamletA.id, 'Cụm loa Đông')).id;
  });
  afterEach(async () => t.close());

  const send = (key: string | undefined, body: unknown, token = t.adminToken) =>
    t.app.inject({
      method: 'POST',
      url: '/api/v1/commands',
      headers: { authorization: `Bearer ${token}`, ...(key !== undefined ? { 'idempotency-key': key } : {}) },
      payload: body as object,
    });
  const stop = () => ({ type: 'stop', targets: { deviceIds: [deviceId] } });
  const commandCount = () => (t.query('SELECT COUNT(*) AS n FROM commands')[0] as { n: number }).n;
  const auditCount = () =>
    (t.query("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'command.create'")[0] as { n: number }).n;

  it('answers the same key again with the first answer and sends nothing more', async () => {
    const first = await send('a1b2-c3d4', stop());
    expect(first.statusCode).toBe(202);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    clock.advance(5_000);
    // Same request, keys in another order: still the same request.
    const again = await send('a1b2-c3d4', { targets: { deviceIds: [deviceId] }, type: 'stop' });
    expect(again.statusCode).toBe(202);
    expect(again.json()).toEqual(first.json());
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(commandCount()).toBe(1);
    expect(auditCount()).toBe(1);
    // Without a key, or with another one, each request acts.
    expect((await send(undefined, stop())).statusCode).toBe(202);
    expect((await send('another-key', stop())).statusCode).toBe(202);
    expect(commandCount()).toBe(3);
  });

  it('acts once when two requests with the same key arrive together', async () => {
    const [a, b] = await Promise.all([send('double-click', stop()), send('double-click', stop())]);
    expect([a.statusCode, b.statusCode]).toEqual([202, 202]);
    expect(b.json()).toEqual(a.json());
    expect(commandCount()).toBe(1);
    expect(auditCount()).toBe(1);
  });

  it('refuses the same key with a different body, naming the header, and sends nothing', async () => {
    expect((await send('k-1', stop())).statusCode).toBe(202);
    const other = await send('k-1', {
      type: 'volume',
      params: { level: 20 },
      targets: { deviceIds: [deviceId] },
    });
    expect(other.statusCode).toBe(422);
    const p = problem(other);
    expect(p.code).toBe('idempotency_key_reused');
    expect(p.errors?.map((e) => e.field)).toEqual(['header.idempotency-key']);
    expect(commandCount()).toBe(1);
  });

  it('keeps keys per user', async () => {
    const other = await t.createUser('district_operator', tree.district.id);
    const mine = await send('shared-key', stop());
    const theirs = await send('shared-key', stop(), other);
    expect([mine.statusCode, theirs.statusCode]).toEqual([202, 202]);
    expect(theirs.json<{ id: string }>().id).not.toBe(mine.json<{ id: string }>().id);
    expect(commandCount()).toBe(2);
  });

  it('does not keep a refused request: the key stays free', async () => {
    const refused = await send('retry-me', { type: 'stop', targets: { deviceIds: ['dev_nope'] } });
    expect(refused.statusCode).toBe(404);
    const accepted = await send('retry-me', stop());
    expect(accepted.statusCode).toBe(202);
    expect(accepted.headers['idempotent-replayed']).toBeUndefined();
  });

  it('validates the key: 1–255 visible ASCII characters', async () => {
    for (const key of ['', 'a b', 'khóa-1', 'x'.repeat(256)]) {
      const res = await send(key, stop());
      expect(res.statusCode, JSON.stringify(key)).toBe(400);
      expect(problem(res).errors?.map((e) => e.field)).toContain('header.idempotency-key');
    }
    expect(commandCount()).toBe(0);
    expect((await send('x'.repeat(255), stop())).statusCode).toBe(202);
    expect((await send('!~"{}', stop())).statusCode).toBe(202);
  });

  it('keeps a key 24 h, then forgets it and prunes it', async () => {
    const first = await send('daily', stop());
    clock.advance(24 * 3_600_000 - 1_000);
    expect((await send('daily', stop())).headers['idempotent-replayed']).toBe('true');
    clock.advance(2_000);
    // Expired though not yet pruned: the key acts again.
    expect(t.query('SELECT key FROM idempotency_keys')).toEqual([{ key: 'daily' }]);
    const later = await send('daily', stop());
    expect(later.statusCode).toBe(202);
    expect(later.headers['idempotent-replayed']).toBeUndefined();
    expect(later.json<{ id: string }>().id).not.toBe(first.json<{ id: string }>().id);
    expect(commandCount()).toBe(2);
    // The hourly prune deletes keys older than 24 h.
    clock.advance(25 * 3_600_000);
    expect(t.query('SELECT key FROM idempotency_keys')).toEqual([]);
  });

  it('documents the header in the OpenAPI description', async () => {
    const spec = (await t.request('GET', '/docs/json')).json<{
      paths: Record<string, Record<string, { parameters?: { in: string; name: string }[] }>>;
    }>();
    const parameters = spec.paths['/api/v1/commands']?.post?.parameters ?? [];
    expect(parameters).toContainEqual(expect.objectContaining({ in: 'header', name: 'idempotency-key' }));
  });
});
