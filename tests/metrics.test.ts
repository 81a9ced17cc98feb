import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import errorsPlugin from '../src/plugins/errors.js';
import metricsPlugin, { Metrics, type TopAreaDevices } from '../src/plugins/metrics.js';

const TOKEN = 'metrics-token-0123456789abcdef';

const QUANG_TRI: TopAreaDevices = { areaId: 'are_qt', areaName: 'Tỉnh Quảng Trị', online: 3, offline: 2 };
const HUE: TopAreaDevices = { areaId: 'are_hue', areaName: 'Thành phố Huế', online: 0, offline: 7 };

const noDevices = { mqttConnections: () => 0, devicesByTopArea: () => [] };

/** The value of the one sample of `name` whose labels include `labels` (any order); undefined if none. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const matches = text.split('\n').filter((line) => {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) return false;
    const present = new Set((match[2] ?? '').split(/,(?=[a-zA-Z_]\w*=")/).filter(Boolean));
    return wanted.every((pair) => present.has(pair));
  });
  if (matches.length > 1) throw new Error(`${matches.length} samples of ${name} match ${wanted.join(',')}`);
  const line = matches[0];
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

function expectProblem(res: LightMyRequestResponse, status: number, code: string) {
  expect(res.statusCode).toBe(status);
  expect(String(res.headers['content-type'])).toMatch(/^application\/problem\+json/);
  const body = res.json<{ status: number; code: string; title: string; type: string }>();
  expect(body).toMatchObject({ status, code, type: `urn:loa:problem:${code}` });
  return body;
}

describe('metrics', () => {
  const apps: FastifyInstance[] = [];
  afterEach(async () => {
    await Promise.all(apps.splice(0).map((app) => app.close()));
  });

  async function build(options: Partial<Parameters<typeof metricsPlugin>[1]> = {}): Promise<FastifyInstance> {
    const app = Fastify({ logger: false });
    apps.push(app);
    await app.register(errorsPlugin);
    await app.register(metricsPlugin, {
      token: TOKEN,
      mqttConnections: () => 4,
      devicesByTopArea: () => [QUANG_TRI, HUE],
      ...options,
    });
    app.get('/some/:id', async () => ({ ok: true }));
    // Routes in an encapsulated, prefixed context (as the API is) are timed too.
    await app.register(
      async (api) => {
        api.get('/things/:thingId', async () => ({ ok: true }));
      },
      { prefix: '/api/v1' },
    );
    await app.ready();
    return app;
  }

  const scrape = (app: FastifyInstance, authorization = `Bearer ${TOKEN}`) =>
    app.inject({ method: 'GET', url: '/metrics', headers: { authorization } });

  describe('access', () => {
    it('has no /metrics route when no token is configured: 404 like any unknown URL', async () => {
      const app = await build({ token: undefined });
      const res = await scrape(app);
      const unknown = await app.inject({ method: 'GET', url: '/nothing-here' });
      expect(expectProblem(res, 404, 'not_found').title).toBe(expectProblem(unknown, 404, 'not_found').title);
    });

    it('treats an empty token as no token', async () => {
      const app = await build({ token: '' });
      expectProblem(await scrape(app, 'Bearer '), 404, 'not_found');
    });

    it('refuses a missing, wrong or differently-schemed token with 401 problem+json', async () => {
      const app = await build();
      const missing = await app.inject({ method: 'GET', url: '/metrics' });
      expectProblem(missing, 401, 'unauthenticated');
      for (const header of [
        'Bearer wrong',
        `Bearer ${TOKEN}x`,
        `Bearer ${TOKEN.slice(0, -1)}`,
        `Basic ${Buffer.from(`prometheus:${TOKEN}`).toString('base64')}`,
        TOKEN,
        'Bearer',
      ]) {
        expectProblem(await scrape(app, header), 401, 'unauthenticated');
      }
    });

    it('answers the right token with the Prometheus text format', async () => {
      const app = await build();
      const res = await scrape(app);
      expect(res.statusCode).toBe(200);
      expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
      expect(res.body).toContain('# TYPE loa_commands_sent_total counter');
      // The bearer-token scheme is case-insensitive (RFC 7235 §2.1), as in the API's own auth.
      expect((await scrape(app, `bearer ${TOKEN}`)).statusCode).toBe(200);
    });
  });

  describe('content', () => {
    it('counts commands, acks with their latency, and MQTT traffic', async () => {
      const app = await build();
      app.metrics.commandSent('play', 'emergency', 120);
      app.metrics.commandSent('play', 'emergency', 30);
      app.metrics.commandSent('volume', 'normal', 5);
      app.metrics.ackRecorded('received', 80);
      app.metrics.ackRecorded('done', 1_500);
      app.metrics.ackRecorded('done', 45_000);
      app.metrics.ackRecorded('failed', null);
      app.metrics.mqttMessageIn('ack');
      app.metrics.mqttMessageIn('ack');
      app.metrics.mqttMessageIn('telemetry');
      app.metrics.mqttMessageIn('loa/v1/devices/dev_1/ack');
      app.metrics.mqttMessageIn('cmd');
      app.metrics.mqttMessagesOut(150);
      app.metrics.malformedPayload('state');

      const text = (await scrape(app)).body;
      expect(text).toContain('loa_commands_sent_total{type="play",priority="emergency"} 2');
      expect(sample(text, 'loa_commands_sent_total', { type: 'volume', priority: 'normal' })).toBe(1);
      // Known label combinations are exported at 0 before their first event.
      expect(sample(text, 'loa_commands_sent_total', { type: 'stop', priority: 'priority' })).toBe(0);
      expect(sample(text, 'loa_command_targets_total', { type: 'play' })).toBe(150);
      expect(sample(text, 'loa_command_targets_total', { type: 'volume' })).toBe(5);

      expect(sample(text, 'loa_command_acks_total', { status: 'done' })).toBe(2);
      expect(sample(text, 'loa_command_acks_total', { status: 'failed' })).toBe(1);
      expect(sample(text, 'loa_command_acks_total', { status: 'rejected' })).toBe(0);
      // Latency is in seconds; an ack without a known send time is counted but not timed.
      expect(sample(text, 'loa_command_ack_latency_seconds_bucket', { status: 'received', le: '0.05' })).toBe(
        0,
      );
      expect(sample(text, 'loa_command_ack_latency_seconds_bucket', { status: 'received', le: '0.1' })).toBe(
        1,
      );
      expect(sample(text, 'loa_command_ack_latency_seconds_bucket', { status: 'done', le: '2' })).toBe(1);
      expect(sample(text, 'loa_command_ack_latency_seconds_bucket', { status: 'done', le: '30' })).toBe(1);
      expect(sample(text, 'loa_command_ack_latency_seconds_bucket', { status: 'done', le: '60' })).toBe(2);
      expect(sample(text, 'loa_command_ack_latency_seconds_bucket', { status: 'done', le: '+Inf' })).toBe(2);
      expect(sample(text, 'loa_command_ack_latency_seconds_sum', { status: 'done' })).toBeCloseTo(46.5);
      expect(sample(text, 'loa_command_ack_latency_seconds_count', { status: 'failed' })).toBe(0);

      expect(sample(text, 'loa_mqtt_messages_in_total', { channel: 'ack' })).toBe(2);
      expect(sample(text, 'loa_mqtt_messages_in_total', { channel: 'telemetry' })).toBe(1);
      // Anything outside the protocol's channels is one series, whatever it was called.
      expect(sample(text, 'loa_mqtt_messages_in_total', { channel: 'other' })).toBe(2);
      expect(sample(text, 'loa_mqtt_messages_in_total', { channel: 'log' })).toBe(0);
      expect(text).not.toContain('channel="cmd"');
      expect(sample(text, 'loa_mqtt_messages_out_total')).toBe(150);
      expect(sample(text, 'loa_mqtt_malformed_payloads_total', { channel: 'state' })).toBe(1);
      expect(sample(text, 'loa_mqtt_malformed_payloads_total', { channel: 'log' })).toBe(0);
    });

    it('reads connections and devices per top-level area at scrape time, with Vietnamese names intact', async () => {
      const app = await build();
      const text = (await scrape(app)).body;
      expect(sample(text, 'loa_mqtt_connections')).toBe(4);
      expect(text).toContain('loa_devices{top_area_id="are_qt",top_area="Tỉnh Quảng Trị",state="online"} 3');
      expect(
        sample(text, 'loa_devices', { top_area_id: 'are_qt', top_area: 'Tỉnh Quảng Trị', state: 'offline' }),
      ).toBe(2);
      expect(sample(text, 'loa_devices', { top_area: 'Thành phố Huế', state: 'online' })).toBe(0);
      expect(sample(text, 'loa_devices', { top_area: 'Thành phố Huế', state: 'offline' })).toBe(7);
    });

    it('drops the series of an area that no longer exists and follows the live values', async () => {
      let areas: TopAreaDevices[] = [QUANG_TRI, HUE];
      let connections = 10;
      const app = await build({ devicesByTopArea: () => areas, mqttConnections: () => connections });
      expect(
        sample((await scrape(app)).body, 'loa_devices', { top_area_id: 'are_hue', state: 'offline' }),
      ).toBe(7);

      areas = [{ ...QUANG_TRI, online: 5, offline: 0 }];
      connections = 5;
      const text = (await scrape(app)).body;
      expect(text).not.toContain('are_hue');
      expect(sample(text, 'loa_devices', { top_area_id: 'are_qt', state: 'online' })).toBe(5);
      expect(sample(text, 'loa_mqtt_connections')).toBe(5);
    });

    it('times HTTP requests by route pattern, never by raw URL', async () => {
      const app = await build();
      for (const id of ['dev_1', 'dev_2', 'dev_3']) {
        expect((await app.inject({ method: 'GET', url: `/some/${id}` })).statusCode).toBe(200);
      }
      await app.inject({ method: 'GET', url: '/api/v1/things/t_1?verbose=1' });
      await app.inject({ method: 'GET', url: '/wp-login.php' });
      await app.inject({ method: 'GET', url: '/.env' });

      const text = (await scrape(app)).body;
      const some = { method: 'GET', route: '/some/:id', status_code: '200' };
      expect(text).toMatch(/^loa_http_request_duration_seconds_bucket\{.*route="\/some\/:id".*\} 3$/m);
      expect(sample(text, 'loa_http_request_duration_seconds_count', some)).toBe(3);
      expect(sample(text, 'loa_http_request_duration_seconds_bucket', { ...some, le: '+Inf' })).toBe(3);
      expect(
        sample(text, 'loa_http_request_duration_seconds_count', {
          route: '/api/v1/things/:thingId',
          status_code: '200',
        }),
      ).toBe(1);
      expect(
        sample(text, 'loa_http_request_duration_seconds_count', { route: 'unmatched', status_code: '404' }),
      ).toBe(2);
      for (const raw of ['dev_1', 't_1', 'wp-login', '.env']) expect(text).not.toContain(raw);
    });

    it('includes the process metrics, event-loop lag among them', async () => {
      const app = await build();
      const text = (await scrape(app)).body;
      for (const name of [
        'nodejs_eventloop_lag_seconds',
        'process_cpu_seconds_total',
        'process_resident_memory_bytes',
      ]) {
        expect(sample(text, name), name).toBeGreaterThanOrEqual(0);
      }
      // Each family appears once: the process metrics are not registered again per app.
      expect(text.match(/^# TYPE nodejs_eventloop_lag_seconds /gm)).toHaveLength(1);
    });
  });

  it('keeps the counters of two apps apart', async () => {
    const a = new Metrics(noDevices);
    const b = new Metrics(noDevices);
    a.commandSent('stop', 'priority', 9);
    a.mqttMessagesOut(9);
    b.commandSent('stop', 'priority', 1);

    const textA = await a.render();
    const textB = await b.render();
    expect(sample(textA, 'loa_commands_sent_total', { type: 'stop', priority: 'priority' })).toBe(1);
    expect(sample(textA, 'loa_command_targets_total', { type: 'stop' })).toBe(9);
    expect(sample(textA, 'loa_mqtt_messages_out_total')).toBe(9);
    expect(sample(textB, 'loa_command_targets_total', { type: 'stop' })).toBe(1);
    expect(sample(textB, 'loa_mqtt_messages_out_total')).toBe(0);
    expect(sample(textB, 'nodejs_eventloop_lag_seconds')).toBeGreaterThanOrEqual(0);
  });
});
