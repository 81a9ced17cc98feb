import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { AppError, toProblem } from '../src/errors.js';
import {
  CAP_MAX_BYTES,
  CAP_NAMESPACE,
  MAX_POLYGON_POINTS,
  hazard,
  parseCap,
  parsePolygon,
  pickInfo,
  riskLevel,
  spokenText,
  type CapInfo,
} from '../src/modules/emergencies/cap.js';
import { geocodeCodes, matchDevices } from '../src/modules/emergencies/cap.geometry.js';

const FIXTURE = readFileSync(new URL('./fixtures/cap/bao-so-9.xml', import.meta.url));

/** A minimal valid CAP 1.2 alert; `replace` swaps whole elements, `info` replaces the info block. */
function capXml(
  opts: { alert?: Record<string, string | null>; info?: string; extra?: string; ns?: string } = {},
): string {
  const fields: Record<string, string | null> = {
    identifier: 'LOA-TEST-001',
    sender: 'canhbao@hue.gov.vn',
    sent: '2026-11-25T14:30:00+07:00',
    status: 'Actual',
    msgType: 'Alert',
    scope: 'Public',
    ...opts.alert,
  };
  const body = Object.entries(fields)
    .filter((e): e is [string, string] => e[1] !== null)
    .map(([k, v]) => `<${k}>${v}</${k}>`)
    .join('\n  ');
  const info =
    opts.info ??
    `<info>
    <language>vi</language>
    <category>Met</category>
    <event>Áp thấp nhiệt đới</event>
    <urgency>Expected</urgency>
    <severity>Moderate</severity>
    <certainty>Likely</certainty>
    <area><areaDesc>Xã Phú Vang</areaDesc></area>
  </info>`;
  return `<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="${opts.ns ?? CAP_NAMESPACE}">
  ${body}
  ${opts.extra ?? ''}
  ${info}
</alert>`;
}

function refusal(fn: () => unknown): AppError {
  try {
    fn();
  } catch (err) {
    if (err instanceof AppError) return err;
    throw err;
  }
  throw new Error('expected an AppError, nothing was thrown');
}

const fields = (err: AppError) => (err.extra.errors ?? []).map((e) => e.field);

describe('parseCap: the Vietnamese typhoon alert (tests/fixtures/cap/bao-so-9.xml)', () => {
  const alert = parseCap(FIXTURE);

  it('reads the alert block', () => {
    expect(alert).toMatchObject({
      identifier: 'VN-NCHMF-2026-BAO09-001',
      sender: 'canhbao@nchmf.gov.vn',
      status: 'Actual',
      msgType: 'Alert',
      scope: 'Public',
      references: [],
    });
    expect(alert.sent.toISOString()).toBe('2026-11-25T07:30:00.000Z');
    expect(alert.infos).toHaveLength(2);
  });

  it('keeps the Vietnamese text exactly, with its tone marks, NFC', () => {
    const vi = alert.infos[0]!;
    expect(vi.language).toBe('vi-VN');
    expect(vi.event).toBe('Bão số 9');
    expect(vi.senderName).toBe('Trung tâm Dự báo khí tượng thủy văn quốc gia');
    expect(vi.headline).toBe('Khẩn cấp: Bão số 9 đổ bộ vào Thừa Thiên Huế và Quảng Trị');
    expect(vi.description).toContain('nguy cơ lũ quét và sạt lở đất ở vùng núi');
    expect(vi.instruction).toMatch(/^Người dân không ra khơi, gia cố nhà cửa/);
    for (const text of [vi.event, vi.headline!, vi.description!, vi.instruction!]) {
      expect(text).toBe(text.normalize('NFC'));
    }
    expect(vi).toMatchObject({
      category: ['Met'],
      urgency: 'Immediate',
      severity: 'Extreme',
      certainty: 'Observed',
    });
    expect(vi.expires?.toISOString()).toBe('2026-11-26T07:30:00.000Z');
  });

  it('reads the area: polygon as [lat, lon] points, circle, VN-ADMIN geocodes', () => {
    const area = alert.infos[0]!.areas[0]!;
    expect(area.areaDesc).toBe('Thành phố Huế (Thừa Thiên Huế) và tỉnh Quảng Trị');
    expect(area.polygons).toEqual([
      [
        [16.3, 107.4],
        [16.3, 107.8],
        [16.65, 107.8],
        [16.65, 107.4],
        [16.3, 107.4],
      ],
    ]);
    expect(area.circles).toEqual([{ lat: 16.8163, lon: 107.1003, radiusKm: 20 }]);
    expect(area.geocodes).toEqual([
      { valueName: 'VN-ADMIN', value: '46' },
      { valueName: 'VN-ADMIN', value: '45' },
    ]);
    expect(geocodeCodes(alert.infos[0]!.areas)).toEqual(['46', '45']);
  });

  it('picks the Vietnamese info and speaks headline, description, instruction as sentences', () => {
    const info = pickInfo(alert)!;
    expect(info.language).toBe('vi-VN');
    const text = spokenText(info);
    expect(text).toMatch(/^Khẩn cấp: Bão số 9 đổ bộ vào Thừa Thiên Huế và Quảng Trị\. Hồi 13 giờ/);
    expect(text).toContain('sạt lở đất ở vùng núi. Người dân không ra khơi');
    expect(text).toMatch(/không ra ngoài khi bão đổ bộ\.$/);
    expect(riskLevel(info)).toBe(5);
    expect(hazard(info)).toBe('storm');
  });

  it('reads the English info too, and accepts the same document as a string', () => {
    const en = parseCap(FIXTURE.toString('utf8')).infos[1]!;
    expect(en).toMatchObject({ language: 'en-US', event: 'Typhoon No. 9', category: ['Met'] });
    expect(hazard(en)).toBe('storm');
    expect(spokenText(en)).toMatch(
      /^Emergency: Typhoon No\. 9 making landfall in Thua Thien Hue and Quang Tri\. /,
    );
  });
});

