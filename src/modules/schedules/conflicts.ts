/**
 * Schedule conflicts (issue 8, docs/schedules.md "Conflicts"): a device cannot play two things at once.
 *
 * A clash is one of a schedule's new slots overlapping ([startsAt, endsAt)) a busy occurrence (planned or
 * dispatched) of ANOTHER schedule that is not deleted (paused ones count: they may be resumed), has the SAME
 * priority, and shares at least one device. A higher priority never conflicts with a lower one: it pre-empts
 * on the device at air time. Saving refuses clashes (409 schedule_conflict, listing them) unless the request
 * says how to settle them: `override` (the other occurrences give way on the shared devices) or `append` (the
 * new occurrence starts when the other ends).
 *
 * Cost. Resolving every other schedule's device set (5,000 schedules on 2,000 devices in the benchmark) on
 * each save would read the devices table thousands of times. Instead the rules work on area ids and paths:
 * the caller gives the new schedule's devices; their current area paths are read once, and for each area
 * at or above them, how many of them lie below. A path is the chain of ids from the root, so the areas
 * that reach one of our devices are exactly the segments of those paths: only the targets naming one of
 * them (or one of our devices) are read, and another schedule shares `under(area)` devices per target area
 * plus its target devices among ours — exact, by the areas' current place in the tree, with no device set
 * resolved but ours. Only the schedules that share devices have their occurrences read, in the window of
 * the new slots and kept only where they meet one; each slot finds its overlaps by binary search.
 *
 * Interface notes for the schedules service (H1):
 * - `PlannedSlot` is planning.ts's (re-exported here).
 * - `deps.areas` is not needed (other schedules' area paths are joined in SQL); `deps.devices.withPaths`
 *   gives the area paths of the new schedule's devices.
 * - `check` also refuses, with 409 and an empty `conflicts` list, an `append` that would push a slot into
 *   the next slot of the same schedule.
 * - `applyStored` returns two more lists than `check` (its `resolutions` is always empty: they are stored):
 *   `overriddenBy` — new slots that give way to another schedule's occurrence (that schedule saved
 *   `override` against this one): insert occurrence_overrides(occurrenceId = the new row, byOccurrenceId);
 *   `moved` — planned occurrences of a schedule that saved `append` against this one, which must now start
 *   when the new slot ends: update their starts_at, ends_at and due_at.
 */
import type { Db } from '../../db/index.js';
import type { ConflictResolution, SchedulePriority } from '../../db/schema/index.js';
import { AppError } from '../../errors.js';
import type { AreasService } from '../areas/areas.service.js';
import type { DevicesService } from '../devices/devices.service.js';
import { ConflictsRepository, type BusyOccurrence, type TargetRow } from './conflicts.repository.js';
import type { PlannedSlot } from './planning.js';
import { localDateTime } from './timing.js';

export type { PlannedSlot } from './planning.js';

/** One clash, as the 409 lists it. */
export interface Clash {
  scheduleId: string;
  programmeId: string;
  programmeTitle: string;
  /** Devices the two schedules share. */
  deviceCount: number;
  /** The other occurrence, local time with offset (+07:00). */
  start: string;
  end: string;
}

export interface ConflictOutcome {
  /** What to store: the slots, shifted where `append` moved them. */
  slots: PlannedSlot[];
  /** New slot (by slotAt) → other occurrence that gives way to it on the shared devices. */
  overrides: { slotAt: Date; occurrenceId: number }[];
  /** What to store in schedule_resolutions, one per other schedule settled. */
  resolutions: { otherScheduleId: string; resolution: ConflictResolution }[];
}

export interface StoredOutcome extends ConflictOutcome {
  /** New slot (by slotAt) that gives way to another schedule's occurrence. */
  overriddenBy: { slotAt: Date; byOccurrenceId: number }[];
  /** Planned occurrences of another schedule that now start when the new slot ends. */
  moved: { occurrenceId: number; startsAt: Date; endsAt: Date; dueAt: Date }[];
}

export interface CheckInput {
  /** null when the schedule is being created. */
  scheduleId: string | null;
  priority: SchedulePriority;
  /** The devices the schedule's targets reach now (resolveTargetDevices). */
  deviceIds: ReadonlySet<string>;
  slots: PlannedSlot[];
  onConflict?: 'override' | 'append' | undefined;
  now: Date;
  /** Schedules whose clashes with this one a stored resolution settles already: not checked again. */
  settled?: ReadonlySet<string>;
}

