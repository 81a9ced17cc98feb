/**
 * Alert webhooks from the durable outbox, in batches: a real HTTP receiver, real SQLite files that outlive
 * the app (restarts), and a ManualClock that drives the linger and the back-off. Devices are written straight
 * into the database (10,000 through the API would take minutes) and the app is restarted so that the health
 * service loads them, as after an outage that happened while Loa was down.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config.js';
import { sqliteOf } from '../src/db/index.js';
import { ManualClock } from './support/clock.js';
import { captureLog } from './support/log.js';
import { waitFor } from './support/wait.js';

const SECRET = 'khóa bí mật của xã Hải Phú – 2026';
const METRICS_TOKEN = 'metrics-token-0123456789abcdef';
const AREA_NAME = 'Thôn Đông – Xã Hải Phú';
const deviceName = (i: number) => `Cụm loa Đình làng số ${i} – Thôn Đông`;

interface WireEvent {
  event: 'alert.opened' | 'alert.resolved';
  at: string;
  alert: { id: number; deviceId: string; deviceName: string | null; areaName: string | null; state: string };
}
interface Request {
  method: string;
  headers: http.IncomingHttpHeaders;
  raw: Buffer;
  body: { events: WireEvent[]; sentAt: string };
  /** What the receiver answered. */
  status: number;
}

/** What a receiver's own code would do: HMAC of "<timestamp>.<raw body>", compared in constant time. */
function verifies(headers: http.IncomingHttpHeaders, raw: Buffer): boolean {
  const timestamp = headers['x-loa-timestamp'];
  const signature = headers['x-loa-signature'];
  if (typeof timestamp !== 'string' || typeof signature !== 'string') return false;
  const mac = createHmac('sha256', SECRET).update(`${timestamp}.`).update(raw).digest('hex');
  const expected = Buffer.from(`sha256=${mac}`);
  const given = Buffer.from(signature);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * A webhook receiver whose answer the test sets: a status, or hanging (never answering). A 3xx answer
 * points elsewhere on the same server, which answers anything with 200 (as a web site's home page would).
 */
class Receiver {
  readonly requests: Request[] = [];
  answer: number | 'hang' = 204;
  private server: http.Server | null = null;
  private port = 0;
  private readonly hanging: http.ServerResponse[] = [];

  get url() {
    return `http://127.0.0.1:${this.port}/hook`;
  }

  async start(): Promise<void> {
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const raw = Buffer.concat(chunks);
        const answer = req.url === '/hook' ? this.answer : 200;
        this.requests.push({
          method: req.method ?? '',
          headers: req.headers,
          raw,
          body: (raw.length > 0
            ? JSON.parse(raw.toString('utf8'))
            : { events: [], sentAt: '' }) as Request['body'],
          status: answer === 'hang' ? 0 : answer,
        });
        if (answer === 'hang') this.hanging.push(res);
        else if (answer >= 300 && answer < 400) res.writeHead(answer, { location: '/moved' }).end();
        else res.writeHead(answer).end();
      });
    });
    // The same port after a stop: the app's URL does not change while the receiver is down.
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Down: connections are refused until start() again. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const res of this.hanging.splice(0)) res.destroy();
    if (!server) return;
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }

  events(): WireEvent[] {
    return this.requests.filter((r) => r.status >= 200 && r.status < 300).flatMap((r) => r.body.events);
  }
}