describe('parseCap: message types and statuses', () => {
  it('reads an Update and a Cancel with their references', () => {
    const update = parseCap(
      capXml({
        alert: {
          identifier: 'VN-NCHMF-2026-BAO09-002',
          msgType: 'Update',
          references: 'canhbao@nchmf.gov.vn,VN-NCHMF-2026-BAO09-001,2026-11-25T14:30:00+07:00',
        },
      }),
    );
    expect(update.msgType).toBe('Update');
    expect(update.references).toEqual([
      {
        sender: 'canhbao@nchmf.gov.vn',
        identifier: 'VN-NCHMF-2026-BAO09-001',
        sent: new Date('2026-11-25T07:30:00Z'),
      },
    ]);

    const cancel = parseCap(
      capXml({
        alert: {
          identifier: 'VN-NCHMF-2026-BAO09-003',
          msgType: 'Cancel',
          references:
            'canhbao@nchmf.gov.vn,VN-NCHMF-2026-BAO09-001,2026-11-25T14:30:00+07:00\n' +
            '   canhbao@nchmf.gov.vn,VN-NCHMF-2026-BAO09-002,2026-11-25T16:00:00-00:00',
        },
        info: '',
      }),
    );
    expect(cancel.msgType).toBe('Cancel');
    expect(cancel.infos).toEqual([]);
    expect(cancel.references.map((r) => [r.identifier, r.sent.toISOString()])).toEqual([
      ['VN-NCHMF-2026-BAO09-001', '2026-11-25T07:30:00.000Z'],
      ['VN-NCHMF-2026-BAO09-002', '2026-11-25T16:00:00.000Z'],
    ]);
    expect(pickInfo(cancel)).toBeUndefined();
  });

  it('refuses an Update or Cancel that references nothing, and a malformed reference', () => {
    const err = refusal(() => parseCap(capXml({ alert: { msgType: 'Cancel' } })));
    expect(err.code).toBe('validation_failed');
    expect(err.extra.errors).toEqual([
      { field: 'body.alert.references', message: '<references> is required when msgType is Cancel' },
    ]);
    const bad = refusal(() =>
      parseCap(capXml({ alert: { msgType: 'Update', references: 'canhbao@hue.gov.vn,LOA-1' } })),
    );
    expect(bad.extra.errors?.[0]).toEqual({
      field: 'body.alert.references',
      message: '"canhbao@hue.gov.vn,LOA-1" is not "sender,identifier,sent"',
    });
  });

  it.each(['Exercise', 'Test', 'System', 'Draft'] as const)('accepts status %s', (status) => {
    expect(parseCap(capXml({ alert: { status } })).status).toBe(status);
  });

  it('accepts a namespace prefix (cap:alert) and numeric character references', () => {
    const xml = `<?xml version="1.0" encoding="utf-8"?>
<cap:alert xmlns:cap="${CAP_NAMESPACE}">
  <cap:identifier>LOA-PREFIX-1</cap:identifier><cap:sender>canhbao@hue.gov.vn</cap:sender>
  <cap:sent>2026-11-25T14:30:00+07:00</cap:sent><cap:status>Exercise</cap:status>
  <cap:msgType>Alert</cap:msgType><cap:scope>Public</cap:scope>
  <cap:info><cap:category>Fire</cap:category><cap:event>Di&#7877;n t&#x1EAD;p ch&#225;y r&#7915;ng</cap:event>
    <cap:urgency>Future</cap:urgency><cap:severity>Minor</cap:severity><cap:certainty>Possible</cap:certainty>
    <cap:headline>A &amp;lt; B &amp; C</cap:headline>
    <cap:description><![CDATA[Giữ nguyên &amp; <b>]]></cap:description></cap:info>
</cap:alert>`;
    const alert = parseCap(xml);
    const info = alert.infos[0]!;
    expect(info.event).toBe('Diễn tập cháy rừng');
    expect(info.language).toBe('en-US');
    expect(info.headline).toBe('A &lt; B & C');
    expect(info.description).toBe('Giữ nguyên &amp; <b>');
    expect(info.areas).toEqual([]);
    expect(hazard(info)).toBe('fire');
  });

  it('normalises decomposed Vietnamese (NFD) to NFC', () => {
    const nfd = 'Bão số 9 đổ bộ'.normalize('NFD');
    const info = parseCap(
      capXml({
        info: `<info><category>Met</category><event>${nfd}</event><urgency>Immediate</urgency>
        <severity>Severe</severity><certainty>Likely</certainty></info>`,
      }),
    ).infos[0]!;
    expect(info.event).toBe('Bão số 9 đổ bộ'.normalize('NFC'));
    expect(info.event).not.toBe(nfd);
  });
});

