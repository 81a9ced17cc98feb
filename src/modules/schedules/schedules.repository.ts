import {
  and,
  count,
  desc,
  eq,
  gt,
  inArray,
  isNotNull,
  isNull,
  lt,
  lte,
  or,
  sql,
  type SQL,
} from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import {
  occurrenceOverrides,
  programmes,
  scheduleOccurrences,
  scheduleResolutions,
  scheduleTargets,
  schedules,
  users,
  type ConflictResolution,
} from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';
import { PLANNED_FOREVER, type PlannedSlot } from './planning.js';

export type ScheduleRow = typeof schedules.$inferSelect;
export type ScheduleTargetRow = typeof scheduleTargets.$inferInsert;

/** A schedule with what its view needs: its programme's title and kind, its creator's name. */
export interface ScheduleWithNames {
  schedule: ScheduleRow;
  programmeTitle: string;
  programmeKind: 'bulletin' | 'relay';
  creatorName: string | null;
}

/** Rows inserted per statement: SQLite caps the variables of one statement. */
const ROWS_PER_INSERT = 500;

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

/** The paths of the areas above the one with this path, outermost first (`/a/b/c/` → /a/, /a/b/). */
function pathsAbove(path: string): string[] {
  const ids = path.split('/').filter(Boolean);
  return ids.slice(0, -1).map((_, i) => `/${ids.slice(0, i + 1).join('/')}/`);
}

/**
 * Schedules that play in the area with this path: a target inside its subtree, or a target area above it
 * (a province-wide schedule plays in every commune).
 */
function playsIn(path: string): SQL {
  const above = pathsAbove(path);
  const t = scheduleTargets;
  return sql`EXISTS (SELECT 1 FROM ${t} WHERE ${t.scheduleId} = ${schedules.id} AND (${inSubtree(t.path, path)}${
    above.length > 0 ? sql` OR (${t.areaId} IS NOT NULL AND ${inArray(t.path, above)})` : sql``
  }))`;
}

/** Nothing left to air: fully planned, and no occurrence still to come or on air. */
function ended(now: Date): SQL {
  const o = scheduleOccurrences;
  return sql`(${schedules.plannedUntil} >= ${PLANNED_FOREVER.getTime()} AND NOT EXISTS (SELECT 1 FROM ${o} WHERE ${o.scheduleId} = ${schedules.id} AND ${o.status} IN ('planned', 'dispatched') AND ${o.endsAt} > ${now.getTime()}))`;
}

export class SchedulesRepository {
  constructor(private readonly db: Db) {}

  /** One IMMEDIATE transaction: what is checked inside (conflicts) is still true when it writes. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(() => fn(), { behavior: 'immediate' });
  }

  // ---------------------------------------------------------------- schedules

  insert(row: ScheduleRow): void {
    this.db.insert(schedules).values(row).run();
  }

  update(id: string, patch: Partial<Omit<ScheduleRow, 'id' | 'createdBy' | 'createdAt'>>): void {
    this.db.update(schedules).set(patch).where(eq(schedules.id, id)).run();
  }

  /** A schedule that is not deleted, with the names its view shows. */
  findById(id: string): ScheduleWithNames | undefined {
    return this.selectWithNames()
      .where(and(eq(schedules.id, id), isNull(schedules.deletedAt)))
      .get();
  }

  list(filter: {
    /** The caller's area path (null: everywhere); ignored when `areaPath` narrows further. */
    scopePath: string | null;
    areaPath?: string | undefined;
    programmeId?: string | undefined;
    active?: boolean | undefined;
    now: Date;
    limit: number;
    offset: number;
  }): { rows: ScheduleWithNames[]; total: number } {
    const where: SQL[] = [isNull(schedules.deletedAt)];
    // An area the caller may see lies inside their subtree, so what plays there is visible to them.
    const path = filter.areaPath ?? filter.scopePath;
    if (path !== null) where.push(playsIn(path));
    if (filter.programmeId !== undefined) where.push(eq(schedules.programmeId, filter.programmeId));
    if (filter.active === true) where.push(and(isNull(schedules.pausedAt), sql`NOT ${ended(filter.now)}`)!);
    if (filter.active === false) where.push(or(isNotNull(schedules.pausedAt), ended(filter.now))!);
    const condition = and(...where);
    const rows = this.selectWithNames()
      .where(condition)
      // Ties (a batch saved within one millisecond) in the order they were saved.
      .orderBy(desc(schedules.createdAt), sql`${schedules}.rowid DESC`)
      .limit(filter.limit)
      .offset(filter.offset)
      .all();
    const total = this.db.select({ n: count() }).from(schedules).where(condition).get()?.n ?? 0;
    return { rows, total };
  }

