import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';

type Device = { id: string; name: string; kind: string; areaId: string; online: boolean; state: unknown };

describe('devices', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  beforeEach(async () => {
    t = await createTestApp();
    tree = await createAreaTree(t);
  });
  afterEach(async () => t.close());

  it('registers a device and shows its MQTT credentials once', async () => {
    const res = await t.request('POST', '/api/v1/devices', {
      token: t.adminToken,
      body: { name: 'Cụm loa thôn Đông', kind: 'cluster', areaId: tree.hamletA.id },
    });
    expect(res.statusCode).toBe(201);
    const created = res.json<
      Device & { credentials: { clientId: string; username: string; password: string } }
    >();
    expect(created).toMatchObject({ name: 'Cụm loa thôn Đông', kind: 'cluster', online: false, state: null });
    expect(created.credentials.clientId).toBe(created.id);
    expect(created.credentials.username).toBe(created.id);
    expect(created.credentials.password.length).toBeGreaterThanOrEqual(40);

    const fetched = await t.request('GET', `/api/v1/devices/${created.id}`, { token: t.adminToken });
    expect(fetched.json()).not.toHaveProperty('credentials');
    expect(fetched.body).not.toContain(created.credentials.password);

    expect(JSON.stringify(t.query('SELECT * FROM devices'))).not.toContain(created.credentials.password);
  });

  it('lists devices with filters and pagination, limited to the caller’s area', async () => {
    for (let i = 1; i <= 5; i++) await t.createDevice(tree.hamletA.id, `Cụm loa Đông ${i}`);
    await t.createDevice(tree.communeA.id, 'Đài xã Hải Phú', 'station');
    await t.createDevice(tree.hamletB.id, 'Cụm loa Tây 1');

    const page = await t.request('GET', '/api/v1/devices?limit=2&offset=2', { token: t.adminToken });
    const body = page.json<{ items: Device[]; total: number; limit: number; offset: number }>();
    expect(body.total).toBe(7);
    expect(body.items.map((d) => d.name)).toEqual(['Cụm loa Đông 3', 'Cụm loa Đông 4']);

    const stations = await t.request('GET', '/api/v1/devices?kind=station', { token: t.adminToken });
    expect(stations.json<{ items: Device[] }>().items.map((d) => d.name)).toEqual(['Đài xã Hải Phú']);

    const inArea = await t.request('GET', `/api/v1/devices?areaId=${tree.communeA.id}&online=false`, {
      token: t.adminToken,
    });
    expect(inArea.json<{ total: number }>().total).toBe(6);

    const online = await t.request('GET', '/api/v1/devices?online=true', { token: t.adminToken });
    expect(online.json<{ total: number }>().total).toBe(0);

    const token = await t.createUser('technician', tree.communeB.id);
    const scoped = await t.request('GET', '/api/v1/devices', { token });
    expect(scoped.json<{ items: Device[] }>().items.map((d) => d.name)).toEqual(['Cụm loa Tây 1']);
    const outside = await t.request('GET', `/api/v1/devices?areaId=${tree.communeA.id}`, { token });
    expect(outside.statusCode).toBe(404);
  });

  it('validates list filters by name', async () => {
    const res = await t.request('GET', '/api/v1/devices?online=maybe&limit=0&kind=tower', {
      token: t.adminToken,
    });
    expect(res.statusCode).toBe(400);
    expect(
      problem(res)
        .errors?.map((e) => e.field)
        .sort(),
    ).toEqual(['query.kind', 'query.limit', 'query.online']);
  });

  it('validates the body of a new device', async () => {
    const res = await t.request('POST', '/api/v1/devices', {
      token: t.adminToken,
      body: { name: '', kind: 'speaker' },
    });
    expect(res.statusCode).toBe(400);
    expect(
      problem(res)
        .errors?.map((e) => e.field)
        .sort(),
    ).toEqual(['body.areaId', 'body.kind', 'body.name']);
  });

  it('hides devices outside the scope and refuses placing one there', async () => {
    const device = await t.createDevice(tree.hamletB.id);
    const token = await t.createUser('technician', tree.communeA.id);
    expect((await t.request('GET', `/api/v1/devices/${device.id}`, { token })).statusCode).toBe(404);
    expect(
      (await t.request('PATCH', `/api/v1/devices/${device.id}`, { token, body: { name: 'x' } })).statusCode,
    ).toBe(404);
    expect((await t.request('DELETE', `/api/v1/devices/${device.id}`, { token })).statusCode).toBe(404);
    expect((await t.request('POST', `/api/v1/devices/${device.id}/credentials`, { token })).statusCode).toBe(
      404,
    );
    const create = await t.request('POST', '/api/v1/devices', {
      token,
      body: { name: 'Cụm loa', kind: 'cluster', areaId: tree.hamletB.id },
    });
    expect(create.statusCode).toBe(403);
  });

  it('lets a technician rename, move within scope, rotate and delete', async () => {
    const token = await t.createUser('technician', tree.communeA.id);
    const device = await t.createDevice(tree.hamletA.id);
    const renamed = await t.request('PATCH', `/api/v1/devices/${device.id}`, {
      token,
      body: { name: 'Cụm loa chợ Hải Phú', areaId: tree.communeA.id },
    });
    expect(renamed.json()).toMatchObject({ name: 'Cụm loa chợ Hải Phú', areaId: tree.communeA.id });

    const away = await t.request('PATCH', `/api/v1/devices/${device.id}`, {
      token,
      body: { areaId: tree.communeB.id },
    });
    expect(away.statusCode).toBe(403);

    const rotated = await t.request('POST', `/api/v1/devices/${device.id}/credentials`, { token });
    expect(rotated.statusCode).toBe(200);
    expect(rotated.json<{ password: string }>().password).not.toBe(device.credentials.password);

    expect((await t.request('DELETE', `/api/v1/devices/${device.id}`, { token })).statusCode).toBe(204);
    expect((await t.request('GET', `/api/v1/devices/${device.id}`, { token })).statusCode).toBe(404);
  });

  it('is read-only for broadcasters', async () => {
    const token = await t.createUser('broadcaster', tree.communeA.id);
    const device = await t.createDevice(tree.hamletA.id);
    expect((await t.request('GET', `/api/v1/devices/${device.id}`, { token })).statusCode).toBe(200);
    const create = await t.request('POST', '/api/v1/devices', {
      token,
      body: { name: 'x', kind: 'cluster', areaId: tree.hamletA.id },
    });
    expect(create.statusCode).toBe(403);
    expect((await t.request('POST', `/api/v1/devices/${device.id}/credentials`, { token })).statusCode).toBe(
      403,
    );
  });

  it('audits creation, rotation and deletion', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    await t.request('POST', `/api/v1/devices/${device.id}/credentials`, { token: t.adminToken });
    await t.request('DELETE', `/api/v1/devices/${device.id}`, { token: t.adminToken });
    const res = await t.request('GET', `/api/v1/audit?targetType=device&targetId=${device.id}`, {
      token: t.adminToken,
    });
    expect(res.json<{ items: { action: string }[] }>().items.map((i) => i.action)).toEqual([
      'device.delete',
      'device.credentials_rotated',
      'device.create',
    ]);
    expect(res.body).not.toContain(device.credentials.password);
  });
});
