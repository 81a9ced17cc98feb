/**
 * Emergencies under concurrency and across areas: races, scope and CAP ingest cases that the feature
 * tests do not cover. Real app, real SQLite, real TTS and ffmpeg, the embedded broker with MQTT.js
 * clients as devices; only the clock is manual. Concurrency is produced deterministically by calling the service directly: an async service
 * method runs synchronously up to its first await (the render), so a second call made right after it runs
 * while the first one renders.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AckStatus } from '../src/protocol/index.js';
import type { Actor } from '../src/lib/scope.js';
import type { Sender } from '../src/modules/emergencies/emergencies.service.js';
import { createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { MqttDevices, type MqttDevice } from './support/mqtt-devices.js';
import { openEventStream } from './support/sse.js';
import { waitFor } from './support/wait.js';

const WARNING = 'Lũ quét đang về Thôn Đông, bà con di dời lên vùng cao ngay.';
const CAP_SENDER = 'canhbao@nchmf.gov.vn';

type Device = MqttDevice;

/** A short CAP 1.2 alert naming areas by VN-ADMIN code. */
function cap(o: {
  identifier: string;
  msgType?: 'Alert' | 'Update' | 'Cancel';
  references?: string;
  code: string;
  headline?: string;
}) {
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">' +
    `<identifier>${o.identifier}</identifier><sender>${CAP_SENDER}</sender>` +
    `<sent>2026-11-20T08:00:00+07:00</sent><status>Actual</status>` +
    `<msgType>${o.msgType ?? 'Alert'}</msgType><scope>Public</scope>` +
    (o.references ? `<references>${o.references}</references>` : '') +
    '<info><language>vi-VN</language><category>Met</category><event>Lũ quét</event>' +
    '<urgency>Immediate</urgency><severity>Severe</severity><certainty>Likely</certainty>' +
    `<headline>${o.headline ?? 'Cảnh báo lũ quét – Thôn Đông'}</headline>` +
    '<description>Nước sông lên nhanh, bà con sơ tán.</description>' +
    '<expires>2026-11-20T20:00:00+07:00</expires>' +
    `<area><areaDesc>Vùng cảnh báo</areaDesc><geocode><valueName>VN-ADMIN</valueName><value>${o.code}</value></geocode></area>` +
    '</info></alert>'
  );
}

