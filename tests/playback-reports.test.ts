/**
 * The monthly broadcast report: figures per commune and per hamlet for one Vietnamese calendar month, from
 * playback records opened, followed by device log entries and closed by the closing job, on a real app and
 * SQLite; also as CSV, within the caller's scope.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { OpenRecordsInput } from '../src/modules/playback/playback.service.js';
import type { PlaybackLogEntry } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';

describe('broadcast report', () => {
  let t: TestApp;
  let clock: ManualClock;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let a1: string;
  let a2: string;
  let b1: string;

  beforeEach(async () => {
    // After the month, so that the closing job closes every record of it.
    clock = new ManualClock('2027-01-05T00:00:00.000Z');
    t = await createTestApp({ clock });
    tree = await createAreaTree(t);
    a1 = (await t.createDevice(tree.hamletA.id, 'Cụm loa chợ Đông')).id;
    a2 = (await t.createDevice(tree.hamletA.id, 'Cụm loa bến đò')).id;
    b1 = (await t.createDevice(tree.hamletB.id, 'Cụm loa thôn Tây')).id;

    const playback = t.app.services.playback;
    const open = (
      sessionId: string,
      local: string,
      deviceIds: string[],
      programmeId: string | null,
      extra: Partial<OpenRecordsInput> = {},
    ) => {
      const dueAt = new Date(`${local}+07:00`);
      playback.openRecords({
        sessionId,
        commandId: `cmd_${sessionId}`,
        deviceIds,
        priority: 'normal',
        dueAt,
        endsAt: new Date(dueAt.getTime() + 120_000),
        plannedMs: 60_000,
        programmeId,
        programmeRevisionId: null,
        scheduleId: null,
        occurrenceId: null,
        ...extra,
      });
      return dueAt.getTime();
    };
    let seq = 0;
    const entry = (
      deviceId: string,
      sessionId: string,
      event: PlaybackLogEntry['event'],
      ms: number,
      reason?: string,
    ) =>
      playback.record(deviceId, {
        seq: ++seq,
        sessionId,
        commandId: `cmd_${sessionId}`,
        event,
        at: new Date(ms).toISOString(),
        ...(reason ? { reason } : {}),
      });

    const s1 = open('ses_1', '2026-12-05T06:00:00', [a1, a2, b1], 'prg_ban_tin_sang');
    entry(a1, 'ses_1', 'started', s1);
    entry(a1, 'ses_1', 'finished', s1 + 60_000);
    entry(a2, 'ses_1', 'failed', s1 + 1_000, 'mất điện');
    // The last half hour of the month, local time: in it.
    const s2 = open('ses_2', '2026-12-31T23:30:00', [a1], 'prg_ban_tin_sang');
    entry(a1, 'ses_2', 'started', s2);
    entry(a1, 'ses_2', 'finished', s2 + 30_000);
    open('ses_5', '2026-12-10T17:00:00', [b1], 'prg_nong_nghiep', {
      closed: { outcome: 'skipped', reason: 'overridden by another schedule' },
    });
    // Outside the month on either side (UTC would put the first inside December).
    open('ses_3', '2027-01-01T00:30:00', [a1], null);
    open('ses_4', '2026-11-30T23:59:00', [a1], 'prg_ban_tin_sang');
    playback.flushEntries();
    clock.advance(30_000); // the closing job
  });
  afterEach(async () => {
    await t.close();
  });

  const report = (query: string, token = t.adminToken) =>
    t.request('GET', `/api/v1/reports/broadcast?${query}`, { token });

  it('gives the figures of the month per commune and per hamlet', async () => {
    const res = await report(`areaId=${tree.district.id}&month=2026-12`);
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json<{ communes: unknown[] }>();
    expect(body).toMatchObject({
      area: { id: tree.district.id, name: 'Huyện Hải Lăng', level: 'district' },
      month: '2026-12',
      from: '2026-12-01T00:00:00+07:00',
      to: '2027-01-01T00:00:00+07:00',
      total: {
        occurrences: 3,
        records: 5,
        played: 1,
        partial: 1,
        failed: 1,
        skipped: 1,
        expired: 0,
        undelivered: 1,
        pending: 0,
        minutesOnAir: 1.5,
      },
    });
    const [communeA, communeB] = body.communes;
    expect(communeA).toMatchObject({
      id: tree.communeA.id,
      name: 'Xã Hải Phú',
      occurrences: 2,
      records: 3,
      played: 1,
      partial: 1,
      failed: 1,
      minutesOnAir: 1.5,
      bulletins: [
        {
          programmeId: 'prg_ban_tin_sang',
          title: null,
          occurrences: 2,
          targeted: 3,
          played: 1,
          partial: 1,
          share: 0.333,
        },
      ],
      topFailureReasons: [{ outcome: 'failed', reason: 'mất điện', count: 1 }],
      hamlets: [{ id: tree.hamletA.id, name: 'Thôn Đông', records: 3, played: 1 }],
    });
    expect(communeB).toMatchObject({
      id: tree.communeB.id,
      occurrences: 2,
      records: 2,
      skipped: 1,
      undelivered: 1,
      minutesOnAir: 0,
      bulletins: [
        expect.objectContaining({ programmeId: 'prg_ban_tin_sang', targeted: 1, played: 0, share: 0 }),
        expect.objectContaining({ programmeId: 'prg_nong_nghiep', targeted: 1, played: 0, share: 0 }),
      ],
      topFailureReasons: [
        { outcome: 'skipped', reason: 'overridden by another schedule', count: 1 },
        { outcome: 'undelivered', reason: 'never sent', count: 1 },
      ],
    });
    // The record that joined late says so in the log.
    const log = await t.request('GET', `/api/v1/playback-log?deviceId=${a1}&outcome=partial`, {
      token: t.adminToken,
    });
    expect(log.json<{ items: { reason: string }[] }>().items.map((r) => r.reason)).toEqual([
      'joined 30 s late; 30 s of 60 s aired',
    ]);
  });

  it('exports the report as CSV with a BOM and Vietnamese titles', async () => {
    const res = await report(`areaId=${tree.district.id}&month=2026-12&format=csv`);
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/csv; charset=utf-8');
    expect(res.headers['content-disposition']).toBe('attachment; filename="bao-cao-phat-thanh-2026-12.csv"');
    expect([...res.rawPayload.subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf]);
    const lines = res.rawPayload.subarray(3).toString('utf8').trim().split('\n');
    expect(lines[0]).toMatch(/^Cấp,Khu vực,Thuộc xã,Số buổi phát,/);
    expect(lines.slice(1).map((l) => l.split(',').slice(0, 5).join(','))).toEqual([
      'Huyện,Huyện Hải Lăng,,3,5',
      'Xã,Xã Hải Phú,Xã Hải Phú,2,3',
      'Thôn,Thôn Đông,Xã Hải Phú,2,3',
      'Xã,Xã Hải Thượng,Xã Hải Thượng,2,2',
      'Thôn,Thôn Tây,Xã Hải Thượng,2,2',
    ]);
    expect(lines[2]).toContain('prg_ban_tin_sang: 1/3 (33%)');
    expect(lines[2]).toContain('mất điện (1)');
  });

  it('keeps a commune user to their commune and refuses bad input by field', async () => {
    const userB = await t.createUser('district_operator', tree.communeB.id);
    const own = await report(`areaId=${tree.communeB.id}&month=2026-12`, userB);
    expect(own.statusCode).toBe(200);
    expect(own.json<{ total: { records: number }; communes: { id: string }[] }>()).toMatchObject({
      total: { records: 2 },
      communes: [{ id: tree.communeB.id }],
    });
    const other = await report(`areaId=${tree.communeA.id}&month=2026-12`, userB);
    expect(other.statusCode).toBe(403);
    expect(problem(other).detail).toBe(`areaId: area ${tree.communeA.id} is outside your area`);

    for (const [query, field] of [
      [`areaId=${tree.district.id}&month=2026-13`, 'query.month'],
      [`areaId=${tree.district.id}&month=12-2026`, 'query.month'],
      ['month=2026-12', 'query.areaId'],
    ] as const) {
      const res = await report(query);
      expect(res.statusCode, query).toBe(400);
      expect(problem(res).errors?.map((e) => e.field)).toEqual([field]);
    }
    // A month with nothing in it: zeros, not an error.
    const empty = await report(`areaId=${tree.district.id}&month=2026-10`);
    expect(empty.json<{ total: { records: number; bulletins: unknown[] } }>().total).toMatchObject({
      records: 0,
      bulletins: [],
    });
  });

  it('lets every role read the report of its own subtree, and keeps formulas out of its CSV', async () => {
    for (const role of ['broadcaster', 'technician', 'approver']) {
      const token = await t.createUser(role, tree.communeA.id);
      expect((await report(`areaId=${tree.communeA.id}&month=2026-12`, token)).statusCode, role).toBe(200);
      expect((await report(`areaId=${tree.district.id}&month=2026-12`, token)).statusCode, role).toBe(403);
    }

    // A hamlet named like a formula, whose loudspeaker failed with a reason that reads like one.
    const hamlet = await t.createArea({ name: '=Thôn Mới', level: 'hamlet', parentId: tree.communeA.id });
    const device = (await t.createDevice(hamlet.id, 'Cụm loa thôn Mới')).id;
    const dueAt = new Date('2026-12-20T06:00:00+07:00');
    const playback = t.app.services.playback;
    playback.openRecords({
      sessionId: 'ses_formula',
      commandId: 'cmd_ses_formula',
      deviceIds: [device],
      priority: 'normal',
      dueAt,
      endsAt: new Date(dueAt.getTime() + 120_000),
      plannedMs: 60_000,
      programmeId: null,
      programmeRevisionId: null,
      scheduleId: null,
      occurrenceId: null,
    });
    playback.record(device, {
      seq: 1,
      sessionId: 'ses_formula',
      commandId: 'cmd_ses_formula',
      event: 'failed',
      at: dueAt.toISOString(),
      reason: '@SUM(1+1)',
    });
    playback.flushEntries();
    const csv = await report(`areaId=${tree.communeA.id}&month=2026-12&format=csv`);
    const row = csv.rawPayload
      .subarray(3)
      .toString('utf8')
      .split('\n')
      .find((l) => l.includes('Thôn Mới'));
    expect(row).toMatch(/^Thôn,'=Thôn Mới,Xã Hải Phú,1,1,/);
    // The failure reasons, then the (empty) emergency and drill columns.
    expect(row).toMatch(/,'@SUM\(1\+1\) \(1\)(,\d+){6},(,\d+){6},$/);
  });
});