describe('parseCap: refusals name what is wrong', () => {
  it('a missing required element → 400 naming it', () => {
    const err = refusal(() => parseCap(capXml({ alert: { sender: null } })));
    expect(err.status).toBe(400);
    expect(err.code).toBe('validation_failed');
    expect(err.extra.errors).toEqual([{ field: 'body.alert.sender', message: '<sender> is required' }]);
    expect(err.detail).toBe('body.alert.sender: <sender> is required');

    const inInfo = refusal(() =>
      parseCap(
        capXml({
          info: `<info><category>Met</category><urgency>Immediate</urgency><severity>Severe</severity>
          <certainty>Likely</certainty><area><polygon>16.3,107.4 16.3,107.8 16.6,107.8 16.3,107.4</polygon></area></info>`,
        }),
      ),
    );
    expect(fields(inInfo)).toEqual(['body.alert.info.0.event', 'body.alert.info.0.area.0.areaDesc']);
    expect(toProblem(inInfo)).toMatchObject({ status: 400, code: 'validation_failed' });
  });

  it('every problem is listed at once', () => {
    const err = refusal(() =>
      parseCap(capXml({ alert: { identifier: null, status: 'Real', scope: 'Everyone' } })),
    );
    expect(fields(err)).toEqual(['body.alert.identifier', 'body.alert.status', 'body.alert.scope']);
    expect(err.detail).toBe('body.alert.identifier: <identifier> is required (and 2 more)');
  });

  it('a bad enumeration → 400 listing the allowed values', () => {
    const err = refusal(() => parseCap(capXml({ alert: { msgType: 'Warning' } })));
    expect(err.extra.errors).toEqual([
      { field: 'body.alert.msgType', message: '"Warning" is not one of Alert, Update, Cancel, Ack, Error' },
    ]);
    const info = refusal(() =>
      parseCap(
        capXml({
          info: `<info><category>Met</category><category>Weather</category><event>Bão</event>
          <urgency>Now</urgency><severity>Severe</severity><certainty>Very Likely</certainty></info>`,
        }),
      ),
    );
    expect(fields(info)).toEqual([
      'body.alert.info.0.category.1',
      'body.alert.info.0.urgency',
      'body.alert.info.0.certainty',
    ]);
  });

  it.each([
    ['2026-11-25T14:30:00', 'no offset'],
    ['2026-11-25T07:30:00Z', 'Z is not allowed by CAP'],
    ['2026-11-25 14:30:00+07:00', 'space instead of T'],
    ['25/11/2026 14:30', 'not ISO'],
    ['2026-02-30T14:30:00+07:00', 'no such day'],
  ])('refuses the date %s (%s)', (sent) => {
    const err = refusal(() => parseCap(capXml({ alert: { sent } })));
    expect(fields(err)).toEqual(['body.alert.sent']);
    expect(err.extra.errors?.[0]?.message).toContain(sent);
  });

  it('refuses an info expires without offset, naming the info', () => {
    const err = refusal(() =>
      parseCap(
        capXml({
          info: `<info><category>Met</category><event>Bão</event><urgency>Immediate</urgency>
          <severity>Severe</severity><certainty>Likely</certainty><expires>2026-11-26T14:30:00</expires></info>`,
        }),
      ),
    );
    expect(err.extra.errors).toEqual([
      {
        field: 'body.alert.info.0.expires',
        message:
          '"2026-11-26T14:30:00" is not a CAP date-time with an explicit offset, e.g. 2026-11-25T14:30:00+07:00',
      },
    ]);
  });

  it('refuses a polygon with more points than matching can afford', () => {
    const ring = Array.from({ length: MAX_POLYGON_POINTS }, (_, i) => `16.${i % 10},107.${i % 7}`);
    const polygon = [...ring, ring[0]].join(' ');
    expect(parsePolygon(polygon)).toBe(
      `a polygon may have at most ${MAX_POLYGON_POINTS} points; found ${MAX_POLYGON_POINTS + 1} (simplify it)`,
    );
  });

  it('refuses bad polygons and circles', () => {
    const err = refusal(() =>
      parseCap(
        capXml({
          info: `<info><category>Met</category><event>Bão</event><urgency>Immediate</urgency>
          <severity>Severe</severity><certainty>Likely</certainty><area><areaDesc>Huế</areaDesc>
          <polygon>16.3,107.4 16.3,107.8 16.3,107.4</polygon>
          <polygon>16.3,107.4 16.3,107.8 16.6,107.8 16.6,107.4</polygon>
          <polygon>107.4,16.3 107.8,16.3 107.8,16.6 107.4,16.3</polygon>
          <circle>16.46,107.59</circle><circle>16.46,107.59 -3</circle></area></info>`,
        }),
      ),
    );
    expect(err.extra.errors).toEqual([
      {
        field: 'body.alert.info.0.area.0.polygon.0',
        message: 'a polygon needs at least 4 "lat,lon" points; found 3',
      },
      {
        field: 'body.alert.info.0.area.0.polygon.1',
        message: 'a polygon must end at its first point (closed)',
      },
      { field: 'body.alert.info.0.area.0.polygon.2', message: 'latitude 107.4 is outside -90..90' },
      { field: 'body.alert.info.0.area.0.circle.0', message: '"16.46,107.59" is not "lat,lon radiusKm"' },
      { field: 'body.alert.info.0.area.0.circle.1', message: 'the radius must not be negative' },
    ]);
  });

  it('refuses another namespace (CAP 1.1) or none, and a non-alert root', () => {
    const v11 = refusal(() => parseCap(capXml({ ns: 'urn:oasis:names:tc:emergency:cap:1.1' })));
    expect(v11.extra.errors).toEqual([
      {
        field: 'body.alert',
        message: `the namespace must be ${CAP_NAMESPACE} (CAP 1.2); found "urn:oasis:names:tc:emergency:cap:1.1"`,
      },
    ]);
    const none = refusal(() => parseCap(capXml().replace(` xmlns="${CAP_NAMESPACE}"`, '')));
    expect(none.extra.errors?.[0]?.message).toMatch(/found none$/);
    const feed = refusal(() => parseCap('<feed><entry/></feed>'));
    expect(feed.extra.errors).toEqual([{ field: 'body', message: 'the root element must be a CAP <alert>' }]);
  });

  it('an element that may appear once, given twice', () => {
    const err = refusal(() => parseCap(capXml({ extra: '<identifier>LOA-TEST-002</identifier>' })));
    expect(err.extra.errors).toEqual([
      { field: 'body.alert.identifier', message: '<identifier> must appear only once' },
    ]);
  });

  it('malformed XML → 400 with the position', () => {
    const err = refusal(() =>
      parseCap(`<alert xmlns="${CAP_NAMESPACE}">\n  <identifier>x</sender>\n</alert>`),
    );
    expect(err.status).toBe(400);
    expect(err.extra.errors?.[0]?.field).toBe('body');
    expect(err.detail).toMatch(/^body: malformed XML at line 2, column \d+: /);
    expect(refusal(() => parseCap('')).code).toBe('validation_failed');
    expect(refusal(() => parseCap('not xml at all')).code).toBe('validation_failed');
  });

  it('refuses bytes that are not UTF-8 and a declared non-UTF-8 encoding', () => {
    const latin1 = Buffer.from(capXml().replace('Áp thấp', 'Bão'), 'latin1');
    expect(refusal(() => parseCap(latin1)).extra.errors).toEqual([
      { field: 'body', message: 'is not valid UTF-8 (CAP documents are UTF-8)' },
    ]);
    const declared = capXml().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"');
    expect(refusal(() => parseCap(declared)).extra.errors?.[0]?.message).toBe(
      'encoding "ISO-8859-1" is not supported; send UTF-8',
    );
  });
});

