/**
 * Planning: turning a schedule's timing into the rows of schedule_occurrences the dispatcher sends.
 *
 * Occurrences are planned SCHEDULE_PLANNING_DAYS ahead, when a schedule is saved and then by a daily job;
 * `schedules.planned_until` says how far a schedule is planned. Beyond the last occurrence a timing ever
 * has (a `once`, a daily with `until`), there is nothing left to plan: planned_until is set to
 * PLANNED_FOREVER, so the daily job never looks at that schedule again.
 *
 * Pure functions: the caller passes the instants and the content's length.
 */
import { AppError, invalid } from '../../errors.js';
import { derivedId } from '../../lib/ids.js';
import {
  TIMING_LIMITS,
  TooManyOccurrencesError,
  localDateTime,
  nextOccurrence,
  occurrences,
  type Timing,
} from './timing.js';

/** How far ahead occurrences exist as rows; more than the 90 days conflicts are checked over. */
export const SCHEDULE_PLANNING_DAYS = 92;

/**
 * The play command and session of an occurrence, named by (schedule, slot): the dispatcher sends them, and
 * a crash that makes it send again sends the same ids, which devices recognise.
 */
export function occurrencePlayIds(
  scheduleId: string,
  slotAt: Date,
): { commandId: string; sessionId: string } {
  const slot = slotAt.toISOString();
  return { commandId: derivedId('cmd', scheduleId, slot), sessionId: derivedId('ses', scheduleId, slot) };
}

const DAY_MS = 86_400_000;

/** planned_until of a schedule whose timing has no occurrence left to plan (stored as an integer). */
export const PLANNED_FOREVER = new Date(Date.UTC(9999, 11, 31));

/** One occurrence as planned, before it is a row (src/db/schema/schedules.ts explains each instant). */
export interface PlannedSlot {
  /** The start the timing gives (a repeat has its own); names the occurrence with the schedule forever. */
  slotAt: Date;
  /** When it airs: slotAt, or later when appended after another schedule's occurrence. */
  startsAt: Date;
  /** startsAt + the content's length: the play expires then. */
  endsAt: Date;
  /** When the dispatcher sends it: startsAt, less the media lead for a file devices download first. */
  dueAt: Date;
}

export interface PlanParams {
  timing: Timing;
  exceptDates: readonly string[];
  /** How long one occurrence airs: the approved revision's length (files), durationS × 1000 (relays). */
  contentMs: number;
  /** Sent this much before the start (config.schedules.mediaLeadMs for files, 0 for relays). */
  leadMs: number;
}

/** End of the planning window that starts at `now`. */
export function planningHorizon(now: Date): Date {
  return new Date(now.getTime() + SCHEDULE_PLANNING_DAYS * DAY_MS);
}

/** The slot of an occurrence that starts at `startsAt` (append moves startsAt; the rest follows). */
export function slotStartingAt(
  slotAt: Date,
  startsAt: Date,
  params: Pick<PlanParams, 'contentMs' | 'leadMs'>,
) {
  return {
    slotAt,
    startsAt,
    endsAt: new Date(startsAt.getTime() + params.contentMs),
    dueAt: new Date(startsAt.getTime() - params.leadMs),
  };
}

/**
 * The occurrences whose start is in [from, to), as planned rows, sorted by start.
 *
 * @throws AppError validation_failed (field `body.timing`) when the window holds more occurrences than
 *   TIMING_LIMITS.maxOccurrences: a timing that dense (a cron every minute) is a mistake, not a plan.
 */
export function planSlots(params: PlanParams, from: Date, to: Date): PlannedSlot[] {
  let list;
  try {
    list = occurrences(params.timing, { from, to, exceptDates: params.exceptDates });
  } catch (err) {
    if (!(err instanceof TooManyOccurrencesError)) throw err;
    throw invalid(
      'body.timing',
      `more than ${TIMING_LIMITS.maxOccurrences} occurrences between ${localDateTime(from)} and ` +
        `${localDateTime(to)}; a schedule that dense is not a broadcast plan`,
    );
  }
  return list.map((o) => slotStartingAt(o.start, o.start, params));
}

/**
 * What planned_until becomes once [.., to) is planned: `to`, or PLANNED_FOREVER when the timing has no
 * occurrence at or after `to` (nothing will ever be left to plan).
 */
export function plannedUntil(params: Pick<PlanParams, 'timing' | 'exceptDates'>, to: Date): Date {
  const next = nextOccurrence(params.timing, new Date(to.getTime() - 1), params.exceptDates);
  return next ? to : PLANNED_FOREVER;
}

/**
 * A device cannot play two things at once, and that holds within one schedule too: a 5-minute bulletin
 * repeated every 60 s, or 06:00 and 06:02 with a 10-minute relay, overlaps itself. Refused, naming the
 * first pair, so the broadcaster fixes the timing or the length.
 */
export function requireNoSelfOverlap(slots: readonly PlannedSlot[], field = 'body.timing'): void {
  for (let i = 1; i < slots.length; i++) {
    const previous = slots[i - 1]!;
    const slot = slots[i]!;
    if (slot.startsAt < previous.endsAt) {
      throw new AppError(
        'validation_failed',
        `${field}: the occurrence at ${localDateTime(slot.startsAt)} starts before the one at ` +
          `${localDateTime(previous.startsAt)} ends (${localDateTime(previous.endsAt)}); space the times ` +
          'further apart or shorten the programme',
        {
          errors: [
            {
              field,
              message: `occurrences overlap: ${localDateTime(slot.startsAt)} starts before ${localDateTime(previous.endsAt)}`,
            },
          ],
        },
      );
    }
  }
}
