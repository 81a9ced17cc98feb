/**
 * What the server sends again when a device (re)subscribes to its cmd topic: plays join the broadcast
 * where it now is (offsetMs), ended plays are closed instead of sent, and commands the device received but
 * never answered finally are asked again. A play the device carried out (`done`) that still runs is sent
 * again too, so a device that rebooted plays it again, unless a later command of at least its priority
 * stopped or replaced it. A real broker and real MQTT clients; only the clock is manual.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RESEND_RETRY_MS } from '../src/modules/commands/commands.service.js';
import { commandSchema, topics } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { connectDevice, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

type Device = { id: string; credentials: { clientId: string; username: string; password: string } };
type Received = {
  id: string;
  type: string;
  issuedAt: string;
  priority: string;
  params: Record<string, unknown>;
};

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
  /**
   * A new command proves the connection works; everything re-sent on subscribe arrived before it. The
   * device answers it, so that it is not itself sent again on the next reconnect.
   */
  const afterMarker = async ({ client, received }: { client: MqttClient; received: Received[] }) => {
    const marker = await send({ type: 'ping' });
    await waitFor(() => received.some((c) => c.id === marker), 'the marker command');
    await answer(client, marker, 'done');
    return received.filter((c) => c.id !== marker);
  };
  /** The device answers finally, as firmware does once it has acted; resolves once that is stored. */
  const answer = async (client: MqttClient, id: string, status: 'done' | 'rejected', reason?: string) => {
    await client.publishAsync(
      topics.ack(device.id),
      JSON.stringify({ id, status, ...(reason ? { reason } : {}), at: clock.now().toISOString() }),
      { qos: 1 },
    );
    await waitFor(async () => (await delivery(id))?.status === status, `${status} stored for ${id}`);
  };
  /** Sends a command to the connected device, waits until it arrives, and answers it. */
  const carryOut = async (
    d: { client: MqttClient; received: Received[] },
    body: Record<string, unknown>,
    status: 'done' | 'rejected' = 'done',
    reason?: string,
  ) => {
    const id = await send(body);
    const command = await waitFor(() => d.received.find((c) => c.id === id), `command ${id}`);
    await answer(d.client, id, status, reason);
    return command;
  };
  const emergencyPlay = (durationMs: number) => ({
    type: 'play',
    priority: 'emergency',
    params: { source: media(durationMs), volume: 90 },
  });

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
    const [resent, resentStream] = await afterMarker(d);
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
    const resent = await afterMarker(again);
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
    expect(await afterMarker(again)).toEqual(first.received);
  });

  it('does not re-send a play whose content has ended, and closes its delivery with reason ended', async () => {
    const first = await online();
    const reached = await send({ type: 'play', params: { source: media(30_000) } });
    await waitFor(() => first.received.length === 1, 'first delivery');
    await offline(first.client);
    const missed = await send({ type: 'play', params: { source: media(10_000), repeat: 3 } });
    clock.advance(30_000);

    const again = await online();
    expect(await afterMarker(again)).toEqual([]);
    expect(await delivery(reached)).toMatchObject({ status: 'expired', reason: 'ended' });
    expect(await delivery(missed)).toMatchObject({ status: 'offline', reason: 'ended' });
  });

  it('re-sends a play the device answered done, with offsetMs, until its content has ended', async () => {
    const first = await online();
    const play = await carryOut(first, emergencyPlay(30_000));
    // The device loses power; the delivery stays done.
    await offline(first.client);
    clock.advance(10_000);

    const rebooted = await online();
    expect(await afterMarker(rebooted)).toMatchObject([
      { id: play.id, priority: 'emergency', params: { offsetMs: 10_000, volume: 90 } },
    ]);
    await answer(rebooted.client, play.id, 'done');
    await offline(rebooted.client);
    clock.advance(25_000);

    const later = await online();
    expect(await afterMarker(later)).toEqual([]);
    expect(await delivery(play.id)).toMatchObject({ status: 'done' });
  });

  it('does not re-send a done play that a later stop of at least its priority ended; a lower one does not count', async () => {
    const first = await online();
    const play = await carryOut(first, emergencyPlay(600_000));
    const sessionId = play.params.sessionId as string;
    // A routine stop is refused while the emergency plays; a stop of another session ends nothing.
    await carryOut(first, { type: 'stop' }, 'rejected', 'lower_priority');
    await carryOut(first, { type: 'stop', priority: 'emergency', params: { sessionId: 'ses_other' } });
    await offline(first.client);
    clock.advance(5_000);

    const back = await online();
    expect((await afterMarker(back)).map((c) => c.id)).toEqual([play.id]);
    await answer(back.client, play.id, 'done');
    await carryOut(back, { type: 'stop', priority: 'emergency', params: { sessionId } });
    await offline(back.client);

    const again = await online();
    expect(await afterMarker(again)).toEqual([]);
  });

  it('does not bring back an emergency that was stopped while the device was away', async () => {
    const first = await online();
    const play = await carryOut(first, emergencyPlay(600_000));
    await offline(first.client);
    const rebooted = await online();
    expect((await afterMarker(rebooted)).map((c) => c.id)).toEqual([play.id]);
    await answer(rebooted.client, play.id, 'done');
    await offline(rebooted.client);
    // The all-clear goes out and expires while the device is away: it never reaches it.
    const stop = await send({ type: 'stop', priority: 'emergency', expiresInS: 5 });
    clock.advance(10_000);
    expect(await delivery(stop)).toMatchObject({ status: 'offline' });

    const back = await online();
    expect(await afterMarker(back)).toEqual([]);
    expect(await delivery(play.id)).toMatchObject({ status: 'done' });
  });

  it('does not re-send a done play replaced by a later play of at least its priority; a refused one does not count', async () => {
    const first = await online();
    const play = await carryOut(first, emergencyPlay(60_000));
    await carryOut(first, { type: 'play', params: { source: media(30_000) } }, 'rejected', 'lower_priority');
    await offline(first.client);
    clock.advance(5_000);

    const back = await online();
    expect((await afterMarker(back)).map((c) => c.id)).toEqual([play.id]);
    await answer(back.client, play.id, 'done');
    // A short emergency replaces the long one, and ends before the device comes back.
    await carryOut(back, emergencyPlay(10_000));
    await offline(back.client);
    clock.advance(15_000);

    const again = await online();
    expect(await afterMarker(again)).toEqual([]);
  });

  it('does not send a pending play that a pending stop of at least its priority ends, and closes it', async () => {
    // While the device is away: an emergency and a routine stop, which the device would refuse.
    const first = await send(emergencyPlay(600_000));
    const routineStop = await send({ type: 'stop' });
    const d = await online();
    expect((await afterMarker(d)).map((c) => c.id)).toEqual([first, routineStop]);
    await answer(d.client, first, 'done');
    await answer(d.client, routineStop, 'rejected', 'lower_priority');
    await offline(d.client);

    // Away again: another emergency, then the all-clear. Sending the play first would sound it for a moment.
    const second = await send(emergencyPlay(600_000));
    const allClear = await send({ type: 'stop', priority: 'emergency' });
    const back = await online();
    expect((await afterMarker(back)).map((c) => c.id)).toEqual([allClear]);
    expect(await delivery(second)).toMatchObject({ status: 'offline', reason: 'stopped' });
    expect(await delivery(first)).toMatchObject({ status: 'done' });
  });

  it('tries the re-send once more a little later when the database fails', async () => {
    const id = await send(emergencyPlay(600_000));
    // A real failure: another connection takes the table away while the device subscribes, so the
    // server's read fails as it would on a broken or locked database.
    const outsider = new Database(path.join(t.dataDir, 'loa.sqlite'));
    let d: Awaited<ReturnType<typeof online>>;
    try {
      outsider.exec('ALTER TABLE command_deliveries RENAME TO command_deliveries_away');
      try {
        d = await online();
      } finally {
        outsider.exec('ALTER TABLE command_deliveries_away RENAME TO command_deliveries');
      }
    } finally {
      outsider.close();
    }
    // Nothing went out: the marker sent now is the first thing the device gets.
    expect(await afterMarker(d)).toEqual([]);

    clock.advance(2 * RESEND_RETRY_MS);
    await waitFor(() => d.received.some((c) => c.id === id), 'the retried re-send');
    // Sent when the retry ran, a few seconds on: the play's offset says when.
    const offsetMs = d.received.find((c) => c.id === id)?.params.offsetMs;
    expect(offsetMs).toBeGreaterThanOrEqual(RESEND_RETRY_MS);
    expect(offsetMs).toBeLessThanOrEqual(2 * RESEND_RETRY_MS);
  });

  it('publishes even when the database refuses writes, and records the re-send later without publishing again', async () => {
    const play = await send(emergencyPlay(600_000));
    const allClear = await send({ type: 'stop', priority: 'emergency' });
    const outsider = new Database(path.join(t.dataDir, 'loa.sqlite'));
    try {
      outsider.exec(
        `CREATE TRIGGER disk_full BEFORE UPDATE ON command_deliveries BEGIN SELECT RAISE(ABORT, 'disk full'); END`,
      );
      const d = await online();
      await waitFor(() => d.received.some((c) => c.id === allClear), 'the all-clear');
      expect(await delivery(play)).toMatchObject({ status: 'pending' });

      outsider.exec('DROP TRIGGER disk_full');
      clock.advance(2 * RESEND_RETRY_MS);
      await waitFor(async () => (await delivery(play))?.reason === 'stopped', 'the closure recorded');
      expect(await delivery(play)).toMatchObject({ status: 'offline', reason: 'stopped' });
      expect((await afterMarker(d)).map((c) => c.id)).toEqual([allClear]);
    } finally {
      outsider.close();
    }
  });
});
