import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ADMIN_PASSWORD,
  createAreaTree,
  createTestApp,
  problem,
  USER_PASSWORD,
  type TestApp,
} from './support/app.js';
import type { Actor } from '../src/lib/scope.js';

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

  it('answers two concurrent creates of one username with one 201 and one 409, never 500', async () => {
    const [a, b] = await Promise.all([
      t.request('POST', '/api/v1/users', { token: t.adminToken, body: body() }),
      t.request('POST', '/api/v1/users', { token: t.adminToken, body: body({ displayName: 'Người khác' }) }),
    ]);
    expect([a.statusCode, b.statusCode].sort()).toEqual([201, 409]);
    const loser = a.statusCode === 409 ? a : b;
    expect(problem(loser).errors?.[0]?.field).toBe('body.username');
    expect(t.query("SELECT id FROM users WHERE username = 'nguyen.van.a'")).toHaveLength(1);
  });
});

describe('managing accounts', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let user: { id: string; username: string };
  let userToken: string;
  beforeEach(async () => {
    t = await createTestApp();
    tree = await createAreaTree(t);
    userToken = await t.createUser('broadcaster', tree.communeA.id, 'phat.thanh.vien');
    user = t.query("SELECT id, username FROM users WHERE username = 'phat.thanh.vien'")[0] as typeof user;
  });
  afterEach(async () => t.close());

  const post = (url: string, token = t.adminToken, body?: unknown) =>
    t.request('POST', url, { token, ...(body !== undefined ? { body } : {}) });
  const loginAs = (username: string, password: string) =>
    t.request('POST', '/api/v1/auth/login', { body: { username, password } });
  const actions = () =>
    (t.query('SELECT action FROM audit_log ORDER BY id') as { action: string }[]).map((r) => r.action);
  const adminId = () => (t.query("SELECT id FROM users WHERE username = 'admin'")[0] as { id: string }).id;

  it('shows one user, with whether it is disabled', async () => {
    const res = await t.request('GET', `/api/v1/users/${user.id}`, { token: t.adminToken });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ username: 'phat.thanh.vien', disabled: false, disabledAt: null });
    expect((await t.request('GET', '/api/v1/users/usr_nope', { token: t.adminToken })).statusCode).toBe(404);
  });

  it('lets an admin reset a password, which revokes the user’s tokens', async () => {
    const res = await post(`/api/v1/users/${user.id}/password`, t.adminToken, {
      newPassword: 'Mật-khẩu-cấp-lại',
    });
    expect(res.statusCode).toBe(204);
    expect((await t.request('GET', '/api/v1/auth/me', { token: userToken })).statusCode).toBe(401);
    expect((await loginAs(user.username, USER_PASSWORD)).statusCode).toBe(401);
    await t.login(user.username, 'Mật-khẩu-cấp-lại');
    expect(actions()).toContain('user.password_reset');

    const weak = await post(`/api/v1/users/${user.id}/password`, t.adminToken, { newPassword: 'short' });
    expect(weak.statusCode).toBe(400);
    expect(problem(weak).errors?.map((e) => e.field)).toEqual(['body.newPassword']);
  });

  it('sends admins to /auth/password for their own password, so a stolen token cannot take the account', async () => {
    const res = await post(`/api/v1/users/${adminId()}/password`, t.adminToken, {
      newPassword: 'Quản-trị-mới-1',
    });
    expect(res.statusCode).toBe(409);
    expect(problem(res).detail).toContain('/api/v1/auth/password');
    await t.login('admin', ADMIN_PASSWORD);
  });

  it('disables a user: tokens revoked, login refused with a clear error, shown as disabled; enables again', async () => {
    const disabled = await post(`/api/v1/users/${user.id}/disable`);
    expect(disabled.statusCode).toBe(200);
    expect(disabled.json()).toMatchObject({ disabled: true, disabledAt: expect.any(String) as unknown });
    expect((await t.request('GET', '/api/v1/areas', { token: userToken })).statusCode).toBe(401);

    const refused = await loginAs(user.username, USER_PASSWORD);
    expect(refused.statusCode).toBe(403);
    expect(problem(refused).code).toBe('account_disabled');
    // A wrong password learns nothing about the account's state.
    const guess = await loginAs(user.username, 'wrong-password');
    expect(problem(guess).code).toBe('invalid_credentials');

    const listed = (await t.request('GET', '/api/v1/users', { token: t.adminToken })).json<{
      items: { username: string; disabled: boolean }[];
    }>();
    expect(listed.items.find((u) => u.username === user.username)?.disabled).toBe(true);

    const enabled = await post(`/api/v1/users/${user.id}/enable`);
    expect(enabled.json()).toMatchObject({ disabled: false, disabledAt: null });
    const token = await t.login(user.username, USER_PASSWORD);
    expect((await t.request('GET', '/api/v1/areas', { token })).statusCode).toBe(200);
    expect(actions()).toEqual(expect.arrayContaining(['user.disable', 'auth.login_refused', 'user.enable']));
  });

  it('deletes a user: their tokens go, the commands they sent stay without a creator', async () => {
    await t.createDevice(tree.hamletA.id);
    const sent = await t.request('POST', '/api/v1/commands', {
      token: userToken,
      body: { type: 'volume', params: { level: 40 }, targets: { areaIds: [tree.communeA.id] } },
    });
    expect(sent.statusCode).toBe(202);
    const commandId = sent.json<{ id: string }>().id;

    expect((await t.request('DELETE', `/api/v1/users/${user.id}`, { token: t.adminToken })).statusCode).toBe(
      204,
    );
    expect(t.query(`SELECT id FROM users WHERE id = '${user.id}'`)).toEqual([]);
    expect(t.query(`SELECT token_hash FROM api_tokens WHERE user_id = '${user.id}'`)).toEqual([]);
    expect(t.query(`SELECT created_by FROM commands WHERE id = '${commandId}'`)).toEqual([
      { created_by: null },
    ]);
    const detail = await t.request('GET', `/api/v1/commands/${commandId}`, { token: t.adminToken });
    expect(detail.json()).toMatchObject({ id: commandId, createdBy: null });
    expect((await t.request('GET', `/api/v1/users/${user.id}`, { token: t.adminToken })).statusCode).toBe(
      404,
    );
    expect(actions()).toContain('user.delete');
  });

  it('keeps an admin from disabling or deleting themselves', async () => {
    for (const res of [
      await post(`/api/v1/users/${adminId()}/disable`),
      await t.request('DELETE', `/api/v1/users/${adminId()}`, { token: t.adminToken }),
    ]) {
      expect(res.statusCode).toBe(409);
      expect(problem(res).code).toBe('conflict');
    }
    expect((await t.request('GET', '/api/v1/auth/me', { token: t.adminToken })).statusCode).toBe(200);
  });

  it('never disables or deletes the last enabled admin', async () => {
    const secondToken = await t.createUser('admin', undefined, 'quan.tri.hai');
    const second = t.query("SELECT id, username FROM users WHERE username = 'quan.tri.hai'")[0] as Actor;
    // The second admin disables the first; a request of the first that passed authentication just before
    // (simulated by calling the service as them) must not leave the system without an admin.
    expect((await post(`/api/v1/users/${adminId()}/disable`, secondToken)).statusCode).toBe(200);
    const first: Actor = { id: adminId(), username: 'admin', role: 'admin', areaId: null, areaPath: null };
    for (const act of [
      () => t.app.services.users.disable(first, second.id),
      () => t.app.services.users.delete(first, second.id),
    ]) {
      expect(act).toThrow(/last enabled admin/);
    }
    expect((await t.request('GET', '/api/v1/auth/me', { token: secondToken })).statusCode).toBe(200);
    // A disabled admin is not the last enabled one: it can be deleted.
    expect((await t.request('DELETE', `/api/v1/users/${adminId()}`, { token: secondToken })).statusCode).toBe(
      204,
    );
  });

  it('is for admins only', async () => {
    const operator = await t.createUser('district_operator', tree.district.id);
    for (const res of [
      await t.request('GET', `/api/v1/users/${user.id}`, { token: operator }),
      await post(`/api/v1/users/${user.id}/password`, operator, { newPassword: 'Mật-khẩu-cấp-lại' }),
      await post(`/api/v1/users/${user.id}/disable`, operator),
      await post(`/api/v1/users/${user.id}/enable`, operator),
      await t.request('DELETE', `/api/v1/users/${user.id}`, { token: operator }),
    ]) {
      expect(res.statusCode).toBe(403);
    }
    expect((await t.request('GET', '/api/v1/auth/me', { token: userToken })).statusCode).toBe(200);
  });
});
