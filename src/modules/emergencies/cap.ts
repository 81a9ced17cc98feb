/**
 * OASIS Common Alerting Protocol 1.2 (CAP-v1.2, 2010; the "spec" below) as a pure module: a document in,
 * a checked `CapAlert` out, plus the few readings the emergency service needs (which info to speak, how
 * risky, which hazard). No HTTP and no database here: the endpoint and the emergencies service wrap it.
 *
 * Security: a CAP feed comes from outside. Before the parser ever sees the bytes, the size is capped and any
 * DTD (`<!DOCTYPE`, `<!ENTITY`) is refused, so neither an entity expansion (billion laughs) nor an external
 * entity (XXE, `file:///etc/passwd`) can happen; the parser is also given an entity decoder that knows only
 * the five predefined XML entities and character references (XML 1.0 §4.6, §4.1) and refuses anything else.
 */
import { XMLParser, XMLValidator, type EntityDecoderOptions } from 'fast-xml-parser';
import { AppError, type FieldError } from '../../errors.js';

export const CAP_NAMESPACE = 'urn:oasis:names:tc:emergency:cap:1.2';
/** The endpoint's body limit: a real CAP alert is a few kilobytes, even with many polygons. */
export const CAP_MAX_BYTES = 1024 * 1024;

// Enumerations of the spec §3.2.1 (alert), §3.2.2 (info).
export const CAP_STATUSES = ['Actual', 'Exercise', 'System', 'Test', 'Draft'] as const;
export const CAP_MSG_TYPES = ['Alert', 'Update', 'Cancel', 'Ack', 'Error'] as const;
export const CAP_SCOPES = ['Public', 'Restricted', 'Private'] as const;
export const CAP_CATEGORIES = [
  'Geo',
  'Met',
  'Safety',
  'Security',
  'Rescue',
  'Fire',
  'Health',
  'Env',
  'Transport',
  'Infra',
  'CBRNE',
  'Other',
] as const;
export const CAP_URGENCIES = ['Immediate', 'Expected', 'Future', 'Past', 'Unknown'] as const;
export const CAP_SEVERITIES = ['Extreme', 'Severe', 'Moderate', 'Minor', 'Unknown'] as const;
export const CAP_CERTAINTIES = ['Observed', 'Likely', 'Possible', 'Unlikely', 'Unknown'] as const;

export type CapStatus = (typeof CAP_STATUSES)[number];
export type CapMsgType = (typeof CAP_MSG_TYPES)[number];
export type CapScope = (typeof CAP_SCOPES)[number];
export type CapCategory = (typeof CAP_CATEGORIES)[number];
export type CapUrgency = (typeof CAP_URGENCIES)[number];
export type CapSeverity = (typeof CAP_SEVERITIES)[number];
export type CapCertainty = (typeof CAP_CERTAINTIES)[number];

/** A point as CAP writes it: latitude first (WGS 84). GeoJSON and turf want [lon, lat]. */
export type LatLon = [lat: number, lon: number];

export interface CapReference {
  sender: string;
  identifier: string;
  sent: Date;
}

export interface CapCircle {
  lat: number;
  lon: number;
  radiusKm: number;
}

export interface CapGeocode {
  valueName: string;
  value: string;
}

export interface CapArea {
  areaDesc: string;
  /** Each polygon closed (first point = last point), at least 4 points. */
  polygons: LatLon[][];
  circles: CapCircle[];
  geocodes: CapGeocode[];
}

export interface CapInfo {
  language: string;
  category: CapCategory[];
  event: string;
  urgency: CapUrgency;
  severity: CapSeverity;
  certainty: CapCertainty;
  senderName?: string;
  headline?: string;
  description?: string;
  instruction?: string;
  effective?: Date;
  onset?: Date;
  expires?: Date;
  areas: CapArea[];
}

export interface CapAlert {
  identifier: string;
  sender: string;
  sent: Date;
  status: CapStatus;
  msgType: CapMsgType;
  scope: CapScope;
  references: CapReference[];
  infos: CapInfo[];
}

// ---------------------------------------------------------------------------------------------------------
// Reading the document

const PREDEFINED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

