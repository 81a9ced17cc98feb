/**
 * Vietnamese text normalisation for the speech engines: every rule that turns written text into what a
 * listener should hear lives here, so that one file answers "why did it read that?".
 *
 * eSpeak NG reads digits one language-neutral way and spells unknown capitals letter by letter (UBND becomes
 * "u bê en đê" with an English accent), so before speaking, text is rewritten into words:
 *
 *   1. abbreviations (built-in + admin-defined, longest first, case-sensitive): UBND → Ủy ban nhân dân,
 *      km/h → ki lô mét trên giờ;
 *   2. phone numbers, read digit by digit in the groups they were written in: 0912 345 678;
 *   3. dates (25/11/2026, 25-11-2026, 25.11.2026, 25/11, 11/2026);
 *   4. times (06:30, 06:30:15, 17h, 17h30);
 *   5. percentages (45%, 3,5%);
 *   6. numbers with Vietnamese grouping (1.250 = 1250; 3,5 = ba phẩy năm), ranges (5-7 → năm đến bảy),
 *      negative numbers and units written after a number (5m, 20 ha, 50.000đ);
 *   7. symbols and layout: & → và, dashes → commas, a line without final punctuation ends with a full stop.
 *
 * Punctuation is kept (the engine pauses on it) and the result is NFC, so tone marks survive unchanged.
 * Numbers are read by `read-vietnamese-number` (a small, tested library with the Vietnamese irregularities:
 * mốt, tư, lăm, linh, không trăm).
 */
import { doReadNumber, ReadingConfig } from 'read-vietnamese-number';

/** The built-in dictionary; admins add entries or override these through the API (tts_abbreviations). */
export const BUILT_IN_ABBREVIATIONS: Readonly<Record<string, string>> = {
  // Government and mass organisations
  UBND: 'Ủy ban nhân dân',
  HĐND: 'Hội đồng nhân dân',
  UBMTTQ: 'Ủy ban Mặt trận Tổ quốc',
  MTTQ: 'Mặt trận Tổ quốc',
  BCH: 'ban chỉ huy',
  BCHQS: 'ban chỉ huy quân sự',
  CAND: 'công an nhân dân',
  HLHPN: 'Hội Liên hiệp Phụ nữ',
  LHPN: 'Liên hiệp Phụ nữ',
  HND: 'Hội Nông dân',
  HCCB: 'Hội Cựu chiến binh',
  CCB: 'cựu chiến binh',
  ĐBQH: 'đại biểu Quốc hội',
  TW: 'trung ương',
  HTX: 'hợp tác xã',
  TTCS: 'trạm truyền thanh cơ sở',
  // Public services and campaigns
  PCCC: 'phòng cháy chữa cháy',
  PCTT: 'phòng chống thiên tai',
  TKCN: 'tìm kiếm cứu nạn',
  CSGT: 'cảnh sát giao thông',
  ATGT: 'an toàn giao thông',
  ATTP: 'an toàn thực phẩm',
  BHYT: 'bảo hiểm y tế',
  BHXH: 'bảo hiểm xã hội',
  BVTV: 'bảo vệ thực vật',
  KHHGĐ: 'kế hoạch hóa gia đình',
  NTM: 'nông thôn mới',
  GPMB: 'giải phóng mặt bằng',
  KCN: 'khu công nghiệp',
  TYT: 'trạm y tế',
  BV: 'bệnh viện',
  CMND: 'chứng minh nhân dân',
  CCCD: 'căn cước công dân',
  SĐT: 'số điện thoại',
  ĐT: 'điện thoại',
  THPT: 'trung học phổ thông',
  THCS: 'trung học cơ sở',
  'GD&ĐT': 'giáo dục và đào tạo',
  'NN&PTNT': 'nông nghiệp và phát triển nông thôn',
  'TN&MT': 'tài nguyên và môi trường',
  'LĐ-TB&XH': 'lao động, thương binh và xã hội',
  // Places
  'TP.HCM': 'Thành phố Hồ Chí Minh',
  HCM: 'Hồ Chí Minh',
  'TP.': 'thành phố',
  TP: 'thành phố',
  VN: 'Việt Nam',
  VOV: 'vê ô vê',
  VTV: 'vê tê vê',
  'v.v.': 'vân vân',
  'v.v': 'vân vân',
  // Units that cannot be mistaken for a word, wherever they stand
  'km/h': 'ki lô mét trên giờ',
  'm/s': 'mét trên giây',
  km: 'ki lô mét',
  kg: 'ki lô gam',
  cm: 'xen ti mét',
  mm: 'mi li mét',
  m2: 'mét vuông',
  'm²': 'mét vuông',
  m3: 'mét khối',
  'm³': 'mét khối',
  '°C': 'độ xê',
  kWh: 'ki lô oát giờ',
};

