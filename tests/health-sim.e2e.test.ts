/**
 * Faults injected in firmware-sim devices, seen by a technician through the REST API. Real time, with a
 * one-second heartbeat so that silence shows within seconds.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SimDevice, type Faults } from '../firmware-sim/src/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { waitFor } from './support/wait.js';

type Health = {
  online: boolean;
  health: string;
  reasons: string[];
  transitions: { cause: string; online: boolean }[];
};

describe('firmware-sim faults through the REST API', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let technician: string;
  const sims: SimDevice[] = [];

  beforeEach(async () => {
    t = await createTestApp({ listen: true, env: { HEARTBEAT_S: '1', SILENT_AFTER_HEARTBEATS: '3' } });
    tree = await createAreaTree(t);
    technician = await t.createUser('technician', tree.communeA.id);
  });
  afterEach(async () => {
    await Promise.all(sims.splice(0).map((s) => s.close()));
    await t.close();
  });

  async function device(name: string, faults: Partial<Faults> = {}, maintenance = true) {
    const created = await t.createDevice(tree.hamletA.id, name);
    // heartbeatS is simulated seconds; speed 1 keeps it real: telemetry every second.
    const sim = new SimDevice({
      // Placeholder media URLs: this file tests the protocol; firmware-sim-download.test.ts downloads.
      noDownload: true,
      id: created.id,
      password: created.credentials.password,
      mqttUrl: `mqtt://127.0.0.1:${t.app.broker.port}`,
      heartbeatS: 1,
      speed: 1,
      bootS: 0.2,
      reconnectPeriodMs: 200,
      maintenance,
      faults,
    });
    sims.push(sim);
    await sim.connect();
    return { id: created.id, sim };
  }
  const health = async (id: string) =>
    (await t.request('GET', `/api/v1/devices/${id}/health`, { token: technician })).json<Health>();
  const until = (id: string, what: string, check: (h: Health) => boolean) =>
    waitFor(async () => {
      const h = await health(id);
      return check(h) ? h : null;
    }, what);

  it('reports a dropped connection, a silent device and a speaker fault, each for what it is', async () => {
    const dropped = await device('Cụm loa mất kết nối');
    const silent = await device('Cụm loa treo');
    const broken = await device('Cụm loa hỏng loa', { speakerFault: true });
    const fine = await device('Cụm loa tốt');

    await until(broken.id, 'speaker fault', (h) => h.health === 'fault');
    dropped.sim.disconnect();
    silent.sim.setFaults({ silent: true });

    const h1 = await until(dropped.id, 'dropped offline', (h) => !h.online);
    expect(h1.transitions[0]).toMatchObject({ online: false, cause: 'disconnect' });
    const h2 = await until(silent.id, 'silent offline', (h) => !h.online);
    expect(h2.transitions[0]).toMatchObject({ online: false, cause: 'silent' });
    expect(silent.sim.connected).toBe(true);
    const h3 = await health(broken.id);
    expect(h3).toMatchObject({ online: true, health: 'fault', reasons: ['speaker_fault'] });
    expect(await health(fine.id)).toMatchObject({ online: true, health: 'ok' });

    // Lists read the database, which presence and health changes reach on a following tick (in slices
    // when many change at once): on a busy machine a little after the device's own health answer.
    const faultyNames = async () =>
      (await t.request('GET', '/api/v1/devices?health=fault', { token: technician }))
        .json<{ items: { name: string }[] }>()
        .items.map((d) => d.name)
        .sort();
    const expected = ['Cụm loa hỏng loa', 'Cụm loa mất kết nối', 'Cụm loa treo'];
    await waitFor(
      async () => JSON.stringify(await faultyNames()) === JSON.stringify(expected),
      'three faults listed',
    );
    expect(await faultyNames()).toEqual(expected);
    const summary = await t.request('GET', `/api/v1/areas/${tree.communeA.id}/summary`, {
      token: technician,
    });
    expect(summary.json()).toMatchObject({ total: 4, online: 2, offline: 2, ok: 1, fault: 3 });

    silent.sim.setFaults({ silent: false });
    const back = await until(silent.id, 'resumed', (h) => h.online);
    expect(back.transitions[0]).toMatchObject({ online: true, cause: 'resumed' });
  });

  it('pings, identifies and reboots a device through the command path', async () => {
    const d = await device('Cụm loa cần kiểm tra');
    const old = await device('Cụm loa đời cũ', {}, false);
    const send = async (body: Record<string, unknown>) => {
      const res = await t.request('POST', '/api/v1/commands', { token: technician, body });
      expect(res.statusCode, res.body).toBe(202);
      return res.json<{ id: string }>().id;
    };
    const settled = (id: string, status: string, n = 1) =>
      waitFor(async () => {
        const detail = (await t.request('GET', `/api/v1/commands/${id}`, { token: technician })).json<{
          counts: Record<string, number>;
          devices: { deviceId: string; status: string; reason?: string; rttMs?: number }[];
        }>();
        return detail.counts[status] === n ? detail : null;
      }, `${status} ×${n}`);

    const ping = await settled(await send({ type: 'ping', targets: { deviceIds: [d.id] } }), 'done');
    expect(ping.devices[0]?.rttMs).toEqual(expect.any(Number));
    expect(ping.devices[0]!.rttMs!).toBeGreaterThanOrEqual(0);

    await settled(
      await send({ type: 'identify', params: { durationS: 30 }, targets: { deviceIds: [d.id] } }),
      'done',
    );
    const unsupported = await settled(
      await send({ type: 'ping', targets: { deviceIds: [old.id] } }),
      'rejected',
    );
    expect(unsupported.devices[0]).toMatchObject({ status: 'rejected', reason: 'unsupported' });

    await settled(await send({ type: 'reboot', targets: { deviceIds: [d.id] } }), 'done');
    const rebooted = await until(d.id, 'back after reboot', (h) => h.online && h.transitions.length >= 3);
    expect(rebooted.transitions.slice(0, 3).map((x) => [x.online, x.cause])).toEqual([
      [true, 'connect'],
      [false, 'disconnect'],
      [true, 'connect'],
    ]);

    const broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    const refused = await t.request('POST', '/api/v1/commands', {
      token: broadcaster,
      body: { type: 'reboot', targets: { deviceIds: [d.id] } },
    });
    expect(refused.statusCode).toBe(403);
  });
});