/** XML 1.0 §2.2 Char: what a character reference may name. */
const isXmlChar = (cp: number) =>
  cp === 0x9 ||
  cp === 0xa ||
  cp === 0xd ||
  (cp >= 0x20 && cp <= 0xd7ff) ||
  (cp >= 0xe000 && cp <= 0xfffd) ||
  (cp >= 0x10000 && cp <= 0x10ffff);

class EntityRefused extends Error {}

/**
 * Replaces fast-xml-parser's decoder (which would also take DOCTYPE-declared entities): one pass over the
 * text, so `&amp;lt;` stays `&lt;`; numeric references are decoded because CAP producers often write
 * Vietnamese letters as `&#7899;`. It is never handed CDATA content (the parser keeps that raw).
 */
const xmlEntityDecoder: EntityDecoderOptions = {
  setExternalEntities: () => {
    throw new EntityRefused('external entities are not allowed');
  },
  addInputEntities: (entities) => {
    if (Object.keys(entities).length > 0) throw new EntityRefused('entity declarations are not allowed');
  },
  reset: () => {},
  setXmlVersion: () => {},
  decode: (text) =>
    text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[A-Za-z_][\w.-]*);/g, (_ref, name: string) => {
      if (name.startsWith('#')) {
        const cp = name[1] === 'x' ? parseInt(name.slice(2), 16) : parseInt(name.slice(1), 10);
        if (!isXmlChar(cp)) throw new EntityRefused(`character reference &${name}; is not a valid character`);
        return String.fromCodePoint(cp);
      }
      const value = PREDEFINED[name];
      if (value === undefined) throw new EntityRefused(`undefined entity &${name};`);
      return value;
    }),
};

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@_',
  ignoreDeclaration: true,
  ignorePiTags: true,
  parseTagValue: false, // identifiers like "0042" stay strings
  parseAttributeValue: false,
  trimValues: true,
  processEntities: true, // through xmlEntityDecoder only
  htmlEntities: false,
  entityDecoder: xmlEntityDecoder,
});

const malformed = (message: string) =>
  new AppError('validation_failed', `body: ${message}`, { errors: [{ field: 'body', message }] });

function decodeUtf8(input: string | Buffer): string {
  if (typeof input === 'string') return input;
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(input);
  } catch {
    throw malformed('is not valid UTF-8 (CAP documents are UTF-8)');
  }
}

type XmlNode = Record<string, unknown>;

/**
 * Parses and checks a CAP 1.2 document. Every problem found is listed (field path + message) in one
 * validation_failed error, so a warning system's operator fixes the document in one round.
 */
export function parseCap(input: string | Buffer): CapAlert {
  const bytes = typeof input === 'string' ? Buffer.byteLength(input, 'utf8') : input.length;
  if (bytes > CAP_MAX_BYTES) {
    throw new AppError('payload_too_large', `A CAP document may be at most ${CAP_MAX_BYTES} bytes`);
  }
  const xml = decodeUtf8(input).replace(/^\uFEFF/, '');

  // Refused on sight, before any parser runs: a DTD is how both entity expansion and XXE get in, and CAP
  // never needs one (the spec's schema is applied by namespace, not by DOCTYPE).
  if (/<!\s*(DOCTYPE|ENTITY)/i.test(xml)) {
    throw malformed('DTDs and entity declarations (<!DOCTYPE, <!ENTITY) are not allowed');
  }
  const encoding = /^<\?xml[^>]*\bencoding\s*=\s*["']([^"']+)["']/.exec(xml)?.[1];
  if (encoding !== undefined && !/^utf-?8$/i.test(encoding)) {
    throw malformed(`encoding "${encoding}" is not supported; send UTF-8`);
  }

  const valid = XMLValidator.validate(xml);
  if (valid !== true) {
    throw malformed(`malformed XML at line ${valid.err.line}, column ${valid.err.col}: ${valid.err.msg}`);
  }
  let doc: XmlNode;
  try {
    doc = parser.parse(xml) as XmlNode;
  } catch (err) {
    if (err instanceof EntityRefused) throw malformed(err.message);
    throw malformed(`malformed XML: ${err instanceof Error ? err.message : 'unreadable'}`);
  }
  return readAlert(doc);
}

/** Walks the parsed tree, collecting errors instead of stopping at the first. */
class Reader {
  readonly errors: FieldError[] = [];

