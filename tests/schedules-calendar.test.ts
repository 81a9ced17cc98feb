/**
 * GET /api/v1/calendar: which occurrences an area's or a device's calendar holds, the window (defaults, dates,
 * the 31-day limit), paused schedules, pagination, scope, and the sweep that finds conflicts.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { findConflicts, type BusyRow } from '../src/modules/schedules/calendar.js';
import { calendarPageSchema } from '../src/modules/schedules/calendar.routes.js';
import type { Footprint } from '../src/modules/schedules/conflicts.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { approvedRelay } from './support/programmes.js';

const DISTRICT_NEWS = 'Thời sự huyện Hải Lăng – tiếng nói của Đảng bộ';
const RABIES = 'Thông báo lịch tiêm phòng dại – Thôn Đông';
const FLOOD = 'Hướng dẫn phòng chống lũ – Xã Hải Thượng';

interface CalendarPage {
  from: string;
  to: string;
  total: number;
  limit: number;
  offset: number;
  items: {
    occurrenceId: number;
    scheduleId: string;
    start: string;
    end: string;
    slot: string;
    status: string;
    priority: string;
    programme: { id: string; title: string; kind: string };
    targets: { areaIds: string[]; deviceIds: string[]; deviceCount: number };
    overriddenBy: unknown[];
    conflicts: unknown[];
  }[];
}

let t: TestApp;
let tree: Awaited<ReturnType<typeof createAreaTree>>;
let deviceA: string;
let deviceB: string;
let districtNews: string;
let rabies: string;
let flood: string;

async function created(body: Record<string, unknown>): Promise<string> {
  const res = await t.request('POST', '/api/v1/schedules', { token: t.adminToken, body });
  expect(res.statusCode, res.body).toBe(201);
  return res.json<{ id: string }>().id;
}

async function calendar(query: string, token = t.adminToken): Promise<CalendarPage> {
  const res = await t.request('GET', `/api/v1/calendar?${query}`, { token });
  expect(res.statusCode, res.body).toBe(200);
  const body = res.json<CalendarPage>();
  // The route writes the service's page as it is (no zod pass at run time): it must already be exactly
  // what its response schema describes — nothing missing, nothing more, in the schema's key order.
  expect(calendarPageSchema.parse(body)).toStrictEqual(body);
  expect(Object.keys(body)).toEqual(Object.keys(calendarPageSchema.shape));
  return body;
}

beforeEach(async () => {
  // 2026-06-01 08:00 in Vietnam.
  t = await createTestApp({ clock: new ManualClock('2026-06-01T01:00:00.000Z') });
  tree = await createAreaTree(t);
  deviceA = (await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông')).id;
  deviceB = (await t.createDevice(tree.hamletB.id, 'Cụm loa thôn Tây')).id;
  const editor = await t.createUser('broadcaster', tree.district.id);
  const programme = (title: string) => approvedRelay(t, editor, tree.district.id, { title });
  districtNews = (await programme(DISTRICT_NEWS)).id;
  rabies = (await programme(RABIES)).id;
  flood = (await programme(FLOOD)).id;
});

afterEach(async () => {
  await t.close();
});

describe('which occurrences a calendar holds', () => {
  let news: string;
  let hamlet: string;
  let other: string;

  beforeEach(async () => {
    // The district's news at 17:00 every day on the whole district.
    news = await created({
      programmeId: districtNews,
      targets: { areaIds: [tree.district.id] },
      timing: { daily: { times: ['17:00'] }, from: '2026-06-01' },
      durationS: 1800,
    });
    // A hamlet announcement on its loudspeaker, twice.
    hamlet = await created({
      programmeId: rabies,
      targets: { deviceIds: [deviceA] },
      timing: { once: '2026-06-02T06:30', repeat: { count: 2, intervalS: 3600 } },
      durationS: 300,
    });
    other = await created({
      programmeId: flood,
      targets: { areaIds: [tree.communeB.id] },
      timing: { once: '2026-06-02T07:00' },
      durationS: 600,
    });
  });

  it("a commune's calendar shows the district's schedule and its own, not its neighbour's", async () => {
    const page = await calendar(`areaId=${tree.communeA.id}&from=2026-06-02&to=2026-06-02`);
    expect(page.from).toBe('2026-06-02T00:00:00+07:00');
    expect(page.to).toBe('2026-06-03T00:00:00+07:00');
    expect(page.items.map((i) => [i.scheduleId, i.start, i.end, i.slot])).toEqual([
      [hamlet, '2026-06-02T06:30:00+07:00', '2026-06-02T06:35:00+07:00', '2026-06-02T06:30:00+07:00'],
      // A repeat is an occurrence of its own (slot = its own start).
      [hamlet, '2026-06-02T07:30:00+07:00', '2026-06-02T07:35:00+07:00', '2026-06-02T07:30:00+07:00'],
      [news, '2026-06-02T17:00:00+07:00', '2026-06-02T17:30:00+07:00', '2026-06-02T17:00:00+07:00'],
    ]);
    const first = page.items[0]!;
    expect(first.programme).toEqual({ id: rabies, title: RABIES, kind: 'relay' });
    expect(first.status).toBe('planned');
    expect(first.priority).toBe('normal');
    expect(first.targets).toEqual({ areaIds: [], deviceIds: [deviceA], deviceCount: 1 });
    expect(page.items[2]!.programme.title).toBe(DISTRICT_NEWS);
    expect(page.items[2]!.targets).toEqual({ areaIds: [tree.district.id], deviceIds: [], deviceCount: 2 });
    expect(page.total).toBe(3);

    const neighbour = await calendar(`areaId=${tree.communeB.id}&from=2026-06-02&to=2026-06-02`);
    expect(neighbour.items.map((i) => [i.scheduleId, i.programme.title])).toEqual([
      [other, FLOOD],
      [news, DISTRICT_NEWS],
    ]);
  });

  it("a device's calendar shows what would play on it", async () => {
    const a = await calendar(`deviceId=${deviceA}&from=2026-06-02&to=2026-06-02`);
    expect(a.items.map((i) => i.scheduleId)).toEqual([hamlet, hamlet, news]);
    const b = await calendar(`deviceId=${deviceB}&from=2026-06-02&to=2026-06-02`);
    expect(b.items.map((i) => i.scheduleId)).toEqual([other, news]);
  });

  it('defaults to 7 days from today, local time; a date-time bound is exact', async () => {
    const page = await calendar(`areaId=${tree.district.id}`);
    expect(page.from).toBe('2026-06-01T00:00:00+07:00');
    expect(page.to).toBe('2026-06-08T00:00:00+07:00');
    expect(page.items.filter((i) => i.scheduleId === news)).toHaveLength(7);

    const narrow = await calendar(
      `areaId=${tree.district.id}&from=2026-06-02T06:30&to=2026-06-02T07:00:00%2B07:00`,
    );
    expect(narrow.items.map((i) => i.start)).toEqual(['2026-06-02T06:30:00+07:00']);
  });

  it('paginates by start, with the total', async () => {
    const query = `areaId=${tree.district.id}&from=2026-06-01&to=2026-06-30`;
    const all = await calendar(query);
    expect(all.total).toBe(30 + 2 + 1);
    const page = await calendar(`${query}&limit=2&offset=2`);
    expect(page.total).toBe(all.total);
    expect(page.items.map((i) => i.occurrenceId)).toEqual(all.items.slice(2, 4).map((i) => i.occurrenceId));
    const starts = all.items.map((i) => i.start);
    expect([...starts].sort()).toEqual(starts);
    const beyond = await calendar(`${query}&offset=100`);
    expect(beyond).toMatchObject({ items: [], total: all.total });
  });

  it("shows a paused schedule's planned occurrences as paused", async () => {
    const res = await t.request('POST', `/api/v1/schedules/${news}/pause`, { token: t.adminToken });
    expect(res.statusCode, res.body).toBe(200);
    const page = await calendar(`areaId=${tree.communeA.id}&from=2026-06-02&to=2026-06-02`);
    expect(page.items.map((i) => [i.scheduleId, i.status])).toEqual([
      [hamlet, 'planned'],
      [hamlet, 'planned'],
      [news, 'paused'],
    ]);
  });

  it('admins without areaId see everything; others see their own area', async () => {
    const all = await calendar('from=2026-06-02&to=2026-06-02');
    expect(new Set(all.items.map((i) => i.scheduleId))).toEqual(new Set([news, hamlet, other]));
    const communeUser = await t.createUser('broadcaster', tree.communeB.id);
    const mine = await calendar('from=2026-06-02&to=2026-06-02', communeUser);
    expect(mine.items.map((i) => i.scheduleId)).toEqual([other, news]);
  });

  it('shows a commune user only the targets in or above their area', async () => {
    const both = await created({
      programmeId: rabies,
      targets: { deviceIds: [deviceA, deviceB] },
      timing: { once: '2026-06-02T09:00' },
      durationS: 300,
    });
    const communeUser = await t.createUser('broadcaster', tree.communeB.id);
    const page = await calendar('from=2026-06-02&to=2026-06-02', communeUser);
    const item = page.items.find((i) => i.scheduleId === both)!;
    expect(item.targets).toEqual({ areaIds: [], deviceIds: [deviceB], deviceCount: 2 });
    expect(page.items.find((i) => i.scheduleId === news)!.targets.areaIds).toEqual([tree.district.id]);
  });
});

describe('calendar requests that are refused', () => {
  it('more than 31 days: 400 naming query.to', async () => {
    const res = await t.request(
      'GET',
      `/api/v1/calendar?areaId=${tree.district.id}&from=2026-06-01&to=2026-07-02`,
      {
        token: t.adminToken,
      },
    );
    expect(res.statusCode).toBe(400);
    const errors = problem(res).errors ?? [];
    expect(errors.map((e) => e.field)).toEqual(['query.to']);
    expect(errors[0]!.message).toContain('31 days');
    // A whole 31-day month is fine.
    await calendar(`areaId=${tree.district.id}&from=2026-07-01&to=2026-07-31`);
  });

  it('a bound that is not a date, a window that ends before it starts, both areaId and deviceId: 400', async () => {
    for (const [query, field] of [
      ['from=tomorrow', 'query.from'],
      ['from=2026-02-30', 'query.from'],
      ['from=2026-06-05&to=2026-06-04T12:00', 'query.to'],
      [`areaId=${tree.district.id}&deviceId=${deviceA}`, 'query.deviceId'],
      ['limit=5001', 'query.limit'],
    ] as const) {
      const res = await t.request('GET', `/api/v1/calendar?${query}`, { token: t.adminToken });
      expect(res.statusCode, query).toBe(400);
      expect(problem(res).errors?.[0]?.field, query).toBe(field);
    }
  });

  it('an area or device outside your area is not found; no token is 401', async () => {
    const communeUser = await t.createUser('broadcaster', tree.communeB.id);
    for (const query of [`areaId=${tree.communeA.id}`, `deviceId=${deviceA}`, 'areaId=ar_nothing']) {
      const res = await t.request('GET', `/api/v1/calendar?${query}`, { token: communeUser });
      expect(res.statusCode, query).toBe(404);
      expect(problem(res).code).toBe('not_found');
    }
    expect((await t.request('GET', '/api/v1/calendar')).statusCode).toBe(401);
  });
});

describe('findConflicts', () => {
  const at = (minute: number) => new Date(Date.UTC(2026, 5, 2, 0, minute));
  let nextId = 1;
  const row = (
    scheduleId: string,
    from: number,
    to: number,
    priority: 'normal' | 'priority' = 'normal',
  ): BusyRow => ({
    id: nextId++,
    scheduleId,
    priority,
    startsAt: at(from),
    endsAt: at(to),
  });
  const fp = (areaPaths: string[], devices: [string, string][] = []): Footprint => ({
    areaPaths,
    devices: new Map(devices),
  });

  it('pairs overlapping occurrences that share a device, at the same priority, unless resolved', () => {
    const footprints = new Map<string, Footprint>([
      ['district', fp(['/p/d/'])],
      ['hamlet', fp(['/p/d/c/h/'])],
      ['empty-hamlet', fp(['/p/d/c/e/'])],
      ['device', fp([], [['dev1', '/p/d/c/h/']])],
      ['elsewhere', fp(['/p/x/'])],
    ]);
    const withDevices = new Set(['/p/', '/p/d/', '/p/d/c/', '/p/d/c/h/', '/p/x/']);
    const district = row('district', 0, 30);
    const hamlet = row('hamlet', 10, 20);
    const emptyHamlet = row('empty-hamlet', 10, 20);
    const device = row('device', 15, 25);
    const urgent = row('device', 0, 5, 'priority');
    const elsewhere = row('elsewhere', 0, 30);
    const later = row('hamlet', 30, 40);
    const rows = [district, urgent, elsewhere, hamlet, emptyHamlet, device, later].sort(
      (a, b) => a.startsAt.getTime() - b.startsAt.getTime(),
    );
    const wanted = new Set(rows.map((r) => r.id));
    const found = findConflicts(
      rows,
      (id) => footprints.get(id),
      new Set(),
      (p) => withDevices.has(p),
      wanted,
    );
    const names = (r: BusyRow) => (found.get(r.id) ?? []).map((o) => o.scheduleId);
    expect(names(district)).toEqual(['hamlet', 'device']);
    expect(names(hamlet)).toEqual(['district', 'device']);
    // An area without devices shares nothing; another province, another priority, back to back: no conflict.
    expect(names(emptyHamlet)).toEqual([]);
    expect(names(elsewhere)).toEqual([]);
    expect(names(urgent)).toEqual([]);
    expect(names(later)).toEqual([]);

    // An override between two occurrences settles that pair only.
    const resolved = new Set([`${Math.min(district.id, hamlet.id)}:${Math.max(district.id, hamlet.id)}`]);
    const settled = findConflicts(
      rows,
      (id) => footprints.get(id),
      resolved,
      (p) => withDevices.has(p),
      wanted,
    );
    expect((settled.get(district.id) ?? []).map((o) => o.scheduleId)).toEqual(['device']);
  });
});