describe('emergencies: races, scope, CAP', () => {
  const clock = new ManualClock('2026-11-20T01:00:00.000Z');
  let t: TestApp;
  let operatorToken: string;
  let communeToken: string;
  let operator: Sender;
  const areas = {} as Record<
    'province' | 'district' | 'communeA' | 'communeB' | 'hamletA' | 'hamletB',
    string
  >;
  let fleet: MqttDevices;
  const addDevice = (areaId: string, name: string) => fleet.add(areaId, name);
  const online = (d: Device) => fleet.online(d);
  const offline = (d: Device) => fleet.offline(d);
  const ack = (d: Device, id: string, status: AckStatus, reason?: string) => fleet.ack(d, id, status, reason);
  let a1: Device;
  let a2: Device;
  let b1: Device;

  async function area(name: string, level: string, parentId?: string, code?: string) {
    const res = await t.request('POST', '/api/v1/areas', {
      token: t.adminToken,
      body: { name, level, ...(parentId ? { parentId } : {}), ...(code ? { code } : {}) },
    });
    expect(res.statusCode, res.body).toBe(201);
    return res.json<{ id: string }>().id;
  }

  const actorOf = (token: string): Actor => {
    const actor = t.app.services.auth.authenticate(token);
    if (!actor) throw new Error('no actor for token');
    return actor;
  };

  async function send(body: Record<string, unknown>, token = operatorToken) {
    const res = await t.request('POST', '/api/v1/emergencies', { token, body });
    expect(res.statusCode, res.body).toBe(201);
    return res.json<{ id: string; commandId: string; targetCount: number; counts: Record<string, number> }>();
  }

  async function detail(id: string, token = operatorToken) {
    const res = await t.request('GET', `/api/v1/emergencies/${id}`, { token });
    expect(res.statusCode, res.body).toBe(200);
    return res.json<{
      status: string;
      text: string | null;
      revision: number;
      commandId: string;
      expiresAt: string;
      targetCount: number;
      counts: Record<string, number>;
    }>();
  }

  const postCap = (body: string, token: string) =>
    t.app.inject({
      method: 'POST',
      url: '/api/v1/emergencies/cap',
      headers: { 'content-type': 'application/cap+xml', authorization: `Bearer ${token}` },
      payload: body,
    });

  async function warningSource(name: string, areaId: string): Promise<string> {
    const res = await t.request('POST', '/api/v1/warning-sources', {
      token: t.adminToken,
      body: { name, areaId },
    });
    expect(res.statusCode, res.body).toBe(201);
    return res.json<{ key: string }>().key;
  }

  const plays = (d: Device) => d.received.filter((c) => c.type === 'play');

  beforeAll(async () => {
    t = await createTestApp({ clock, listen: true });
    fleet = new MqttDevices(t, clock);
    areas.province = await area('Tỉnh Quảng Trị', 'province', undefined, '45');
    areas.district = await area('Huyện Hải Lăng', 'district', areas.province, '470');
    areas.communeA = await area('Xã Hải Phú', 'commune', areas.district, '19501');
    areas.communeB = await area('Xã Hải Thượng', 'commune', areas.district, '19504');
    areas.hamletA = await area('Thôn Đông', 'hamlet', areas.communeA);
    areas.hamletB = await area('Thôn Tây', 'hamlet', areas.communeB);
    operatorToken = await t.createUser('district_operator', areas.district);
    communeToken = await t.createUser('district_operator', areas.communeA);
    operator = { kind: 'user', actor: actorOf(operatorToken) };
    a1 = await addDevice(areas.hamletA, 'Cụm loa Thôn Đông 1');
    a2 = await addDevice(areas.hamletA, 'Cụm loa Thôn Đông 2');
    b1 = await addDevice(areas.hamletB, 'Cụm loa Thôn Tây');
    await online(a1);
    await online(a2);
    await online(b1);
  });

  // A failed assertion must not leave an emergency running into the next test.
  afterEach(() => {
    const admin: Sender = { kind: 'user', actor: actorOf(t.adminToken) };
    const service = t.app.services.emergencies;
    for (const { id } of t.query('SELECT id FROM emergencies WHERE cancelled_at IS NULL') as {
      id: string;
    }[]) {
      const row = service.current(id);
      if (row && service.statusOf(row) === 'active') service.cancel(admin, id, 'review test clean-up');
    }
  });

  afterAll(async () => {
    await fleet.closeAll();
    await t.close();
  });

  // -------------------------------------------------------------------------------------------------------
  // Races around the ~1 s render of a text update

  it('an expiry extended while a text update renders is kept by the new revision (play, link, re-sends)', async () => {
    const sent = await send({ title: 'Lũ quét – Thôn Đông', text: WARNING, areaIds: [areas.hamletA] });
    const service = t.app.services.emergencies;
    // The text update reads the row, then renders; the extension lands during the render.
    const textUpdate = service.update(operator, sent.id, { text: `${WARNING} Cập nhật: mực nước 2 mét.` });
    const extended = await service.update(operator, sent.id, { expiresInS: 7_200 });
    const updated = await textUpdate;

    const now = await detail(sent.id);
    expect(now.revision).toBe(2);
    expect(now.expiresAt).toBe(extended.expiresAt);
    // Updates take turns: the text went first (its answer has the expiry of then), the extension after it,
    // onto the new revision's play command.
    expect(updated.revision).toBe(2);
    const command = t.app.services.commands.findCommand(now.commandId);
    expect(command?.expiresAt.toISOString()).toBe(extended.expiresAt);
  });

  it('two text updates at once: devices end up with the later one, not whichever rendered last', async () => {
    const sent = await send({ title: 'Sạt lở – Thôn Đông', text: WARNING, areaIds: [areas.hamletA] });
    const service = t.app.services.emergencies;
    // The first correction is long (slow to render), the second, made after it, is short.
    const long = `${'Cảnh báo sạt lở đất tại sườn đồi phía tây Thôn Đông, bà con không đi qua khu vực này. '.repeat(12)}`;
    const short = 'Đính chính: sạt lở ở Thôn Tây, không phải Thôn Đông.';
    const first = service.update(operator, sent.id, { text: long.trim() });
    const second = service.update(operator, sent.id, { text: short });
    await Promise.allSettled([first, second]);

    const now = await detail(sent.id);
    expect(now.text).toBe(short);
    // And the play devices got last is the revision carrying the later text.
    await waitFor(() => plays(a1).at(-1)?.id === now.commandId, 'the later revision played last');
  });

  it('a cancel during a text update\u2019s render wins: the update is refused and nothing more is sent', async () => {
    const sent = await send({ title: 'Cháy rừng – Thôn Đông', text: WARNING, areaIds: [areas.hamletA] });
    const service = t.app.services.emergencies;
    await waitFor(() => plays(a1).some((c) => c.id === sent.commandId), 'first play');
    const update = service.update(operator, sent.id, { text: `${WARNING} Cập nhật.` });
    service.cancel(operator, sent.id, 'Báo nhầm');
    await expect(update).rejects.toMatchObject({ code: 'invalid_transition' });
    const now = await detail(sent.id);
    expect(now).toMatchObject({ status: 'cancelled', revision: 1, commandId: sent.commandId });
    await waitFor(() => a1.received.some((c) => c.type === 'stop'), 'stop');
    expect(plays(a1).at(-1)?.id).toBe(sent.commandId);
  });

  // -------------------------------------------------------------------------------------------------------
  // Cancel after an update, for a device that kept playing the first revision through a link flap

  it('a device still playing revision 1 when it comes back after update + cancel is sent a stop that ends it', async () => {
    const sent = await send({
      title: 'Bão số 9 – Thôn Đông',
      text: WARNING,
      areaIds: [areas.hamletA],
      repeat: { count: 3, intervalS: 60 },
    });
    const play1 = await waitFor(() => plays(a1).find((c) => c.id === sent.commandId), 'revision 1');
    ack(a1, play1.id, 'received');
    ack(a1, play1.id, 'done');
    await waitFor(async () => ((await detail(sent.id)).counts.playing ?? 0) >= 1, 'a1 plays revision 1');
    // The loudspeaker keeps playing revision 1 while its link is down.
    await offline(a1);
    const patched = await t.request('PATCH', `/api/v1/emergencies/${sent.id}`, {
      token: operatorToken,
      body: { text: `${WARNING} Cập nhật: gió giật cấp 12.` },
    });
    expect(patched.statusCode, patched.body).toBe(200);
    const cancelled = await t.request('POST', `/api/v1/emergencies/${sent.id}/cancel`, {
      token: operatorToken,
      body: { reason: 'Bão đã đổi hướng' },
    });
    expect(cancelled.statusCode, cancelled.body).toBe(200);

    const before = a1.received.length;
    await online(a1);
    const stop = await waitFor(
      () => a1.received.slice(before).find((c) => c.type === 'stop'),
      'a1 is sent a stop on reconnect',
    );
    const session1 = (play1.params as { sessionId: string }).sessionId;
    // protocol.md: a stop with a sessionId stops that session only. It must end what a1 plays: revision 1.
    const stopped = stop.params.sessionId;
    const allStops = a1.received
      .slice(before)
      .filter((c) => c.type === 'stop')
      .map((c) => c.params.sessionId);
    expect(stopped === undefined || allStops.includes(session1)).toBe(true);
  });

  // -------------------------------------------------------------------------------------------------------
  // Scope: what a commune user is shown

  it('a commune user is shown the targetCount of their own area, the same in GET, the list and the stream', async () => {
    const sent = await send({ title: 'Lũ – Huyện Hải Lăng', text: WARNING, areaIds: [areas.district] });
    expect(sent.targetCount).toBe(3);
    const mine = await detail(sent.id, communeToken);
    const counted = Object.values(mine.counts).reduce((a, b) => a + b, 0);
    expect(counted).toBe(2);
    expect(mine.targetCount).toBe(counted);

    const list = await t.request('GET', '/api/v1/emergencies', { token: communeToken });
    const item = list
      .json<{ items: { id: string; targetCount: number }[] }>()
      .items.find((e) => e.id === sent.id);
    expect(item?.targetCount).toBe(counted);

    const stream = openStream(sent.id, communeToken);
    const snapshot = await stream.next('snapshot');
    stream.close();
    expect((snapshot.data as { targetCount: number }).targetCount).toBe(mine.targetCount);
  });

  it('a stream closed by its client releases its poller (no listener left behind)', async () => {
    const sent = await send({ title: 'Dịch bệnh – Thôn Đông', text: WARNING, areaIds: [areas.hamletA] });
    const events = t.app.services.emergencyEvents as unknown as { pollers: Map<string, unknown> };
    const stream = openStream(sent.id, operatorToken);
    await stream.next('snapshot');
    expect(events.pollers.size).toBeGreaterThan(0);
    stream.close();
    await waitFor(() => events.pollers.size === 0, 'poller released');
  });

  // -------------------------------------------------------------------------------------------------------
  // CAP

  it('a CAP Cancel that arrives while its Alert is still rendering cancels it (the retraction is not lost)', async () => {
    const key = await warningSource('Đài KTTV Bắc Trung Bộ', areas.district);
    const alert = postCap(cap({ identifier: 'VN-QT-REVIEW-0001', code: '19501' }), key);
    const cancel = postCap(
      cap({
        identifier: 'VN-QT-REVIEW-0002',
        msgType: 'Cancel',
        references: `${CAP_SENDER},VN-QT-REVIEW-0001,2026-11-20T08:00:00+07:00`,
        code: '19501',
      }),
      key,
    );
    const [alertRes, cancelRes] = await Promise.all([alert, cancel]);
    expect(alertRes.statusCode, alertRes.body).toBe(201);
    const emergencyId = alertRes.json<{ emergencyId: string }>().emergencyId;
    expect(cancelRes.statusCode, cancelRes.body).toBe(200);
    expect((await detail(emergencyId)).status).toBe('cancelled');
  });

  it('a commune warning source cannot block the national alert by using its identifier first', async () => {
    const communeKey = await warningSource('Trạm cảnh báo xã Hải Phú', areas.communeA);
    const nationalKey = await warningSource('Trung tâm Dự báo KTTV quốc gia', areas.province);
    // The commune's system (misconfigured, or compromised) posts an alert under the national sender first.
    const squat = await postCap(cap({ identifier: 'VN-2026-BAO9-0042', code: '19501' }), communeKey);
    expect(squat.statusCode, squat.body).toBe(201);
    // The real national alert for the whole district must still play there.
    const real = await postCap(
      cap({ identifier: 'VN-2026-BAO9-0042', code: '470', headline: 'Bão số 9 – Huyện Hải Lăng' }),
      nationalKey,
    );
    expect(real.statusCode, real.body).toBe(201);
    const body = real.json<{ emergency: { targetCount: number } | null }>();
    expect(body.emergency?.targetCount).toBe(3);
  });

  it('answers an unknown emergency with 404 problem+json on the stream route too', async () => {
    const res = await t.request('GET', '/api/v1/emergencies/emg_nope/events', { token: operatorToken });
    expect(res.statusCode).toBe(404);
    expect(problem(res).code).toBe('not_found');
  });

  /** The emergency's event stream, read over real HTTP; waiting for an event moves the app's clock on. */
  function openStream(id: string, token: string) {
    const { port } = t.app.server.address() as { port: number };
    const stream = openEventStream(`http://127.0.0.1:${port}/api/v1/emergencies/${id}/events`, {
      authorization: `Bearer ${token}`,
    });
    return {
      next: (kind: string) => stream.next(kind, { onWait: () => clock.advance(500) }),
      close: () => stream.close(),
    };
  }
});
