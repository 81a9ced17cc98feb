import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';

type Area = { id: string; name: string; code: string | null; depth: number };

/** Administrative codes on areas (issue 9): what CAP alerts name in `<geocode>` VN-ADMIN. */
describe('area codes', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  beforeEach(async () => {
    t = await createTestApp();
    tree = await createAreaTree(t);
  });
  afterEach(async () => t.close());

  const patch = (id: string, body: unknown, token = t.adminToken) =>
    t.request('PATCH', `/api/v1/areas/${id}`, { token, body });
  const byCode = async (code: string, token = t.adminToken) => {
    const res = await t.request('GET', `/api/v1/areas?code=${code}`, { token });
    expect(res.statusCode).toBe(200);
    return res.json<{ items: Area[] }>().items;
  };

  it('sets a code on create, shows it everywhere, and clears it with null', async () => {
    const created = await t.request('POST', '/api/v1/areas', {
      token: t.adminToken,
      body: { name: 'Thành phố Hồ Chí Minh', level: 'province', code: '79' },
    });
    expect(created.statusCode).toBe(201);
    const area = created.json<Area>();
    expect(area).toMatchObject({ name: 'Thành phố Hồ Chí Minh', code: '79' });

    const one = await t.request('GET', `/api/v1/areas/${area.id}`, { token: t.adminToken });
    expect(one.json<Area>().code).toBe('79');
    const all = (await t.request('GET', '/api/v1/areas', { token: t.adminToken })).json<{ items: Area[] }>();
    expect(all.items.find((a) => a.id === area.id)?.code).toBe('79');
    expect(all.items.find((a) => a.id === tree.district.id)?.code).toBeNull();

    const cleared = await patch(area.id, { code: null });
    expect(cleared.statusCode).toBe(200);
    expect(cleared.json<Area>()).toMatchObject({ code: null, name: 'Thành phố Hồ Chí Minh' });
    expect(await byCode('79')).toEqual([]);
  });

  it('sets a code by PATCH, keeps leading zeros and the other fields, and finds the area by it', async () => {
    const res = await patch(tree.communeA.id, { code: '19243' });
    expect(res.statusCode).toBe(200);
    expect(res.json<Area>()).toMatchObject({ name: 'Xã Hải Phú', code: '19243' });
    expect((await patch(tree.province.id, { code: '045', name: 'Tỉnh Quảng Trị mới' })).json()).toMatchObject(
      { code: '045', name: 'Tỉnh Quảng Trị mới', level: 'province' },
    );
    expect((await byCode('19243')).map((a) => [a.id, a.name, a.depth])).toEqual([
      [tree.communeA.id, 'Xã Hải Phú', 2],
    ]);
    expect((await byCode('045')).map((a) => a.name)).toEqual(['Tỉnh Quảng Trị mới']);
    expect(await byCode('45')).toEqual([]);
  });

  it('refuses a code another area holds with 409 conflict naming code, and changes nothing', async () => {
    expect((await patch(tree.communeA.id, { code: '19243' })).statusCode).toBe(200);
    const dup = await patch(tree.communeB.id, { code: '19243', name: 'Xã Hải Thượng đổi tên' });
    expect(dup.statusCode).toBe(409);
    const p = problem(dup);
    expect(p.code).toBe('conflict');
    expect(p.errors?.map((e) => e.field)).toEqual(['body.code']);
    const b = (
      await t.request('GET', `/api/v1/areas/${tree.communeB.id}`, { token: t.adminToken })
    ).json<Area>();
    expect(b).toMatchObject({ name: 'Xã Hải Thượng', code: null });

    const created = await t.request('POST', '/api/v1/areas', {
      token: t.adminToken,
      body: { name: 'Xã Hải Sơn', level: 'commune', parentId: tree.district.id, code: '19243' },
    });
    expect(created.statusCode).toBe(409);
    expect(problem(created).errors?.[0]?.field).toBe('body.code');
    const names = (await t.request('GET', '/api/v1/areas', { token: t.adminToken }))
      .json<{ items: Area[] }>()
      .items.map((a) => a.name);
    expect(names).not.toContain('Xã Hải Sơn');

    // Setting an area's own code again is no conflict.
    expect((await patch(tree.communeA.id, { code: '19243' })).statusCode).toBe(200);
  });

  it('validates codes as 2 to 10 digits, naming the field', async () => {
    for (const code of ['7', '12345678901', '7a', ' 79', '', 79]) {
      const res = await patch(tree.communeA.id, { code });
      expect(res.statusCode, String(code)).toBe(400);
      expect(problem(res).errors?.map((e) => e.field)).toEqual(['body.code']);
    }
    const create = await t.request('POST', '/api/v1/areas', {
      token: t.adminToken,
      body: { name: 'Tỉnh Mới', level: 'province', code: 'VN-79' },
    });
    expect(create.statusCode).toBe(400);
    expect(problem(create).errors?.map((e) => e.field)).toEqual(['body.code']);
    const query = await t.request('GET', '/api/v1/areas?code=abc', { token: t.adminToken });
    expect(query.statusCode).toBe(400);
    expect(problem(query).errors?.map((e) => e.field)).toEqual(['query.code']);
  });

  it('follows the rules for area edits: only from above, and lookups only within your area', async () => {
    expect((await patch(tree.province.id, { code: '45' })).statusCode).toBe(200);
    expect((await patch(tree.communeB.id, { code: '19246' })).statusCode).toBe(200);

    const commune = await t.createUser('district_operator', tree.communeA.id);
    // The province is outside a commune user's area: not even visible.
    expect((await patch(tree.province.id, { code: '46' }, commune)).statusCode).toBe(404);
    // Their own commune is managed from above.
    expect((await patch(tree.communeA.id, { code: '19243' }, commune)).statusCode).toBe(403);
    // Below it, they may.
    const hamlet = await patch(tree.hamletA.id, { code: '1924301' }, commune);
    expect(hamlet.statusCode).toBe(200);
    expect(hamlet.json<Area>().code).toBe('1924301');

    // A broadcaster may look codes up but not set them.
    const broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    expect((await patch(tree.hamletA.id, { code: '1924302' }, broadcaster)).statusCode).toBe(403);
    expect((await byCode('1924301', broadcaster)).map((a) => a.name)).toEqual(['Thôn Đông']);
    expect(await byCode('45', broadcaster)).toEqual([]);
    expect(await byCode('19246', broadcaster)).toEqual([]);

    const district = await t.createUser('district_operator', tree.district.id);
    expect((await byCode('19246', district)).map((a) => a.name)).toEqual(['Xã Hải Thượng']);
    const create = await t.request('POST', '/api/v1/areas', {
      token: district,
      body: { name: 'Xã Hải Sơn', level: 'commune', parentId: tree.district.id, code: '19250' },
    });
    expect(create.statusCode).toBe(201);
    expect((await byCode('19250', district)).map((a) => a.name)).toEqual(['Xã Hải Sơn']);
  });

  it('audits codes set and cleared', async () => {
    await patch(tree.communeA.id, { code: '19243' });
    await patch(tree.communeA.id, { code: null });
    const created = await t.request('POST', '/api/v1/areas', {
      token: t.adminToken,
      body: { name: 'Xã Hải Sơn', level: 'commune', parentId: tree.district.id, code: '19250' },
    });
    const audit = async (id: string) =>
      (await t.request('GET', `/api/v1/audit?targetType=area&targetId=${id}`, { token: t.adminToken }))
        .json<{ items: { action: string; details: Record<string, unknown> }[] }>()
        .items.map((i) => [i.action, i.details.code]);
    expect(await audit(tree.communeA.id)).toEqual([
      ['area.update', null],
      ['area.update', '19243'],
      ['area.create', null],
    ]);
    expect(await audit(created.json<Area>().id)).toEqual([['area.create', '19250']]);
  });
});
