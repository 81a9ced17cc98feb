/**
 * Calendar arithmetic of schedules: the `timing` forms of a schedule (issue 8), their validation, their
 * expansion into occurrences, the next occurrence after an instant, and their description in words.
 *
 * Time zone: every wall-clock time without an offset ("2026-12-01T06:00", "06:00", a cron expression, a
 * from/until/except date) is Asia/Ho_Chi_Minh local time, whatever `process.env.TZ` is. Nothing here reads
 * the process's local time: instants are `Date`s, and the conversions between instants and Vietnamese
 * wall-clock time go through `Intl` (for the fixed forms) and croner's `timezone` option (for cron).
 * Vietnam has had no daylight saving time since 1975, so a wall-clock time maps to exactly one instant; the
 * conversions are nonetheless written for any zone, so nothing silently depends on that.
 *
 * Pure functions only: no clock, no I/O. The caller passes the instants it cares about.
 */
import { Cron } from 'croner';
import cronstrue from 'cronstrue/i18n.js';
import { z } from 'zod';
import { AppError } from '../../errors.js';
import { TIMING_WORDS, describeDuration, joinList, type TimingLocale } from './timing.words.js';

export type { TimingLocale } from './timing.words.js';

export const TIME_ZONE = 'Asia/Ho_Chi_Minh';

/** Bounds of the timing forms. */
export const TIMING_LIMITS = {
  /** Distinct times in one day (daily and weekly). */
  timesPerDay: 24,
  repeatCount: { min: 2, max: 10 },
  repeatIntervalS: { min: 60, max: 7_200 },
  /** Dates outside these years are typing mistakes, not broadcast plans. */
  years: { min: 2000, max: 2100 },
  cronLength: 100,
  exceptDates: 366,
  /**
   * Most occurrences one `occurrences()` call returns. A `* * * * *` cron over a year is 525,600 of them;
   * the cap turns that into an explicit error instead of an exhausted process.
   */
  maxOccurrences: 10_000,
} as const;

export const WEEKDAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const;
export type Weekday = (typeof WEEKDAYS)[number];
/** JavaScript's getUTCDay() numbering (Sunday = 0), per weekday name. */
const WEEKDAY_NUMBER: Readonly<Record<Weekday, number>> = {
  sun: 0,
  mon: 1,
  tue: 2,
  wed: 3,
  thu: 4,
  fri: 5,
  sat: 6,
};

// ---------------------------------------------------------------------------------------------------------
// Calendar dates and wall-clock times (pure calendar arithmetic: no time zone involved)
// ---------------------------------------------------------------------------------------------------------

interface CalendarDate {
  year: number;
  month: number; // 1–12
  day: number;
}

