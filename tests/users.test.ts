import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';

describe('users', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  beforeEach(async () => {
    t = await createTestApp();
    tree = await createAreaTree(t);
  });
  afterEach(async () => t.close());

  const body = (extra: Record<string, unknown> = {}) => ({
    username: 'Nguyen.Van.A',
    password: 'mật-khẩu-dài-1',
    displayName: 'Nguyễn Văn A',
    role: 'broadcaster',
    areaId: tree.communeA.id,
    ...extra,
  });

  it('lets an admin create a user who can then log in and act in their area', async () => {
    const res = await t.request('POST', '/api/v1/users', { token: t.adminToken, body: body() });
    expect(res.statusCode).toBe(201);
    expect(res.json()).toMatchObject({
      username: 'nguyen.van.a',
      displayName: 'Nguyễn Văn A',
      role: 'broadcaster',
    });
    expect(res.json()).not.toHaveProperty('passwordHash');
    const token = await t.login('nguyen.van.a', 'mật-khẩu-dài-1');
    expect((await t.request('GET', '/api/v1/areas', { token })).statusCode).toBe(200);
  });

  it('lists users for an admin', async () => {
    await t.request('POST', '/api/v1/users', { token: t.adminToken, body: body() });
    const res = await t.request('GET', '/api/v1/users', { token: t.adminToken });
    expect(res.json<{ items: { username: string }[] }>().items.map((u) => u.username)).toEqual([
      'admin',
      'nguyen.van.a',
    ]);
  });

  it('is for admins only', async () => {
    const token = await t.createUser('district_operator', tree.district.id);
    expect((await t.request('POST', '/api/v1/users', { token, body: body() })).statusCode).toBe(403);
    expect((await t.request('GET', '/api/v1/users', { token })).statusCode).toBe(403);
  });

  it('refuses a taken username with 409 naming the field', async () => {
    await t.request('POST', '/api/v1/users', { token: t.adminToken, body: body() });
    const again = await t.request('POST', '/api/v1/users', {
      token: t.adminToken,
      body: body({ username: 'NGUYEN.van.a' }),
    });
    expect(again.statusCode).toBe(409);
    expect(problem(again).errors?.[0]?.field).toBe('body.username');
  });

  it('validates every field', async () => {
    const res = await t.request('POST', '/api/v1/users', {
      token: t.adminToken,
      body: { username: 'a', password: 'short', role: 'king' },
    });
    expect(res.statusCode).toBe(400);
    expect(
      problem(res)
        .errors?.map((e) => e.field)
        .sort(),
    ).toEqual(['body.password', 'body.role', 'body.username']);

    const noArea = await t.request('POST', '/api/v1/users', {
      token: t.adminToken,
      body: body({ areaId: undefined }),
    });
    expect(noArea.statusCode).toBe(400);
    expect(problem(noArea).errors?.[0]?.field).toBe('body.areaId');

    const unknownArea = await t.request('POST', '/api/v1/users', {
      token: t.adminToken,
      body: body({ areaId: 'ar_nope' }),
    });
    expect(unknownArea.statusCode).toBe(404);
  });
});
