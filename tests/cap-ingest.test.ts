/**
 * POST /api/v1/emergencies/cap end to end: a real app on a real SQLite file, real TTS and ffmpeg rendering,
 * a real broker and a real MQTT device where a play is to be observed. Only the clock is manual, set to the
 * afternoon typhoon No. 9 makes landfall (tests/fixtures/cap/bao-so-9.xml).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LightMyRequestResponse } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { commandSchema, topics, type Command } from '../src/protocol/index.js';
import { createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { connectDevice, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

const FIXTURE = fs.readFileSync(new URL('./fixtures/cap/bao-so-9.xml', import.meta.url), 'utf8');
const SENDER = 'canhbao@nchmf.gov.vn';
const NOW = '2026-11-25T07:35:00.000Z'; // 14:35 in Vietnam, five minutes after the fixture was sent

interface AreaSpec {
  desc?: string;
  codes?: string[];
  polygon?: string;
  circle?: string;
  geocodes?: [string, string][];
}
interface InfoSpec {
  language?: string;
  event?: string;
  headline?: string;
  description?: string;
  instruction?: string;
  severity?: string;
  urgency?: string;
  expires?: string;
  areas?: AreaSpec[];
}

const area = (a: AreaSpec) =>
  `<area><areaDesc>${a.desc ?? 'Vùng cảnh báo'}</areaDesc>` +
  (a.polygon ? `<polygon>${a.polygon}</polygon>` : '') +
  (a.circle ? `<circle>${a.circle}</circle>` : '') +
  [...(a.codes ?? []).map((c): [string, string] => ['VN-ADMIN', c]), ...(a.geocodes ?? [])]
    .map(([n, v]) => `<geocode><valueName>${n}</valueName><value>${v}</value></geocode>`)
    .join('') +
  '</area>';

const info = (i: InfoSpec = {}) =>
  `<info><language>${i.language ?? 'vi-VN'}</language><category>Met</category>` +
  `<event>${i.event ?? 'Lũ quét'}</event><urgency>${i.urgency ?? 'Immediate'}</urgency>` +
  `<severity>${i.severity ?? 'Severe'}</severity><certainty>Likely</certainty>` +
  `<headline>${i.headline ?? 'Cảnh báo lũ quét – Thôn Đông'}</headline>` +
  (i.description === undefined ? '<description>Nước sông lên nhanh</description>' : i.description) +
  (i.instruction ? `<instruction>${i.instruction}</instruction>` : '') +
  `<expires>${i.expires ?? '2026-11-25T20:00:00+07:00'}</expires>` +
  (i.areas ?? [{ codes: ['19501'] }]).map(area).join('') +
  '</info>';

/** A CAP 1.2 alert, short enough to render quickly. */
function cap(
  o: {
    identifier?: string;
    sender?: string;
    status?: string;
    msgType?: string;
    references?: string;
    infos?: string[];
  } = {},
) {
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">' +
    `<identifier>${o.identifier ?? 'VN-QT-2026-0001'}</identifier><sender>${o.sender ?? SENDER}</sender>` +
    `<sent>2026-11-25T14:30:00+07:00</sent><status>${o.status ?? 'Actual'}</status>` +
    `<msgType>${o.msgType ?? 'Alert'}</msgType><scope>Public</scope>` +
    (o.references ? `<references>${o.references}</references>` : '') +
    (o.infos ?? [info()]).join('') +
    '</alert>'
  );
}

type Answer = {
  emergencyId: string | null;
  emergencyIds: string[];
  outcome: string;
  status: string;
  msgType: string;
  sender: string;
  identifier: string;
  unmatched: { kind: string; value: string; areaDesc: string; reason: string }[];
  reason?: string;
  replayed: boolean;
  emergency: null | {
    id: string;
    title: string;
    text: string;
    exercise: boolean;
    label: string;
    hazard: string | null;
    riskLevel: number | null;
    targetCount: number;
    status: string;
    revision: number;
    expiresAt: string;
    commandId: string;
    sentBy: { kind: string; id: string | null; name: string };
  };
};