  constructor(private readonly prefix: string) {}

  fail(field: string, message: string) {
    this.errors.push({ field, message });
  }

  /** Every occurrence of a CAP child element (in the CAP namespace's prefix), as nodes. */
  all(node: XmlNode, name: string): unknown[] {
    const value = node[this.prefix + name];
    if (value === undefined) return [];
    return Array.isArray(value) ? (value as unknown[]) : [value];
  }

  nodes(node: XmlNode, name: string): XmlNode[] {
    return this.all(node, name).map(asNode);
  }

  texts(node: XmlNode, name: string): string[] {
    return this.all(node, name).map(textOf);
  }

  /** A child that may appear at most once; `required` ones must also be there and not be empty. */
  text(node: XmlNode, name: string, path: string, required = false): string | undefined {
    const values = this.texts(node, name);
    const field = `${path}.${name}`;
    if (values.length > 1) {
      this.fail(field, `<${name}> must appear only once`);
      return undefined;
    }
    const value = values[0];
    if (value === undefined || value === '') {
      if (required) this.fail(field, `<${name}> is required`);
      return undefined;
    }
    return value;
  }

  oneOf<T extends string>(node: XmlNode, name: string, path: string, allowed: readonly T[]): T | undefined {
    const value = this.text(node, name, path, true);
    if (value === undefined) return undefined;
    if (!(allowed as readonly string[]).includes(value)) {
      this.fail(`${path}.${name}`, `"${value}" is not one of ${allowed.join(', ')}`);
      return undefined;
    }
    return value as T;
  }

  date(node: XmlNode, name: string, path: string, required: boolean): Date | undefined {
    const value = this.text(node, name, path, required);
    if (value === undefined) return undefined;
    const parsed = parseCapDate(value);
    if (typeof parsed === 'string') this.fail(`${path}.${name}`, parsed);
    else return parsed;
    return undefined;
  }
}

const asNode = (value: unknown): XmlNode =>
  value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as XmlNode) : {};

/** Text of a leaf element, NFC-normalised so "ầ" typed as a + combining marks compares equal. */
function textOf(value: unknown): string {
  if (typeof value === 'string') return value.normalize('NFC');
  const text = asNode(value)['#text'];
  return typeof text === 'string' ? text.normalize('NFC') : '';
}

/**
 * Spec §3.3.2: "2002-05-24T16:49:00-07:00"; the schema's pattern has no fraction, and alphabetic zone
 * designators ("Z") MUST NOT be used (UTC is written -00:00). Returns the Date or what is wrong.
 */
export function parseCapDate(value: string): Date | string {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})([+-])(\d{2}):(\d{2})$/.exec(value);
  if (!m) {
    return `"${value}" is not a CAP date-time with an explicit offset, e.g. 2026-11-25T14:30:00+07:00`;
  }
  const n = (i: number) => Number(m[i]);
  const [y, mo, d, h, mi, s, oh, om] = [n(1), n(2), n(3), n(4), n(5), n(6), n(8), n(9)] as const;
  const date = new Date(value);
  const calendar = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  const sane =
    calendar.getUTCFullYear() === y &&
    calendar.getUTCMonth() === mo - 1 &&
    calendar.getUTCDate() === d &&
    h < 24 &&
    mi < 60 &&
    s < 60 &&
    oh < 24 &&
    om < 60;
  if (!sane || Number.isNaN(date.getTime())) return `"${value}" is not a real date and time`;
  return date;
}

/** Spec §3.2.1: identifier and sender "MUST NOT include spaces, commas or restricted characters (< and &)". */
function checkToken(reader: Reader, field: string, value: string | undefined) {
  if (value !== undefined && /[\s,<&]/.test(value)) {
    reader.fail(field, 'must not contain spaces, commas, < or &');
  }
}

