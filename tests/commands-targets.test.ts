/**
 * Target resolution over the whole range the API accepts (1,000 areaIds, 10,000 deviceIds), with repeats
 * and nested areas counted once. Areas and devices are inserted straight into the app's database: through
 * the API, 11,000 of them would take most of a minute and prove nothing more.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { areas, devices } from '../src/db/schema/index.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';

describe('commands: targets over the whole accepted range', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  beforeEach(async () => {
    t = await createTestApp({ clock: new ManualClock() });
    tree = await createAreaTree(t);
  });
  afterEach(async () => t.close());

  const send = (body: unknown, token = t.adminToken) =>
    t.request('POST', '/api/v1/commands', { token, body });

  /** `count` hamlets under communeA, each with one device; returns their ids. */
  const hamletsWithDevices = (count: number) => {
    const communePath = (
      t.query(`SELECT path FROM areas WHERE id = '${tree.communeA.id}'`)[0] as { path: string }
    ).path;
    const now = new Date();
    const areaIds: string[] = [];
    const deviceIds: string[] = [];
    t.app.db.transaction((tx) => {
      for (let i = 0; i < count; i += 1) {
        const areaId = `ar_bulk_${String(i).padStart(5, '0')}`;
        const deviceId = `dev_bulk_${String(i).padStart(5, '0')}`;
        tx.insert(areas)
          .values({
            id: areaId,
            name: `Thôn Đồng ${i}`,
            level: 'hamlet',
            parentId: tree.communeA.id,
            path: `${communePath}${areaId}/`,
            createdAt: now,
            updatedAt: now,
          })
          .run();
        tx.insert(devices)
          .values({
            id: deviceId,
            name: `Cụm loa Đồng ${i}`,
            sortName: `cum loa dong ${i}`,
            kind: 'cluster',
            areaId,
            secretHash: '0'.repeat(64),
            createdAt: now,
            updatedAt: now,
          })
          .run();
        areaIds.push(areaId);
        deviceIds.push(deviceId);
      }
    });
    return { areaIds, deviceIds };
  };

  it('accepts 1,000 areaIds (997 and more used to fail with "Expression tree is too large")', async () => {
    const { areaIds } = hamletsWithDevices(1_000);
    const res = await send({ type: 'stop', targets: { areaIds } });
    expect(res.statusCode, res.body).toBe(202);
    expect(res.json()).toMatchObject({ targets: 1_000, sent: 0 });
  });

  it('accepts 10,000 deviceIds together with 1,000 areaIds and counts each device once', async () => {
    const { areaIds, deviceIds: inAreas } = hamletsWithDevices(10_000);
    // The first 1,000 hamlets' devices are named twice: directly and through their area.
    const res = await send({
      type: 'volume',
      params: { level: 30 },
      targets: { deviceIds: inAreas, areaIds: areaIds.slice(0, 1_000) },
    });
    expect(res.statusCode, res.body).toBe(202);
    const { id, targets } = res.json<{ id: string; targets: number }>();
    expect(targets).toBe(10_000);
    expect(t.query(`SELECT COUNT(*) AS n FROM command_deliveries WHERE command_id = '${id}'`)).toEqual([
      { n: 10_000 },
    ]);
  });

  it('counts a device once when its area is named again, or inside another named area', async () => {
    const a = await t.createDevice(tree.hamletA.id, 'Cụm loa Đông');
    await t.createDevice(tree.communeA.id, 'Đài xã Hải Phú', 'station');
    const res = await send({
      type: 'stop',
      targets: {
        deviceIds: [a.id, a.id],
        areaIds: [tree.hamletA.id, tree.communeA.id, tree.hamletA.id, tree.communeA.id],
      },
    });
    expect(res.statusCode, res.body).toBe(202);
    expect(res.json()).toMatchObject({ targets: 2 });
  });

  it('names the index the caller used when a repeated list holds an unknown or out-of-area target', async () => {
    const a = await t.createDevice(tree.hamletA.id);
    const b = await t.createDevice(tree.hamletB.id);
    const unknown = await send({ type: 'stop', targets: { deviceIds: [a.id, a.id, 'dev_nope'] } });
    expect(unknown.statusCode).toBe(404);
    expect(problem(unknown).detail).toContain('targets.deviceIds.2');

    const token = await t.createUser('broadcaster', tree.communeA.id);
    const outside = await send({ type: 'stop', targets: { deviceIds: [a.id, a.id, a.id, b.id] } }, token);
    expect(outside.statusCode).toBe(403);
    expect(problem(outside).detail).toContain('targets.deviceIds.3');
  });
});
