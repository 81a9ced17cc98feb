/**
 * Device health for technicians, end to end: the real broker and MQTT.js devices, with the server's clock
 * driven by the test (silence, alert thresholds and retention are about time; nothing sleeps).
 */
import http from 'node:http';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { topics, type Telemetry } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { closed, connectDevice, end } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

type Creds = { clientId: string; username: string; password: string };
type Health = {
  online: boolean;
  since: string | null;
  health: string;
  reasons: string[];
  telemetry: (Telemetry & { receivedAt: string }) | null;
  firmware: string | null;
  transitions: { at: string; online: boolean; cause: string }[];
};
type Alert = {
  id: number;
  deviceId: string;
  kind: string;
  state: string;
  reasons: string[];
  acknowledgedBy: string | null;
  note: string | null;
};

const goodTelemetry = (clock: ManualClock, extra: Partial<Telemetry> = {}): Telemetry => ({
  at: clock.now().toISOString(),
  uptimeS: 1_000,
  rssiDbm: -70,
  supplyVoltage: 12.9,
  onBattery: false,
  ampTempC: 38,
  speakerFault: false,
  ...extra,
});

describe('device health', () => {
  let t: TestApp;
  let clock: ManualClock;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let url: string;
  let technician: string;
  const clients: MqttClient[] = [];

  beforeEach(async () => {
    clock = new ManualClock('2026-06-01T00:00:00.000Z');
    t = await createTestApp({
      clock,
      listen: true,
      env: { HEALTH_MIN_FIRMWARE: '1.4.0', METRICS_TOKEN: 'metrics-token-0123456789' },
    });
    tree = await createAreaTree(t);
    url = `mqtt://127.0.0.1:${t.app.broker.port}`;
    technician = await t.createUser('technician', tree.district.id);
  });
  afterEach(async () => {
    await end(...clients.splice(0));
    await t.close();
  });

  const connect = async (creds: Creds) => {
    const client = await connectDevice(url, creds);
    clients.push(client);
    return client;
  };
  const health = async (id: string, token = technician) =>
    (await t.request('GET', `/api/v1/devices/${id}/health`, { token })).json<Health>();
  const healthWhere = (id: string, what: string, check: (h: Health) => boolean) =>
    waitFor(async () => {
      const h = await health(id);
      return check(h) ? h : null;
    }, what);
  const sendTelemetry = (client: MqttClient, id: string, extra: Partial<Telemetry> = {}) =>
    client.publishAsync(topics.telemetry(id), JSON.stringify(goodTelemetry(clock, extra)), { qos: 1 });
  const alerts = async (query = '') =>
    (await t.request('GET', `/api/v1/alerts${query}`, { token: technician })).json<{
      items: Alert[];
      total: number;
    }>().items;
  /** Moves time and lets the periodic jobs (silence, alerts) run. */
  const advance = (ms: number) => clock.advance(ms);

  it('reports presence, telemetry and derived health with reasons', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông');
    const client = await connect(device.credentials);
    await client.publishAsync(
      topics.state(device.id),
      JSON.stringify({ firmware: '1.3.0', volume: 60, playing: null }),
      { qos: 1 },
    );
    await sendTelemetry(client, device.id, { rssiDbm: -108, onBattery: true, supplyVoltage: 11.2 });

    const h = await healthWhere(device.id, 'degraded', (x) => x.health === 'degraded');
    expect(h).toMatchObject({
      online: true,
      since: '2026-06-01T00:00:00.000Z',
      firmware: '1.3.0',
      reasons: ['weak_signal', 'on_battery', 'supply_voltage_low', 'firmware_outdated'],
      telemetry: { rssiDbm: -108, onBattery: true, receivedAt: '2026-06-01T00:00:00.000Z' },
    });
    expect(h.transitions).toEqual([{ at: '2026-06-01T00:00:00.000Z', online: true, cause: 'connect' }]);

    await sendTelemetry(client, device.id, { speakerFault: true });
    const faulty = await healthWhere(device.id, 'fault', (x) => x.health === 'fault');
    expect(faulty.reasons).toEqual(['speaker_fault', 'firmware_outdated']);
  });

  it('marks a connected device that stops sending telemetry offline (silent), and back when it resumes', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    const client = await connect(device.credentials);
    await sendTelemetry(client, device.id);
    await healthWhere(device.id, 'telemetry stored', (x) => x.telemetry !== null);

    advance(60_000);
    expect((await health(device.id)).online).toBe(true);
    advance(35_000); // past 3 heartbeats of 30 s
    const silent = await healthWhere(device.id, 'silent', (x) => !x.online);
    expect(silent).toMatchObject({ health: 'fault', reasons: ['offline'] });
    expect(silent.transitions[0]).toMatchObject({
      online: false,
      cause: 'silent',
      at: '2026-06-01T00:01:35.000Z',
    });
    expect(client.connected).toBe(true);

    await sendTelemetry(client, device.id);
    const back = await healthWhere(device.id, 'resumed', (x) => x.online);
    expect(back.transitions[0]).toMatchObject({ online: true, cause: 'resumed' });
  });

  it('records disconnects, take-overs and credential rotations with their cause', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    const first = await connect(device.credentials);
    await healthWhere(device.id, 'online', (x) => x.online);
    advance(1_000);
    const replaced = closed(first);
    await connect(device.credentials);
    await replaced;
    await healthWhere(device.id, 'take-over', (x) => x.transitions[0]?.cause === 'takeover');
    expect((await health(device.id)).online).toBe(true);

    advance(1_000);
    const second = clients[clients.length - 1]!;
    const rotatedAway = closed(second);
    await t.request('POST', `/api/v1/devices/${device.id}/credentials`, { token: technician });
    await rotatedAway;
    const h = await healthWhere(device.id, 'rotated', (x) => !x.online);
    expect(h.transitions.map((x) => x.cause)).toEqual(['credentials_rotated', 'takeover', 'connect']);
  });

  it('records every device offline with cause server_restart across a restart', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    await connect(device.credentials);
    await healthWhere(device.id, 'online', (x) => x.online);
    await t.app.close();
    const rows = t.query(
      `SELECT online, cause FROM presence_transitions WHERE device_id = '${device.id}' ORDER BY id`,
    );
    expect(rows).toEqual([
      { online: 1, cause: 'connect' },
      { online: 0, cause: 'server_restart' },
    ]);
    expect(t.query(`SELECT online FROM devices WHERE id = '${device.id}'`)).toEqual([{ online: 0 }]);
  });

  it('opens an offline alert after the threshold, lets a technician acknowledge it, and resolves it on return', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa chợ');
    const client = await connect(device.credentials);
    await healthWhere(device.id, 'online', (x) => x.online);
    await client.endAsync();
    await healthWhere(device.id, 'offline', (x) => !x.online);

    advance(9 * 60_000);
    expect(await alerts('?state=open')).toEqual([]);
    advance(2 * 60_000);
    const [alert] = await alerts('?state=open');
    expect(alert).toMatchObject({
      deviceId: device.id,
      kind: 'offline',
      state: 'open',
      reasons: ['offline'],
    });

    const ack = await t.request('POST', `/api/v1/alerts/${alert!.id}/acknowledge`, {
      token: technician,
      body: { note: 'Mất điện lưới, đã báo điện lực' },
    });
    const me = (await t.request('GET', '/api/v1/auth/me', { token: technician })).json<{
      user: { username: string };
    }>();
    expect(ack.json()).toMatchObject({
      acknowledgedBy: me.user.username,
      note: 'Mất điện lưới, đã báo điện lực',
    });

    await connect(device.credentials);
    await healthWhere(device.id, 'online again', (x) => x.online);
    advance(10_000);
    expect(await alerts('?state=open')).toEqual([]);
    const [resolved] = await alerts('?state=resolved');
    expect(resolved).toMatchObject({
      id: alert!.id,
      state: 'resolved',
      note: 'Mất điện lưới, đã báo điện lực',
    });
  });

  it('resolves the alerts of a deleted device and opens no new ones for it', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    const client = await connect(device.credentials);
    await healthWhere(device.id, 'online', (x) => x.online);
    await client.endAsync();
    await healthWhere(device.id, 'offline', (x) => !x.online);
    advance(11 * 60_000);
    expect((await alerts('?state=open')).map((a) => a.kind)).toEqual(['offline']);

    await t.request('DELETE', `/api/v1/devices/${device.id}`, { token: technician });
    advance(10_000);
    const all = (await t.request('GET', '/api/v1/alerts', { token: t.adminToken })).json<{ items: Alert[] }>()
      .items;
    expect(all.map((a) => [a.kind, a.state])).toEqual([['offline', 'resolved']]);
    advance(60 * 60_000);
    expect(
      (await t.request('GET', '/api/v1/alerts?state=open', { token: t.adminToken })).json<{
        items: Alert[];
      }>().items,
    ).toEqual([]);
  });

  it('opens a fault alert at once and a degraded one only when it lasts', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    const client = await connect(device.credentials);
    await sendTelemetry(client, device.id, { speakerFault: true, ampTempC: 90 });
    await healthWhere(device.id, 'fault', (x) => x.health === 'fault');
    advance(10_000);
    expect((await alerts('?state=open')).map((a) => [a.kind, a.reasons])).toEqual([
      ['fault', ['speaker_fault']],
    ]);

    await sendTelemetry(client, device.id, { ampTempC: 90 });
    await healthWhere(device.id, 'degraded', (x) => x.health === 'degraded');
    advance(10_000);
    expect(await alerts('?state=open')).toEqual([]);
    // Half an hour of a hot amplifier, reporting every minute like a live device.
    for (let minute = 1; minute <= 30; minute++) {
      advance(60_000);
      await sendTelemetry(client, device.id, { ampTempC: 90 });
      const at = clock.now().toISOString();
      await healthWhere(device.id, `minute ${minute}`, (x) => x.telemetry?.receivedAt === at);
    }
    advance(10_000);
    expect((await alerts('?state=open')).map((a) => [a.kind, a.reasons])).toEqual([
      ['degraded', ['amplifier_hot']],
    ]);
  });

  it('serves the telemetry history, raw for short ranges and averaged for long ones, and prunes it after retention', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    const client = await connect(device.credentials);
    for (let i = 0; i < 4; i++) {
      await sendTelemetry(client, device.id, { rssiDbm: -70 - i });
      await healthWhere(device.id, `sample ${i}`, (x) => x.telemetry?.rssiDbm === -70 - i);
      advance(30_000);
    }
    const short = await t.request(
      'GET',
      `/api/v1/devices/${device.id}/telemetry?metric=rssiDbm&from=2026-05-31T23:00:00Z`,
      {
        token: technician,
      },
    );
    const body = short.json<{
      bucketS: number | null;
      series: Record<string, { at: string; avg: number }[]>;
    }>();
    expect(body.bucketS).toBeNull();
    expect(body.series.rssiDbm?.map((p) => p.avg)).toEqual([-70, -71, -72, -73]);

    const long = await t.request('GET', `/api/v1/devices/${device.id}/telemetry?from=2026-05-01T00:00:00Z`, {
      token: technician,
    });
    const longBody = long.json<{
      bucketS: number;
      series: Record<string, { avg: number; count: number }[]>;
    }>();
    expect(longBody.bucketS).toBeGreaterThan(3_600); // a month in at most 500 buckets of whole heartbeats
    expect(longBody.bucketS % 30).toBe(0);
    expect(longBody.series.rssiDbm).toEqual([expect.objectContaining({ avg: -71.5, count: 4 })]);
    expect(Object.keys(longBody.series)).toEqual([
      'rssiDbm',
      'supplyVoltage',
      'ampTempC',
      'uptimeS',
      'onBattery',
      'speakerFault',
    ]);

    const bad = await t.request(
      'GET',
      `/api/v1/devices/${device.id}/telemetry?metric=humidity&from=yesterday`,
      { token: technician },
    );
    expect(bad.statusCode).toBe(400);

    // Roll-up and pruning run in the background, in slices: raw samples go once rolled up and past
    // TELEMETRY_RAW_HOURS, and these roll-ups are past TELEMETRY_RETENTION_DAYS too.
    advance(31 * 86_400_000);
    await waitFor(
      () => (t.query('SELECT count(*) AS n FROM telemetry_samples') as { n: number }[])[0]?.n === 0,
      'telemetry pruned',
    );
    expect(t.query('SELECT count(*) AS n FROM telemetry_rollups')).toEqual([{ n: 0 }]);
  });

  it('summarises an area tree per child area, limited to the caller’s scope', async () => {
    const a1 = await t.createDevice(tree.hamletA.id);
    const a2 = await t.createDevice(tree.hamletA.id);
    await t.createDevice(tree.communeA.id, 'Đài xã', 'station');
    const b1 = await t.createDevice(tree.hamletB.id);
    const c1 = await connect(a1.credentials);
    const c2 = await connect(a2.credentials);
    const c3 = await connect(b1.credentials);
    await sendTelemetry(c1, a1.id);
    await sendTelemetry(c2, a2.id, { speakerFault: true });
    await sendTelemetry(c3, b1.id, { onBattery: true });
    await c1.publishAsync(
      topics.state(a1.id),
      JSON.stringify({
        firmware: '1.4.2',
        volume: 70,
        playing: {
          sessionId: 's',
          commandId: 'c',
          priority: 'normal',
          startedAt: clock.now().toISOString(),
          positionMs: 0,
        },
      }),
      { qos: 1 },
    );
    await healthWhere(b1.id, 'degraded', (x) => x.health === 'degraded');
    await healthWhere(a1.id, 'playing', () => true);

    const summary = await waitFor(async () => {
      const s = (
        await t.request('GET', `/api/v1/areas/${tree.district.id}/summary`, { token: technician })
      ).json<{
        total: number;
        playing: number;
        children: {
          name: string;
          total: number;
          online: number;
          offline: number;
          ok: number;
          degraded: number;
          fault: number;
        }[];
      }>();
      return s.playing === 1 ? s : null;
    }, 'summary with playing device');
    expect(summary).toMatchObject({
      total: 4,
      online: 3,
      offline: 1,
      playing: 1,
      ok: 1,
      degraded: 1,
      fault: 2,
    });
    expect(summary.children).toEqual([
      expect.objectContaining({
        name: 'Xã Hải Phú',
        total: 3,
        online: 2,
        offline: 1,
        ok: 1,
        degraded: 0,
        fault: 2,
      }),
      expect.objectContaining({ name: 'Xã Hải Thượng', total: 1, online: 1, degraded: 1, fault: 0 }),
    ]);

    const communeTech = await t.createUser('technician', tree.communeA.id);
    expect(
      (await t.request('GET', `/api/v1/areas/${tree.communeB.id}/summary`, { token: communeTech }))
        .statusCode,
    ).toBe(404);
    expect(
      (await t.request('GET', `/api/v1/devices/${b1.id}/health`, { token: communeTech })).statusCode,
    ).toBe(404);
    expect(
      (await t.request('GET', `/api/v1/devices/${b1.id}/telemetry`, { token: communeTech })).statusCode,
    ).toBe(404);
    const broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    expect(
      (await t.request('GET', `/api/v1/areas/${tree.communeA.id}/summary`, { token: broadcaster }))
        .statusCode,
    ).toBe(403);
    expect((await t.request('GET', '/api/v1/alerts', { token: broadcaster })).statusCode).toBe(403);
  });

  it('filters and sorts the device list for technicians', async () => {
    const quiet = await t.createDevice(tree.hamletA.id, 'Cụm loa A');
    const busy = await t.createDevice(tree.hamletA.id, 'Cụm loa B');
    await t.createDevice(tree.hamletB.id, 'Cụm loa C'); // never connects
    const c1 = await connect(quiet.credentials);
    await c1.publishAsync(
      topics.state(quiet.id),
      JSON.stringify({ firmware: '1.3.0', volume: 1, playing: null }),
      { qos: 1 },
    );
    await healthWhere(quiet.id, 'state', (x) => x.firmware === '1.3.0');
    advance(120_000);
    const c2 = await connect(busy.credentials);
    await sendTelemetry(c2, busy.id);
    await healthWhere(busy.id, 'telemetry', (x) => x.telemetry !== null);
    const names = async (query: string) =>
      (await t.request('GET', `/api/v1/devices?${query}`, { token: technician }))
        .json<{ items: { name: string }[] }>()
        .items.map((d) => d.name);

    expect(await names('sort=lastSeenAt')).toEqual(['Cụm loa C', 'Cụm loa A', 'Cụm loa B']);
    expect(await names('sort=-lastSeenAt')).toEqual(['Cụm loa B', 'Cụm loa A', 'Cụm loa C']);
    expect(await names('silentForS=60')).toEqual(['Cụm loa A', 'Cụm loa C']);
    expect(await names('health=fault')).toEqual(['Cụm loa A', 'Cụm loa C']); // A is silent, C never connected
    expect(await names('health=ok&online=true')).toEqual(['Cụm loa B']);
    expect(await names('firmware=1.3.0')).toEqual(['Cụm loa A']);
  });

  it('exposes Prometheus metrics behind the metrics token', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    const client = await connect(device.credentials);
    await sendTelemetry(client, device.id);
    await healthWhere(device.id, 'telemetry', (x) => x.telemetry !== null);
    await client.publishAsync(topics.telemetry(device.id), 'not json', { qos: 1 });
    await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: { type: 'ping', targets: { deviceIds: [device.id] } },
    });

    expect((await t.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(401);
    const text = await waitFor(async () => {
      const res = await t.app.inject({
        method: 'GET',
        url: '/metrics',
        headers: { authorization: 'Bearer metrics-token-0123456789' },
      });
      return res.body.includes('loa_mqtt_malformed_payloads_total{channel="telemetry"} 1') ? res.body : null;
    }, 'malformed payload counted');
    expect(text).toContain('loa_commands_sent_total{type="ping",priority="normal"} 1');
    expect(text).toContain('loa_mqtt_messages_in_total{channel="telemetry"} 2');
    expect(text).toContain('loa_mqtt_connections 1');
    expect(text).toMatch(/loa_devices\{top_area_id="[^"]+",top_area="Tỉnh Quảng Trị",state="online"\} 1/);
    expect(text).toContain('nodejs_eventloop_lag_seconds');
    expect(text).toContain('loa_http_request_duration_seconds_bucket');
  });
});

