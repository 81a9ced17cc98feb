/**
 * The queries of the conflicts check (conflicts.ts): which schedules' targets may share devices, and which
 * of their occurrences are busy when. Read-only; they run on the caller's connection, so inside the
 * transaction that saves a schedule they see what it has written so far.
 */
import { and, eq, exists, gt, gte, inArray, isNull, lt, ne, sql, type SQL } from 'drizzle-orm';
import { alias } from 'drizzle-orm/sqlite-core';
import type { Db } from '../../db/index.js';
import {
  areas,
  devices,
  programmes,
  scheduleOccurrences,
  scheduleResolutions,
  scheduleTargets,
  schedules,
  type ConflictResolution,
  type OccurrenceStatus,
  type SchedulePriority,
} from '../../db/schema/index.js';

/**
 * The longest an occurrence can last (files are at most MEDIA_MAX_DURATION_S ≤ 24 h, relays at most 12 h),
 * with room to spare. Overlap queries read the starts_at index from this long before the window, so that an
 * occurrence that began earlier and is still airing is found without scanning all of history.
 */
export const LONGEST_OCCURRENCE_MS = 2 * 86_400_000;

/** Ids per statement: well under SQLite's limit on bound variables. */
const IDS_PER_QUERY = 500;
const TARGET_IDS_PER_QUERY = 5_000;

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

/** One target of a schedule, with the paths it has now (null when the area or device no longer exists). */
export interface TargetRow {
  scheduleId: string;
  areaId: string | null;
  deviceId: string | null;
  /** As stored when the schedule was saved. */
  storedPath: string;
  /** A target area's current path. */
  areaPath: string | null;
  /** A target device's current area path. */
  devicePath: string | null;
}

/**
 * An occurrence that occupies its devices from startsAt to endsAt: planned (a paused schedule's too: it may
 * be resumed) or already sent (status 'planned' or 'dispatched').
 */
export interface BusyOccurrence {
  id: number;
  scheduleId: string;
  status: OccurrenceStatus;
  startsAt: Date;
  endsAt: Date;
  dueAt: Date;
}

export interface StoredResolution {
  scheduleId: string;
  otherScheduleId: string;
  resolution: ConflictResolution;
  createdAt: Date;
}

const deviceArea = alias(areas, 'device_area');

export class ConflictsRepository {
  constructor(private readonly db: Db) {}

  private targets(where: SQL | undefined): TargetRow[] {
    return this.db
      .select({
        scheduleId: scheduleTargets.scheduleId,
        areaId: scheduleTargets.areaId,
        deviceId: scheduleTargets.deviceId,
        storedPath: scheduleTargets.path,
        areaPath: areas.path,
        devicePath: deviceArea.path,
      })
      .from(scheduleTargets)
      .innerJoin(schedules, eq(schedules.id, scheduleTargets.scheduleId))
      .leftJoin(areas, eq(areas.id, scheduleTargets.areaId))
      .leftJoin(devices, eq(devices.id, scheduleTargets.deviceId))
      .leftJoin(deviceArea, eq(deviceArea.id, devices.areaId))
      .where(where)
      .all();
  }

  /**
   * Targets of live schedules (not deleted, this priority, not `exceptId`, optionally only `onlyIds`) that
   * name one of these areas or devices. The caller passes the areas above (and holding) its devices — the
   * segments of their current paths — so a target area matches by what it contains now. schedule_targets is
   * scanned without a join per row that cannot match: a few milliseconds for 10,000 targets.
   */
  touchingTargets(
    priority: SchedulePriority,
    exceptId: string | null,
    areaIds: readonly string[],
    deviceIds: readonly string[],
    onlyIds?: readonly string[],
  ): { scheduleId: string; areaId: string | null; deviceId: string | null }[] {
    // The schedule is checked per matching target (EXISTS on its primary key): as a join, SQLite chose to
    // scan the wider schedules table and probe the targets of each, several times slower at 5,000.
    const live = exists(
      this.db
        .select({ one: sql`1` })
        .from(schedules)
        .where(
          and(
            eq(schedules.id, scheduleTargets.scheduleId),
            eq(schedules.priority, priority),
            isNull(schedules.deletedAt),
            exceptId === null ? undefined : ne(schedules.id, exceptId),
            onlyIds ? inArray(schedules.id, [...onlyIds]) : undefined,
          ),
        ),
    );
    const query = (names: SQL) =>
      this.db
        .select({
          scheduleId: scheduleTargets.scheduleId,
          areaId: scheduleTargets.areaId,
          deviceId: scheduleTargets.deviceId,
        })
        .from(scheduleTargets)
        .where(and(names, live))
        .all();
    const out = new Map<string, { scheduleId: string; areaId: string | null; deviceId: string | null }>();
    const add = (rows: ReturnType<typeof query>) => {
      for (const r of rows) out.set(`${r.scheduleId} ${r.areaId ?? ''} ${r.deviceId ?? ''}`, r);
    };
    for (const batch of chunks(areaIds, TARGET_IDS_PER_QUERY))
      add(query(inArray(scheduleTargets.areaId, batch)));
    for (const batch of chunks(deviceIds, TARGET_IDS_PER_QUERY)) {
      add(query(inArray(scheduleTargets.deviceId, batch)));
    }
    return [...out.values()];
  }