/**
 * Units read only right after a number: alone, `m`, `g` or `ha` are letters or words ("ha ha"), and `h` is
 * an hour only in "100h".
 */
const UNITS_AFTER_NUMBER: Readonly<Record<string, string>> = {
  m: 'mét',
  g: 'gam',
  mg: 'mi li gam',
  l: 'lít',
  ml: 'mi li lít',
  ha: 'héc ta',
  h: 'giờ',
  s: 'giây',
  đ: 'đồng',
  VNĐ: 'đồng',
  VND: 'đồng',
  V: 'vôn',
  W: 'oát',
  kW: 'ki lô oát',
  MW: 'mê ga oát',
  '°': 'độ',
};

const DIGITS = ['không', 'một', 'hai', 'ba', 'bốn', 'năm', 'sáu', 'bảy', 'tám', 'chín'] as const;

const numberConfig = (() => {
  const config = new ReadingConfig();
  config.unit = [];
  // Vietnamese writes 3,5 and reads "ba phẩy năm"; the library's own default is "chấm".
  config.pointText = 'phẩy';
  config.oddText = 'linh';
  config.units = [[], ['nghìn'], ['triệu'], ['tỷ']];
  return config;
})();

/** Reads an integer or decimal given with a `.` decimal point and no grouping: "1250", "3.5". */
export function readNumber(plain: string): string {
  return doReadNumber(plain, numberConfig);
}

/** Reads digits one by one: codes, phone numbers. */
export function readDigits(digits: string): string {
  return [...digits].map((d) => DIGITS[Number(d)] ?? d).join(' ');
}

/** A number as written in Vietnamese: 1.250 (grouped), 1.250,5, 3,5, 2026; also 1,250,000 (English). */
const NUM = String.raw`\d{1,3}(?:\.\d{3})+(?!\d)(?:,\d+)?|\d{1,3}(?:,\d{3}){2,}(?!\d)|\d+\.\d+|\d+(?:,\d+)?`;
/** Not inside a word or a longer number. */
const LEFT = String.raw`(?<![\p{L}\p{M}\p{N}])`;
const RIGHT = String.raw`(?![\p{L}\p{M}\p{N}])`;

/** Reads one number token matched by NUM. */
function readWritten(token: string): string {
  // A digit string too long to be a quantity (an account or a code) is read digit by digit, and so is
  // one with a leading zero ("0123"), except short ones like "05" that people read as a number.
  if (/^\d+$/.test(token) && (token.length > 15 || (token.length >= 4 && token.startsWith('0')))) {
    return readDigits(token);
  }
  if (/^\d{1,3}(?:\.\d{3})+(?:,\d+)?$/.test(token)) {
    return readNumber(token.replaceAll('.', '').replace(',', '.'));
  }
  if (/^\d{1,3}(?:,\d{3}){2,}$/.test(token)) return readNumber(token.replaceAll(',', ''));
  // "2.5" is not Vietnamese grouping (three digits follow a group dot): read the dot as written.
  if (/^\d+\.\d+$/.test(token)) return readNumber(token).replace(' phẩy ', ' chấm ');
  return readNumber(token.replace(',', '.'));
}

