/**
 * The playback log records (nhật ký phát thanh): opened by each play, followed from the devices' acks and
 * `log` entries over the real broker, closed with an outcome; the log API in JSON and streamed CSV, its
 * scope, its input errors, and retention. Devices are plain MQTT clients that answer as firmware would.
 */
import net, { type AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { OpenRecordsInput } from '../src/modules/playback/playback.service.js';
import { topics, type Command, type PlaybackLogEntry } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { connectDevice, end } from './support/mqtt.js';
import { approvedRelay } from './support/programmes.js';
import { waitFor } from './support/wait.js';

const T0 = '2026-12-01T00:00:00.000Z'; // 07:00 in Vietnam
const MEDIA = { kind: 'media', url: 'https://example.org/ban-tin.mp3', sha256: 'a'.repeat(64) } as const;

interface LogRecord {
  id: number;
  sessionId: string;
  commandId: string;
  device: { id: string; name: string };
  area: { id: string; name: string | null };
  programme: { id: string; title: string | null } | null;
  dueAt: string;
  sentAt: string | null;
  receivedAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  airedMs: number;
  joinedAtMs: number | null;
  interruptions: number;
  outcome: string;
  reason: string | null;
}

/** Opens the records of a play session as the command path does; a one-minute slot unless told. */
function openSession(
  t: TestApp,
  sessionId: string,
  deviceIds: string[],
  dueAt: Date,
  extra: Partial<OpenRecordsInput> = {},
) {
  t.app.services.playback.openRecords({
    sessionId,
    commandId: `cmd_${sessionId}`,
    deviceIds,
    priority: 'normal',
    dueAt,
    endsAt: new Date(dueAt.getTime() + 60_000),
    plannedMs: 60_000,
    programmeId: null,
    programmeRevisionId: null,
    scheduleId: null,
    occurrenceId: null,
    ...extra,
  });
}

/** A device on a plain MQTT client: it collects its commands and answers as the test tells it. */
class Device {
  readonly commands: Command[] = [];
  private seq = 0;
  constructor(
    readonly id: string,
    readonly client: MqttClient,
  ) {
    client.on('message', (_topic, payload) => this.commands.push(JSON.parse(payload.toString()) as Command));
  }

  play(commandId: string) {
    const cmd = this.commands.find((c) => c.id === commandId);
    if (cmd?.type !== 'play') throw new Error(`no play ${commandId} received`);
    return cmd;
  }

  ack(id: string, status: 'received' | 'done' | 'failed' | 'rejected', at: Date, reason?: string) {
    return this.client.publishAsync(
      topics.ack(this.id),
      JSON.stringify({ id, status, at: at.toISOString(), ...(reason ? { reason } : {}) }),
      { qos: 1 },
    );
  }

  log(commandId: string, event: PlaybackLogEntry['event'], at: Date, reason?: string, seq = ++this.seq) {
    const entry: PlaybackLogEntry = {
      seq,
      sessionId: this.play(commandId).params.sessionId,
      commandId,
      event,
      at: at.toISOString(),
      ...(reason ? { reason } : {}),
    };
    return this.client.publishAsync(topics.log(this.id), JSON.stringify(entry), { qos: 1 });
  }
}

describe('playback log', () => {
  let t: TestApp;
  let clock: ManualClock;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  const clients: MqttClient[] = [];

  beforeEach(async () => {
    clock = new ManualClock(T0);
    t = await createTestApp({ clock, listen: true });
    tree = await createAreaTree(t);
  });
  afterEach(async () => {
    await end(...clients.splice(0));
    await t.close();
  });

  const at = (ms: number) => new Date(Date.parse(T0) + ms);

  async function online(name: string, areaId = tree.hamletA.id): Promise<Device> {
    const created = await t.createDevice(areaId, name);
    const client = await connectDevice(`mqtt://127.0.0.1:${t.app.broker.port}`, created.credentials);
    clients.push(client);
    await client.subscribeAsync(topics.cmd(created.id), { qos: 1 });
    await waitFor(() => t.app.broker.isReady(created.id), 'device ready');
    return new Device(created.id, client);
  }

  async function play(
    deviceIds: string[],
    params: Record<string, unknown> = { source: { ...MEDIA, durationMs: 120_000 } },
    token = t.adminToken,
  ): Promise<string> {
    const res = await t.request('POST', '/api/v1/commands', {
      token,
      body: { type: 'play', targets: { deviceIds }, params, expiresInS: 300 },
    });
    expect(res.statusCode, res.body).toBe(202);
    return res.json<{ id: string }>().id;
  }

  async function log(query = '', token = t.adminToken): Promise<LogRecord[]> {
    const res = await t.request('GET', `/api/v1/playback-log${query}`, { token });
    expect(res.statusCode, res.body).toBe(200);
    return res.json<{ items: LogRecord[] }>().items;
  }

  /** The record of the device for the command, once `check` holds (entries are stored asynchronously). */
  async function recordWhen(deviceId: string, check: (r: LogRecord) => boolean): Promise<LogRecord> {
    return waitFor(async () => {
      t.app.services.playback.flushEntries();
      const r = (await log(`?deviceId=${deviceId}`))[0];
      return r && check(r) ? r : null;
    }, 'record');
  }

  /** Moves past the slot end and its grace: the closing job runs on the clock. */
  const closeSlots = () => clock.advance(300_000 + 60_000 + 30_000);

  it('records a play aired in full as played, with local times, and a copied entry once', async () => {
    const device = await online('Cụm loa chợ Đông');
    const commandId = await play([device.id]);
    await waitFor(() => device.commands.length === 1, 'command received');
    await device.ack(commandId, 'received', at(200));
    await device.ack(commandId, 'done', at(1_000));
    await device.log(commandId, 'started', at(1_000), undefined, 1);
    // QoS 1 may deliver twice, and a device re-sends after a reconnect: the same entry again.
    await device.log(commandId, 'started', at(1_000), undefined, 1);
    const pending = await recordWhen(device.id, (r) => r.startedAt !== null);
    expect(pending.outcome).toBe('pending');

    clock.advance(121_000);
    await device.log(commandId, 'finished', at(121_000), undefined, 2);
    await device.log(commandId, 'finished', at(121_000), undefined, 2);
    // Final at once (aired everything): no need to wait for the slot to close.
    const r = await recordWhen(device.id, (x) => x.outcome !== 'pending');
    expect(r).toMatchObject({
      commandId,
      device: { id: device.id, name: 'Cụm loa chợ Đông' },
      area: { id: tree.hamletA.id, name: 'Thôn Đông' },
      programme: null,
      dueAt: '2026-12-01T07:00:00+07:00',
      sentAt: '2026-12-01T07:00:00+07:00',
      startedAt: '2026-12-01T07:00:01+07:00',
      finishedAt: '2026-12-01T07:02:01+07:00',
      airedMs: 120_000,
      joinedAtMs: 0,
      interruptions: 0,
      outcome: 'played',
      reason: null,
    });
    expect(r.receivedAt).toMatch(/\+07:00$/);
    const events = t.query(`SELECT COUNT(*) AS n FROM playback_events WHERE device_id = '${device.id}'`);
    expect(events).toEqual([{ n: 2 }]);
    expect(t.query(`SELECT COUNT(*) AS n FROM playback_log`)).toEqual([{ n: 1 }]);
  });

  it('records partial plays: interrupted (a copied interruption counted once) and joined late', async () => {
    const interrupted = await online('Cụm loa trường học');
    const late = await online('Cụm loa nhà văn hoá');
    const first = await play([interrupted.id]);
    const second = await play([late.id], { source: { ...MEDIA, durationMs: 120_000 }, offsetMs: 95_000 });
    await waitFor(() => interrupted.commands.length === 1 && late.commands.length === 1, 'commands received');

    await interrupted.log(first, 'started', at(0), undefined, 1);
    await interrupted.log(first, 'interrupted', at(30_000), 'preempted', 2);
    await interrupted.log(first, 'interrupted', at(30_000), 'preempted', 2);
    await late.log(second, 'started', at(0));
    await late.log(second, 'finished', at(25_000));
    await recordWhen(interrupted.id, (r) => r.interruptions > 0);
    await recordWhen(late.id, (r) => r.finishedAt !== null);

    closeSlots();
    const a = await recordWhen(interrupted.id, (r) => r.outcome !== 'pending');
    expect(a).toMatchObject({ outcome: 'partial', airedMs: 30_000, interruptions: 1 });
    expect(a.reason).toBe('interrupted by a higher-priority broadcast; 30 s of 120 s aired');
    const b = await recordWhen(late.id, (r) => r.outcome !== 'pending');
    expect(b).toMatchObject({ outcome: 'partial', airedMs: 25_000, joinedAtMs: 95_000 });
    expect(b.reason).toBe('joined 95 s late; 25 s of 120 s aired');
  });

  it('records failed, expired, skipped and undelivered plays with their reasons', async () => {
    const failing = await online('Cụm loa bến đò');
    const refusedLate = await online('Cụm loa chợ Tây');
    const silent = await online('Cụm loa trạm y tế');
    const busy = await online('Cụm loa UBND xã');
    const never = await t.createDevice(tree.hamletA.id, 'Cụm loa xóm Bàu (mất điện)');
    const commandId = await play([failing.id, refusedLate.id, silent.id, busy.id, never.id]);
    await waitFor(() => [failing, refusedLate, silent, busy].every((d) => d.commands.length === 1), 'sent');

    await failing.ack(commandId, 'received', at(100));
    await failing.log(commandId, 'failed', at(2_000), 'không tải được tệp âm thanh');
    // Final at once.
    const failed = await recordWhen(failing.id, (r) => r.outcome !== 'pending');
    expect(failed).toMatchObject({ outcome: 'failed', reason: 'không tải được tệp âm thanh' });

    await refusedLate.ack(commandId, 'rejected', at(100), 'expired');
    await silent.ack(commandId, 'received', at(100));
    await busy.ack(commandId, 'rejected', at(100), 'lower_priority');
    await waitFor(
      () =>
        (
          t.query(`SELECT COUNT(*) AS n FROM command_deliveries WHERE command_id = '${commandId}'
                   AND status IN ('rejected', 'received')`)[0] as { n: number }
        ).n === 4,
      'acks stored',
    );
    closeSlots();
    const byDevice = new Map((await log()).map((r) => [r.device.id, r]));
    expect(byDevice.get(refusedLate.id)).toMatchObject({
      outcome: 'expired',
      reason: 'the device received it after it had expired',
    });
    expect(byDevice.get(silent.id)).toMatchObject({
      outcome: 'expired',
      reason: 'received but never started before the slot closed',
    });
    expect(byDevice.get(silent.id)?.receivedAt).toMatch(/\+07:00$/);
    expect(byDevice.get(busy.id)).toMatchObject({
      outcome: 'skipped',
      reason: 'a higher-priority broadcast was playing',
    });
    expect(byDevice.get(never.id)).toMatchObject({
      outcome: 'undelivered',
      reason: 'never sent: the device was offline',
      sentAt: null,
    });
    // Filters: by outcome, and `pending` for none left open.
    expect((await log('?outcome=undelivered')).map((r) => r.device.id)).toEqual([never.id]);
    expect(await log('?outcome=pending')).toEqual([]);
  });

  it('exports CSV with a BOM, Vietnamese titles and names, by Accept or ?format=csv', async () => {
    const broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    const title = 'Thông báo lịch tiêm phòng dại – Thôn Đông';
    const programme = await approvedRelay(t, broadcaster, tree.communeA.id, { title });
    const device = await online('Cụm loa chợ Đông');
    const commandId = await play([device.id], { source: { kind: 'programme', programmeId: programme.id } });
    await waitFor(() => device.commands.length === 1, 'sent');
    await device.log(commandId, 'started', at(0));
    await recordWhen(device.id, (r) => r.startedAt !== null);

    for (const res of [
      await t.app.inject({
        url: '/api/v1/playback-log',
        headers: { authorization: `Bearer ${t.adminToken}`, accept: 'text/csv' },
      }),
      await t.request('GET', '/api/v1/playback-log?format=csv', { token: t.adminToken }),
    ]) {
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toBe('text/csv; charset=utf-8');
      expect(res.headers['content-disposition']).toBe(
        'attachment; filename="nhat-ky-phat-thanh-2026-12-01.csv"',
      );
      expect([...res.rawPayload.subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf]);
      const lines = res.rawPayload.subarray(3).toString('utf8').trim().split('\n');
      expect(lines[0]).toBe(
        'Thời điểm phát,Hết khung giờ,Thiết bị,Mã thiết bị,Khu vực,Loại phát,Chương trình,Mã chương trình,' +
          'Mã lịch phát,Mã tin khẩn cấp,Diễn tập,Mức ưu tiên,Đã gửi lúc,Đã nhận lúc,Bắt đầu phát lúc,' +
          'Kết thúc phát lúc,Thời lượng (giây),' +
          'Đã phát (giây),Vào muộn (giây),Số lần bị ngắt,Kết quả,Mã kết quả,Lý do',
      );
      expect(lines).toHaveLength(2);
      expect(lines[1]).toBe(
        `2026-12-01T07:00:00+07:00,2026-12-01T07:05:00+07:00,Cụm loa chợ Đông,${device.id},Thôn Đông,Thường,` +
          `${title},${programme.id},,,Không,normal,2026-12-01T07:00:00+07:00,,` +
          `2026-12-01T07:00:00+07:00,,,0,0,0,` +
          'Đang chờ,pending,',
      );
    }
    // The JSON answer names the programme too.
    expect((await log())[0]?.programme).toMatchObject({ id: programme.id, title });
  });

  it('streams a CSV of 20,000 records over HTTP, newest first, without a page limit', async () => {
    const deviceIds: string[] = [];
    for (let i = 0; i < 20; i++) deviceIds.push((await t.createDevice(tree.hamletB.id, `Loa ${i}`)).id);
    t.app.db.transaction(() => {
      for (let s = 0; s < 1_000; s++) openSession(t, `ses_bulk_${s}`, deviceIds, at(s * 60_000));
    });
    const { port } = t.app.server.address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/playback-log?areaId=${tree.hamletB.id}`, {
      headers: { authorization: `Bearer ${t.adminToken}`, accept: 'text/csv' },
    });
    expect(res.status).toBe(200);
    let text = '';
    let chunks = 0;
    const decoder = new TextDecoder('utf-8', { ignoreBOM: true });
    for await (const chunk of res.body! as AsyncIterable<Uint8Array>) {
      chunks += 1;
      text += decoder.decode(chunk, { stream: true });
    }
    expect(chunks).toBeGreaterThan(1);
    expect(text.charCodeAt(0)).toBe(0xfeff);
    const lines = text.trim().split('\n');
    expect(lines).toHaveLength(20_001);
    // Newest due first: the last session (999 min after 07:00 = 23:39) leads, the first ends the file.
    expect(lines[1]).toMatch(/^2026-12-01T23:39:00\+07:00,/);
    expect(lines[20_000]).toMatch(/^2026-12-01T07:00:00\+07:00,/);
    // The JSON list keeps its page limit.
    expect(await log(`?areaId=${tree.hamletB.id}&limit=5&offset=20`)).toHaveLength(5);
  });

  it('shows a commune user only their commune and refuses another commune by name', async () => {
    const a = await online('Cụm loa xã Hải Phú', tree.hamletA.id);
    const b = await online('Cụm loa xã Hải Thượng', tree.hamletB.id);
    await play([a.id, b.id]);
    const userB = await t.createUser('broadcaster', tree.communeB.id);

    expect((await log('', userB)).map((r) => r.device.id)).toEqual([b.id]);
    expect((await log(`?deviceId=${a.id}`, userB)).map((r) => r.device.id)).toEqual([]);
    expect(await log(`?areaId=${tree.communeB.id}`, userB)).toHaveLength(1);

    const refused = await t.request('GET', `/api/v1/playback-log?areaId=${tree.communeA.id}`, {
      token: userB,
    });
    expect(refused.statusCode).toBe(403);
    expect(problem(refused).detail).toBe(`areaId: area ${tree.communeA.id} is outside your area`);
    const unknown = await t.request('GET', '/api/v1/playback-log?areaId=ar_khong_co', { token: userB });
    expect(unknown.statusCode).toBe(404);
    expect(problem(unknown).detail).toBe('areaId: area ar_khong_co not found');
    const csv = await t.request('GET', `/api/v1/playback-log?format=csv&areaId=${tree.communeA.id}`, {
      token: userB,
    });
    expect(csv.statusCode).toBe(403);
    expect((await t.request('GET', '/api/v1/playback-log')).statusCode).toBe(401);
  });

  it('refuses bad query input with problem+json naming the field', async () => {
    for (const [query, field] of [
      ['outcome=nope', 'query.outcome'],
      ['from=2026-13-01', 'query.from'],
      ['to=hôm-qua', 'query.to'],
      ['limit=0', 'query.limit'],
      ['limit=5000', 'query.limit'],
      ['offset=-1', 'query.offset'],
      ['format=xlsx', 'query.format'],
    ] as const) {
      const res = await t.request('GET', `/api/v1/playback-log?${encodeURI(query)}`, { token: t.adminToken });
      expect(res.statusCode, query).toBe(400);
      expect(problem(res).errors?.map((e) => e.field)).toEqual([field]);
    }
  });

  it('filters by local dates: `to` as a date includes that whole day', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa đầu làng');
    // 23:30 on 1 December and 00:30 on 2 December, Vietnam time.
    openSession(t, 'ses_a', [device.id], new Date('2026-12-01T16:30:00Z'));
    openSession(t, 'ses_b', [device.id], new Date('2026-12-01T17:30:00Z'));
    expect((await log('?to=2026-12-01')).map((r) => r.sessionId)).toEqual(['ses_a']);
    expect((await log('?from=2026-12-02')).map((r) => r.sessionId)).toEqual(['ses_b']);
    expect((await log('?from=2026-12-01T23:00&to=2026-12-02T00:00')).map((r) => r.sessionId)).toEqual([
      'ses_a',
    ]);
  });

  it('offers interrupted scheduled sessions for resuming, tells subscribers once, and heeds late logs', async () => {
    const playback = t.app.services.playback;
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa đình làng');
    const heard: string[] = [];
    playback.subscribe((deviceId, entry) => heard.push(`${deviceId}:${entry.seq}:${entry.event}`));
    const scheduled = (sessionId: string, occurrenceId: number) =>
      openSession(t, sessionId, [device.id], at(0), {
        endsAt: at(600_000),
        plannedMs: 600_000,
        scheduleId: 'sch_ban_tin_sang',
        occurrenceId,
      });
    scheduled('ses_preempted', 1);
    scheduled('ses_stopped', 2);
    scheduled('ses_offline', 3);
    let seq = 0;
    const entry = (sessionId: string, event: PlaybackLogEntry['event'], ms: number, reason?: string) => {
      const e: PlaybackLogEntry = {
        seq: ++seq,
        sessionId,
        commandId: `cmd_${sessionId}`,
        event,
        at: at(ms).toISOString(),
        ...(reason ? { reason } : {}),
      };
      playback.record(device.id, e);
      return e;
    };
    // Joined 5 s into the slot (a scheduled record: position = at − dueAt).
    const started = entry('ses_preempted', 'started', 5_000);
    playback.record(device.id, started);
    entry('ses_preempted', 'interrupted', 20_000, 'preempted');
    entry('ses_stopped', 'started', 0);
    entry('ses_stopped', 'interrupted', 10_000, 'stopped');
    playback.flushEntries();
    expect(heard).toEqual([
      `${device.id}:1:started`,
      `${device.id}:2:interrupted`,
      `${device.id}:3:started`,
      `${device.id}:4:interrupted`,
    ]);
    expect(playback.resumable(device.id, at(30_000))).toEqual([
      {
        sessionId: 'ses_preempted',
        commandId: 'cmd_ses_preempted',
        scheduleId: 'sch_ban_tin_sang',
        occurrenceId: 1,
        priority: 'normal',
        dueAt: at(0),
        endsAt: at(600_000),
      },
    ]);
    // Past the slot end nothing resumes; once resumed, it plays and is no longer offered.
    expect(playback.resumable(device.id, at(600_000))).toEqual([]);
    entry('ses_preempted', 'started', 60_000);
    playback.flushEntries();
    expect(playback.resumable(device.id, at(61_000))).toEqual([]);
    entry('ses_preempted', 'finished', 600_000);

    clock.advance(600_000 + 60_000 + 30_000);
    const bySession = new Map((await log()).map((r) => [r.sessionId, r]));
    expect(bySession.get('ses_preempted')).toMatchObject({
      outcome: 'partial',
      joinedAtMs: 5_000,
      airedMs: 15_000 + 540_000,
      reason: 'joined 5 s late, interrupted by a higher-priority broadcast, resumed; 555 s of 600 s aired',
    });
    expect(bySession.get('ses_offline')).toMatchObject({ outcome: 'undelivered' });

    // The device was out of reach but played: its log, arriving after the close, decides again.
    entry('ses_offline', 'started', 0);
    entry('ses_offline', 'finished', 600_000);
    playback.flushEntries();
    expect((await log('?outcome=played')).map((r) => r.sessionId)).toEqual(['ses_offline']);
  });

  it('prunes records and raw entries past the retention period, also as a daily job', async () => {
    const playback = t.app.services.playback;
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa cũ');
    const old = new Date(Date.parse(T0) - 401 * 86_400_000);
    const recent = new Date(Date.parse(T0) - 399 * 86_400_000);
    openSession(t, 'ses_old', [device.id], old);
    openSession(t, 'ses_recent', [device.id], recent);
    playback.record(device.id, {
      seq: 1,
      sessionId: 'ses_old',
      commandId: 'cmd_ses_old',
      event: 'started',
      at: old.toISOString(),
    });
    playback.record(device.id, {
      seq: 2,
      sessionId: 'ses_recent',
      commandId: 'cmd_ses_recent',
      event: 'started',
      at: recent.toISOString(),
    });
    playback.flushEntries();
    expect(await playback.prune()).toEqual({ records: 1, events: 1 });
    expect(t.query('SELECT session_id AS s FROM playback_log')).toEqual([{ s: 'ses_recent' }]);
    expect(t.query('SELECT session_id AS s FROM playback_events')).toEqual([{ s: 'ses_recent' }]);

    // Two more days: the daily job removes the other one.
    clock.advance(2 * 86_400_000);
    await waitFor(() => t.query('SELECT id FROM playback_log').length === 0, 'pruned by the job');
    expect(t.query('SELECT id FROM playback_events')).toEqual([]);
  });

  /** Feeds a device's log entry to the service, as the device gateway does (one flush: one batch). */
  let seq = 0;
  function entry(
    deviceId: string,
    sessionId: string,
    event: PlaybackLogEntry['event'],
    ms: number,
    extra: { reason?: string; commandId?: string } = {},
  ) {
    t.app.services.playback.record(deviceId, {
      seq: ++seq,
      sessionId,
      commandId: extra.commandId ?? `cmd_${sessionId}`,
      event,
      at: at(ms).toISOString(),
      ...(extra.reason ? { reason: extra.reason } : {}),
    });
    t.app.services.playback.flushEntries();
  }

  it('keeps spreadsheet formulas out of the CSV and writes Vietnamese in NFC', async () => {
    const formula = '=HYPERLINK("https://lừa-đảo.example","Bấm vào đây")';
    const evil = await t.createDevice(tree.hamletA.id, formula);
    const decomposed = 'Cụm loa chợ Đông'.normalize('NFD');
    const plain = await t.createDevice(tree.hamletA.id, decomposed);
    openSession(t, 'ses_csv', [evil.id, plain.id], at(0));
    entry(evil.id, 'ses_csv', 'failed', 1_000, { reason: '+1-2 @SUM(A1:A9)' });
    entry(plain.id, 'ses_csv', 'failed', 1_000, { reason: '-mất điện'.normalize('NFD') });

    const res = await t.request('GET', '/api/v1/playback-log?format=csv', { token: t.adminToken });
    expect(res.statusCode).toBe(200);
    const text = res.rawPayload.subarray(3).toString('utf8');
    const rows = text.trim().split('\n').slice(1);
    const cells = (deviceId: string) => {
      const row = rows.find((r) => r.includes(deviceId))!;
      return {
        name: row.split(`,${deviceId},`)[0]!.split(',').slice(2).join(','),
        reason: row.split(',').at(-1),
      };
    };
    // A leading ' makes the cell text; the quotes are CSV's own (the name holds commas and quotes).
    expect(cells(evil.id)).toEqual({
      name: `"'=HYPERLINK(""https://lừa-đảo.example"",""Bấm vào đây"")"`,
      reason: "'+1-2 @SUM(A1:A9)",
    });
    expect(cells(plain.id)).toEqual({ name: 'Cụm loa chợ Đông', reason: "'-mất điện" });
    expect(text).toBe(text.normalize('NFC'));
    // The JSON answer keeps the values as they are: escaping is for spreadsheets only.
    expect((await log(`?deviceId=${evil.id}`))[0]?.device.name).toBe(formula);
  });

  it('follows re-sent offline entries that arrive after the record closed, whatever batches they come in', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa xóm Bàu');
    openSession(t, 'ses_offline', [device.id], at(0), { endsAt: at(600_000), plannedMs: 600_000 });
    clock.advance(600_000 + 60_000 + 30_000);
    expect((await log())[0]).toMatchObject({ outcome: 'undelivered' });

    // Back online, the device re-sends what it logged: one entry per batch, as a slow link delivers them.
    entry(device.id, 'ses_offline', 'started', 0);
    entry(device.id, 'ses_offline', 'interrupted', 100_000, { reason: 'preempted' });
    entry(device.id, 'ses_offline', 'started', 160_000);
    // A copy of an entry already applied counts once.
    t.app.services.playback.record(device.id, {
      seq,
      sessionId: 'ses_offline',
      commandId: 'cmd_ses_offline',
      event: 'started',
      at: at(160_000).toISOString(),
    });
    entry(device.id, 'ses_offline', 'interrupted', 400_000, { reason: 'stopped' });
    expect((await log())[0]).toMatchObject({ outcome: 'pending', airedMs: 340_000, interruptions: 2 });

    clock.advance(30_000); // the closing job decides it again
    const r = (await log())[0];
    expect(r).toMatchObject({ outcome: 'partial', airedMs: 340_000, interruptions: 2 });
    expect(r?.reason).toBe('stopped; 340 s of 600 s aired');
    // Decided on its own entries now: a straggler changes nothing.
    entry(device.id, 'ses_offline', 'started', 500_000);
    clock.advance(30_000);
    expect((await log())[0]).toMatchObject({ outcome: 'partial', airedMs: 340_000 });
  });

  it('continues the record when a resume (a new command, the same session) plays on', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa đình làng');
    const slot = { endsAt: at(600_000), plannedMs: 600_000, scheduleId: 'sch_ban_tin_sang', occurrenceId: 7 };
    openSession(t, 'ses_resume', [device.id], at(0), slot);
    entry(device.id, 'ses_resume', 'started', 0);
    entry(device.id, 'ses_resume', 'interrupted', 60_000, { reason: 'preempted' });
    expect(t.app.services.playback.resumable(device.id, at(90_000))).toHaveLength(1);
    // The resume's own command id; the session is the same.
    entry(device.id, 'ses_resume', 'started', 90_000, { commandId: 'cmd_resume_1' });
    entry(device.id, 'ses_resume', 'finished', 600_000, { commandId: 'cmd_resume_1' });
    clock.advance(600_000 + 60_000 + 30_000);

    const records = await log();
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({
      commandId: 'cmd_ses_resume',
      outcome: 'partial',
      airedMs: 570_000,
      interruptions: 1,
      reason: 'interrupted by a higher-priority broadcast, resumed; 570 s of 600 s aired',
    });
  });

  it('records a play pre-empted before it went on air as skipped, not expired', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa trạm bơm');
    openSession(t, 'ses_waiting', [device.id], at(0));
    // Sent ahead with startAt; an emergency took the loudspeaker while it waited, until the slot closed.
    entry(device.id, 'ses_waiting', 'interrupted', 0, { reason: 'preempted' });
    clock.advance(60_000 + 60_000 + 30_000);
    expect((await log())[0]).toMatchObject({
      outcome: 'skipped',
      reason: 'a higher-priority broadcast was playing',
      airedMs: 0,
    });
  });

  it('keeps the records of a device deleted later, with its name, in its area', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa đã tháo dỡ');
    openSession(t, 'ses_gone', [device.id], at(0));
    entry(device.id, 'ses_gone', 'started', 0);
    entry(device.id, 'ses_gone', 'finished', 60_000);
    const deleted = await t.request('DELETE', `/api/v1/devices/${device.id}`, { token: t.adminToken });
    expect(deleted.statusCode).toBe(204);
    const userA = await t.createUser('technician', tree.communeA.id);
    expect(await log('', userA)).toMatchObject([
      {
        device: { id: device.id, name: 'Cụm loa đã tháo dỡ' },
        area: { id: tree.hamletA.id },
        outcome: 'played',
      },
    ]);
    const csv = await t.request('GET', '/api/v1/playback-log?format=csv', { token: userA });
    expect(csv.body).toContain(`Cụm loa đã tháo dỡ,${device.id},Thôn Đông,`);
    // A session opened after the deletion has no record for it.
    openSession(t, 'ses_after', [device.id], at(120_000));
    expect(await log('?outcome=pending')).toEqual([]);
  });

  it('lets every role read the log of its own subtree only', async () => {
    const a = await t.createDevice(tree.hamletA.id, 'Cụm loa xã Hải Phú');
    const b = await t.createDevice(tree.hamletB.id, 'Cụm loa xã Hải Thượng');
    openSession(t, 'ses_roles', [a.id, b.id], at(0));
    for (const role of ['district_operator', 'broadcaster', 'technician', 'approver']) {
      const token = await t.createUser(role, tree.communeA.id);
      expect(
        (await log('', token)).map((r) => r.device.id),
        role,
      ).toEqual([a.id]);
      const csv = await t.request('GET', '/api/v1/playback-log?format=csv', { token });
      expect(csv.body.includes(a.id) && !csv.body.includes(b.id), role).toBe(true);
      const other = await t.request('GET', `/api/v1/playback-log?areaId=${tree.hamletB.id}`, { token });
      expect(other.statusCode, role).toBe(403);
    }
  });
});

describe('playback log export over HTTP', () => {
  let t: TestApp;
  let logLines: string[];

  beforeEach(async () => {
    logLines = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        logLines.push(chunk.toString('utf8'));
        done();
      },
    });
    t = await createTestApp({ clock: new ManualClock(T0), listen: true, logger: { level: 'warn', stream } });
  });
  afterEach(async () => {
    await t.close();
  });

  it('stops reading the database when the client goes away mid-stream, and serves the next one', async () => {
    const tree = await createAreaTree(t);
    const deviceIds: string[] = [];
    for (let i = 0; i < 40; i++) deviceIds.push((await t.createDevice(tree.hamletA.id, `Loa ${i}`)).id);
    const total = 40 * 1_000;
    t.app.db.transaction(() => {
      for (let s = 0; s < 1_000; s++)
        openSession(t, `ses_${s}`, deviceIds, new Date(Date.parse(T0) + s * 60_000));
    });
    const { port } = t.app.server.address() as AddressInfo;
    const url = `http://127.0.0.1:${port}/api/v1/playback-log?format=csv`;
    const headers = { authorization: `Bearer ${t.adminToken}` };

    // Reads the first bytes, then stops reading and hangs up (~9 MB would follow: more than the socket
    // buffers hold, so back-pressure holds the server up until the client leaves).
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.write(
      `GET /api/v1/playback-log?format=csv HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
        `Authorization: Bearer ${t.adminToken}\r\n\r\n`,
    );
    const first = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
    expect(first.toString('latin1')).toMatch(/^HTTP\/1\.1 200 /);
    socket.destroy();

    const ended = await waitFor(
      () =>
        logLines
          .map((l) => JSON.parse(l) as { msg: string; rows: number })
          .find((l) => l.msg === 'playback log export ended early'),
      'the export ended',
    );
    expect(ended.rows).toBeLessThan(total);
    // The server is fine and the next export is whole.
    const again = await fetch(url, { headers });
    expect((await again.text()).trim().split('\n')).toHaveLength(total + 1);
  });
});
