/**
 * Plays with `startAt` (a schedule's occurrence, sent MEDIA_LEAD_S early, or late after a restart) and the
 * plays the server sends itself (CommandsService.dispatchPlay): idempotent by id, and re-sent on reconnect
 * from the broadcast's clock (startAt), unchanged before it starts. A real broker and a real MQTT client;
 * only the clock is manual.
 */
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CommandRow } from '../src/db/schema/index.js';
import { derivedId } from '../src/lib/ids.js';
import { planResend, resendPayload } from '../src/modules/commands/commands.service.js';
import { commandSchema, topics, type Command } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { connectDevice, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

const source = {
  kind: 'media' as const,
  url: 'https://media.loa.example/ban-tin-sang.mp3',
  sha256: 'ab'.repeat(32),
  durationMs: 300_000,
};

function playRow(overrides: { params?: Record<string, unknown>; createdAt?: string } = {}): CommandRow {
  const createdAt = new Date(overrides.createdAt ?? '2026-12-01T22:59:00.000Z');
  return {
    id: 'cmd_lichphat',
    type: 'play',
    priority: 'normal',
    params: { sessionId: 'ses_lichphat', source, ...overrides.params },
    createdBy: null,
    createdAt,
    expiresAt: new Date('2026-12-01T23:05:00.000Z'),
    targetCount: 1,
    programmeId: null,
    programmeRevisionId: null,
    emergencyId: null,
  };
}

describe('resendPayload with startAt', () => {
  const startAt = '2026-12-01T23:00:00.000Z';

  it('sends a play whose startAt is still ahead unchanged: the device downloads and waits', () => {
    const row = playRow({ params: { startAt } });
    const payload = resendPayload(row, new Date('2026-12-01T22:59:40.000Z')) as Command;
    expect(payload.params).toEqual({ sessionId: 'ses_lichphat', source, startAt });
  });

  it('joins from startAt, not from when the command was created, and moves startAt to now', () => {
    const row = playRow({ params: { startAt } });
    const now = new Date('2026-12-01T23:01:35.000Z');
    const payload = resendPayload(row, now) as Command;
    expect(payload.params).toMatchObject({ offsetMs: 95_000, startAt: now.toISOString() });
  });

  it('adds the offset the play started at (a late join) to the time since its startAt', () => {
    // Sent 95 s late after a restart: startAt = then, offsetMs = 95 s; 20 s later the device is back.
    const row = playRow({ params: { startAt: '2026-12-01T23:01:35.000Z', offsetMs: 95_000 } });
    const now = new Date('2026-12-01T23:01:55.000Z');
    expect((resendPayload(row, now) as Command).params).toMatchObject({
      offsetMs: 115_000,
      startAt: now.toISOString(),
    });
  });

  it('ends the play once startAt + its length has passed', () => {
    const row = playRow({ params: { startAt } });
    expect(resendPayload(row, new Date('2026-12-01T23:05:00.000Z'))).toBe('ended');
    expect(resendPayload(row, new Date('2026-12-01T23:04:59.999Z'))).not.toBe('ended');
  });

  it('keeps a play without startAt as it was: from its creation, no startAt added', () => {
    const row = playRow({ createdAt: '2026-12-01T23:00:00.000Z' });
    const payload = resendPayload(row, new Date('2026-12-01T23:00:10.000Z')) as Command;
    expect(payload.params).toEqual({ sessionId: 'ses_lichphat', source, offsetMs: 10_000 });
  });

  it('planResend sends a waiting play as it is, even one the device already answered', () => {
    const row = playRow({ params: { startAt } });
    const plan = planResend(
      [{ command: row, status: 'done', seq: 1 }],
      [],
      new Date('2026-12-01T22:59:30.000Z'),
    );
    expect(plan.closed).toEqual([]);
    expect(plan.send.map((s) => s.payload.params)).toEqual([{ sessionId: 'ses_lichphat', source, startAt }]);
  });
});

describe('commands the server sends itself (dispatchPlay)', () => {
  let t: TestApp;
  let clock: ManualClock;
  let url: string;
  let device: { id: string; credentials: { clientId: string; username: string; password: string } };
  const clients: MqttClient[] = [];

  beforeEach(async () => {
    clock = new ManualClock('2026-12-01T22:58:00.000Z');
    t = await createTestApp({ clock, listen: true });
    url = `mqtt://127.0.0.1:${t.app.broker.port}`;
    const tree = await createAreaTree(t);
    device = await t.createDevice(tree.hamletA.id, 'Cụm loa Đông – Thôn Đông');
  });
  afterEach(async () => {
    await end(...clients.splice(0));
    await t.close();
  });

  const online = async () => {
    const client = await connectDevice(url, device.credentials);
    clients.push(client);
    const received: Command[] = [];
    client.on('message', (_topic, payload) =>
      received.push(commandSchema.parse(JSON.parse(payload.toString('utf8')))),
    );
    await client.subscribeAsync(topics.cmd(device.id), { qos: 1 });
    await waitFor(() => t.app.broker.isReady(device.id), 'subscribed');
    return { client, received };
  };
  const offline = async (client: MqttClient) => {
    await client.endAsync();
    await waitFor(() => !t.app.broker.isOnline(device.id), 'offline');
  };
  const slot = new Date('2026-12-01T23:00:00.000Z');
  const id = derivedId('cmd', 'sch_thongbao', slot.toISOString());
  const sessionId = derivedId('ses', 'sch_thongbao', slot.toISOString());
  const dispatch = () =>
    t.app.services.commands.dispatchPlay({
      id,
      sessionId,
      deviceIds: [device.id],
      priority: 'normal',
      source,
      volume: 70,
      startAt: slot,
      expiresAt: new Date(slot.getTime() + source.durationMs),
      programmeId: null,
      programmeRevisionId: null,
      playbackRecord: null,
    });

  it('publishes once per id, with startAt, and no server actor; a second dispatch changes nothing', async () => {
    const d = await online();
    expect(dispatch()).toEqual({ created: true, sent: 1 });
    const sent = await waitFor(() => d.received.find((c) => c.id === id), 'the play');
    expect(sent).toMatchObject({
      type: 'play',
      priority: 'normal',
      expiresAt: '2026-12-01T23:05:00.000Z',
      params: { sessionId, source, volume: 70, startAt: slot.toISOString() },
    });
    expect(sent.params).not.toHaveProperty('offsetMs');

    expect(dispatch()).toEqual({ created: false, sent: 0 });
    const rows = t.query(`SELECT id, created_by FROM commands WHERE id = '${id}'`);
    expect(rows).toEqual([{ id, created_by: null }]);
    expect(t.query(`SELECT count(*) AS n FROM command_deliveries WHERE command_id = '${id}'`)).toEqual([
      { n: 1 },
    ]);
    const detail = await t.request('GET', `/api/v1/commands/${id}`, { token: t.adminToken });
    expect(detail.json()).toMatchObject({ id, createdBy: null, targets: 1 });
  });

  it('runs `also` in the command transaction: when it throws, nothing is stored or sent', async () => {
    const d = await online();
    expect(() =>
      t.app.services.commands.dispatchPlay({
        id,
        sessionId,
        deviceIds: [device.id],
        priority: 'normal',
        source,
        startAt: slot,
        expiresAt: new Date(slot.getTime() + source.durationMs),
        programmeId: null,
        programmeRevisionId: null,
        playbackRecord: null,
        also: () => {
          throw new Error('claimed by someone else');
        },
      }),
    ).toThrow('claimed by someone else');
    expect(t.query(`SELECT id FROM commands WHERE id = '${id}'`)).toEqual([]);
    // Proves the connection delivers: the real dispatch arrives, and nothing came before it.
    dispatch();
    await waitFor(() => d.received.length > 0, 'the play');
    expect(d.received.map((c) => c.id)).toEqual([id]);
  });

  it('opens a playback record per device for a manual play: its content length, due now, ending at expiry', async () => {
    const res = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: {
        type: 'play',
        targets: { deviceIds: [device.id] },
        expiresInS: 900,
        params: { source: { ...source, durationMs: 30_000 }, repeat: 2 },
      },
    });
    expect(res.statusCode, res.body).toBe(202);
    const commandId = res.json<{ id: string }>().id;
    const [row] = t.query(`SELECT params FROM commands WHERE id = '${commandId}'`) as { params: string }[];
    expect(
      t.query(
        `SELECT session_id AS sessionId, device_id AS deviceId, due_at AS dueAt, ends_at AS endsAt,
                planned_ms AS plannedMs, schedule_id AS scheduleId, outcome
           FROM playback_log WHERE command_id = '${commandId}'`,
      ),
    ).toEqual([
      {
        sessionId: (JSON.parse(row!.params) as { sessionId: string }).sessionId,
        deviceId: device.id,
        dueAt: clock.now().getTime(),
        endsAt: clock.now().getTime() + 900_000,
        plannedMs: 60_000,
        scheduleId: null,
        outcome: null,
      },
    ]);
  });

  it('re-sends unchanged before startAt, and from startAt after it', async () => {
    dispatch(); // the device is away: the play waits for it
    clock.advance(30_000); // 22:58:30, still in the head start
    const early = await online();
    const first = await waitFor(() => early.received.find((c) => c.id === id), 'the waiting play');
    expect(first.params).toEqual({ sessionId, source, volume: 70, startAt: slot.toISOString() });
    await offline(early.client);

    clock.advance(150_000); // 23:01:00, a minute into the slot
    const late = await online();
    const again = await waitFor(() => late.received.find((c) => c.id === id), 'the play again');
    expect(again.params).toEqual({
      sessionId,
      source,
      volume: 70,
      offsetMs: 60_000,
      startAt: '2026-12-01T23:01:00.000Z',
    });
  });
});
