/**
 * The schedules API (issue 8): timing forms read back in Vietnamese local time whatever the process's time
 * zone, occurrences planned ahead, scope, the only-approved rule, relays' durations, lists, pause and
 * resume, edits that change only the future, soft deletes, and the programme that cannot be deleted while
 * a schedule airs it. A real app on a real SQLite file; only the clock is ours, and it never moves here
 * (the dispatcher, if present, sends nothing).
 */
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { scheduleOccurrences } from '../src/db/schema/index.js';
import {
  occurrencePlayIds,
  PLANNED_FOREVER,
  SCHEDULE_PLANNING_DAYS,
} from '../src/modules/schedules/planning.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { approvedRelay } from './support/programmes.js';

/** 08:00 on 30 November 2026 in Vietnam. */
const NOW = '2026-11-30T01:00:00.000Z';
const MEDIA_LEAD_MS = 60_000;

/** A Vietnamese wall-clock time as an instant (Vietnam is UTC+07:00 all year). */
const vn = (wall: string) => new Date(`${wall}+07:00`).getTime();

interface OccurrenceRow {
  id: number;
  slot_at: number;
  starts_at: number;
  ends_at: number;
  due_at: number;
  status: string;
  reason: string | null;
}

interface ScheduleBody {
  id: string;
  programme: { id: string; title: string; kind: string };
  targets: { areaIds: string[]; deviceIds: string[] };
  deviceCount: number;
  priority: string;
  volume: number | null;
  timing: Record<string, unknown>;
  exceptDates: string[];
  durationS: number | null;
  note: string | null;
  description: { vi: string; en: string };
  status: string;
  nextOccurrence: string | null;
  createdBy: { id: string; username: string } | null;
  createdAt: string;
  updatedAt: string;
}