describe('alert webhooks from the outbox', () => {
  let dataDir: string;
  let receiver: Receiver;
  let clock: ManualClock;
  let app: FastifyInstance | null;
  let log: ReturnType<typeof captureLog>;

  beforeEach(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-outbox-'));
    receiver = new Receiver();
    await receiver.start();
    clock = new ManualClock('2026-06-01T00:00:00.000Z');
    log = captureLog();
    app = null;
  });
  afterEach(async () => {
    await app?.close();
    await receiver.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  /** Starts (or restarts) the app on the same database file. */
  const start = async (env: Record<string, string> = {}) => {
    const config = loadConfig({
      DATA_DIR: dataDir,
      PORT: '0',
      MQTT_PORT: '0',
      HOST: '127.0.0.1',
      ADMIN_PASSWORD: 'admin-Mật-khẩu-1',
      LOG_LEVEL: 'silent',
      METRICS_TOKEN,
      ALERT_WEBHOOK_URL: receiver.url,
      ALERT_WEBHOOK_SECRET: SECRET,
      ...env,
      ...(env.ALERT_WEBHOOK_URL === 'none' ? { ALERT_WEBHOOK_URL: receiver.url } : {}),
    });
    if (env.ALERT_WEBHOOK_URL === 'none') config.alerts.webhookUrl = undefined;
    app = await buildApp({ config, clock, logger: { level: 'warn', stream: log.stream } });
    await app.ready();
    return app;
  };
  const stop = async () => {
    await app?.close();
    app = null;
  };
  const db = () => sqliteOf(app!.db);
  const outbox = () =>
    db()
      .prepare(
        'SELECT id, state, attempts, next_attempt_at AS nextAttemptAt, last_error AS lastError FROM webhook_outbox ORDER BY id',
      )
      .all() as {
      id: number;
      state: string;
      attempts: number;
      nextAttemptAt: number;
      lastError: string | null;
    }[];

  /**
   * Writes `count` devices that have been offline for an hour into the database of a first run of the app,
   * then restarts it: the health service loads them, and the next evaluation opens an alert for each.
   */
  const startWithOfflineDevices = async (count: number, env: Record<string, string> = {}) => {
    await start(env);
    const sqlite = db();
    const now = clock.now().getTime();
    const since = now - 3_600_000;
    sqlite
      .prepare(
        `INSERT INTO areas (id, name, level, parent_id, path, created_at, updated_at)
         VALUES ('ar_outbox', ?, 'hamlet', NULL, '/ar_outbox/', ?, ?)`,
      )
      .run(AREA_NAME, now, now);
    const insert = sqlite.prepare(
      `INSERT INTO devices (id, name, sort_name, kind, area_id, secret_hash, created_at, updated_at,
         online, online_since, health, health_reasons, health_since)
       VALUES (?, ?, ?, 'cluster', 'ar_outbox', 'x', ?, ?, 0, ?, 'fault', '["offline"]', ?)`,
    );
    sqlite.transaction(() => {
      for (let i = 1; i <= count; i++) {
        const id = `dev_${String(i).padStart(5, '0')}`;
        insert.run(id, deviceName(i), id, now, now, since, since);
      }
    })();
    await stop();
    return start(env);
  };

  /** Lets the periodic evaluation run and waits until its events are all in the outbox. */
  const evaluate = async (expected: number) => {
    clock.advance(10_000);
    await waitFor(
      () => (db().prepare('SELECT count(*) AS n FROM webhook_outbox').get() as { n: number }).n >= expected,
      `${expected} events in the outbox`,
    );
  };
  const requests = (n: number) =>
    waitFor(() => (receiver.requests.length >= n ? receiver.requests : null), `${n} webhook request(s)`);
  /** Waits until the head of the outbox has failed `attempts` times. */
  const failedTimes = (attempts: number) =>
    waitFor(() => outbox()[0]?.attempts === attempts, `the head to have failed ${attempts} time(s)`);
  const metrics = async () =>
    (
      await app!.inject({
        method: 'GET',
        url: '/metrics',
        headers: { authorization: `Bearer ${METRICS_TOKEN}` },
      })
    ).body;

  it('sends 10,000 alerts opened at once in ⌈10,000 / batch max⌉ signed requests, each alert once and in order', async () => {
    await startWithOfflineDevices(10_000);
    await evaluate(10_000);
    expect(receiver.requests).toHaveLength(0); // still lingering
    clock.advance(1_000);
    await waitFor(() => receiver.events().length >= 10_000, 'every event delivered');
    await waitFor(() => outbox().length === 0, 'an empty outbox');

    // ALERT_WEBHOOK_BATCH_MAX defaults to 1,000.
    expect(receiver.requests).toHaveLength(10);
    for (const r of receiver.requests) {
      expect(r.body.events.length).toBeLessThanOrEqual(1_000);
      expect(verifies(r.headers, r.raw)).toBe(true);
      expect(Number(r.headers['content-length'])).toBe(r.raw.length);
      expect(r.body.sentAt).toBe(new Date(Number(r.headers['x-loa-timestamp']) * 1000).toISOString());
    }
    const events = receiver.events();
    const ids = events.map((e) => e.alert.id);
    expect(new Set(ids).size).toBe(10_000);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(events.map((e) => e.event))).toEqual(new Set(['alert.opened']));
    const alertIds = (db().prepare('SELECT id FROM alerts ORDER BY id').all() as { id: number }[]).map(
      (a) => a.id,
    );
    expect(ids).toEqual(alertIds);

    // Vietnamese names arrive intact, byte for byte.
    const first = events[0]!;
    expect(first.alert).toMatchObject({
      deviceId: 'dev_00001',
      deviceName: deviceName(1),
      areaName: AREA_NAME,
    });
    expect(first.at).toBe('2026-06-01T00:00:10.000Z');
    expect(events[9_999]!.alert.deviceName).toBe(deviceName(10_000));
    expect(receiver.requests[0]!.raw.toString('utf8')).toContain(`"deviceName":"${deviceName(1)}"`);

    const text = await metrics();
    expect(text).toContain('loa_alert_webhook_requests_total{outcome="delivered"} 10');
    expect(text).toContain('loa_alert_webhook_requests_total{outcome="failed"} 0');
    expect(text).toContain('loa_alert_webhook_events{state="pending"} 0');
  });

  it('retries with back-off while the receiver fails or is down, keeping later events behind, then delivers', async () => {
    await startWithOfflineDevices(3);
    receiver.answer = 500;
    await evaluate(3);
    clock.advance(1_000);
    await failedTimes(1);
    const [head] = outbox();
    expect(head).toMatchObject({ state: 'pending', lastError: 'HTTP 500' });
    expect(head!.nextAttemptAt - clock.now().getTime()).toBe(2_000);

    // Devices deleted meanwhile: their alerts resolve, and the resolutions queue behind the openings.
    await app!.services.alerts.evaluate(new Map());
    expect(outbox()).toHaveLength(6);

    await receiver.stop();
    clock.advance(2_000);
    await failedTimes(2);
    expect(outbox()[0]!.lastError).toMatch(/^fetch failed/);
    expect(outbox()[0]!.nextAttemptAt - clock.now().getTime()).toBe(4_000);
    // Nothing goes before the back-off is over, new events or not.
    clock.advance(3_999);
    expect(outbox()[0]!.attempts).toBe(2);

    receiver.answer = 204;
    await receiver.start();
    clock.advance(1);
    await waitFor(() => outbox().length === 0, 'an empty outbox');

    const delivered = receiver.requests.filter((r) => r.status === 204);
    expect(delivered).toHaveLength(1);
    const events = delivered[0]!.body.events;
    expect(events.map((e) => e.event)).toEqual([
      'alert.opened',
      'alert.opened',
      'alert.opened',
      'alert.resolved',
      'alert.resolved',
      'alert.resolved',
    ]);
    expect(events.slice(3).map((e) => e.alert.id)).toEqual(events.slice(0, 3).map((e) => e.alert.id));
    // The refused request carried the openings; the delivered one carries them again, with the resolutions.
    expect(receiver.requests[0]!.body.events).toEqual(events.slice(0, 3));
    expect(verifies(delivered[0]!.headers, delivered[0]!.raw)).toBe(true);

    const text = await metrics();
    expect(text).toContain('loa_alert_webhook_requests_total{outcome="failed"} 2');
    expect(text).toContain('loa_alert_webhook_requests_total{outcome="delivered"} 1');
  });

  it('survives a restart: events pending at shutdown are sent by the next start on the same file', async () => {
    await startWithOfflineDevices(4);
    await evaluate(4);
    // Closed while the batch is still lingering: nothing was sent.
    await stop();
    expect(receiver.requests).toHaveLength(0);

    await start();
    await waitFor(() => receiver.events().length === 4, 'the pending events delivered after the restart');
    await waitFor(() => outbox().length === 0, 'an empty outbox');
    expect(receiver.events().map((e) => e.alert.deviceName)).toEqual([1, 2, 3, 4].map(deviceName));
  });

  it('keeps the back-off across a restart', async () => {
    await startWithOfflineDevices(2);
    receiver.answer = 503;
    await evaluate(2);
    clock.advance(1_000);
    await failedTimes(1);
    await stop();

    receiver.answer = 204;
    await start();
    // The head is still backing off: nothing goes until its time has come.
    expect(receiver.requests).toHaveLength(1);
    clock.advance(2_000);
    await waitFor(() => receiver.events().length === 2, 'delivery after the back-off');
    await waitFor(() => outbox().length === 0, 'an empty outbox');
  });

  it('aborts a request still unanswered at shutdown and keeps its events pending, not counted as an attempt', async () => {
    await startWithOfflineDevices(2);
    receiver.answer = 'hang';
    await evaluate(2);
    clock.advance(1_000);
    await requests(1);
    await stop(); // waits out the shutdown grace, then aborts

    receiver.answer = 204;
    await start();
    await waitFor(() => receiver.events().length === 2, 'delivery after the restart');
    expect(receiver.requests[1]!.body.events).toEqual(receiver.requests[0]!.body.events);
    await waitFor(() => outbox().length === 0, 'an empty outbox');
  });

  it('gives up after ALERT_WEBHOOK_ATTEMPTS, says so in /metrics and the log, and sends the next events', async () => {
    const env = { ALERT_WEBHOOK_ATTEMPTS: '3' };
    await startWithOfflineDevices(2, env);
    receiver.answer = 500;
    await evaluate(2);
    clock.advance(1_000);
    await failedTimes(1);
    clock.advance(2_000);
    await failedTimes(2);
    clock.advance(4_000);
    await waitFor(() => outbox().every((r) => r.state === 'given_up'), 'the events given up');
    expect(outbox().map((r) => r.attempts)).toEqual([3, 3]);

    let text = await metrics();
    expect(text).toContain('loa_alert_webhook_events{state="given_up"} 2');
    expect(text).toContain('loa_alert_webhook_events{state="pending"} 0');
    expect(text).toContain('loa_alert_webhook_events_given_up_total 2');
    expect(text).toContain('loa_alert_webhook_requests_total{outcome="failed"} 3');
    const alertIds = receiver.requests[0]!.body.events.map((e) => e.alert.id);
    const gaveUp = log.lines.find((l) => l.msg === 'alert webhook gave up on events');
    expect(gaveUp).toMatchObject({ level: 50, events: 2, alertIds, attempts: 3 });

    // The receiver is back; the next events go at once, the given-up ones stay given up.
    receiver.answer = 204;
    await app!.services.alerts.evaluate(new Map());
    clock.advance(1_000);
    await waitFor(() => receiver.events().length === 2, 'the next events delivered');
    expect(receiver.events().map((e) => [e.event, e.alert.id])).toEqual(
      alertIds.map((id) => ['alert.resolved', id]),
    );
    text = await metrics();
    expect(text).toContain('loa_alert_webhook_events{state="given_up"} 2');
    expect(text).toContain('loa_alert_webhook_events{state="pending"} 0');
    expect(text).toContain('loa_alert_webhook_requests_total{outcome="delivered"} 1');

    // Given-up events are pruned 30 days after they were given up, by an hourly job. Time passes while
    // the app is down: a long jump with it running would fire every timer of every module on the way.
    const givenUp = () => outbox().filter((r) => r.state === 'given_up');
    await stop();
    clock.advance(29 * 86_400_000);
    await start(env);
    clock.advance(3_600_000);
    expect(givenUp()).toHaveLength(2);
    await stop();
    clock.advance(86_400_000);
    await start(env);
    clock.advance(3_600_000);
    expect(givenUp()).toEqual([]);
  });

  it('counts a redirect as a failed attempt: the events are neither followed elsewhere nor deleted', async () => {
    // An http:// URL behind a server that redirects to https:// answers 301; followed, the POST would turn
    // into a body-less GET whose 200 would delete events nobody received.
    await startWithOfflineDevices(2);
    receiver.answer = 301;
    await evaluate(2);
    clock.advance(1_000);
    await failedTimes(1);
    expect(outbox()).toMatchObject([
      { state: 'pending', lastError: 'HTTP 301' },
      { state: 'pending', lastError: 'HTTP 301' },
    ]);
    expect(receiver.requests.map((r) => [r.method, r.status])).toEqual([['POST', 301]]);

    receiver.answer = 204;
    clock.advance(2_000);
    await waitFor(() => outbox().length === 0, 'an empty outbox');
    expect(receiver.events()).toHaveLength(2);
    expect(await metrics()).toContain('loa_alert_webhook_requests_total{outcome="failed"} 1');
  });

  it('writes nothing to the outbox without a webhook URL', async () => {
    await startWithOfflineDevices(3, { ALERT_WEBHOOK_URL: 'none' });
    clock.advance(10_000);
    await waitFor(
      () =>
        (db().prepare("SELECT count(*) AS n FROM alerts WHERE state = 'open'").get() as { n: number }).n ===
        3,
      'three open alerts',
    );
    expect(outbox()).toEqual([]);
    expect(await metrics()).toContain('loa_alert_webhook_events{state="pending"} 0');
  });
});
