/**
 * The durable dispatcher with an injected clock: schedules saved through the API air on time (with the
 * media head start), join late after a restart, are skipped after a long outage, survive a crash on either
 * side of the commit without a duplicate or a loss, resume after a higher-priority play, and reach a device
 * that reconnects mid-slot. Real app, real SQLite file (reopened by a second app to play a restart), real
 * embedded broker and real MQTT clients acting as devices; only the clock is manual.
 */
import fs from 'node:fs';
import type { FastifyInstance } from 'fastify';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { derivedId } from '../src/lib/ids.js';
import { occurrencePlayIds } from '../src/modules/schedules/planning.js';
import { commandSchema, topics, type Command } from '../src/protocol/index.js';
import { ADMIN_PASSWORD, createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { RefusedWrites, metricValue } from './support/faults.js';
import { connectDevice, end } from './support/mqtt.js';
import { approvedRelay } from './support/programmes.js';
import { waitFor } from './support/wait.js';

type Play = Extract<Command, { type: 'play' }>;
type Credentials = { clientId: string; username: string; password: string };

/** An instant of 2 December 2026, Vietnamese wall-clock time. */
const local = (hhmmss: string) => new Date(`2026-12-02T${hhmmss}+07:00`);
const SLOT = local('06:00:00');
const SLOT_END = local('06:05:00');

describe('schedules: the durable dispatcher', () => {
  let t: TestApp;
  let clock: ManualClock;
  /** The app running now: t.app, or the one that reopened its data after a restart. */
  let app: FastifyInstance;
  let reopened: FastifyInstance | null = null;
  let token: string;
  let lines: string[];
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  /** Writes programmes, which admin approves: nobody approves their own. */
  let editor: string;
  let device: { id: string; credentials: Credentials };
  const clients: MqttClient[] = [];
  const faults: RefusedWrites[] = [];

  const logger = () => ({
    level: 'info',
    stream: { write: (line: string) => void lines.push(line) },
  });

  beforeEach(async () => {
    lines = [];
    clock = new ManualClock(local('05:50:00').toISOString());
    t = await createTestApp({ clock, listen: true, logger: logger() });
    app = t.app;
    token = t.adminToken;
    tree = await createAreaTree(t);
    editor = await t.createUser('broadcaster', tree.communeA.id);
    device = await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông');
  });
  afterEach(async () => {
    await end(...clients.splice(0));
    for (const f of faults.splice(0)) f.close();
    if (reopened) {
      await reopened.close();
      reopened = null;
      fs.rmSync(t.dataDir, { recursive: true, force: true });
    } else {
      await t.close();
    }
  });

  const request = async (method: 'GET' | 'POST' | 'DELETE', url: string, body?: unknown) =>
    app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${token}` },
      ...(body !== undefined ? { payload: body as object } : {}),
    });

  /** Moves the clock to a local time of 2 December, firing the timers on the way. */
  const at = (hhmmss: string) => clock.advance(local(hhmmss).getTime() - clock.now().getTime());

  /** The server "crashes" (its app is closed, nothing more runs) and starts again on the same data. */
  const restart = async (hhmmss: string) => {
    await end(...clients.splice(0));
    await app.close();
    clock = new ManualClock(local(hhmmss).toISOString());
    lines.length = 0; // from here on, the log lines of the restarted server
    const config = loadConfig({
      DATA_DIR: t.dataDir,
      PORT: '0',
      MQTT_PORT: '0',
      HOST: '127.0.0.1',
      ADMIN_PASSWORD,
      LOG_LEVEL: 'silent',
    });
    reopened = await buildApp({ config, clock, logger: logger() });
    app = reopened;
    await app.listen({ host: '127.0.0.1', port: 0 });
    const login = await app.inject({
      method: 'POST',
      url: '/api/v1/auth/login',
      payload: { username: 'admin', password: ADMIN_PASSWORD },
    });
    token = login.json<{ token: string }>().token;
  };

  /** Connects `device` as a plain MQTT client; `received` collects every command it is sent. */
  const online = async (credentials: Credentials = device.credentials) => {
    const client = await connectDevice(`mqtt://127.0.0.1:${app.broker.port}`, credentials);
    clients.push(client);
    const received: Command[] = [];
    client.on('message', (_topic, payload) =>
      received.push(commandSchema.parse(JSON.parse(payload.toString('utf8')))),
    );
    await client.subscribeAsync(topics.cmd(credentials.clientId), { qos: 1 });
    await waitFor(() => app.broker.isReady(credentials.clientId), 'subscribed');
    return { client, received };
  };
  const offline = async (client: MqttClient) => {
    await client.endAsync();
    await waitFor(() => !app.broker.isOnline(device.id), 'offline');
  };
  const playsOf = (received: Command[]) => received.filter((c): c is Play => c.type === 'play');

  /** A relay of VOV1 at 06:00 on 2 December for five minutes, to the hamlet. */
  const scheduleRelay = async (body: Record<string, unknown> = {}) => {
    const programme = await approvedRelay(t, editor, tree.communeA.id, {
      title: 'Tiếp sóng thời sự – Đài Tiếng nói Việt Nam',
    });
    const res = await request('POST', '/api/v1/schedules', {
      programmeId: programme.id,
      targets: { areaIds: [tree.hamletA.id] },
      timing: { once: '2026-12-02T06:00' },
      durationS: 300,
      volume: 80,
      ...body,
    });
    expect(res.statusCode, res.body).toBe(201);
    const id = res.json<{ id: string }>().id;
    return {
      id,
      programme,
      commandId: derivedId('cmd', id, SLOT.toISOString()),
      sessionId: derivedId('ses', id, SLOT.toISOString()),
    };
  };

  const occurrences = (scheduleId: string) =>
    t.query(
      `SELECT status, reason, command_id AS commandId FROM schedule_occurrences WHERE schedule_id = '${scheduleId}'`,
    );
  const records = (scheduleId: string) =>
    t.query(
      `SELECT device_id AS deviceId, session_id AS sessionId, command_id AS commandId, occurrence_id AS occurrenceId,
              due_at AS dueAt, ends_at AS endsAt, planned_ms AS plannedMs, outcome, reason
         FROM playback_log WHERE schedule_id = '${scheduleId}'`,
    ) as Record<string, unknown>[];
  const logged = (msg: string) =>
    lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === msg);

  it('sends a file MEDIA_LEAD_S early with startAt = the slot start, once, with its playback record', async () => {
    const created = await t.request('POST', '/api/v1/programmes', {
      token: editor,
      body: {
        title: 'Thông báo lịch tiêm phòng dại – Thôn Đông',
        areaId: tree.communeA.id,
        category: 'health',
        content: { segments: [{ silenceMs: 4000 }] },
      },
    });
    expect(created.statusCode, created.body).toBe(201);
    const programmeId = created.json<{ id: string }>().id;
    for (const [step, by] of [
      ['submit', editor],
      ['approve', t.adminToken],
    ] as const) {
      const res = await t.request('POST', `/api/v1/programmes/${programmeId}/${step}`, {
        token: by,
        body: {},
      });
      expect(res.statusCode, res.body).toBe(200);
    }
    const res = await request('POST', '/api/v1/schedules', {
      programmeId,
      targets: { deviceIds: [device.id] },
      timing: { once: '2026-12-02T06:00' },
    });
    expect(res.statusCode, res.body).toBe(201);
    const scheduleId = res.json<{ id: string }>().id;
    const d = await online();

    at('05:58:59');
    expect(playsOf(d.received)).toEqual([]);
    at('05:59:00'); // 06:00 less the default head start of 60 s
    const play = await waitFor(() => playsOf(d.received)[0], 'the play');
    const commandId = derivedId('cmd', scheduleId, SLOT.toISOString());
    expect(play).toMatchObject({
      id: commandId,
      priority: 'normal',
      issuedAt: local('05:59:00').toISOString(),
      expiresAt: local('06:00:04').toISOString(),
      params: {
        sessionId: derivedId('ses', scheduleId, SLOT.toISOString()),
        startAt: SLOT.toISOString(),
        source: { kind: 'media', durationMs: 4000 },
      },
    });
    expect(play.params).not.toHaveProperty('offsetMs');
    expect(occurrences(scheduleId)).toEqual([{ status: 'dispatched', reason: null, commandId }]);
    expect(records(scheduleId)).toMatchObject([
      {
        deviceId: device.id,
        commandId,
        dueAt: SLOT.getTime(),
        endsAt: local('06:00:04').getTime(),
        plannedMs: 4000,
        outcome: null,
      },
    ]);
    expect(logged('occurrence dispatched')).toMatchObject([{ scheduleId, devices: 1, lagMs: 0 }]);
    const audit = t.query(
      `SELECT actor_id AS actorId, target_id AS targetId FROM audit_log WHERE action = 'schedule.dispatch'`,
    );
    expect(audit).toEqual([{ actorId: null, targetId: scheduleId }]);

    expect(await metricValue(app, 'loa_schedule_dispatch_lag_seconds_count')).toBe(1);

    // Time goes on: nothing is sent a second time.
    at('06:10:00');
    expect(playsOf(d.received).map((p) => p.id)).toEqual([commandId]);
  });

  it('sends a relay at its start with the duration the schedule gives and the schedule volume', async () => {
    const schedule = await scheduleRelay();
    const d = await online();
    at('06:00:00');
    const play = await waitFor(() => playsOf(d.received)[0], 'the play');
    expect(play).toMatchObject({
      id: schedule.commandId,
      expiresAt: SLOT_END.toISOString(),
      params: {
        sessionId: schedule.sessionId,
        startAt: SLOT.toISOString(),
        volume: 80,
        source: { kind: 'stream', url: schedule.programme.url, durationMs: 300_000 },
      },
    });
  });

  it('leaves out the devices another schedule overrides, recording them skipped with who won', async () => {
    const market = await t.createDevice(tree.hamletA.id, 'Cụm loa chợ Đông');
    const loser = await scheduleRelay();
    // The same slot on one of the hamlet's two devices, saved with onConflict override.
    const winner = await scheduleRelay({ targets: { deviceIds: [device.id] }, onConflict: 'override' });
    const d = await online();
    const m = await online(market.credentials);
    at('06:00:00');
    await waitFor(() => playsOf(d.received)[0] && playsOf(m.received)[0], 'both plays');
    expect(playsOf(d.received).map((p) => p.id)).toEqual([winner.commandId]);
    expect(playsOf(m.received).map((p) => p.id)).toEqual([loser.commandId]);
    const reason = `overridden by schedule ${winner.id} («Tiếp sóng thời sự – Đài Tiếng nói Việt Nam»)`;
    const byDevice = new Map(records(loser.id).map((r) => [r.deviceId, r]));
    expect(byDevice.get(device.id)).toMatchObject({ outcome: 'skipped', reason });
    expect(byDevice.get(market.id)).toMatchObject({ outcome: null, reason: null });
    expect(t.query(`SELECT target_count AS n FROM commands WHERE id = '${loser.commandId}'`)).toEqual([
      { n: 1 },
    ]);
  });

  it('skips an occurrence whose programme was deleted, with the reason in each record', async () => {
    const schedule = await scheduleRelay();
    const outsider = new RefusedWrites(t.dataDir);
    faults.push(outsider);
    outsider.db
      .prepare('UPDATE programmes SET deleted_at = ? WHERE id = ?')
      .run(local('05:55:00').getTime(), schedule.programme.id);
    at('06:00:00');
    const reason = 'the programme has been deleted';
    expect(occurrences(schedule.id)).toEqual([{ status: 'skipped', reason, commandId: null }]);
    expect(records(schedule.id)).toMatchObject([{ deviceId: device.id, outcome: 'skipped', reason }]);
  });

  it('after a restart in the middle of the slot, joins late at the right offset, once', async () => {
    const schedule = await scheduleRelay();
    at('05:55:00');
    await restart('06:01:35');
    // The restarted server sent it at once; the device, back 5 s later, joins where the broadcast is.
    expect(occurrences(schedule.id)).toEqual([
      { status: 'dispatched', reason: null, commandId: schedule.commandId },
    ]);
    const sent = t.query(`SELECT params FROM commands WHERE id = '${schedule.commandId}'`) as {
      params: string;
    }[];
    expect(JSON.parse(sent[0]!.params)).toMatchObject({
      offsetMs: 95_000,
      startAt: local('06:01:35').toISOString(),
    });
    clock.advance(5_000);
    const d = await online();
    const play = await waitFor(() => playsOf(d.received)[0], 'the play');
    expect(play).toMatchObject({
      id: schedule.commandId,
      params: { offsetMs: 100_000, startAt: local('06:01:40').toISOString() },
    });
    expect(logged('occurrence dispatched')).toMatchObject([{ scheduleId: schedule.id, lagMs: 95_000 }]);
  });

  it('after a long outage, records the occurrence and each device skipped, with the reason', async () => {
    const schedule = await scheduleRelay();
    const other = await t.createDevice(tree.hamletA.id, 'Cụm loa chợ Đông');
    at('05:55:00');
    await restart('07:30:00');
    const reason = 'the server was not running when the slot began (06:00–06:05)';
    expect(occurrences(schedule.id)).toEqual([{ status: 'skipped', reason, commandId: null }]);
    expect(t.query(`SELECT id FROM commands WHERE id = '${schedule.commandId}'`)).toEqual([]);
    const skipped = records(schedule.id);
    expect(skipped.map((r) => r.deviceId).sort()).toEqual([device.id, other.id].sort());
    for (const r of skipped) expect(r).toMatchObject({ outcome: 'skipped', reason });
    // Nothing is on its way to the devices.
    const d = await online();
    const ping = await request('POST', '/api/v1/commands', {
      type: 'ping',
      targets: { deviceIds: [device.id] },
    });
    await waitFor(() => d.received.some((c) => c.id === ping.json<{ id: string }>().id), 'the ping');
    expect(playsOf(d.received)).toEqual([]);
  });

  it('a crash before the commit leaves the occurrence planned; after the restart the same command goes out', async () => {
    const schedule = await scheduleRelay();
    const d = await online();
    // The claim is the last write of the dispatch transaction: refusing it rolls back the command, its
    // deliveries and its playback records too, as a crash before the commit would.
    const disk = new RefusedWrites(t.dataDir);
    faults.push(disk);
    disk.refuse('schedule_occurrences', 'UPDATE');
    // The dispatcher writes an occurrence PREPARE_AHEAD_MS before it is due (and would retry RETRY_MS on).
    at('05:59:55');
    expect(occurrences(schedule.id)).toEqual([{ status: 'planned', reason: null, commandId: null }]);
    expect(t.query(`SELECT id FROM commands WHERE id = '${schedule.commandId}'`)).toEqual([]);
    expect(records(schedule.id)).toEqual([]);
    expect(logged('dispatching an occurrence failed; it stays planned and is tried again')).toHaveLength(1);

    disk.allow('schedule_occurrences');
    await restart('06:00:20');
    const again = await online();
    const play = await waitFor(() => playsOf(again.received)[0], 'the play');
    expect(play).toMatchObject({ id: schedule.commandId, params: { offsetMs: 20_000 } });
    expect(playsOf(d.received)).toEqual([]);
    expect(occurrences(schedule.id)).toEqual([
      { status: 'dispatched', reason: null, commandId: schedule.commandId },
    ]);
    expect(records(schedule.id)).toHaveLength(1);
  });

  it('committed but never published (the server died first): the devices get it on reconnect, never twice', async () => {
    const schedule = await scheduleRelay();
    // Nobody is connected when it goes out, so the commit is all there is, as when the server dies
    // between the commit and the publish.
    at('06:00:00');
    expect(occurrences(schedule.id)).toEqual([
      { status: 'dispatched', reason: null, commandId: schedule.commandId },
    ]);
    await restart('06:02:00');
    const d = await online();
    const play = await waitFor(() => playsOf(d.received)[0], 'the play');
    expect(play).toMatchObject({
      id: schedule.commandId,
      params: { sessionId: schedule.sessionId, offsetMs: 120_000, startAt: local('06:02:00').toISOString() },
    });
    clock.advance(60_000); // the restarted dispatcher's timer runs: nothing is sent again
    const ping = await request('POST', '/api/v1/commands', {
      type: 'ping',
      targets: { deviceIds: [device.id] },
    });
    await waitFor(() => d.received.some((c) => c.id === ping.json<{ id: string }>().id), 'the ping');
    expect(playsOf(d.received).map((p) => p.id)).toEqual([schedule.commandId]);
    expect(t.query(`SELECT count(*) AS n FROM commands WHERE type = 'play'`)).toEqual([{ n: 1 }]);
    expect(logged('occurrence dispatched')).toEqual([]); // the restarted server dispatched nothing
  });

  it('a device reconnecting mid-slot gets the play at the broadcast position', async () => {
    const schedule = await scheduleRelay();
    const first = await online();
    at('06:00:00');
    await waitFor(() => playsOf(first.received)[0], 'the play');
    await first.client.publishAsync(
      topics.ack(device.id),
      JSON.stringify({ id: schedule.commandId, status: 'done', at: clock.now().toISOString() }),
      { qos: 1 },
    );
    await offline(first.client);
    at('06:03:10');
    const back = await online();
    const play = await waitFor(() => playsOf(back.received)[0], 'the play again');
    expect(play).toMatchObject({
      id: schedule.commandId,
      params: { offsetMs: 190_000, startAt: local('06:03:10').toISOString() },
    });
  });

  it('resumes the interrupted occurrence at the right offset when a priority play ends', async () => {
    const schedule = await scheduleRelay();
    const d = await online();
    let seq = 0;
    const log = async (commandId: string, sessionId: string, event: string, reason?: string) => {
      seq += 1;
      await d.client.publishAsync(
        topics.log(device.id),
        JSON.stringify({
          seq,
          sessionId,
          commandId,
          event,
          at: clock.now().toISOString(),
          ...(reason ? { reason } : {}),
        }),
        { qos: 1 },
      );
      const mine = seq;
      await waitFor(
        () =>
          t.query(`SELECT 1 FROM playback_events WHERE device_id = '${device.id}' AND seq = ${mine}`).length,
        `log entry ${mine} stored`,
      );
    };

    at('06:00:00');
    await waitFor(() => playsOf(d.received)[0], 'the scheduled play');
    await log(schedule.commandId, schedule.sessionId, 'started');

    // A priority bulletin pre-empts it for 30 s.
    at('06:01:00');
    const res = await request('POST', '/api/v1/commands', {
      type: 'play',
      priority: 'priority',
      targets: { deviceIds: [device.id] },
      params: {
        source: {
          kind: 'media',
          url: 'https://media.loa.example/thong-bao-khan.mp3',
          sha256: 'ef'.repeat(32),
          durationMs: 30_000,
        },
      },
    });
    expect(res.statusCode, res.body).toBe(202);
    const urgent = await waitFor(() => playsOf(d.received).find((p) => p.priority === 'priority'), 'urgent');
    await log(schedule.commandId, schedule.sessionId, 'interrupted', 'preempted');
    await log(urgent.id, urgent.params.sessionId, 'started');
    expect(playsOf(d.received)).toHaveLength(2);

    at('06:01:30');
    await log(urgent.id, urgent.params.sessionId, 'finished');
    const resumeId = derivedId(
      'cmd',
      schedule.sessionId,
      device.id,
      'resume',
      local('06:01:30').toISOString(),
    );
    const resumed = await waitFor(() => playsOf(d.received).find((p) => p.id === resumeId), 'the resume');
    expect(resumed).toMatchObject({
      priority: 'normal',
      expiresAt: SLOT_END.toISOString(),
      params: {
        sessionId: schedule.sessionId,
        offsetMs: 90_000,
        startAt: local('06:01:30').toISOString(),
        volume: 80,
        source: { kind: 'stream', durationMs: 300_000 },
      },
    });
    // The same session, so the same playback record; the resume is audited.
    expect(records(schedule.id)).toHaveLength(1);
    expect(
      t.query(`SELECT actor_id AS actorId FROM audit_log WHERE action = 'schedule.resume_play'`),
    ).toEqual([{ actorId: null }]);
  });

  it('does not resume over a play sent since, when the end of the priority play is reported late', async () => {
    const schedule = await scheduleRelay();
    let d = await online();
    let seq = 0;
    const log = async (commandId: string, sessionId: string, event: string, when: Date, reason?: string) => {
      seq += 1;
      await d.client.publishAsync(
        topics.log(device.id),
        JSON.stringify({
          seq,
          sessionId,
          commandId,
          event,
          at: when.toISOString(),
          ...(reason ? { reason } : {}),
        }),
        { qos: 1 },
      );
      const mine = seq;
      await waitFor(
        () =>
          t.query(`SELECT 1 FROM playback_events WHERE device_id = '${device.id}' AND seq = ${mine}`).length,
        `log entry ${mine} stored`,
      );
    };
    const play = async (priority: string, url: string, durationMs: number) => {
      const res = await request('POST', '/api/v1/commands', {
        type: 'play',
        priority,
        targets: { deviceIds: [device.id] },
        params: { source: { kind: 'media', url, sha256: 'ef'.repeat(32), durationMs } },
      });
      expect(res.statusCode, res.body).toBe(202);
      return res.json<{ id: string }>().id;
    };

    at('06:00:00');
    await waitFor(() => playsOf(d.received)[0], 'the scheduled play');
    await log(schedule.commandId, schedule.sessionId, 'started', clock.now());
    at('06:01:00');
    const urgentId = await play('priority', 'https://media.loa.example/thong-bao-khan.mp3', 30_000);
    const urgent = await waitFor(() => playsOf(d.received).find((p) => p.id === urgentId), 'urgent');
    await log(schedule.commandId, schedule.sessionId, 'interrupted', clock.now(), 'preempted');
    await log(urgent.id, urgent.params.sessionId, 'started', clock.now());

    // The link drops; the bulletin ends while the device is away, and an operator sends a new play.
    await offline(d.client);
    at('06:01:40');
    const newerId = await play('normal', 'https://media.loa.example/loa-moi-hop-thon-dong.mp3', 120_000);
    d = await online();
    await waitFor(() => playsOf(d.received).find((p) => p.id === newerId), 'the newer play');
    // Only now does its offline log tell of the bulletin's end, at 06:01:30.
    await log(urgent.id, urgent.params.sessionId, 'finished', local('06:01:30'));
    await barrier(d);
    expect(playsOf(d.received).map((p) => p.id)).toEqual([newerId]);
    expect(t.query(`SELECT 1 FROM audit_log WHERE action = 'schedule.resume_play'`)).toEqual([]);
  });

  it('does not resume an occurrence whose schedule was paused while the priority play ran', async () => {
    const schedule = await scheduleRelay();
    const d = await online();
    let seq = 0;
    const log = async (commandId: string, sessionId: string, event: string, reason?: string) => {
      seq += 1;
      await d.client.publishAsync(
        topics.log(device.id),
        JSON.stringify({
          seq,
          sessionId,
          commandId,
          event,
          at: clock.now().toISOString(),
          ...(reason ? { reason } : {}),
        }),
        { qos: 1 },
      );
      const mine = seq;
      await waitFor(
        () =>
          t.query(`SELECT 1 FROM playback_events WHERE device_id = '${device.id}' AND seq = ${mine}`).length,
        `log entry ${mine} stored`,
      );
    };

    at('06:00:00');
    await waitFor(() => playsOf(d.received)[0], 'the scheduled play');
    await log(schedule.commandId, schedule.sessionId, 'started');
    at('06:01:00');
    const res = await request('POST', '/api/v1/commands', {
      type: 'play',
      priority: 'priority',
      targets: { deviceIds: [device.id] },
      params: {
        source: {
          kind: 'media',
          url: 'https://media.loa.example/thong-bao-khan.mp3',
          sha256: 'ef'.repeat(32),
          durationMs: 30_000,
        },
      },
    });
    expect(res.statusCode, res.body).toBe(202);
    const urgent = await waitFor(() => playsOf(d.received).find((p) => p.priority === 'priority'), 'urgent');
    await log(schedule.commandId, schedule.sessionId, 'interrupted', 'preempted');
    await log(urgent.id, urgent.params.sessionId, 'started');

    // Paused meanwhile: its stop reaches a device that is not playing it, so the device logs nothing of it.
    at('06:01:10');
    expect((await request('POST', `/api/v1/schedules/${schedule.id}/pause`, {})).statusCode).toBe(200);
    await waitFor(() => d.received.find((c) => c.type === 'stop'), 'the stop');

    at('06:01:30');
    await log(urgent.id, urgent.params.sessionId, 'finished');
    await barrier(d);
    expect(playsOf(d.received).map((p) => p.id)).toEqual([schedule.commandId, urgent.id]);
    expect(t.query(`SELECT 1 FROM audit_log WHERE action = 'schedule.resume_play'`)).toEqual([]);
  });

  it('cancels the occurrences of a paused schedule, and sends nothing for a deleted one', async () => {
    const paused = await scheduleRelay();
    expect((await request('POST', `/api/v1/schedules/${paused.id}/pause`, {})).statusCode).toBe(200);
    const d = await online();
    at('06:00:00');
    expect(occurrences(paused.id)).toEqual([
      { status: 'cancelled', reason: 'schedule paused', commandId: null },
    ]);
    expect(records(paused.id)).toEqual([]);

    // Deleted while its occurrence was already due (the dispatcher had not reached it yet).
    const deleted = await scheduleRelay({ timing: { once: '2026-12-02T07:00' }, onConflict: 'override' });
    const outsider = new RefusedWrites(t.dataDir);
    faults.push(outsider);
    outsider.db
      .prepare('UPDATE schedules SET deleted_at = ? WHERE id = ?')
      .run(local('06:30:00').getTime(), deleted.id);
    at('07:00:00');
    expect(occurrences(deleted.id)).toEqual([
      { status: 'cancelled', reason: 'schedule deleted', commandId: null },
    ]);
    const ping = await request('POST', '/api/v1/commands', {
      type: 'ping',
      targets: { deviceIds: [device.id] },
    });
    await waitFor(() => d.received.some((c) => c.id === ping.json<{ id: string }>().id), 'the ping');
    expect(playsOf(d.received)).toEqual([]);
  });
  /** Sends a ping and waits for it: every command sent before it has arrived by then. */
  const barrier = async (d: { received: Command[] }) => {
    const ping = await request('POST', '/api/v1/commands', {
      type: 'ping',
      targets: { deviceIds: [device.id] },
    });
    expect(ping.statusCode, ping.body).toBe(202);
    const id = ping.json<{ id: string }>().id;
    await waitFor(() => d.received.some((c) => c.id === id), 'the ping');
  };

  it('prepares a few seconds ahead but publishes at the due time; a device connecting in between waits for it', async () => {
    const schedule = await scheduleRelay();
    at('05:59:56');
    // Written already: claimed, its command created for the instant it goes out, its record open.
    expect(occurrences(schedule.id)).toEqual([
      { status: 'dispatched', reason: null, commandId: schedule.commandId },
    ]);
    expect(
      t.query(`SELECT created_at AS createdAt FROM commands WHERE id = '${schedule.commandId}'`),
    ).toEqual([{ createdAt: SLOT.getTime() }]);
    expect(records(schedule.id)).toHaveLength(1);
    expect(logged('occurrence dispatched')).toEqual([]);

    // A device that subscribes now is not sent the play before its time.
    const d = await online();
    await barrier(d);
    expect(playsOf(d.received)).toEqual([]);

    at('06:00:00');
    const play = await waitFor(() => playsOf(d.received)[0], 'the play');
    expect(play).toMatchObject({
      id: schedule.commandId,
      issuedAt: SLOT.toISOString(),
      params: { sessionId: schedule.sessionId, startAt: SLOT.toISOString() },
    });
    expect(play.params).not.toHaveProperty('offsetMs');
    expect(logged('occurrence dispatched')).toMatchObject([
      { scheduleId: schedule.id, commandId: schedule.commandId, sent: 1, lagMs: 0 },
    ]);
    expect(
      t.query(`SELECT sent_at AS sentAt FROM command_deliveries WHERE command_id = '${schedule.commandId}'`),
    ).toEqual([{ sentAt: SLOT.getTime() }]);
    await barrier(d);
    expect(playsOf(d.received).map((p) => p.id)).toEqual([schedule.commandId]);
  });

  it('a play prepared ahead is neither listed nor shown as a command before the instant it goes out', async () => {
    const schedule = await scheduleRelay();
    const listed = async () =>
      (await request('GET', '/api/v1/commands')).json<{ items: { id: string; createdAt: string }[] }>().items;
    at('05:59:56');
    expect(occurrences(schedule.id)).toMatchObject([{ status: 'dispatched', commandId: schedule.commandId }]);
    expect((await listed()).map((c) => c.id)).not.toContain(schedule.commandId);
    expect((await request('GET', `/api/v1/commands/${schedule.commandId}`)).statusCode).toBe(404);

    at('06:00:00');
    expect((await listed()).find((c) => c.id === schedule.commandId)).toMatchObject({
      createdAt: SLOT.toISOString(),
    });
    const detail = await request('GET', `/api/v1/commands/${schedule.commandId}`);
    expect(detail.statusCode, detail.body).toBe(200);
    expect(detail.json()).toMatchObject({
      id: schedule.commandId,
      createdAt: SLOT.toISOString(),
      targets: 1,
    });
  });

  it('deleting in the seconds after the prepare withdraws the play; pausing once it is out stops it', async () => {
    const d = await online();
    const withdrawn = await scheduleRelay();
    at('05:59:57');
    expect(occurrences(withdrawn.id)).toMatchObject([{ status: 'dispatched' }]);
    expect((await request('DELETE', `/api/v1/schedules/${withdrawn.id}`)).statusCode).toBe(204);
    expect(occurrences(withdrawn.id)).toEqual([
      { status: 'cancelled', reason: 'schedule deleted', commandId: withdrawn.commandId },
    ]);
    expect(
      t.query(`SELECT status, reason FROM command_deliveries WHERE command_id = '${withdrawn.commandId}'`),
    ).toEqual([{ status: 'expired', reason: 'schedule deleted' }]);
    expect(records(withdrawn.id)).toMatchObject([{ outcome: 'skipped', reason: 'schedule deleted' }]);
    at('06:00:01');
    await barrier(d);
    expect(playsOf(d.received)).toEqual([]);
    expect(logged('occurrence dispatched')).toEqual([]);

    // Out already: pausing stops it on the devices, in the name of who paused.
    const later = await scheduleRelay({ timing: { once: '2026-12-02T06:10' } });
    const laterIds = occurrencePlayIds(later.id, local('06:10:00'));
    at('06:09:56');
    at('06:10:02');
    await waitFor(() => playsOf(d.received).find((p) => p.id === laterIds.commandId), 'the play');
    expect((await request('POST', `/api/v1/schedules/${later.id}/pause`, {})).statusCode).toBe(200);
    const stop = await waitFor(() => d.received.find((c) => c.type === 'stop'), 'the stop');
    expect(stop).toMatchObject({ priority: 'normal', params: { sessionId: laterIds.sessionId } });
  });

  it('deleted at the very instant it is due, before its publish timer fired: the play goes out before the stop', async () => {
    const d = await online();
    const schedule = await scheduleRelay();
    const [admin] = t.query(`SELECT id FROM users WHERE username = 'admin'`) as { id: string }[];
    const actor = { id: admin!.id, username: 'admin', role: 'admin' as const, areaId: null, areaPath: null };
    // Armed before the dispatcher arms its publish timer for the same instant, so it runs first: a request
    // handled in the turn of the event loop where the slot begins, before the timers phase.
    clock.setTimeout(
      () => app.services.schedules.delete(actor, schedule.id),
      SLOT.getTime() - clock.now().getTime(),
    );
    at('06:00:01');
    const stop = await waitFor(() => d.received.find((c) => c.type === 'stop'), 'the stop');
    expect(stop).toMatchObject({ params: { sessionId: schedule.sessionId } });
    await barrier(d);
    // Whatever the device was sent of it, the stop comes last: nothing of a deleted schedule keeps playing.
    const types = d.received.map((c) => c.type);
    expect(types.lastIndexOf('stop')).toBeGreaterThan(types.lastIndexOf('play'));
    expect(types.filter((x) => x === 'play')).toHaveLength(1);
  });

  it('a play prepared for later neither replaces nor hides the one running when a device reconnects', async () => {
    const first = await scheduleRelay();
    const next = await scheduleRelay({ timing: { once: '2026-12-02T06:05' } });
    const nextCommandId = derivedId('cmd', next.id, local('06:05:00').toISOString());
    const d = await online();
    at('06:00:00');
    await waitFor(() => playsOf(d.received)[0], 'the first play');
    await d.client.publishAsync(
      topics.ack(device.id),
      JSON.stringify({ id: first.commandId, status: 'done', at: clock.now().toISOString() }),
      { qos: 1 },
    );
    await offline(d.client);

    at('06:04:57'); // the 06:05 occurrence is prepared, not yet issued
    expect(occurrences(next.id)).toMatchObject([{ status: 'dispatched', commandId: nextCommandId }]);
    const back = await online();
    const again = await waitFor(() => playsOf(back.received)[0], 'the running play again');
    expect(again).toMatchObject({ id: first.commandId, params: { offsetMs: 297_000 } });
    await barrier(back);
    expect(playsOf(back.received).map((p) => p.id)).toEqual([first.commandId]);

    at('06:05:00');
    await waitFor(() => playsOf(back.received)[1], 'the next play');
    expect(playsOf(back.received).map((p) => p.id)).toEqual([first.commandId, nextCommandId]);
  });

  it('the server dies between the prepare and the due time: the restarted one publishes the same command once, on time', async () => {
    const schedule = await scheduleRelay();
    const d = await online();
    at('05:59:57');
    expect(occurrences(schedule.id)).toEqual([
      { status: 'dispatched', reason: null, commandId: schedule.commandId },
    ]);
    await barrier(d);
    expect(playsOf(d.received)).toEqual([]);

    await restart('05:59:58');
    expect(logged('prepared occurrences re-armed after a restart')).toMatchObject([{ plays: 1 }]);
    const back = await online(); // back before the time: nothing yet
    await barrier(back);
    expect(playsOf(back.received)).toEqual([]);

    at('06:00:00');
    const play = await waitFor(() => playsOf(back.received)[0], 'the play');
    expect(play).toMatchObject({
      id: schedule.commandId,
      issuedAt: SLOT.toISOString(),
      params: { sessionId: schedule.sessionId, startAt: SLOT.toISOString() },
    });
    expect(play.params).not.toHaveProperty('offsetMs');
    expect(logged('occurrence dispatched')).toMatchObject([{ scheduleId: schedule.id, lagMs: 0 }]);

    at('06:01:00');
    await barrier(back);
    expect(playsOf(back.received).map((p) => p.id)).toEqual([schedule.commandId]);
    expect(t.query(`SELECT count(*) AS n FROM commands WHERE type = 'play'`)).toEqual([{ n: 1 }]);
    expect(records(schedule.id)).toHaveLength(1);
    expect(t.query(`SELECT count(*) AS n FROM audit_log WHERE action = 'schedule.dispatch'`)).toEqual([
      { n: 1 },
    ]);
  });

  it('after a restart whose reload of the prepared plays fails until past their time, they still go out, once', async () => {
    const schedule = await scheduleRelay();
    at('05:59:57');
    expect(occurrences(schedule.id)).toMatchObject([{ status: 'dispatched', commandId: schedule.commandId }]);
    await restart('05:59:58');
    // This run's dispatcher starts on a database that cannot be read for the moment.
    const outsider = new RefusedWrites(t.dataDir);
    faults.push(outsider);
    app.services.dispatcher.stop();
    outsider.db.exec('ALTER TABLE schedule_occurrences RENAME TO schedule_occurrences_away');
    app.services.dispatcher.start();
    expect(logged('cannot read the prepared occurrences; will try again')).toHaveLength(1);
    outsider.db.exec('ALTER TABLE schedule_occurrences_away RENAME TO schedule_occurrences');

    // The device subscribes before the instant, so it is not sent the play then: the publish must reach it.
    const back = await online();
    await barrier(back);
    expect(playsOf(back.received)).toEqual([]);
    at('06:00:10');
    const play = await waitFor(() => playsOf(back.received)[0], 'the play');
    expect(play).toMatchObject({ id: schedule.commandId, params: { sessionId: schedule.sessionId } });
    at('06:01:00');
    await barrier(back);
    expect(playsOf(back.received).map((p) => p.id)).toEqual([schedule.commandId]);
    expect(t.query(`SELECT count(*) AS n FROM commands WHERE type = 'play'`)).toEqual([{ n: 1 }]);
  });

  it('one broken occurrence does not hold back the others of its batch, and goes out once repaired', async () => {
    const market = await t.createDevice(tree.hamletA.id, 'Cụm loa chợ Đông');
    const good = await scheduleRelay({ targets: { deviceIds: [device.id] } });
    const bad = await scheduleRelay({ targets: { deviceIds: [market.id] } });
    const outsider = new RefusedWrites(t.dataDir);
    faults.push(outsider);
    // A row the dispatcher cannot read as targets: the batch's transaction throws.
    outsider.db.prepare(`UPDATE schedules SET targets = '{"deviceIds":7}' WHERE id = ?`).run(bad.id);
    const d = await online();
    const m = await online(market.credentials);

    at('06:00:00');
    const play = await waitFor(() => playsOf(d.received)[0], 'the good play');
    expect(play).toMatchObject({ id: good.commandId, params: { startAt: SLOT.toISOString() } });
    expect(play.params).not.toHaveProperty('offsetMs');
    expect(occurrences(good.id)).toEqual([{ status: 'dispatched', reason: null, commandId: good.commandId }]);
    expect(occurrences(bad.id)).toEqual([{ status: 'planned', reason: null, commandId: null }]);
    expect(logged('preparing a batch of occurrences failed; trying them one by one').length).toBeGreaterThan(
      0,
    );
    expect(
      logged('dispatching an occurrence failed; it stays planned and is tried again').map(
        (l) => l.scheduleId,
      ),
    ).toContain(bad.id);
    expect(playsOf(m.received)).toEqual([]);

    // Repaired: the next try (RETRY_MS on) sends it, joining 5 s in.
    outsider.db
      .prepare(`UPDATE schedules SET targets = ? WHERE id = ?`)
      .run(JSON.stringify({ deviceIds: [market.id] }), bad.id);
    at('06:00:05');
    const late = await waitFor(() => playsOf(m.received)[0], 'the repaired play');
    expect(late).toMatchObject({ id: bad.commandId, params: { offsetMs: 5_000 } });
    expect(occurrences(bad.id)).toEqual([{ status: 'dispatched', reason: null, commandId: bad.commandId }]);
    await barrier(d);
    expect(playsOf(d.received).map((p) => p.id)).toEqual([good.commandId]);
  });
});