export interface ApplyStoredInput {
  scheduleId: string;
  priority: SchedulePriority;
  deviceIds: ReadonlySet<string>;
  slots: PlannedSlot[];
  now: Date;
}

/** A 409 lists this many clashes at most; the detail gives the total. */
export const MAX_CLASHES_LISTED = 50;
/** `append` moves one slot after this many others at most, then refuses: a day packed that full is a mistake. */
export const MAX_APPEND_SHIFTS = 10;

/** "/a/b/c/" → ["/a/", "/a/b/", "/a/b/c/"]: the area and every area above it. */
export function pathAndAncestors(path: string): string[] {
  const out: string[] = [];
  for (let i = path.indexOf('/', 1); i !== -1; i = path.indexOf('/', i + 1)) out.push(path.slice(0, i + 1));
  return out;
}

/** Paths that lie inside no other of the list: a subtree inside another adds no device. */
export function outermost(paths: Iterable<string>): string[] {
  const out: string[] = [];
  for (const path of [...new Set(paths)].sort()) {
    const last = out.at(-1);
    if (last === undefined || !path.startsWith(last)) out.push(path);
  }
  return out;
}

/** Where a schedule's targets lie now: the areas (outermost) and the devices named, with their area paths. */
export interface Footprint {
  areaPaths: string[];
  devices: Map<string, string>;
}

/** Footprints by schedule id, from target rows with current paths; gone areas and devices drop out. */
export function footprints(rows: readonly TargetRow[]): Map<string, Footprint> {
  const areasOf = new Map<string, string[]>();
  const out = new Map<string, Footprint>();
  for (const row of rows) {
    let fp = out.get(row.scheduleId);
    if (!fp) {
      fp = { areaPaths: [], devices: new Map() };
      out.set(row.scheduleId, fp);
      areasOf.set(row.scheduleId, []);
    }
    if (row.areaId !== null && row.areaPath !== null) areasOf.get(row.scheduleId)!.push(row.areaPath);
    if (row.deviceId !== null && row.devicePath !== null) fp.devices.set(row.deviceId, row.devicePath);
  }
  for (const [id, fp] of out) fp.areaPaths = outermost(areasOf.get(id)!);
  return out;
}

/** A set of devices with their area paths, that counts how many of them another schedule's targets reach. */
export class DeviceSet {
  private readonly pathOf = new Map<string, string>();
  /** Area path → how many of the devices lie at or below it. */
  private readonly under = new Map<string, number>();
  /** Id → path of every area that holds one of the devices or lies above one. */
  private readonly areaPath = new Map<string, string>();

  constructor(list: Iterable<{ id: string; areaPath: string }>) {
    for (const d of list) {
      if (this.pathOf.has(d.id)) continue;
      this.pathOf.set(d.id, d.areaPath);
      for (const p of pathAndAncestors(d.areaPath)) {
        this.under.set(p, (this.under.get(p) ?? 0) + 1);
        // A path is the chain of ids from the root: its last segment is the area's own id.
        this.areaPath.set(p.slice(p.lastIndexOf('/', p.length - 2) + 1, -1), p);
      }
    }
  }

  get size(): number {
    return this.pathOf.size;
  }

  /** The areas a target must name to reach one of the devices: theirs and every area above. */
  get areaIds(): string[] {
    return [...this.areaPath.keys()];
  }

  get deviceIds(): string[] {
    return [...this.pathOf.keys()];
  }

  /** How many of these devices one schedule's targets reach (each device once, nested areas or not). */
  sharedWith(targets: readonly { areaId: string | null; deviceId: string | null }[]): number {
    const areaPaths = outermost(
      targets.flatMap((t) => {
        const path = t.areaId === null ? undefined : this.areaPath.get(t.areaId);
        return path === undefined ? [] : [path];
      }),
    );
    let n = 0;
    for (const p of areaPaths) n += this.under.get(p) ?? 0;
    for (const t of targets) {
      const path = t.deviceId === null ? undefined : this.pathOf.get(t.deviceId);
      if (path !== undefined && !areaPaths.some((a) => path.startsWith(a))) n++;
    }
    return n;
  }
}

/** Intervals sorted by start; those overlapping [start, end) start in [start − longest, end). */
class Intervals<T extends { startsAt: Date; endsAt: Date }> {
  private readonly startMs: number[];
  private readonly longestMs: number;

  constructor(private readonly list: readonly T[]) {
    this.startMs = list.map((o) => o.startsAt.getTime());
    this.longestMs = Math.max(0, ...list.map((o) => o.endsAt.getTime() - o.startsAt.getTime()));
  }

