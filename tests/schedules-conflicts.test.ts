/**
 * Schedule conflicts through the API (POST/PATCH /api/v1/schedules) and the calendar that shows how they
 * were settled: a clash refused with 409 and its list, none across priorities or across devices, `override`
 * and `append`, an edit that creates a clash, and the rules' arithmetic on their own (ScheduleConflicts on a
 * real database).
 */
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { scheduleOccurrences } from '../src/db/schema/index.js';
import { calendarPageSchema } from '../src/modules/schedules/calendar.routes.js';
import { MAX_CLASHES_LISTED, ScheduleConflicts, type Clash } from '../src/modules/schedules/conflicts.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { approvedRelay } from './support/programmes.js';

const MORNING = 'Bản tin sáng – Xã Hải Phú';
const RABIES = 'Thông báo lịch tiêm phòng dại – Thôn Đông';

interface CalendarItem {
  occurrenceId: number;
  scheduleId: string;
  start: string;
  end: string;
  slot: string;
  status: string;
  priority: string;
  programme: { id: string; title: string; kind: string };
  appendedAfter?: { scheduleId: string; programmeTitle: string };
  overriddenBy: { scheduleId: string; programmeTitle: string; start: string; end: string }[];
  conflicts: { scheduleId: string; programmeTitle: string; start: string; end: string }[];
}

let t: TestApp;
let tree: Awaited<ReturnType<typeof createAreaTree>>;
let clock: ManualClock;
let deviceA: string;
let deviceB: string;
let morning: string;
let rabies: string;

