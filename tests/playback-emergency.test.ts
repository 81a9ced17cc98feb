/**
 * Emergencies in the playback log and the monthly report (issue 9): their records carry the emergency's id,
 * title and exercise flag, can be filtered by them, are labelled in the CSV, and are counted apart from
 * programmes, drills apart from real alerts. Plays go out through CommandsService.dispatchPlay as the
 * emergencies service sends them, to devices on the real broker that log what they played. Also: the media
 * clean-up keeps every emergency's audio.
 */
import fs from 'node:fs';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { commands, emergencies } from '../src/db/schema/index.js';
import { newId } from '../src/lib/ids.js';
import { topics, type Command, type PlaybackLogEntry } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { connectDevice, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

const T0 = '2026-12-01T00:00:00.000Z'; // 07:00 in Vietnam
const MINUTE = 60_000;
const DURATION_MS = 20_000;
const STORM = 'Cảnh báo bão số 3 – Thôn Đông: người dân khẩn trương gia cố nhà cửa';
const DRILL = 'Diễn tập phòng chống lũ quét – xã Hải Phú';

interface LogRecord {
  sessionId: string;
  commandId: string;
  device: { id: string; name: string };
  programme: { id: string; title: string | null } | null;
  emergency: { id: string; title: string | null; exercise: boolean } | null;
  priority: string;
  outcome: string;
  reason: string | null;
}

/** A device on a plain MQTT client: it collects its commands and logs what the test says it played. */
class Device {
  readonly commands: Command[] = [];
  private seq = 0;
  constructor(
    readonly id: string,
    readonly client: MqttClient,
  ) {
    client.on('message', (_topic, payload) => this.commands.push(JSON.parse(payload.toString()) as Command));
  }

  log(commandId: string, event: PlaybackLogEntry['event'], at: Date, reason?: string) {
    const cmd = this.commands.find((c) => c.id === commandId);
    if (cmd?.type !== 'play') throw new Error(`no play ${commandId} received`);
    const entry: PlaybackLogEntry = {
      seq: ++this.seq,
      sessionId: cmd.params.sessionId,
      commandId,
      event,
      at: at.toISOString(),
      ...(reason ? { reason } : {}),
    };
    return this.client.publishAsync(topics.log(this.id), JSON.stringify(entry), { qos: 1 });
  }
}

describe('emergencies in the playback log and the report', () => {
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

  async function online(name: string, areaId: string): Promise<Device> {
    const created = await t.createDevice(areaId, name);
    const client = await connectDevice(`mqtt://127.0.0.1:${t.app.broker.port}`, created.credentials);
    clients.push(client);
    await client.subscribeAsync(topics.cmd(created.id), { qos: 1 });
    await waitFor(() => t.app.broker.isReady(created.id), 'device ready');
    return new Device(created.id, client);
  }

  /** An emergency's play as the emergencies service sends it: now, at emergency priority, with its record. */
  function sendEmergency(
    emergency: { id: string; title: string; exercise: boolean },
    deviceIds: string[],
    sha256: string,
  ): string {
    const id = newId('cmd');
    const now = clock.now();
    const expiresAt = new Date(now.getTime() + 10 * MINUTE);
    const { created } = t.app.services.commands.dispatchPlay({
      id,
      sessionId: newId('ses'),
      deviceIds,
      priority: 'emergency',
      source: { kind: 'media', url: `https://loa.example/${sha256}.mp3`, sha256, durationMs: DURATION_MS },
      volume: 100,
      expiresAt,
      programmeId: null,
      programmeRevisionId: null,
      emergency,
      createdBy: null,
      playbackRecord: {
        dueAt: now,
        endsAt: expiresAt,
        scheduleId: null,
        occurrenceId: null,
        plannedMs: DURATION_MS,
      },
    });
    expect(created).toBe(true);
    return id;
  }

  async function log(query = '', token = t.adminToken): Promise<LogRecord[]> {
    const res = await t.request('GET', `/api/v1/playback-log${query}`, { token });
    expect(res.statusCode, res.body).toBe(200);
    return res.json<{ items: LogRecord[] }>().items;
  }

  const at = (ms: number) => new Date(Date.parse(T0) + ms);

  it('labels emergencies and drills in the log, JSON and CSV, and counts them apart in the report', async () => {
    const a1 = await online('Cụm loa chợ Đông', tree.hamletA.id);
    const a2 = await online('Cụm loa bến đò', tree.hamletA.id);
    // Offline: the warning never reaches it.
    const b1 = await t.createDevice(tree.hamletB.id, 'Cụm loa thôn Tây');

    // A normal manual play first, so that programmes have figures of their own.
    const manual = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: {
        type: 'play',
        targets: { deviceIds: [a1.id] },
        params: {
          source: {
            kind: 'media',
            url: 'https://loa.example/ban-tin.mp3',
            sha256: 'b'.repeat(64),
            durationMs: DURATION_MS,
          },
        },
        expiresInS: 300,
      },
    });
    expect(manual.statusCode, manual.body).toBe(202);
    const manualId = manual.json<{ id: string }>().id;
    await waitFor(() => a1.commands.length === 1, 'manual play received');
    await a1.log(manualId, 'started', at(0));
    await a1.log(manualId, 'finished', at(DURATION_MS));

    clock.advance(MINUTE);
    const storm = { id: newId('emg'), title: STORM, exercise: false };
    const stormCmd = sendEmergency(storm, [a1.id, a2.id, b1.id], 'c'.repeat(64));
    await waitFor(() => a1.commands.length === 2 && a2.commands.length === 1, 'emergency received');
    await a1.log(stormCmd, 'started', at(MINUTE + 200));
    await a1.log(stormCmd, 'finished', at(MINUTE + 200 + DURATION_MS));
    await a2.log(stormCmd, 'failed', at(MINUTE + 300), 'mất điện');

    clock.advance(5 * MINUTE);
    const drill = { id: newId('emg'), title: DRILL, exercise: true };
    const drillCmd = sendEmergency(drill, [a2.id], 'd'.repeat(64));
    await waitFor(() => a2.commands.length === 2, 'drill received');
    await a2.log(drillCmd, 'started', at(6 * MINUTE + 100));
    await a2.log(drillCmd, 'finished', at(6 * MINUTE + 100 + DURATION_MS));

    await waitFor(async () => {
      t.app.services.playback.flushEntries();
      const decided = (await log()).filter((r) => r.outcome !== 'pending');
      return decided.length === 4;
    }, 'the logged records decided');
    // Past every slot and its grace: the closing job decides the offline device's record.
    clock.advance(20 * MINUTE);

    // JSON: every record of the storm names it; the drill says it is one; the manual play is neither.
    const stormRecords = await log(`?emergencyId=${storm.id}`);
    expect(stormRecords).toHaveLength(3);
    for (const r of stormRecords) {
      expect(r).toMatchObject({
        commandId: stormCmd,
        programme: null,
        emergency: { id: storm.id, title: STORM, exercise: false },
        priority: 'emergency',
      });
    }
    expect(Object.fromEntries(stormRecords.map((r) => [r.device.id, r.outcome]))).toEqual({
      [a1.id]: 'played',
      [a2.id]: 'failed',
      [b1.id]: 'undelivered',
    });
    const drills = await log('?exercise=true');
    expect(drills).toEqual([
      expect.objectContaining({
        commandId: drillCmd,
        device: expect.objectContaining({ id: a2.id }) as unknown,
        emergency: { id: drill.id, title: DRILL, exercise: true },
        outcome: 'played',
      }),
    ]);
    const notDrills = await log('?exercise=false');
    expect(notDrills.map((r) => r.commandId).sort()).toEqual([manualId, stormCmd, stormCmd, stormCmd].sort());
    expect(notDrills.find((r) => r.commandId === manualId)).toMatchObject({
      emergency: null,
      priority: 'normal',
    });
    expect(await log(`?emergencyId=${drill.id}&exercise=false`)).toEqual([]);

    // CSV: the kind in words, the title intact, the emergency's id and the drill flag.
    const csv = await t.request('GET', `/api/v1/playback-log?format=csv&deviceId=${a2.id}`, {
      token: t.adminToken,
    });
    expect(csv.statusCode).toBe(200);
    const [header, ...rows] = csv.rawPayload.subarray(3).toString('utf8').trim().split('\n');
    const columns = header!.split(',');
    const cell = (row: string, name: string) => row.split(',')[columns.indexOf(name)];
    expect(rows).toHaveLength(2);
    const [drillRow, stormRow] = rows as [string, string];
    expect(cell(drillRow, 'Loại phát')).toBe('Diễn tập (không phải tin thật)');
    expect(cell(drillRow, 'Chương trình')).toBe(DRILL);
    expect(cell(drillRow, 'Mã tin khẩn cấp')).toBe(drill.id);
    expect(cell(drillRow, 'Diễn tập')).toBe('Có');
    expect(cell(stormRow, 'Loại phát')).toBe('Khẩn cấp');
    expect(cell(stormRow, 'Chương trình')).toBe(STORM);
    expect(cell(stormRow, 'Mã tin khẩn cấp')).toBe(storm.id);
    expect(cell(stormRow, 'Diễn tập')).toBe('Không');
    expect(cell(stormRow, 'Lý do')).toBe('mất điện');

    // The report: programmes alone in the main figures, the storm and the drill each in their own block.
    const res = await t.request('GET', `/api/v1/reports/broadcast?areaId=${tree.district.id}&month=2026-12`, {
      token: t.adminToken,
    });
    expect(res.statusCode, res.body).toBe(200);
    const report = res.json<{
      total: Record<string, unknown>;
      communes: (Record<string, unknown> & { hamlets: Record<string, unknown>[] })[];
    }>();
    expect(report.total).toMatchObject({
      occurrences: 1,
      records: 1,
      played: 1,
      failed: 0,
      undelivered: 0,
      topFailureReasons: [],
      emergencies: {
        count: 1,
        records: 3,
        played: 1,
        partial: 0,
        failed: 1,
        undelivered: 1,
        pending: 0,
        minutesOnAir: 0.3,
        items: [
          {
            emergencyId: storm.id,
            title: STORM,
            sentAt: '2026-12-01T07:01:00+07:00',
            targeted: 3,
            played: 1,
            partial: 0,
            share: 0.333,
          },
        ],
      },
      exercises: {
        count: 1,
        records: 1,
        played: 1,
        failed: 0,
        items: [{ emergencyId: drill.id, title: DRILL, targeted: 1, played: 1, share: 1 }],
      },
    });
    const [communeA, communeB] = report.communes;
    expect(communeA).toMatchObject({
      id: tree.communeA.id,
      records: 1,
      emergencies: { count: 1, records: 2, played: 1, failed: 1, undelivered: 0 },
      exercises: { count: 1, records: 1, played: 1 },
      hamlets: [{ id: tree.hamletA.id, emergencies: { records: 2 }, exercises: { records: 1 } }],
    });
    expect(communeB).toMatchObject({
      id: tree.communeB.id,
      occurrences: 0,
      records: 0,
      emergencies: { count: 1, records: 1, played: 0, undelivered: 1, items: [{ title: STORM, share: 0 }] },
      exercises: { count: 0, records: 0, items: [] },
    });

    // The report's CSV: the blocks in their own columns, the drill's under a title that says so.
    const reportCsv = await t.request(
      'GET',
      `/api/v1/reports/broadcast?areaId=${tree.district.id}&month=2026-12&format=csv`,
      { token: t.adminToken },
    );
    expect(reportCsv.statusCode).toBe(200);
    const [reportHeader, district] = reportCsv.rawPayload.subarray(3).toString('utf8').trim().split('\n');
    const titles = reportHeader!.split(',');
    const value = (name: string) => district!.split(',')[titles.indexOf(name)];
    expect(value('Số buổi phát')).toBe('1');
    expect(value('Tin khẩn cấp: số tin')).toBe('1');
    expect(value('Tin khẩn cấp: số lượt (tin × thiết bị)')).toBe('3');
    expect(value('Tin khẩn cấp: phát đủ')).toBe('1');
    expect(value('Tin khẩn cấp: không phát được')).toBe('2');
    expect(value('Tin khẩn cấp: tỷ lệ thiết bị phát đủ theo tin')).toBe(`${STORM}: 1/3 (33%)`);
    expect(value('Diễn tập (không phải tin thật): số tin')).toBe('1');
    expect(value('Diễn tập (không phải tin thật): tỷ lệ thiết bị phát đủ theo tin')).toBe(
      `${DRILL}: 1/1 (100%)`,
    );
  });

  it('refuses a bad exercise filter by field', async () => {
    const res = await t.request('GET', '/api/v1/playback-log?exercise=yes', { token: t.adminToken });
    expect(res.statusCode).toBe(400);
    expect(problem(res).errors?.[0]?.field).toBe('query.exercise');
  });

  it('keeps every emergency audio file from the media clean-up, after its commands expired', async () => {
    const HOUR = 3_600_000;
    const store = t.app.services.media.store;
    async function storeOldFile(text: string): Promise<string> {
      const temp = store.tempPath();
      fs.writeFileSync(temp, text);
      const { sha256, path: file } = await store.putFile(temp);
      const old = new Date(clock.now().getTime() - 2 * HOUR);
      fs.utimesSync(file, old, old);
      return sha256;
    }
    const rendition = await storeOldFile('Cảnh báo lũ quét – bản hiện tại');
    const earlierRevision = await storeOldFile('Cảnh báo lũ quét – bản trước khi sửa');
    const unreferenced = await storeOldFile('Không ai dùng tệp này');

    const id = newId('emg');
    const sent = new Date(clock.now().getTime() - 4 * HOUR);
    const expired = new Date(sent.getTime() + HOUR);
    // The first revision's play, expired (and its links with it) hours ago: only its emergency keeps its file.
    t.app.db
      .insert(commands)
      .values({
        id: newId('cmd'),
        type: 'play',
        priority: 'emergency',
        params: {
          sessionId: newId('ses'),
          source: {
            kind: 'media',
            url: 'https://loa.example/a.mp3',
            sha256: earlierRevision,
            durationMs: 1000,
          },
        },
        createdAt: sent,
        expiresAt: expired,
        targetCount: 0,
        emergencyId: id,
      })
      .run();
    t.app.db
      .insert(emergencies)
      .values({
        id,
        title: 'Cảnh báo lũ quét',
        text: 'Lũ quét có thể xảy ra trong đêm nay',
        volume: 100,
        repeatCount: 1,
        repeatIntervalS: 0,
        exercise: false,
        areaIds: [tree.communeA.id],
        commandId: newId('cmd'),
        sessionId: newId('ses'),
        revision: 2,
        renditionSha256: rendition,
        durationMs: 1000,
        targetCount: 0,
        senderName: 'admin',
        createdAt: sent,
        expiresAt: expired,
        updatedAt: sent,
      })
      .run();

    const result = await t.app.services.media.cleanup();
    expect(result.removed).toBe(1);
    expect(fs.existsSync(store.pathOf(unreferenced))).toBe(false);
    expect(fs.existsSync(store.pathOf(rendition))).toBe(true);
    expect(fs.existsSync(store.pathOf(earlierRevision))).toBe(true);
  });
});
