import type { Role } from '../../db/schema/index.js';
import { AppError, forbidden, invalid, notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { newId } from '../../lib/ids.js';
import { inScope, type Actor } from '../../lib/scope.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { DevicesService } from '../devices/devices.service.js';
import type { ScheduleProgramme } from '../programmes/programmes.service.js';
import type { ConflictOutcome, ScheduleConflicts, StoredOutcome } from './conflicts.js';
import {
  PLANNED_FOREVER,
  occurrencePlayIds,
  planSlots,
  plannedUntil,
  planningHorizon,
  requireNoSelfOverlap,
  type PlanParams,
  type PlannedSlot,
} from './planning.js';
import type {
  ScheduleRow,
  ScheduleTargetRow,
  ScheduleWithNames,
  SchedulesRepository,
} from './schedules.repository.js';
import type {
  CreateScheduleInput,
  ListSchedulesQuery,
  ScheduleStatus,
  ScheduleView,
  UpdateScheduleInput,
} from './schedules.schemas.js';
import { resolveTargetDevices, type ScheduleTargets } from './targets.js';
import { describeTiming, localDateTime, nextOccurrence, type Timing } from './timing.js';

/** Who may make, change, pause and delete schedules (inside their area). */
const EDITORS: readonly Role[] = ['admin', 'district_operator', 'broadcaster'];

/** What schedules need of programmes (src/modules/programmes ProgrammesService). */
export interface ProgrammeAccess {
  scheduleInfo(actor: Actor | null, programmeId: string, field?: string): ScheduleProgramme;
}

/**
 * The conflicts check (src/modules/schedules/conflicts.ts). `check` runs inside the save's transaction and
 * throws AppError schedule_conflict (409, listing each clash) unless `onConflict` settles them;
 * `applyStored` settles the clashes of occurrences planned later as the saved resolutions say, and never
 * refuses (the daily planning job has nobody to answer).
 */
export type ConflictChecker = Pick<ScheduleConflicts, 'check' | 'checkEdit' | 'applyStored'>;

export interface SchedulesConfig {
  /** How early a file occurrence is sent, so devices download it before the slot (MEDIA_LEAD_S). */
  mediaLeadMs: number;
}

interface Log {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** The fields that decide the occurrences: changing any of them plans the future again. */
const PLANNING_FIELDS = ['programmeId', 'targets', 'priority', 'timing', 'exceptDates', 'durationS'] as const;

/** The fields an edit's audit entry compares, before and after. */
const AUDITED_FIELDS = [...PLANNING_FIELDS, 'volume', 'note'] as const;

/** Titles and notes as stored: composed (NFC), whatever form the client sent. */
const nfc = (text: string) => text.normalize('NFC');

/**
 * Schedules: an approved programme planned to air on a timing, on the devices of some areas and devices.
 *
 * Saving a schedule plans its occurrences SCHEDULE_PLANNING_DAYS ahead (src/modules/schedules/planning.ts)
 * in the same transaction as the schedule, after the conflicts check; the dispatcher sends them. Editing
 * plans the future again and leaves the past (sent, skipped) as it was; deleting is soft, so the playback
 * log keeps naming the schedule.
 */
export class SchedulesService {
  /** Told after every change to the occurrences, so the dispatcher re-arms its timer (bound late). */
  onChange?: () => void;
  /**
   * Stops a play session on the schedule's targets, as the actor (bound to CommandsService: a stop command,
   * delivered, acknowledged and audited like any other).
   */
  stopSession?: (actor: Actor, sessionId: string, schedule: ScheduleRow) => void;
  /** Withdraws occurrences prepared ahead whose play has not gone out yet (bound to the dispatcher). */
  withdrawUnpublished?: (scheduleId: string, reason: string) => number;

  constructor(
    private readonly repo: SchedulesRepository,
    private readonly areas: AreasService,
    private readonly devices: DevicesService,
    private readonly programmes: ProgrammeAccess,
    private readonly conflicts: ConflictChecker,
    private readonly audit: AuditService,
    private readonly config: SchedulesConfig,
    private readonly clock: Clock,
    private readonly log: Log,
  ) {}

  // ---------------------------------------------------------------- reading

  list(actor: Actor, query: ListSchedulesQuery) {
    const now = this.clock.now();
    const { rows, total } = this.repo.list({
      scopePath: actor.areaPath,
      areaPath: query.areaId !== undefined ? this.areas.getVisible(actor, query.areaId).path : undefined,
      programmeId: query.programmeId,
      active: query.active,
      now,
      limit: query.limit,
      offset: query.offset,
    });
    const next = this.repo.nextStarts(
      rows.map((r) => r.schedule.id),
      now,
    );
    return {
      items: rows.map((r) => this.view(r, now, next.get(r.schedule.id))),
      total,
      limit: query.limit,
      offset: query.offset,
    };
  }

  get(actor: Actor, id: string): ScheduleView {
    const found = this.requireVisible(actor, id);
    const now = this.clock.now();
    return this.view(found, now, this.repo.nextStarts([id], now).get(id));
  }

  /** Whether a schedule that is not deleted airs the programme (programmes refuse to be deleted then). */
  airsProgramme(programmeId: string): boolean {
    return this.repo.airsProgramme(programmeId);
  }

  // ---------------------------------------------------------------- saving

  create(actor: Actor, input: CreateScheduleInput): ScheduleView {
    this.requireRole(actor, 'create schedules');
    const programme = this.programmes.scheduleInfo(actor, input.programmeId, 'body.programmeId');
    const durationS = this.durationFor(programme, input.durationS ?? null);
    const targetRows = this.requireTargets(actor, input.targets);
    const targets = canonicalTargets(input.targets);
    const deviceIds = this.requireDevices(targets);
    const now = this.clock.now();
    const params = this.planParams(input.timing, input.exceptDates, programme, durationS);
    const horizon = planningHorizon(now);
    const slots = this.planNew(params, now, horizon);

    const id = newId('sch');
    const row: ScheduleRow = {
      id,
      programmeId: programme.id,
      priority: input.priority,
      targets,
      timing: input.timing,
      exceptDates: [...input.exceptDates].sort(),
      volume: input.volume ?? null,
      durationS,
      note: input.note !== undefined ? nfc(input.note) : null,
      deviceCount: deviceIds.length,
      pausedAt: null,
      createdBy: actor.id,
      createdAt: now,
      updatedAt: now,
      deletedAt: null,
      plannedUntil: plannedUntil(params, horizon),
    };
    this.repo.transaction(() => {
      const outcome = this.conflicts.check({
        scheduleId: null,
        priority: row.priority,
        deviceIds: new Set(deviceIds),
        slots,
        onConflict: input.onConflict,
        now,
      });
      this.repo.insert(row);
      this.repo.replaceTargets(id, targetRows(id));
      this.store(id, outcome, now);
      this.audit.record(
        actor,
        'schedule.create',
        { type: 'schedule', id },
        {
          programmeId: programme.id,
          programmeTitle: programme.title,
          targets,
          deviceCount: row.deviceCount,
          priority: row.priority,
          timing: row.timing,
          ...(row.exceptDates.length > 0 ? { exceptDates: row.exceptDates } : {}),
          ...(row.volume !== null ? { volume: row.volume } : {}),
          ...(row.durationS !== null ? { durationS: row.durationS } : {}),
          ...(input.onConflict ? { onConflict: input.onConflict, resolutions: outcome.resolutions } : {}),
        },
      );
    });
    this.changed();
    return this.get(actor, id);
  }

  update(actor: Actor, id: string, input: UpdateScheduleInput): ScheduleView {
    this.requireRole(actor, 'edit schedules');
    const { schedule } = this.requireManageable(actor, id);
    const programme =
      input.programmeId !== undefined && input.programmeId !== schedule.programmeId
        ? this.programmes.scheduleInfo(actor, input.programmeId, 'body.programmeId')
        : this.programmes.scheduleInfo(null, schedule.programmeId);
    // Moving to a bulletin drops the relay's duration unless the request says otherwise.
    const requestedDuration =
      input.durationS !== undefined
        ? input.durationS
        : programme.kind === 'relay'
          ? schedule.durationS
          : null;
    const durationS = this.durationFor(programme, requestedDuration);
    const targets = input.targets !== undefined ? canonicalTargets(input.targets) : schedule.targets;
    const targetRows = input.targets !== undefined ? this.requireTargets(actor, input.targets) : null;
    const deviceIds = this.requireDevices(targets);
    const timing = input.timing ?? schedule.timing;
    const exceptDates =
      input.exceptDates !== undefined ? [...input.exceptDates].sort() : schedule.exceptDates;
    const priority = input.priority ?? schedule.priority;
    const volume = input.volume !== undefined ? input.volume : schedule.volume;
    const note = input.note !== undefined ? (input.note === null ? null : nfc(input.note)) : schedule.note;
    const replan =
      input.onConflict !== undefined ||
      PLANNING_FIELDS.some((field) => input[field] !== undefined) ||
      durationS !== schedule.durationS;

    const now = this.clock.now();
    const horizon = planningHorizon(now);
    const params = this.planParams(timing, exceptDates, programme, durationS);
    const slots = replan ? this.planNew(params, now, horizon, input.timing !== undefined) : [];

    this.repo.transaction(() => {
      let outcome: StoredOutcome | null = null;
      if (replan) {
        // The future only: what was sent (or skipped) stays as it was, in the log and the calendar.
        this.repo.deleteFuturePlanned(id, now);
        const kept = this.repo.slotsFrom(id, now);
        outcome = this.conflicts.checkEdit({
          scheduleId: id,
          priority,
          deviceIds: new Set(deviceIds),
          slots: slots.filter((s) => !kept.has(s.slotAt.getTime())),
          onConflict: input.onConflict,
          now,
        });
      }
      const fields = {
        programmeId: programme.id,
        priority,
        targets,
        timing,
        exceptDates,
        volume,
        durationS,
        note,
      };
      this.repo.update(id, {
        ...fields,
        deviceCount: deviceIds.length,
        updatedAt: now,
        ...(replan ? { plannedUntil: plannedUntil(params, horizon) } : {}),
      });
      if (targetRows) this.repo.replaceTargets(id, targetRows(id));
      if (outcome) this.store(id, outcome, now);
      this.audit.record(
        actor,
        'schedule.update',
        { type: 'schedule', id },
        {
          changes: changesOf(schedule, fields),
          replanned: replan,
          ...(input.onConflict && outcome
            ? { onConflict: input.onConflict, resolutions: outcome.resolutions }
            : {}),
        },
      );
    });
    this.changed();
    return this.get(actor, id);
  }

  delete(actor: Actor, id: string): void {
    this.requireRole(actor, 'delete schedules');
    const { schedule, programmeTitle } = this.requireManageable(actor, id);
    const now = this.clock.now();
    this.repo.transaction(() => {
      this.repo.update(id, { deletedAt: now, updatedAt: now });
      const removed = this.repo.deleteFuturePlanned(id, now);
      // One whose start has come but that was not sent yet must not go out for a deleted schedule.
      const cancelled = this.repo.cancelStartedPlanned(id, now, 'schedule deleted');
      this.audit.record(
        actor,
        'schedule.delete',
        { type: 'schedule', id },
        { programmeId: schedule.programmeId, programmeTitle, removedOccurrences: removed + cancelled },
      );
    });
    this.changed();
    this.stopSent(actor, schedule, now, 'schedule deleted');
  }

  /**
   * Deleting or pausing a schedule also stops what it has sent and not finished: the occurrence on air, and
   * one sent ahead for its download that waits for its startAt on the devices. Otherwise a wrong bulletin
   * deleted in the minute before its slot would still air.
   */
  private stopSent(actor: Actor, schedule: ScheduleRow, now: Date, reason: string): void {
    // Prepared a few seconds ahead and not out yet: withdrawn, not stopped (a stop sent now would reach
    // the devices before the play).
    this.withdrawUnpublished?.(schedule.id, reason);
    for (const { slotAt } of this.repo.sentAndOpen(schedule.id, now)) {
      const { sessionId } = occurrencePlayIds(schedule.id, slotAt);
      try {
        this.stopSession?.(actor, sessionId, schedule);
      } catch (err) {
        // The schedule change is saved; the broadcaster can still stop the play by hand.
        this.log.error({ err, scheduleId: schedule.id, sessionId }, 'stopping a sent occurrence failed');
      }
    }
  }

  pause(actor: Actor, id: string): ScheduleView {
    this.requireRole(actor, 'pause schedules');
    const found = this.requireManageable(actor, id);
    const now = this.clock.now();
    const status = this.statusOf(found.schedule, now);
    if (status !== 'active') {
      throw new AppError(
        'invalid_transition',
        `The schedule is ${status}; only an active schedule can be paused`,
      );
    }
    this.repo.transaction(() => {
      this.repo.update(id, { pausedAt: now, updatedAt: now });
      this.audit.record(
        actor,
        'schedule.pause',
        { type: 'schedule', id },
        { programmeTitle: found.programmeTitle },
      );
    });
    this.changed();
    this.stopSent(actor, found.schedule, now, 'schedule paused');
    return this.get(actor, id);
  }

  resume(actor: Actor, id: string): ScheduleView {
    this.requireRole(actor, 'resume schedules');
    const found = this.requireManageable(actor, id);
    if (found.schedule.pausedAt === null) {
      throw new AppError(
        'invalid_transition',
        'The schedule is not paused; only a paused schedule can be resumed',
      );
    }
    const now = this.clock.now();
    this.repo.transaction(() => {
      this.repo.update(id, { pausedAt: null, updatedAt: now });
      this.audit.record(
        actor,
        'schedule.resume',
        { type: 'schedule', id },
        { programmeTitle: found.programmeTitle, pausedSince: found.schedule.pausedAt?.toISOString() },
      );
    });
    this.changed();
    return this.get(actor, id);
  }

  // ---------------------------------------------------------------- planning ahead

  /**
   * Plans the occurrences of every live schedule up to SCHEDULE_PLANNING_DAYS after `now` (the daily job).
   * One query when nothing is due. A schedule that fails (logged) does not stop the others.
   */
  planAhead(now: Date = this.clock.now()): { schedules: number; occurrences: number } {
    const horizon = planningHorizon(now);
    let planned = 0;
    let extended = 0;
    for (const schedule of this.repo.dueForPlanning(horizon)) {
      try {
        planned += this.planMore(schedule, now, horizon);
        extended++;
      } catch (err) {
        this.log.error({ err, scheduleId: schedule.id }, 'planning a schedule ahead failed');
      }
    }
    if (extended > 0) {
      this.log.info({ schedules: extended, occurrences: planned }, 'schedules planned ahead');
      if (planned > 0) this.changed();
    }
    return { schedules: extended, occurrences: planned };
  }

  /**
   * A new revision of the programme was approved. Occurrences still to be sent air it (the dispatcher reads
   * the approved revision when it sends), so where it lasts longer or shorter than what was planned, the
   * schedules airing it are planned again from now with its length: the end of each occurrence (the play's
   * expiry), appends after it and clashes follow. What was sent, or has started, stays. Never throws: the
   * approval is saved already; a schedule that fails is logged.
   */
  revisionApproved(programmeId: string): void {
    const now = this.clock.now();
    let lengthMs: number | null;
    try {
      lengthMs = this.programmes.scheduleInfo(null, programmeId).durationMs;
    } catch (err) {
      this.log.error({ err, programmeId }, 'reading a newly approved programme for its schedules failed');
      return;
    }
    // A relay lasts as long as each schedule says, whatever its revision.
    if (lengthMs === null) return;
    const horizon = planningHorizon(now);
    let replanned = 0;
    for (const schedule of this.repo.withPlannedLengthOtherThan(programmeId, now, lengthMs)) {
      try {
        const occurrences = this.planMore(schedule, now, horizon, true);
        this.audit.record(
          null,
          'schedule.replan',
          { type: 'schedule', id: schedule.id },
          { programmeId, reason: 'a revision of another length was approved', lengthMs, occurrences },
        );
        replanned++;
      } catch (err) {
        this.log.error({ err, scheduleId: schedule.id }, 'planning a schedule for a new revision failed');
      }
    }
    if (replanned > 0) {
      this.log.info({ programmeId, schedules: replanned }, 'schedules planned again for a new revision');
      this.changed();
    }
  }

  /**
   * Plans the schedule up to `horizon` after what is planned already (the daily job), or, with `replace`,
   * again from `now` (what was sent, or has started, stays); clashes are settled as the saved resolutions say.
   */
  private planMore(schedule: ScheduleRow, now: Date, horizon: Date, replace = false): number {
    const programme = this.programmes.scheduleInfo(null, schedule.programmeId);
    const params = this.planParams(schedule.timing, schedule.exceptDates, programme, schedule.durationS);
    const from = !replace && schedule.plannedUntil > now ? schedule.plannedUntil : now;
    const planned = planSlots(params, from, horizon);
    const deviceIds = resolveTargetDevices({ areas: this.areas, devices: this.devices }, schedule.targets);
    return this.repo.transaction(() => {
      let slots = planned;
      if (replace) {
        this.repo.deleteFuturePlanned(schedule.id, now);
        const kept = this.repo.slotsFrom(schedule.id, now);
        slots = planned.filter((s) => !kept.has(s.slotAt.getTime()));
      }
      // Clashes with occurrences planned since are settled as the saved resolutions say (this schedule's
      // and the others' against it); one no resolution covers is planned anyway: the calendar shows it,
      // and nobody is there to refuse.
      const outcome = this.conflicts.applyStored({
        scheduleId: schedule.id,
        priority: schedule.priority,
        deviceIds: new Set(deviceIds),
        slots,
        now,
      });
      const inserted = this.store(schedule.id, outcome, now);
      this.repo.update(schedule.id, {
        plannedUntil: plannedUntil(params, horizon),
        deviceCount: deviceIds.length,
      });
      return inserted;
    });
  }

  // ---------------------------------------------------------------- rules

  private requireRole(actor: Actor, what: string): void {
    if (!EDITORS.includes(actor.role)) throw forbidden(`Your role (${actor.role}) cannot ${what}`);
  }

  /**
   * Seen by those whose area it plays in: a target in their subtree, or a target area above them (a
   * district's schedule plays in each commune). 404 otherwise, so nothing outside the scope is revealed.
   */
  private requireVisible(actor: Actor, id: string): ScheduleWithNames {
    const found = this.repo.findById(id);
    if (!found) throw notFound('Schedule');
    if (actor.areaPath === null) return found;
    const targets = this.repo.targetsOf(id);
    const path = actor.areaPath;
    const visible = targets.some(
      (t) => inScope(actor, t.path) || (t.areaId !== null && path.startsWith(t.path)),
    );
    if (!visible) throw notFound('Schedule');
    return found;
  }

  /** Visible, and every target inside the actor's area: a commune cannot change the district's schedule. */
  private requireManageable(actor: Actor, id: string): ScheduleWithNames {
    const found = this.requireVisible(actor, id);
    const outside = this.repo.targetsOf(id).find((t) => !inScope(actor, t.path));
    if (outside) {
      throw forbidden(
        `The schedule also plays outside your area (${outside.areaId ? `area ${outside.areaId}` : `device ${outside.deviceId}`}); it is managed above you`,
      );
    }
    return found;
  }

  /**
   * Every target must exist and lie in the actor's area (404 / 403 naming the field). Returns the target rows
   * with the paths they lie in, for the schedule id given later.
   */
  private requireTargets(
    actor: Actor,
    targets: ScheduleTargets,
  ): (scheduleId: string) => ScheduleTargetRow[] {
    const areas = (targets.areaIds ?? []).map((areaId, i) =>
      this.areas.requireActionable(actor, areaId, `body.targets.areaIds.${i}`),
    );
    const devices = this.devices.requireActionableMany(
      actor,
      targets.deviceIds ?? [],
      'body.targets.deviceIds',
    );
    const uniqueAreas = [...new Map(areas.map((a) => [a.id, a])).values()];
    return (scheduleId) => [
      ...uniqueAreas.map((a) => ({ scheduleId, areaId: a.id, deviceId: null, path: a.path })),
      ...devices.map((d) => ({ scheduleId, areaId: null, deviceId: d.id, path: d.areaPath })),
    ];
  }

  /** The devices the targets reach now; at least one (an empty hamlet would air to nobody). */
  private requireDevices(targets: ScheduleTargets): string[] {
    const deviceIds = resolveTargetDevices({ areas: this.areas, devices: this.devices }, targets);
    if (deviceIds.length === 0) {
      throw invalid(
        'body.targets',
        'the areas named hold no device yet; a schedule must reach at least one device',
      );
    }
    return deviceIds;
  }

  /** A relay says how long it stays on the stream (required); a bulletin lasts as long as its revision. */
  private durationFor(programme: ScheduleProgramme, durationS: number | null): number | null {
    if (programme.kind === 'relay') {
      if (durationS === null) {
        throw invalid('body.durationS', 'required for a relay: how many seconds to stay on the stream');
      }
      return durationS;
    }
    if (durationS !== null) {
      throw invalid(
        'body.durationS',
        'only for relays: a bulletin airs as long as its approved revision lasts (leave durationS out)',
      );
    }
    return null;
  }

  private planParams(
    timing: Timing,
    exceptDates: readonly string[],
    programme: ScheduleProgramme,
    durationS: number | null,
  ): PlanParams {
    const file = programme.kind !== 'relay';
    const contentMs = file ? (programme.durationMs ?? 0) : (durationS ?? 0) * 1000;
    return { timing, exceptDates, contentMs, leadMs: file ? this.config.mediaLeadMs : 0 };
  }

  /** The occurrences a save plans: at least one to come (when the timing is new), none overlapping. */
  private planNew(params: PlanParams, now: Date, horizon: Date, timingGiven = true): PlannedSlot[] {
    const slots = planSlots(params, now, horizon);
    if (timingGiven && slots.length === 0 && plannedUntil(params, horizon) === PLANNED_FOREVER) {
      if (nextOccurrence(params.timing, new Date(now.getTime() - 1)) !== null) {
        throw invalid('body.exceptDates', 'skip every occurrence the timing has left; nothing would air');
      }
      throw invalid('body.timing', `has no occurrence after now (${localDateTime(now)})`);
    }
    requireNoSelfOverlap(slots);
    return slots;
  }

  /**
   * Inserts the planned occurrences with what the conflicts check settled: the others' occurrences they
   * override, those that override them (stored resolutions of others), the others' occurrences that move
   * after them (others' `append`), and this schedule's resolutions. Returns how many rows were inserted.
   */
  private store(scheduleId: string, outcome: ConflictOutcome & Partial<StoredOutcome>, now: Date): number {
    const ids = this.repo.insertOccurrences(scheduleId, outcome.slots);
    const overrides = outcome.overrides.flatMap((o) => {
      const byOccurrenceId = ids.get(o.slotAt.getTime());
      return byOccurrenceId === undefined ? [] : [{ occurrenceId: o.occurrenceId, byOccurrenceId }];
    });
    for (const o of outcome.overriddenBy ?? []) {
      const occurrenceId = ids.get(o.slotAt.getTime());
      if (occurrenceId !== undefined) overrides.push({ occurrenceId, byOccurrenceId: o.byOccurrenceId });
    }
    this.repo.insertOverrides(overrides);
    if (outcome.moved?.length) this.repo.moveOccurrences(outcome.moved);
    if (outcome.resolutions.length > 0) this.repo.saveResolutions(scheduleId, outcome.resolutions, now);
    return ids.size;
  }

  private changed(): void {
    try {
      this.onChange?.();
    } catch (err) {
      // The change is saved; the dispatcher finds it at its next wake-up anyway.
      this.log.error({ err }, 'waking the dispatcher failed');
    }
  }

  // ---------------------------------------------------------------- views

  private statusOf(schedule: ScheduleRow, now: Date): ScheduleStatus {
    const fullyPlanned = schedule.plannedUntil.getTime() >= PLANNED_FOREVER.getTime();
    if (fullyPlanned && !this.repo.hasLiveOccurrence(schedule.id, now)) return 'ended';
    return schedule.pausedAt !== null ? 'paused' : 'active';
  }

  private view(found: ScheduleWithNames, now: Date, nextPlanned: Date | undefined): ScheduleView {
    const { schedule } = found;
    const status = this.statusOf(schedule, now);
    let next: Date | null = null;
    if (status === 'active') {
      // Beyond the planned rows (a yearly cron, a `once` months ahead), the timing itself says.
      next =
        nextPlanned ??
        (schedule.plannedUntil < PLANNED_FOREVER
          ? (nextOccurrence(
              schedule.timing,
              new Date(Math.max(now.getTime(), schedule.plannedUntil.getTime()) - 1),
              schedule.exceptDates,
            )?.start ?? null)
          : null);
    }
    return {
      id: schedule.id,
      programme: { id: schedule.programmeId, title: found.programmeTitle, kind: found.programmeKind },
      targets: { areaIds: schedule.targets.areaIds ?? [], deviceIds: schedule.targets.deviceIds ?? [] },
      deviceCount: schedule.deviceCount,
      priority: schedule.priority,
      volume: schedule.volume,
      timing: schedule.timing,
      exceptDates: schedule.exceptDates,
      durationS: schedule.durationS,
      note: schedule.note,
      description: {
        vi: describeTiming(schedule.timing, 'vi', schedule.exceptDates),
        en: describeTiming(schedule.timing, 'en', schedule.exceptDates),
      },
      status,
      nextOccurrence: next ? localDateTime(next) : null,
      createdBy:
        schedule.createdBy && found.creatorName
          ? { id: schedule.createdBy, username: found.creatorName }
          : null,
      createdAt: localDateTime(schedule.createdAt),
      updatedAt: localDateTime(schedule.updatedAt),
    };
  }
}

/**
 * What an edit changed, field by field, as the audit keeps it: `{ timing: { from, to } }`. Only the fields
 * whose value differs, so the log says what the broadcaster really changed, not what the request repeated.
 */
function changesOf(
  before: ScheduleRow,
  after: Pick<ScheduleRow, (typeof AUDITED_FIELDS)[number]>,
): Record<string, { from: unknown; to: unknown }> {
  const changes: Record<string, { from: unknown; to: unknown }> = {};
  for (const field of AUDITED_FIELDS) {
    if (JSON.stringify(before[field]) !== JSON.stringify(after[field])) {
      changes[field] = { from: before[field], to: after[field] };
    }
  }
  return changes;
}

/** Targets as stored: only the lists given, without repeats, in the order given. */
function canonicalTargets(targets: ScheduleTargets): ScheduleTargets {
  return {
    ...(targets.areaIds?.length ? { areaIds: [...new Set(targets.areaIds)] } : {}),
    ...(targets.deviceIds?.length ? { deviceIds: [...new Set(targets.deviceIds)] } : {}),
  };
}
