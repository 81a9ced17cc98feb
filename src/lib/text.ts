/**
 * One rule for ordering names everywhere: Vietnamese collation (CLDR `vi`), with numbers compared by value
 * so that "Thôn 2" comes before "Thôn 10". In memory, sort with `compareNames`; in SQL, order by a column
 * holding `sortKey(name)`, whose plain string order (SQLite's BINARY, i.e. UTF-8 bytes) is the same.
 *
 * The Vietnamese alphabet is a ă â b c d đ e ê g h i k l m n o ô ơ p q r s t u ư v x y: ă, â, đ, ê, ô, ơ and
 * ư are letters of their own, so every "D…" name comes before every "Đ…" name. Tone marks only break ties
 * between names spelled with the same letters, in the order ngang, huyền, hỏi, ngã, sắc, nặng
 * (a à ả ã á ạ); case breaks the remaining ties (lower before upper).
 */
const collator = new Intl.Collator('vi', { numeric: true });

export const compareNames = (a: string, b: string): number => collator.compare(a, b);

// The three levels of the Unicode Collation Algorithm, as CLDR's `vi` tailoring fills them. Each level is
// a string of weights; the key is the levels joined by a separator below every weight, so that comparing
// keys compares all letters first, then all tone marks, then all case, as the collator does.
const SEPARATOR = '\u0001';

// Primary order before the letters, as CLDR root sorts them (non-ignorable: they count like letters).
const PUNCTUATION = ' _-\u2013\u2014,;:!?.\u00b7\'"\u00ab\u00bb()[]{}@*/\\&#%`^\u00b0+<=>|~$';
/** Variants that CLDR sorts as another character: curly quotes as straight ones plus a mark, … as "...". */
const VARIANTS: Readonly<Record<string, { as: string; mark?: string; tertiary?: string }>> = {
  '\u2018': { as: "'", mark: '\u0028' },
  '\u2019': { as: "'", mark: '\u0029' },
  '\u201c': { as: '"', mark: '\u0028' },
  '\u201d': { as: '"', mark: '\u0029' },
  '\u2026': { as: '...', tertiary: '\u0022' },
};
const LETTERS = 'aăâbcdđeêfghijklmnoôơpqrstuưvwxyz';
/** Marks that turn a base letter into another letter of the alphabet (NFD spelling → the letter). */
const LETTER_MARKS: Readonly<Record<string, string>> = {
  'a\u0306': 'ă',
  'a\u0302': 'â',
  'e\u0302': 'ê',
  'o\u0302': 'ô',
  'o\u031b': 'ơ',
  'u\u031b': 'ư',
};
/** Tone marks in Vietnamese order: huyền, hỏi, ngã, sắc, nặng (no mark, ngang, is lowest). */
const TONES = '\u0300\u0309\u0303\u0301\u0323';

const PUNCTUATION_BASE = 0x20;
const NUMBER_BASE = 0x100; // + digit count; punctuation < numbers < letters, as in CLDR root
const LETTER_BASE = 0x1000;
const OTHER = '\u2000'; // anything else: after the letters, by code point
const COMMON = '\u0021'; // the secondary and tertiary weight of an element without marks, and of lower case
const UPPER = '\u0022';

const punctuationWeight = new Map(
  [...PUNCTUATION].map((c, i) => [c, String.fromCharCode(PUNCTUATION_BASE + i)]),
);
const letterWeight = new Map([...LETTERS].map((c, i) => [c, String.fromCharCode(LETTER_BASE + i)]));

function markWeight(mark: string): string {
  const tone = TONES.indexOf(mark);
  if (tone >= 0) return String.fromCharCode(0x22 + tone);
  // Other diacritics (ö, ñ, ç in foreign names) sort after the tones, as CLDR `vi` puts them.
  const cp = mark.codePointAt(0) ?? 0;
  return String.fromCharCode(0x100 + Math.min(cp, 0xd7ff - 0x100));
}

/**
 * A sort key whose plain string order (JavaScript `<`, and SQLite's byte order: every weight is a BMP
 * character below the surrogates, so UTF-8 and UTF-16 order agree) equals `compareNames` order for names
 * written with Vietnamese letters, digits, spaces and common punctuation. Other characters sort after the
 * letters by code point. Names the collator deems equal ("Thôn 02", "Thôn 2") are ordered by the name itself.
 */
export function sortKey(name: string): string {
  const primary: string[] = [];
  const secondary: string[] = [];
  const tertiary: string[] = [];
  // A base character with its combining marks, or a run of ASCII digits (one number, compared by value).
  const elements = name.normalize('NFD').match(/[0-9]+|\P{M}\p{M}*|\p{M}+/gu) ?? [];
  for (const element of elements) {
    if (/^[0-9]/.test(element)) {
      // Leading zeros do not count ("02" = "2"); the digit count first, so that 10 > 9.
      const digits = element.replace(/^0+(?=.)/, '');
      primary.push(String.fromCharCode(NUMBER_BASE + Math.min(digits.length, 0xeff)) + digits);
      secondary.push(COMMON);
      tertiary.push(COMMON);
      continue;
    }
    const [base = '', ...marks] = [...element];
    const variant = VARIANTS[base];
    if (variant) {
      for (const c of variant.as) {
        primary.push(punctuationWeight.get(c) ?? '');
        secondary.push(COMMON + (variant.mark ?? '') + marks.map(markWeight).join(''));
        tertiary.push(variant.tertiary ?? COMMON);
      }
      continue;
    }
    const lower = base.toLowerCase();
    let letter = lower;
    const rest: string[] = [];
    for (const mark of marks) {
      const combined = letter.length === 1 ? LETTER_MARKS[letter + mark] : undefined;
      if (combined) letter = combined;
      else rest.push(mark);
    }
    const weight =
      letterWeight.get(letter) ??
      punctuationWeight.get(letter) ??
      `${OTHER}${(letter.codePointAt(0) ?? 0).toString(16).padStart(6, '0')}`;
    primary.push(weight);
    secondary.push(COMMON + rest.map(markWeight).join(''));
    tertiary.push(base === lower ? COMMON : UPPER);
  }
  return [primary.join(''), secondary.join(''), tertiary.join(''), name].join(SEPARATOR);
}

/**
 * Text folded for search: lower case, tone and letter marks removed, đ → d, runs of space collapsed. A
 * query folded the same way matches a title whether or not either was typed with tone marks
 * ("tiem phong" finds "Tiêm phòng"). Stored in `title_search` columns and compared with LIKE.
 */
export function foldForSearch(text: string): string {
  return text
    .normalize('NFD')
    .replace(/\p{M}/gu, '')
    .replace(/[đĐ]/g, 'd')
    .toLowerCase()
    .replace(/\s+/g, ' ')
    .trim();
}