describe('schedules API', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let broadcasterA: string;
  let broadcasterB: string;
  let approverA: string;
  let districtOperator: string;
  let devA: string;
  let devA2: string;
  let devB: string;
  let bulletin: { id: string; durationMs: number };
  let relay: { id: string };

  const occurrencesOf = (scheduleId: string) =>
    t.query(
      `SELECT id, slot_at, starts_at, ends_at, due_at, status, reason FROM schedule_occurrences
       WHERE schedule_id = '${scheduleId}' ORDER BY starts_at`,
    ) as OccurrenceRow[];

  const create = (token: string, body: Record<string, unknown>) =>
    t.request('POST', '/api/v1/schedules', { token, body });

  async function created(token: string, body: Record<string, unknown>): Promise<ScheduleBody> {
    const res = await create(token, body);
    if (res.statusCode !== 201) throw new Error(`schedule not created: ${res.statusCode} ${res.body}`);
    return res.json<ScheduleBody>();
  }

  /** A relay scheduled on commune A's first device, at a time no other test uses. */
  const relaySchedule = (timing: unknown, extra: Record<string, unknown> = {}) => ({
    programmeId: relay.id,
    targets: { deviceIds: [devA] },
    timing,
    durationS: 600,
    ...extra,
  });

  async function approvedBulletin(token: string, areaId: string, title: string) {
    const res = await t.request('POST', '/api/v1/programmes', {
      token,
      body: { title, areaId, category: 'announcement', content: { segments: [{ silenceMs: 2000 }] } },
    });
    if (res.statusCode !== 201) throw new Error(`bulletin not created: ${res.body}`);
    const { id } = res.json<{ id: string }>();
    await t.request('POST', `/api/v1/programmes/${id}/submit`, { token, body: {} });
    const approved = await t.request('POST', `/api/v1/programmes/${id}/approve`, {
      token: t.adminToken,
      body: {},
    });
    if (approved.statusCode !== 200) throw new Error(`bulletin not approved: ${approved.body}`);
    return { id, durationMs: approved.json<{ approved: { durationMs: number } }>().approved.durationMs };
  }

  beforeAll(async () => {
    t = await createTestApp({ clock: new ManualClock(NOW) });
    tree = await createAreaTree(t);
    broadcasterA = await t.createUser('broadcaster', tree.communeA.id, 'phat.thanh.vien.a');
    broadcasterB = await t.createUser('broadcaster', tree.communeB.id, 'phat.thanh.vien.b');
    approverA = await t.createUser('approver', tree.communeA.id, 'chu.tich.xa.a');
    districtOperator = await t.createUser('district_operator', tree.district.id, 'van.hanh.huyen');
    devA = (await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông')).id;
    devA2 = (await t.createDevice(tree.communeA.id, 'Loa trung tâm xã Hải Phú')).id;
    devB = (await t.createDevice(tree.hamletB.id, 'Cụm loa thôn Tây')).id;
    bulletin = await approvedBulletin(
      broadcasterA,
      tree.communeA.id,
      'Thông báo lịch tiêm phòng dại – Thôn Đông',
    );
    relay = await approvedRelay(t, broadcasterA, tree.communeA.id, { title: 'Tiếp sóng VOV1 – thời sự' });
  });

  afterAll(async () => {
    await t.close();
  });

  it('documents the routes in the OpenAPI description', async () => {
    const res = await t.request('GET', '/docs/json');
    expect(res.statusCode).toBe(200);
    const paths = res.json<{ paths: Record<string, Record<string, unknown>> }>().paths;
    expect(Object.keys(paths['/api/v1/schedules'] ?? {}).sort()).toEqual(['get', 'post']);
    expect(Object.keys(paths['/api/v1/schedules/{id}'] ?? {}).sort()).toEqual(['delete', 'get', 'patch']);
    expect(paths['/api/v1/schedules/{id}/pause']).toHaveProperty('post');
    expect(paths['/api/v1/schedules/{id}/resume']).toHaveProperty('post');
    expect(JSON.stringify(paths['/api/v1/schedules']?.post)).toContain('onConflict');
  });

  describe('timing forms, read in Vietnamese time', () => {
    it('runs with a process time zone other than Vietnam', () => {
      expect(process.env.TZ).toBe('America/New_York');
    });

    it('once: one occurrence at the wall-clock time in Vietnam, shown with +07:00', async () => {
      const body = await created(broadcasterA, {
        programmeId: bulletin.id,
        targets: { areaIds: [tree.hamletA.id] },
        timing: { once: '2026-12-01T05:00' },
      });
      expect(body).toMatchObject({
        programme: { id: bulletin.id, title: 'Thông báo lịch tiêm phòng dại – Thôn Đông', kind: 'bulletin' },
        targets: { areaIds: [tree.hamletA.id], deviceIds: [] },
        deviceCount: 1,
        priority: 'normal',
        volume: null,
        timing: { once: '2026-12-01T05:00' },
        exceptDates: [],
        durationS: null,
        note: null,
        status: 'active',
        nextOccurrence: '2026-12-01T05:00:00+07:00',
        createdBy: { username: 'phat.thanh.vien.a' },
        createdAt: '2026-11-30T08:00:00+07:00',
      });
      expect(body.id).toMatch(/^sch_/);
      expect(body.description.vi).toContain('05:00');
      expect(body.description.en).toContain('05:00');
      // A file is sent MEDIA_LEAD_S early and lasts as long as the approved revision.
      expect(occurrencesOf(body.id)).toEqual([
        expect.objectContaining({
          slot_at: vn('2026-12-01T05:00'),
          starts_at: vn('2026-12-01T05:00'),
          ends_at: vn('2026-12-01T05:00') + bulletin.durationMs,
          due_at: vn('2026-12-01T05:00') - MEDIA_LEAD_MS,
          status: 'planned',
        }),
      ]);
      // Nothing is left to plan after its only occurrence: the daily job will not look at it again.
      const [row] = t.query(`SELECT planned_until FROM schedules WHERE id = '${body.id}'`) as {
        planned_until: number;
      }[];
      expect(row!.planned_until).toBe(PLANNED_FOREVER.getTime());
      expect(
        (await t.request('GET', `/api/v1/schedules/${body.id}`, { token: broadcasterA })).json(),
      ).toEqual(body);
    });

    it('daily: each time of each day from `from` to `until`, minus exceptDates', async () => {
      const body = await created(
        broadcasterA,
        relaySchedule(
          { daily: { times: ['06:00', '17:00'] }, from: '2026-12-01', until: '2026-12-03' },
          { durationS: 900, exceptDates: ['2026-12-02'] },
        ),
      );
      expect(body.exceptDates).toEqual(['2026-12-02']);
      expect(body.description).toEqual({
        vi: 'Hằng ngày lúc 06:00 và 17:00, từ 01/12/2026 đến 03/12/2026; trừ ngày 02/12/2026',
        en: 'Every day at 06:00 and 17:00, from 1 December 2026 to 3 December 2026; except 2 December 2026',
      });
      expect(body.nextOccurrence).toBe('2026-12-01T06:00:00+07:00');
      const rows = occurrencesOf(body.id);
      expect(rows.map((r) => r.starts_at)).toEqual([
        vn('2026-12-01T06:00'),
        vn('2026-12-01T17:00'),
        vn('2026-12-03T06:00'),
        vn('2026-12-03T17:00'),
      ]);
      // A relay is sent at its start and stays on the stream durationS.
      for (const r of rows) {
        expect(r.due_at).toBe(r.starts_at);
        expect(r.ends_at - r.starts_at).toBe(900_000);
        expect(r.slot_at).toBe(r.starts_at);
      }
    });

    it('weekly: the days named, at the times named', async () => {
      const body = await created(
        broadcasterA,
        relaySchedule({
          weekly: { days: ['mon', 'wed', 'fri'], times: ['07:30'] },
          from: '2026-12-01',
          until: '2026-12-09',
        }),
      );
      // 1 December 2026 is a Tuesday.
      expect(occurrencesOf(body.id).map((r) => r.starts_at)).toEqual([
        vn('2026-12-02T07:30'),
        vn('2026-12-04T07:30'),
        vn('2026-12-07T07:30'),
        vn('2026-12-09T07:30'),
      ]);
      expect(body.nextOccurrence).toBe('2026-12-02T07:30:00+07:00');
      expect(body.description.en.toLowerCase()).toContain('monday');
    });

    it('cron: in Vietnamese time, with the answer saying when it runs in words', async () => {
      const body = await created(
        broadcasterA,
        relaySchedule({ cron: '0 8 * * 1-5', from: '2026-12-01', until: '2026-12-07' }),
      );
      expect(occurrencesOf(body.id).map((r) => r.starts_at)).toEqual([
        vn('2026-12-01T08:00'),
        vn('2026-12-02T08:00'),
        vn('2026-12-03T08:00'),
        vn('2026-12-04T08:00'),
        vn('2026-12-07T08:00'),
      ]);
      expect(body.description.vi.length).toBeGreaterThan(5);
      expect(body.description.en).toMatch(/08:00/);
    });

    it('repeat: the same slot again, each a row of its own', async () => {
      const body = await created(broadcasterA, {
        programmeId: bulletin.id,
        targets: { deviceIds: [devA] },
        timing: { once: '2026-12-01T09:00', repeat: { count: 3, intervalS: 600 } },
      });
      expect(occurrencesOf(body.id).map((r) => [r.slot_at, r.due_at])).toEqual([
        [vn('2026-12-01T09:00'), vn('2026-12-01T09:00') - MEDIA_LEAD_MS],
        [vn('2026-12-01T09:10'), vn('2026-12-01T09:10') - MEDIA_LEAD_MS],
        [vn('2026-12-01T09:20'), vn('2026-12-01T09:20') - MEDIA_LEAD_MS],
      ]);
    });

    it('an offset in `once` names an instant; local time without one is Vietnamese whatever TZ is', async () => {
      const body = await created(broadcasterA, relaySchedule({ once: '2026-12-01T02:30Z' }));
      expect(body.nextOccurrence).toBe('2026-12-01T09:30:00+07:00');
      expect(occurrencesOf(body.id)[0]!.starts_at).toBe(Date.parse('2026-12-01T02:30:00Z'));
    });
  });

  describe('planning ahead', () => {
    it(`plans ${SCHEDULE_PLANNING_DAYS} days on save, then the daily job extends it, and costs nothing when nothing is due`, async () => {
      const body = await created(
        broadcasterA,
        relaySchedule({ daily: { times: ['12:00'] }, from: '2026-12-01' }, { durationS: 60 }),
      );
      const now = Date.parse(NOW);
      const horizon = now + SCHEDULE_PLANNING_DAYS * 86_400_000;
      const before = occurrencesOf(body.id);
      expect(before.length).toBe(91); // 1 December to 1 March, one a day at noon.
      expect(before.at(-1)!.starts_at).toBeLessThan(horizon);
      expect(before.at(-1)!.starts_at + 86_400_000).toBeGreaterThanOrEqual(horizon);

      const schedules = t.app.services.schedules;
      const later = new Date(now + 10 * 86_400_000);
      const result = schedules.planAhead(later);
      expect(result.schedules).toBeGreaterThan(0);
      const after = occurrencesOf(body.id);
      expect(after.length).toBe(101);
      expect(after.slice(0, 91)).toEqual(before);
      expect(new Set(after.map((r) => r.slot_at)).size).toBe(101);

      // Everything is planned far enough: nothing to do.
      expect(schedules.planAhead(later)).toEqual({ schedules: 0, occurrences: 0 });
    });
  });

  describe('rules', () => {
    it('only an approved programme can be scheduled (409), an unknown or unseen one is 404 naming the field', async () => {
      const draft = await t.request('POST', '/api/v1/programmes', {
        token: broadcasterA,
        body: {
          title: 'Bản nháp chưa duyệt',
          areaId: tree.communeA.id,
          category: 'news',
          content: { relay: { url: 'http://127.0.0.1:9/nhap.mp3' } },
        },
      });
      const res = await create(
        broadcasterA,
        relaySchedule({ once: '2026-12-05T10:00' }, { programmeId: draft.json<{ id: string }>().id }),
      );
      expect(res.statusCode).toBe(409);
      expect(problem(res).code).toBe('not_approved');

      const missing = await create(
        broadcasterA,
        relaySchedule({ once: '2026-12-05T10:00' }, { programmeId: 'prg_khongco' }),
      );
      expect(missing.statusCode).toBe(404);
      expect(problem(missing).detail).toContain('body.programmeId');

      // Commune B's programme is invisible to commune A.
      const theirs = await approvedRelay(t, broadcasterB, tree.communeB.id, {
        title: 'Tiếp sóng xã Hải Thượng',
      });
      const unseen = await create(
        broadcasterA,
        relaySchedule({ once: '2026-12-05T10:00' }, { programmeId: theirs.id }),
      );
      expect(unseen.statusCode).toBe(404);
      expect(problem(unseen).detail).toContain('body.programmeId');
    });

    it('relays need durationS; bulletins refuse it (400 naming body.durationS)', async () => {
      const noDuration = await create(broadcasterA, {
        programmeId: relay.id,
        targets: { deviceIds: [devA] },
        timing: { once: '2026-12-05T11:00' },
      });
      expect(noDuration.statusCode).toBe(400);
      const errors = problem(noDuration).errors;
      expect(errors?.map((e) => e.field)).toEqual(['body.durationS']);
      expect(errors?.[0]?.message).toContain('relay');

      const withDuration = await create(broadcasterA, {
        programmeId: bulletin.id,
        targets: { deviceIds: [devA] },
        timing: { once: '2026-12-05T11:00' },
        durationS: 60,
      });
      expect(withDuration.statusCode).toBe(400);
      expect(problem(withDuration).errors?.[0]?.field).toBe('body.durationS');
    });

    it('scope: a commune broadcaster cannot target another commune (403/404 naming the field)', async () => {
      const device = await create(
        broadcasterA,
        relaySchedule({ once: '2026-12-05T12:00' }, { targets: { deviceIds: [devA, devB] } }),
      );
      expect(device.statusCode).toBe(403);
      expect(problem(device).detail).toContain('body.targets.deviceIds.1');

      const area = await create(
        broadcasterA,
        relaySchedule(
          { once: '2026-12-05T12:00' },
          { targets: { areaIds: [tree.hamletA.id, tree.communeB.id] } },
        ),
      );
      expect(area.statusCode).toBe(403);
      expect(problem(area).detail).toContain('body.targets.areaIds.1');

      const unknown = await create(
        broadcasterA,
        relaySchedule({ once: '2026-12-05T12:00' }, { targets: { deviceIds: ['dev_khongco'] } }),
      );
      expect(unknown.statusCode).toBe(404);
      expect(problem(unknown).detail).toContain('body.targets.deviceIds.0');

      // Approvers sign programmes off; they do not schedule.
      const approver = await create(approverA, relaySchedule({ once: '2026-12-05T12:00' }));
      expect(approver.statusCode).toBe(403);
    });

    it('scope: each sees what plays in their area, and changes only what lies wholly inside it', async () => {
      const own = await created(broadcasterA, relaySchedule({ once: '2026-12-05T13:00' }));
      // The district's relay on the whole district plays in both communes.
      const districtRelay = await approvedRelay(t, districtOperator, tree.district.id, {
        title: 'Tiếp sóng đài huyện',
      });
      const district = await created(districtOperator, {
        programmeId: districtRelay.id,
        targets: { areaIds: [tree.district.id] },
        timing: { once: '2026-12-05T14:00' },
        durationS: 300,
      });
      expect(district.deviceCount).toBe(3);

      expect(
        (await t.request('GET', `/api/v1/schedules/${own.id}`, { token: broadcasterB })).statusCode,
      ).toBe(404);
      expect(
        (await t.request('GET', `/api/v1/schedules/${district.id}`, { token: broadcasterB })).statusCode,
      ).toBe(200);
      expect(
        (await t.request('GET', `/api/v1/schedules/${district.id}`, { token: broadcasterA })).statusCode,
      ).toBe(200);
      const edit = await t.request('PATCH', `/api/v1/schedules/${district.id}`, {
        token: broadcasterA,
        body: { note: 'Xã sửa lịch của huyện' },
      });
      expect(edit.statusCode).toBe(403);
      expect(
        (await t.request('POST', `/api/v1/schedules/${district.id}/pause`, { token: broadcasterA }))
          .statusCode,
      ).toBe(403);
      expect(
        (await t.request('DELETE', `/api/v1/schedules/${own.id}`, { token: broadcasterB })).statusCode,
      ).toBe(404);

      const listB = await t.request('GET', '/api/v1/schedules?limit=200', { token: broadcasterB });
      const idsB = listB.json<{ items: ScheduleBody[] }>().items.map((s) => s.id);
      expect(idsB).toContain(district.id);
      expect(idsB).not.toContain(own.id);

      // The district operator manages it, and sees commune A's schedules.
      const paused = await t.request('POST', `/api/v1/schedules/${district.id}/pause`, {
        token: districtOperator,
      });
      expect(paused.statusCode).toBe(200);
      expect(
        (await t.request('GET', `/api/v1/schedules/${own.id}`, { token: districtOperator })).statusCode,
      ).toBe(200);
    });

    it('refuses bad input as problem+json naming the field', async () => {
      const cases: [Record<string, unknown>, string][] = [
        [relaySchedule({ daily: { times: ['06:00'] } }), 'body.timing.from'],
        [relaySchedule({ once: '2026-12-05T25:00' }), 'body.timing.once'],
        [relaySchedule({ once: '2026-12-05T15:00' }, { volume: 101 }), 'body.volume'],
        [relaySchedule({ once: '2026-12-05T15:00' }, { note: 'à'.repeat(501) }), 'body.note'],
        [relaySchedule({ once: '2026-12-05T15:00' }, { priority: 'emergency' }), 'body.priority'],
        [relaySchedule({ once: '2026-12-05T15:00' }, { onConflict: 'ignore' }), 'body.onConflict'],
        [relaySchedule({ once: '2026-12-05T15:00' }, { targets: {} }), 'body.targets'],
        [relaySchedule({ once: '2026-12-05T15:00' }, { exceptDates: ['2026-02-30'] }), 'body.exceptDates.0'],
        [relaySchedule({ once: '2026-12-05T15:00' }, { durationS: 0 }), 'body.durationS'],
      ];
      for (const [body, field] of cases) {
        const res = await create(broadcasterA, body);
        expect(res.statusCode, field).toBe(400);
        expect(
          problem(res).errors?.map((e) => e.field),
          JSON.stringify(body),
        ).toContain(field);
      }
    });

    it('refuses a timing with nothing left to air, one that overlaps itself, and targets without devices', async () => {
      const past = await create(broadcasterA, relaySchedule({ once: '2026-11-29T06:00' }));
      expect(past.statusCode).toBe(400);
      expect(problem(past).errors?.[0]?.field).toBe('body.timing');
      // When the skipped dates are what leaves nothing, they are the field named.
      const allSkipped = await create(
        broadcasterA,
        relaySchedule(
          { daily: { times: ['06:30'] }, from: '2026-12-24', until: '2026-12-25' },
          { exceptDates: ['2026-12-25', '2026-12-24'] },
        ),
      );
      expect(allSkipped.statusCode).toBe(400);
      const skipErrors = problem(allSkipped).errors;
      expect(skipErrors?.map((e) => e.field)).toEqual(['body.exceptDates']);
      expect(skipErrors?.[0]?.message).toContain('nothing would air');

      const overlapping = await create(
        broadcasterA,
        relaySchedule({ once: '2026-12-06T06:00', repeat: { count: 2, intervalS: 300 } }, { durationS: 600 }),
      );
      expect(overlapping.statusCode).toBe(400);
      expect(problem(overlapping).errors?.[0]?.field).toBe('body.timing');

      const empty = await t.createArea({ name: 'Thôn Mới', level: 'hamlet', parentId: tree.communeA.id });
      const nobody = await create(
        broadcasterA,
        relaySchedule({ once: '2026-12-06T06:00' }, { targets: { areaIds: [empty.id] } }),
      );
      expect(nobody.statusCode).toBe(400);
      expect(problem(nobody).errors?.[0]?.field).toBe('body.targets');
    });

    it('keeps a Vietnamese note intact (composed, as typed on any keyboard)', async () => {
      const note = 'Nhắc bà con Thôn Đông đưa chó đi tiêm phòng dại – đợt 2, ưu tiên hộ nghèo.';
      const body = await created(
        broadcasterA,
        relaySchedule({ once: '2026-12-06T07:00' }, { note: note.normalize('NFD') }),
      );
      expect(body.note).toBe(note);
      const read = await t.request('GET', `/api/v1/schedules/${body.id}`, { token: broadcasterA });
      expect(read.json<ScheduleBody>().note).toBe(note);
    });
  });

  describe('lists, pause and resume', () => {
    it('filters by area, programme and active, paginated with a total', async () => {
      const programme = await approvedRelay(t, broadcasterA, tree.communeA.id, {
        title: 'Tiếp sóng – danh sách',
      });
      const ids: string[] = [];
      for (const [i, day] of ['2026-12-10', '2026-12-11', '2026-12-12'].entries()) {
        const body = await created(broadcasterA, {
          programmeId: programme.id,
          targets: i === 2 ? { deviceIds: [devA2] } : { areaIds: [tree.hamletA.id] },
          timing: { once: `${day}T06:00` },
          durationS: 120,
        });
        ids.push(body.id);
      }
      const page = await t.request('GET', `/api/v1/schedules?programmeId=${programme.id}&limit=2`, {
        token: broadcasterA,
      });
      expect(page.json()).toMatchObject({ total: 3, limit: 2, offset: 0 });
      // Newest first.
      expect(page.json<{ items: ScheduleBody[] }>().items.map((s) => s.id)).toEqual([ids[2], ids[1]]);
      const rest = await t.request('GET', `/api/v1/schedules?programmeId=${programme.id}&limit=2&offset=2`, {
        token: broadcasterA,
      });
      expect(rest.json<{ items: ScheduleBody[] }>().items.map((s) => s.id)).toEqual([ids[0]]);

      const inHamlet = await t.request(
        'GET',
        `/api/v1/schedules?programmeId=${programme.id}&areaId=${tree.hamletA.id}`,
        {
          token: broadcasterA,
        },
      );
      expect(
        inHamlet
          .json<{ items: ScheduleBody[] }>()
          .items.map((s) => s.id)
          .sort(),
      ).toEqual([ids[0], ids[1]].sort());

      expect(
        (await t.request('POST', `/api/v1/schedules/${ids[1]}/pause`, { token: broadcasterA })).statusCode,
      ).toBe(200);
      const active = await t.request('GET', `/api/v1/schedules?programmeId=${programme.id}&active=true`, {
        token: broadcasterA,
      });
      expect(active.json<{ items: ScheduleBody[]; total: number }>().total).toBe(2);
      const inactive = await t.request('GET', `/api/v1/schedules?programmeId=${programme.id}&active=false`, {
        token: broadcasterA,
      });
      expect(inactive.json<{ items: ScheduleBody[] }>().items.map((s) => s.id)).toEqual([ids[1]]);

      const badQuery = await t.request('GET', '/api/v1/schedules?active=maybe', { token: broadcasterA });
      expect(badQuery.statusCode).toBe(400);
      expect(problem(badQuery).errors?.[0]?.field).toBe('query.active');
      const outside = await t.request('GET', `/api/v1/schedules?areaId=${tree.communeB.id}`, {
        token: broadcasterA,
      });
      expect(outside.statusCode).toBe(404);
    });

    it('pause keeps the planned occurrences; pause twice or resume an active one is 409 invalid_transition', async () => {
      const body = await created(
        broadcasterA,
        relaySchedule({ daily: { times: ['19:00'] }, from: '2026-12-01', until: '2026-12-02' }),
      );
      const paused = await t.request('POST', `/api/v1/schedules/${body.id}/pause`, { token: broadcasterA });
      expect(paused.json()).toMatchObject({ status: 'paused', nextOccurrence: null });
      expect(occurrencesOf(body.id).map((r) => r.status)).toEqual(['planned', 'planned']);

      const again = await t.request('POST', `/api/v1/schedules/${body.id}/pause`, { token: broadcasterA });
      expect(again.statusCode).toBe(409);
      expect(problem(again).code).toBe('invalid_transition');

      const resumed = await t.request('POST', `/api/v1/schedules/${body.id}/resume`, { token: broadcasterA });
      expect(resumed.json()).toMatchObject({ status: 'active', nextOccurrence: '2026-12-01T19:00:00+07:00' });
      const twice = await t.request('POST', `/api/v1/schedules/${body.id}/resume`, { token: broadcasterA });
      expect(twice.statusCode).toBe(409);
      expect(problem(twice).code).toBe('invalid_transition');

      const actions = t.query(`SELECT action FROM audit_log WHERE target_id = '${body.id}' ORDER BY id`) as {
        action: string;
      }[];
      expect(actions.map((a) => a.action)).toEqual(['schedule.create', 'schedule.pause', 'schedule.resume']);
    });

    it('is ended once nothing is left to air', async () => {
      const body = await created(broadcasterA, relaySchedule({ once: '2026-12-06T08:00' }));
      // As the dispatcher would leave it after a slot that closed while the server was down.
      t.app.db
        .update(scheduleOccurrences)
        .set({ status: 'skipped', reason: 'the slot closed before it could be sent' })
        .where(eq(scheduleOccurrences.scheduleId, body.id))
        .run();
      const read = await t.request('GET', `/api/v1/schedules/${body.id}`, { token: broadcasterA });
      expect(read.json()).toMatchObject({ status: 'ended', nextOccurrence: null });
      const pause = await t.request('POST', `/api/v1/schedules/${body.id}/pause`, { token: broadcasterA });
      expect(pause.statusCode).toBe(409);
    });
  });

  describe('conflicts on save', () => {
    const countOf = (sql: string) => (t.query(sql)[0] as { n: number }).n;

    it('refuses an overlap at the same priority (409 listing it), or settles it as asked, also when planning ahead', async () => {
      const theirs = await created(
        broadcasterA,
        relaySchedule(
          { daily: { times: ['20:00'] }, from: '2026-12-20' },
          { targets: { deviceIds: [devA2] } },
        ),
      );
      const mine = {
        programmeId: relay.id,
        targets: { areaIds: [tree.communeA.id] },
        timing: { daily: { times: ['20:05'] }, from: '2026-12-20' },
        durationS: 300,
      };
      const refused = await create(broadcasterA, mine);
      expect(refused.statusCode).toBe(409);
      expect(problem(refused).code).toBe('schedule_conflict');
      expect(refused.json<{ conflicts: unknown[] }>().conflicts[0]).toMatchObject({
        scheduleId: theirs.id,
        programmeTitle: 'Tiếp sóng VOV1 – thời sự',
        deviceCount: 1,
        start: '2026-12-20T20:00:00+07:00',
        end: '2026-12-20T20:10:00+07:00',
      });
      // Nothing of the refused schedule was written.
      expect(
        countOf(
          `SELECT count(*) AS n FROM audit_log WHERE action = 'schedule.create' AND details LIKE '%20:05%'`,
        ),
      ).toBe(0);

      // A higher priority never conflicts: it pre-empts at air time.
      const priority = await create(broadcasterA, {
        ...mine,
        priority: 'priority',
        timing: { once: '2026-12-20T20:01' },
      });
      expect(priority.statusCode).toBe(201);

      const overriding = await created(broadcasterA, { ...mine, onConflict: 'override' });
      const overrides = () =>
        countOf(
          `SELECT count(*) AS n FROM occurrence_overrides o JOIN schedule_occurrences mine ON mine.id = o.by_occurrence_id
           JOIN schedule_occurrences theirs ON theirs.id = o.occurrence_id
           WHERE mine.schedule_id = '${overriding.id}' AND theirs.schedule_id = '${theirs.id}'`,
        );
      const planned = overrides();
      expect(planned).toBe(occurrencesOf(overriding.id).length);
      expect(
        t.query(
          `SELECT resolution FROM schedule_resolutions WHERE schedule_id = '${overriding.id}' AND other_schedule_id = '${theirs.id}'`,
        ),
      ).toEqual([{ resolution: 'override' }]);

      // Appended: it starts when theirs ends; its slot stays what the timing says.
      const appended = await created(broadcasterA, {
        ...mine,
        timing: { once: '2026-12-21T20:02' },
        targets: { deviceIds: [devA2] },
        onConflict: 'append',
      });
      expect(occurrencesOf(appended.id)).toEqual([
        expect.objectContaining({
          slot_at: vn('2026-12-21T20:02'),
          starts_at: vn('2026-12-21T20:10'),
          ends_at: vn('2026-12-21T20:15'),
          due_at: vn('2026-12-21T20:10'),
        }),
      ]);

      // The daily job applies the saved override to the days it plans.
      t.app.services.schedules.planAhead(new Date(Date.parse(NOW) + 30 * 86_400_000));
      expect(overrides()).toBe(occurrencesOf(overriding.id).length);
      expect(overrides()).toBeGreaterThan(planned);
    });
  });

  describe('edit and delete', () => {
    it('an edit re-plans the future only: what was sent, and what has started, stay', async () => {
      const body = await created(
        broadcasterA,
        relaySchedule(
          { daily: { times: ['10:00'] }, from: '2026-12-01', until: '2026-12-03' },
          { durationS: 300 },
        ),
      );
      const [first] = occurrencesOf(body.id);
      // The first occurrence was sent already (as the dispatcher does) ...
      t.app.db
        .update(scheduleOccurrences)
        .set({ status: 'dispatched', commandId: 'cmd_dathugui', dispatchedAt: new Date(first!.due_at) })
        .where(eq(scheduleOccurrences.id, first!.id))
        .run();
      // ... and one from before now is planned still (the dispatcher has not reached it yet).
      const pastSlot = new Date(vn('2026-11-30T07:00'));
      t.app.db
        .insert(scheduleOccurrences)
        .values({
          scheduleId: body.id,
          slotAt: pastSlot,
          startsAt: pastSlot,
          endsAt: new Date(pastSlot.getTime() + 300_000),
          dueAt: pastSlot,
          status: 'planned',
        })
        .run();

      const edited = await t.request('PATCH', `/api/v1/schedules/${body.id}`, {
        token: broadcasterA,
        body: {
          timing: { daily: { times: ['11:00'] }, from: '2026-12-01', until: '2026-12-03' },
          volume: 80,
        },
      });
      expect(edited.statusCode).toBe(200);
      expect(edited.json()).toMatchObject({
        timing: { daily: { times: ['11:00'] } },
        volume: 80,
        nextOccurrence: '2026-12-01T10:00:00+07:00',
      });
      expect(occurrencesOf(body.id).map((r) => [r.starts_at, r.status])).toEqual([
        [vn('2026-11-30T07:00'), 'planned'],
        [vn('2026-12-01T10:00'), 'dispatched'],
        [vn('2026-12-01T11:00'), 'planned'],
        [vn('2026-12-02T11:00'), 'planned'],
        [vn('2026-12-03T11:00'), 'planned'],
      ]);

      // A change that does not touch the occurrences leaves them (and their ids) alone.
      const idsBefore = occurrencesOf(body.id).map((r) => r.id);
      const noted = await t.request('PATCH', `/api/v1/schedules/${body.id}`, {
        token: broadcasterA,
        body: { note: 'Đổi giờ theo đề nghị của trưởng thôn' },
      });
      expect(noted.json<ScheduleBody>().note).toBe('Đổi giờ theo đề nghị của trưởng thôn');
      expect(occurrencesOf(body.id).map((r) => r.id)).toEqual(idsBefore);

      // Deleting: future planned rows go, the started one is cancelled, the sent one stays.
      const deleted = await t.request('DELETE', `/api/v1/schedules/${body.id}`, { token: broadcasterA });
      expect(deleted.statusCode).toBe(204);
      expect(occurrencesOf(body.id).map((r) => [r.starts_at, r.status, r.reason])).toEqual([
        [vn('2026-11-30T07:00'), 'cancelled', 'schedule deleted'],
        [vn('2026-12-01T10:00'), 'dispatched', null],
      ]);
      expect(
        (await t.request('GET', `/api/v1/schedules/${body.id}`, { token: broadcasterA })).statusCode,
      ).toBe(404);
      expect(
        (await t.request('DELETE', `/api/v1/schedules/${body.id}`, { token: broadcasterA })).statusCode,
      ).toBe(404);
      // The sent occurrence, whose slot has not ended, is stopped on the schedule's devices by the person who
      // deleted it: a wrong bulletin deleted in the minute before its slot must not air.
      const stops = t.query(
        `SELECT params, priority, created_by FROM commands WHERE type = 'stop' ORDER BY created_at`,
      ) as { params: string; priority: string; created_by: string }[];
      const { sessionId } = occurrencePlayIds(body.id, new Date(vn('2026-12-01T10:00')));
      expect(
        stops.filter((c) => (JSON.parse(c.params) as { sessionId?: string }).sessionId === sessionId),
      ).toEqual([
        {
          params: JSON.stringify({ sessionId }),
          priority: 'normal',
          created_by: expect.any(String) as string,
        },
      ]);
      const actions = t.query(`SELECT action FROM audit_log WHERE target_id = '${body.id}' ORDER BY id`) as {
        action: string;
      }[];
      expect(actions.map((a) => a.action)).toEqual([
        'schedule.create',
        'schedule.update',
        'schedule.update',
        'schedule.delete',
      ]);
      // Each edit says what it changed, from what to what; what the request repeated is not a change.
      const updates = t.query(
        `SELECT details FROM audit_log WHERE target_id = '${body.id}' AND action = 'schedule.update' ORDER BY id`,
      ) as { details: string }[];
      expect(updates.map((u) => JSON.parse(u.details) as unknown)).toEqual([
        {
          changes: {
            timing: {
              from: { daily: { times: ['10:00'] }, from: '2026-12-01', until: '2026-12-03' },
              to: { daily: { times: ['11:00'] }, from: '2026-12-01', until: '2026-12-03' },
            },
            volume: { from: null, to: 80 },
          },
          replanned: true,
        },
        {
          changes: { note: { from: null, to: 'Đổi giờ theo đề nghị của trưởng thôn' } },
          replanned: false,
        },
      ]);
    });

    it('changing the programme to a relay asks for durationS; targets are checked again', async () => {
      const body = await created(broadcasterA, {
        programmeId: bulletin.id,
        targets: { deviceIds: [devA2] },
        timing: { once: '2026-12-07T06:00' },
      });
      const noDuration = await t.request('PATCH', `/api/v1/schedules/${body.id}`, {
        token: broadcasterA,
        body: { programmeId: relay.id },
      });
      expect(noDuration.statusCode).toBe(400);
      expect(problem(noDuration).errors?.[0]?.field).toBe('body.durationS');

      const toRelay = await t.request('PATCH', `/api/v1/schedules/${body.id}`, {
        token: broadcasterA,
        body: { programmeId: relay.id, durationS: 1200 },
      });
      expect(toRelay.json()).toMatchObject({ programme: { id: relay.id, kind: 'relay' }, durationS: 1200 });
      const [row] = occurrencesOf(body.id);
      expect(row).toMatchObject({ due_at: vn('2026-12-07T06:00'), ends_at: vn('2026-12-07T06:20') });

      const outside = await t.request('PATCH', `/api/v1/schedules/${body.id}`, {
        token: broadcasterA,
        body: { targets: { deviceIds: [devB] } },
      });
      expect(outside.statusCode).toBe(403);
      expect(problem(outside).detail).toContain('body.targets.deviceIds.0');

      const nothing = await t.request('PATCH', `/api/v1/schedules/${body.id}`, {
        token: broadcasterA,
        body: {},
      });
      expect(nothing.statusCode).toBe(400);
    });

    it('a newly approved revision of another length re-times what is yet to be sent, and what was appended after it', async () => {
      const programme = await approvedBulletin(
        broadcasterA,
        tree.communeA.id,
        'Bản tin nông nghiệp – Thôn Đông',
      );
      const body = await created(broadcasterA, {
        programmeId: programme.id,
        targets: { deviceIds: [devA2] },
        timing: { daily: { times: ['15:30'] }, from: '2026-12-01', until: '2026-12-03' },
      });
      const [first] = occurrencesOf(body.id);
      // The first one went out already (MEDIA_LEAD_S early): it airs the revision it was sent with.
      t.app.db
        .update(scheduleOccurrences)
        .set({ status: 'dispatched', commandId: 'cmd_bantincu', dispatchedAt: new Date(first!.due_at) })
        .where(eq(scheduleOccurrences.id, first!.id))
        .run();
      // A relay appended after the bulletin's second occurrence on the same loudspeaker.
      const appended = await created(broadcasterA, {
        programmeId: relay.id,
        targets: { deviceIds: [devA2] },
        timing: { once: '2026-12-02T15:30' },
        durationS: 60,
        onConflict: 'append',
      });
      expect(occurrencesOf(appended.id)[0]!.starts_at).toBe(vn('2026-12-02T15:30') + programme.durationMs);

      const edited = await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
        token: broadcasterA,
        body: { content: { segments: [{ silenceMs: 5000 }] } },
      });
      expect(edited.statusCode).toBe(200);
      await t.request('POST', `/api/v1/programmes/${programme.id}/submit`, { token: broadcasterA, body: {} });
      const approved = await t.request('POST', `/api/v1/programmes/${programme.id}/approve`, {
        token: t.adminToken,
        body: {},
      });
      expect(approved.statusCode).toBe(200);
      const lengthMs = approved.json<{ approved: { durationMs: number } }>().approved.durationMs;
      expect(lengthMs).toBeGreaterThan(programme.durationMs);

      expect(occurrencesOf(body.id).map((r) => [r.starts_at, r.ends_at, r.due_at, r.status])).toEqual([
        [vn('2026-12-01T15:30'), vn('2026-12-01T15:30') + programme.durationMs, first!.due_at, 'dispatched'],
        ...['2026-12-02T15:30', '2026-12-03T15:30'].map((wall) => [
          vn(wall),
          vn(wall) + lengthMs,
          vn(wall) - MEDIA_LEAD_MS,
          'planned',
        ]),
      ]);
      expect(occurrencesOf(appended.id)[0]).toMatchObject({
        slot_at: vn('2026-12-02T15:30'),
        starts_at: vn('2026-12-02T15:30') + lengthMs,
        ends_at: vn('2026-12-02T15:30') + lengthMs + 60_000,
      });
      const replans = () =>
        t.query(
          `SELECT actor_id, details FROM audit_log WHERE action = 'schedule.replan' AND target_id = '${body.id}'`,
        ) as { actor_id: string | null; details: string }[];
      expect(replans()).toHaveLength(1);
      expect(replans()[0]!.actor_id).toBeNull();
      expect(JSON.parse(replans()[0]!.details)).toMatchObject({ programmeId: programme.id, lengthMs });

      // Approving a revision of the same length changes nothing.
      await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
        token: broadcasterA,
        body: { title: 'Bản tin nông nghiệp – Thôn Đông (sửa tiêu đề)' },
      });
      await t.request('POST', `/api/v1/programmes/${programme.id}/submit`, { token: broadcasterA, body: {} });
      const ids = occurrencesOf(body.id).map((r) => r.id);
      await t.request('POST', `/api/v1/programmes/${programme.id}/approve`, {
        token: t.adminToken,
        body: {},
      });
      expect(occurrencesOf(body.id).map((r) => r.id)).toEqual(ids);
      expect(replans()).toHaveLength(1);
    });

    it('a programme cannot be deleted while a schedule airs it (409 in_use), and can once it is deleted', async () => {
      const programme = await approvedRelay(t, broadcasterA, tree.communeA.id, {
        title: 'Tiếp sóng – sẽ xoá',
      });
      const body = await created(broadcasterA, {
        programmeId: programme.id,
        targets: { deviceIds: [devA2] },
        timing: { once: '2026-12-08T06:00' },
        durationS: 60,
      });
      const refused = await t.request('DELETE', `/api/v1/programmes/${programme.id}`, {
        token: broadcasterA,
      });
      expect(refused.statusCode).toBe(409);
      expect(problem(refused).code).toBe('in_use');

      expect(
        (await t.request('DELETE', `/api/v1/schedules/${body.id}`, { token: broadcasterA })).statusCode,
      ).toBe(204);
      expect(
        (await t.request('DELETE', `/api/v1/programmes/${programme.id}`, { token: broadcasterA })).statusCode,
      ).toBe(204);
      // The deleted schedule's rows are gone from the future.
      expect(
        t.app.db
          .select()
          .from(scheduleOccurrences)
          .where(and(eq(scheduleOccurrences.scheduleId, body.id), eq(scheduleOccurrences.status, 'planned')))
          .all(),
      ).toEqual([]);
    });
  });
});
