import { execFile } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { AppError } from '../src/errors.js';
import {
  TIME_ZONE,
  TIMING_LIMITS,
  TooManyOccurrencesError,
  describeTiming,
  localDate,
  localDateTime,
  nextOccurrence,
  occurrences,
  timingSchema,
  type Occurrence,
  type Timing,
} from '../src/modules/schedules/timing.js';

const run = promisify(execFile);

/** Parses like the API will, so every test goes through the schema. */
const timing = (input: unknown): Timing => timingSchema.parse(input);

/** A Vietnamese wall-clock time as an instant, written out (Vietnam is UTC+07:00 all year). */
const vn = (wall: string) => new Date(`${wall}+07:00`);

const starts = (list: Occurrence[]) => list.map((o) => localDateTime(o.start));

/** The issues of a refused timing as "path: message". */
function refusal(input: unknown): string[] {
  const result = timingSchema.safeParse(input);
  if (result.success) throw new Error(`accepted: ${JSON.stringify(input)}`);
  return result.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
}

describe('schedule timing', () => {
  it('runs under a process TZ other than Vietnam (vitest sets America/New_York)', () => {
    expect(process.env.TZ).toBe('America/New_York');
    expect(new Date(Date.UTC(2026, 11, 1)).getTimezoneOffset()).toBe(300);
    expect(TIME_ZONE).toBe('Asia/Ho_Chi_Minh');
  });

  describe('local time helpers', () => {
    it('show an instant as Vietnamese local date and time with +07:00', () => {
      expect(localDateTime(new Date('2026-11-30T23:00:00Z'))).toBe('2026-12-01T06:00:00+07:00');
      expect(localDateTime(new Date('2026-11-30T17:00:00Z'))).toBe('2026-12-01T00:00:00+07:00');
      expect(localDate(new Date('2026-11-30T17:00:00Z'))).toBe('2026-12-01');
      expect(localDate(new Date('2026-11-30T16:59:59Z'))).toBe('2026-11-30');
      expect(localDate(new Date('2028-02-28T17:00:00Z'))).toBe('2028-02-29');
    });
  });

  describe('once', () => {
    const month = { from: vn('2026-12-01T00:00'), to: vn('2027-01-01T00:00') };

    it('reads a time without offset as Vietnamese wall-clock time', () => {
      const list = occurrences(timing({ once: '2026-12-01T06:00' }), month);
      expect(list).toEqual([
        { start: new Date('2026-11-30T23:00:00Z'), slot: new Date('2026-11-30T23:00:00Z'), repeatIndex: 0 },
      ]);
    });

    it('honours an explicit offset, and accepts a localDateTime() answer sent back', () => {
      expect(starts(occurrences(timing({ once: '2026-12-01T06:00+09:00' }), month))).toEqual([
        '2026-12-01T04:00:00+07:00',
      ]);
      expect(starts(occurrences(timing({ once: '2026-11-30T23:00Z' }), month))).toEqual([
        '2026-12-01T06:00:00+07:00',
      ]);
      const echoed = localDateTime(new Date('2026-12-24T12:30:00Z'));
      expect(starts(occurrences(timing({ once: echoed }), month))).toEqual(['2026-12-24T19:30:00+07:00']);
    });

    it('is empty outside the range, and has no next occurrence once past', () => {
      const t = timing({ once: '2027-01-01T00:00' });
      expect(occurrences(t, month)).toEqual([]);
      expect(nextOccurrence(t, vn('2026-12-31T23:59'))?.start).toEqual(vn('2027-01-01T00:00'));
      expect(nextOccurrence(t, vn('2027-01-01T00:00'))).toBeNull();
    });
  });

  describe('daily and weekly', () => {
    it('expands two times a day, in order, from and until inclusive', () => {
      const t = timing({ daily: { times: ['17:00', '06:00'] }, from: '2026-12-01', until: '2026-12-03' });
      expect(starts(occurrences(t, { from: vn('2026-11-01T00:00'), to: vn('2027-01-01T00:00') }))).toEqual([
        '2026-12-01T06:00:00+07:00',
        '2026-12-01T17:00:00+07:00',
        '2026-12-02T06:00:00+07:00',
        '2026-12-02T17:00:00+07:00',
        '2026-12-03T06:00:00+07:00',
        '2026-12-03T17:00:00+07:00',
      ]);
    });

    it('includes the first minute of `from` and the last minute of `until`, nothing beyond', () => {
      const t = timing({ daily: { times: ['00:00', '23:59'] }, from: '2026-12-01', until: '2026-12-02' });
      const wide = { from: vn('2026-11-30T00:00'), to: vn('2026-12-04T00:00') };
      expect(starts(occurrences(t, wide))).toEqual([
        '2026-12-01T00:00:00+07:00',
        '2026-12-01T23:59:00+07:00',
        '2026-12-02T00:00:00+07:00',
        '2026-12-02T23:59:00+07:00',
      ]);
      // The range itself is [from, to): a start exactly at `to` is left out, one exactly at `from` is in.
      expect(starts(occurrences(t, { from: vn('2026-12-01T23:59'), to: vn('2026-12-02T23:59') }))).toEqual([
        '2026-12-01T23:59:00+07:00',
        '2026-12-02T00:00:00+07:00',
      ]);
      expect(nextOccurrence(t, vn('2026-12-02T23:59'))).toBeNull();
    });

    it('crosses month ends and 29 February', () => {
      const t = timing({ daily: { times: ['06:00'] }, from: '2028-02-27', until: '2028-03-01' });
      expect(
        occurrences(t, { from: vn('2028-01-01T00:00'), to: vn('2029-01-01T00:00') }).map((o) =>
          localDate(o.start),
        ),
      ).toEqual(['2028-02-27', '2028-02-28', '2028-02-29', '2028-03-01']);
      const yearEnd = timing({ daily: { times: ['06:00'] }, from: '2026-12-30' });
      expect(
        occurrences(yearEnd, { from: vn('2026-12-01T00:00'), to: vn('2027-01-03T00:00') }).map((o) =>
          localDate(o.start),
        ),
      ).toEqual(['2026-12-30', '2026-12-31', '2027-01-01', '2027-01-02']);
    });

    it('expands weekly days (Monday, Wednesday, Friday)', () => {
      // 2026-12-01 is a Tuesday, 2026-12-14 a Monday.
      const t = timing({
        weekly: { days: ['fri', 'mon', 'wed'], times: ['07:30'] },
        from: '2026-12-01',
        until: '2026-12-14',
      });
      expect(starts(occurrences(t, { from: vn('2026-11-01T00:00'), to: vn('2027-01-01T00:00') }))).toEqual([
        '2026-12-02T07:30:00+07:00',
        '2026-12-04T07:30:00+07:00',
        '2026-12-07T07:30:00+07:00',
        '2026-12-09T07:30:00+07:00',
        '2026-12-11T07:30:00+07:00',
        '2026-12-14T07:30:00+07:00',
      ]);
      expect(localDateTime(nextOccurrence(t, vn('2026-12-02T07:30'))!.start)).toBe(
        '2026-12-04T07:30:00+07:00',
      );
    });

    it('skips the except dates (Tết Đinh Mùi 2027)', () => {
      const t = timing({ daily: { times: ['06:00'] }, from: '2027-02-01', until: '2027-02-12' });
      const tet = ['2027-02-05', '2027-02-06', '2027-02-07', '2027-02-08'];
      const list = occurrences(t, {
        from: vn('2027-01-01T00:00'),
        to: vn('2027-03-01T00:00'),
        exceptDates: tet,
      });
      expect(list.map((o) => localDate(o.start))).toEqual([
        '2027-02-01',
        '2027-02-02',
        '2027-02-03',
        '2027-02-04',
        '2027-02-09',
        '2027-02-10',
        '2027-02-11',
        '2027-02-12',
      ]);
      expect(localDate(nextOccurrence(t, vn('2027-02-04T06:00'), tet)!.start)).toBe('2027-02-09');
    });
  });

  describe('cron', () => {
    const dates = (t: Timing, from: string, to: string, exceptDates?: string[]) =>
      occurrences(t, { from: vn(from), to: vn(to), exceptDates }).map((o) => localDateTime(o.start));

    it('runs on weekdays only with 1-5', () => {
      // 2026-12-05 is a Saturday.
      const t = timing({ cron: '0 6 * * 1-5', from: '2026-12-01' });
      expect(dates(t, '2026-12-05T00:00', '2026-12-12T00:00')).toEqual([
        '2026-12-07T06:00:00+07:00',
        '2026-12-08T06:00:00+07:00',
        '2026-12-09T06:00:00+07:00',
        '2026-12-10T06:00:00+07:00',
        '2026-12-11T06:00:00+07:00',
      ]);
    });

    it('finds the last day of each month, 29 February included', () => {
      const t = timing({ cron: '0 6 L * *', from: '2027-01-01' });
      expect(dates(t, '2028-01-01T00:00', '2028-05-01T00:00')).toEqual([
        '2028-01-31T06:00:00+07:00',
        '2028-02-29T06:00:00+07:00',
        '2028-03-31T06:00:00+07:00',
        '2028-04-30T06:00:00+07:00',
      ]);
      const lastFriday = timing({ cron: '30 17 * * 5L', from: '2026-12-01' });
      expect(dates(lastFriday, '2026-12-01T00:00', '2027-01-01T00:00')).toEqual([
        '2026-12-25T17:30:00+07:00',
      ]);
    });

    it('finds only leap years for 29 February', () => {
      const t = timing({ cron: '0 6 29 2 *', from: '2026-01-01' });
      expect(dates(t, '2026-01-01T00:00', '2037-01-01T00:00')).toEqual([
        '2028-02-29T06:00:00+07:00',
        '2032-02-29T06:00:00+07:00',
        '2036-02-29T06:00:00+07:00',
      ]);
      expect(localDateTime(nextOccurrence(t, vn('2026-01-01T00:00'))!.start)).toBe(
        '2028-02-29T06:00:00+07:00',
      );
    });

    it('honours from/until inclusively and except dates, jumping over a whole excepted day', () => {
      const t = timing({ cron: '*/30 * * * *', from: '2027-02-05', until: '2027-02-07' });
      const list = dates(t, '2027-01-01T00:00', '2027-03-01T00:00', ['2027-02-06']);
      expect(list).toHaveLength(96);
      expect(list[0]).toBe('2027-02-05T00:00:00+07:00');
      expect(list[47]).toBe('2027-02-05T23:30:00+07:00');
      expect(list[48]).toBe('2027-02-07T00:00:00+07:00');
      expect(list[95]).toBe('2027-02-07T23:30:00+07:00');
      expect(nextOccurrence(t, vn('2027-02-05T23:30'), ['2027-02-06'])?.start).toEqual(
        vn('2027-02-07T00:00'),
      );
    });
  });

  describe('repeat', () => {
    it('plays the same slot again count times, intervalS apart, each tied to its slot', () => {
      const t = timing({
        daily: { times: ['06:00'] },
        from: '2026-12-01',
        until: '2026-12-01',
        repeat: { count: 3, intervalS: 600 },
      });
      const slot = vn('2026-12-01T06:00');
      expect(occurrences(t, { from: vn('2026-12-01T00:00'), to: vn('2026-12-02T00:00') })).toEqual([
        { start: slot, slot, repeatIndex: 0 },
        { start: vn('2026-12-01T06:10'), slot, repeatIndex: 1 },
        { start: vn('2026-12-01T06:20'), slot, repeatIndex: 2 },
      ]);
      // A range starting after the slot still finds its repeats, with the slot they belong to.
      expect(occurrences(t, { from: vn('2026-12-01T06:05'), to: vn('2026-12-02T00:00') })).toEqual([
        { start: vn('2026-12-01T06:10'), slot, repeatIndex: 1 },
        { start: vn('2026-12-01T06:20'), slot, repeatIndex: 2 },
      ]);
      expect(nextOccurrence(t, vn('2026-12-01T06:05'))).toEqual({
        start: vn('2026-12-01T06:10'),
        slot,
        repeatIndex: 1,
      });
      expect(nextOccurrence(t, vn('2026-12-01T06:20'))).toBeNull();
    });

    it('crosses midnight from a 23:30 slot; except dates apply to the slot’s date', () => {
      const t = timing({
        daily: { times: ['23:30'] },
        from: '2026-12-01',
        until: '2026-12-02',
        repeat: { count: 3, intervalS: 1200 },
      });
      const list = occurrences(t, {
        from: vn('2026-12-01T00:00'),
        to: vn('2026-12-04T00:00'),
        exceptDates: ['2026-12-02'],
      });
      // The 00:10 repeat is on 2 December but belongs to the slot of 1 December, which is not excepted;
      // the slot of 2 December is excepted with all its repeats.
      expect(list.map((o) => [localDateTime(o.start), localDate(o.slot), o.repeatIndex])).toEqual([
        ['2026-12-01T23:30:00+07:00', '2026-12-01', 0],
        ['2026-12-01T23:50:00+07:00', '2026-12-01', 1],
        ['2026-12-02T00:10:00+07:00', '2026-12-01', 2],
      ]);
      // And `until` is the last slot's date: the 2 December slot's repeat on 3 December is in.
      const noExcept = occurrences(t, { from: vn('2026-12-03T00:00'), to: vn('2026-12-04T00:00') });
      expect(noExcept.map((o) => [localDateTime(o.start), localDate(o.slot)])).toEqual([
        ['2026-12-03T00:10:00+07:00', '2026-12-02'],
      ]);
    });

    it('sorts overlapping repeats of neighbouring slots by start, and the next one is the earliest', () => {
      const t = timing({
        daily: { times: ['06:00', '06:15'] },
        from: '2026-12-01',
        until: '2026-12-01',
        repeat: { count: 3, intervalS: 600 },
      });
      const list = occurrences(t, { from: vn('2026-12-01T00:00'), to: vn('2026-12-02T00:00') });
      expect(
        list.map((o) => [localDateTime(o.start).slice(11, 16), localDateTime(o.slot).slice(11, 16)]),
      ).toEqual([
        ['06:00', '06:00'],
        ['06:10', '06:00'],
        ['06:15', '06:15'],
        ['06:20', '06:00'],
        ['06:25', '06:15'],
        ['06:35', '06:15'],
      ]);
      expect(nextOccurrence(t, vn('2026-12-01T06:12'))).toMatchObject({
        start: vn('2026-12-01T06:15'),
        repeatIndex: 0,
      });
      expect(nextOccurrence(t, vn('2026-12-01T06:16'))).toMatchObject({
        start: vn('2026-12-01T06:20'),
        slot: vn('2026-12-01T06:00'),
        repeatIndex: 2,
      });
    });
  });

  describe('the cap', () => {
    it('refuses to expand more than the limit, with an explicit error', () => {
      const everyMinute = timing({ cron: '* * * * *', from: '2026-01-01' });
      const year = { from: vn('2026-01-01T00:00'), to: vn('2027-01-01T00:00') };
      let caught: unknown;
      try {
        occurrences(everyMinute, year);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(TooManyOccurrencesError);
      expect(caught).toBeInstanceOf(AppError);
      expect(caught).toMatchObject({
        code: 'validation_failed',
        status: 400,
        limit: TIMING_LIMITS.maxOccurrences,
      });
      expect((caught as Error).message).toContain(`More than ${TIMING_LIMITS.maxOccurrences} occurrences`);
      expect((caught as Error).message).toContain('2026-01-01T00:00:00+07:00');
    });

    it('allows exactly the limit, and a caller can lower it', () => {
      const everyMinute = timing({ cron: '* * * * *', from: '2026-01-01' });
      const tenMinutes = { from: vn('2026-01-01T00:00'), to: vn('2026-01-01T00:10') };
      expect(occurrences(everyMinute, { ...tenMinutes, limit: 10 })).toHaveLength(10);
      expect(() => occurrences(everyMinute, { ...tenMinutes, limit: 9 })).toThrow(TooManyOccurrencesError);
    });
  });

  describe('validation', () => {
    it('names the field of each mistake', () => {
      expect(refusal({ daily: { times: ['06:00', '24:00'] }, from: '2026-12-01' })).toEqual([
        'daily.times.1: must be a time HH:MM between 00:00 and 23:59',
      ]);
      expect(refusal({ daily: { times: ['6:00'] }, from: '2026-12-01' })).toEqual([
        'daily.times.0: must be a time HH:MM between 00:00 and 23:59',
      ]);
      expect(refusal({ cron: '0 0 6 * * *', from: '2026-12-01' })).toEqual([
        'cron: must have 5 fields (minute hour day-of-month month day-of-week), not 6',
      ]);
      expect(refusal({ cron: '0 25 * * *', from: '2026-12-01' })).toEqual([
        'cron: Invalid value for hour: 25',
      ]);
      expect(refusal({ cron: '0 6 30 2 *', from: '2026-12-01' })).toEqual([
        'cron: never runs (no date matches it)',
      ]);
      expect(refusal({ daily: { times: ['06:00'] }, from: '2026-12-31', until: '2026-12-01' })).toEqual([
        'until: must not be before from',
      ]);
      expect(
        refusal({ weekly: { days: ['mon', 'funday'], times: ['07:30'] }, from: '2026-12-01' })[0],
      ).toMatch(/^weekly\.days\.1: /);
      expect(refusal({ weekly: { days: ['mon', 'mon'], times: ['07:30'] }, from: '2026-12-01' })).toEqual([
        'weekly.days: must not list a day twice',
      ]);
      expect(refusal({ daily: { times: ['06:00', '06:00'] }, from: '2026-12-01' })).toEqual([
        'daily.times: must not list a time twice',
      ]);
      expect(refusal({ daily: { times: ['06:00'] } })).toEqual(['from: required with daily']);
      expect(refusal({ daily: { times: ['06:00'] }, from: '2027-02-29' })).toEqual([
        'from: is not a date of the calendar',
      ]);
      expect(refusal({ once: '2026-12-01T06:00', from: '2026-12-01' })).toEqual([
        'from: not allowed with once',
      ]);
      expect(refusal({ once: '2026-12-01 06:00' })[0]).toMatch(/^once: must be a date and time/);
      expect(refusal({ once: '2026-12-01T06:00', repeat: { count: 11, intervalS: 30 } })).toEqual([
        'repeat.count: Too big: expected number to be <=10',
        'repeat.intervalS: Too small: expected number to be >=60',
      ]);
    });

    it('refuses no form, two forms, unknown keys at any level, and more than 24 times a day', () => {
      expect(refusal({ from: '2026-12-01' })).toEqual([': must have one of once, daily, weekly, cron']);
      expect(refusal({ once: '2026-12-01T06:00', cron: '0 6 * * *', from: '2026-12-01' })).toEqual([
        ': must have only one of once, daily, weekly, cron (not once and cron)',
      ]);
      expect(refusal({ cron: '0 6 * * *', from: '2026-12-01', util: '2026-12-31' })[0]).toMatch(
        /^util: unknown field/,
      );
      expect(refusal({ daily: { times: ['06:00'], days: ['mon'] }, from: '2026-12-01' })[0]).toMatch(
        /^daily\.days: unknown field/,
      );
      expect(refusal({ once: '2026-12-01T06:00', repeat: { count: 2, intervalS: 60, gap: 1 } })[0]).toMatch(
        /^repeat\.gap: unknown field/,
      );
      const times = Array.from(
        { length: 25 },
        (_, i) => `${String(i % 24).padStart(2, '0')}:${i < 24 ? '00' : '30'}`,
      );
      expect(refusal({ daily: { times }, from: '2026-12-01' })).toEqual([
        'daily.times: must list at most 24 times',
      ]);
    });

    it('types the parsed value as one of the four forms', () => {
      const t = timingSchema.parse({ cron: '  0 6 * * 1-5 ', from: '2026-12-01' });
      expect(t).toEqual({ cron: '0 6 * * 1-5', from: '2026-12-01' });
      if (!('cron' in t)) throw new Error('expected the cron form');
      expect(t.from).toBe('2026-12-01');
    });
  });

  describe('describeTiming', () => {
    it('says the fixed forms in Vietnamese with tone marks intact, and in English', () => {
      const daily = timing({ daily: { times: ['17:00', '06:00'] }, from: '2026-12-01', until: '2026-12-31' });
      expect(describeTiming(daily, 'vi')).toBe('Hằng ngày lúc 06:00 và 17:00, từ 01/12/2026 đến 31/12/2026');
      expect(describeTiming(daily, 'en')).toBe(
        'Every day at 06:00 and 17:00, from 1 December 2026 to 31 December 2026',
      );
      const weekly = timing({
        weekly: { days: ['fri', 'mon', 'wed'], times: ['07:30'] },
        from: '2026-12-01',
        repeat: { count: 2, intervalS: 5400 },
      });
      expect(describeTiming(weekly, 'vi')).toBe(
        'Hằng tuần vào Thứ Hai, Thứ Tư và Thứ Sáu lúc 07:30, từ 01/12/2026; phát 2 lần, cách nhau 1 giờ 30 phút',
      );
      expect(describeTiming(weekly, 'en')).toBe(
        'Every week on Monday, Wednesday and Friday at 07:30, from 1 December 2026; played 2 times, 1 hour 30 minutes apart',
      );
      const once = timing({ once: '2026-11-30T23:00Z' });
      expect(describeTiming(once, 'vi')).toBe('Một lần lúc 06:00 ngày 01/12/2026');
      expect(describeTiming(once, 'en')).toBe('Once at 06:00 on 1 December 2026');
      for (const t of [daily, weekly, once]) {
        const words = describeTiming(t, 'vi');
        expect(words).toBe(words.normalize('NFC'));
      }
    });

    it('names the skipped dates last, in date order, and counts the rest beyond ten', () => {
      const daily = timing({
        daily: { times: ['06:00'] },
        from: '2026-12-01',
        repeat: { count: 2, intervalS: 600 },
      });
      expect(describeTiming(daily, 'vi', ['2027-02-17', '2026-12-24'])).toBe(
        'Hằng ngày lúc 06:00, từ 01/12/2026; phát 2 lần, cách nhau 10 phút; trừ ngày 24/12/2026 và 17/02/2027',
      );
      expect(describeTiming(daily, 'en', ['2027-02-17', '2026-12-24'])).toBe(
        'Every day at 06:00, from 1 December 2026; played 2 times, 10 minutes apart; except 24 December 2026 and 17 February 2027',
      );
      expect(describeTiming(daily, 'en', ['2027-01-01'])).toMatch(/; except 1 January 2027$/);
      // Tết 2027: twelve days off; ten are named, the last two counted.
      const tet = Array.from({ length: 12 }, (_, i) => `2027-02-${String(5 + i).padStart(2, '0')}`);
      const vi = describeTiming(daily, 'vi', tet);
      expect(vi).toMatch(/; trừ ngày 05\/02\/2027, 06\/02\/2027, .*, 14\/02\/2027 và 2 ngày khác$/);
      expect(vi).not.toContain('15/02/2027');
      expect(vi).toBe(vi.normalize('NFC'));
      expect(describeTiming(daily, 'en', tet)).toMatch(/, 14 February 2027 and 2 other days$/);
      expect(describeTiming(daily, 'en', tet.slice(0, 11))).toMatch(/ and 1 other day$/);
      expect(describeTiming(daily, 'vi', [])).toBe(describeTiming(daily, 'vi'));
    });

    it('says cron expressions through cronstrue in both locales', () => {
      const weekdays = timing({ cron: '0 6 * * 1-5', from: '2026-12-01', until: '2027-01-31' });
      expect(describeTiming(weekdays, 'vi')).toBe('Vào 06:00, Thứ 2 đến Thứ 6, từ 01/12/2026 đến 31/01/2027');
      expect(describeTiming(weekdays, 'en')).toBe(
        'At 06:00, Monday through Friday, from 1 December 2026 to 31 January 2027',
      );
      const lastDay = timing({ cron: '0 6 L * *', from: '2026-12-01' });
      expect(describeTiming(lastDay, 'vi')).toBe('Vào 06:00, vào ngày cuối cùng của tháng, từ 01/12/2026');
      const lastFriday = timing({ cron: '30 17 * * 5L', from: '2026-12-01' });
      expect(describeTiming(lastFriday, 'en')).toBe(
        'At 17:30, on the last Friday of the month, from 1 December 2026',
      );
    });
  });

  describe('independence from the process time zone', () => {
    // The same expansions in child processes whose TZ differs; each prints its results as JSON.
    const timingUrl = pathToFileURL(
      fileURLToPath(new URL('../src/modules/schedules/timing.ts', import.meta.url)),
    ).href;
    const script = `
      const m = await import(${JSON.stringify(timingUrl)});
      const vn = (wall) => new Date(wall + '+07:00');
      const forms = [
        { once: '2026-12-01T06:00' },
        { daily: { times: ['06:00', '23:30'] }, from: '2026-03-07', until: '2026-03-10', repeat: { count: 3, intervalS: 1200 } },
        { daily: { times: ['02:30'] }, from: '2026-10-30', until: '2026-11-03' },
        { weekly: { days: ['sun', 'sat'], times: ['00:00', '12:00'] }, from: '2026-03-01', until: '2026-03-31' },
        { cron: '0 6 L * *', from: '2028-01-01', until: '2028-12-31' },
        { cron: '30 1-3 * * 0', from: '2026-03-01', until: '2026-11-30' },
      ];
      const out = forms.map((input) => {
        const t = m.timingSchema.parse(input);
        return {
          occurrences: m.occurrences(t, { from: vn('2026-01-01T00:00'), to: vn('2029-01-01T00:00'), exceptDates: ['2026-03-08'] })
            .map((o) => [o.start.toISOString(), o.slot.toISOString(), o.repeatIndex, m.localDateTime(o.start)]),
          next: m.nextOccurrence(t, vn('2026-03-08T12:00'))?.start.toISOString() ?? null,
          vi: m.describeTiming(t, 'vi'),
        };
      });
      process.stdout.write(JSON.stringify({ tz: Intl.DateTimeFormat().resolvedOptions().timeZone, out }));
    `;

    async function inChild(tz: string): Promise<{ tz: string; out: unknown }> {
      const { stdout } = await run(
        process.execPath,
        ['--import', 'tsx', '--input-type=module', '-e', script],
        {
          env: { ...process.env, TZ: tz },
          cwd: fileURLToPath(new URL('..', import.meta.url)),
        },
      );
      return JSON.parse(stdout) as { tz: string; out: unknown };
    }

    it('gives the same results with TZ=UTC, America/New_York (DST) and Asia/Tokyo', async () => {
      // One after the other: CPUs are shared.
      const results = [];
      for (const tz of ['UTC', 'America/New_York', 'Asia/Tokyo']) results.push(await inChild(tz));
      expect(results.map((r) => r.tz)).toEqual(['UTC', 'America/New_York', 'Asia/Tokyo']);
      const [utc, newYork, tokyo] = results.map((r) => r.out);
      expect(newYork).toEqual(utc);
      expect(tokyo).toEqual(utc);

      // And the results are the Vietnamese ones, not merely the same everywhere.
      const byForm = utc as { occurrences: [string, string, number, string][]; next: string | null }[];
      expect(byForm[0]!.occurrences).toEqual([
        ['2026-11-30T23:00:00.000Z', '2026-11-30T23:00:00.000Z', 0, '2026-12-01T06:00:00+07:00'],
      ]);
      // The 2026-03-08 slots (the US DST switch day) are excepted, the 23:30 slot of the 7th repeats past midnight.
      const daily = byForm[1]!.occurrences.map((o) => o[3]);
      expect(daily.slice(3, 6)).toEqual([
        '2026-03-07T23:30:00+07:00',
        '2026-03-07T23:50:00+07:00',
        '2026-03-08T00:10:00+07:00',
      ]);
      expect(daily[6]).toBe('2026-03-09T06:00:00+07:00');
      // nextOccurrence is asked without except dates: the 23:30 slot of the 8th, 16:30 UTC.
      expect(byForm[1]!.next).toBe('2026-03-08T16:30:00.000Z');
      expect(byForm[4]!.occurrences.map((o) => o[3].slice(0, 10))).toContain('2028-02-29');
    });
  });
});