  /** Whether a schedule that is not deleted airs the programme (a programme cannot be deleted then). */
  airsProgramme(programmeId: string): boolean {
    return (
      this.db
        .select({ id: schedules.id })
        .from(schedules)
        .where(and(eq(schedules.programmeId, programmeId), isNull(schedules.deletedAt)))
        .limit(1)
        .get() !== undefined
    );
  }

  /** Live schedules planned less far than `horizon`: what the daily planning job extends. */
  dueForPlanning(horizon: Date): ScheduleRow[] {
    return this.db
      .select()
      .from(schedules)
      .where(and(isNull(schedules.deletedAt), lt(schedules.plannedUntil, horizon)))
      .all();
  }

  /**
   * Live schedules airing the programme with an occurrence still to be sent that does not last `lengthMs`:
   * those a newly approved revision of another length must plan again.
   */
  withPlannedLengthOtherThan(programmeId: string, now: Date, lengthMs: number): ScheduleRow[] {
    const o = scheduleOccurrences;
    return this.db
      .select()
      .from(schedules)
      .where(
        and(
          eq(schedules.programmeId, programmeId),
          isNull(schedules.deletedAt),
          sql`EXISTS (SELECT 1 FROM ${o} WHERE ${o.scheduleId} = ${schedules.id} AND ${o.status} = 'planned' AND ${o.startsAt} > ${now.getTime()} AND ${o.endsAt} - ${o.startsAt} <> ${lengthMs})`,
        ),
      )
      .all();
  }

  // ---------------------------------------------------------------- targets

  targetsOf(scheduleId: string): { areaId: string | null; deviceId: string | null; path: string }[] {
    return this.db
      .select({
        areaId: scheduleTargets.areaId,
        deviceId: scheduleTargets.deviceId,
        path: scheduleTargets.path,
      })
      .from(scheduleTargets)
      .where(eq(scheduleTargets.scheduleId, scheduleId))
      .all();
  }

  replaceTargets(scheduleId: string, rows: readonly ScheduleTargetRow[]): void {
    this.db.delete(scheduleTargets).where(eq(scheduleTargets.scheduleId, scheduleId)).run();
    for (const batch of chunks(rows, ROWS_PER_INSERT)) this.db.insert(scheduleTargets).values(batch).run();
  }

  // ---------------------------------------------------------------- occurrences

  /**
   * Inserts planned occurrences; returns the id of each by its slot (ms). A slot that already has a row is
   * left as it is (a second planner got there first) and is absent from the answer.
   */
  insertOccurrences(scheduleId: string, slots: readonly PlannedSlot[]): Map<number, number> {
    const ids = new Map<number, number>();
    for (const batch of chunks(slots, ROWS_PER_INSERT)) {
      const inserted = this.db
        .insert(scheduleOccurrences)
        .values(batch.map((s) => ({ scheduleId, ...s, status: 'planned' as const })))
        .onConflictDoNothing()
        .returning({ id: scheduleOccurrences.id, slotAt: scheduleOccurrences.slotAt })
        .all();
      for (const r of inserted) ids.set(r.slotAt.getTime(), r.id);
    }
    return ids;
  }

  /** Slots (ms) of the schedule's rows that start at or after `from`, whatever their status. */
  slotsFrom(scheduleId: string, from: Date): Set<number> {
    return new Set(
      this.db
        .select({ slotAt: scheduleOccurrences.slotAt })
        .from(scheduleOccurrences)
        .where(and(eq(scheduleOccurrences.scheduleId, scheduleId), gt(scheduleOccurrences.startsAt, from)))
        .all()
        .map((r) => r.slotAt.getTime()),
    );
  }

  /** Deletes the schedule's planned occurrences that start after `now` (edit, delete): the past stays. */
  deleteFuturePlanned(scheduleId: string, now: Date): number {
    return this.db
      .delete(scheduleOccurrences)
      .where(
        and(
          eq(scheduleOccurrences.scheduleId, scheduleId),
          eq(scheduleOccurrences.status, 'planned'),
          gt(scheduleOccurrences.startsAt, now),
        ),
      )
      .run().changes;
  }