/** Day and month numbers as said in dates: "tháng tư" for April, not "tháng bốn". */
const readMonth = (month: number) => (month === 4 ? 'tư' : readNumber(String(month)));

/** A compiled dictionary: one regular expression over every entry, longest first. */
export interface AbbreviationMatcher {
  readonly entries: ReadonlyMap<string, string>;
  readonly pattern: RegExp | null;
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

export function compileAbbreviations(entries: ReadonlyMap<string, string>): AbbreviationMatcher {
  const normalised = new Map<string, string>();
  for (const [abbreviation, expansion] of entries) {
    normalised.set(abbreviation.normalize('NFC'), expansion.normalize('NFC'));
  }
  const keys = [...normalised.keys()].filter((k) => k.length > 0).sort((a, b) => b.length - a.length);
  // Left: not inside a word (a digit before is fine: 60km/h). Right: not followed by a letter, so that
  // "QL1A"-style codes and "UBND," both work while "TPHCM" is not read as "TP" + "HCM".
  const pattern =
    keys.length === 0
      ? null
      : new RegExp(`(?<![\\p{L}\\p{M}])(?:${keys.map(escapeRegExp).join('|')})(?![\\p{L}\\p{M}])`, 'gu');
  return { entries: normalised, pattern };
}

function expandAbbreviations(text: string, matcher: AbbreviationMatcher): string {
  if (!matcher.pattern) return text;
  return text.replace(matcher.pattern, (match: string, offset: number, whole: string) => {
    const before = whole[offset - 1] ?? '';
    const after = whole[offset + match.length] ?? '';
    // An entry that starts or ends with a digit ("114", "m3") must not cut a longer number.
    if ((/\d/.test(match[0] ?? '') && /\d/.test(before)) || (/\d$/.test(match) && /\d/.test(after))) {
      return match;
    }
    const expansion = matcher.entries.get(match) ?? match;
    // Words never touch a number or word written against the abbreviation: 60km → 60 ki lô mét, QL1A.
    return (/[\p{L}\p{N}]/u.test(before) ? ' ' : '') + expansion + (/[\p{L}\p{N}]/u.test(after) ? ' ' : '');
  });
}

/**
 * Mobile (0912 345 678, 0912.345.678, 0912345678, +84 912 345 678), landline (024 3825 1234) and
 * 1800/1900 lines. The pattern takes every digit group that follows; readPhone keeps the longest run of
 * groups that has a phone number's length and leaves the rest ("… 678 25 người") to the number rules.
 */
const PHONE = /(?<![\p{L}\p{N}+.,])(\+84|0|1[89]00)((?:[ .-]?\d+)+)/gu;

function phoneLengthOk(prefix: string, digits: number): boolean {
  if (prefix === '+84') return digits === 9 || digits === 10;
  if (prefix === '0') return digits + 1 === 10 || digits + 1 === 11;
  return digits + 4 >= 8 && digits + 4 <= 10;
}

function readPhone(match: string, prefix: string, rest: string): string {
  // Groups with the separator written before each: [" 912", " 345", " 678"].
  const groups = rest.match(/[ .-]?\d+/g) ?? [];
  // No phone number has more than 11 digits: only the first groups that fit are candidates, which keeps a
  // long run of digit groups (hostile or not) linear instead of quadratic.
  let longest = 0;
  for (let digits = 0; longest < groups.length; longest++) {
    digits += (groups[longest] ?? '').replace(/\D/g, '').length;
    if (digits > 11) break;
  }
  for (let take = longest; take > 0; take--) {
    const used = groups.slice(0, take);
    const digits = used.join('').replace(/\D/g, '');
    if (!phoneLengthOk(prefix, digits.length)) continue;
    const written = (prefix === '+84' ? '' : prefix) + used.join('');
    let parts = written.split(/[ .-]+/).filter(Boolean);
    if (parts.length === 1) {
      // Written without separators: say it in the groups people use (4-3-3, 3-4-4, 4-4).
      const all = parts[0] ?? '';
      const sizes =
        all.length === 10 ? [4, 3, 3] : all.length === 11 ? [3, 4, 4] : all.length === 9 ? [3, 3, 3] : [4];
      parts = [];
      let at = 0;
      for (const size of sizes) {
        parts.push(all.slice(at, at + size));
        at += size;
      }
      if (at < all.length) parts.push(all.slice(at));
    }
    const spoken = parts.map(readDigits).join(', ');
    const after = groups.slice(take).join('');
    // A number written right after the phone number is a different thing: a pause keeps them apart.
    return (prefix === '+84' ? `cộng tám bốn, ${spoken}` : spoken) + (after ? `,${after}` : '');
  }
  return match;
}

/** "ngày"/"mùng" already written before a date is not said twice. */
const DAY_WORD = String.raw`((?<![\p{L}\p{M}])(?:[Nn]gày|[Mm]ùng|[Mm]ồng)\s+)?`;
const MONTH_WORD = String.raw`((?<![\p{L}\p{M}])[Tt]háng\s+)?`;

const FULL_DATE = new RegExp(
  `${DAY_WORD}(?<![\\p{N}/.\\-])(\\d{1,2})([/.\\-])(\\d{1,2})\\3(\\d{4})(?![\\p{N}]|[/.\\-]\\d)`,
  'gu',
);
const DAY_MONTH = new RegExp(`${DAY_WORD}(?<![\\p{N}/])(\\d{1,2})/(\\d{1,2})(?![\\p{N}]|/\\d)`, 'gu');
const MONTH_YEAR = new RegExp(`${MONTH_WORD}(?<![\\p{N}/])(\\d{1,2})/(\\d{4})(?![\\p{N}]|/\\d)`, 'gu');

const validDay = (d: number) => d >= 1 && d <= 31;
const validMonth = (m: number) => m >= 1 && m <= 12;

function readDate(dayWord: string | undefined, day: number, month: number, year?: string): string {
  const parts = [`${dayWord ?? 'ngày '}${readNumber(String(day))}`, `tháng ${readMonth(month)}`];
  if (year !== undefined) parts.push(`năm ${readNumber(year)}`);
  return parts.join(' ');
}

const CLOCK = /(?<![\p{N}:])([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?(?![\p{N}]|:\d)/gu;
const HOUR_H = /(?<![\p{L}\p{M}\p{N}])([01]?\d|2[0-4])[hH](?:([0-5]\d)(?:'|p|ph)?)?(?![\p{L}\p{M}\p{N}])/gu;

function readTime(hour: string, minute?: string, second?: string): string {
  const parts = [`${readNumber(String(Number(hour)))} giờ`];
  const m = Number(minute ?? 0);
  const s = Number(second ?? 0);
  if (m > 0 || s > 0) parts.push(`${readNumber(String(m))} phút`);
  if (s > 0) parts.push(`${readNumber(String(s))} giây`);
  return parts.join(' ');
}

const SIGNED = String.raw`((?:(?<=^|[\s(])[-−])?)(${NUM})`;
const PERCENT = new RegExp(`${LEFT}${SIGNED}\\s?%`, 'gu');

const unitKeys = Object.keys(UNITS_AFTER_NUMBER).sort((a, b) => b.length - a.length);
/** A number, an optional range end (5-7, 25 – 30) and an optional unit written after it. */
const QUANTITY = new RegExp(
  `(?<![\\p{L}\\p{M}\\p{N}.,])${SIGNED}(?:\\s?[-–]\\s?(${NUM}))?(?:\\s?(${unitKeys.map(escapeRegExp).join('|')})${RIGHT})?`,
  'gu',
);

const signWord = (sign: string) => (sign ? 'âm ' : '');

function readQuantity(
  match: string,
  sign: string,
  first: string,
  second: string | undefined,
  unit: string | undefined,
  offset: number,
  whole: string,
): string {
  const before = whole.slice(Math.max(0, offset - 8), offset);
  let spoken: string;
  // Ordinals: "thứ 1" is "thứ nhất", "thứ 4" / "tháng 4" are "thứ tư" / "tháng tư".
  if (!sign && !second && /(?<![\p{L}\p{M}])thứ\s$/iu.test(before) && (first === '1' || first === '4')) {
    spoken = first === '1' ? 'nhất' : 'tư';
  } else if (!sign && !second && /(?<![\p{L}\p{M}])tháng\s$/iu.test(before) && /^0?4$/.test(first)) {
    spoken = 'tư';
  } else {
    spoken = signWord(sign) + readWritten(first);
  }
  if (second) spoken += ` đến ${readWritten(second)}`;
  if (unit) spoken += ` ${UNITS_AFTER_NUMBER[unit] ?? unit}`;
  // "1A", "F0": the words must not run into the letter that follows.
  return /[\p{L}\p{M}]/u.test(whole[offset + match.length] ?? '') ? `${spoken} ` : spoken;
}

/** Layout and symbols: what is not a word but should still be heard, or heard as a pause. */
function tidy(text: string): string {
  const lines = text
    .split(/\r?\n/)
    .map((line) =>
      line
        // A list bullet is layout, not text.
        .replace(/^\s*(?:[-–—•*+]|\d+[.)])\s+/u, (m) => (/\d/.test(m) ? m : ''))
        .trim(),
    )
    .filter((line) => line.length > 0)
    // A heading or list item without final punctuation still gets its pause.
    .map((line) => (/[.,;:!?…]["'”’»)]*$/u.test(line) ? line : `${line}.`));
  return lines
    .join(' ')
    .replace(/\s*&\s*/g, ' và ')
    .replace(/\s+[-–—]\s+|[–—]/g, ', ')
    .replace(/\s+([.,;:!?…])/g, '$1')
    .replace(/\s{2,}/g, ' ')
    .trim();
}

/**
 * Rewrites written Vietnamese into words for a speech engine. `abbreviations` holds the built-in entries
 * merged with the admins' ones (see TtsService); it is compiled once per change, not per call.
 */
export function normaliseVietnamese(text: string, abbreviations: AbbreviationMatcher): string {
  let out = text.normalize('NFC');
  out = expandAbbreviations(out, abbreviations);
  out = out.replace(PHONE, (m: string, prefix: string, rest: string) => readPhone(m, prefix, rest));
  out = out.replace(
    FULL_DATE,
    (m: string, dayWord: string | undefined, d: string, _sep: string, mo: string, y: string) =>
      validDay(Number(d)) && validMonth(Number(mo)) ? readDate(dayWord, Number(d), Number(mo), y) : m,
  );
  out = out.replace(CLOCK, (_m: string, h: string, mi: string, s?: string) => readTime(h, mi, s));
  out = out.replace(HOUR_H, (_m: string, h: string, mi?: string) => readTime(h, mi));
  out = out.replace(MONTH_YEAR, (m: string, monthWord: string | undefined, mo: string, y: string) =>
    validMonth(Number(mo)) ? `${monthWord ?? 'tháng '}${readMonth(Number(mo))} năm ${readNumber(y)}` : m,
  );
  out = out.replace(DAY_MONTH, (m: string, dayWord: string | undefined, d: string, mo: string) =>
    validDay(Number(d)) && validMonth(Number(mo)) ? readDate(dayWord, Number(d), Number(mo)) : m,
  );
  out = out.replace(
    PERCENT,
    (m: string, sign: string, n: string, offset: number, whole: string) =>
      // "50%số hộ": the words must not run into what follows.
      `${signWord(sign)}${readWritten(n)} phần trăm${/[\p{L}\p{N}]/u.test(whole[offset + m.length] ?? '') ? ' ' : ''}`,
  );
  out = out.replace(/%/g, ' phần trăm');
  out = out.replace(QUANTITY, readQuantity);
  return tidy(out).normalize('NFC');
}
