/**
 * The broadcast calendar (GET /api/v1/calendar): the planned occurrences of an area or a device over a few
 * days, with what settles or still troubles each one — an override that makes it give way, an `append` that
 * moved its start, and the unresolved overlaps (conflicts) with other schedules on shared loudspeakers.
 *
 * Which schedules: for an area, those whose targets touch its subtree or an area above it (a district-wide
 * bulletin appears in each commune's calendar); for a device, those that would play on it (the device named,
 * or an area at or above its own). Both read the paths stored in schedule_targets through its path index.
 *
 * Cost (a month of a 2,000-device province with 5,000 schedules must answer in < 200 ms, with the server
 * busy): the page is read in one indexed query, walking the starts_at index when the filter holds a good
 * share of the window's rows and schedule by schedule otherwise (CalendarRepository.plan); conflicts,
 * overrides and appends are computed for the page's items only, from the busy occurrences overlapping the
 * page's time span — taken from the page itself when it holds the whole window, so that only the edges
 * before and after it are read again. Conflicts come from a sweep over them sorted by start, with the
 * occurrences in progress indexed by the area paths and devices of their targets, so each one is compared
 * only with those whose targets can share a device — never all pairs, and no device set resolved.
 *
 * The queries are plain SQL on better-sqlite3, prepared once and kept (lists of ids go in as one JSON
 * parameter through json_each): building a drizzle query with 5,000 bound ids and mapping 5,000 rows
 * through it cost more than SQLite's own work. Instants stay epoch milliseconds until they are written.
 */
import type Database from 'better-sqlite3';
import type { Db } from '../../db/index.js';
import type { OccurrenceStatus, SchedulePriority, ScheduleTargets } from '../../db/schema/index.js';
import { invalid } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { inScope, inScopeOrAbove, type Actor } from '../../lib/scope.js';
import type { AreasService } from '../areas/areas.service.js';
import type { DevicesService } from '../devices/devices.service.js';
import { footprints, pathAndAncestors, type Footprint } from './conflicts.js';
import { LONGEST_OCCURRENCE_MS, type TargetRow } from './conflicts.repository.js';
import { localDate, localDateTime, nextOccurrence, onceInstant } from './timing.js';

const DAY_MS = 86_400_000;
/** Longest window one request may ask for. */
export const CALENDAR_MAX_DAYS = 31;
/** Window when `to` is not given. */
export const CALENDAR_DEFAULT_DAYS = 7;
/** Each item lists this many conflicts at most. */
export const MAX_CONFLICTS_PER_ITEM = 50;

export type CalendarStatus = OccurrenceStatus | 'paused';

export interface CalendarQuery {
  areaId?: string | undefined;
  deviceId?: string | undefined;
  /** A local date (YYYY-MM-DD) or date-time (offset optional; without one, Vietnamese wall-clock time). */
  from?: string | undefined;
  to?: string | undefined;
  limit: number;
  offset: number;
}

interface Peer {
  scheduleId: string;
  programmeTitle: string;
  start: string;
  end: string;
}

export interface CalendarItem {
  occurrenceId: number;
  scheduleId: string;
  start: string;
  end: string;
  slot: string;
  status: CalendarStatus;
  reason?: string;
  priority: SchedulePriority;
  programme: { id: string; title: string; kind: 'bulletin' | 'relay' };
  targets: { areaIds: string[]; deviceIds: string[]; deviceCount: number };
  appendedAfter?: { scheduleId: string; programmeTitle: string };
  overriddenBy: Peer[];
  conflicts: Peer[];
}

/** Keys in the order of calendarPageSchema (calendar.routes.ts), which writes this object as it is. */
export interface CalendarPage {
  from: string;
  to: string;
  items: CalendarItem[];
  total: number;
  limit: number;
  offset: number;
}

type Plan = 'walk' | 'bySchedule';

/** Whose occurrences: everything (admins), an area's, or a device's. */
type CalendarFilter =
  { kind: 'all' } | { kind: 'area'; path: string } | { kind: 'device'; deviceId: string; areaPath: string };

/** Instants in epoch ms. */
interface PageRow {
  id: number;
  scheduleId: string;
  slotAt: number;
  startsAt: number;
  endsAt: number;
  status: OccurrenceStatus;
  reason: string | null;
  priority: SchedulePriority;
  pausedAt: number | null;
  deviceCount: number;
  /** schedules.targets, as stored (JSON). */
  targets: string;
  programmeId: string;
  title: string;
  kind: 'bulletin' | 'relay';
}

export interface BusyRow {
  id: number;
  scheduleId: string;
  priority: SchedulePriority;
  startsAt: Date;
  endsAt: Date;
}

interface TitledRow {
  id: number;
  scheduleId: string;
  startsAt: number;
  endsAt: number;
  title: string;
}