function readAlert(doc: XmlNode): CapAlert {
  const rootKeys = Object.keys(doc);
  const rootName = rootKeys.find((k) => k === 'alert' || k.endsWith(':alert'));
  if (rootKeys.length !== 1 || rootName === undefined) {
    throw malformed('the root element must be a CAP <alert>');
  }
  const root = asNode(doc[rootName]);
  const prefix = rootName.slice(0, rootName.length - 'alert'.length); // "" or "cap:"
  const nsAttr = prefix === '' ? '@_xmlns' : `@_xmlns:${prefix.slice(0, -1)}`;
  if (root[nsAttr] !== CAP_NAMESPACE) {
    const found = typeof root[nsAttr] === 'string' ? `"${root[nsAttr]}"` : 'none';
    throw new AppError('validation_failed', `body.alert: the namespace must be ${CAP_NAMESPACE}`, {
      errors: [
        { field: 'body.alert', message: `the namespace must be ${CAP_NAMESPACE} (CAP 1.2); found ${found}` },
      ],
    });
  }

  const r = new Reader(prefix);
  const path = 'body.alert';
  const identifier = r.text(root, 'identifier', path, true);
  checkToken(r, `${path}.identifier`, identifier);
  const sender = r.text(root, 'sender', path, true);
  checkToken(r, `${path}.sender`, sender);
  const sent = r.date(root, 'sent', path, true);
  const status = r.oneOf(root, 'status', path, CAP_STATUSES);
  const msgType = r.oneOf(root, 'msgType', path, CAP_MSG_TYPES);
  const scope = r.oneOf(root, 'scope', path, CAP_SCOPES);
  const references = readReferences(r, r.text(root, 'references', path), `${path}.references`);
  // The spec makes <references> optional everywhere, but an Update or Cancel that names nothing cannot be
  // applied to anything: refused here, so the answer says why instead of a bare 404.
  if ((msgType === 'Update' || msgType === 'Cancel') && references.length === 0) {
    r.fail(`${path}.references`, `<references> is required when msgType is ${msgType}`);
  }
  const infos = r.nodes(root, 'info').map((info, i) => readInfo(r, info, `${path}.info.${i}`));

  if (r.errors.length > 0) {
    const first = r.errors[0]!;
    const more = r.errors.length > 1 ? ` (and ${r.errors.length - 1} more)` : '';
    throw new AppError('validation_failed', `${first.field}: ${first.message}${more}`, { errors: r.errors });
  }
  return {
    identifier: identifier!,
    sender: sender!,
    sent: sent!,
    status: status!,
    msgType: msgType!,
    scope: scope!,
    references,
    infos,
  };
}

/** Spec §3.2.1 references: whitespace-separated "sender,identifier,sent" triples. */
function readReferences(r: Reader, value: string | undefined, field: string): CapReference[] {
  if (value === undefined) return [];
  const out: CapReference[] = [];
  for (const entry of value.split(/\s+/).filter(Boolean)) {
    const parts = entry.split(',');
    if (parts.length !== 3 || parts.some((p) => p === '')) {
      r.fail(field, `"${entry}" is not "sender,identifier,sent"`);
      continue;
    }
    const [sender, identifier, sentText] = parts as [string, string, string];
    const sent = parseCapDate(sentText);
    if (typeof sent === 'string') r.fail(field, sent);
    else out.push({ sender, identifier, sent });
  }
  return out;
}

function readInfo(r: Reader, node: XmlNode, path: string): CapInfo {
  const category: CapCategory[] = [];
  const categories = r.texts(node, 'category');
  if (categories.length === 0) r.fail(`${path}.category`, '<category> is required');
  categories.forEach((c, i) => {
    if ((CAP_CATEGORIES as readonly string[]).includes(c)) category.push(c as CapCategory);
    else r.fail(`${path}.category.${i}`, `"${c}" is not one of ${CAP_CATEGORIES.join(', ')}`);
  });
  const info: CapInfo = {
    language: r.text(node, 'language', path) ?? 'en-US', // spec §3.2.2 default
    category,
    event: r.text(node, 'event', path, true) ?? '',
    urgency: r.oneOf(node, 'urgency', path, CAP_URGENCIES) ?? 'Unknown',
    severity: r.oneOf(node, 'severity', path, CAP_SEVERITIES) ?? 'Unknown',
    certainty: r.oneOf(node, 'certainty', path, CAP_CERTAINTIES) ?? 'Unknown',
    areas: r.nodes(node, 'area').map((area, i) => readArea(r, area, `${path}.area.${i}`)),
  };
  for (const name of ['senderName', 'headline', 'description', 'instruction'] as const) {
    const value = r.text(node, name, path);
    if (value !== undefined) info[name] = value;
  }
  for (const name of ['effective', 'onset', 'expires'] as const) {
    const value = r.date(node, name, path, false);
    if (value !== undefined) info[name] = value;
  }
  return info;
}