  /** Targets of these schedules, deleted or not. */
  targetsOf(scheduleIds: readonly string[]): TargetRow[] {
    const out: TargetRow[] = [];
    for (const batch of chunks(scheduleIds, IDS_PER_QUERY)) {
      out.push(...this.targets(inArray(scheduleTargets.scheduleId, batch)));
    }
    return out;
  }

  /**
   * Busy occurrences of these schedules that overlap [from, to), sorted by start. Read through the
   * (schedule_id, slot_at) index: an occurrence starts at most LONGEST_OCCURRENCE_MS after its slot (append)
   * and lasts at most as long, so its slot is within 2 × LONGEST_OCCURRENCE_MS before `from`. The unary `+`
   * keeps SQLite off the status and starts_at indexes, which would walk every occurrence of every schedule.
   * `keep` filters each batch as it is read, so a wide window holds in memory only what the caller needs.
   */
  busy(
    scheduleIds: readonly string[],
    from: Date,
    to: Date,
    keep: (o: BusyOccurrence) => boolean = () => true,
  ): BusyOccurrence[] {
    const out: BusyOccurrence[] = [];
    const o = scheduleOccurrences;
    for (const batch of chunks(scheduleIds, IDS_PER_QUERY)) {
      out.push(
        ...this.db
          .select({
            id: o.id,
            scheduleId: o.scheduleId,
            status: o.status,
            startsAt: o.startsAt,
            endsAt: o.endsAt,
            dueAt: o.dueAt,
          })
          .from(o)
          .where(
            and(
              inArray(o.scheduleId, batch),
              gte(o.slotAt, new Date(from.getTime() - 2 * LONGEST_OCCURRENCE_MS)),
              lt(o.slotAt, to),
              sql`+${o.startsAt} < ${to.getTime()}`,
              gt(o.endsAt, from),
              sql`+${o.status} IN ('planned', 'dispatched')`,
            ),
          )
          .all()
          .filter(keep),
      );
    }
    return out.sort((a, b) => a.startsAt.getTime() - b.startsAt.getTime() || a.id - b.id);
  }

  /** The programme each schedule airs, with its title (the latest revision's, as the programmes list shows). */
  programmes(scheduleIds: readonly string[]): Map<string, { programmeId: string; title: string }> {
    const out = new Map<string, { programmeId: string; title: string }>();
    for (const batch of chunks(scheduleIds, IDS_PER_QUERY)) {
      const rows = this.db
        .select({ id: schedules.id, programmeId: schedules.programmeId, title: programmes.title })
        .from(schedules)
        .leftJoin(programmes, eq(programmes.id, schedules.programmeId))
        .where(inArray(schedules.id, batch))
        .all();
      for (const r of rows) out.set(r.id, { programmeId: r.programmeId, title: r.title ?? '' });
    }
    return out;
  }

  /** Resolutions this schedule stored against others, and those others stored against it. */
  resolutionsInvolving(scheduleId: string): StoredResolution[] {
    return this.db
      .select()
      .from(scheduleResolutions)
      .where(
        sql`${scheduleResolutions.scheduleId} = ${scheduleId} OR ${scheduleResolutions.otherScheduleId} = ${scheduleId}`,
      )
      .all();
  }
}
