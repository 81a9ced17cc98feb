/**
 * The playback log over the real broker: each `log` entry is stored once in playback_events, and counts
 * once towards a device's health, even when QoS 1 delivers the same message twice.
 */
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { topics, type PlaybackLogEntry } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { connectDevice, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

describe('playback log', () => {
  let t: TestApp;
  let device: { id: string; credentials: { clientId: string; username: string; password: string } };
  let client: MqttClient;

  beforeEach(async () => {
    t = await createTestApp({ clock: new ManualClock('2026-06-01T00:00:00.000Z'), listen: true });
    const tree = await createAreaTree(t);
    device = await t.createDevice(tree.hamletA.id, 'Cụm loa chợ Đông');
    client = await connectDevice(`mqtt://127.0.0.1:${t.app.broker.port}`, device.credentials);
  });
  afterEach(async () => {
    await end(client);
    await t.close();
  });

  const publish = (entry: PlaybackLogEntry) =>
    client.publishAsync(topics.log(device.id), JSON.stringify(entry), { qos: 1 });
  const stored = () =>
    t.query(
      `SELECT seq, session_id AS sessionId, command_id AS commandId, event, at, reason FROM playback_events
       WHERE device_id = '${device.id}' ORDER BY seq`,
    ) as { seq: number; sessionId: string; commandId: string; event: string; at: number; reason: string }[];

  it('stores an entry delivered twice once, and counts it once towards playback failures', async () => {
    const failed: PlaybackLogEntry = {
      seq: 1,
      sessionId: 'ses_tin_bao',
      commandId: 'cmd_tin_bao',
      event: 'failed',
      at: '2026-06-01T07:00:00+07:00',
      reason: 'không tải được tệp âm thanh',
    };
    await publish(failed);
    await publish(failed);
    // One connection's messages are handled in order: once seq 2 is stored, both copies of seq 1 were seen.
    await publish({ ...failed, seq: 2, at: '2026-06-01T07:00:05+07:00' });
    await waitFor(() => stored().length === 2, 'two entries stored');

    expect(stored()).toEqual([
      {
        seq: 1,
        sessionId: 'ses_tin_bao',
        commandId: 'cmd_tin_bao',
        event: 'failed',
        at: Date.parse('2026-06-01T00:00:00Z'),
        reason: 'không tải được tệp âm thanh',
      },
      expect.objectContaining({ seq: 2, event: 'failed' }),
    ]);
    const health = await t.request('GET', `/api/v1/devices/${device.id}/health`, { token: t.adminToken });
    expect(health.json<{ playbackFailures: number }>().playbackFailures).toBe(2);
  });

  it('stores a copy that arrives in the same batch as its original once, and counts it once', async () => {
    const failed: PlaybackLogEntry = {
      seq: 7,
      sessionId: 'ses_lũ',
      commandId: 'cmd_lũ',
      event: 'failed',
      at: '2026-06-01T00:00:00.000Z',
      reason: 'loa bị ngắt',
    };
    // Both in one tick, so both are in one transaction (src/db/batch-writer.ts): no earlier commit can
    // tell the second that the first was stored. Over MQTT, which tick a copy arrives in is up to the
    // network, so the service is fed directly, as the device gateway feeds it.
    t.app.services.playback.record(device.id, failed);
    t.app.services.playback.record(device.id, { ...failed });
    await waitFor(() => stored().length === 1, 'the entry stored');
    const health = await waitFor(async () => {
      const res = await t.request('GET', `/api/v1/devices/${device.id}/health`, { token: t.adminToken });
      const body = res.json<{ playbackFailures: number }>();
      return body.playbackFailures > 0 ? body : null;
    }, 'the failure counted');
    expect(health.playbackFailures).toBe(1);
    expect(stored()).toEqual([
      expect.objectContaining({ seq: 7, sessionId: 'ses_lũ', reason: 'loa bị ngắt' }),
    ]);
  });

  it('stores entries that differ only in event or device time, as the protocol keys them', async () => {
    const started: PlaybackLogEntry = {
      seq: 1,
      sessionId: 'ses_1',
      commandId: 'cmd_1',
      event: 'started',
      at: '2026-06-01T00:00:00.000Z',
    };
    await publish(started);
    // After a reboot seq starts again at 1: the device time tells the two entries apart.
    await publish({ ...started, at: '2026-06-01T00:10:00.000Z' });
    await publish({ ...started, seq: 2, event: 'finished', at: '2026-06-01T00:10:30.000Z' });
    await waitFor(() => stored().length === 3, 'three entries stored');
    expect(stored().map((e) => [e.seq, e.event])).toEqual([
      [1, 'started'],
      [1, 'started'],
      [2, 'finished'],
    ]);
  });
});
