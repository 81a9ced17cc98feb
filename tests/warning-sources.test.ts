/**
 * Warning sources: keys an admin gives a warning system to post CAP alerts (POST /api/v1/emergencies/cap)
 * within one area. A real app on a real SQLite file; only the clock is manual.
 */
import type { LightMyRequestResponse } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';

const SENDER = 'canhbao@kttv-bactrungbo.gov.vn';

/** A short CAP 1.2 alert naming areas by VN-ADMIN code. */
const cap = (identifier: string, codes: string[], status = 'Actual') =>
  '<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">' +
  `<identifier>${identifier}</identifier><sender>${SENDER}</sender>` +
  `<sent>2026-11-25T14:30:00+07:00</sent><status>${status}</status><msgType>Alert</msgType>` +
  '<scope>Public</scope><info><language>vi-VN</language><category>Met</category><event>Sạt lở đất</event>' +
  '<urgency>Expected</urgency><severity>Severe</severity><certainty>Likely</certainty>' +
  '<headline>Cảnh báo sạt lở đất – Thôn Đông</headline>' +
  '<expires>2026-11-25T20:00:00+07:00</expires><area><areaDesc>Vùng núi</areaDesc>' +
  codes.map((c) => `<geocode><valueName>VN-ADMIN</valueName><value>${c}</value></geocode>`).join('') +
  '</area></info></alert>';

type Source = {
  id: string;
  name: string;
  areaId: string;
  areaName: string;
  createdAt: string;
  lastUsedAt: string | null;
  revokedAt: string | null;
  key?: string;
};