const DATE_RE = /^(\d{4})-(\d{2})-(\d{2})$/;
const HHMM_RE = /^([01]\d|2[0-3]):([0-5]\d)$/;
const DATE_TIME_RE =
  /^(\d{4})-(\d{2})-(\d{2})T([01]\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?(Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)?$/;

/** A real calendar date (no 30 February), read from Y-M-D numbers. */
function calendarDate(year: number, month: number, day: number): CalendarDate | null {
  const d = new Date(Date.UTC(year, month - 1, day));
  // Date.UTC maps years 0–99 to 1900–1999; the year bounds below exclude them anyway.
  if (d.getUTCFullYear() !== year || d.getUTCMonth() !== month - 1 || d.getUTCDate() !== day) return null;
  return { year, month, day };
}

function parseDate(text: string): CalendarDate | null {
  const m = DATE_RE.exec(text);
  return m ? calendarDate(Number(m[1]), Number(m[2]), Number(m[3])) : null;
}

const formatDate = ({ year, month, day }: CalendarDate) =>
  `${String(year).padStart(4, '0')}-${String(month).padStart(2, '0')}-${String(day).padStart(2, '0')}`;

/** The calendar day after `date` (month ends, 29 February and year ends are Date.UTC's business). */
function nextDay({ year, month, day }: CalendarDate): CalendarDate {
  const d = new Date(Date.UTC(year, month - 1, day + 1));
  return { year: d.getUTCFullYear(), month: d.getUTCMonth() + 1, day: d.getUTCDate() };
}

/** The weekday of a calendar date, 0 = Sunday (a property of the date, not of a zone). */
const weekdayOf = ({ year, month, day }: CalendarDate) =>
  new Date(Date.UTC(year, month - 1, day)).getUTCDay();

function parseHhmm(text: string): { hour: number; minute: number } {
  const m = HHMM_RE.exec(text);
  if (!m) throw new Error(`not HH:MM: ${text}`);
  return { hour: Number(m[1]), minute: Number(m[2]) };
}

// ---------------------------------------------------------------------------------------------------------
// Instants ⇄ Vietnamese wall-clock time, through Intl
// ---------------------------------------------------------------------------------------------------------

interface WallTime extends CalendarDate {
  hour: number;
  minute: number;
  second: number;
}

const wallFormatter = new Intl.DateTimeFormat('en-US', {
  timeZone: TIME_ZONE,
  hourCycle: 'h23',
  year: 'numeric',
  month: 'numeric',
  day: 'numeric',
  hour: 'numeric',
  minute: 'numeric',
  second: 'numeric',
});

/** The wall-clock fields of an instant in TIME_ZONE, as Intl reads them (the slow, exact path). */
function intlWallTimeOf(instant: Date): WallTime {
  const f: Record<string, number> = {};
  for (const part of wallFormatter.formatToParts(instant)) {
    if (part.type !== 'literal') f[part.type] = Number(part.value);
  }
  return {
    year: f.year ?? NaN,
    month: f.month ?? NaN,
    day: f.day ?? NaN,
    hour: f.hour ?? NaN,
    minute: f.minute ?? NaN,
    second: f.second ?? NaN,
  };
}

function intlOffsetMs(instantMs: number): number {
  const w = intlWallTimeOf(new Date(instantMs));
  return (
    Date.UTC(w.year, w.month - 1, w.day, w.hour, w.minute, w.second) - Math.floor(instantMs / 1000) * 1000
  );
}

const HOUR_MS = 3_600_000;
/**
 * TIME_ZONE's offset per UTC hour, for the hours in which it does not change. formatToParts costs several
 * microseconds, and a month's calendar of thousands of schedules asks for hundreds of thousands of
 * conversions; with the cache they cost one Intl call per hour of the calendar. An hour is cached only when
 * Intl gives the same offset at its first and last millisecond, so a transition (in zones that have them)
 * always takes the exact path.
 */
const offsetByHour = new Map<number, number>();
const OFFSET_CACHE_SIZE = 100_000;

/** How far TIME_ZONE's wall clock is ahead of UTC at `instantMs` (whole seconds). */
function zoneOffsetMs(instantMs: number): number {
  const hour = Math.floor(instantMs / HOUR_MS);
  const cached = offsetByHour.get(hour);
  if (cached !== undefined) return cached;
  const atStart = intlOffsetMs(hour * HOUR_MS);
  if (atStart !== intlOffsetMs(hour * HOUR_MS + HOUR_MS - 1)) return intlOffsetMs(instantMs);
  if (offsetByHour.size >= OFFSET_CACHE_SIZE) offsetByHour.clear();
  offsetByHour.set(hour, atStart);
  return atStart;
}

/** The wall-clock fields of an instant in TIME_ZONE: the instant shifted by Intl's offset, read as UTC. */
function wallTimeOf(instant: Date): WallTime {
  const ms = Math.floor(instant.getTime() / 1000) * 1000;
  const shifted = new Date(ms + zoneOffsetMs(ms));
  return {
    year: shifted.getUTCFullYear(),
    month: shifted.getUTCMonth() + 1,
    day: shifted.getUTCDate(),
    hour: shifted.getUTCHours(),
    minute: shifted.getUTCMinutes(),
    second: shifted.getUTCSeconds(),
  };
}

/**
 * The instant at which TIME_ZONE's wall clock shows `wall`. The offset is read at a first guess and read
 * again at the result, which is exact wherever the offset does not change within a few hours of `wall` — in
 * Asia/Ho_Chi_Minh, everywhere.
 */
function instantOfWallTime(wall: CalendarDate & { hour: number; minute: number; second?: number }): Date {
  const asUtc = Date.UTC(wall.year, wall.month - 1, wall.day, wall.hour, wall.minute, wall.second ?? 0);
  const guess = asUtc - zoneOffsetMs(asUtc);
  return new Date(asUtc - zoneOffsetMs(guess));
}

const startOfLocalDay = (date: CalendarDate) => instantOfWallTime({ ...date, hour: 0, minute: 0 });

/** The Vietnamese calendar date of an instant: `localDate(new Date('2026-11-30T17:00:00Z'))` → "2026-12-01". */
export function localDate(date: Date): string {
  return formatDate(wallTimeOf(date));
}

/**
 * An instant as Vietnamese local time with its offset, to the second:
 * `localDateTime(new Date('2026-11-30T23:00:00Z'))` → "2026-12-01T06:00:00+07:00".
 */
export function localDateTime(date: Date): string {
  const w = wallTimeOf(date);
  const offsetMin = Math.round(zoneOffsetMs(date.getTime()) / 60_000);
  const sign = offsetMin < 0 ? '-' : '+';
  const abs = Math.abs(offsetMin);
  const p2 = (n: number) => String(n).padStart(2, '0');
  return (
    `${formatDate(w)}T${p2(w.hour)}:${p2(w.minute)}:${p2(w.second)}` +
    `${sign}${p2(Math.floor(abs / 60))}:${p2(abs % 60)}`
  );
}

// ---------------------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------------------

const inYears = (d: CalendarDate) => d.year >= TIMING_LIMITS.years.min && d.year <= TIMING_LIMITS.years.max;
const YEARS = `${TIMING_LIMITS.years.min}–${TIMING_LIMITS.years.max}`;

/** A Vietnamese local calendar date, "2026-12-01". */
export const localDateSchema = z
  .string()
  // abort: one message per mistake, not "not YYYY-MM-DD" followed by "not a date of the calendar".
  .regex(DATE_RE, { message: 'must be a date YYYY-MM-DD', abort: true })
  .refine((s) => parseDate(s) !== null, { message: 'is not a date of the calendar', abort: true })
  .refine((s) => inYears(parseDate(s) ?? { year: 0, month: 1, day: 1 }), `must be in the years ${YEARS}`)
  .describe('A date in Vietnam (Asia/Ho_Chi_Minh), YYYY-MM-DD');

/** A wall-clock time of day, "06:00" (00:00–23:59). */
export const hhmmSchema = z
  .string()
  .regex(HHMM_RE, 'must be a time HH:MM between 00:00 and 23:59')
  .describe('Wall-clock time in Vietnam, HH:MM');

/**
 * "2026-12-01T06:00" (Vietnamese wall-clock time) or with an explicit offset ("2026-12-01T06:00+07:00",
 * "2026-11-30T23:00Z"); seconds are optional, so that a `localDateTime()` answer can be sent back as is.
 */
export const onceDateTimeSchema = z
  .string()
  .regex(DATE_TIME_RE, {
    message: 'must be a date and time YYYY-MM-DDTHH:MM, optionally with an offset (+07:00)',
    abort: true,
  })
  .refine((s) => {
    const m = DATE_TIME_RE.exec(s);
    const d = m && calendarDate(Number(m[1]), Number(m[2]), Number(m[3]));
    return d !== null && inYears(d);
  }, `is not a date of the calendar in the years ${YEARS}`)
  .describe('Date and time; without an offset, wall-clock time in Vietnam (Asia/Ho_Chi_Minh)');

const timesSchema = z
  .array(hhmmSchema)
  .min(1, 'must list at least one time')
  .max(TIMING_LIMITS.timesPerDay, `must list at most ${TIMING_LIMITS.timesPerDay} times`)
  .refine((times) => new Set(times).size === times.length, 'must not list a time twice');

const daysSchema = z
  .array(z.enum(WEEKDAYS))
  .min(1, 'must list at least one day')
  .refine((days) => new Set(days).size === days.length, 'must not list a day twice');

/** A croner pattern in Asia/Ho_Chi_Minh; day of month and day of week combine with OR, as in classic cron. */
function cronPattern(expression: string): Cron {
  return new Cron(expression, { timezone: TIME_ZONE, mode: '5-part' });
}

/** Why croner refuses an expression, or null when it accepts it. */
function cronProblem(expression: string): string | null {
  const fields = expression.split(/\s+/);
  if (fields.length !== 5) {
    return `must have 5 fields (minute hour day-of-month month day-of-week), not ${fields.length}`;
  }
  try {
    // Whether it ever runs at all ("0 6 30 2 *" never does); croner answers that quickly.
    if (cronPattern(expression).nextRun(new Date(Date.UTC(TIMING_LIMITS.years.min, 0, 1))) === null) {
      return 'never runs (no date matches it)';
    }
    return null;
  } catch (err) {
    return (err instanceof Error ? err.message : String(err)).replace(/^CronPattern: /, '');
  }
}

export const cronExpressionSchema = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .max(TIMING_LIMITS.cronLength)
  .superRefine((expression, ctx) => {
    const problem = cronProblem(expression);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  })
  .describe(
    'A 5-field cron expression (minute hour day-of-month month day-of-week) in Vietnamese local time, as ' +
      'croner reads it: L (last day), W, # and names (MON-FRI) are accepted; day of month and day of week ' +
      'combine with OR',
  );

const repeatShape = {
  count: z.number().int().min(TIMING_LIMITS.repeatCount.min).max(TIMING_LIMITS.repeatCount.max),
  intervalS: z.number().int().min(TIMING_LIMITS.repeatIntervalS.min).max(TIMING_LIMITS.repeatIntervalS.max),
};
const REPEAT_DESCRIPTION =
  'Play the same slot `count` times in all, `intervalS` seconds apart (start to start)';
export const repeatSchema = z.strictObject(repeatShape).describe(REPEAT_DESCRIPTION);

/** Local dates to skip (Tết, a funeral in the hamlet): the slot's date counts, not its repeats'. */
export const exceptDatesSchema = z
  .array(localDateSchema)
  .max(TIMING_LIMITS.exceptDates)
  .refine((dates) => new Set(dates).size === dates.length, 'must not list a date twice');

const fromSchema = localDateSchema.describe('First day (inclusive), in Vietnam');
const untilSchema = localDateSchema.describe('Last day (inclusive), in Vietnam; none: no end');
const dailyShape = { times: timesSchema };
const weeklyShape = { days: daysSchema, times: timesSchema };

export const onceTimingSchema = z.strictObject({ once: onceDateTimeSchema, repeat: repeatSchema.optional() });
export const dailyTimingSchema = z.strictObject({
  daily: z.strictObject(dailyShape),
  from: fromSchema,
  until: untilSchema.optional(),
  repeat: repeatSchema.optional(),
});
export const weeklyTimingSchema = z.strictObject({
  weekly: z.strictObject(weeklyShape),
  from: fromSchema,
  until: untilSchema.optional(),
  repeat: repeatSchema.optional(),
});
export const cronTimingSchema = z.strictObject({
  cron: cronExpressionSchema,
  from: fromSchema,
  until: untilSchema.optional(),
  repeat: repeatSchema.optional(),
});

const KINDS = ['once', 'daily', 'weekly', 'cron'] as const;
export type TimingKind = (typeof KINDS)[number];

/**
 * An object that refuses unknown keys with an issue naming each, like `z.strictObject`, but as a `custom`
 * issue: zod 4 lets a pipe go on after an `unrecognized_keys` issue, and the union after the pipe in
 * `timingSchema` would then drop both the issue and the key, accepting `{ daily: { times, typo } }`.
 */
function closedObject<S extends z.ZodRawShape>(shape: S) {
  const known = Object.keys(shape);
  return z.looseObject(shape).superRefine((value, ctx) => {
    for (const key of Object.keys(value)) {
      if (!known.includes(key)) {
        ctx.addIssue({
          code: 'custom',
          path: [key],
          message: `unknown field (expected ${known.join(', ')})`,
        });
      }
    }
  });
}

/**
 * The timing of a schedule: exactly one of `once`, `daily`, `weekly`, `cron`, with `from`/`until` for the
 * recurring ones, and an optional `repeat`.
 *
 * Checked first as one object whose keys are all optional, then as the union of the four forms. A union
 * alone answers "Invalid input" at `timing` as soon as a form misses a key (zod cannot tell which form was
 * meant), where the first pass names the field (`timing.from: required with daily`); any issue there stops
 * the pipe, and the union then gives the parsed value its precise type.
 */
export const timingSchema = closedObject({
  once: onceDateTimeSchema.optional().describe('One broadcast at this date and time'),
  daily: closedObject(dailyShape).optional().describe('Every day at these times'),
  weekly: closedObject(weeklyShape).optional().describe('These days of the week at these times'),
  cron: cronExpressionSchema.optional(),
  from: fromSchema.optional().describe('First day (inclusive); required with daily, weekly and cron'),
  until: untilSchema.optional(),
  repeat: closedObject(repeatShape).optional().describe(REPEAT_DESCRIPTION),
})
  .superRefine((t, ctx) => {
    const kinds = KINDS.filter((k) => t[k] !== undefined);
    if (kinds.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          kinds.length === 0
            ? 'must have one of once, daily, weekly, cron'
            : `must have only one of once, daily, weekly, cron (not ${kinds.join(' and ')})`,
      });
      return;
    }
    const kind = kinds[0];
    if (kind === 'once') {
      for (const key of ['from', 'until'] as const) {
        if (t[key] !== undefined)
          ctx.addIssue({ code: 'custom', path: [key], message: 'not allowed with once' });
      }
      return;
    }
    if (t.from === undefined) {
      ctx.addIssue({ code: 'custom', path: ['from'], message: `required with ${kind}` });
      return;
    }
    const from = parseDate(t.from);
    const until = t.until === undefined ? null : parseDate(t.until);
    if (from && until && formatDate(until) < formatDate(from)) {
      ctx.addIssue({ code: 'custom', path: ['until'], message: 'must not be before from' });
    }
  })
  .pipe(z.union([onceTimingSchema, dailyTimingSchema, weeklyTimingSchema, cronTimingSchema]));

