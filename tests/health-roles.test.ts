/**
 * Who sees device health: district operators read the health, telemetry, area summaries and alerts of their
 * area (they must know which loudspeakers are down before they send a warning) but neither acknowledge
 * alerts nor send maintenance commands; broadcasters see none of it. Real broker and devices, test clock.
 */
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { connectDevice, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

type Alert = { id: number; deviceId: string; state: string; acknowledgedAt: string | null };

describe('health and alerts by role', () => {
  let t: TestApp;
  let clock: ManualClock;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let otherDistrict: { id: string };
  let inside: Awaited<ReturnType<TestApp['createDevice']>>;
  let outside: Awaited<ReturnType<TestApp['createDevice']>>;
  let operator: string;
  let technician: string;
  let broadcaster: string;
  const clients: MqttClient[] = [];

  /** Both devices connect once, drop, and stay away past the offline-alert threshold. */
  const bothOfflineWithAlerts = async () => {
    for (const device of [inside, outside]) {
      const client = await connectDevice(`mqtt://127.0.0.1:${t.app.broker.port}`, device.credentials);
      clients.push(client);
      await waitFor(() => t.app.services.health.devices.get(device.id)?.online, 'online');
      await client.endAsync();
      await waitFor(() => t.app.services.health.devices.get(device.id)?.online === false, 'offline');
    }
    clock.advance(11 * 60_000);
    const all = (await t.request('GET', '/api/v1/alerts?state=open', { token: t.adminToken })).json<{
      items: Alert[];
    }>().items;
    expect(all.map((a) => a.deviceId).sort()).toEqual([inside.id, outside.id].sort());
    return all;
  };

  beforeEach(async () => {
    clock = new ManualClock('2026-06-01T00:00:00.000Z');
    t = await createTestApp({ clock, listen: true });
    tree = await createAreaTree(t);
    otherDistrict = await t.createArea({
      name: 'Huyện Triệu Phong',
      level: 'district',
      parentId: tree.province.id,
    });
    const otherCommune = await t.createArea({
      name: 'Xã Triệu Độ',
      level: 'commune',
      parentId: otherDistrict.id,
    });
    inside = await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông');
    outside = await t.createDevice(otherCommune.id, 'Cụm loa Triệu Độ');
    operator = await t.createUser('district_operator', tree.district.id);
    technician = await t.createUser('technician', tree.district.id);
    broadcaster = await t.createUser('broadcaster', tree.district.id);
  });
  afterEach(async () => {
    await end(...clients.splice(0));
    await t.close();
  });

  it('lets a district operator read the health, telemetry, summary and alerts of their area', async () => {
    await bothOfflineWithAlerts();
    const as = (url: string) => t.request('GET', url, { token: operator });

    const summary = await as(`/api/v1/areas/${tree.district.id}/summary`);
    expect(summary.statusCode).toBe(200);
    expect(summary.json()).toMatchObject({ areaId: tree.district.id, total: 1, online: 0 });

    const health = await as(`/api/v1/devices/${inside.id}/health`);
    expect(health.statusCode).toBe(200);
    expect(health.json()).toMatchObject({ online: false });

    expect((await as(`/api/v1/devices/${inside.id}/telemetry`)).statusCode).toBe(200);

    const alerts = await as('/api/v1/alerts?state=open');
    expect(alerts.statusCode).toBe(200);
    expect(alerts.json<{ items: Alert[] }>().items.map((a) => a.deviceId)).toEqual([inside.id]);
  });

  it('shows a district operator nothing outside their area', async () => {
    await bothOfflineWithAlerts();
    for (const url of [
      `/api/v1/devices/${outside.id}/health`,
      `/api/v1/devices/${outside.id}/telemetry`,
      `/api/v1/areas/${otherDistrict.id}/summary`,
      `/api/v1/alerts?areaId=${otherDistrict.id}`,
    ]) {
      const res = await t.request('GET', url, { token: operator });
      expect([url, res.statusCode]).toEqual([url, 404]);
      expect(problem(res).code).toBe('not_found');
    }
  });

  it('does not let a district operator acknowledge an alert; a technician can', async () => {
    const alert = (await bothOfflineWithAlerts()).find((a) => a.deviceId === inside.id)!;
    const url = `/api/v1/alerts/${alert.id}/acknowledge`;
    const denied = await t.request('POST', url, { token: operator, body: { note: 'Đã biết' } });
    expect(denied.statusCode).toBe(403);
    expect(problem(denied).code).toBe('forbidden');
    const list = async () =>
      (await t.request('GET', '/api/v1/alerts', { token: operator })).json<{ items: Alert[] }>().items;
    expect((await list())[0]).toMatchObject({ id: alert.id, acknowledgedAt: null });

    const done = await t.request('POST', url, { token: technician, body: { note: 'Đã báo điện lực' } });
    expect(done.statusCode).toBe(200);
    expect((await list())[0]?.acknowledgedAt).not.toBeNull();
  });

  it('does not let a district operator send maintenance commands; a technician can', async () => {
    for (const type of ['reboot', 'ping', 'identify'] as const) {
      const body = { type, targets: { deviceIds: [inside.id] } };
      const denied = await t.request('POST', '/api/v1/commands', { token: operator, body });
      expect([type, denied.statusCode]).toEqual([type, 403]);
      expect(problem(denied).code).toBe('forbidden');
      const sent = await t.request('POST', '/api/v1/commands', { token: technician, body });
      expect([type, sent.statusCode]).toEqual([type, 202]);
    }
  });

  it('shows a broadcaster no health, summaries or alerts', async () => {
    for (const url of [
      `/api/v1/devices/${inside.id}/health`,
      `/api/v1/devices/${inside.id}/telemetry`,
      `/api/v1/areas/${tree.district.id}/summary`,
      '/api/v1/alerts',
    ]) {
      const res = await t.request('GET', url, { token: broadcaster });
      expect([url, res.statusCode]).toEqual([url, 403]);
    }
  });
});