type Params = Record<string, string | number>;

/** Busy: planned (a paused schedule's too: it may be resumed) or sent. */
const isBusy = (status: OccurrenceStatus) => status === 'planned' || status === 'dispatched';

/**
 * The schedules whose targets touch the filter's area or device, as SQL over schedule_targets (stored
 * paths, path index) with its named parameters.
 */
function touching(filter: Exclude<CalendarFilter, { kind: 'all' }>): { sql: string; params: Params } {
  if (filter.kind === 'area') {
    // inSubtree() (src/lib/scope.ts): the subtree of '/a/b/' is the range ['/a/b/', '/a/b0').
    const subtree = `(path >= @path AND path < @upper)`;
    const params = { path: filter.path, upper: `${filter.path.slice(0, -1)}0` };
    const above = pathAndAncestors(filter.path).slice(0, -1);
    if (above.length === 0)
      return { sql: `SELECT schedule_id FROM schedule_targets WHERE ${subtree}`, params };
    return {
      sql:
        `SELECT schedule_id FROM schedule_targets WHERE ` +
        `(area_id IS NOT NULL AND path IN (SELECT value FROM json_each(@above))) OR ${subtree}`,
      params: { ...params, above: JSON.stringify(above) },
    };
  }
  return {
    sql:
      `SELECT schedule_id FROM schedule_targets WHERE device_id = @deviceId ` +
      `OR (area_id IS NOT NULL AND path IN (SELECT value FROM json_each(@areaPaths)))`,
    params: { deviceId: filter.deviceId, areaPaths: JSON.stringify(pathAndAncestors(filter.areaPath)) },
  };
}

export class CalendarRepository {
  // drizzle keeps its better-sqlite3 connection as $client; the Db type does not spell it out.
  private readonly sqlite: Database.Database;
  /** By SQL text: a handful of shapes (filter kind × plan × query), each prepared once. */
  private readonly statements = new Map<string, Database.Statement>();

  constructor(db: Db) {
    this.sqlite = (db as unknown as { $client: Database.Database }).$client;
  }

  /** `raw`: rows as arrays of the columns; `pluck`: the first column's value. Each text is used one way. */
  private statement(text: string, mode?: 'raw' | 'pluck'): Database.Statement {
    let statement = this.statements.get(text);
    if (!statement) {
      statement = this.sqlite.prepare(text);
      if (mode === 'raw') statement.raw();
      if (mode === 'pluck') statement.pluck();
      this.statements.set(text, statement);
    }
    return statement;
  }

  /**
   * Occurrences (`o`) of the filter's schedules that start in [from, to), read one of two ways (see `plan`):
   * - `bySchedule`: each schedule's rows through the (schedule_id, slot_at) index — an occurrence starts at
   *   most LONGEST_OCCURRENCE_MS after its slot —, then sorted: cheap when the schedules are few;
   * - `walk`: the starts_at index in order, keeping the filter's rows (`+` keeps SQLite off the other
   *   index): with a LIMIT, it stops after a page, cheap when most rows in the window match.
   */
  private inWindow(
    filter: CalendarFilter,
    from: number,
    to: number,
    plan: Plan,
  ): { sql: string; params: Params } {
    const params: Params = { from, to };
    if (filter.kind === 'all') return { sql: `o.starts_at >= @from AND o.starts_at < @to`, params };
    const t = touching(filter);
    Object.assign(params, t.params);
    if (plan === 'walk') {
      return { sql: `o.starts_at >= @from AND o.starts_at < @to AND +o.schedule_id IN (${t.sql})`, params };
    }
    params.slotFrom = from - LONGEST_OCCURRENCE_MS;
    return {
      sql:
        `o.schedule_id IN (${t.sql}) AND o.slot_at >= @slotFrom AND o.slot_at < @to ` +
        `AND +o.starts_at >= @from AND +o.starts_at < @to`,
      params,
    };
  }

  /** How many occurrences start in [from, to): the filter's (read by schedule), or all of them (index only). */
  count(filter: CalendarFilter, from: Date, to: Date): number {
    const w = this.inWindow(filter, from.getTime(), to.getTime(), 'bySchedule');
    return this.statement(`SELECT count(*) FROM schedule_occurrences o WHERE ${w.sql}`, 'pluck').get(
      w.params,
    ) as number;
  }

  /**
   * Whether to walk the starts_at index: when the filter's rows are a good share (≥ 1/20) of all rows in the
   * window (`all`), a walk meets a page's worth soon; otherwise reading schedule by schedule is cheaper.
   */
  plan(filter: CalendarFilter, matching: number, all: number): Plan {
    if (filter.kind === 'all') return 'walk';
    return matching * 20 >= all ? 'walk' : 'bySchedule';
  }

