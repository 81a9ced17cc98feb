/**
 * What the server sends again when a device (re)subscribes to its cmd topic: plays join the broadcast
 * where it now is (offsetMs), ended plays are closed instead of sent, and commands the device received but
 * never answered finally are asked again. A real broker and real MQTT clients; only the clock is manual.
 */
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { commandSchema, topics } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { connectDevice, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

type Device = { id: string; credentials: { clientId: string; username: string; password: string } };
type Received = { id: string; type: string; issuedAt: string; params: Record<string, unknown> };

const media = (durationMs: number) => ({
  kind: 'media',
  url: 'https://media.loa.example/canh-bao-lu.mp3',
  sha256: 'cd'.repeat(32),
  durationMs,
});

describe('commands: re-sent when a device comes back', () => {
  let t: TestApp;
  let clock: ManualClock;
  let url: string;
  let device: Device;
  const clients: MqttClient[] = [];

  beforeEach(async () => {
    clock = new ManualClock('2026-06-01T01:00:00.000Z');
    t = await createTestApp({ clock, listen: true });
    url = `mqtt://127.0.0.1:${t.app.broker.port}`;
    const tree = await createAreaTree(t);
    device = await t.createDevice(tree.hamletA.id, 'Cụm loa Đông');
  });
  afterEach(async () => {
    await end(...clients.splice(0));
    await t.close();
  });

  /** Connects the device, subscribes to cmd and records every command it is sent. */
  const online = async () => {
    const client = await connectDevice(url, device.credentials);
    clients.push(client);
    const received: Received[] = [];
    client.on('message', (_topic, payload) =>
      received.push(commandSchema.parse(JSON.parse(payload.toString('utf8'))) as Received),
    );
    await client.subscribeAsync(topics.cmd(device.id), { qos: 1 });
    await waitFor(() => t.app.broker.isReady(device.id), 'subscribed');
    return { client, received };
  };
  const offline = async (client: MqttClient) => {
    await client.endAsync();
    await waitFor(() => !t.app.broker.isOnline(device.id), 'offline');
  };
  const send = async (body: Record<string, unknown>) => {
    const res = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: { targets: { deviceIds: [device.id] }, ...body },
    });
    expect(res.statusCode, res.body).toBe(202);
    return res.json<{ id: string }>().id;
  };
  const delivery = async (id: string) =>
    (await t.request('GET', `/api/v1/commands/${id}`, { token: t.adminToken })).json<{
      devices: { status: string; reason?: string }[];
    }>().devices[0];
  /** A new command proves the connection works; everything re-sent on subscribe arrived before it. */
  const afterMarker = async (received: Received[]) => {
    const marker = await send({ type: 'ping' });
    await waitFor(() => received.some((c) => c.id === marker), 'the marker command');
    return received.filter((c) => c.id !== marker);
  };

  it('re-sends a play with offsetMs = its own offset plus the time since it was sent', async () => {
    const id = await send({
      type: 'play',
      priority: 'emergency',
      params: { source: media(30_000), repeat: 2, offsetMs: 5_000, volume: 90 },
    });
    // A stream without a duration has no end and no position to join at: it goes out as it was.
    const stream = await send({
      type: 'play',
      params: { source: { kind: 'stream', url: 'https://radio.loa.example/vov1' } },
    });
    clock.advance(20_000);
    const d = await online();
    const [resent, resentStream] = await afterMarker(d.received);
    expect(resent).toMatchObject({
      id,
      type: 'play',
      issuedAt: '2026-06-01T01:00:00.000Z',
      priority: 'emergency',
      params: { offsetMs: 25_000, repeat: 2, volume: 90 },
    });
    expect(resentStream?.id).toBe(stream);
    expect(resentStream?.params).not.toHaveProperty('offsetMs');
  });

  it('re-sends a play the device acknowledged only as received, and lets it answer finally', async () => {
    const first = await online();
    const id = await send({ type: 'play', params: { source: media(60_000) } });
    await waitFor(() => first.received.length === 1, 'first delivery');
    expect(first.received[0]?.params.offsetMs).toBeUndefined();
    await first.client.publishAsync(
      topics.ack(device.id),
      JSON.stringify({ id, status: 'received', at: clock.now().toISOString() }),
      { qos: 1 },
    );
    await waitFor(async () => (await delivery(id))?.status === 'received', 'received stored');
    // The device crashes before its final ack.
    await offline(first.client);
    clock.advance(12_000);

    const again = await online();
    const resent = await afterMarker(again.received);
    expect(resent).toMatchObject([{ id, params: { offsetMs: 12_000 } }]);
    await again.client.publishAsync(
      topics.ack(device.id),
      JSON.stringify({ id, status: 'done', at: clock.now().toISOString() }),
      { qos: 1 },
    );
    await waitFor(async () => (await delivery(id))?.status === 'done', 'final ack stored');
  });

  it('re-sends a stop or volume received but never finally answered, unchanged', async () => {
    const first = await online();
    const id = await send({ type: 'volume', params: { level: 35 } });
    await waitFor(() => first.received.length === 1, 'first delivery');
    await first.client.publishAsync(
      topics.ack(device.id),
      JSON.stringify({ id, status: 'received', at: clock.now().toISOString() }),
      { qos: 1 },
    );
    await waitFor(async () => (await delivery(id))?.status === 'received', 'received stored');
    await offline(first.client);
    const again = await online();
    expect(await afterMarker(again.received)).toEqual(first.received);
  });

  it('does not re-send a play whose content has ended, and closes its delivery with reason ended', async () => {
    const first = await online();
    const reached = await send({ type: 'play', params: { source: media(30_000) } });
    await waitFor(() => first.received.length === 1, 'first delivery');
    await offline(first.client);
    const missed = await send({ type: 'play', params: { source: media(10_000), repeat: 3 } });
    clock.advance(30_000);

    const again = await online();
    expect(await afterMarker(again.received)).toEqual([]);
    expect(await delivery(reached)).toMatchObject({ status: 'expired', reason: 'ended' });
    expect(await delivery(missed)).toMatchObject({ status: 'offline', reason: 'ended' });
  });
});