describe('warning sources', () => {
  let t: TestApp;
  let clock: ManualClock;
  let province: string;
  let commune: string;
  let otherCommune: string;
  let hue: string;

  const createArea = async (name: string, level: string, parentId?: string, code?: string) => {
    const res = await t.request('POST', '/api/v1/areas', {
      token: t.adminToken,
      body: { name, level, ...(parentId ? { parentId } : {}), ...(code ? { code } : {}) },
    });
    expect(res.statusCode, res.body).toBe(201);
    return res.json<{ id: string }>().id;
  };
  const device = async (areaId: string, name: string) => {
    const res = await t.request('POST', '/api/v1/devices', {
      token: t.adminToken,
      body: { name, kind: 'cluster', areaId },
    });
    expect(res.statusCode, res.body).toBe(201);
    return res.json<{ id: string }>().id;
  };
  const createSource = async (body: unknown, token = t.adminToken) =>
    t.request('POST', '/api/v1/warning-sources', { token, body });
  const created = async (name: string, areaId: string) => {
    const res = await createSource({ name, areaId });
    expect(res.statusCode, res.body).toBe(201);
    return res.json<Source & { key: string }>();
  };
  const postCap = (body: string, key: string): Promise<LightMyRequestResponse> =>
    t.app.inject({
      method: 'POST',
      url: '/api/v1/emergencies/cap',
      headers: { 'content-type': 'application/cap+xml', authorization: `Bearer ${key}` },
      payload: body,
    });
  const list = async () => {
    const res = await t.request('GET', '/api/v1/warning-sources', { token: t.adminToken });
    expect(res.statusCode).toBe(200);
    return res.json<{ items: Source[] }>().items;
  };

  beforeEach(async () => {
    clock = new ManualClock('2026-11-25T07:35:00.000Z');
    t = await createTestApp({ clock });
    province = await createArea('Tỉnh Quảng Trị', 'province', undefined, '45');
    const district = await createArea('Huyện Đakrông', 'district', province, '468');
    commune = await createArea('Xã Hướng Hiệp', 'commune', district, '19700');
    otherCommune = await createArea('Xã Ba Lòng', 'commune', district, '19701');
    hue = await createArea('Thành phố Huế', 'province', undefined, '46');
  });
  afterEach(async () => t.close());

  it('creates a source with a key shown once, lists it without the key, and audits it', async () => {
    const source = await created('Đài Khí tượng Thủy văn khu vực Bắc Trung Bộ', commune);
    expect(source).toMatchObject({
      id: expect.stringMatching(/^wsrc_/) as string,
      name: 'Đài Khí tượng Thủy văn khu vực Bắc Trung Bộ',
      areaId: commune,
      areaName: 'Xã Hướng Hiệp',
      createdAt: '2026-11-25T07:35:00.000Z',
      lastUsedAt: null,
      revokedAt: null,
    });
    expect(source.key).toMatch(/^loa_wsk_[A-Za-z0-9_-]{43}$/);
    const { key: _key, ...view } = source;
    const items = await list();
    expect(items).toEqual([view]);
    expect(JSON.stringify(items)).not.toContain(source.key);
    // Only the hash is kept: the key itself is nowhere in the database.
    const stored =
      JSON.stringify(t.query('SELECT * FROM warning_sources')) +
      JSON.stringify(t.query('SELECT * FROM audit_log'));
    expect(stored).not.toContain(source.key.slice(8));
    const audit = t.query(
      "SELECT actor_username, target_type, target_id, details FROM audit_log WHERE action = 'warning_source.create'",
    ) as Record<string, string>[];
    expect(audit).toEqual([
      {
        actor_username: 'admin',
        target_type: 'warning_source',
        target_id: source.id,
        details: JSON.stringify({ name: source.name, areaId: commune }),
      },
    ]);
  });

  it('is for admins only, and checks what it is given', async () => {
    const operator = await t.createUser('district_operator', province);
    for (const res of [
      await createSource({ name: 'Nguồn cảnh báo', areaId: commune }, operator),
      await t.request('GET', '/api/v1/warning-sources', { token: operator }),
      await t.request('DELETE', '/api/v1/warning-sources/wsrc_x', { token: operator }),
    ]) {
      expect(res.statusCode).toBe(403);
      expect(problem(res).code).toBe('forbidden');
    }
    const anonymous = await t.request('GET', '/api/v1/warning-sources');
    expect(anonymous.statusCode).toBe(401);

    const noArea = await createSource({ name: 'Nguồn cảnh báo', areaId: 'ar_khongco' });
    expect(noArea.statusCode).toBe(404);
    expect(problem(noArea).detail).toContain('body.areaId');
    const blank = await createSource({ name: '   ', areaId: commune });
    expect(blank.statusCode).toBe(400);
    expect(problem(blank).errors?.[0]?.field).toBe('body.name');
    const extra = await createSource({ name: 'Nguồn', areaId: commune, key: 'loa_wsk_tu-chon' });
    expect(extra.statusCode).toBe(400);
    const missing = await t.request('DELETE', '/api/v1/warning-sources/wsrc_khongco', {
      token: t.adminToken,
    });
    expect(missing.statusCode).toBe(404);
    expect(await list()).toEqual([]);
  });

  it('lets its key send an alert within its area, as the source', async () => {
    const d = await device(commune, 'Cụm loa thôn Đông – Hướng Hiệp');
    const source = await created('Đài KTTV Bắc Trung Bộ', commune);
    clock.advance(60_000);
    const res = await postCap(cap('BTB-2026-001', ['19700']), source.key);
    expect(res.statusCode, res.body).toBe(201);
    const answer = res.json<{
      emergency: { id: string; commandId: string; targetCount: number; sentBy: unknown };
    }>();
    expect(answer.emergency).toMatchObject({
      targetCount: 1,
      sentBy: { kind: 'source', id: source.id, name: 'Đài KTTV Bắc Trung Bộ' },
    });
    expect(
      t.query(`SELECT device_id FROM command_deliveries WHERE command_id = '${answer.emergency.commandId}'`),
    ).toEqual([{ device_id: d }]);
    expect((await list())[0]!.lastUsedAt).toBe('2026-11-25T07:36:00.000Z');
    expect(t.query('SELECT principal, source_id, user_id FROM cap_messages')).toEqual([
      { principal: source.id, source_id: source.id, user_id: null },
    ]);
    const audit = t.query("SELECT actor_id, details FROM audit_log WHERE action = 'cap.ingest'") as {
      actor_id: string | null;
      details: string;
    }[];
    expect(audit).toHaveLength(1);
    expect(audit[0]!.actor_id).toBeNull();
    expect(JSON.parse(audit[0]!.details)).toMatchObject({
      sourceId: source.id,
      sourceName: 'Đài KTTV Bắc Trung Bộ',
      outcome: 'sent',
    });
  });

  it('keeps a key to its area: outside it is refused, a province-wide alert plays only in it', async () => {
    const own = await device(commune, 'Cụm loa Hướng Hiệp');
    await device(otherCommune, 'Cụm loa Ba Lòng');
    await device(hue, 'Cụm loa Huế');
    const source = await created('Đài KTTV Bắc Trung Bộ', commune);

    for (const codes of [['46'], ['19701']]) {
      const res = await postCap(cap(`BTB-NGOAI-${codes[0]}`, codes), source.key);
      expect(res.statusCode, res.body).toBe(403);
      expect(problem(res).code).toBe('forbidden');
      expect(res.json<{ unmatched: { value: string; reason: string }[] }>().unmatched).toEqual([
        expect.objectContaining({ value: codes[0], reason: 'outside_scope' }),
      ]);
    }

    const res = await postCap(cap('BTB-TINH', ['45', '46']), source.key);
    expect(res.statusCode, res.body).toBe(201);
    const answer = res.json<{
      emergency: { commandId: string };
      unmatched: { value: string; reason: string }[];
    }>();
    expect(
      t.query(`SELECT device_id FROM command_deliveries WHERE command_id = '${answer.emergency.commandId}'`),
    ).toEqual([{ device_id: own }]);
    expect(answer.unmatched).toEqual([expect.objectContaining({ value: '46', reason: 'outside_scope' })]);
    expect((t.query('SELECT COUNT(*) AS n FROM emergencies')[0] as { n: number }).n).toBe(1);
  });

  it('refuses a revoked key, and keys anywhere but the CAP endpoint', async () => {
    await device(commune, 'Cụm loa Hướng Hiệp');
    const source = await created('Đài KTTV Bắc Trung Bộ', commune);

    // A warning-source key is not a user token: the rest of the API does not know it.
    const elsewhere = await t.request('GET', '/api/v1/devices', { token: source.key });
    expect(elsewhere.statusCode).toBe(401);

    const wrong = await postCap(cap('BTB-SAI', ['19700']), `${source.key.slice(0, -2)}xx`);
    expect(wrong.statusCode).toBe(401);
    expect(problem(wrong).code).toBe('unauthenticated');

    clock.advance(1_000);
    const revoked = await t.request('DELETE', `/api/v1/warning-sources/${source.id}`, {
      token: t.adminToken,
    });
    expect(revoked.statusCode).toBe(200);
    expect(revoked.json()).toMatchObject({ id: source.id, revokedAt: '2026-11-25T07:35:01.000Z' });
    // Revoking again answers the same and is audited once.
    clock.advance(1_000);
    const again = await t.request('DELETE', `/api/v1/warning-sources/${source.id}`, { token: t.adminToken });
    expect(again.json()).toMatchObject({ revokedAt: '2026-11-25T07:35:01.000Z' });
    expect(t.query("SELECT target_id FROM audit_log WHERE action = 'warning_source.revoke'")).toEqual([
      { target_id: source.id },
    ]);

    const refused = await postCap(cap('BTB-THU-HOI', ['19700']), source.key);
    expect(refused.statusCode).toBe(401);
    expect(problem(refused).detail).toContain('revoked');
    expect((await list())[0]).toMatchObject({ revokedAt: '2026-11-25T07:35:01.000Z', lastUsedAt: null });
    expect((t.query('SELECT COUNT(*) AS n FROM cap_messages')[0] as { n: number }).n).toBe(0);
  });

  it('lets a Test alert from a source be kept without playing', async () => {
    await device(commune, 'Cụm loa Hướng Hiệp');
    const source = await created('Đài KTTV Bắc Trung Bộ', commune);
    const res = await postCap(cap('BTB-KIEM-TRA', ['19700'], 'Test'), source.key);
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ outcome: 'not_played', emergency: null });
    expect((t.query('SELECT COUNT(*) AS n FROM commands')[0] as { n: number }).n).toBe(0);
  });
});