  /**
   * Occurrences starting in [from, to), by start. Rows come as arrays (`raw`): better-sqlite3 builds a row
   * object in C++ property by property, which for a 5,000-row page cost more than the query.
   */
  page(filter: CalendarFilter, from: Date, to: Date, plan: Plan, limit: number, offset: number): PageRow[] {
    const w = this.inWindow(filter, from.getTime(), to.getTime(), plan);
    const rows = this.statement(
      `SELECT o.id, o.schedule_id, o.slot_at, o.starts_at, o.ends_at, o.status, o.reason, s.priority,
              s.paused_at, s.device_count, s.targets, s.programme_id, p.title, p.kind
         FROM schedule_occurrences o
         JOIN schedules s ON s.id = o.schedule_id
         -- Programmes are only ever soft-deleted: the row is always there.
         JOIN programmes p ON p.id = s.programme_id
        WHERE ${w.sql}
        ORDER BY o.starts_at, o.id
        LIMIT @limit OFFSET @offset`,
      'raw',
    ).all({ ...w.params, limit, offset }) as unknown[][];
    return rows.map((r): PageRow => ({
      id: r[0] as number,
      scheduleId: r[1] as string,
      slotAt: r[2] as number,
      startsAt: r[3] as number,
      endsAt: r[4] as number,
      status: r[5] as OccurrenceStatus,
      reason: r[6] as string | null,
      priority: r[7] as SchedulePriority,
      pausedAt: r[8] as number | null,
      deviceCount: r[9] as number,
      targets: r[10] as string,
      programmeId: r[11] as string,
      title: r[12] as string,
      kind: r[13] as PageRow['kind'],
    }));
  }

  /**
   * Busy occurrences (planned or sent) of the filter's schedules that start in [from, to) and end after
   * `endsAfter`, by start.
   */
  busy(filter: CalendarFilter, from: number, to: number, endsAfter: number, plan: Plan): BusyRow[] {
    const w = this.inWindow(filter, from, to, plan);
    const rows = this.statement(
      `SELECT o.id, o.schedule_id, s.priority, o.starts_at, o.ends_at
         FROM schedule_occurrences o
         JOIN schedules s ON s.id = o.schedule_id
        WHERE ${w.sql} AND o.ends_at > @endsAfter AND +o.status IN ('planned', 'dispatched')
        ORDER BY o.starts_at, o.id`,
      'raw',
    ).all({ ...w.params, endsAfter }) as unknown[][];
    return rows.map((r): BusyRow => ({
      id: r[0] as number,
      scheduleId: r[1] as string,
      priority: r[2] as SchedulePriority,
      startsAt: new Date(r[3] as number),
      endsAt: new Date(r[4] as number),
    }));
  }

  /** Override rows that name any of these occurrences as the one giving way. */
  overrides(occurrenceIds: readonly number[]): { occurrenceId: number; byOccurrenceId: number }[] {
    return this.statement(
      `SELECT occurrence_id AS occurrenceId, by_occurrence_id AS byOccurrenceId FROM occurrence_overrides
        WHERE occurrence_id IN (SELECT value FROM json_each(?))`,
    ).all(JSON.stringify(occurrenceIds)) as { occurrenceId: number; byOccurrenceId: number }[];
  }

  /** Occurrences by id with their schedule's programme title. */
  occurrences(ids: readonly number[]): Map<number, TitledRow> {
    const rows = this.statement(
      `SELECT o.id, o.schedule_id AS scheduleId, o.starts_at AS startsAt, o.ends_at AS endsAt, p.title
         FROM schedule_occurrences o
         JOIN schedules s ON s.id = o.schedule_id
         JOIN programmes p ON p.id = s.programme_id
        WHERE o.id IN (SELECT value FROM json_each(?))`,
    ).all(JSON.stringify(ids)) as TitledRow[];
    return new Map(rows.map((r) => [r.id, r]));
  }

  /** Schedule → the schedules it chose to start after (`append`). */
  appendPartners(scheduleIds: readonly string[]): Map<string, string[]> {
    const out = new Map<string, string[]>();
    const rows = this.statement(
      `SELECT schedule_id AS scheduleId, other_schedule_id AS other FROM schedule_resolutions
        WHERE schedule_id IN (SELECT value FROM json_each(?)) AND resolution = 'append'`,
    ).all(JSON.stringify(scheduleIds)) as { scheduleId: string; other: string }[];
    for (const r of rows) out.set(r.scheduleId, [...(out.get(r.scheduleId) ?? []), r.other]);
    return out;
  }