export type OnceTiming = z.infer<typeof onceTimingSchema>;
export type DailyTiming = z.infer<typeof dailyTimingSchema>;
export type WeeklyTiming = z.infer<typeof weeklyTimingSchema>;
export type CronTiming = z.infer<typeof cronTimingSchema>;
export type Repeat = z.infer<typeof repeatSchema>;
export type Timing = z.infer<typeof timingSchema>;

export function timingKind(timing: Timing): TimingKind {
  if ('once' in timing) return 'once';
  if ('daily' in timing) return 'daily';
  if ('weekly' in timing) return 'weekly';
  return 'cron';
}

// ---------------------------------------------------------------------------------------------------------
// Expansion
// ---------------------------------------------------------------------------------------------------------

export interface Occurrence {
  /** When this play starts. */
  start: Date;
  /** The first start of its slot; equal to `start` unless this is a repeat. */
  slot: Date;
  /** 0 for the slot itself, 1…count-1 for its repeats. */
  repeatIndex: number;
}

/** `occurrences()` would return more than TIMING_LIMITS.maxOccurrences; narrow the range. */
export class TooManyOccurrencesError extends AppError {
  override name = 'TooManyOccurrencesError';

  constructor(
    readonly limit: number,
    from: Date,
    to: Date,
  ) {
    super(
      'validation_failed',
      `More than ${limit} occurrences between ${localDateTime(from)} and ${localDateTime(to)}; ask for a shorter range`,
    );
  }
}