function readArea(r: Reader, node: XmlNode, path: string): CapArea {
  const area: CapArea = {
    areaDesc: r.text(node, 'areaDesc', path, true) ?? '',
    polygons: [],
    circles: [],
    geocodes: [],
  };
  r.texts(node, 'polygon').forEach((text, i) => {
    const polygon = parsePolygon(text);
    if (typeof polygon === 'string') r.fail(`${path}.polygon.${i}`, polygon);
    else area.polygons.push(polygon);
  });
  r.texts(node, 'circle').forEach((text, i) => {
    const circle = parseCircle(text);
    if (typeof circle === 'string') r.fail(`${path}.circle.${i}`, circle);
    else area.circles.push(circle);
  });
  r.nodes(node, 'geocode').forEach((geocode, i) => {
    const valueName = r.text(geocode, 'valueName', `${path}.geocode.${i}`, true);
    const value = r.text(geocode, 'value', `${path}.geocode.${i}`, true);
    if (valueName !== undefined && value !== undefined) area.geocodes.push({ valueName, value });
  });
  return area;
}

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)$/;

function parsePoint(text: string): LatLon | string {
  const parts = text.split(',');
  if (parts.length !== 2 || !parts.every((p) => NUMBER.test(p))) return `"${text}" is not "lat,lon"`;
  const [lat, lon] = parts.map(Number) as [number, number];
  if (lat < -90 || lat > 90) return `latitude ${lat} is outside -90..90`;
  if (lon < -180 || lon > 180) return `longitude ${lon} is outside -180..180`;
  return [lat, lon];
}

/**
 * Points a polygon may have. Matching tests every device against every edge, so a 1 MB polygon (50,000
 * points) against 10,000 devices would hold the server for seconds; a district's outline needs a few
 * hundred points, a detailed coastline a few thousand.
 */
export const MAX_POLYGON_POINTS = 5_000;

/** Spec §3.2.4 polygon: whitespace-separated "lat,lon" pairs, at least 4, the first equal to the last. */
export function parsePolygon(text: string): LatLon[] | string {
  const points: LatLon[] = [];
  const pairs = text.trim().split(/\s+/).filter(Boolean);
  if (pairs.length > MAX_POLYGON_POINTS) {
    return `a polygon may have at most ${MAX_POLYGON_POINTS} points; found ${pairs.length} (simplify it)`;
  }
  for (const pair of pairs) {
    const point = parsePoint(pair);
    if (typeof point === 'string') return point;
    points.push(point);
  }
  if (points.length < 4) return `a polygon needs at least 4 "lat,lon" points; found ${points.length}`;
  const first = points[0]!;
  const last = points[points.length - 1]!;
  if (first[0] !== last[0] || first[1] !== last[1]) return 'a polygon must end at its first point (closed)';
  return points;
}

/** Spec §3.2.4 circle: "lat,lon radius", the radius in kilometres. */
export function parseCircle(text: string): CapCircle | string {
  const parts = text.trim().split(/\s+/);
  if (parts.length !== 2) return `"${text}" is not "lat,lon radiusKm"`;
  const point = parsePoint(parts[0]!);
  if (typeof point === 'string') return point;
  if (!NUMBER.test(parts[1]!)) return `radius "${parts[1]}" is not a number of kilometres`;
  const radiusKm = Number(parts[1]);
  if (radiusKm < 0) return 'the radius must not be negative';
  return { lat: point[0], lon: point[1], radiusKm };
}

// ---------------------------------------------------------------------------------------------------------
// Readings for the emergency service

/** The info to broadcast: the Vietnamese one (`vi`, `vi-VN`, any case) if there is one, else the first. */
export function pickInfo(alert: Pick<CapAlert, 'infos'>): CapInfo | undefined {
  return alert.infos.find((info) => /^vi(-vn)?$/i.test(info.language)) ?? alert.infos[0];
}

