/**
 * The device gateway survives a database that refuses writes: a handler's error is logged and counted in
 * /metrics, the process lives on, and the next message is handled as usual. The failure is real: a
 * trigger added through a second connection makes SQLite abort the write ("disk full").
 */
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { topics, type PlaybackLogEntry } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { metricValue, RefusedWrites } from './support/faults.js';
import { connectDevice, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

describe('device gateway', () => {
  let t: TestApp;
  let clock: ManualClock;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let writes: RefusedWrites;
  const clients: MqttClient[] = [];

  beforeEach(async () => {
    clock = new ManualClock('2026-06-01T00:00:00.000Z');
    t = await createTestApp({
      clock,
      listen: true,
    });
    tree = await createAreaTree(t);
    writes = new RefusedWrites(t.dataDir);
  });
  afterEach(async () => {
    await end(...clients.splice(0));
    writes.close();
    await t.close();
  });

  const connect = async (credentials: { clientId: string; username: string; password: string }) => {
    const client = await connectDevice(`mqtt://127.0.0.1:${t.app.broker.port}`, credentials);
    clients.push(client);
    return client;
  };
  const metric = (series: string) => metricValue(t.app, series);
  const failures = (channel: string) => metric(`loa_device_event_failures_total{channel="${channel}"}`);
  const refuseWrites = (table: string, operation: 'INSERT' | 'UPDATE') => writes.refuse(table, operation);
  const allowWrites = (table: string) => writes.allow(table);

  it('retries a log entry it could not store, counts the failure, and stores it once writes work again', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa bến đò');
    const client = await connect(device.credentials);
    const retries = () => metric('loa_db_batch_retries_total{writer="playback"}');
    expect(await retries()).toBe(0);
    const entry: PlaybackLogEntry = {
      seq: 1,
      sessionId: 'ses_1',
      commandId: 'cmd_1',
      event: 'started',
      at: '2026-06-01T00:00:00.000Z',
    };

    refuseWrites('playback_events', 'INSERT');
    await client.publishAsync(topics.log(device.id), JSON.stringify(entry), { qos: 1 });
    await waitFor(async () => (await retries()) === 1, 'the failure counted');
    expect(t.query('SELECT seq FROM playback_events')).toEqual([]);

    allowWrites('playback_events');
    // The first back-off (src/db/batch-writer.ts) on the server's clock: the retry stores the entry.
    clock.advance(500);
    expect(t.query('SELECT seq FROM playback_events')).toEqual([{ seq: 1 }]);
    await client.publishAsync(topics.log(device.id), JSON.stringify({ ...entry, seq: 2 }), { qos: 1 });
    await waitFor(
      () => t.query(`SELECT seq FROM playback_events WHERE device_id = '${device.id}'`).length === 2,
      'the next entry stored',
    );
    expect(t.query('SELECT seq FROM playback_events ORDER BY seq')).toEqual([{ seq: 1 }, { seq: 2 }]);
    expect(await retries()).toBe(1);
    expect(await metric('loa_db_batch_dropped_items_total{writer="playback"}')).toBe(0);
    expect(await failures('log')).toBe(0);
    expect(client.connected).toBe(true);
    expect((await t.request('GET', '/healthz')).statusCode).toBe(200);
  });

  it('counts pending commands it could not mark sent on a reconnect, and the device keeps its link', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa chợ');
    const sent = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: { type: 'volume', targets: { deviceIds: [device.id] }, params: { level: 40 } },
    });
    expect(sent.statusCode, sent.body).toBe(202);

    refuseWrites('command_deliveries', 'UPDATE');
    const client = await connect(device.credentials);
    const command = new Promise<string>((resolve) =>
      client.once('message', (_topic, p) => resolve(String(p))),
    );
    await client.subscribeAsync(topics.cmd(device.id), { qos: 1 });
    await waitFor(async () => (await failures('ready')) === 1, 'the failure counted');
    expect(JSON.parse(await command)).toMatchObject({ type: 'volume', params: { level: 40 } });

    allowWrites('command_deliveries');
    await client.publishAsync(
      topics.state(device.id),
      JSON.stringify({ firmware: '1.4.2', volume: 40, playing: null }),
      { qos: 1 },
    );
    await waitFor(async () => {
      const res = await t.request('GET', `/api/v1/devices/${device.id}/health`, { token: t.adminToken });
      return res.json<{ volume: number | null }>().volume === 40;
    }, 'the next message handled');
    expect(client.connected).toBe(true);
  });
});