/** The instant of a `once` timing. */
export function onceInstant(timing: OnceTiming): Date {
  const m = DATE_TIME_RE.exec(timing.once);
  if (!m) throw new Error(`not a date and time: ${timing.once}`);
  // With an offset the string names an instant, which Date reads exactly (ISO 8601 with offset).
  if (m[7]) return new Date(timing.once);
  return instantOfWallTime({
    year: Number(m[1]),
    month: Number(m[2]),
    day: Number(m[3]),
    hour: Number(m[4]),
    minute: Number(m[5]),
    second: Number(m[6] ?? 0),
  });
}

/** [first instant, end instant) of the local days from..until; no end without until. */
function dayBounds(timing: DailyTiming | WeeklyTiming | CronTiming): { lo: Date; hi: Date | null } {
  const from = parseDate(timing.from);
  if (!from) throw new Error(`not a date: ${timing.from}`);
  const until = timing.until === undefined ? null : parseDate(timing.until);
  return { lo: startOfLocalDay(from), hi: until ? startOfLocalDay(nextDay(until)) : null };
}

const repeatSpanMs = (timing: Timing) =>
  timing.repeat ? (timing.repeat.count - 1) * timing.repeat.intervalS * 1000 : 0;

/**
 * The slots of a timing (first starts, without repeats), ascending, from `lo` (inclusive) on, within the
 * timing's own from/until and without the excepted local dates. Unbounded above: the caller stops pulling.
 */