  overlapping(start: Date, end: Date): T[] {
    const s = start.getTime();
    const e = end.getTime();
    let lo = 0;
    let hi = this.startMs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.startMs[mid]! < s - this.longestMs) lo = mid + 1;
      else hi = mid;
    }
    const out: T[] = [];
    for (let i = lo; i < this.list.length && this.startMs[i]! < e; i++) {
      if (this.list[i]!.endsAt.getTime() > s) out.push(this.list[i]!);
    }
    return out;
  }
}

const byStart = (a: PlannedSlot, b: PlannedSlot) => a.startsAt.getTime() - b.startsAt.getTime();

/**
 * The busy occurrences of the sharing schedules that overlap the new slots, read once over the slots'
 * window and kept only where they meet a slot. A slot moved by `append` asks the database again (`at`).
 */
class Busy {
  private readonly near: Intervals<BusyOccurrence>;

  constructor(
    private readonly repo: ConflictsRepository,
    private readonly scheduleIds: readonly string[],
    live: readonly PlannedSlot[],
  ) {
    const slots = new Intervals([...live].sort(byStart));
    let from = live[0]!.startsAt;
    let to = live[0]!.endsAt;
    for (const s of live) {
      if (s.startsAt < from) from = s.startsAt;
      if (s.endsAt > to) to = s.endsAt;
    }
    this.near = new Intervals(
      repo.busy(scheduleIds, from, to, (o) => slots.overlapping(o.startsAt, o.endsAt).length > 0),
    );
  }

  /** Overlapping one of the slots given to the constructor. */
  overlapping(slot: PlannedSlot): BusyOccurrence[] {
    return this.near.overlapping(slot.startsAt, slot.endsAt);
  }

  /** Overlapping any interval (a moved slot). */
  at(start: Date, end: Date): BusyOccurrence[] {
    return this.repo.busy(this.scheduleIds, start, end);
  }
}

const shift = (slot: PlannedSlot, startsAt: Date): PlannedSlot => {
  const delta = startsAt.getTime() - slot.startsAt.getTime();
  return {
    slotAt: slot.slotAt,
    startsAt,
    endsAt: new Date(slot.endsAt.getTime() + delta),
    dueAt: new Date(slot.dueAt.getTime() + delta),
  };
};

const latestEnd = (list: readonly BusyOccurrence[]) =>
  new Date(Math.max(...list.map((o) => o.endsAt.getTime())));

interface Pair {
  slot: PlannedSlot;
  other: BusyOccurrence;
}

export class ScheduleConflicts {
  private readonly repo: ConflictsRepository;

  constructor(
    db: Db,
    private readonly deps: { areas: AreasService; devices: DevicesService },
  ) {
    this.repo = new ConflictsRepository(db);
  }

  /**
   * Throws AppError('schedule_conflict', detail, { members: { conflicts: Clash[], conflictCount } }) when the
   * slots clash and no onConflict is given; otherwise returns what to store. Slots that have ended by `now`
   * are returned as they are.
   */
  check(input: CheckInput): ConflictOutcome {
    const outcome: ConflictOutcome = { slots: [...input.slots], overrides: [], resolutions: [] };
    const live = input.slots.filter((s) => s.endsAt > input.now);
    if (live.length === 0 || input.deviceIds.size === 0) return outcome;

    const mine = this.deviceSet(input.deviceIds);
    const sharing = this.sharing(
      mine,
      this.repo.touchingTargets(input.priority, input.scheduleId, mine.areaIds, mine.deviceIds),
    );
    for (const id of input.settled ?? []) sharing.delete(id);
    if (sharing.size === 0) return outcome;
    const busy = new Busy(this.repo, [...sharing.keys()], live);

    const pairs: Pair[] = [];
    for (const slot of live) {
      for (const other of busy.overlapping(slot)) pairs.push({ slot, other });
    }
    if (pairs.length === 0) return outcome;

    switch (input.onConflict) {
      case undefined:
        throw this.refusal(pairs, sharing);
      case 'override': {
        outcome.overrides = pairs.map((p) => ({ slotAt: p.slot.slotAt, occurrenceId: p.other.id }));
        outcome.resolutions = [...new Set(pairs.map((p) => p.other.scheduleId))].map((id) => ({
          otherScheduleId: id,
          resolution: 'override' as const,
        }));
        return outcome;
      }
      case 'append': {
        const settled = new Map<number, PlannedSlot>();
        const after = new Set<string>();
        for (const slot of new Set(pairs.map((p) => p.slot))) {
          let moved = slot;
          let clashes = busy.overlapping(slot);
          for (let n = 0; clashes.length > 0; n++) {
            if (n === MAX_APPEND_SHIFTS) {
              throw this.refusal(
                clashes.map((other) => ({ slot: moved, other })),
                sharing,
                `the occurrence at ${localDateTime(slot.slotAt)} still overlaps after being appended ` +
                  `${MAX_APPEND_SHIFTS} times`,
              );
            }
            for (const o of clashes) after.add(o.scheduleId);
            moved = shift(moved, latestEnd(clashes));
            clashes = busy.at(moved.startsAt, moved.endsAt);
          }
          settled.set(slot.slotAt.getTime(), moved);
        }
        outcome.slots = input.slots.map((s) => settled.get(s.slotAt.getTime()) ?? s);
        requireNoSelfOverlap(outcome.slots);
        outcome.resolutions = [...after].map((id) => ({
          otherScheduleId: id,
          resolution: 'append' as const,
        }));
        return outcome;
      }
    }
  }

