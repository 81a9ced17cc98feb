/**
 * The broadcast calendar (GET /api/v1/calendar): the planned occurrences of an area or a device over a few
 * days, with what settles or still troubles each one — an override that makes it give way, an `append` that
 * moved its start, and the unresolved overlaps (conflicts) with other schedules on shared loudspeakers.
 *
 * Which schedules: for an area, those whose targets touch its subtree or an area above it (a district-wide
 * bulletin appears in each commune's calendar); for a device, those that would play on it (the device named,
 * or an area at or above its own). Both read the paths stored in schedule_targets through its path index.
 *
 * Cost (a month of a 2,000-device province with 5,000 schedules must answer in < 200 ms): the page is read
 * in one indexed query, walking the starts_at index when the filter holds a good share of the window's rows
 * and schedule by schedule otherwise (CalendarRepository.plan); conflicts, overrides and appends are computed for the page's items only, from the
 * busy occurrences overlapping the page's time span. Conflicts come from a sweep over them sorted by start,
 * with the occurrences in progress indexed by the area paths and devices of their targets, so each one is
 * compared only with those whose targets can share a device — never all pairs, and no device set resolved.
 */
import { and, asc, count, eq, gt, gte, inArray, lt, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import {
  areas,
  devices,
  occurrenceOverrides,
  programmes,
  scheduleOccurrences,
  scheduleResolutions,
  scheduleTargets,
  schedules,
  type OccurrenceStatus,
  type SchedulePriority,
  type ScheduleTargets,
} from '../../db/schema/index.js';
import { invalid } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { inScope, inScopeOrAbove, inSubtree, type Actor } from '../../lib/scope.js';
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
/** Ids per statement: well under SQLite's limit on bound variables (32,766), few statements per page. */
const IDS_PER_QUERY = 5_000;

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

interface PageRow {
  id: number;
  scheduleId: string;
  slotAt: Date;
  startsAt: Date;
  endsAt: Date;
  status: OccurrenceStatus;
  reason: string | null;
  priority: SchedulePriority;
  pausedAt: Date | null;
  deviceCount: number;
  targets: ScheduleTargets;
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

interface TitledRow extends BusyRow {
  title: string;
}

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

export class CalendarRepository {
  constructor(private readonly db: Db) {}

  /** Ids of the schedules whose targets touch the filter's area or device (stored target paths, indexed). */
  private touchingIds(filter: Exclude<CalendarFilter, { kind: 'all' }>) {
    const st = scheduleTargets;
    let where: SQL;
    if (filter.kind === 'area') {
      const above = pathAndAncestors(filter.path).slice(0, -1);
      where = above.length
        ? sql`(${st.areaId} IS NOT NULL AND ${inArray(st.path, above)}) OR ${inSubtree(st.path, filter.path)}`
        : inSubtree(st.path, filter.path);
    } else {
      where = sql`${st.deviceId} = ${filter.deviceId} OR (${st.areaId} IS NOT NULL AND ${inArray(
        st.path,
        pathAndAncestors(filter.areaPath),
      )})`;
    }
    return this.db.select({ id: st.scheduleId }).from(st).where(where);
  }

  /**
   * Occurrences of the filter's schedules that start in [from, to), read one of two ways (see `plan`):
   * - `bySchedule`: each schedule's rows through the (schedule_id, slot_at) index — an occurrence starts at
   *   most LONGEST_OCCURRENCE_MS after its slot —, then sorted: cheap when the schedules are few;
   * - `walk`: the starts_at index in order, keeping the filter's rows (`+` keeps SQLite off the other
   *   index): with a LIMIT, it stops after a page, cheap when most rows in the window match.
   */
  private inWindow(filter: CalendarFilter, from: Date, to: Date, plan: Plan): SQL | undefined {
    const o = scheduleOccurrences;
    const window = and(gte(o.startsAt, from), lt(o.startsAt, to));
    if (filter.kind === 'all') return window;
    if (plan === 'walk') return and(window, sql`+${o.scheduleId} IN ${this.touchingIds(filter)}`);
    return and(
      inArray(o.scheduleId, this.touchingIds(filter)),
      gte(o.slotAt, new Date(from.getTime() - LONGEST_OCCURRENCE_MS)),
      lt(o.slotAt, to),
      sql`+${o.startsAt} >= ${from.getTime()}`,
      sql`+${o.startsAt} < ${to.getTime()}`,
    );
  }

  /** How many occurrences start in [from, to): the filter's (read by schedule), or all of them (index only). */
  count(filter: CalendarFilter, from: Date, to: Date): number {
    return (
      this.db
        .select({ n: count() })
        .from(scheduleOccurrences)
        .where(this.inWindow(filter, from, to, 'bySchedule'))
        .get()?.n ?? 0
    );
  }

  /**
   * Whether to walk the starts_at index: when the filter's rows are a good share (≥ 1/20) of all rows in the
   * window, a walk meets a page's worth soon; otherwise reading schedule by schedule is cheaper.
   */
  plan(filter: CalendarFilter, from: Date, to: Date, matching: number): Plan {
    if (filter.kind === 'all') return 'walk';
    return matching * 20 >= this.count({ kind: 'all' }, from, to) ? 'walk' : 'bySchedule';
  }

  /** Occurrences starting in [from, to), by start. */
  page(filter: CalendarFilter, from: Date, to: Date, plan: Plan, limit: number, offset: number): PageRow[] {
    return (
      this.db
        .select({
          id: scheduleOccurrences.id,
          scheduleId: scheduleOccurrences.scheduleId,
          slotAt: scheduleOccurrences.slotAt,
          startsAt: scheduleOccurrences.startsAt,
          endsAt: scheduleOccurrences.endsAt,
          status: scheduleOccurrences.status,
          reason: scheduleOccurrences.reason,
          priority: schedules.priority,
          pausedAt: schedules.pausedAt,
          deviceCount: schedules.deviceCount,
          targets: schedules.targets,
          programmeId: schedules.programmeId,
          title: programmes.title,
          kind: programmes.kind,
        })
        .from(scheduleOccurrences)
        .innerJoin(schedules, eq(schedules.id, scheduleOccurrences.scheduleId))
        // Programmes are only ever soft-deleted: the row is always there.
        .innerJoin(programmes, eq(programmes.id, schedules.programmeId))
        .where(this.inWindow(filter, from, to, plan))
        .orderBy(asc(scheduleOccurrences.startsAt), asc(scheduleOccurrences.id))
        .limit(limit)
        .offset(offset)
        .all()
    );
  }

  /** Busy occurrences (planned or sent) of the filter's schedules that overlap [from, to), by start. */
  busy(filter: CalendarFilter, from: Date, to: Date, plan: Plan): BusyRow[] {
    return this.db
      .select({
        id: scheduleOccurrences.id,
        scheduleId: scheduleOccurrences.scheduleId,
        priority: schedules.priority,
        startsAt: scheduleOccurrences.startsAt,
        endsAt: scheduleOccurrences.endsAt,
      })
      .from(scheduleOccurrences)
      .innerJoin(schedules, eq(schedules.id, scheduleOccurrences.scheduleId))
      .where(
        and(
          this.inWindow(filter, new Date(from.getTime() - LONGEST_OCCURRENCE_MS), to, plan),
          gt(scheduleOccurrences.endsAt, from),
          sql`+${scheduleOccurrences.status} IN ('planned', 'dispatched')`,
        ),
      )
      .orderBy(asc(scheduleOccurrences.startsAt), asc(scheduleOccurrences.id))
      .all();
  }

  /** Override rows that name any of these occurrences as the one giving way. */
  overrides(occurrenceIds: readonly number[]): { occurrenceId: number; byOccurrenceId: number }[] {
    const out: { occurrenceId: number; byOccurrenceId: number }[] = [];
    for (const batch of chunks(occurrenceIds, IDS_PER_QUERY)) {
      out.push(
        ...this.db
          .select()
          .from(occurrenceOverrides)
          .where(inArray(occurrenceOverrides.occurrenceId, batch))
          .all(),
      );
    }
    return out;
  }

  /** Occurrences by id with their schedule's programme title. */
  occurrences(ids: readonly number[]): Map<number, TitledRow> {
    const out = new Map<number, TitledRow>();
    for (const batch of chunks(ids, IDS_PER_QUERY)) {
      const rows = this.db
        .select({
          id: scheduleOccurrences.id,
          scheduleId: scheduleOccurrences.scheduleId,
          priority: schedules.priority,
          startsAt: scheduleOccurrences.startsAt,
          endsAt: scheduleOccurrences.endsAt,
          title: programmes.title,
        })
        .from(scheduleOccurrences)
        .innerJoin(schedules, eq(schedules.id, scheduleOccurrences.scheduleId))
        .innerJoin(programmes, eq(programmes.id, schedules.programmeId))
        .where(inArray(scheduleOccurrences.id, batch))
        .all();
      for (const r of rows) out.set(r.id, r);
    }
    return out;
  }

  /** Schedule → the schedules it chose to start after (`append`). */
  appendPartners(scheduleIds: readonly string[]): Map<string, string[]> {
    const out = new Map<string, string[]>();
    const rows = this.db
      .select({ scheduleId: scheduleResolutions.scheduleId, other: scheduleResolutions.otherScheduleId })
      .from(scheduleResolutions)
      .where(
        and(
          inArray(scheduleResolutions.scheduleId, [...scheduleIds]),
          eq(scheduleResolutions.resolution, 'append'),
        ),
      )
      .all();
    for (const r of rows) out.set(r.scheduleId, [...(out.get(r.scheduleId) ?? []), r.other]);
    return out;
  }

  /** Occurrences of these schedules that end at one of these instants (read by schedule: few rows each). */
  endingAt(scheduleIds: readonly string[], instants: readonly Date[]): TitledRow[] {
    return this.db
      .select({
        id: scheduleOccurrences.id,
        scheduleId: scheduleOccurrences.scheduleId,
        priority: schedules.priority,
        startsAt: scheduleOccurrences.startsAt,
        endsAt: scheduleOccurrences.endsAt,
        title: programmes.title,
      })
      .from(scheduleOccurrences)
      .innerJoin(schedules, eq(schedules.id, scheduleOccurrences.scheduleId))
      .innerJoin(programmes, eq(programmes.id, schedules.programmeId))
      .where(
        and(
          inArray(scheduleOccurrences.scheduleId, [...scheduleIds]),
          inArray(scheduleOccurrences.endsAt, [...instants]),
        ),
      )
      .all();
  }

  /** The title of the programme each schedule airs. */
  titles(scheduleIds: readonly string[]): Map<string, string> {
    const out = new Map<string, string>();
    for (const batch of chunks(scheduleIds, IDS_PER_QUERY)) {
      const rows = this.db
        .select({ id: schedules.id, title: programmes.title })
        .from(schedules)
        .innerJoin(programmes, eq(programmes.id, schedules.programmeId))
        .where(inArray(schedules.id, batch))
        .all();
      for (const r of rows) out.set(r.id, r.title);
    }
    return out;
  }

  /**
   * Targets of these schedules with their stored paths — the paths the calendar's filter reads too, so
   * that what a calendar holds and what it calls a conflict agree (they move with a schedule's next save).
   */
  targets(scheduleIds: readonly string[]): TargetRow[] {
    const out: TargetRow[] = [];
    for (const batch of chunks(scheduleIds, IDS_PER_QUERY)) {
      const rows = this.db
        .select()
        .from(scheduleTargets)
        .where(inArray(scheduleTargets.scheduleId, batch))
        .all();
      for (const r of rows) {
        out.push({
          scheduleId: r.scheduleId,
          areaId: r.areaId,
          deviceId: r.deviceId,
          storedPath: r.path,
          areaPath: r.areaId === null ? null : r.path,
          devicePath: r.deviceId === null ? null : r.path,
        });
      }
    }
    return out;
  }

  /** Every area path that holds a device, or has one below it. */
  pathsWithDevices(): Set<string> {
    const out = new Set<string>();
    const rows = this.db
      .selectDistinct({ path: areas.path })
      .from(devices)
      .innerJoin(areas, eq(areas.id, devices.areaId))
      .all();
    for (const r of rows) for (const p of pathAndAncestors(r.path)) out.add(p);
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
      if (a[parent]!.endsAt <= a[i]!.endsAt) break;
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
        if (l < a.length && a[l]!.endsAt < a[m]!.endsAt) m = l;
        if (r < a.length && a[r]!.endsAt < a[m]!.endsAt) m = r;
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
  /** Its target areas and target devices' areas, and every area above them. */
  under: readonly string[];
  devices: readonly string[];
  /** Target areas and those above them, target devices' areas and those above: what `candidates` reads. */
  lookupAreaAt: readonly string[];
}

function keysOf(fp: Footprint): Keys {
  const under = new Set<string>();
  const lookupAreaAt = new Set<string>();
  for (const p of fp.areaPaths) for (const q of pathAndAncestors(p)) under.add(q);
  for (const p of fp.devices.values()) for (const q of pathAndAncestors(p)) under.add(q);
  for (const p of [...fp.areaPaths, ...fp.devices.values()])
    for (const q of pathAndAncestors(p)) lookupAreaAt.add(q);
  return {
    areaAt: fp.areaPaths,
    under: [...under],
    devices: [...fp.devices.keys()],
    lookupAreaAt: [...lookupAreaAt],
  };
}

/** The occurrences in progress of one priority, indexed by where their targets lie. */
class ActiveIndex {
  /** Area path → occurrences with an area target exactly there. */
  private readonly areaAt = new Map<string, Set<BusyRow>>();
  /** Area path → occurrences with any target (area or device's area) at or below it. */
  private readonly under = new Map<string, Set<BusyRow>>();
  private readonly device = new Map<string, Set<BusyRow>>();

  add(row: BusyRow, k: Keys): void {
    const put = (map: Map<string, Set<BusyRow>>, key: string) => {
      let set = map.get(key);
      if (!set) map.set(key, (set = new Set()));
      set.add(row);
    };
    for (const p of k.areaAt) put(this.areaAt, p);
    for (const p of k.under) put(this.under, p);
    for (const d of k.devices) put(this.device, d);
  }

  remove(row: BusyRow, k: Keys): void {
    const drop = (map: Map<string, Set<BusyRow>>, key: string) => {
      const set = map.get(key);
      set?.delete(row);
      if (set?.size === 0) map.delete(key);
    };
    for (const p of k.areaAt) drop(this.areaAt, p);
    for (const p of k.under) drop(this.under, p);
    for (const d of k.devices) drop(this.device, d);
  }

  /**
   * Occurrences in progress whose targets may share a device with those keys (confirmed by `shares`): an
   * area target at or above one of its targets, anything below one of its target areas, a device in common.
   */
  candidates(k: Keys): Set<BusyRow> {
    const out = new Set<BusyRow>();
    const take = (set: Set<BusyRow> | undefined) => set?.forEach((r) => out.add(r));
    for (const q of k.lookupAreaAt) take(this.areaAt.get(q));
    for (const p of k.areaAt) take(this.under.get(p));
    for (const d of k.devices) take(this.device.get(d));
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
  const empty: Footprint = { areaPaths: [], devices: new Map() };
  const fpOf = (id: string) => footprintOf(id) ?? empty;
  const keys = new Map<string, Keys>();
  const keysFor = (id: string) => {
    let k = keys.get(id);
    if (!k) keys.set(id, (k = keysOf(fpOf(id))));
    return k;
  };
  const sharing = new Map<string, boolean>();
  const heap = new EndHeap();
  // Only pairs with a wanted row matter: a wanted row is compared with every row in progress, any other
  // row only with the wanted ones in progress.
  const all = { normal: new ActiveIndex(), priority: new ActiveIndex() };
  const mine = { normal: new ActiveIndex(), priority: new ActiveIndex() };

  for (const row of rows) {
    while (heap.size > 0 && heap.peek()!.endsAt <= row.startsAt) {
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

/**
 * localDateTime() for many instants: Intl's formatting costs ~10 µs a call, which is most of a 5,000-item
 * page (three times per item). The zone's offset is read through localDateTime() once per hour of the
 * instants (offsets change on the hour, and Asia/Ho_Chi_Minh's never does), and the wall time is then plain
 * UTC arithmetic on the instant plus that offset.
 */
function localTimes(): (date: Date) => string {
  const offsets = new Map<number, { ms: number; text: string }>();
  const p2 = (n: number) => String(n).padStart(2, '0');
  return (date) => {
    const hour = Math.floor(date.getTime() / HOUR_MS);
    let offset = offsets.get(hour);
    if (!offset) {
      const text = localDateTime(new Date(hour * HOUR_MS)).slice(19);
      const sign = text.startsWith('-') ? -1 : 1;
      const ms = sign * (Number(text.slice(1, 3)) * HOUR_MS + Number(text.slice(4, 6)) * 60_000);
      offsets.set(hour, (offset = { ms, text }));
    }
    const w = new Date(date.getTime() + offset.ms);
    return (
      `${String(w.getUTCFullYear()).padStart(4, '0')}-${p2(w.getUTCMonth() + 1)}-${p2(w.getUTCDate())}` +
      `T${p2(w.getUTCHours())}:${p2(w.getUTCMinutes())}:${p2(w.getUTCSeconds())}${offset.text}`
    );
  };
}

const peer = (row: BusyRow, title: string, local: (date: Date) => string): Peer => ({
  scheduleId: row.scheduleId,
  programmeTitle: title,
  start: local(row.startsAt),
  end: local(row.endsAt),
});

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

    const total = this.repo.count(filter, from, to);
    const plan = this.repo.plan(filter, from, to, total);
    const rows =
      total > query.offset ? this.repo.page(filter, from, to, plan, query.limit, query.offset) : [];
    const base = {
      from: localDateTime(from),
      to: localDateTime(to),
      total,
      limit: query.limit,
      offset: query.offset,
    };
    if (rows.length === 0) return { ...base, items: [] };

    // Conflicts among the busy occurrences that overlap the page's span.
    const spanStart = rows[0]!.startsAt;
    let spanEnd = rows[0]!.endsAt;
    for (const r of rows) if (r.endsAt > spanEnd) spanEnd = r.endsAt;
    const busy = this.repo.busy(filter, spanStart, spanEnd, plan);
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
    const untitled = [...conflicts.values()].flat().filter((o) => !titles.has(o.scheduleId));
    for (const [id, title] of this.repo.titles([...new Set(untitled.map((o) => o.scheduleId))])) {
      titles.set(id, title);
    }
    const appendedAfter = this.appendedAfter(rows.filter((r) => r.startsAt.getTime() !== r.slotAt.getTime()));
    const visibleTargets = this.visibleTargets(actor, targetRows);

    const local = localTimes();
    const items = rows.map((r): CalendarItem => {
      const status: CalendarStatus = r.status === 'planned' && r.pausedAt !== null ? 'paused' : r.status;
      const after = appendedAfter.get(r.id);
      return {
        occurrenceId: r.id,
        scheduleId: r.scheduleId,
        start: local(r.startsAt),
        end: local(r.endsAt),
        slot: local(r.slotAt),
        status,
        ...(r.reason !== null ? { reason: r.reason } : {}),
        priority: r.priority,
        programme: { id: r.programmeId, title: r.title, kind: r.kind },
        targets: {
          areaIds: (r.targets.areaIds ?? []).filter((id) =>
            visibleTargets.areas.has(`${r.scheduleId} ${id}`),
          ),
          deviceIds: (r.targets.deviceIds ?? []).filter((id) =>
            visibleTargets.devices.has(`${r.scheduleId} ${id}`),
          ),
          deviceCount: r.deviceCount,
        },
        ...(after ? { appendedAfter: { scheduleId: after.scheduleId, programmeTitle: after.title } } : {}),
        overriddenBy: (overriddenBy.get(r.id) ?? []).map((o) => peer(o, o.title, local)),
        conflicts: (conflicts.get(r.id) ?? []).map((o) => peer(o, titles.get(o.scheduleId) ?? '', local)),
      };
    });
    return { ...base, items };
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
    const by = this.repo.occurrences([...new Set(links.map((l) => l.byOccurrenceId))]);
    const out = new Map<number, TitledRow[]>();
    for (const l of links) {
      const row = by.get(l.byOccurrenceId);
      if (row) out.set(l.occurrenceId, [...(out.get(l.occurrenceId) ?? []), row]);
    }
    for (const list of out.values()) list.sort((a, b) => a.startsAt.getTime() - b.startsAt.getTime());
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
    const ending = this.repo.endingAt(
      others,
      [...new Set(shifted.map((r) => r.startsAt.getTime()))].map((t) => new Date(t)),
    );
    for (const r of shifted) {
      const mine = new Set(partners.get(r.scheduleId) ?? []);
      const found = ending.find((o) => mine.has(o.scheduleId) && o.endsAt.getTime() === r.startsAt.getTime());
      if (found) out.set(r.id, found);
    }
    return out;
  }

  /** "schedule target" keys the actor may see: areas in scope or above it, devices in scope. */
  private visibleTargets(actor: Actor, rows: readonly TargetRow[]) {
    const areasSeen = new Set<string>();
    const devicesSeen = new Set<string>();
    for (const t of rows) {
      if (t.areaId !== null && inScopeOrAbove(actor, t.areaPath ?? t.storedPath)) {
        areasSeen.add(`${t.scheduleId} ${t.areaId}`);
      }
      if (t.deviceId !== null && inScope(actor, t.devicePath ?? t.storedPath)) {
        devicesSeen.add(`${t.scheduleId} ${t.deviceId}`);
      }
    }
    return { areas: areasSeen, devices: devicesSeen };
  }
}