function* slotsFrom(timing: Timing, lo: Date, except: ReadonlySet<string>): Generator<Date, void, undefined> {
  if ('once' in timing) {
    const at = onceInstant(timing);
    if (at >= lo && !except.has(localDate(at))) yield at;
    return;
  }
  const bounds = dayBounds(timing);
  const start = lo > bounds.lo ? lo : bounds.lo;
  const within = (d: Date) => bounds.hi === null || d < bounds.hi;

  if ('cron' in timing) {
    const pattern = cronPattern(timing.cron);
    // nextRun(prev) is strictly after prev, whole seconds; slots are whole minutes.
    let next = pattern.nextRun(new Date(start.getTime() - 1));
    while (next && within(next)) {
      const date = wallTimeOf(next);
      if (except.size > 0 && except.has(formatDate(date))) {
        // Jump over the whole excepted day rather than walk it minute by minute (`* * * * *`).
        next = pattern.nextRun(new Date(startOfLocalDay(nextDay(date)).getTime() - 1));
        continue;
      }
      yield next;
      next = pattern.nextRun(next);
    }
    return;
  }

  // Daily and weekly: walk the local calendar days, each day's times in order.
  const times = ('daily' in timing ? timing.daily.times : timing.weekly.times)
    .map(parseHhmm)
    .sort((a, b) => a.hour - b.hour || a.minute - b.minute);
  const weekdays = 'weekly' in timing ? new Set(timing.weekly.days.map((d) => WEEKDAY_NUMBER[d])) : null;
  const first = wallTimeOf(start);
  for (
    let day: CalendarDate = { year: first.year, month: first.month, day: first.day };
    ;
    day = nextDay(day)
  ) {
    if (bounds.hi !== null && startOfLocalDay(day) >= bounds.hi) return;
    if (weekdays && !weekdays.has(weekdayOf(day))) continue;
    if (except.size > 0 && except.has(formatDate(day))) continue;
    for (const time of times) {
      const at = instantOfWallTime({ ...day, ...time });
      if (at < start) continue;
      if (!within(at)) return;
      yield at;
    }
  }
}