describe('parseCap: hostile documents', () => {
  const passwd = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 3);

  /** Everything a client or a log could see of the error. */
  const everything = (err: AppError) =>
    [err.message, err.detail, JSON.stringify(toProblem(err)), JSON.stringify(err.extra)].join('\n');

  it('billion laughs → refused before parsing', () => {
    const lol = `<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
${capXml()
  .replace(/^<\?xml[^>]*>\n/, '')
  .replace('<event>Áp thấp nhiệt đới</event>', '<event>&lol9;</event>')}`;
    const err = refusal(() => parseCap(lol));
    expect(err.code).toBe('validation_failed');
    expect(err.extra.errors).toEqual([
      { field: 'body', message: 'DTDs and entity declarations (<!DOCTYPE, <!ENTITY) are not allowed' },
    ]);
    expect(everything(err)).not.toContain('lollol');
  });

  it('an external entity (XXE, file:///etc/passwd) → refused, nothing of the file anywhere in the error', () => {
    const xxe = `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE alert [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
${capXml()
  .replace(/^<\?xml[^>]*>\n/, '')
  .replace('<identifier>LOA-TEST-001</identifier>', '<identifier>&xxe;</identifier>')}`;
    for (const doc of [xxe, xxe.replace('<!DOCTYPE', '<!doctype'), xxe.replace('<!DOCTYPE', '<! DOCTYPE')]) {
      const err = refusal(() => parseCap(doc));
      expect(err.code).toBe('validation_failed');
      expect(err.extra.errors?.[0]?.field).toBe('body');
      const seen = everything(err);
      expect(seen).not.toContain('root:');
      for (const line of passwd) expect(seen).not.toContain(line);
    }
  });

  it('an entity declared nowhere (or an HTML one) is refused, not expanded or kept', () => {
    const undeclared = capXml().replace(
      '<identifier>LOA-TEST-001</identifier>',
      '<identifier>&xxe;</identifier>',
    );
    expect(refusal(() => parseCap(undeclared)).extra.errors).toEqual([
      { field: 'body', message: 'undefined entity &xxe;' },
    ]);
    const html = capXml().replace('Áp thấp nhiệt đới', 'Áp&nbsp;thấp');
    expect(refusal(() => parseCap(html)).extra.errors?.[0]?.message).toBe('undefined entity &nbsp;');
    const nul = capXml().replace('Áp thấp nhiệt đới', 'Áp&#0;thấp');
    expect(refusal(() => parseCap(nul)).extra.errors?.[0]?.message).toBe(
      'character reference &#0; is not a valid character',
    );
  });

  it('more than 1 MB → 413 before parsing, string or Buffer', () => {
    const big = capXml({ extra: `<!-- ${'bão '.repeat(CAP_MAX_BYTES / 4)} -->` });
    expect(Buffer.byteLength(big)).toBeGreaterThan(CAP_MAX_BYTES);
    expect(big.length).toBeLessThan(CAP_MAX_BYTES * 1.1); // the limit is on bytes, not characters
    for (const input of [big, Buffer.from(big)]) {
      const err = refusal(() => parseCap(input));
      expect(err.code).toBe('payload_too_large');
      expect(err.status).toBe(413);
    }
    // Just under the limit is read.
    const fits = capXml({ extra: `<!-- ${'x'.repeat(CAP_MAX_BYTES - 2000)} -->` });
    expect(Buffer.byteLength(fits)).toBeLessThanOrEqual(CAP_MAX_BYTES);
    expect(parseCap(fits).identifier).toBe('LOA-TEST-001');
  });
});

