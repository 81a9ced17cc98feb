import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { approvedRelay } from './support/programmes.js';

const media = {
  kind: 'media',
  url: 'https://media.loa.example/ban-tin.mp3',
  sha256: 'ab'.repeat(32),
  durationMs: 30_000,
};

type Detail = {
  id: string;
  type: string;
  priority: string;
  params: Record<string, unknown>;
  createdBy: { username: string };
  expiresAt: string;
  targets: number;
  counts: Record<string, number>;
  devices: { deviceId: string; deviceName: string; status: string }[];
};

describe('commands (no devices connected)', () => {
  let t: TestApp;
  let clock: ManualClock;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  beforeEach(async () => {
    clock = new ManualClock('2026-06-01T01:00:00.000Z');
    t = await createTestApp({ clock });
    tree = await createAreaTree(t);
  });
  afterEach(async () => t.close());

  const send = (body: unknown, token = t.adminToken) =>
    t.request('POST', '/api/v1/commands', { token, body });

  it('accepts a play to an area, targets its whole subtree, and assigns session, issue and expiry times', async () => {
    const a = await t.createDevice(tree.hamletA.id, 'Cụm loa Đông');
    const b = await t.createDevice(tree.communeA.id, 'Đài xã Hải Phú', 'station');
    await t.createDevice(tree.hamletB.id, 'Cụm loa Tây');

    const res = await send({
      type: 'play',
      params: { source: media },
      targets: { areaIds: [tree.communeA.id] },
    });
    expect(res.statusCode).toBe(202);
    const accepted = res.json<{ id: string; targets: number; sent: number; expiresAt: string }>();
    expect(accepted).toMatchObject({ targets: 2, sent: 0, expiresAt: '2026-06-01T01:10:00.000Z' });

    const detail = (
      await t.request('GET', `/api/v1/commands/${accepted.id}`, { token: t.adminToken })
    ).json<Detail>();
    expect(detail).toMatchObject({
      type: 'play',
      priority: 'normal',
      createdBy: { username: 'admin' },
      targets: 2,
    });
    expect(detail.params.sessionId).toMatch(/^ses_/);
    expect(detail.counts).toMatchObject({ pending: 2, done: 0 });
    expect(detail.devices.map((d) => d.deviceId).sort()).toEqual([a.id, b.id].sort());
  });

  it('uses the documented default expiry per type, or expiresInS', async () => {
    const d = await t.createDevice(tree.hamletA.id);
    const stop = await send({ type: 'stop', targets: { deviceIds: [d.id] } });
    expect(stop.json()).toMatchObject({ expiresAt: '2026-06-01T01:05:00.000Z' });
    const volume = await send({
      type: 'volume',
      params: { level: 40 },
      targets: { deviceIds: [d.id] },
      expiresInS: 30,
    });
    expect(volume.json()).toMatchObject({ expiresAt: '2026-06-01T01:00:30.000Z' });
  });

  it('marks deliveries offline when the command expires before the device ever connected', async () => {
    const d = await t.createDevice(tree.hamletA.id);
    const { id } = (
      await send({ type: 'volume', params: { level: 40 }, targets: { deviceIds: [d.id] }, expiresInS: 60 })
    ).json<{ id: string }>();
    clock.advance(59_000);
    expect(
      (await t.request('GET', `/api/v1/commands/${id}`, { token: t.adminToken })).json<Detail>().counts
        .pending,
    ).toBe(1);
    clock.advance(2_000);
    const detail = (await t.request('GET', `/api/v1/commands/${id}`, { token: t.adminToken })).json<Detail>();
    expect(detail.counts).toMatchObject({ pending: 0, offline: 1 });
    const offline = await t.request('GET', `/api/v1/commands/${id}?status=offline`, { token: t.adminToken });
    expect(offline.json<Detail>().devices).toHaveLength(1);
  });

  it('validates params per type and names the field', async () => {
    const d = await t.createDevice(tree.hamletA.id);
    const targets = { deviceIds: [d.id] };
    const cases: [unknown, string][] = [
      [{ type: 'volume', params: { level: 101 }, targets }, 'body.params.level'],
      [{ type: 'volume', params: {}, targets }, 'body.params.level'],
      [
        {
          type: 'play',
          params: { source: { kind: 'media', url: 'not a url', sha256: 'ab'.repeat(32), durationMs: 1 } },
          targets,
        },
        'body.params.source.url',
      ],
      [
        { type: 'play', params: { source: { ...media, sha256: 'xyz' } }, targets },
        'body.params.source.sha256',
      ],
      [{ type: 'play', params: {}, targets }, 'body.params.source'],
      [{ type: 'dance', params: {}, targets }, 'body.type'],
      [{ type: 'stop', targets: {} }, 'body.targets'],
      [{ type: 'stop', targets, priority: 'urgent' }, 'body.priority'],
      [{ type: 'stop', targets, expiresInS: 0 }, 'body.expiresInS'],
    ];
    for (const [body, field] of cases) {
      const res = await send(body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(
        problem(res).errors?.map((e) => e.field),
        JSON.stringify(body),
      ).toContain(field);
    }
  });

  it('refuses unknown targets, empty areas and targets outside the caller’s area', async () => {
    const inB = await t.createDevice(tree.hamletB.id);
    const unknown = await send({ type: 'stop', targets: { deviceIds: ['dev_nope'] } });
    expect(unknown.statusCode).toBe(404);
    expect(problem(unknown).detail).toContain('targets.deviceIds.0');

    const empty = await send({ type: 'stop', targets: { areaIds: [tree.hamletA.id] } });
    expect(empty.statusCode).toBe(400);

    const token = await t.createUser('broadcaster', tree.communeA.id);
    const device = await send({ type: 'stop', targets: { deviceIds: [inB.id] } }, token);
    expect(device.statusCode).toBe(403);
    const area = await send({ type: 'stop', targets: { areaIds: [tree.communeB.id] } }, token);
    expect(area.statusCode).toBe(403);
    expect(problem(area).detail).toContain('targets.areaIds.0');
  });

  it('applies the role rules: technicians cannot play, only district staff send emergencies', async () => {
    const d = await t.createDevice(tree.hamletA.id);
    const targets = { deviceIds: [d.id] };
    const technician = await t.createUser('technician', tree.communeA.id);
    expect((await send({ type: 'play', params: { source: media }, targets }, technician)).statusCode).toBe(
      403,
    );
    expect((await send({ type: 'volume', params: { level: 10 }, targets }, technician)).statusCode).toBe(202);

    const broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    // What a commune broadcaster airs has been approved by someone else: a raw URL is refused.
    const raw = await send({ type: 'play', params: { source: media }, targets }, broadcaster);
    expect(raw.statusCode).toBe(403);
    expect(problem(raw).detail).toContain('source.kind "programme"');
    const programme = {
      kind: 'programme',
      programmeId: (await approvedRelay(t, broadcaster, tree.communeA.id)).id,
    };
    expect(
      (
        await send(
          { type: 'play', params: { source: programme }, targets, priority: 'priority' },
          broadcaster,
        )
      ).statusCode,
    ).toBe(202);
    const emergency = await send(
      { type: 'play', params: { source: programme }, targets, priority: 'emergency' },
      broadcaster,
    );
    expect(emergency.statusCode).toBe(403);

    const district = await t.createUser('district_operator', tree.district.id);
    expect(
      (await send({ type: 'play', params: { source: media }, targets, priority: 'emergency' }, district))
        .statusCode,
    ).toBe(202);
  });

  it('lets only district staff stop or change the volume at emergency priority; normal by default', async () => {
    const d = await t.createDevice(tree.hamletA.id);
    const targets = { deviceIds: [d.id] };
    const stop = (priority?: string) => ({ type: 'stop', targets, ...(priority ? { priority } : {}) });
    const volume = (priority: string) => ({ type: 'volume', params: { level: 0 }, targets, priority });
    for (const role of ['technician', 'broadcaster']) {
      const token = await t.createUser(role, tree.communeA.id);
      for (const body of [stop('emergency'), volume('emergency')]) {
        const res = await send(body, token);
        expect(res.statusCode, `${role} ${JSON.stringify(body)}`).toBe(403);
        expect(problem(res).detail).toContain('emergency');
      }
      expect((await send(stop('priority'), token)).statusCode, role).toBe(202);
      expect((await send(volume('normal'), token)).statusCode, role).toBe(202);
    }
    const district = await t.createUser('district_operator', tree.district.id);
    for (const body of [stop('emergency'), volume('emergency')]) {
      expect((await send(body, district)).statusCode).toBe(202);
    }
    // An emergency-capable role still sends at normal unless it says otherwise: ending an emergency is
    // a deliberate act.
    const { id } = (await send(stop(), district)).json<{ id: string }>();
    const detail = (await t.request('GET', `/api/v1/commands/${id}`, { token: district })).json<Detail>();
    expect(detail.priority).toBe('normal');
  });

  it('shows a commune user only its own devices of a district-wide command', async () => {
    await t.createDevice(tree.hamletA.id, 'Cụm loa Đông');
    await t.createDevice(tree.hamletB.id, 'Cụm loa Tây');
    const district = await t.createUser('district_operator', tree.district.id);
    const { id } = (await send({ type: 'stop', targets: { areaIds: [tree.district.id] } }, district)).json<{
      id: string;
    }>();

    const communeUser = await t.createUser('broadcaster', tree.communeA.id);
    const detail = (await t.request('GET', `/api/v1/commands/${id}`, { token: communeUser })).json<Detail>();
    expect(detail.targets).toBe(2);
    expect(detail.devices.map((d) => d.deviceName)).toEqual(['Cụm loa Đông']);
    const listed = (await t.request('GET', '/api/v1/commands', { token: communeUser })).json<{
      items: { id: string }[];
    }>();
    expect(listed.items.map((c) => c.id)).toEqual([id]);

    const hamletBOnly = await t.createArea({ name: 'Thôn Bắc', level: 'hamlet', parentId: tree.communeB.id });
    const stranger = await t.createUser('broadcaster', hamletBOnly.id);
    expect((await t.request('GET', `/api/v1/commands/${id}`, { token: stranger })).statusCode).toBe(404);
    expect(
      (await t.request('GET', '/api/v1/commands', { token: stranger })).json<{ items: unknown[] }>().items,
    ).toEqual([]);
  });

  it('lists recent commands newest first', async () => {
    const d = await t.createDevice(tree.hamletA.id);
    const first = (
      await send({ type: 'volume', params: { level: 10 }, targets: { deviceIds: [d.id] } })
    ).json<{ id: string }>();
    clock.advance(1_000);
    const second = (await send({ type: 'stop', targets: { deviceIds: [d.id] } })).json<{ id: string }>();
    const res = await t.request('GET', '/api/v1/commands?limit=10', { token: t.adminToken });
    expect(res.json<{ items: { id: string }[] }>().items.map((c) => c.id)).toEqual([second.id, first.id]);
    expect((await t.request('GET', '/api/v1/commands/cmd_nope', { token: t.adminToken })).statusCode).toBe(
      404,
    );
  });

  it('writes every command to the audit log with who, what and targets', async () => {
    const d = await t.createDevice(tree.hamletA.id);
    const { id } = (
      await send({ type: 'volume', params: { level: 55 }, targets: { deviceIds: [d.id] } })
    ).json<{ id: string }>();
    const res = await t.request('GET', `/api/v1/audit?targetType=command&targetId=${id}`, {
      token: t.adminToken,
    });
    const [entry] = res.json<{
      items: { action: string; actorUsername: string; at: string; details: Record<string, unknown> }[];
    }>().items;
    expect(entry).toMatchObject({
      action: 'command.create',
      actorUsername: 'admin',
      at: '2026-06-01T01:00:00.000Z',
      details: { type: 'volume', params: { level: 55 }, targets: { deviceIds: [d.id] }, targetCount: 1 },
    });
  });
});