function repeatsOf(timing: Timing, slot: Date): Occurrence[] {
  const count = timing.repeat?.count ?? 1;
  const intervalMs = (timing.repeat?.intervalS ?? 0) * 1000;
  return Array.from({ length: count }, (_, i) => ({
    start: new Date(slot.getTime() + i * intervalMs),
    slot,
    repeatIndex: i,
  }));
}

const byStart = (a: Occurrence, b: Occurrence) =>
  a.start.getTime() - b.start.getTime() || a.slot.getTime() - b.slot.getTime();

export interface OccurrenceRange {
  /** Inclusive. */
  from: Date;
  /** Exclusive. */
  to: Date;
  /** Local dates (YYYY-MM-DD) whose slots are skipped, repeats included (a 23:30 slot's 00:10 repeat too). */
  exceptDates?: readonly string[];
  /** Lower the cap (default TIMING_LIMITS.maxOccurrences), never raise it beyond what memory allows. */
  limit?: number;
}

/**
 * Every occurrence whose start is in [from, to), sorted by start (then slot). A repeat belongs to its slot:
 * a slot before `from` whose repeat falls inside is included (with its earlier `slot`), and the slot's
 * local date decides the from/until and except rules for its repeats.
 *
 * @throws TooManyOccurrencesError beyond `limit` occurrences.
 */
export function occurrences(timing: Timing, range: OccurrenceRange): Occurrence[] {
  const limit = range.limit ?? TIMING_LIMITS.maxOccurrences;
  const except = new Set(range.exceptDates ?? []);
  const out: Occurrence[] = [];
  if (!(range.from < range.to)) return out;
  for (const slot of slotsFrom(timing, new Date(range.from.getTime() - repeatSpanMs(timing)), except)) {
    if (slot >= range.to) break;
    for (const occurrence of repeatsOf(timing, slot)) {
      if (occurrence.start < range.from || occurrence.start >= range.to) continue;
      if (out.length === limit) throw new TooManyOccurrencesError(limit, range.from, range.to);
      out.push(occurrence);
    }
  }
  return out.sort(byStart);
}

/**
 * The first occurrence starting strictly after `after`, or null when there is none (a past `once`, a
 * schedule past its `until`). With overlapping repeats the earliest start wins, whichever slot it belongs to.
 */
export function nextOccurrence(
  timing: Timing,
  after: Date,
  exceptDates?: readonly string[],
): Occurrence | null {
  const except = new Set(exceptDates ?? []);
  let best: Occurrence | null = null;
  for (const slot of slotsFrom(timing, new Date(after.getTime() - repeatSpanMs(timing)), except)) {
    // Every start of this slot and of the later ones is at or after `slot`.
    if (best && slot >= best.start) break;
    const candidate = repeatsOf(timing, slot).find((o) => o.start > after);
    if (candidate && (!best || byStart(candidate, best) < 0)) best = candidate;
  }
  return best;
}

