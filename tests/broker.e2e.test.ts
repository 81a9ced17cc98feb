/**
 * The device protocol end to end over real sockets: the embedded broker on an ephemeral port, real
 * MQTT.js clients acting as devices, and the API reached through inject() on the same app.
 */
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { commandSchema, topics } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { closed, connectDevice, connectRaw, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

type Creds = { clientId: string; username: string; password: string };
type Device = { id: string; credentials: Creds };

describe('broker: authentication, ACL, presence', () => {
  let t: TestApp;
  let url: string;
  let device: Device;
  let other: Device;
  const clients: MqttClient[] = [];

  beforeEach(async () => {
    t = await createTestApp({ listen: true });
    url = `mqtt://127.0.0.1:${t.app.broker.port}`;
    const tree = await createAreaTree(t);
    device = await t.createDevice(tree.hamletA.id, 'Cụm loa Đông');
    other = await t.createDevice(tree.hamletB.id, 'Cụm loa Tây');
  });
  afterEach(async () => {
    await end(...clients.splice(0));
    await t.close();
  });

  const connect = async (creds: Creds, extra = {}) => {
    const client = await connectDevice(url, creds, extra);
    clients.push(client);
    return client;
  };
  const getDevice = async (id: string) =>
    (await t.request('GET', `/api/v1/devices/${id}`, { token: t.adminToken })).json<{
      online: boolean;
      lastSeenAt: string | null;
      state: { firmware: string; volume: number; playing: unknown } | null;
    }>();

  it('accepts a device with its credentials (24-character id) and marks it online', async () => {
    expect(device.id.length).toBeGreaterThan(23);
    await connect(device.credentials);
    await waitFor(async () => (await getDevice(device.id)).online, 'device online');
  });

  it('refuses a wrong secret, an unknown device and a clientId that is not the username', async () => {
    await expect(connectDevice(url, { ...device.credentials, password: 'wrong' })).rejects.toMatchObject({
      code: 4,
    });
    await expect(
      connectDevice(url, { clientId: 'dev_unknown', username: 'dev_unknown', password: 'x' }),
    ).rejects.toMatchObject({ code: 4 });
    await expect(connectDevice(url, { ...device.credentials, clientId: other.id })).rejects.toMatchObject({
      code: 5,
    });
    await expect(connectRaw(url, { clientId: device.id })).rejects.toMatchObject({ code: 5 });
    expect((await getDevice(device.id)).online).toBe(false);
  });

  it('lets a device subscribe only to its own cmd topic', async () => {
    const client = await connect(device.credentials);
    // MQTT.js turns any 0x80 into an error, so read the SUBACK itself.
    const suback = new Promise<number[]>((resolve) => {
      client.on('packetreceive', (packet) => {
        if (packet.cmd === 'suback') resolve(packet.granted as number[]);
      });
    });
    client.subscribe(
      [topics.cmd(device.id), topics.cmd(other.id), 'loa/v1/devices/+/cmd', '#', topics.ack(device.id)],
      { qos: 1 },
      () => undefined,
    );
    expect(await suback).toEqual([1, 128, 128, 128, 128]);
    expect(client.connected).toBe(true);
  });

  it('closes the connection of a device that publishes to another device’s topic', async () => {
    const client = await connect(device.credentials);
    const gone = closed(client);
    client.publish(topics.state(other.id), JSON.stringify({ firmware: '9.9.9', volume: 1, playing: null }), {
      qos: 1,
    });
    await gone;
    expect((await getDevice(other.id)).state).toBeNull();
  });

  it('closes the connection on a publish to its own cmd topic or to $SYS', async () => {
    for (const topic of [
      topics.cmd(device.id),
      '$SYS/broker/new/clients',
      `loa/v1/devices/${device.id}/secret`,
    ]) {
      const client = await connect(device.credentials);
      const gone = closed(client);
      client.publish(topic, '{}', { qos: 0 });
      await gone;
    }
  });

  it('stores the state a device reports and drops malformed payloads without harm', async () => {
    const client = await connect(device.credentials);
    for (const channel of ['ack', 'state', 'telemetry', 'log'] as const) {
      for (const payload of ['', 'not json', '[1,2]', '{"volume": "loud"}', Buffer.from([0xc3, 0x28])]) {
        await client.publishAsync(topics[channel](device.id), payload, { qos: 1 });
      }
    }
    expect(client.connected).toBe(true);
    const state = { firmware: '1.4.2', volume: 65, playing: null, extraField: 'ignored' };
    await client.publishAsync(topics.state(device.id), JSON.stringify(state), { qos: 1, retain: true });
    const stored = await waitFor(async () => (await getDevice(device.id)).state, 'state stored');
    expect(stored).toMatchObject({ firmware: '1.4.2', volume: 65, playing: null });
  });

  it('keeps a device online when a second connection with the same id replaces the first', async () => {
    const first = await connect(device.credentials);
    await waitFor(async () => (await getDevice(device.id)).online, 'online');
    const firstClosed = closed(first);
    await connect(device.credentials);
    await firstClosed;
    // The take-over is recorded once the old connection's disconnect has been handled (it is what tells
    // a take-over from a fresh connect), and in the same write as any outage it would have caused.
    const transitions = () =>
      t.query(`SELECT online, cause FROM presence_transitions WHERE device_id = '${device.id}' ORDER BY id`);
    await waitFor(() => transitions().length >= 2, 'take-over recorded');
    expect(transitions()).toEqual([
      { online: 1, cause: 'connect' },
      { online: 1, cause: 'takeover' },
    ]);
    expect(t.app.broker.isOnline(device.id)).toBe(true);
    expect((await getDevice(device.id)).online).toBe(true);
  });

  it('marks a device offline when it disconnects', async () => {
    const client = await connect(device.credentials);
    await waitFor(async () => (await getDevice(device.id)).online, 'online');
    await client.endAsync();
    await waitFor(async () => !(await getDevice(device.id)).online, 'offline');
  });

  it('disconnects the old session on credential rotation; only the new secret works', async () => {
    const client = await connect(device.credentials);
    const gone = closed(client);
    const rotated = await t.request('POST', `/api/v1/devices/${device.id}/credentials`, {
      token: t.adminToken,
    });
    const fresh = rotated.json<Creds>();
    await gone;
    await expect(connectDevice(url, device.credentials)).rejects.toMatchObject({ code: 4 });
    await connect(fresh);
  });

  it('disconnects and refuses a deleted device', async () => {
    const client = await connect(device.credentials);
    const gone = closed(client);
    await t.request('DELETE', `/api/v1/devices/${device.id}`, { token: t.adminToken });
    await gone;
    await expect(connectDevice(url, device.credentials)).rejects.toMatchObject({ code: 4 });
  });

  it('speaks MQTT over WebSocket at /mqtt on the HTTP port', async () => {
    const address = t.app.server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    const client = await connect(device.credentials, {});
    await client.endAsync();
    const ws = await connectDevice(`ws://127.0.0.1:${port}/mqtt`, device.credentials);
    clients.push(ws);
    const granted = await ws.subscribeAsync(topics.cmd(device.id), { qos: 1 });
    expect(granted[0]?.qos).toBe(1);
    await waitFor(async () => (await getDevice(device.id)).online, 'online over websocket');
  });
});

describe('broker: commands reach devices', () => {
  let t: TestApp;
  let clock: ManualClock;
  let url: string;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  const clients: MqttClient[] = [];

  beforeEach(async () => {
    clock = new ManualClock();
    t = await createTestApp({ clock, listen: true });
    url = `mqtt://127.0.0.1:${t.app.broker.port}`;
    tree = await createAreaTree(t);
  });
  afterEach(async () => {
    await end(...clients.splice(0));
    await t.close();
  });

  /** A device that records what it receives on cmd. */
  const online = async (device: Device) => {
    const client = await connectDevice(url, device.credentials);
    clients.push(client);
    const received: unknown[] = [];
    client.on('message', (_topic, payload) => received.push(JSON.parse(payload.toString('utf8'))));
    await client.subscribeAsync(topics.cmd(device.id), { qos: 1 });
    await waitFor(() => t.app.broker.isReady(device.id), 'subscribed');
    return { client, received };
  };
  const status = async (commandId: string) =>
    (await t.request('GET', `/api/v1/commands/${commandId}`, { token: t.adminToken })).json<{
      counts: Record<string, number>;
      devices: { deviceId: string; status: string; reason?: string }[];
    }>();

  it('publishes a protocol-valid command to every target and tracks each ack', async () => {
    const a = await t.createDevice(tree.hamletA.id);
    const b = await t.createDevice(tree.hamletA.id);
    const da = await online(a);
    const db = await online(b);
    const res = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: { type: 'volume', params: { level: 35 }, targets: { areaIds: [tree.communeA.id] } },
    });
    const { id, sent } = res.json<{ id: string; sent: number }>();
    expect(sent).toBe(2);
    await waitFor(() => da.received.length === 1 && db.received.length === 1, 'commands received');
    const command = commandSchema.parse(da.received[0]);
    expect(command).toMatchObject({ id, type: 'volume', priority: 'normal', params: { level: 35 } });

    const at = new Date().toISOString();
    await da.client.publishAsync(topics.ack(a.id), JSON.stringify({ id, status: 'received', at }), {
      qos: 1,
    });
    await da.client.publishAsync(topics.ack(a.id), JSON.stringify({ id, status: 'done', at }), { qos: 1 });
    await db.client.publishAsync(
      topics.ack(b.id),
      JSON.stringify({ id, status: 'rejected', reason: 'bad_params', at }),
      { qos: 1 },
    );
    const final = await waitFor(async () => {
      const s = await status(id);
      return s.counts.done === 1 && s.counts.rejected === 1 ? s : null;
    }, 'acks recorded');
    expect(final.devices.find((d) => d.deviceId === b.id)).toMatchObject({
      status: 'rejected',
      reason: 'bad_params',
    });
  });

  it('never lets a late "received" overwrite "done", nor an ack for another device count', async () => {
    const a = await t.createDevice(tree.hamletA.id);
    const b = await t.createDevice(tree.hamletA.id);
    const da = await online(a);
    const { id } = (
      await t.request('POST', '/api/v1/commands', {
        token: t.adminToken,
        body: { type: 'stop', targets: { deviceIds: [a.id] } },
      })
    ).json<{ id: string }>();
    const at = new Date().toISOString();
    await da.client.publishAsync(topics.ack(a.id), JSON.stringify({ id, status: 'done', at }), { qos: 1 });
    await da.client.publishAsync(topics.ack(a.id), JSON.stringify({ id, status: 'received', at }), {
      qos: 1,
    });
    const dbClient = await online(b);
    await dbClient.client.publishAsync(topics.ack(b.id), JSON.stringify({ id, status: 'failed', at }), {
      qos: 1,
    });
    // Acks are stored in the order they arrive: once b's answer to a later command is stored, both acks
    // above have been handled too.
    const { id: marker } = (
      await t.request('POST', '/api/v1/commands', {
        token: t.adminToken,
        body: { type: 'ping', targets: { deviceIds: [b.id] } },
      })
    ).json<{ id: string }>();
    await dbClient.client.publishAsync(topics.ack(b.id), JSON.stringify({ id: marker, status: 'done', at }), {
      qos: 1,
    });
    await waitFor(async () => (await status(marker)).counts.done === 1, 'the later ack stored');
    expect((await status(id)).counts).toMatchObject({ done: 1, received: 0, failed: 0 });
  });

  it('sends a command to a device that was offline when it reconnects before expiry', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    const { id, sent } = (
      await t.request('POST', '/api/v1/commands', {
        token: t.adminToken,
        body: { type: 'volume', params: { level: 80 }, targets: { deviceIds: [device.id] } },
      })
    ).json<{ id: string; sent: number }>();
    expect(sent).toBe(0);
    const d = await online(device);
    await waitFor(() => d.received.length === 1, 'pending command delivered on reconnect');
    expect(d.received[0]).toMatchObject({ id, type: 'volume', params: { level: 80 } });
  });

  it('does not send an expired command to a device that comes back late', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: { type: 'volume', params: { level: 80 }, targets: { deviceIds: [device.id] }, expiresInS: 60 },
    });
    clock.advance(60_001);
    const d = await online(device);
    // A later command proves the subscription works and that the expired one was skipped.
    await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: { type: 'stop', targets: { deviceIds: [device.id] } },
    });
    await waitFor(() => d.received.length >= 1, 'the new command');
    expect(d.received.map((c) => (c as { type: string }).type)).toEqual(['stop']);
  });
});