  /** Occurrences of these schedules that end at one of these instants (read by schedule: few rows each). */
  endingAt(scheduleIds: readonly string[], instants: readonly number[]): TitledRow[] {
    return this.statement(
      `SELECT o.id, o.schedule_id AS scheduleId, o.starts_at AS startsAt, o.ends_at AS endsAt, p.title
         FROM schedule_occurrences o
         JOIN schedules s ON s.id = o.schedule_id
         JOIN programmes p ON p.id = s.programme_id
        WHERE o.schedule_id IN (SELECT value FROM json_each(?)) AND o.ends_at IN (SELECT value FROM json_each(?))`,
    ).all(JSON.stringify(scheduleIds), JSON.stringify(instants)) as TitledRow[];
  }

  /** The title of the programme each schedule airs. */
  titles(scheduleIds: readonly string[]): Map<string, string> {
    const rows = this.statement(
      `SELECT s.id, p.title FROM schedules s JOIN programmes p ON p.id = s.programme_id
        WHERE s.id IN (SELECT value FROM json_each(?))`,
    ).all(JSON.stringify(scheduleIds)) as { id: string; title: string }[];
    return new Map(rows.map((r) => [r.id, r.title]));
  }

  /**
   * Targets of these schedules with their stored paths — the paths the calendar's filter reads too, so
   * that what a calendar holds and what it calls a conflict agree (they move with a schedule's next save).
   */
  targets(scheduleIds: readonly string[]): TargetRow[] {
    const rows = this.statement(
      `SELECT schedule_id, area_id, device_id, path FROM schedule_targets
        WHERE schedule_id IN (SELECT value FROM json_each(?))`,
      'raw',
    ).all(JSON.stringify(scheduleIds)) as [string, string | null, string | null, string][];
    return rows.map(([scheduleId, areaId, deviceId, path]): TargetRow => ({
      scheduleId,
      areaId,
      deviceId,
      storedPath: path,
      areaPath: areaId === null ? null : path,
      devicePath: deviceId === null ? null : path,
    }));
  }

  /** Every area path that holds a device, or has one below it. */
  pathsWithDevices(): Set<string> {
    const out = new Set<string>();
    const paths = this.statement(
      `SELECT DISTINCT a.path FROM devices d JOIN areas a ON a.id = d.area_id`,
      'pluck',
    ).all() as string[];
    for (const path of paths) for (const p of pathAndAncestors(path)) out.add(p);
    return out;
  }
}

/** A min-heap of busy rows by end: the occurrences in progress, the first to end on top. */
class EndHeap {
  private readonly items: BusyRow[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): BusyRow | undefined {
    return this.items[0];
  }

  push(row: BusyRow): void {
    const a = this.items;
    a.push(row);
    for (let i = a.length - 1; i > 0;) {
      const parent = (i - 1) >> 1;
      if (a[parent]!.endsAt.getTime() <= a[i]!.endsAt.getTime()) break;
      [a[parent], a[i]] = [a[i]!, a[parent]!];
      i = parent;
    }
  }

  pop(): BusyRow | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last) {
      a[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && a[l]!.endsAt.getTime() < a[m]!.endsAt.getTime()) m = l;
        if (r < a.length && a[r]!.endsAt.getTime() < a[m]!.endsAt.getTime()) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i]!, a[m]!];
        i = m;
      }
    }
    return top;
  }
}

/** Where a footprint's targets lie, as the keys of ActiveIndex; computed once per schedule. */
interface Keys {
  /** Its target areas. */
  areaAt: readonly string[];
  /**
   * Its target areas and target devices' areas, and every area above them — only those that are some
   * occurrence's target area, the only keys ActiveIndex.candidates ever looks up (through `areaAt` of the
   * one asking): the areas under which it lies, and the area targets it lies under.
   */
  near: readonly string[];
  devices: readonly string[];
}

/** `targetAreas`: every target area of the occurrences swept (see Keys.near). */
function keysOf(fp: Footprint, targetAreas: ReadonlySet<string>): Keys {
  const near = new Set<string>();
  if (targetAreas.size > 0) {
    for (const p of fp.areaPaths) for (const q of pathAndAncestors(p)) if (targetAreas.has(q)) near.add(q);
    for (const p of fp.devices.values())
      for (const q of pathAndAncestors(p)) if (targetAreas.has(q)) near.add(q);
  }
  return { areaAt: fp.areaPaths, near: [...near], devices: [...fp.devices.keys()] };
}

function put(map: Map<string, Set<BusyRow>>, key: string, row: BusyRow): void {
  let set = map.get(key);
  if (!set) map.set(key, (set = new Set()));
  set.add(row);
}

function drop(map: Map<string, Set<BusyRow>>, key: string, row: BusyRow): void {
  const set = map.get(key);
  if (!set) return;
  set.delete(row);
  if (set.size === 0) map.delete(key);
}

function take(out: Set<BusyRow>, set: Set<BusyRow> | undefined): void {
  if (set) for (const row of set) out.add(row);
}

