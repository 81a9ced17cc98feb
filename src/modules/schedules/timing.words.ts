/**
 * The words `describeTiming` is made of, per locale. Cron expressions are described by cronstrue (it has a
 * Vietnamese locale); everything else is assembled from these tables so that the daily and weekly forms read
 * as a broadcaster would say them ("Hằng ngày lúc 06:00 và 17:00, từ 01/12/2026").
 */
import type { Weekday } from './timing.js';

export type TimingLocale = 'vi' | 'en';

export interface TimingWords {
  once: (time: string, date: string) => string;
  daily: (times: string) => string;
  weekly: (days: string, times: string) => string;
  /** When cronstrue cannot describe an expression croner accepts (it knows fewer extensions). */
  cronFallback: (expression: string) => string;
  from: (date: string) => string;
  fromUntil: (from: string, until: string) => string;
  repeat: (count: number, interval: string) => string;
  /** The skipped dates (exceptDates), already listed. */
  except: (dates: string) => string;
  /** What stands for the skipped dates not named, when there are too many to list. */
  moreDays: (n: number) => string;
  and: string;
  days: Readonly<Record<Weekday, string>>;
  hours: (n: number) => string;
  minutes: (n: number) => string;
  seconds: (n: number) => string;
  /** A local calendar date, from its parts. */
  date: (year: number, month: number, day: number) => string;
}

const pad = (n: number) => String(n).padStart(2, '0');

const EN_MONTHS = [
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
] as const;

const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;

export const TIMING_WORDS: Readonly<Record<TimingLocale, TimingWords>> = {
  vi: {
    once: (time, date) => `Một lần lúc ${time} ngày ${date}`,
    daily: (times) => `Hằng ngày lúc ${times}`,
    weekly: (days, times) => `Hằng tuần vào ${days} lúc ${times}`,
    cronFallback: (expression) => `Theo biểu thức cron “${expression}”`,
    from: (date) => `từ ${date}`,
    fromUntil: (from, until) => `từ ${from} đến ${until}`,
    repeat: (count, interval) => `phát ${count} lần, cách nhau ${interval}`,
    except: (dates) => `trừ ngày ${dates}`,
    moreDays: (n) => `${n} ngày khác`,
    and: 'và',
    days: {
      mon: 'Thứ Hai',
      tue: 'Thứ Ba',
      wed: 'Thứ Tư',
      thu: 'Thứ Năm',
      fri: 'Thứ Sáu',
      sat: 'Thứ Bảy',
      sun: 'Chủ Nhật',
    },
    hours: (n) => `${n} giờ`,
    minutes: (n) => `${n} phút`,
    seconds: (n) => `${n} giây`,
    // Vietnamese writes dates day first: 01/12/2026.
    date: (year, month, day) => `${pad(day)}/${pad(month)}/${year}`,
  },
  en: {
    once: (time, date) => `Once at ${time} on ${date}`,
    daily: (times) => `Every day at ${times}`,
    weekly: (days, times) => `Every week on ${days} at ${times}`,
    cronFallback: (expression) => `On the cron expression “${expression}”`,
    from: (date) => `from ${date}`,
    fromUntil: (from, until) => `from ${from} to ${until}`,
    repeat: (count, interval) => `played ${count} times, ${interval} apart`,
    except: (dates) => `except ${dates}`,
    moreDays: (n) => plural(n, 'other day', 'other days'),
    and: 'and',
    days: {
      mon: 'Monday',
      tue: 'Tuesday',
      wed: 'Wednesday',
      thu: 'Thursday',
      fri: 'Friday',
      sat: 'Saturday',
      sun: 'Sunday',
    },
    hours: (n) => plural(n, 'hour', 'hours'),
    minutes: (n) => plural(n, 'minute', 'minutes'),
    seconds: (n) => plural(n, 'second', 'seconds'),
    // Spelled-out month: 01/12 means January 12 to some English readers and December 1 to others.
    date: (year, month, day) => `${day} ${EN_MONTHS[month - 1]} ${year}`,
  },
};

/** "a", "a và b", "a, b và c". */
export function joinList(items: readonly string[], and: string): string {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} ${and} ${items[items.length - 1]}`;
}

/** 600 → "10 phút", 5400 → "1 giờ 30 phút", 90 → "1 phút 30 giây". */
export function describeDuration(totalS: number, words: TimingWords): string {
  const h = Math.floor(totalS / 3600);
  const m = Math.floor((totalS % 3600) / 60);
  const s = totalS % 60;
  const parts = [h ? words.hours(h) : '', m ? words.minutes(m) : '', s ? words.seconds(s) : ''];
  return parts.filter(Boolean).join(' ') || words.seconds(0);
}
