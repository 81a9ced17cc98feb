/**
 * Signed alert webhooks, checked as a customer would: a real HTTP receiver recomputes the HMAC over the raw
 * bytes it received with node:crypto, never with the server's own code. The server's clock is driven by the
 * test, so the timestamps are known and retries happen when the test says.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { captureLog } from './support/log.js';
import { connectDevice } from './support/mqtt.js';
import { waitFor } from './support/wait.js';

const SECRET = 'khóa bí mật của xã Hải Phú – 2026';
const TITLE = 'Thông báo lịch tiêm phòng dại – Thôn Đông';

type Delivery = { headers: http.IncomingHttpHeaders; raw: Buffer };
type Batch = { events: { event: string; at: string; alert: Record<string, unknown> }[]; sentAt: string };
const parse = (raw: Buffer) => JSON.parse(raw.toString('utf8')) as Batch;

/** What a receiver's own code would do: HMAC of "<timestamp>.<raw body>", compared in constant time. */
function verifies(secret: string, headers: http.IncomingHttpHeaders, raw: Buffer): boolean {
  const timestamp = headers['x-loa-timestamp'];
  const signature = headers['x-loa-signature'];
  if (typeof timestamp !== 'string' || typeof signature !== 'string') return false;
  const mac = createHmac('sha256', secret).update(`${timestamp}.`).update(raw).digest('hex');
  const expected = Buffer.from(`sha256=${mac}`);
  const given = Buffer.from(signature);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

describe('signed alert webhooks', () => {
  let receiver: http.Server;
  let received: Delivery[];
  let clock: ManualClock;
  let t: TestApp;
  let log: ReturnType<typeof captureLog>;

  /** A receiver that refuses the first `failures` requests (keeping each one), then accepts. */
  const start = async (env: Record<string, string>, failures = 0) => {
    received = [];
    receiver = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ headers: req.headers, raw: Buffer.concat(chunks) });
        res.writeHead(received.length <= failures ? 503 : 204).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const port = (receiver.address() as { port: number }).port;
    clock = new ManualClock('2026-06-01T00:00:00.000Z');
    log = captureLog();
    t = await createTestApp({
      clock,
      listen: true,
      logger: { level: 'warn', stream: log.stream },
      env: { ALERT_WEBHOOK_URL: `http://127.0.0.1:${port}/hook`, ALERT_OFFLINE_AFTER_S: '60', ...env },
    });
  };
  afterEach(async () => {
    await t.close();
    await new Promise((resolve) => receiver.close(resolve));
  });

  /** Takes a device offline long enough to open an alert; returns its id. */
  const openAlert = async (name?: string) => {
    const tree = await createAreaTree(t);
    const device = await t.createDevice(tree.hamletA.id, name);
    const client = await connectDevice(`mqtt://127.0.0.1:${t.app.broker.port}`, device.credentials);
    await client.endAsync();
    await waitFor(() => !t.app.broker.isOnline(device.id), 'offline');
    clock.advance(70_000);
    // The event lingers a second for others to join its batch.
    clock.advance(1_000);
    return device.id;
  };
  const deliveries = (n: number) =>
    waitFor(() => (received.length >= n ? received : null), `${n} webhook request(s)`);
  const backingOff = (ms: number) =>
    waitFor(() => clock.pendingTimeouts().includes(ms), `a back-off of ${ms} ms`);

  it('signs the exact bytes sent, with the Unix time of the injected clock', async () => {
    await start({ ALERT_WEBHOOK_SECRET: SECRET });
    const startedS = Math.floor(clock.now().getTime() / 1000);
    const deviceId = await openAlert();
    const [delivery] = await deliveries(1);
    const { headers, raw } = delivery!;

    expect(headers['x-loa-signature']).toMatch(/^sha256=[0-9a-f]{64}$/);
    const timestamp = Number(headers['x-loa-timestamp']);
    expect(Number.isInteger(timestamp)).toBe(true);
    expect(timestamp).toBeGreaterThanOrEqual(startedS);
    expect(timestamp).toBeLessThanOrEqual(Math.floor(clock.now().getTime() / 1000));
    expect(Number(headers['content-length'])).toBe(raw.length);
    expect(verifies(SECRET, headers, raw)).toBe(true);

    // A batch of one event; `sentAt` is the signed timestamp, as an ISO date.
    const body = parse(raw);
    expect(body.events).toHaveLength(1);
    expect(body.events[0]).toMatchObject({ event: 'alert.opened', alert: { deviceId, kind: 'offline' } });
    expect(body.sentAt).toBe(new Date(timestamp * 1000).toISOString());
    expect(log.lines.some((l) => l.msg.includes('unsigned'))).toBe(false);
  });

  it('fails verification for a tampered body, a changed timestamp or the wrong secret', async () => {
    await start({ ALERT_WEBHOOK_SECRET: SECRET });
    await openAlert();
    const [{ headers, raw }] = (await deliveries(1)) as [Delivery];
    expect(verifies(SECRET, headers, raw)).toBe(true);

    const tampered = Buffer.from(raw.toString('utf8').replace('"offline"', '"degraded"'), 'utf8');
    expect(tampered.equals(raw)).toBe(false);
    expect(verifies(SECRET, headers, tampered)).toBe(false);
    const replayed = { ...headers, 'x-loa-timestamp': String(Number(headers['x-loa-timestamp']) + 600) };
    expect(verifies(SECRET, replayed, raw)).toBe(false);
    expect(verifies('khóa của kẻ khác – không đúng', headers, raw)).toBe(false);
  });

  it('signs each retry afresh with its own timestamp, carrying the same events', async () => {
    await start({ ALERT_WEBHOOK_SECRET: SECRET }, 2);
    await openAlert();
    await backingOff(2_000);
    clock.advance(2_000);
    await backingOff(4_000);
    clock.advance(4_000);
    const [first, second, third] = (await deliveries(3)) as [Delivery, Delivery, Delivery];

    const stamps = [first, second, third].map((d) => Number(d.headers['x-loa-timestamp']));
    expect(stamps[1]! - stamps[0]!).toBeGreaterThanOrEqual(2);
    expect(stamps[2]! - stamps[1]!).toBeGreaterThanOrEqual(4);
    expect(new Set([first, second, third].map((d) => d.headers['x-loa-signature'])).size).toBe(3);
    for (const d of [first, second, third]) {
      expect(verifies(SECRET, d.headers, d.raw)).toBe(true);
      expect(parse(d.raw).events).toEqual(parse(first.raw).events);
      expect(parse(d.raw).sentAt).toBe(new Date(Number(d.headers['x-loa-timestamp']) * 1000).toISOString());
    }
  });

  it('sends no signature headers without a secret, and warns at start-up that webhooks are unsigned', async () => {
    await start({});
    expect(log.lines.some((l) => l.msg.includes('alert webhooks are unsigned'))).toBe(true);
    const deviceId = await openAlert();
    const [{ headers, raw }] = (await deliveries(1)) as [Delivery];
    expect(headers).not.toHaveProperty('x-loa-timestamp');
    expect(headers).not.toHaveProperty('x-loa-signature');
    expect(parse(raw).events[0]).toMatchObject({ alert: { deviceId } });
  });

  it('verifies over the UTF-8 bytes received, which parse back to the same Vietnamese text', async () => {
    await start({ ALERT_WEBHOOK_SECRET: SECRET });
    const name = `Cụm loa Đình làng – ${TITLE}`;
    await openAlert(name);
    const [{ headers, raw }] = (await deliveries(1)) as [Delivery];
    expect(verifies(SECRET, headers, raw)).toBe(true);
    // The MAC is over bytes, not characters: multi-byte letters must not be counted as one.
    expect(raw.length).toBeGreaterThan(raw.toString('utf8').length);
    expect(parse(raw).events[0]!.alert).toMatchObject({ deviceName: name, areaName: 'Thôn Đông' });
  });
});

describe('ALERT_WEBHOOK_SECRET', () => {
  it('is refused when shorter than 16 characters, naming the variable', () => {
    expect(() => loadConfig({ ALERT_WEBHOOK_SECRET: 'ngắn quá' })).toThrow(ConfigError);
    expect(() => loadConfig({ ALERT_WEBHOOK_SECRET: 'ngắn quá' })).toThrow(/ALERT_WEBHOOK_SECRET/);
    expect(loadConfig({ ALERT_WEBHOOK_SECRET: SECRET }).alerts.webhookSecret).toBe(SECRET);
    expect(loadConfig({}).alerts.webhookSecret).toBeUndefined();
  });
});