/** The occurrences in progress of one priority, indexed by where their targets lie. */
class ActiveIndex {
  /** Area path → occurrences with an area target exactly there. */
  private readonly areaAt = new Map<string, Set<BusyRow>>();
  /** Area path → occurrences with any target (area or device's area) at or below it. */
  private readonly under = new Map<string, Set<BusyRow>>();
  private readonly device = new Map<string, Set<BusyRow>>();

  add(row: BusyRow, k: Keys): void {
    for (const p of k.areaAt) put(this.areaAt, p, row);
    for (const p of k.near) put(this.under, p, row);
    for (const d of k.devices) put(this.device, d, row);
  }

  remove(row: BusyRow, k: Keys): void {
    for (const p of k.areaAt) drop(this.areaAt, p, row);
    for (const p of k.near) drop(this.under, p, row);
    for (const d of k.devices) drop(this.device, d, row);
  }

  /**
   * Occurrences in progress whose targets may share a device with those keys (confirmed by `shares`): an
   * area target at or above one of its targets, anything below one of its target areas, a device in common.
   */
  candidates(k: Keys): Set<BusyRow> {
    const out = new Set<BusyRow>();
    for (const q of k.near) take(out, this.areaAt.get(q));
    for (const p of k.areaAt) take(out, this.under.get(p));
    for (const d of k.devices) take(out, this.device.get(d));
    return out;
  }
}

/** Whether two footprints reach a common device (nested areas: the inner one must hold a device). */
function shares(a: Footprint, b: Footprint, hasDevicesUnder: (path: string) => boolean): boolean {
  for (const pa of a.areaPaths) {
    for (const pb of b.areaPaths) {
      if (pb.startsWith(pa) && hasDevicesUnder(pb)) return true;
      if (pa.startsWith(pb) && hasDevicesUnder(pa)) return true;
    }
    for (const p of b.devices.values()) if (p.startsWith(pa)) return true;
  }
  for (const pb of b.areaPaths) for (const p of a.devices.values()) if (p.startsWith(pb)) return true;
  for (const d of a.devices.keys()) if (b.devices.has(d)) return true;
  return false;
}

const pairKey = (a: number, b: number) => (a < b ? `${a}:${b}` : `${b}:${a}`);

const EMPTY_FOOTPRINT: Footprint = { areaPaths: [], devices: new Map() };

/**
 * Unresolved overlaps, for the occurrences in `wanted`: same priority, different schedules, a device in
 * common, and no override between the two. A sweep over `rows` sorted by start; each row is compared only
 * with the rows in progress whose targets lie on a common path.
 */
export function findConflicts(
  rows: readonly BusyRow[],
  footprintOf: (scheduleId: string) => Footprint | undefined,
  resolved: ReadonlySet<string>,
  hasDevicesUnder: (path: string) => boolean,
  wanted: ReadonlySet<number>,
): Map<number, BusyRow[]> {
  const out = new Map<number, BusyRow[]>();
  const note = (row: BusyRow, other: BusyRow) => {
    if (!wanted.has(row.id)) return;
    const list = out.get(row.id) ?? [];
    if (list.length < MAX_CONFLICTS_PER_ITEM) list.push(other);
    out.set(row.id, list);
  };
  const fpOf = (id: string) => footprintOf(id) ?? EMPTY_FOOTPRINT;
  const targetAreas = new Set<string>();
  for (const id of new Set(rows.map((r) => r.scheduleId)))
    for (const p of fpOf(id).areaPaths) targetAreas.add(p);
  const keys = new Map<string, Keys>();
  const keysFor = (id: string) => {
    let k = keys.get(id);
    if (!k) keys.set(id, (k = keysOf(fpOf(id), targetAreas)));
    return k;
  };
  const sharing = new Map<string, boolean>();
  const heap = new EndHeap();
  // Only pairs with a wanted row matter: a wanted row is compared with every row in progress, any other
  // row only with the wanted ones in progress.
  const all = { normal: new ActiveIndex(), priority: new ActiveIndex() };
  const mine = { normal: new ActiveIndex(), priority: new ActiveIndex() };

  for (const row of rows) {
    const start = row.startsAt.getTime();
    while (heap.size > 0 && heap.peek()!.endsAt.getTime() <= start) {
      const done = heap.pop()!;
      const k = keysFor(done.scheduleId);
      all[done.priority].remove(done, k);
      if (wanted.has(done.id)) mine[done.priority].remove(done, k);
    }
    const k = keysFor(row.scheduleId);
    const isWanted = wanted.has(row.id);
    for (const other of (isWanted ? all : mine)[row.priority].candidates(k)) {
      if (other.scheduleId === row.scheduleId || resolved.has(pairKey(row.id, other.id))) continue;
      const key =
        row.scheduleId < other.scheduleId
          ? `${row.scheduleId} ${other.scheduleId}`
          : `${other.scheduleId} ${row.scheduleId}`;
      let shared = sharing.get(key);
      if (shared === undefined) {
        shared = shares(fpOf(row.scheduleId), fpOf(other.scheduleId), hasDevicesUnder);
        sharing.set(key, shared);
      }
      if (!shared) continue;
      note(row, other);
      note(other, row);
    }
    heap.push(row);
    all[row.priority].add(row, k);
    if (isWanted) mine[row.priority].add(row, k);
  }
  for (const list of out.values()) {
    list.sort((a, b) => a.startsAt.getTime() - b.startsAt.getTime() || a.id - b.id);
  }
  return out;
}