/** Headline, description and instruction as one text for TTS, each ended as a sentence. */
export function spokenText(info: CapInfo): string {
  return [info.headline, info.description, info.instruction]
    .map((part) => part?.trim() ?? '')
    .filter((part) => part !== '')
    .map((part) => (/[.!?…]$/.test(part) ? part : `${part}.`))
    .join(' ');
}

/**
 * Loa's risk level 1..5 from CAP severity, raised one step (capped at 5) when the urgency is Immediate
 * ("responsive action SHOULD be taken immediately", spec §3.2.2):
 *   Extreme → 5, Severe → 4, Moderate → 3, Minor → 2, Unknown → 1; Immediate → +1.
 * Certainty is not used: an operator would rather over-warn on a "Possible" typhoon than stay silent.
 */
export function riskLevel(info: Pick<CapInfo, 'severity' | 'urgency'>): 1 | 2 | 3 | 4 | 5 {
  const base = { Extreme: 5, Severe: 4, Moderate: 3, Minor: 2, Unknown: 1 }[info.severity];
  return Math.min(5, base + (info.urgency === 'Immediate' ? 1 : 0)) as 1 | 2 | 3 | 4 | 5;
}

export type Hazard = 'storm' | 'flood' | 'landslide' | 'fire' | 'epidemic' | 'other';

// Whole words only: a letter (or combining mark) must not touch either end, so "fire" does not match
// "firewall" and "lũ" does not match inside a longer syllable. Vietnamese words are given with tone marks, NFC.
const HAZARD_WORDS: [Exclude<Hazard, 'other'>, string[]][] = [
  [
    'storm',
    ['bão', 'áp thấp nhiệt đới', 'lốc', 'lốc xoáy', 'storm', 'typhoon', 'cyclone', 'hurricane', 'tornado'],
  ],
  [
    'landslide',
    ['sạt lở', 'lở đất', 'sụt lún', 'đất trượt', 'landslide', 'landslides', 'mudslide', 'debris flow'],
  ],
  [
    'flood',
    ['lũ', 'lụt', 'lũ quét', 'ngập', 'ngập lụt', 'triều cường', 'flood', 'floods', 'flooding', 'flash flood'],
  ],
  ['fire', ['cháy', 'cháy rừng', 'hỏa hoạn', 'hoả hoạn', 'fire', 'wildfire', 'bushfire']],
  [
    'epidemic',
    [
      'dịch bệnh',
      'bệnh dịch',
      'đại dịch',
      'ổ dịch',
      'dịch tả',
      'dịch cúm',
      'dịch sốt',
      'cúm',
      'sốt xuất huyết',
      'covid',
      'epidemic',
      'pandemic',
      'outbreak',
      'disease',
    ],
  ],
];

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const HAZARD_PATTERNS = HAZARD_WORDS.map(
  ([hazard, words]) =>
    [
      hazard,
      new RegExp(
        `(?<![\\p{L}\\p{M}\\p{N}])(${words.map(escapeRegExp).join('|')})(?![\\p{L}\\p{M}\\p{N}])`,
        'iu',
      ),
    ] as const,
);

function hazardIn(text: string | undefined): Hazard | undefined {
  if (!text) return undefined;
  const normalised = text.normalize('NFC').toLowerCase();
  // The hazard named first wins: "Bão số 9 gây lũ" is a storm, "Lũ quét sau bão" a flood.
  let best: { hazard: Hazard; at: number } | undefined;
  for (const [hazard, pattern] of HAZARD_PATTERNS) {
    const at = normalised.search(pattern);
    if (at >= 0 && (best === undefined || at < best.at)) best = { hazard, at };
  }
  return best?.hazard;
}

/**
 * The hazard from the info's words: the event first, then the headline, then the CAP category where it is
 * unambiguous (Fire → fire, Health → epidemic); Met or Geo alone could be many things → other.
 */
export function hazard(info: Pick<CapInfo, 'event' | 'headline' | 'category'>): Hazard {
  const fromWords = hazardIn(info.event) ?? hazardIn(info.headline);
  if (fromWords) return fromWords;
  if (info.category.includes('Fire')) return 'fire';
  if (info.category.includes('Health')) return 'epidemic';
  return 'other';
}
