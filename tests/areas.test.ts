import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';

type Area = { id: string; name: string; level: string; parentId: string | null; depth: number };

describe('areas', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  beforeEach(async () => {
    t = await createTestApp();
    tree = await createAreaTree(t);
  });
  afterEach(async () => t.close());

  const list = async (token: string) =>
    (await t.request('GET', '/api/v1/areas', { token })).json<{ items: Area[] }>().items;

  it('returns the whole tree depth-first to an admin, Vietnamese names intact', async () => {
    const items = await list(t.adminToken);
    expect(items.map((a) => [a.name, a.depth])).toEqual([
      ['Tỉnh Quảng Trị', 0],
      ['Huyện Hải Lăng', 1],
      ['Xã Hải Phú', 2],
      ['Thôn Đông', 3],
      ['Xã Hải Thượng', 2],
      ['Thôn Tây', 3],
    ]);
  });

  it('shows a commune user only their own subtree', async () => {
    const token = await t.createUser('broadcaster', tree.communeA.id);
    expect((await list(token)).map((a) => a.name)).toEqual(['Xã Hải Phú', 'Thôn Đông']);
  });

  it('hides areas outside the scope with 404, and refuses acting outside with 403', async () => {
    const token = await t.createUser('district_operator', tree.communeA.id);
    const read = await t.request('GET', `/api/v1/areas/${tree.communeB.id}`, { token });
    expect(read.statusCode).toBe(404);
    expect(problem(read).code).toBe('not_found');
    const create = await t.request('POST', '/api/v1/areas', {
      token,
      body: { name: 'Thôn Mới', level: 'hamlet', parentId: tree.communeB.id },
    });
    expect(create.statusCode).toBe(403);
    expect(problem(create).detail).toContain('parentId');
  });

  it('lets a district operator create, rename and delete inside their district', async () => {
    const token = await t.createUser('district_operator', tree.district.id);
    const created = await t.createArea(
      { name: 'Xã Hải Sơn', level: 'commune', parentId: tree.district.id },
      token,
    );
    const renamed = await t.request('PATCH', `/api/v1/areas/${created.id}`, {
      token,
      body: { name: 'Xã Hải Sơn mới' },
    });
    expect(renamed.json()).toMatchObject({
      name: 'Xã Hải Sơn mới',
      level: 'commune',
      parentId: tree.district.id,
    });
    expect((await t.request('DELETE', `/api/v1/areas/${created.id}`, { token })).statusCode).toBe(204);
    expect((await t.request('GET', `/api/v1/areas/${created.id}`, { token })).statusCode).toBe(404);
  });

  it('keeps non-admins from editing their own area or creating top-level areas', async () => {
    const token = await t.createUser('district_operator', tree.district.id);
    const own = await t.request('PATCH', `/api/v1/areas/${tree.district.id}`, { token, body: { name: 'x' } });
    expect(own.statusCode).toBe(403);
    const top = await t.request('POST', '/api/v1/areas', {
      token,
      body: { name: 'Tỉnh Mới', level: 'province' },
    });
    expect(top.statusCode).toBe(403);
  });

  it('refuses roles that do not manage areas', async () => {
    for (const role of ['broadcaster', 'technician']) {
      const token = await t.createUser(role, tree.district.id);
      const res = await t.request('POST', '/api/v1/areas', {
        token,
        body: { name: 'Xã X', level: 'commune', parentId: tree.district.id },
      });
      expect(res.statusCode, role).toBe(403);
    }
  });

  it('validates names, levels and parent order', async () => {
    const bad = await t.request('POST', '/api/v1/areas', {
      token: t.adminToken,
      body: { name: '  ', level: 'city' },
    });
    expect(bad.statusCode).toBe(400);
    expect(
      problem(bad)
        .errors?.map((e) => e.field)
        .sort(),
    ).toEqual(['body.level', 'body.name']);

    const inverted = await t.request('POST', '/api/v1/areas', {
      token: t.adminToken,
      body: { name: 'Huyện lạ', level: 'district', parentId: tree.hamletA.id },
    });
    expect(inverted.statusCode).toBe(400);
    expect(problem(inverted).errors?.[0]?.field).toBe('level');

    const missingParent = await t.request('POST', '/api/v1/areas', {
      token: t.adminToken,
      body: { name: 'Xã', level: 'commune', parentId: 'ar_doesnotexist' },
    });
    expect(missingParent.statusCode).toBe(404);
  });

  it('allows two-level provinces: a commune directly under a province', async () => {
    const created = await t.createArea({
      name: 'Phường Đông Hà',
      level: 'commune',
      parentId: tree.province.id,
    });
    const res = await t.request('GET', `/api/v1/areas/${created.id}`, { token: t.adminToken });
    expect(res.json()).toMatchObject({ depth: 1, parentId: tree.province.id });
  });

  it('moves a subtree under a new parent, and the scope follows', async () => {
    const moved = await t.request('PATCH', `/api/v1/areas/${tree.communeB.id}`, {
      token: t.adminToken,
      body: { parentId: tree.province.id },
    });
    expect(moved.statusCode).toBe(200);
    expect(moved.json()).toMatchObject({ parentId: tree.province.id, depth: 1 });
    const hamlet = (
      await t.request('GET', `/api/v1/areas/${tree.hamletB.id}`, { token: t.adminToken })
    ).json<Area>();
    expect(hamlet.depth).toBe(2);
    // The district operator no longer sees the moved commune.
    const token = await t.createUser('district_operator', tree.district.id);
    expect((await t.request('GET', `/api/v1/areas/${tree.hamletB.id}`, { token })).statusCode).toBe(404);
  });

  it('refuses to move an area under itself', async () => {
    const res = await t.request('PATCH', `/api/v1/areas/${tree.district.id}`, {
      token: t.adminToken,
      body: { parentId: tree.hamletA.id },
    });
    expect(res.statusCode).toBe(400);
    expect(problem(res).errors?.[0]?.field).toBe('parentId');
  });

  it('refuses to delete an area that still has sub-areas, devices or users', async () => {
    const withChildren = await t.request('DELETE', `/api/v1/areas/${tree.communeA.id}`, {
      token: t.adminToken,
    });
    expect(withChildren.statusCode).toBe(409);
    expect(problem(withChildren).code).toBe('area_not_empty');

    await t.createDevice(tree.hamletA.id);
    const withDevice = await t.request('DELETE', `/api/v1/areas/${tree.hamletA.id}`, { token: t.adminToken });
    expect(withDevice.statusCode).toBe(409);

    await t.createUser('broadcaster', tree.hamletB.id);
    const withUser = await t.request('DELETE', `/api/v1/areas/${tree.hamletB.id}`, { token: t.adminToken });
    expect(withUser.statusCode).toBe(409);
  });

  it('audits area changes', async () => {
    const res = await t.request('GET', '/api/v1/audit?targetType=area', { token: t.adminToken });
    const items = res.json<{
      items: { action: string; actorUsername: string; details: { name: string } }[];
    }>().items;
    expect(items).toHaveLength(6);
    expect(items.every((i) => i.action === 'area.create' && i.actorUsername === 'admin')).toBe(true);
    expect(items.map((i) => i.details.name)).toContain('Xã Hải Thượng');
  });
});