describe('POST /api/v1/emergencies/cap', () => {
  let t: TestApp;
  let clock: ManualClock;
  let areas: Record<'quangTri' | 'haiLang' | 'haiPhu' | 'haiThuong' | 'hue', string>;

  const post = (
    body: string | Buffer,
    options: { token?: string | null; type?: string } = {},
  ): Promise<LightMyRequestResponse> => {
    const token = options.token === undefined ? t.adminToken : options.token;
    return t.app.inject({
      method: 'POST',
      url: '/api/v1/emergencies/cap',
      headers: {
        'content-type': options.type ?? 'application/cap+xml',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      payload: body,
    });
  };
  const accepted = async (body: string, status = 201, token?: string) => {
    const res = await post(body, token === undefined ? {} : { token });
    expect(res.statusCode, res.body).toBe(status);
    return res.json<Answer>();
  };
  const createArea = async (name: string, level: string, parentId?: string, code?: string) => {
    const res = await t.request('POST', '/api/v1/areas', {
      token: t.adminToken,
      body: { name, level, ...(parentId ? { parentId } : {}), ...(code ? { code } : {}) },
    });
    expect(res.statusCode, res.body).toBe(201);
    return res.json<{ id: string }>().id;
  };
  const device = async (
    areaId: string,
    name: string,
    extra: { lat?: number; lon?: number; drillParticipant?: boolean } = {},
  ) => {
    const res = await t.request('POST', '/api/v1/devices', {
      token: t.adminToken,
      body: { name, kind: 'cluster', areaId, ...extra },
    });
    expect(res.statusCode, res.body).toBe(201);
    return res.json<{ id: string; credentials: { clientId: string; username: string; password: string } }>();
  };
  /** A warning-source key limited to an area, as an admin creates it. */
  const sourceKey = async (name: string, areaId: string) => {
    const res = await t.request('POST', '/api/v1/warning-sources', {
      token: t.adminToken,
      body: { name, areaId },
    });
    expect(res.statusCode, res.body).toBe(201);
    return res.json<{ id: string; key: string }>();
  };
  const statusOf = async (emergencyId: string) => {
    const res = await t.request('GET', `/api/v1/emergencies/${emergencyId}`, { token: t.adminToken });
    expect(res.statusCode, res.body).toBe(200);
    return res.json<{ status: string }>().status;
  };
  /** The devices an emergency's play command went to. */
  const targetsOf = (commandId: string) =>
    (
      t.query(
        `SELECT device_id AS id FROM command_deliveries WHERE command_id = '${commandId}' ORDER BY device_id`,
      ) as { id: string }[]
    ).map((r) => r.id);
  const count = (table: string) => (t.query(`SELECT COUNT(*) AS n FROM ${table}`)[0] as { n: number }).n;

  const setUp = async (listen = false) => {
    clock = new ManualClock(NOW);
    t = await createTestApp({ clock, listen });
    const quangTri = await createArea('Tỉnh Quảng Trị', 'province', undefined, '45');
    const haiLang = await createArea('Huyện Hải Lăng', 'district', quangTri, '464');
    const haiPhu = await createArea('Xã Hải Phú', 'commune', haiLang, '19501');
    const haiThuong = await createArea('Xã Hải Thượng', 'commune', haiLang, '19502');
    const hue = await createArea('Thành phố Huế', 'province', undefined, '46');
    areas = { quangTri, haiLang, haiPhu, haiThuong, hue };
  };
  afterEach(async () => t.close());

  describe('Alert, Update, Cancel', () => {
    beforeEach(() => setUp());

    it('sends a real alert to the areas its VN-ADMIN geocodes name, with content from the Vietnamese info', async () => {
      const a = await device(areas.haiPhu, 'Cụm loa thôn Đông – Hải Phú');
      const b = await device(areas.haiPhu, 'Cụm loa thôn Tây – Hải Phú');
      await device(areas.haiThuong, 'Cụm loa Hải Thượng');
      const answer = await accepted(
        cap({
          infos: [
            info({
              event: 'Lũ quét',
              headline: 'Cảnh báo lũ quét – Thôn Đông',
              description: '<description>Nước sông Ô Lâu lên nhanh</description>',
              instruction: 'Di dời ngay lên vùng cao',
              severity: 'Severe',
              urgency: 'Immediate',
            }),
          ],
        }),
      );
      expect(answer).toMatchObject({
        outcome: 'sent',
        status: 'Actual',
        msgType: 'Alert',
        sender: SENDER,
        identifier: 'VN-QT-2026-0001',
        unmatched: [],
        replayed: false,
      });
      expect(answer.emergencyId).toBe(answer.emergency?.id);
      expect(answer.emergencyIds).toEqual([answer.emergencyId]);
      expect(answer.emergency).toMatchObject({
        title: 'Cảnh báo lũ quét – Thôn Đông',
        text: 'Cảnh báo lũ quét – Thôn Đông. Nước sông Ô Lâu lên nhanh. Di dời ngay lên vùng cao.',
        exercise: false,
        hazard: 'flood',
        riskLevel: 5, // Severe (4), raised one step for Immediate
        targetCount: 2,
        status: 'active',
        expiresAt: '2026-11-25T13:00:00.000Z', // <expires> 20:00+07:00
        sentBy: { kind: 'user', name: 'admin' },
      });
      expect(targetsOf(answer.emergency!.commandId)).toEqual([a.id, b.id].sort());

      const stored = t.query(
        'SELECT sender, identifier, status, msg_type, outcome, emergency_id, document FROM cap_messages',
      ) as Record<string, string>[];
      expect(stored).toEqual([
        expect.objectContaining({
          sender: SENDER,
          identifier: 'VN-QT-2026-0001',
          status: 'Actual',
          msg_type: 'Alert',
          outcome: 'sent',
          emergency_id: answer.emergencyId,
        }),
      ]);
      expect(stored[0]!.document).toContain('Nước sông Ô Lâu lên nhanh');

      const audit = t.query(
        "SELECT actor_username, target_id, details FROM audit_log WHERE action = 'cap.ingest'",
      ) as { actor_username: string; target_id: string; details: string }[];
      expect(audit).toHaveLength(1);
      expect(audit[0]).toMatchObject({ actor_username: 'admin', target_id: `${SENDER},VN-QT-2026-0001` });
      expect(JSON.parse(audit[0]!.details)).toMatchObject({
        outcome: 'sent',
        status: 'Actual',
        msgType: 'Alert',
        emergencyIds: [answer.emergencyId],
      });
    });

    it('takes the Vietnamese info of the typhoon No. 9 fixture and lists the codes that matched nothing', async () => {
      await device(areas.haiThuong, 'Trạm truyền thanh xã Hải Thượng');
      const answer = await accepted(FIXTURE);
      expect(answer.emergency).toMatchObject({
        title: 'Khẩn cấp: Bão số 9 đổ bộ vào Thừa Thiên Huế và Quảng Trị',
        hazard: 'storm',
        riskLevel: 5,
        // <expires> as given: 14:30 the next day, Vietnam time.
        expiresAt: '2026-11-26T07:30:00.000Z',
      });
      expect(answer.emergency!.text).toMatch(
        /^Khẩn cấp: Bão số 9 đổ bộ .* Người dân không ra khơi, .*bão đổ bộ\.$/,
      );
      // Province 45 reaches the Hải Thượng loudspeaker; 46 (Huế) has none; nobody stands in the shapes.
      expect(answer.unmatched).toEqual([
        {
          kind: 'geocode',
          value: '46',
          areaDesc: 'Thành phố Huế (Thừa Thiên Huế) và tỉnh Quảng Trị',
          reason: 'no_devices',
        },
        {
          kind: 'polygon',
          value: '16.3,107.4 16.3,107.8 16.65,107.8 16.65,107.4 16.3,107.4',
          areaDesc: 'Thành phố Huế (Thừa Thiên Huế) và tỉnh Quảng Trị',
          reason: 'no_devices',
        },
        {
          kind: 'circle',
          value: '16.8163,107.1003 20',
          areaDesc: 'Thành phố Huế (Thừa Thiên Huế) và tỉnh Quảng Trị',
          reason: 'no_devices',
        },
      ]);
    });

    it('speaks the first info when none is Vietnamese, and the Vietnamese one wherever it stands', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông');
      const english = info({
        language: 'en-US',
        event: 'Flash flood',
        headline: 'Flash flood warning for Hai Phu',
        description: '<description>The river is rising fast</description>',
      });
      const first = await accepted(cap({ identifier: 'EN-ONLY', infos: [english] }));
      expect(first.emergency).toMatchObject({
        title: 'Flash flood warning for Hai Phu',
        text: 'Flash flood warning for Hai Phu. The river is rising fast.',
        hazard: 'flood',
      });
      const vietnamese = info({ language: 'vi', headline: 'Cảnh báo lũ quét xã Hải Phú' });
      const second = await accepted(cap({ identifier: 'EN-THEN-VI', infos: [english, vietnamese] }));
      expect(second.emergency!.title).toBe('Cảnh báo lũ quét xã Hải Phú');
    });

    it('updates the emergency an Update references, as a new revision of the same emergency', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông');
      const alert = await accepted(cap({ identifier: 'QT-LU-1' }));
      const update = await accepted(
        cap({
          identifier: 'QT-LU-2',
          msgType: 'Update',
          references: `${SENDER},QT-LU-1,2026-11-25T14:30:00+07:00`,
          infos: [
            info({
              headline: 'Cập nhật: lũ quét đang lên – Thôn Đông',
              description: '<description>Mực nước vượt báo động 3</description>',
              expires: '2026-11-25T22:00:00+07:00',
            }),
          ],
        }),
        200,
      );
      expect(update).toMatchObject({
        outcome: 'updated',
        msgType: 'Update',
        emergencyId: alert.emergencyId,
        emergencyIds: [alert.emergencyId],
        replayed: false,
      });
      expect(update.emergency).toMatchObject({
        id: alert.emergencyId,
        title: 'Cập nhật: lũ quét đang lên – Thôn Đông',
        text: 'Cập nhật: lũ quét đang lên – Thôn Đông. Mực nước vượt báo động 3.',
        revision: 2,
        expiresAt: '2026-11-25T15:00:00.000Z',
      });
      expect(count('emergencies')).toBe(1);

      // A later Update naming the whole chain (the alert and the first update) still changes one emergency.
      const again = await accepted(
        cap({
          identifier: 'QT-LU-3',
          msgType: 'Update',
          references:
            `${SENDER},QT-LU-1,2026-11-25T14:30:00+07:00 ${SENDER},QT-LU-2,2026-11-25T14:30:00+07:00 ` +
            `${SENDER},QT-LU-0,2026-11-25T14:00:00+07:00`,
          infos: [info({ headline: 'Cập nhật lần hai – Thôn Đông' })],
        }),
        200,
      );
      expect(again.emergencyIds).toEqual([alert.emergencyId]);
      expect(again.emergency).toMatchObject({ title: 'Cập nhật lần hai – Thôn Đông', revision: 3 });
    });

    it('cancels the emergency a Cancel references', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông');
      const alert = await accepted(cap({ identifier: 'QT-LU-1' }));
      const cancel = await accepted(
        cap({
          identifier: 'QT-LU-1-HUY',
          msgType: 'Cancel',
          references: `${SENDER},QT-LU-1,2026-11-25T14:30:00+07:00`,
        }),
        200,
      );
      expect(cancel).toMatchObject({ outcome: 'cancelled', emergencyId: alert.emergencyId });
      expect(cancel.emergency).toMatchObject({ id: alert.emergencyId, status: 'cancelled' });
      const detail = await t.request('GET', `/api/v1/emergencies/${alert.emergencyId}`, {
        token: t.adminToken,
      });
      expect(detail.json()).toMatchObject({
        status: 'cancelled',
        cancel: { commandId: expect.any(String) as string },
      });
    });

    it('answers 404 naming the references of an Update or Cancel that started nothing here, and plays nothing', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông');
      await accepted(cap({ identifier: 'QT-THU', status: 'Test' }), 200);
      for (const msgType of ['Update', 'Cancel']) {
        const res = await post(
          cap({
            identifier: `QT-${msgType}`,
            msgType,
            references: `${SENDER},KHONG-CO,2026-11-25T14:00:00+07:00 ${SENDER},QT-THU,2026-11-25T14:30:00+07:00`,
          }),
        );
        expect(res.statusCode).toBe(404);
        const body = problem(res);
        expect(body.code).toBe('not_found');
        expect(body.detail).toContain(`${SENDER},KHONG-CO (never received)`);
        expect(body.detail).toContain(`${SENDER},QT-THU (not played)`);
      }
      expect(count('emergencies')).toBe(0);
      expect(count('commands')).toBe(0);
      expect(t.query('SELECT identifier FROM cap_messages')).toEqual([{ identifier: 'QT-THU' }]);
    });

    it('never lets a drill change a real alert', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông', { drillParticipant: true });
      const alert = await accepted(cap({ identifier: 'QT-THAT' }));
      const res = await post(
        cap({
          identifier: 'QT-DIEN-TAP-HUY',
          status: 'Exercise',
          msgType: 'Cancel',
          references: `${SENDER},QT-THAT,2026-11-25T14:30:00+07:00`,
        }),
      );
      expect(res.statusCode).toBe(404);
      expect(problem(res).detail).toContain('(status Actual, not Exercise)');
      const detail = await t.request('GET', `/api/v1/emergencies/${alert.emergencyId}`, {
        token: t.adminToken,
      });
      expect(detail.json()).toMatchObject({ status: 'active' });
    });
  });

  describe('status and msgType', () => {
    beforeEach(() => setUp());

    it('plays an Exercise as a drill, only on drill participants', async () => {
      const drill = await device(areas.haiPhu, 'Cụm loa diễn tập', { drillParticipant: true });
      await device(areas.haiPhu, 'Cụm loa thường');
      const answer = await accepted(cap({ identifier: 'QT-DT-1', status: 'Exercise' }));
      expect(answer).toMatchObject({ outcome: 'sent', status: 'Exercise' });
      expect(answer.emergency).toMatchObject({
        exercise: true,
        label: 'DIỄN TẬP – Cảnh báo lũ quét – Thôn Đông',
        targetCount: 1,
      });
      expect(targetsOf(answer.emergency!.commandId)).toEqual([drill.id]);
    });

    it('answers 422 with what matched nothing when an exercise reaches no drill participant', async () => {
      await device(areas.haiPhu, 'Cụm loa thường');
      const res = await post(cap({ identifier: 'QT-DT-2', status: 'Exercise' }));
      expect(res.statusCode).toBe(422);
      expect(problem(res).code).toBe('no_target_devices');
      expect(res.json<Answer>().unmatched).toEqual([
        { kind: 'geocode', value: '19501', areaDesc: 'Vùng cảnh báo', reason: 'no_devices' },
      ]);
      expect(count('cap_messages')).toBe(0);
      expect(count('emergencies')).toBe(0);
    });

    it('keeps Test, System and Draft alerts, and Ack and Error messages, without playing them', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông');
      for (const status of ['Test', 'System', 'Draft']) {
        const answer = await accepted(cap({ identifier: `QT-${status}`, status }), 200);
        expect(answer).toMatchObject({
          outcome: 'not_played',
          status,
          emergencyId: null,
          emergencyIds: [],
          emergency: null,
          reason: `status ${status}: kept, never played`,
          replayed: false,
        });
      }
      for (const msgType of ['Ack', 'Error']) {
        const answer = await accepted(
          cap({
            identifier: `QT-${msgType}`,
            msgType,
            references: `${SENDER},QT-Test,2026-11-25T14:30:00+07:00`,
          }),
          200,
        );
        expect(answer).toMatchObject({
          outcome: 'not_played',
          msgType,
          reason: `msgType ${msgType}: kept, nothing to play`,
        });
      }
      expect(count('emergencies')).toBe(0);
      expect(count('commands')).toBe(0);
      expect(t.query('SELECT DISTINCT outcome FROM cap_messages')).toEqual([{ outcome: 'not_played' }]);
      expect(count('cap_messages')).toBe(5);
    });
  });

  describe('targets', () => {
    beforeEach(() => setUp());

    it('reaches the devices inside a polygon or a circle, and lists the shapes and codes that matched nothing', async () => {
      // Inside the fixture's polygon (16.30–16.65 N, 107.40–107.80 E), on its edge, inside its circle, outside all.
      const inPolygon = await device(areas.haiThuong, 'Cụm loa trong vùng', { lat: 16.5, lon: 107.6 });
      const onEdge = await device(areas.haiThuong, 'Cụm loa trên ranh giới', { lat: 16.3, lon: 107.5 });
      const inCircle = await device(areas.haiPhu, 'Cụm loa Đông Hà', { lat: 16.8163, lon: 107.2 });
      await device(areas.haiPhu, 'Cụm loa ngoài vùng', { lat: 17.2, lon: 106.6 });
      await device(areas.hue, 'Cụm loa không tọa độ');
      const answer = await accepted(
        cap({
          infos: [
            info({
              areas: [
                {
                  desc: 'Ven biển Quảng Trị',
                  polygon: '16.30,107.40 16.30,107.80 16.65,107.80 16.65,107.40 16.30,107.40',
                  circle: '16.8163,107.1003 20',
                },
                {
                  desc: 'Vùng không có loa',
                  circle: '10.0,106.0 5',
                  codes: ['99999'],
                  geocodes: [['FIPS6', '12345']],
                },
                { desc: 'Chỉ có mô tả' },
              ],
            }),
          ],
        }),
      );
      expect(targetsOf(answer.emergency!.commandId)).toEqual([inPolygon.id, onEdge.id, inCircle.id].sort());
      expect(answer.emergency!.targetCount).toBe(3);
      expect(answer.unmatched).toEqual([
        { kind: 'geocode', value: '99999', areaDesc: 'Vùng không có loa', reason: 'unknown_code' },
        {
          kind: 'geocode',
          value: 'FIPS6=12345',
          areaDesc: 'Vùng không có loa',
          reason: 'unsupported_geocode',
        },
        { kind: 'circle', value: '10,106 5', areaDesc: 'Vùng không có loa', reason: 'no_devices' },
        { kind: 'area', value: 'Chỉ có mô tả', areaDesc: 'Chỉ có mô tả', reason: 'no_geometry' },
      ]);
    });

    it('answers 422 with every target when nothing matches a device, and keeps nothing', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông', { lat: 16.7, lon: 107.2 });
      const res = await post(
        cap({
          infos: [
            info({
              areas: [{ desc: 'Ngoài khơi', codes: ['00000'], polygon: '17,108 17,109 18,109 17,108' }],
            }),
          ],
        }),
      );
      expect(res.statusCode).toBe(422);
      expect(problem(res).code).toBe('no_target_devices');
      expect(res.json<Answer>().unmatched.map((u) => `${u.kind}:${u.reason}`)).toEqual([
        'geocode:unknown_code',
        'polygon:no_devices',
      ]);
      expect(count('cap_messages')).toBe(0);
      expect(count('emergencies')).toBe(0);
      expect(count('commands')).toBe(0);
      const audit = t.query("SELECT details FROM audit_log WHERE action = 'cap.ingest'") as {
        details: string;
      }[];
      expect(JSON.parse(audit[0]!.details)).toMatchObject({ outcome: 'refused', code: 'no_target_devices' });
    });

    it('keeps a district operator to their area: other areas are refused or reported, never played', async () => {
      const own = await device(areas.haiPhu, 'Cụm loa Hải Phú', { lat: 16.5, lon: 107.5 });
      await device(areas.hue, 'Cụm loa Huế', { lat: 16.46, lon: 107.59 });
      const operator = await t.createUser('district_operator', areas.haiLang);

      const outside = await post(cap({ identifier: 'OP-1', infos: [info({ areas: [{ codes: ['46'] }] })] }), {
        token: operator,
      });
      expect(outside.statusCode).toBe(403);
      expect(problem(outside).code).toBe('forbidden');
      expect(outside.json<Answer>().unmatched).toEqual([
        { kind: 'geocode', value: '46', areaDesc: 'Vùng cảnh báo', reason: 'outside_scope' },
      ]);

      // The polygon holds both loudspeakers: only the one in the operator's district plays.
      const mixed = await accepted(
        cap({
          identifier: 'OP-2',
          infos: [
            info({
              areas: [{ polygon: '16.3,107.4 16.3,107.8 16.65,107.8 16.65,107.4 16.3,107.4', codes: ['46'] }],
            }),
          ],
        }),
        201,
        operator,
      );
      expect(targetsOf(mixed.emergency!.commandId)).toEqual([own.id]);
      expect(mixed.unmatched).toEqual([
        { kind: 'geocode', value: '46', areaDesc: 'Vùng cảnh báo', reason: 'outside_scope' },
      ]);
      expect(mixed.emergency!.sentBy).toMatchObject({ kind: 'user' });

      // A province-wide alert from above: it plays in the operator's district, the part they may act on.
      const province = await accepted(
        cap({ identifier: 'OP-3', infos: [info({ areas: [{ codes: ['45'] }] })] }),
        201,
        operator,
      );
      expect(targetsOf(province.emergency!.commandId)).toEqual([own.id]);
    });
  });

  describe('idempotency', () => {
    beforeEach(() => setUp());

    it('accepts the same sender and identifier once: a replay gets the first answer and plays nothing', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông');
      const doc = cap({ identifier: 'QT-1-LAN' });
      // Two copies at once (a warning system retrying on a slow answer): the second waits for the first.
      const [a, b] = await Promise.all([post(doc), post(doc)]);
      expect([a.statusCode, b.statusCode].sort()).toEqual([200, 201]);
      const [first, replay] =
        a.statusCode === 201 ? [a.json<Answer>(), b.json<Answer>()] : [b.json<Answer>(), a.json<Answer>()];
      expect(replay).toEqual({ ...first, replayed: true });
      const third = await accepted(doc, 200);
      expect(third).toEqual({ ...first, replayed: true });
      expect(count('emergencies')).toBe(1);
      expect(count('commands')).toBe(1);
      expect(count('cap_messages')).toBe(1);
      const outcomes = (
        t.query("SELECT details FROM audit_log WHERE action = 'cap.ingest' ORDER BY id") as {
          details: string;
        }[]
      ).map((r) => JSON.parse(r.details) as { replayed: boolean });
      expect(outcomes.map((o) => o.replayed)).toEqual([false, true, true]);
    });

    it('refuses another message under an identifier already used (a Cancel sent as its Alert), doing nothing', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông');
      const first = await accepted(cap({ identifier: 'QT-2-LAN' }), 201);
      const misused = await post(
        cap({
          identifier: 'QT-2-LAN',
          msgType: 'Cancel',
          references: `${SENDER},QT-2-LAN,2026-11-25T14:30:00+07:00`,
        }),
      );
      expect(misused.statusCode).toBe(409);
      expect(problem(misused).detail).toContain('already used for another message');
      expect(count('emergencies')).toBe(1);
      expect(count('cap_messages')).toBe(1);
      const emergency = await t.request('GET', `/api/v1/emergencies/${first.emergencyId}`, {
        token: t.adminToken,
      });
      expect(emergency.json<{ status: string }>().status).toBe('active');
    });

    it('takes the same alert from another key as its own: each plays it in its own province', async () => {
      // One national alert forwarded by the Quảng Trị and the Huế centres, each with its own key.
      const quangTri = await device(areas.haiPhu, 'Cụm loa thôn Đông – Hải Phú');
      const hue = await device(areas.hue, 'Cụm loa phường Phú Hội – Huế');
      const qtKey = await sourceKey('Đài KTTV tỉnh Quảng Trị', areas.quangTri);
      const hueKey = await sourceKey('Đài KTTV Thừa Thiên Huế', areas.hue);
      const doc = cap({
        identifier: 'VN-NCHMF-2026-BAO09-001',
        infos: [info({ headline: 'Bão số 9 – Quảng Trị và Huế', areas: [{ codes: ['45', '46'] }] })],
      });

      const fromQt = await accepted(doc, 201, qtKey.key);
      const fromHue = await accepted(doc, 201, hueKey.key);
      expect(fromHue.replayed).toBe(false);
      expect(fromHue.emergencyId).not.toBe(fromQt.emergencyId);
      expect(targetsOf(fromQt.emergency!.commandId)).toEqual([quangTri.id]);
      expect(targetsOf(fromHue.emergency!.commandId)).toEqual([hue.id]);
      expect(fromQt.unmatched).toEqual([
        { kind: 'geocode', value: '46', areaDesc: 'Vùng cảnh báo', reason: 'outside_scope' },
      ]);
      expect(fromHue.unmatched).toEqual([
        { kind: 'geocode', value: '45', areaDesc: 'Vùng cảnh báo', reason: 'outside_scope' },
      ]);

      // Each key's retry is still a replay of its own answer, and plays nothing.
      expect(await accepted(doc, 200, hueKey.key)).toEqual({ ...fromHue, replayed: true });
      expect(await accepted(doc, 200, qtKey.key)).toEqual({ ...fromQt, replayed: true });
      expect(count('emergencies')).toBe(2);
      expect(t.query('SELECT principal FROM cap_messages ORDER BY id')).toEqual([
        { principal: qtKey.id },
        { principal: hueKey.id },
      ]);
    });

    it('takes the same identifier from a user as a separate submission too, within their area', async () => {
      const own = await device(areas.haiPhu, 'Cụm loa thôn Đông');
      await device(areas.hue, 'Cụm loa Huế');
      const doc = cap({ identifier: 'QT-CUA-AI', infos: [info({ areas: [{ codes: ['19501', '46'] }] })] });
      const admin = await accepted(doc);
      expect(admin.emergency!.targetCount).toBe(2);
      const operator = await t.createUser('district_operator', areas.haiLang);
      const mine = await accepted(doc, 201, operator);
      expect(mine).toMatchObject({ outcome: 'sent', replayed: false });
      expect(targetsOf(mine.emergency!.commandId)).toEqual([own.id]);
      expect(count('emergencies')).toBe(2);
    });

    it('does not count a refused alert as received: fixed and sent again, it plays', async () => {
      const doc = cap({ identifier: 'QT-SUA' });
      expect((await post(doc)).statusCode).toBe(422);
      await device(areas.haiPhu, 'Cụm loa thôn Đông');
      await accepted(doc, 201);
    });
  });

  describe('per key or user', () => {
    beforeEach(() => setUp());

    it('does not let a commune key that posted a national alert first block the district key sending it', async () => {
      const haiPhu = await device(areas.haiPhu, 'Cụm loa thôn Đông – Hải Phú');
      const haiThuong = await device(areas.haiThuong, 'Cụm loa thôn Tây – Hải Thượng');
      const commune = await sourceKey('Xã Hải Phú (cấu hình nhầm)', areas.haiPhu);
      const district = await sourceKey('Đài truyền thanh huyện Hải Lăng', areas.haiLang);
      // The commune key claims the national centre's <sender> and guesses the next identifier.
      const doc = cap({
        identifier: 'VN-NCHMF-2026-0042',
        infos: [info({ headline: 'Cảnh báo lũ quét huyện Hải Lăng', areas: [{ codes: ['464'] }] })],
      });
      const first = await accepted(doc, 201, commune.key);
      expect(targetsOf(first.emergency!.commandId)).toEqual([haiPhu.id]);

      // The real alert, through the district's key, still plays on every loudspeaker of the district.
      const real = await accepted(doc, 201, district.key);
      expect(real).toMatchObject({ outcome: 'sent', replayed: false, sender: SENDER });
      expect(real.emergencyId).not.toBe(first.emergencyId);
      expect(targetsOf(real.emergency!.commandId)).toEqual([haiPhu.id, haiThuong.id].sort());
      expect(real.emergency!.sentBy).toMatchObject({ kind: 'source', id: district.id });
    });

    it("does not let one key cancel another's alert; an admin may, everywhere it was forwarded", async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông – Hải Phú');
      await device(areas.haiThuong, 'Cụm loa Hải Thượng');
      const commune = await sourceKey('Xã Hải Phú', areas.haiPhu);
      const district = await sourceKey('Huyện Hải Lăng', areas.haiLang);
      const alert = await accepted(
        cap({ identifier: 'HL-LU-1', infos: [info({ areas: [{ codes: ['464'] }] })] }),
        201,
        district.key,
      );
      const cancelOf = (identifier: string, references: string) =>
        cap({
          identifier,
          msgType: 'Cancel',
          references: references
            .split(' ')
            .map((id) => `${SENDER},${id},2026-11-25T14:30:00+07:00`)
            .join(' '),
        });

      const foreign = await post(cancelOf('HL-LU-1-HUY', 'HL-LU-1'), { token: commune.key });
      expect(foreign.statusCode).toBe(404);
      expect(problem(foreign).detail).toContain(`${SENDER},HL-LU-1 (never received from you)`);
      const operator = await t.createUser('district_operator', areas.haiLang);
      expect((await post(cancelOf('HL-LU-1-HUY', 'HL-LU-1'), { token: operator })).statusCode).toBe(404);
      expect(await statusOf(alert.emergencyId!)).toBe('active');

      const byAdmin = await accepted(cancelOf('HL-LU-1-HUY', 'HL-LU-1'), 200);
      expect(byAdmin).toMatchObject({ outcome: 'cancelled', emergencyIds: [alert.emergencyId] });
      expect(await statusOf(alert.emergencyId!)).toBe('cancelled');

      // An alert both keys forwarded: the admin's one Cancel stops both emergencies.
      const doc = cap({ identifier: 'HL-LU-2', infos: [info({ areas: [{ codes: ['464'] }] })] });
      const a = await accepted(doc, 201, district.key);
      const b = await accepted(doc, 201, commune.key);
      const both = await accepted(cancelOf('HL-LU-2-HUY', 'HL-LU-2'), 200);
      expect(both.emergencyIds).toEqual([a.emergencyId, b.emergencyId]);
      expect(await statusOf(a.emergencyId!)).toBe('cancelled');
      expect(await statusOf(b.emergencyId!)).toBe('cancelled');
    });

    it('makes a Cancel that arrives while its alert is being rendered wait for it, then cancel it', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông – Hải Phú');
      const key = await sourceKey('Đài KTTV tỉnh Quảng Trị', areas.quangTri);
      // Not awaited: the alert is still being rendered (about a second) when the Cancel comes in. Both pass
      // the same hooks and body parser, so the alert reaches the ingest first.
      const alertRequest = post(cap({ identifier: 'QT-VOI-1' }), { token: key.key });
      const cancelRequest = post(
        cap({
          identifier: 'QT-VOI-1-HUY',
          msgType: 'Cancel',
          references: `${SENDER},QT-VOI-1,2026-11-25T14:30:00+07:00`,
        }),
        { token: key.key },
      );
      const [alertRes, cancelRes] = await Promise.all([alertRequest, cancelRequest]);
      expect(alertRes.statusCode, alertRes.body).toBe(201);
      expect(cancelRes.statusCode, cancelRes.body).toBe(200);
      const alert = alertRes.json<Answer>();
      expect(cancelRes.json<Answer>()).toMatchObject({
        outcome: 'cancelled',
        emergencyId: alert.emergencyId,
        emergency: { id: alert.emergencyId, status: 'cancelled' },
      });
      expect(await statusOf(alert.emergencyId!)).toBe('cancelled');
    });
  });

  describe('hostile and broken documents', () => {
    beforeEach(() => setUp());

    it('answers 400 saying what is wrong with malformed XML or a document that breaks CAP rules', async () => {
      const broken = await post('<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>x</alert>');
      expect(broken.statusCode).toBe(400);
      const p1 = problem(broken);
      expect(p1.code).toBe('validation_failed');
      expect(p1.errors?.[0]?.field).toBe('body');
      expect(p1.detail).toMatch(/malformed XML at line 1, column \d+/);

      const invalid = await post(
        cap({ identifier: 'co khoang trang', status: 'Real' }).replace(
          '<sent>2026-11-25T14:30:00+07:00</sent>',
          '<sent>2026-11-25T14:30:00Z</sent>',
        ),
      );
      expect(invalid.statusCode).toBe(400);
      const fields = problem(invalid).errors?.map((e) => e.field);
      expect(fields).toEqual(['body.alert.identifier', 'body.alert.sent', 'body.alert.status']);

      const expired = await post(cap({ infos: [info({ expires: '2026-11-25T14:00:00+07:00' })] }));
      expect(expired.statusCode).toBe(400);
      expect(problem(expired).errors).toEqual([
        {
          field: 'body.alert.info.0.expires',
          message: 'the alert expired at 2026-11-25T07:00:00.000Z; nothing was played',
        },
      ]);

      const noInfo = await post(cap({ infos: [] }));
      expect(noInfo.statusCode).toBe(400);
      expect(problem(noInfo).errors?.[0]?.field).toBe('body.alert.info');

      const notUtf8 = await post(Buffer.from([0x3c, 0x61, 0xff, 0x3e]));
      expect(notUtf8.statusCode).toBe(400);
      expect(problem(notUtf8).detail).toContain('UTF-8');

      const empty = await post('');
      expect(empty.statusCode).toBe(400);

      const json = await post(JSON.stringify({ identifier: 'x' }), { type: 'application/json' });
      expect(json.statusCode).toBe(415);
      expect(problem(json).detail).toContain('application/cap+xml');

      expect(count('cap_messages')).toBe(0);
    });

    it('refuses an entity-expansion (billion laughs) document at once', async () => {
      const lol =
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n' +
        Array.from({ length: 9 }, (_, i) => ` <!ENTITY lol${i + 1} "${`&lol${i || ''};`.repeat(10)}">`).join(
          '\n',
        ) +
        '\n]>\n<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2"><identifier>&lol9;</identifier></alert>';
      const res = await post(lol);
      expect(res.statusCode).toBe(400);
      expect(problem(res).detail).toContain('DTDs and entity declarations');
      expect(res.body.length).toBeLessThan(2_000);
      expect(count('cap_messages')).toBe(0);
    });

    it('refuses an external-entity document without reading the file it names', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-xxe-'));
      const secret = path.join(dir, 'bi-mat.txt');
      fs.writeFileSync(secret, 'MAT-KHAU-BI-MAT-42');
      const before = fs.statSync(secret).atimeMs;
      try {
        const doc = cap({ identifier: '&xxe;' }).replace(
          '<alert ',
          `<!DOCTYPE alert [ <!ENTITY xxe SYSTEM "file://${secret}"> ]>\n<alert `,
        );
        const res = await post(doc);
        expect(res.statusCode).toBe(400);
        expect(problem(res).detail).toContain('DTDs and entity declarations');
        expect(res.body).not.toContain('MAT-KHAU-BI-MAT-42');
        expect(fs.statSync(secret).atimeMs).toBe(before);
        const stored =
          JSON.stringify(t.query('SELECT * FROM cap_messages')) +
          JSON.stringify(t.query('SELECT * FROM audit_log'));
        expect(stored).not.toContain('MAT-KHAU-BI-MAT-42');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('answers 413 to a document over 1 MB', async () => {
      const padding = `<description>${'Mưa rất to. '.repeat(80_000)}</description>`;
      const res = await post(cap({ infos: [info({ description: padding })] }));
      expect(res.statusCode).toBe(413);
      expect(problem(res).code).toBe('payload_too_large');
      expect(count('cap_messages')).toBe(0);
    });
  });

  describe('authentication', () => {
    beforeEach(() => setUp());

    it('needs a token of a role that may send emergencies', async () => {
      await device(areas.haiPhu, 'Cụm loa thôn Đông');
      const none = await post(cap(), { token: null });
      expect(none.statusCode).toBe(401);
      expect(problem(none).code).toBe('unauthenticated');

      const wrong = await post(cap(), { token: 'loa_khong-phai-token' });
      expect(wrong.statusCode).toBe(401);

      for (const role of ['broadcaster', 'technician', 'approver']) {
        const token = await t.createUser(role, areas.haiLang);
        const res = await post(cap(), { token });
        expect(res.statusCode, role).toBe(403);
        expect(problem(res).code).toBe('forbidden');
      }
      expect(count('cap_messages')).toBe(0);
      // An anonymous body is refused before it is read: even a too large one gets 401, not 413.
      const big = await post('x'.repeat(2 * 1024 * 1024), { token: null });
      expect(big.statusCode).toBe(401);
    });
  });

  describe('on a real device', () => {
    beforeEach(() => setUp(true));
    const clients: Awaited<ReturnType<typeof connectDevice>>[] = [];
    afterEach(async () => {
      await end(...clients.splice(0));
    });

    it('plays the alert at emergency priority on the loudspeaker it targets', async () => {
      const d = await device(areas.haiPhu, 'Cụm loa thôn Đông – Hải Phú', { lat: 16.5, lon: 107.6 });
      const client = await connectDevice(`mqtt://127.0.0.1:${t.app.broker.port}`, d.credentials);
      clients.push(client);
      const received: Command[] = [];
      client.on('message', (_topic, payload) =>
        received.push(commandSchema.parse(JSON.parse(payload.toString('utf8')))),
      );
      await client.subscribeAsync(topics.cmd(d.id), { qos: 1 });
      await waitFor(() => t.app.broker.isReady(d.id), 'subscribed');

      const answer = await accepted(
        cap({
          infos: [info({ areas: [{ polygon: '16.3,107.4 16.3,107.8 16.65,107.8 16.65,107.4 16.3,107.4' }] })],
        }),
      );
      const play = await waitFor(() => received.find((c) => c.type === 'play'), 'play command');
      expect(play).toMatchObject({ id: answer.emergency!.commandId, priority: 'emergency' });
    });
  });
});