// ---------------------------------------------------------------------------------------------------------
// Words
// ---------------------------------------------------------------------------------------------------------

interface CronstrueI18n {
  toString(
    expression: string,
    options: { locale: string; use24HourTimeFormat: boolean; throwExceptionOnParseError: boolean },
  ): string;
}
// cronstrue's typings declare the default export as its descriptor class, whose static toString TypeScript
// mistakes for Function.prototype.toString; the runtime object is the one described here.
const cronWords = cronstrue as unknown as CronstrueI18n;

function describeLocalDate(text: string, locale: TimingLocale): string {
  const d = parseDate(text);
  return d ? TIMING_WORDS[locale].date(d.year, d.month, d.day) : text;
}

const sortedTimes = (times: readonly string[]) => [...times].sort();

/** Skipped dates named in a description; the rest are counted ("và 3 ngày khác"), so a year of them stays short. */
const EXCEPT_DATES_NAMED = 10;

/**
 * The timing in words, as the API answer shows it, with the skipped dates last:
 * "Hằng ngày lúc 06:00 và 17:00, từ 01/12/2026 đến 31/12/2026; trừ ngày 24/12/2026".
 */
export function describeTiming(
  timing: Timing,
  locale: TimingLocale,
  exceptDates: readonly string[] = [],
): string {
  const words = TIMING_WORDS[locale];
  const list = (items: readonly string[]) => joinList(items, words.and);
  let text: string;
  if ('once' in timing) {
    const w = wallTimeOf(onceInstant(timing));
    const hhmm = `${String(w.hour).padStart(2, '0')}:${String(w.minute).padStart(2, '0')}`;
    text = words.once(hhmm, words.date(w.year, w.month, w.day));
  } else {
    let what: string;
    if ('daily' in timing) {
      what = words.daily(list(sortedTimes(timing.daily.times)));
    } else if ('weekly' in timing) {
      const days = WEEKDAYS.filter((d) => timing.weekly.days.includes(d)).map((d) => words.days[d]);
      what = words.weekly(list(days), list(sortedTimes(timing.weekly.times)));
    } else {
      try {
        what = cronWords.toString(timing.cron, {
          locale,
          use24HourTimeFormat: true,
          throwExceptionOnParseError: true,
        });
      } catch {
        what = words.cronFallback(timing.cron);
      }
    }
    const from = describeLocalDate(timing.from, locale);
    const period =
      timing.until === undefined
        ? words.from(from)
        : words.fromUntil(from, describeLocalDate(timing.until, locale));
    text = `${what}, ${period}`;
  }
  if (timing.repeat) {
    text += `; ${words.repeat(timing.repeat.count, describeDuration(timing.repeat.intervalS, words))}`;
  }
  if (exceptDates.length > 0) {
    const sorted = [...exceptDates].sort();
    const named = sorted.slice(0, EXCEPT_DATES_NAMED).map((d) => describeLocalDate(d, locale));
    const more = sorted.length - named.length;
    text += `; ${words.except(list(more > 0 ? [...named, words.moreDays(more)] : named))}`;
  }
  return text;
}

/** A day ("2026-12-01", the whole day) or an instant ("2026-12-01T06:00", local unless it has an offset). */
export const dayOrInstantSchema = z
  .union([localDateSchema, onceDateTimeSchema], {
    error:
      'must be a date YYYY-MM-DD or a date and time YYYY-MM-DDTHH:MM (Vietnam time unless an offset is given)',
  })
  .describe('A date (YYYY-MM-DD) or date and time, in Vietnam (Asia/Ho_Chi_Minh) unless an offset is given');

/** A `from`/`to` query value as an instant: a date is its first instant, or (`end`) the next day's. */
export function rangeInstant(value: string, end: boolean): Date {
  if (value.includes('T')) return onceInstant({ once: value });
  const start = onceInstant({ once: `${value}T00:00` });
  if (!end) return start;
  // The next calendar day in Vietnam, whatever its length: the date 36 h on, at its midnight.
  return onceInstant({ once: `${localDate(new Date(start.getTime() + 36 * 3_600_000))}T00:00` });
}