  /** Planned occurrences that have started but were not sent yet: cancelled, saying why. */
  cancelStartedPlanned(scheduleId: string, now: Date, reason: string): number {
    return this.db
      .update(scheduleOccurrences)
      .set({ status: 'cancelled', reason })
      .where(
        and(
          eq(scheduleOccurrences.scheduleId, scheduleId),
          eq(scheduleOccurrences.status, 'planned'),
          lte(scheduleOccurrences.startsAt, now),
        ),
      )
      .run().changes;
  }

  /** Occurrences already sent whose slot has not ended: on air, or waiting on devices for their startAt. */
  sentAndOpen(scheduleId: string, now: Date): { slotAt: Date }[] {
    return this.db
      .select({ slotAt: scheduleOccurrences.slotAt })
      .from(scheduleOccurrences)
      .where(
        and(
          eq(scheduleOccurrences.scheduleId, scheduleId),
          eq(scheduleOccurrences.status, 'dispatched'),
          gt(scheduleOccurrences.endsAt, now),
        ),
      )
      .all();
  }

  /** The start of each schedule's next occurrence after `now` that is planned or already sent. */
  nextStarts(scheduleIds: readonly string[], now: Date): Map<string, Date> {
    if (scheduleIds.length === 0) return new Map();
    const o = scheduleOccurrences;
    const rows = this.db
      .select({ scheduleId: o.scheduleId, next: sql<number>`min(${o.startsAt})` })
      .from(o)
      .where(
        and(
          inArray(o.scheduleId, [...scheduleIds]),
          inArray(o.status, ['planned', 'dispatched']),
          gt(o.startsAt, now),
        ),
      )
      .groupBy(o.scheduleId)
      .all();
    return new Map(rows.map((r) => [r.scheduleId, new Date(r.next)]));
  }

  /** Whether the schedule has an occurrence that is planned, or sent and still on air, after `now`. */
  hasLiveOccurrence(scheduleId: string, now: Date): boolean {
    const o = scheduleOccurrences;
    return (
      this.db
        .select({ id: o.id })
        .from(o)
        .where(
          and(eq(o.scheduleId, scheduleId), inArray(o.status, ['planned', 'dispatched']), gt(o.endsAt, now)),
        )
        .limit(1)
        .get() !== undefined
    );
  }

  /** Moves planned occurrences (another schedule appended after one of ours); one sent meanwhile stays. */
  moveOccurrences(
    rows: readonly { occurrenceId: number; startsAt: Date; endsAt: Date; dueAt: Date }[],
  ): void {
    for (const r of rows) {
      this.db
        .update(scheduleOccurrences)
        .set({ startsAt: r.startsAt, endsAt: r.endsAt, dueAt: r.dueAt })
        .where(and(eq(scheduleOccurrences.id, r.occurrenceId), eq(scheduleOccurrences.status, 'planned')))
        .run();
    }
  }

  insertOverrides(rows: readonly { occurrenceId: number; byOccurrenceId: number }[]): void {
    for (const batch of chunks(rows, ROWS_PER_INSERT)) {
      this.db.insert(occurrenceOverrides).values(batch).onConflictDoNothing().run();
    }
  }

  /** Records (or replaces) how this schedule settles its clashes with others. */
  saveResolutions(
    scheduleId: string,
    rows: readonly { otherScheduleId: string; resolution: ConflictResolution }[],
    at: Date,
  ): void {
    for (const r of rows) {
      this.db
        .insert(scheduleResolutions)
        .values({ scheduleId, otherScheduleId: r.otherScheduleId, resolution: r.resolution, createdAt: at })
        .onConflictDoUpdate({
          target: [scheduleResolutions.scheduleId, scheduleResolutions.otherScheduleId],
          set: { resolution: r.resolution, createdAt: at },
        })
        .run();
    }
  }

  private selectWithNames() {
    return this.db
      .select({
        schedule: schedules,
        programmeTitle: programmes.title,
        programmeKind: programmes.kind,
        creatorName: users.username,
      })
      .from(schedules)
      .innerJoin(programmes, eq(schedules.programmeId, programmes.id))
      .leftJoin(users, eq(schedules.createdBy, users.id));
  }
}
