/**
 * Schedules follow the loudspeakers they name when the area tree changes: a hamlet moved to another commune,
 * or a cluster moved to another hamlet, takes its schedules with it, so the new commune's broadcasters see
 * (and may change) what plays there and the old commune's no longer do. A real app on a real SQLite file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { approvedRelay } from './support/programmes.js';

describe('schedules when areas and devices move', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let broadcasterA: string;
  let broadcasterB: string;
  let byArea: string;
  let byDevice: string;
  let device: string;

  const visibleTo = async (token: string) =>
    (await t.request('GET', '/api/v1/schedules', { token }))
      .json<{ items: { id: string }[] }>()
      .items.map((s) => s.id);

  beforeAll(async () => {
    t = await createTestApp({ clock: new ManualClock('2026-11-30T01:00:00.000Z') });
    tree = await createAreaTree(t);
    broadcasterA = await t.createUser('broadcaster', tree.communeA.id, 'phat.thanh.hai.phu');
    broadcasterB = await t.createUser('broadcaster', tree.communeB.id, 'phat.thanh.hai.thuong');
    await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông');
    device = (await t.createDevice(tree.communeA.id, 'Loa trung tâm xã Hải Phú')).id;
    // A district programme: both communes may schedule it.
    const districtEditor = await t.createUser('district_operator', tree.district.id, 'bien.tap.huyen');
    const relay = await approvedRelay(t, districtEditor, tree.district.id, {
      title: 'Tiếp sóng VOV1 – thời sự',
    });
    const schedule = async (targets: Record<string, string[]>, time: string) => {
      const res = await t.request('POST', '/api/v1/schedules', {
        token: broadcasterA,
        body: {
          programmeId: relay.id,
          targets,
          timing: { daily: { times: [time] }, from: '2026-12-01' },
          durationS: 600,
          note: 'Tiếp sóng thời sự buổi sáng',
        },
      });
      expect(res.statusCode, res.body).toBe(201);
      return res.json<{ id: string }>().id;
    };
    byArea = await schedule({ areaIds: [tree.hamletA.id] }, '06:00');
    byDevice = await schedule({ deviceIds: [device] }, '18:00');
  });

  afterAll(async () => {
    await t.close();
  });

  it('a hamlet moved to another commune takes its schedules along', async () => {
    expect(await visibleTo(broadcasterB)).toEqual([]);
    const moved = await t.request('PATCH', `/api/v1/areas/${tree.hamletA.id}`, {
      token: t.adminToken,
      body: { parentId: tree.communeB.id },
    });
    expect(moved.statusCode, moved.body).toBe(200);
    expect(await visibleTo(broadcasterB)).toEqual([byArea]);
    expect(await visibleTo(broadcasterA)).toEqual([byDevice]);
    // The new commune manages it now.
    const paused = await t.request('POST', `/api/v1/schedules/${byArea}/pause`, { token: broadcasterB });
    expect(paused.statusCode, paused.body).toBe(200);
  });

  it('a device moved to another commune takes the schedules that name it along', async () => {
    const moved = await t.request('PATCH', `/api/v1/devices/${device}`, {
      token: t.adminToken,
      body: { areaId: tree.hamletB.id },
    });
    expect(moved.statusCode, moved.body).toBe(200);
    expect((await visibleTo(broadcasterB)).sort()).toEqual([byArea, byDevice].sort());
    expect(await visibleTo(broadcasterA)).toEqual([]);
    const calendar = await t.request(
      'GET',
      `/api/v1/calendar?areaId=${tree.hamletB.id}&from=2026-12-01&to=2026-12-01`,
      { token: broadcasterB },
    );
    expect(calendar.json<{ items: { scheduleId: string }[] }>().items.map((i) => i.scheduleId)).toEqual([
      byDevice,
    ]);
  });
});