describe('matchDevices and geocodeCodes', () => {
  const areas = parseCap(FIXTURE).infos[0]!.areas;

  it('matches devices in the Huế polygon and the Đông Hà circle, not elsewhere', () => {
    const devices = [
      { id: 'hue-citadel', lat: 16.4698, lon: 107.5786 }, // Kinh thành Huế: in the polygon
      { id: 'phu-vang', lat: 16.45, lon: 107.7 }, // Phú Vang: in the polygon
      { id: 'edge', lat: 16.3, lon: 107.6 }, // on the polygon's southern edge
      { id: 'dong-ha', lat: 16.8163, lon: 107.1003 }, // the circle's centre
      { id: 'quang-tri-town', lat: 16.75, lon: 107.19 }, // Thị xã Quảng Trị, ~12 km away: in the circle
      { id: 'da-nang', lat: 16.0544, lon: 108.2022 }, // outside both
      { id: 'ha-noi', lat: 21.0278, lon: 105.8342 },
      { id: 'khe-sanh', lat: 16.6237, lon: 106.7309 }, // Quảng Trị but ~45 km from Đông Hà: outside
      { id: 'no-position', lat: null, lon: null },
      { id: 'half-position', lat: 16.4698, lon: null },
    ];
    expect([...matchDevices(areas, devices)].sort()).toEqual(
      ['dong-ha', 'edge', 'hue-citadel', 'phu-vang', 'quang-tri-town'].sort(),
    );
  });

  it('reads CAP points as lat,lon: the swapped point is outside', () => {
    // A square at lat 10..11, lon 20..21: a device at lat 10.5, lon 20.5 is inside; lat 20.5, lon 10.5 is not.
    const square = parseCap(
      capXml({
        info: `<info><category>Met</category><event>Bão</event><urgency>Immediate</urgency>
        <severity>Severe</severity><certainty>Likely</certainty><area><areaDesc>Ô vuông</areaDesc>
        <polygon>10,20 10,21 11,21 11,20 10,20</polygon><circle>50,5 100</circle></area></info>`,
      }),
    ).infos[0]!.areas;
    const matched = matchDevices(square, [
      { id: 'in', lat: 10.5, lon: 20.5 },
      { id: 'swapped', lat: 20.5, lon: 10.5 },
      { id: 'circle-in', lat: 50.5, lon: 5 }, // 56 km north of the centre
      { id: 'circle-swapped', lat: 5, lon: 50.5 },
    ]);
    expect([...matched].sort()).toEqual(['circle-in', 'in']);
  });

  it('areas without polygon or circle match no device; geocodes are the VN-ADMIN values only', () => {
    const areasOnlyCodes = [
      {
        areaDesc: 'Xã Phú Vang',
        polygons: [],
        circles: [],
        geocodes: [
          { valueName: 'VN-ADMIN', value: '19774' },
          { valueName: 'FIPS6', value: '006113' },
          { valueName: 'VN-ADMIN', value: '19774' },
        ],
      },
      {
        areaDesc: 'Xã Phú Lộc',
        polygons: [],
        circles: [],
        geocodes: [{ valueName: 'VN-ADMIN', value: '20005' }],
      },
    ];
    expect(matchDevices(areasOnlyCodes, [{ id: 'hue-citadel', lat: 16.4698, lon: 107.5786 }]).size).toBe(0);
    expect(geocodeCodes(areasOnlyCodes)).toEqual(['19774', '20005']);
  });
});