const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;

/** The instant a calendar bound names; a date alone is the start of that local day. */
function instantOf(text: string): Date {
  return onceInstant({ once: DATE_ONLY.test(text) ? `${text}T00:00` : text });
}

/** The start of the local day after `date` (YYYY-MM-DD): timing.ts does the calendar arithmetic. */
function startOfNextDay(date: string): Date {
  return nextOccurrence({ daily: { times: ['00:00'] }, from: date }, instantOf(date))!.start;
}

const HOUR_MS = 3_600_000;
const p2 = (n: number) => String(n).padStart(2, '0');

/**
 * localDateTime() for many instants (epoch ms): Intl's formatting costs ~10 µs a call, which is most of a
 * 5,000-item page (three times per item). The zone's offset is read through localDateTime() once per hour
 * of the instants (offsets change on the hour, and Asia/Ho_Chi_Minh's never does), and the wall time is
 * then plain UTC arithmetic on the instant plus that offset. Each instant is written once: slots gather on
 * the same few times (06:00, 17:00), so a page holds far fewer instants than items.
 */
function localTimes(): (ms: number) => string {
  const offsets = new Map<number, { ms: number; text: string }>();
  const written = new Map<number, string>();
  return (ms) => {
    let text = written.get(ms);
    if (text !== undefined) return text;
    const hour = Math.floor(ms / HOUR_MS);
    let offset = offsets.get(hour);
    if (!offset) {
      const suffix = localDateTime(new Date(hour * HOUR_MS)).slice(19);
      const sign = suffix.startsWith('-') ? -1 : 1;
      const offsetMs = sign * (Number(suffix.slice(1, 3)) * HOUR_MS + Number(suffix.slice(4, 6)) * 60_000);
      offsets.set(hour, (offset = { ms: offsetMs, text: suffix }));
    }
    const w = new Date(ms + offset.ms);
    text =
      `${String(w.getUTCFullYear()).padStart(4, '0')}-${p2(w.getUTCMonth() + 1)}-${p2(w.getUTCDate())}` +
      `T${p2(w.getUTCHours())}:${p2(w.getUTCMinutes())}:${p2(w.getUTCSeconds())}${offset.text}`;
    written.set(ms, text);
    return text;
  };
}

/** What every item of one schedule shares: one object each, however many of its occurrences the page holds. */
interface ScheduleParts {
  programme: CalendarItem['programme'];
  targets: CalendarItem['targets'];
}

export class CalendarService {
  private readonly repo: CalendarRepository;

  constructor(
    db: Db,
    private readonly deps: { areas: AreasService; devices: DevicesService },
    private readonly clock: Clock,
  ) {
    this.repo = new CalendarRepository(db);
  }