beforeEach(async () => {
  // 2026-06-01 08:00 in Vietnam.
  clock = new ManualClock('2026-06-01T01:00:00.000Z');
  t = await createTestApp({ clock });
  tree = await createAreaTree(t);
  deviceA = (await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông')).id;
  deviceB = (await t.createDevice(tree.hamletB.id, 'Cụm loa thôn Tây')).id;
  const editor = await t.createUser('broadcaster', tree.district.id);
  morning = (await approvedRelay(t, editor, tree.district.id, { title: MORNING })).id;
  rabies = (await approvedRelay(t, editor, tree.district.id, { title: RABIES })).id;
});

afterEach(async () => {
  await t.close();
});

async function schedule(body: Record<string, unknown>, token = t.adminToken) {
  return t.request('POST', '/api/v1/schedules', { token, body });
}

async function created(body: Record<string, unknown>): Promise<string> {
  const res = await schedule(body);
  expect(res.statusCode, res.body).toBe(201);
  return res.json<{ id: string }>().id;
}

/** The morning bulletin on the whole of commune A, 06:00–06:15 every day from 2 June. */
const dailyMorning = () =>
  created({
    programmeId: morning,
    targets: { areaIds: [tree.communeA.id] },
    timing: { daily: { times: ['06:00'] }, from: '2026-06-02' },
    durationS: 900,
  });

async function calendarDay(query: string): Promise<CalendarItem[]> {
  const res = await t.request('GET', `/api/v1/calendar?${query}`, { token: t.adminToken });
  expect(res.statusCode, res.body).toBe(200);
  const body = res.json<{ items: CalendarItem[] }>();
  // Written without a zod pass at run time (calendar.routes.ts): already exactly its schema's shape.
  expect(calendarPageSchema.parse(body)).toStrictEqual(body);
  return body.items;
}

describe('saving a schedule that overlaps another', () => {
  it('is refused with 409 listing the schedule, programme, shared devices and local times', async () => {
    const first = await dailyMorning();
    const res = await schedule({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-03T06:10' },
      durationS: 600,
    });
    expect(res.statusCode).toBe(409);
    const body = problem(res) as ReturnType<typeof problem> & { conflicts: Clash[]; conflictCount: number };
    expect(body.code).toBe('schedule_conflict');
    expect(body.conflicts).toEqual([
      {
        scheduleId: first,
        programmeId: morning,
        programmeTitle: MORNING,
        deviceCount: 1,
        start: '2026-06-03T06:00:00+07:00',
        end: '2026-06-03T06:15:00+07:00',
      },
    ]);
    expect(body.conflictCount).toBe(1);
    expect(body.detail).toContain('onConflict');
    // Nothing was saved.
    expect(t.query(`SELECT count(*) AS n FROM schedules`)).toEqual([{ n: 1 }]);
  });

  it('lists a bounded number of clashes and gives the total in the detail', async () => {
    await dailyMorning();
    const res = await schedule({
      programmeId: rabies,
      targets: { areaIds: [tree.district.id] },
      timing: { daily: { times: ['06:05'] }, from: '2026-06-02' },
      durationS: 300,
    });
    expect(res.statusCode).toBe(409);
    const body = res.json<{ conflicts: Clash[]; conflictCount: number; detail: string }>();
    // Checked over the whole planning window: at least 90 days of mornings.
    expect(body.conflictCount).toBeGreaterThanOrEqual(90);
    expect(body.conflicts).toHaveLength(MAX_CLASHES_LISTED);
    expect(body.detail).toContain(`${body.conflictCount} overlap(s)`);
    // The district reaches both devices; only the one in commune A is shared.
    expect(body.conflicts.every((c) => c.deviceCount === 1)).toBe(true);
    expect(body.conflicts[0]!.start).toBe('2026-06-02T06:00:00+07:00');
  });

  it('does not clash at a different priority', async () => {
    await dailyMorning();
    const res = await schedule({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      priority: 'priority',
      timing: { once: '2026-06-03T06:10' },
      durationS: 600,
    });
    expect(res.statusCode, res.body).toBe(201);
  });

  it('does not clash when no device is shared, nor when the times only touch', async () => {
    await dailyMorning();
    expect(
      (
        await schedule({
          programmeId: rabies,
          targets: { deviceIds: [deviceB] },
          timing: { once: '2026-06-03T06:10' },
          durationS: 600,
        })
      ).statusCode,
    ).toBe(201);
    // 06:15 is when the morning bulletin ends: back to back is not an overlap.
    expect(
      (
        await schedule({
          programmeId: rabies,
          targets: { deviceIds: [deviceA] },
          timing: { once: '2026-06-03T06:15' },
          durationS: 600,
        })
      ).statusCode,
    ).toBe(201);
  });

  it('counts a paused schedule (it may be resumed)', async () => {
    const first = await dailyMorning();
    expect(
      (await t.request('POST', `/api/v1/schedules/${first}/pause`, { token: t.adminToken })).statusCode,
    ).toBe(200);
    const res = await schedule({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-03T06:10' },
      durationS: 600,
    });
    expect(res.statusCode).toBe(409);
  });

  it('override: the other occurrence gives way, and the calendar says so', async () => {
    const first = await dailyMorning();
    const res = await schedule({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-03T06:10' },
      durationS: 600,
      onConflict: 'override',
    });
    expect(res.statusCode, res.body).toBe(201);
    const second = res.json<{ id: string }>().id;
    expect(t.query(`SELECT resolution FROM schedule_resolutions WHERE schedule_id = '${second}'`)).toEqual([
      { resolution: 'override' },
    ]);

    const items = await calendarDay(`areaId=${tree.hamletA.id}&from=2026-06-03&to=2026-06-03`);
    expect(items.map((i) => [i.scheduleId, i.start])).toEqual([
      [first, '2026-06-03T06:00:00+07:00'],
      [second, '2026-06-03T06:10:00+07:00'],
    ]);
    expect(items[0]!.overriddenBy).toEqual([
      {
        scheduleId: second,
        programmeTitle: RABIES,
        start: '2026-06-03T06:10:00+07:00',
        end: '2026-06-03T06:20:00+07:00',
      },
    ]);
    // Settled: neither shows a conflict.
    expect(items.map((i) => i.conflicts)).toEqual([[], []]);
    // The other days of the morning bulletin are untouched.
    const nextDay = await calendarDay(`areaId=${tree.hamletA.id}&from=2026-06-04&to=2026-06-04`);
    expect(nextDay).toHaveLength(1);
    expect(nextDay[0]!.overriddenBy).toEqual([]);
  });

  it('an edit keeps what was settled: no 409 for a clash a saved override covers', async () => {
    const first = await dailyMorning();
    const second = await created({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { daily: { times: ['06:10'] }, from: '2026-06-03', until: '2026-06-05' },
      durationS: 600,
      onConflict: 'override',
    });
    // Skip a day: the occurrences are planned again, and the saved choice settles the clashes again.
    const edited = await t.request('PATCH', `/api/v1/schedules/${second}`, {
      token: t.adminToken,
      body: { exceptDates: ['2026-06-04'] },
    });
    expect(edited.statusCode, edited.body).toBe(200);
    const day = (d: string) => calendarDay(`deviceId=${deviceA}&from=${d}&to=${d}`);
    for (const d of ['2026-06-03', '2026-06-05']) {
      const items = await day(d);
      expect(items.map((i) => i.scheduleId)).toEqual([first, second]);
      expect(items[0]!.overriddenBy.map((o) => o.scheduleId)).toEqual([second]);
      expect(items.map((i) => i.conflicts)).toEqual([[], []]);
    }
    // The skipped day: the morning bulletin airs in full.
    const skipped = await day('2026-06-04');
    expect(skipped.map((i) => [i.scheduleId, i.overriddenBy])).toEqual([[first, []]]);
    // The pair keeps one resolution, the one the broadcaster chose.
    expect(
      t.query(
        `SELECT resolution FROM schedule_resolutions WHERE schedule_id = '${second}' OR other_schedule_id = '${second}'`,
      ),
    ).toEqual([{ resolution: 'override' }]);
  });

  it('append: the new occurrence starts when the other ends, and the calendar says after what', async () => {
    const first = await dailyMorning();
    const res = await schedule({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-03T06:10' },
      durationS: 600,
      onConflict: 'append',
    });
    expect(res.statusCode, res.body).toBe(201);
    const second = res.json<{ id: string }>().id;

    const items = await calendarDay(`deviceId=${deviceA}&from=2026-06-03&to=2026-06-03`);
    expect(items.map((i) => [i.scheduleId, i.start, i.end, i.slot])).toEqual([
      [first, '2026-06-03T06:00:00+07:00', '2026-06-03T06:15:00+07:00', '2026-06-03T06:00:00+07:00'],
      [second, '2026-06-03T06:15:00+07:00', '2026-06-03T06:25:00+07:00', '2026-06-03T06:10:00+07:00'],
    ]);
    expect(items[1]!.appendedAfter).toEqual({ scheduleId: first, programmeTitle: MORNING });
    expect(items[0]!.appendedAfter).toBeUndefined();
    expect(items.map((i) => i.conflicts)).toEqual([[], []]);
  });

  it('append: moves again past a second clash, then refuses when appending cannot fit', async () => {
    const first = await dailyMorning();
    // 06:15–06:20 on the same device, back to back with the morning bulletin.
    const third = await created({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-03T06:15' },
      durationS: 300,
    });
    const res = await schedule({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-03T06:10' },
      durationS: 120,
      onConflict: 'append',
    });
    expect(res.statusCode, res.body).toBe(201);
    const items = await calendarDay(`deviceId=${deviceA}&from=2026-06-03&to=2026-06-03`);
    const appended = items.find((i) => i.slot === '2026-06-03T06:10:00+07:00')!;
    expect(appended.start).toBe('2026-06-03T06:20:00+07:00');
    expect(appended.appendedAfter).toEqual({ scheduleId: third, programmeTitle: RABIES });
    expect(items.find((i) => i.scheduleId === first)!.conflicts).toEqual([]);

    // 06:05 and 18:05, 12 h each, back to back: pushed after the morning bulletin, 06:05 would run into 18:05.
    const tooLong = await schedule({
      programmeId: rabies,
      targets: { deviceIds: [deviceB, deviceA] },
      timing: { daily: { times: ['06:05', '18:05'] }, from: '2026-06-02' },
      durationS: 43_200,
      onConflict: 'append',
    });
    expect(tooLong.statusCode).toBe(409);
    expect(problem(tooLong).code).toBe('schedule_conflict');
    expect(problem(tooLong).detail).toContain("past the start of this schedule's next one");
  });

  it('an edit that creates a clash is refused, and the schedule stays as it was', async () => {
    await dailyMorning();
    const other = await created({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-03T07:00' },
      durationS: 600,
    });
    const res = await t.request('PATCH', `/api/v1/schedules/${other}`, {
      token: t.adminToken,
      body: { timing: { once: '2026-06-03T06:05' } },
    });
    expect(res.statusCode).toBe(409);
    expect(res.json<{ conflicts: Clash[] }>().conflicts[0]!.programmeTitle).toBe(MORNING);
    const items = await calendarDay(`deviceId=${deviceA}&from=2026-06-03&to=2026-06-03`);
    expect(items.find((i) => i.scheduleId === other)!.start).toBe('2026-06-03T07:00:00+07:00');
    // Moving its devices away from the morning bulletin removes the clash.
    const moved = await t.request('PATCH', `/api/v1/schedules/${other}`, {
      token: t.adminToken,
      body: { timing: { once: '2026-06-03T06:05' }, targets: { deviceIds: [deviceB] } },
    });
    expect(moved.statusCode, moved.body).toBe(200);
  });

  it('an unresolved overlap (planned before the other existed) shows as a conflict on both sides', async () => {
    const first = await dailyMorning();
    const second = await created({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-03T07:00' },
      durationS: 600,
    });
    // As the daily planning can leave it: the row moved under the morning bulletin, nothing settled.
    t.app.db
      .update(scheduleOccurrences)
      .set({
        startsAt: new Date('2026-06-02T23:10:00Z'),
        endsAt: new Date('2026-06-02T23:20:00Z'),
        dueAt: new Date('2026-06-02T23:10:00Z'),
      })
      .where(eq(scheduleOccurrences.scheduleId, second))
      .run();
    const items = await calendarDay(`areaId=${tree.communeA.id}&from=2026-06-03&to=2026-06-03`);
    const mine = items.find((i) => i.scheduleId === first)!;
    const theirs = items.find((i) => i.scheduleId === second)!;
    expect(mine.conflicts).toEqual([
      {
        scheduleId: second,
        programmeTitle: RABIES,
        start: '2026-06-03T06:10:00+07:00',
        end: '2026-06-03T06:20:00+07:00',
      },
    ]);
    expect(theirs.conflicts.map((c) => [c.scheduleId, c.programmeTitle])).toEqual([[first, MORNING]]);
    // Commune B's calendar holds neither.
    expect(await calendarDay(`areaId=${tree.communeB.id}&from=2026-06-03&to=2026-06-03`)).toEqual([]);
  });

  it('finds the other side of a conflict that starts before the window or after it', async () => {
    const first = await dailyMorning(); // 06:00–06:15 every day
    const second = await created({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-03T07:00' },
      durationS: 600,
    });
    t.app.db
      .update(scheduleOccurrences)
      .set({
        startsAt: new Date('2026-06-02T23:10:00Z'),
        endsAt: new Date('2026-06-02T23:20:00Z'),
        dueAt: new Date('2026-06-02T23:10:00Z'),
      })
      .where(eq(scheduleOccurrences.scheduleId, second))
      .run();
    const names = (items: CalendarItem[]) =>
      items.map((i) => [i.scheduleId, i.conflicts.map((c) => [c.scheduleId, c.start, c.end])]);
    // The morning bulletin began before the window (06:05–06:30) and still airs when the other starts.
    expect(names(await calendarDay(`deviceId=${deviceA}&from=2026-06-03T06:05&to=2026-06-03T06:30`))).toEqual(
      [[second, [[first, '2026-06-03T06:00:00+07:00', '2026-06-03T06:15:00+07:00']]]],
    );
    // The other begins after the window (05:00–06:05) but before the bulletin in it ends.
    expect(names(await calendarDay(`deviceId=${deviceA}&from=2026-06-03T05:00&to=2026-06-03T06:05`))).toEqual(
      [[first, [[second, '2026-06-03T06:10:00+07:00', '2026-06-03T06:20:00+07:00']]]],
    );
  });
});

describe('ScheduleConflicts on its own', () => {
  const slot = (start: string, minutes: number) => {
    const startsAt = new Date(start);
    const endsAt = new Date(startsAt.getTime() + minutes * 60_000);
    return { slotAt: startsAt, startsAt, endsAt, dueAt: startsAt };
  };

  it('ignores slots that ended before now and the schedule itself', async () => {
    const first = await dailyMorning();
    const conflicts = new ScheduleConflicts(t.app.db, t.app.services);
    const clashing = slot('2026-06-02T23:05:00Z', 5);
    const base = { priority: 'normal' as const, deviceIds: new Set([deviceA]), now: clock.now() };
    expect(() => conflicts.check({ ...base, scheduleId: null, slots: [clashing] })).toThrow(/overlap/);
    // The same slots for the morning bulletin itself (an edit): no clash with its own occurrences.
    expect(conflicts.check({ ...base, scheduleId: first, slots: [clashing] }).slots).toEqual([clashing]);
    // Once the slot is over, it is history, not a conflict.
    const later = { ...base, now: new Date('2026-06-03T00:00:00Z') };
    expect(conflicts.check({ ...later, scheduleId: null, slots: [clashing] }).overrides).toEqual([]);
  });

  it('applyStored settles later occurrences both ways as the saved resolutions say', async () => {
    const first = await dailyMorning();
    const overriding = await created({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-03T06:10' },
      durationS: 600,
      onConflict: 'override',
    });
    const conflicts = new ScheduleConflicts(t.app.db, t.app.services);
    const morningRow = t.query(
      `SELECT id FROM schedule_occurrences WHERE schedule_id = '${first}' AND slot_at = ${Date.parse('2026-06-02T23:00:00Z')}`,
    ) as { id: number }[];
    // The overriding schedule plans a slot over a morning occurrence: it wins again.
    const mineOut = conflicts.applyStored({
      scheduleId: overriding,
      priority: 'normal',
      deviceIds: new Set([deviceA]),
      slots: [slot('2026-06-02T23:05:00Z', 5)],
      now: clock.now(),
    });
    expect(mineOut.overrides).toEqual([
      { slotAt: new Date('2026-06-02T23:05:00Z'), occurrenceId: morningRow[0]!.id },
    ]);
    // The morning bulletin plans a slot over the overriding one's occurrence: it gives way.
    const overridingRow = t.query(
      `SELECT id FROM schedule_occurrences WHERE schedule_id = '${overriding}'`,
    ) as { id: number }[];
    const theirsOut = conflicts.applyStored({
      scheduleId: first,
      priority: 'normal',
      deviceIds: new Set([deviceA]),
      slots: [slot('2026-06-02T23:12:00Z', 5)],
      now: clock.now(),
    });
    expect(theirsOut.overriddenBy).toEqual([
      { slotAt: new Date('2026-06-02T23:12:00Z'), byOccurrenceId: overridingRow[0]!.id },
    ]);
    expect(theirsOut.slots).toEqual([slot('2026-06-02T23:12:00Z', 5)]);
  });
});