describe('pickInfo, riskLevel, hazard', () => {
  const info = (over: Partial<CapInfo>): CapInfo => ({
    language: 'en-US',
    category: ['Met'],
    event: 'Weather',
    urgency: 'Expected',
    severity: 'Moderate',
    certainty: 'Likely',
    areas: [],
    ...over,
  });

  it('pickInfo prefers vi / vi-VN in any case, else the first', () => {
    const en = info({ language: 'en-US', event: 'Flood' });
    const fr = info({ language: 'fr', event: 'Inondation' });
    expect(pickInfo({ infos: [en, info({ language: 'VI', event: 'Lũ' })] })?.event).toBe('Lũ');
    expect(pickInfo({ infos: [en, info({ language: 'vi-vn', event: 'Lụt' })] })?.event).toBe('Lụt');
    expect(pickInfo({ infos: [fr, en] })?.event).toBe('Inondation');
    expect(pickInfo({ infos: [] })).toBeUndefined();
  });

  it('spokenText skips what is missing and does not double the full stop', () => {
    expect(spokenText(info({ headline: 'Cảnh báo lũ quét!', instruction: 'Di dời ngay.' }))).toBe(
      'Cảnh báo lũ quét! Di dời ngay.',
    );
    expect(spokenText(info({ description: '  Mưa rất to  ' }))).toBe('Mưa rất to.');
    expect(spokenText(info({}))).toBe('');
  });

  it.each([
    ['Extreme', 'Immediate', 5],
    ['Extreme', 'Expected', 5],
    ['Severe', 'Immediate', 5],
    ['Severe', 'Future', 4],
    ['Moderate', 'Immediate', 4],
    ['Moderate', 'Expected', 3],
    ['Minor', 'Immediate', 3],
    ['Minor', 'Past', 2],
    ['Unknown', 'Immediate', 2],
    ['Unknown', 'Unknown', 1],
  ] as const)('riskLevel(%s, %s) = %i', (severity, urgency, level) => {
    expect(riskLevel({ severity, urgency })).toBe(level);
  });

  it.each([
    ['Bão số 9', ['Met'], 'storm'],
    ['Áp thấp nhiệt đới', ['Met'], 'storm'],
    ['Typhoon Yagi', ['Met'], 'storm'],
    ['Lũ quét', ['Met'], 'flood'],
    ['Ngập lụt do mưa lớn', ['Met'], 'flood'],
    ['Flash flood warning', ['Met'], 'flood'],
    ['Sạt lở đất', ['Geo'], 'landslide'],
    ['Lũ quét và sạt lở đất', ['Met', 'Geo'], 'flood'],
    ['Sạt lở đất sau bão', ['Geo'], 'landslide'],
    ['Cháy rừng cấp V', ['Fire'], 'fire'],
    ['Forest fire danger', ['Fire'], 'fire'],
    ['Dịch tả lợn châu Phi', ['Health'], 'epidemic'],
    ['Sốt xuất huyết', ['Health'], 'epidemic'],
    ['Cảnh báo y tế', ['Health'], 'epidemic'],
    ['Firewall maintenance', ['Infra'], 'other'],
    ['Động đất', ['Geo'], 'other'],
    ['Cảnh báo', ['Safety'], 'other'],
  ] as const)('hazard(%s, %j) = %s', (event, category, expected) => {
    expect(hazard({ event, category: [...category] })).toBe(expected);
  });

  it('hazard falls back to the headline when the event says nothing', () => {
    expect(hazard({ event: 'Cảnh báo khẩn', headline: 'Bão số 3 đổ bộ', category: ['Met'] })).toBe('storm');
  });
});