describe('alert webhook', () => {
  type Delivery = { event: string; alert: { kind: string; deviceId: string; deviceName: string | null } };
  type Batch = { events: Delivery[]; sentAt: string };
  let receiver: http.Server;
  let received: Delivery[];
  let calls: number;
  let clock: ManualClock;
  let t: TestApp;

  /** A receiver that refuses the first `failures` deliveries, as a chat gateway that is restarting would. */
  const start = async (failures: number) => {
    received = [];
    calls = 0;
    receiver = http.createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8').on('data', (c: string) => (body += c));
      req.on('end', () => {
        calls += 1;
        if (calls <= failures) {
          res.writeHead(calls % 2 ? 503 : 502).end();
          return;
        }
        received.push(...(JSON.parse(body) as Batch).events);
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const port = (receiver.address() as { port: number }).port;
    clock = new ManualClock('2026-06-01T00:00:00.000Z');
    t = await createTestApp({
      clock,
      listen: true,
      env: { ALERT_WEBHOOK_URL: `http://127.0.0.1:${port}/hook`, ALERT_OFFLINE_AFTER_S: '60' },
    });
  };
  afterEach(async () => {
    await t.close();
    await new Promise((resolve) => receiver.close(resolve));
  });

  /** Takes a device offline long enough to open an alert; returns its id. */
  const openAlert = async () => {
    const tree = await createAreaTree(t);
    const device = await t.createDevice(tree.hamletA.id);
    const client = await connectDevice(`mqtt://127.0.0.1:${t.app.broker.port}`, device.credentials);
    await client.endAsync();
    await waitFor(() => !t.app.broker.isOnline(device.id), 'offline');
    clock.advance(70_000);
    // The event lingers a second for others to join its batch.
    clock.advance(1_000);
    return device.id;
  };
  /** The notifier is waiting out a back-off of `ms` on the test's clock (it retries only when it ends). */
  const backingOff = (ms: number) =>
    waitFor(() => clock.pendingTimeouts().includes(ms), `a back-off of ${ms} ms`);

  it('posts alert events to the configured URL, retrying with a doubling back-off until the receiver accepts', async () => {
    await start(2);
    const deviceId = await openAlert();

    await backingOff(2_000);
    expect(calls).toBe(1);
    clock.advance(1_999);
    expect(clock.pendingTimeouts()).toContain(1);
    expect(calls).toBe(1);
    clock.advance(1);
    await backingOff(4_000);
    expect(calls).toBe(2);
    clock.advance(4_000);

    const [opened] = await waitFor(() => (received.length > 0 ? received : null), 'webhook delivery');
    // With the device's name, tone marks intact: the operator reading it in a chat knows which loudspeaker.
    expect(opened).toMatchObject({
      event: 'alert.opened',
      alert: { kind: 'offline', deviceId, deviceName: 'Cụm loa thôn Đông' },
    });
    expect(calls).toBe(3);
  });

  it('stops at shutdown without waiting out the back-off, keeping the event for the next start', async () => {
    await start(Infinity);
    await openAlert();
    await backingOff(2_000);
    await t.app.close();
    expect(calls).toBe(1);
    // No retry is left waiting: nothing keeps a stopping process alive or posts after it stopped.
    expect(clock.pendingTimeouts()).toEqual([]);
    expect(t.query('SELECT state, attempts FROM webhook_outbox')).toEqual([
      { state: 'pending', attempts: 1 },
    ]);
  });
});