  /**
   * An edit of a saved schedule: clashes with the schedules a stored resolution pairs it with are settled as
   * that resolution says (as planning ahead does), and only the others are refused or settled by
   * `onConflict`. Without this, changing the skipped dates of a schedule saved with `override` would be
   * refused for the very clash the broadcaster settled, and answering with `onConflict` again would quietly
   * replace the other schedule's own earlier choice.
   */
  checkEdit(input: CheckInput & { scheduleId: string }): StoredOutcome {
    const stored = this.applyStored(input);
    const settled = new Set(
      this.repo
        .resolutionsInvolving(input.scheduleId)
        .map((r) => (r.scheduleId === input.scheduleId ? r.otherScheduleId : r.scheduleId)),
    );
    const fresh = this.check({ ...input, slots: stored.slots, settled });
    return {
      ...stored,
      slots: fresh.slots,
      overrides: [...stored.overrides, ...fresh.overrides],
      resolutions: fresh.resolutions,
    };
  }

  /**
   * For the daily planning of further occurrences: applies the stored schedule_resolutions to newly planned
   * slots of a schedule instead of refusing. Both directions: this schedule's own choices (override → its
   * slot wins, append → its slot moves after the other), and the choices others made against it (override →
   * its slot gives way, append → their planned occurrence moves after its slot). Clashes with schedules it
   * has no resolution with are left as they are: planning cannot refuse, and the calendar shows them.
   */
  applyStored(input: ApplyStoredInput): StoredOutcome {
    const outcome: StoredOutcome = {
      slots: [...input.slots],
      overrides: [],
      resolutions: [],
      overriddenBy: [],
      moved: [],
    };
    const live = input.slots.filter((s) => s.endsAt > input.now);
    if (live.length === 0 || input.deviceIds.size === 0) return outcome;
    // The latest decision between two schedules wins when each saved one against the other.
    const how = new Map<string, { mine: boolean; resolution: ConflictResolution; at: number }>();
    for (const r of this.repo.resolutionsInvolving(input.scheduleId)) {
      const mine = r.scheduleId === input.scheduleId;
      const partner = mine ? r.otherScheduleId : r.scheduleId;
      const known = how.get(partner);
      if (!known || r.createdAt.getTime() > known.at) {
        how.set(partner, { mine, resolution: r.resolution, at: r.createdAt.getTime() });
      }
    }
    if (how.size === 0) return outcome;

    const mine = this.deviceSet(input.deviceIds);
    const sharing = this.sharing(
      mine,
      this.repo.touchingTargets(input.priority, input.scheduleId, mine.areaIds, mine.deviceIds, [
        ...how.keys(),
      ]),
    );
    if (sharing.size === 0) return outcome;
    const busy = new Busy(this.repo, [...sharing.keys()], live);
    const appendsAfter = (o: BusyOccurrence) => {
      const rule = how.get(o.scheduleId);
      return rule?.mine === true && rule.resolution === 'append';
    };

    const settled = new Map<number, PlannedSlot>();
    const moved = new Map<number, StoredOutcome['moved'][number]>();
    for (const slot of live) {
      let current = slot;
      let clashes = busy.overlapping(slot);
      for (let n = 0; n < MAX_APPEND_SHIFTS; n++) {
        const before = clashes.filter(appendsAfter);
        if (before.length === 0) break;
        current = shift(current, latestEnd(before));
        clashes = busy.at(current.startsAt, current.endsAt);
      }
      if (current !== slot) settled.set(slot.slotAt.getTime(), current);
      for (const other of clashes) {
        const rule = how.get(other.scheduleId)!;
        if (rule.mine && rule.resolution === 'override') {
          outcome.overrides.push({ slotAt: slot.slotAt, occurrenceId: other.id });
        } else if (!rule.mine && rule.resolution === 'override') {
          outcome.overriddenBy.push({ slotAt: slot.slotAt, byOccurrenceId: other.id });
        } else if (!rule.mine && other.status === 'planned' && other.dueAt > input.now) {
          // They chose to start when ours ends. Moved once; if that lands on something else, the
          // calendar shows it (planning does not chase chains).
          const delta = current.endsAt.getTime() - other.startsAt.getTime();
          const previous = moved.get(other.id);
          if (!previous || previous.startsAt < current.endsAt) {
            moved.set(other.id, {
              occurrenceId: other.id,
              startsAt: current.endsAt,
              endsAt: new Date(other.endsAt.getTime() + delta),
              dueAt: new Date(other.dueAt.getTime() + delta),
            });
          }
        }
      }
    }
    outcome.slots = input.slots.map((s) => settled.get(s.slotAt.getTime()) ?? s);
    outcome.moved = [...moved.values()];
    return outcome;
  }