  list(actor: Actor, query: CalendarQuery): CalendarPage {
    if (query.areaId !== undefined && query.deviceId !== undefined) {
      throw invalid('query.deviceId', 'give areaId or deviceId, not both');
    }
    const { from, to } = this.window(query);
    const filter = this.filter(actor, query);

    // Every occurrence in the window, whoever's (the starts_at index alone). When they fit in the first
    // page, the filter's do too: the page is the whole window, its length the total, and walking the index
    // reads no more than that page.
    const inWindow = this.repo.count({ kind: 'all' }, from, to);
    const whole = query.offset === 0 && inWindow <= query.limit;
    let total = inWindow;
    let plan: Plan = 'walk';
    if (filter.kind !== 'all' && !whole) {
      total = this.repo.count(filter, from, to);
      plan = this.repo.plan(filter, total, inWindow);
    }
    const rows =
      whole || total > query.offset ? this.repo.page(filter, from, to, plan, query.limit, query.offset) : [];
    if (whole) total = rows.length;
    const page = (items: CalendarItem[]): CalendarPage => ({
      from: localDateTime(from),
      to: localDateTime(to),
      items,
      total,
      limit: query.limit,
      offset: query.offset,
    });
    if (rows.length === 0) return page([]);

    // Conflicts among the busy occurrences that overlap the page's span.
    const spanStart = rows[0]!.startsAt;
    let spanEnd = rows[0]!.endsAt;
    for (const r of rows) if (r.endsAt > spanEnd) spanEnd = r.endsAt;
    const busy = this.busy(
      filter,
      rows,
      whole,
      { from: from.getTime(), to: to.getTime() },
      spanStart,
      spanEnd,
      plan,
    );
    const scheduleIds = [...new Set([...rows.map((r) => r.scheduleId), ...busy.map((b) => b.scheduleId)])];
    const targetRows = this.repo.targets(scheduleIds);
    const fps = footprints(targetRows);
    // One read of the overrides for both uses: pairs settled among the busy rows, and what the page's
    // items give way to.
    const links = this.repo.overrides([...new Set([...busy.map((b) => b.id), ...rows.map((r) => r.id)])]);
    const resolved = new Set(links.map((o) => pairKey(o.occurrenceId, o.byOccurrenceId)));
    let withDevices: Set<string> | undefined;
    const hasDevicesUnder = (path: string) => (withDevices ??= this.repo.pathsWithDevices()).has(path);
    const conflicts = findConflicts(
      busy,
      (id) => fps.get(id),
      resolved,
      hasDevicesUnder,
      new Set(rows.map((r) => r.id)),
    );

    const overriddenBy = this.overriddenBy(links);
    const titles = new Map(rows.map((r) => [r.scheduleId, r.title]));
    const untitled = new Set<string>();
    for (const list of conflicts.values())
      for (const o of list) if (!titles.has(o.scheduleId)) untitled.add(o.scheduleId);
    if (untitled.size > 0) for (const [id, title] of this.repo.titles([...untitled])) titles.set(id, title);
    const appendedAfter = this.appendedAfter(rows.filter((r) => r.startsAt !== r.slotAt));
    const visible = this.visibleTargets(actor, targetRows);

    const local = localTimes();
    // A conflicting occurrence is listed by every item it overlaps: written once.
    const peers = new Map<number, Peer>();
    const conflictPeer = (o: BusyRow): Peer => {
      let p = peers.get(o.id);
      if (!p) {
        p = {
          scheduleId: o.scheduleId,
          programmeTitle: titles.get(o.scheduleId) ?? '',
          start: local(o.startsAt.getTime()),
          end: local(o.endsAt.getTime()),
        };
        peers.set(o.id, p);
      }
      return p;
    };
    const parts = new Map<string, ScheduleParts>();
    const partsOf = (r: PageRow): ScheduleParts => {
      let p = parts.get(r.scheduleId);
      if (!p) {
        const targets = JSON.parse(r.targets) as ScheduleTargets;
        const seen = visible.get(r.scheduleId);
        p = {
          programme: { id: r.programmeId, title: r.title, kind: r.kind },
          targets: {
            areaIds: (targets.areaIds ?? []).filter((id) => seen?.areas.has(id) ?? false),
            deviceIds: (targets.deviceIds ?? []).filter((id) => seen?.devices.has(id) ?? false),
            deviceCount: r.deviceCount,
          },
        };
        parts.set(r.scheduleId, p);
      }
      return p;
    };
    const items = rows.map((r): CalendarItem => {
      const status: CalendarStatus = r.status === 'planned' && r.pausedAt !== null ? 'paused' : r.status;
      const after = appendedAfter.get(r.id);
      const { programme, targets } = partsOf(r);
      // One shape for every item (no spreads): an absent `reason` or `appendedAfter` is undefined, which
      // JSON.stringify leaves out, as the schema's optional members are.
      return {
        occurrenceId: r.id,
        scheduleId: r.scheduleId,
        start: local(r.startsAt),
        end: local(r.endsAt),
        slot: local(r.slotAt),
        status,
        reason: r.reason ?? undefined,
        priority: r.priority,
        programme,
        targets,
        appendedAfter: after ? { scheduleId: after.scheduleId, programmeTitle: after.title } : undefined,
        overriddenBy: (overriddenBy.get(r.id) ?? []).map((o) => ({
          scheduleId: o.scheduleId,
          programmeTitle: o.title,
          start: local(o.startsAt),
          end: local(o.endsAt),
        })),
        conflicts: (conflicts.get(r.id) ?? []).map(conflictPeer),
      };
    });
    return page(items);
  }

