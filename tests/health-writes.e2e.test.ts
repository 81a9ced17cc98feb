/**
 * Device health while the database refuses writes: presence transitions, telemetry samples and the live
 * device status are kept and tried again (a bounded number of times for history), every failure is counted
 * in /metrics, the process and the devices' links stay up, and once the database takes writes again they
 * are stored. The failure is real: a trigger added through a second connection makes SQLite abort the
 * write ("disk full"); the retries run on the server's clock, which the test moves.
 */
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { topics, type Telemetry } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { metricValue, RefusedWrites } from './support/faults.js';
import { connectDevice, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

describe('health writes while the database refuses them', () => {
  let t: TestApp;
  let clock: ManualClock;
  let device: { id: string; credentials: { clientId: string; username: string; password: string } };
  let writes: RefusedWrites;
  const clients: MqttClient[] = [];

  beforeEach(async () => {
    clock = new ManualClock('2026-06-01T00:00:00.000Z');
    t = await createTestApp({ clock, listen: true });
    const tree = await createAreaTree(t);
    device = await t.createDevice(tree.hamletA.id, 'Cụm loa đầu cầu Đông');
    writes = new RefusedWrites(t.dataDir);
  });
  afterEach(async () => {
    await end(...clients.splice(0));
    writes.close();
    await t.close();
  });

  const connect = async () => {
    const client = await connectDevice(`mqtt://127.0.0.1:${t.app.broker.port}`, device.credentials);
    clients.push(client);
    return client;
  };
  const metric = (series: string) => metricValue(t.app, series);
  const retries = (writer: string) => metric(`loa_db_batch_retries_total{writer="${writer}"}`);
  const dropped = (writer: string) => metric(`loa_db_batch_dropped_items_total{writer="${writer}"}`);
  const refuseWrites = (table: string, operation: 'INSERT' | 'UPDATE') => writes.refuse(table, operation);
  const allowWrites = (table: string) => writes.allow(table);
  const transitions = () =>
    t.query(
      `SELECT online, cause FROM presence_transitions WHERE device_id = '${device.id}' ORDER BY id`,
    ) as { online: number; cause: string }[];
  const stillUp = async (client: MqttClient) => {
    expect(client.connected).toBe(true);
    expect((await t.request('GET', '/healthz')).statusCode).toBe(200);
  };

  it('retries a presence transition it could not store, and stores it once writes work again', async () => {
    refuseWrites('presence_transitions', 'INSERT');
    const client = await connect();
    await waitFor(async () => (await retries('presence')) === 1, 'the failure counted');
    await stillUp(client);
    expect(transitions()).toEqual([]);
    // Not stored yet, but shown: the API reads the transitions still on their way.
    const health = await t.request('GET', `/api/v1/devices/${device.id}/health`, { token: t.adminToken });
    expect(health.json<{ transitions: { cause: string }[] }>().transitions).toEqual([
      expect.objectContaining({ online: true, cause: 'connect' }),
    ]);

    allowWrites('presence_transitions');
    // The first back-off, 0.5 s (src/db/batch-writer.ts).
    clock.advance(500);
    expect(transitions()).toEqual([{ online: 1, cause: 'connect' }]);
    expect(await retries('presence')).toBe(1);
    expect(await dropped('presence')).toBe(0);
  });

  it('gives a transition up after its last attempt, counted, and stores the next one', async () => {
    refuseWrites('presence_transitions', 'INSERT');
    const client = await connect();
    await waitFor(async () => (await retries('presence')) === 1, 'the failure counted');
    // 5 attempts over 0.5 + 1 + 2 + 4 s: then the batch is dropped instead of retried for ever.
    clock.advance(500);
    clock.advance(1_000);
    clock.advance(2_000);
    clock.advance(4_000);
    expect(await retries('presence')).toBe(4);
    expect(await dropped('presence')).toBe(1);
    await stillUp(client);

    allowWrites('presence_transitions');
    await end(client);
    clients.splice(0);
    await waitFor(() => transitions().length === 1, 'the next transition stored');
    expect(transitions()).toEqual([{ online: 0, cause: 'disconnect' }]);
    expect(await retries('presence')).toBe(4);
  });

  it('retries telemetry samples it could not store', async () => {
    const client = await connect();
    refuseWrites('telemetry_samples', 'INSERT');
    const telemetry: Telemetry = {
      at: clock.now().toISOString(),
      uptimeS: 600,
      rssiDbm: -71,
      supplyVoltage: 12.8,
      onBattery: false,
      ampTempC: 36,
      speakerFault: false,
    };
    await client.publishAsync(topics.telemetry(device.id), JSON.stringify(telemetry), { qos: 1 });
    // Samples are written once a second, by the periodic job.
    await waitFor(async () => {
      if ((await retries('telemetry')) >= 1) return true;
      clock.advance(1_000);
      return false;
    }, 'the failure counted');
    await stillUp(client);
    expect(t.query('SELECT count(*) AS n FROM telemetry_samples')).toEqual([{ n: 0 }]);

    allowWrites('telemetry_samples');
    clock.advance(500);
    expect(t.query('SELECT rssi_dbm AS rssi FROM telemetry_samples')).toEqual([{ rssi: -71 }]);
    expect(await dropped('telemetry')).toBe(0);
  });

  it('keeps the live status in memory while it cannot be stored, and stores it after a back-off', async () => {
    const client = await connect();
    await waitFor(() => transitions().length === 1, 'connected');
    refuseWrites('devices', 'UPDATE');
    await client.publishAsync(
      topics.state(device.id),
      JSON.stringify({ firmware: '1.4.2', volume: 35, playing: null }),
      { qos: 1 },
    );
    await waitFor(async () => (await retries('device_status')) === 1, 'the failure counted');
    await stillUp(client);
    const health = await t.request('GET', `/api/v1/devices/${device.id}/health`, { token: t.adminToken });
    expect(health.json<{ volume: number }>().volume).toBe(35);
    expect(t.query(`SELECT volume FROM devices WHERE id = '${device.id}'`)).toEqual([{ volume: null }]);

    allowWrites('devices');
    // The periodic job (every second) writes it once the 0.5 s back-off is over.
    clock.advance(1_000);
    expect(t.query(`SELECT volume FROM devices WHERE id = '${device.id}'`)).toEqual([{ volume: 35 }]);
    expect(await retries('device_status')).toBe(1);
  });
});