  /** Our devices with their area paths. */
  private deviceSet(ids: ReadonlySet<string>): DeviceSet {
    return new DeviceSet(this.deps.devices.withPaths([...ids]));
  }

  /** Schedule id → devices it shares with ours, for the schedules that share any. */
  private sharing(
    mine: DeviceSet,
    targets: readonly { scheduleId: string; areaId: string | null; deviceId: string | null }[],
  ): Map<string, number> {
    const bySchedule = new Map<string, (typeof targets)[number][]>();
    for (const t of targets) bySchedule.set(t.scheduleId, [...(bySchedule.get(t.scheduleId) ?? []), t]);
    const out = new Map<string, number>();
    for (const [id, list] of bySchedule) {
      const n = mine.sharedWith(list);
      if (n > 0) out.set(id, n);
    }
    return out;
  }

  private refusal(pairs: Pair[], sharing: Map<string, number>, why?: string): AppError {
    const sorted = [...pairs].sort(
      (a, b) =>
        a.other.startsAt.getTime() - b.other.startsAt.getTime() ||
        a.other.scheduleId.localeCompare(b.other.scheduleId),
    );
    const listed = sorted.slice(0, MAX_CLASHES_LISTED);
    const programmesOf = this.repo.programmes([...new Set(listed.map((p) => p.other.scheduleId))]);
    const conflicts: Clash[] = listed.map(({ other }) => ({
      scheduleId: other.scheduleId,
      programmeId: programmesOf.get(other.scheduleId)?.programmeId ?? '',
      programmeTitle: programmesOf.get(other.scheduleId)?.title ?? '',
      deviceCount: sharing.get(other.scheduleId) ?? 0,
      start: localDateTime(other.startsAt),
      end: localDateTime(other.endsAt),
    }));
    const schedulesHit = new Set(pairs.map((p) => p.other.scheduleId)).size;
    const detail =
      (why ? `${why}: ` : '') +
      `${pairs.length} overlap(s) with ${schedulesHit} other schedule(s) at the same priority on shared ` +
      `loudspeakers` +
      (pairs.length > listed.length ? ` (the first ${listed.length} are listed)` : '') +
      (why ? '' : '; send "onConflict": "override" or "append" to settle them');
    return new AppError('schedule_conflict', detail, { members: { conflicts, conflictCount: pairs.length } });
  }
}

/** After `append`, a slot pushed into the schedule's own next slot would play two things at once too. */
function requireNoSelfOverlap(slots: readonly PlannedSlot[]): void {
  const sorted = [...slots].sort((a, b) => a.startsAt.getTime() - b.startsAt.getTime());
  for (let i = 1; i < sorted.length; i++) {
    const previous = sorted[i - 1]!;
    const slot = sorted[i]!;
    if (slot.startsAt < previous.endsAt) {
      throw new AppError(
        'schedule_conflict',
        `appended after another schedule, the occurrence at ${localDateTime(previous.slotAt)} would run until ` +
          `${localDateTime(previous.endsAt)}, past the start of this schedule's next one at ` +
          `${localDateTime(slot.startsAt)}`,
        { members: { conflicts: [], conflictCount: 0 } },
      );
    }
  }
}