  /**
   * Busy occurrences of the filter's schedules overlapping [spanStart, spanEnd), by start. When the page is
   * the whole window, those starting inside it are the page's own busy rows (it holds them all, and none
   * starts before spanStart): only the edges are read — from LONGEST_OCCURRENCE_MS before spanStart to the
   * window's start, and from its end to spanEnd.
   */
  private busy(
    filter: CalendarFilter,
    rows: readonly PageRow[],
    whole: boolean,
    window: { from: number; to: number },
    spanStart: number,
    spanEnd: number,
    plan: Plan,
  ): BusyRow[] {
    const earliest = spanStart - LONGEST_OCCURRENCE_MS;
    if (!whole) return this.repo.busy(filter, earliest, spanEnd, spanStart, plan);
    const inside: BusyRow[] = [];
    for (const r of rows) {
      if (isBusy(r.status) && r.endsAt > spanStart) {
        inside.push({
          id: r.id,
          scheduleId: r.scheduleId,
          priority: r.priority,
          startsAt: new Date(r.startsAt),
          endsAt: new Date(r.endsAt),
        });
      }
    }
    return [
      ...this.repo.busy(filter, earliest, window.from, spanStart, plan),
      ...inside,
      ...(spanEnd > window.to ? this.repo.busy(filter, window.to, spanEnd, spanStart, plan) : []),
    ];
  }

  /** [from, to): defaults, dates, the 31-day limit. Vietnam keeps no daylight saving time: a day is 24 h. */
  private window(query: CalendarQuery): { from: Date; to: Date } {
    const from = query.from ? instantOf(query.from) : instantOf(localDate(this.clock.now()));
    // A date as `to` includes that day: from=2026-12-01&to=2026-12-31 is the month of December.
    const to = query.to
      ? DATE_ONLY.test(query.to)
        ? startOfNextDay(query.to)
        : instantOf(query.to)
      : new Date(from.getTime() + CALENDAR_DEFAULT_DAYS * DAY_MS);
    if (!(to > from)) throw invalid('query.to', 'must be after from');
    if (to.getTime() - from.getTime() > CALENDAR_MAX_DAYS * DAY_MS) {
      throw invalid('query.to', `must be at most ${CALENDAR_MAX_DAYS} days after from`);
    }
    return { from, to };
  }

  /** The area or device asked for, if the actor may see it (404 otherwise); else the actor's own area. */
  private filter(actor: Actor, query: CalendarQuery): CalendarFilter {
    if (query.areaId !== undefined) {
      return { kind: 'area', path: this.deps.areas.getVisible(actor, query.areaId).path };
    }
    if (query.deviceId !== undefined) {
      const device = this.deps.devices.getVisible(actor, query.deviceId);
      return { kind: 'device', deviceId: device.id, areaPath: device.areaPath };
    }
    return actor.areaPath === null ? { kind: 'all' } : { kind: 'area', path: actor.areaPath };
  }

  /** Page item → the occurrences it gives way to (links: override rows read for the page's items). */
  private overriddenBy(
    links: readonly { occurrenceId: number; byOccurrenceId: number }[],
  ): Map<number, TitledRow[]> {
    const out = new Map<number, TitledRow[]>();
    if (links.length === 0) return out;
    const by = this.repo.occurrences([...new Set(links.map((l) => l.byOccurrenceId))]);
    for (const l of links) {
      const row = by.get(l.byOccurrenceId);
      if (row) out.set(l.occurrenceId, [...(out.get(l.occurrenceId) ?? []), row]);
    }
    for (const list of out.values()) list.sort((a, b) => a.startsAt - b.startsAt);
    return out;
  }

  /**
   * For occurrences that start later than their slot: the occurrence of a schedule they were appended
   * after (schedule_resolutions says which) that ends exactly when they start.
   */
  private appendedAfter(shifted: readonly PageRow[]): Map<number, TitledRow> {
    const out = new Map<number, TitledRow>();
    if (shifted.length === 0) return out;
    const partners = this.repo.appendPartners([...new Set(shifted.map((r) => r.scheduleId))]);
    const others = [...new Set([...partners.values()].flat())];
    if (others.length === 0) return out;
    const ending = this.repo.endingAt(others, [...new Set(shifted.map((r) => r.startsAt))]);
    for (const r of shifted) {
      const mine = new Set(partners.get(r.scheduleId) ?? []);
      const found = ending.find((o) => mine.has(o.scheduleId) && o.endsAt === r.startsAt);
      if (found) out.set(r.id, found);
    }
    return out;
  }

  /** Schedule → the target areas and devices the actor may see: areas in scope or above it, devices in scope. */
  private visibleTargets(actor: Actor, rows: readonly TargetRow[]) {
    const out = new Map<string, { areas: Set<string>; devices: Set<string> }>();
    for (const t of rows) {
      let seen = out.get(t.scheduleId);
      if (!seen) out.set(t.scheduleId, (seen = { areas: new Set(), devices: new Set() }));
      if (t.areaId !== null && inScopeOrAbove(actor, t.areaPath ?? t.storedPath)) seen.areas.add(t.areaId);
      if (t.deviceId !== null && inScope(actor, t.devicePath ?? t.storedPath)) seen.devices.add(t.deviceId);
    }
    return out;
  }
}
