/**
 * Emergencies through the API, on a real app with its embedded broker and real MQTT.js clients as
 * devices (they answer exactly what each test says, so every delivery status can be reached on purpose).
 * The clock is a ManualClock: re-send back-offs and expiries are reached by moving it, never by waiting.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topics, type AckStatus, type Command } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { MqttDevices, type MqttDevice } from './support/mqtt-devices.js';
import { openEventStream } from './support/sse.js';
import { waitFor } from './support/wait.js';

const WARNING =
  'Bão số 9 đang tiến vào đất liền. Bà con khẩn trương gia cố nhà cửa, không ra khơi, di dời đến nơi an toàn.';

type Device = MqttDevice;

describe('emergencies', () => {
  const clock = new ManualClock('2026-11-20T01:00:00.000Z');
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let operator: string;
  let communeOperator: string;
  let broadcaster: string;
  let technician: string;
  let fleet: MqttDevices;
  const addDevice = (areaId: string, name: string) => fleet.add(areaId, name);
  const online = (d: Device) => fleet.online(d);
  const offline = (d: Device) => fleet.offline(d);
  const ack = (d: Device, id: string, status: AckStatus, reason?: string) => fleet.ack(d, id, status, reason);

  let seq = 0;
  function log(d: Device, command: Command, event: 'started' | 'finished' | 'interrupted'): void {
    const params = command.params as { sessionId: string };
    d.client?.publish(
      topics.log(d.id),
      JSON.stringify({
        seq: ++seq,
        sessionId: params.sessionId,
        commandId: command.id,
        event,
        at: clock.now().toISOString(),
        ...(event === 'interrupted' ? { reason: 'stopped' } : {}),
      }),
      { qos: 1 },
    );
  }

  const lastPlay = (d: Device) => d.received.filter((c) => c.type === 'play').at(-1);

  async function send(body: Record<string, unknown>, token = operator) {
    return t.request('POST', '/api/v1/emergencies', { token, body });
  }

  async function detail(id: string, token = operator) {
    const res = await t.request('GET', `/api/v1/emergencies/${id}`, { token });
    expect(res.statusCode).toBe(200);
    return res.json<{
      status: string;
      revision: number;
      commandId: string;
      expiresAt: string;
      counts: Record<string, number>;
      reached: number;
      percent: number;
      byCommune: { name: string; targetCount: number; counts: Record<string, number> }[];
      notReached: { deviceId: string; status: string; lastSeenAt: string | null; online: boolean }[];
      notReachedCount: number;
      cancel: { commandId: string; counts: Record<string, number> } | null;
    }>();
  }

  let a1: Device;
  let a2: Device;
  let b1: Device;

  beforeAll(async () => {
    t = await createTestApp({ clock, listen: true });
    fleet = new MqttDevices(t, clock);
    tree = await createAreaTree(t);
    operator = await t.createUser('district_operator', tree.district.id);
    communeOperator = await t.createUser('district_operator', tree.communeA.id);
    broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    technician = await t.createUser('technician', tree.communeB.id);
    a1 = await addDevice(tree.hamletA.id, 'Cụm loa Thôn Đông 1');
    a2 = await addDevice(tree.hamletA.id, 'Cụm loa Thôn Đông 2');
    b1 = await addDevice(tree.hamletB.id, 'Cụm loa Thôn Tây');
    await online(a1);
    await online(b1);
  });

  afterAll(async () => {
    await fleet.closeAll();
    await t.close();
  });

  it('refuses what cannot be sent, naming the field, and sends nothing', async () => {
    const noContent = await send({ title: 'Cảnh báo', areaIds: [tree.district.id] });
    expect(noContent.statusCode).toBe(400);
    expect(problem(noContent).errors?.[0]?.field).toBe('body.text');

    const twoContents = await send({
      title: 'Cảnh báo',
      text: WARNING,
      mediaId: 'med_x',
      areaIds: [tree.district.id],
    });
    expect(twoContents.statusCode).toBe(400);
    expect(problem(twoContents).errors?.[0]?.field).toBe('body.mediaId');

    const badRisk = await send({
      title: 'Cảnh báo',
      text: WARNING,
      areaIds: [tree.district.id],
      riskLevel: 6,
    });
    expect(problem(badRisk).errors?.[0]?.field).toBe('body.riskLevel');

    const outside = await send(
      { title: 'Cảnh báo', text: WARNING, areaIds: [tree.communeB.id] },
      communeOperator,
    );
    expect(outside.statusCode).toBe(403);
    expect(problem(outside).detail).toContain('body.areaIds.0');

    const byBroadcaster = await send(
      { title: 'Cảnh báo', text: WARNING, areaIds: [tree.communeA.id] },
      broadcaster,
    );
    expect(byBroadcaster.statusCode).toBe(403);

    const empty = await t.createArea({ name: 'Xã Hải Sơn', level: 'commune', parentId: tree.district.id });
    const nothing = await send({ title: 'Cảnh báo', text: WARNING, areaIds: [empty.id] });
    expect(nothing.statusCode).toBe(422);
    expect(problem(nothing).code).toBe('no_target_devices');

    const drill = await send({
      title: 'Diễn tập',
      text: WARNING,
      areaIds: [tree.district.id],
      exercise: true,
    });
    expect(drill.statusCode).toBe(422);
    expect(problem(drill).detail).toContain('drill');

    expect(t.query('SELECT id FROM emergencies')).toEqual([]);
    expect(fleet.all.flatMap((d) => d.received)).toEqual([]);
  });

  let emergencyId: string;
  let playMs: number;

  it('plays at once on every online device of the areas, at emergency priority, and tracks each', async () => {
    const res = await send({
      title: 'Cảnh báo bão số 9 – sơ tán khẩn cấp',
      text: WARNING,
      areaIds: [tree.district.id],
      hazard: 'storm',
      riskLevel: 4,
      repeat: { count: 2, intervalS: 30 },
    });
    expect(res.statusCode).toBe(201);
    const body = res.json<{
      id: string;
      targetCount: number;
      counts: Record<string, number>;
      exercise: boolean;
      label: string;
      durationMs: number;
      status: string;
    }>();
    emergencyId = body.id;
    playMs = body.durationMs;
    expect(body).toMatchObject({
      targetCount: 3,
      exercise: false,
      status: 'active',
      label: 'Cảnh báo bão số 9 – sơ tán khẩn cấp',
    });
    expect(body.counts).toMatchObject({ sent: 2, queued: 1 });
    // The attention signal (3 s) and its pause come before the message.
    expect(body.durationMs).toBeGreaterThan(4_000);

    for (const d of [a1, b1]) {
      const play = await waitFor(() => lastPlay(d), `${d.name} got the play`);
      expect(play).toMatchObject({
        priority: 'emergency',
        params: { volume: 100, repeat: 2, repeatGapMs: 30_000 },
      });
      expect(play.type === 'play' && play.params.startAt).toBeUndefined();
      expect(play.type === 'play' && play.params.source.kind).toBe('media');
    }
    expect(a2.received).toEqual([]);

    const play = lastPlay(a1) as Command;
    ack(a1, play.id, 'received');
    ack(a1, play.id, 'done');
    log(a1, play, 'started');
    ack(b1, play.id, 'received');
    await waitFor(
      async () =>
        (await detail(emergencyId)).counts.playing === 1 && (await detail(emergencyId)).counts.received === 1,
      'acks counted',
    );

    const d = await detail(emergencyId);
    expect(d.counts).toMatchObject({ queued: 1, playing: 1, received: 1 });
    expect(d.reached).toBe(2);
    expect(d.byCommune.map((c) => [c.name, c.targetCount])).toEqual([
      ['Xã Hải Phú', 2],
      ['Xã Hải Thượng', 1],
    ]);
    expect(d.notReached).toEqual([
      expect.objectContaining({ deviceId: a2.id, status: 'queued', online: false, lastSeenAt: null }),
    ]);

    // The month's report counts it while every record is still open (no outcome yet).
    const report = await t.request(
      'GET',
      `/api/v1/reports/broadcast?areaId=${tree.district.id}&month=2026-11`,
      {
        token: operator,
      },
    );
    expect(report.statusCode).toBe(200);

    // A commune user sees the commune's part only; a technician may watch too.
    const commune = await detail(emergencyId, communeOperator);
    expect(commune.counts).toMatchObject({ queued: 1, playing: 1, received: 0 });
    expect((await detail(emergencyId, technician)).counts).toMatchObject({ received: 1, queued: 0 });

    const audit = t.query(
      `SELECT actor_username, details FROM audit_log WHERE action = 'emergency.send'`,
    ) as {
      details: string;
    }[];
    expect(audit).toHaveLength(1);
    expect(JSON.parse(audit[0]!.details)).toMatchObject({
      title: 'Cảnh báo bão số 9 – sơ tán khẩn cấp',
      targetCount: 3,
    });
  });

  it('sends it to a device that comes online before expiry, whole, from the start', async () => {
    // The first play and its 30 s pause are over: one repeat is still due.
    clock.advance(playMs + 31_000);
    await online(a2);
    const play = await waitFor(() => lastPlay(a2), 'late device got the play');
    expect(play.type === 'play' && play.params.offsetMs).toBeUndefined();
    expect(play.type === 'play' && play.params.repeat).toBe(1);
    ack(a2, play.id, 'received');
    await waitFor(async () => (await detail(emergencyId)).counts.queued === 0, 'late device counted');
  });

  it('re-sends with back-off to a device that got it and never answered', async () => {
    const before = b1.received.length;
    const silent = await addDevice(tree.hamletB.id, 'Cụm loa im lặng');
    await online(silent);
    const res = await send({
      title: 'Lũ quét – Thôn Tây',
      text: 'Lũ quét đang về, bà con lên vùng cao ngay.',
      areaIds: [tree.communeB.id],
    });
    expect(res.statusCode).toBe(201);
    const id = res.json<{ id: string }>().id;
    const first = await waitFor(() => lastPlay(silent), 'silent device got it');
    ack(
      b1,
      (await waitFor(() => (b1.received.length > before ? lastPlay(b1) : undefined), 'b1 got it')).id,
      'received',
    );
    await waitFor(async () => (await detail(id)).counts.received === 1, 'b1 counted');

    // The re-send job runs every second on the app's clock, not in step with the send: moving the clock
    // 5 s may or may not run it after the back-off has passed, so it is run once more here.
    clock.advance(5_000);
    t.app.services.emergencies.resendDue();
    await waitFor(() => silent.received.filter((c) => c.id === first.id).length === 2, 're-sent');
    // Not again before the next back-off (10 s).
    clock.advance(5_000);
    expect(t.app.services.emergencies.resendDue()).toBe(0);
    ack(silent, first.id, 'received');
    await waitFor(async () => (await detail(id)).counts.sent === 0, 'answered');
    clock.advance(60_000);
    expect(t.app.services.emergencies.resendDue()).toBe(0);
    expect(silent.received.filter((c) => c.id === first.id)).toHaveLength(2);
    // b1 answered from the start: never re-sent.
    expect(b1.received.filter((c) => c.id === first.id)).toHaveLength(1);
  });

  it('updates the text as the same emergency, and extends the expiry', async () => {
    const before = await detail(emergencyId);
    const shorter = await t.request('PATCH', `/api/v1/emergencies/${emergencyId}`, {
      token: operator,
      body: { expiresInS: 60 },
    });
    expect(shorter.statusCode).toBe(400);
    expect(problem(shorter).errors?.[0]?.field).toBe('body.expiresInS');

    const res = await t.request('PATCH', `/api/v1/emergencies/${emergencyId}`, {
      token: operator,
      body: { text: `${WARNING} Cập nhật: gió giật cấp 12.`, expiresInS: 7_200 },
    });
    expect(res.statusCode).toBe(200);
    const updated = res.json<{ id: string; revision: number; commandId: string; expiresAt: string }>();
    expect(updated.id).toBe(emergencyId);
    expect(updated.revision).toBe(2);
    expect(updated.commandId).not.toBe(before.commandId);
    expect(Date.parse(updated.expiresAt)).toBeGreaterThan(Date.parse(before.expiresAt));
    const play = await waitFor(
      () => (lastPlay(a1)?.id === updated.commandId ? lastPlay(a1) : undefined),
      'update played',
    );
    expect(play.priority).toBe('emergency');

    const list = await t.request('GET', '/api/v1/emergencies', { token: operator });
    expect(list.json<{ items: { id: string }[] }>().items.filter((e) => e.id === emergencyId)).toHaveLength(
      1,
    );
  });

  it('cancels everywhere with a stop, acknowledged per device, and cannot be cancelled twice', async () => {
    const current = await detail(emergencyId);
    const res = await t.request('POST', `/api/v1/emergencies/${emergencyId}/cancel`, {
      token: operator,
      body: { reason: 'Bão đã đổi hướng' },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json<{ status: string }>().status).toBe('cancelled');
    for (const d of [a1, a2, b1]) {
      const stop = await waitFor(() => d.received.find((c) => c.type === 'stop'), `${d.name} stop`);
      expect(stop).toMatchObject({ priority: 'emergency' });
      expect(stop.type === 'stop' && stop.params.sessionId).toBe(
        (d.received.find((c) => c.id === current.commandId) as { params: { sessionId: string } } | undefined)
          ?.params.sessionId ??
          (stop.type === 'stop' && stop.params.sessionId),
      );
    }
    const stop = a1.received.find((c) => c.type === 'stop') as Command;
    ack(a1, stop.id, 'done');
    await waitFor(async () => (await detail(emergencyId)).cancel?.counts.done === 1, 'stop acked');

    const again = await t.request('POST', `/api/v1/emergencies/${emergencyId}/cancel`, {
      token: operator,
      body: {},
    });
    expect(again.statusCode).toBe(409);
    expect(problem(again).code).toBe('invalid_transition');
  });

  it('sends a drill only to drill participants, labelled as one everywhere', async () => {
    await t.request('PATCH', `/api/v1/devices/${b1.id}`, {
      token: t.adminToken,
      body: { drillParticipant: true },
    });
    const before = a1.received.length;
    const res = await send({
      title: 'Diễn tập sơ tán',
      text: 'Sơ tán theo phương án phòng chống bão.',
      areaIds: [tree.district.id],
      exercise: true,
    });
    expect(res.statusCode).toBe(201);
    const drill = res.json<{ id: string; exercise: boolean; label: string; targetCount: number }>();
    expect(drill).toMatchObject({ exercise: true, targetCount: 1, label: 'DIỄN TẬP – Diễn tập sơ tán' });
    await waitFor(
      () => b1.received.some((c) => c.type === 'play' && lastPlay(b1) !== undefined),
      'drill played',
    );
    expect(a1.received.length).toBe(before);

    const drills = await t.request('GET', '/api/v1/emergencies?exercise=true', { token: operator });
    expect(drills.json<{ items: { id: string }[] }>().items.map((e) => e.id)).toEqual([drill.id]);
    const real = await t.request('GET', '/api/v1/emergencies?exercise=false', { token: operator });
    expect(real.json<{ items: { id: string }[] }>().items.map((e) => e.id)).not.toContain(drill.id);

    // The history by day, in Vietnam's calendar: all of these were sent on 20 November (local time).
    const day = await t.request('GET', '/api/v1/emergencies?from=2026-11-20&to=2026-11-20', {
      token: operator,
    });
    expect(day.json<{ items: { id: string }[] }>().items.map((e) => e.id)).toContain(drill.id);
    const after = await t.request('GET', '/api/v1/emergencies?from=2026-11-21', { token: operator });
    expect(after.json<{ items: unknown[] }>().items).toEqual([]);
    const badDay = await t.request('GET', '/api/v1/emergencies?from=20-11-2026', { token: operator });
    expect(problem(badDay).errors?.[0]?.field).toBe('query.from');

    const records = t.query(
      `SELECT programme_title, exercise FROM playback_log WHERE emergency_id = '${drill.id}'`,
    );
    expect(records).toEqual([{ programme_title: 'Diễn tập sơ tán', exercise: 1 }]);
  });

  it('streams progress as Server-Sent Events, resumable with Last-Event-ID', async () => {
    const res = await send({
      title: 'Sạt lở đất – Xã Hải Phú',
      text: 'Nguy cơ sạt lở, bà con rời khỏi khu vực.',
      areaIds: [tree.communeA.id],
    });
    const id = res.json<{ id: string }>().id;
    const stream = openStream(id, operator);
    const snapshot = await stream.next('snapshot');
    expect(snapshot.data).toMatchObject({ emergencyId: id, targetCount: 2, counts: { sent: 2 } });

    const play = await waitFor(() => lastPlay(a1), 'play');
    ack(a1, play.id, 'received');
    ack(a2, play.id, 'received');
    let progress = await stream.next('progress');
    // Coalesced: the two acks may come in one event or two; drive the poll until both are told.
    for (let i = 0; i < 50 && (progress.data as { reached: number }).reached < 2; i++) {
      clock.advance(500);
      progress = await stream.next('progress');
    }
    expect(progress.data).toMatchObject({ reached: 2, percent: 100 });
    stream.close();

    const resumed = openStream(id, operator, snapshot.id);
    const again = await resumed.next('snapshot');
    expect((again.data as { devices: { deviceId: string; status: string }[] }).devices).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ deviceId: a1.id, status: 'received' }),
        expect.objectContaining({ deviceId: a2.id, status: 'received' }),
      ]),
    );
    resumed.close();

    const hidden = await t.request('GET', `/api/v1/emergencies/${id}/events`, { token: technician });
    expect(hidden.statusCode).toBe(404);
  });

  it('never plays on a device that comes back after the expiry: it is undelivered', async () => {
    await offline(b1);
    const res = await send({
      title: 'Cháy rừng – Thôn Tây',
      text: 'Cháy rừng gần khu dân cư, bà con tránh xa khu vực.',
      areaIds: [tree.hamletB.id],
      expiresInS: 60,
    });
    expect(res.statusCode).toBe(201);
    const body = res.json<{ id: string; commandId: string }>();
    clock.advance(61_000);
    // The expiry sweep runs on the app's clock too; run it once more in case it ran before the expiry.
    t.app.services.commands.expireDue();
    const before = b1.received.length;
    await online(b1);
    const d = await detail(body.id);
    expect(d.status).toBe('expired');
    expect(d.notReached.find((n) => n.deviceId === b1.id)).toMatchObject({ status: 'undelivered' });
    // Reconnected, with nothing sent: the emergency's play is not among what it got.
    expect(b1.received.slice(before).filter((c) => c.id === body.commandId)).toEqual([]);
  });

  /** The emergency's event stream, read over real HTTP; waiting for an event moves the app's clock on. */
  function openStream(id: string, token: string, lastEventId?: string) {
    const { port } = t.app.server.address() as { port: number };
    const stream = openEventStream(`http://127.0.0.1:${port}/api/v1/emergencies/${id}/events`, {
      authorization: `Bearer ${token}`,
      ...(lastEventId ? { 'last-event-id': lastEventId } : {}),
    });
    return {
      next: (kind: string) => stream.next(kind, { onWait: () => clock.advance(500) }),
      close: () => stream.close(),
    };
  }
});
