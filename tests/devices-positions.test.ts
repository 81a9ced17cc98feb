import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';

type Device = {
  id: string;
  name: string;
  areaId: string;
  lat: number | null;
  lon: number | null;
  drillParticipant: boolean;
};

/** Where loudspeakers stand and whether they take part in drills (issue 9): what alerts target. */
describe('device positions and drill flag', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  beforeEach(async () => {
    t = await createTestApp();
    tree = await createAreaTree(t);
  });
  afterEach(async () => t.close());

  const create = (body: Record<string, unknown>, token = t.adminToken) =>
    t.request('POST', '/api/v1/devices', {
      token,
      body: { name: 'Cụm loa thôn Đông – Hải Phú', kind: 'cluster', areaId: tree.hamletA.id, ...body },
    });
  const patch = (id: string, body: unknown, token = t.adminToken) =>
    t.request('PATCH', `/api/v1/devices/${id}`, { token, body });
  const get = async (id: string) =>
    (await t.request('GET', `/api/v1/devices/${id}`, { token: t.adminToken })).json<Device>();
  const list = async (query: string, token = t.adminToken) => {
    const res = await t.request('GET', `/api/v1/devices?${query}`, { token });
    expect(res.statusCode).toBe(200);
    return res.json<{ items: Device[]; total: number }>();
  };

  it('stores a position and the drill flag on create and shows them in detail and list', async () => {
    const res = await create({ lat: 16.6779, lon: 107.2357, drillParticipant: true });
    expect(res.statusCode).toBe(201);
    const device = res.json<Device>();
    expect(device).toMatchObject({
      name: 'Cụm loa thôn Đông – Hải Phú',
      lat: 16.6779,
      lon: 107.2357,
      drillParticipant: true,
    });
    expect(await get(device.id)).toMatchObject({ lat: 16.6779, lon: 107.2357, drillParticipant: true });
    expect((await list('')).items.find((d) => d.id === device.id)).toMatchObject({
      lat: 16.6779,
      lon: 107.2357,
      drillParticipant: true,
    });
  });

  it('defaults to no position and no drills', async () => {
    const device = await t.createDevice(tree.hamletB.id, 'Trạm truyền thanh xã Hải Thượng', 'station');
    expect(await get(device.id)).toMatchObject({ lat: null, lon: null, drillParticipant: false });
  });

  it('sets, moves and clears a position by PATCH, leaving the rest alone', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    const placed = await patch(device.id, { lat: -33.8688, lon: -180 });
    expect(placed.statusCode).toBe(200);
    expect(placed.json()).toMatchObject({ lat: -33.8688, lon: -180, name: 'Cụm loa thôn Đông' });

    const flagged = await patch(device.id, { drillParticipant: true });
    expect(flagged.json()).toMatchObject({ lat: -33.8688, lon: -180, drillParticipant: true });

    const cleared = await patch(device.id, { lat: null, lon: null });
    expect(cleared.statusCode).toBe(200);
    expect(await get(device.id)).toMatchObject({ lat: null, lon: null, drillParticipant: true });

    const unflagged = await patch(device.id, { drillParticipant: false, lat: 90, lon: 180 });
    expect(unflagged.json()).toMatchObject({ lat: 90, lon: 180, drillParticipant: false });
  });

  it('refuses bad positions and flags with 400 naming the field', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    const cases: [Record<string, unknown>, string[]][] = [
      [{ lat: 90.5, lon: 107 }, ['body.lat']],
      [{ lat: 16, lon: -180.01 }, ['body.lon']],
      [{ lat: '16.6', lon: 107 }, ['body.lat']],
      [{ lat: 16.6 }, ['body.lon']],
      [{ lon: 107.2 }, ['body.lat']],
      [{ lat: null }, ['body.lon']],
      [{ lat: null, lon: 107.2 }, ['body.lat']],
      [{ lat: 16.6, lon: null }, ['body.lon']],
      [{ drillParticipant: 'yes' }, ['body.drillParticipant']],
    ];
    for (const [body, fields] of cases) {
      const res = await patch(device.id, body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(
        problem(res).errors?.map((e) => e.field),
        JSON.stringify(body),
      ).toEqual(fields);
    }
    for (const [body, fields] of [
      [{ lat: 16.6 }, ['body.lon']],
      [{ lat: 16.6, lon: null }, ['body.lon']],
      [{ lat: -91, lon: 0 }, ['body.lat']],
      [{ drillParticipant: 1 }, ['body.drillParticipant']],
    ] as [Record<string, unknown>, string[]][]) {
      const res = await create(body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(
        problem(res).errors?.map((e) => e.field),
        JSON.stringify(body),
      ).toEqual(fields);
    }
    expect(await get(device.id)).toMatchObject({ lat: null, lon: null, drillParticipant: false });
    const bad = await t.request('GET', '/api/v1/devices?drillParticipant=1', { token: t.adminToken });
    expect(bad.statusCode).toBe(400);
    expect(problem(bad).errors?.map((e) => e.field)).toEqual(['query.drillParticipant']);
  });

  it('filters the list by the drill flag, within the caller’s area', async () => {
    const drillA = (
      await create({ drillParticipant: true, name: 'Cụm loa diễn tập Hải Phú' })
    ).json<Device>();
    await create({ name: 'Cụm loa thường Hải Phú' });
    const drillB = (
      await create({ drillParticipant: true, name: 'Cụm loa diễn tập Hải Thượng', areaId: tree.hamletB.id })
    ).json<Device>();

    const drills = await list('drillParticipant=true');
    expect(drills.total).toBe(2);
    expect(drills.items.map((d) => d.id).sort()).toEqual([drillA.id, drillB.id].sort());
    expect((await list('drillParticipant=false')).items.map((d) => d.name)).toEqual([
      'Cụm loa thường Hải Phú',
    ]);

    const commune = await t.createUser('technician', tree.communeA.id);
    expect((await list('drillParticipant=true', commune)).items.map((d) => d.name)).toEqual([
      'Cụm loa diễn tập Hải Phú',
    ]);
    // Outside their area they can neither see nor change a device.
    expect((await patch(drillB.id, { drillParticipant: false }, commune)).statusCode).toBe(404);
    const broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    expect((await patch(drillA.id, { lat: 16.7, lon: 107.2 }, broadcaster)).statusCode).toBe(403);
  });

  it('audits positions and the drill flag', async () => {
    const device = (await create({ lat: 16.6779, lon: 107.2357 })).json<Device>();
    await patch(device.id, { drillParticipant: true });
    await patch(device.id, { lat: null, lon: null });
    const res = await t.request('GET', `/api/v1/audit?targetType=device&targetId=${device.id}`, {
      token: t.adminToken,
    });
    const items = res.json<{ items: { action: string; details: Record<string, unknown> }[] }>().items;
    expect(items.map((i) => [i.action, i.details])).toEqual([
      ['device.update', { lat: null, lon: null }],
      ['device.update', { drillParticipant: true }],
      [
        'device.create',
        {
          name: 'Cụm loa thôn Đông – Hải Phú',
          kind: 'cluster',
          areaId: tree.hamletA.id,
          lat: 16.6779,
          lon: 107.2357,
          drillParticipant: false,
        },
      ],
    ]);
  });
});
