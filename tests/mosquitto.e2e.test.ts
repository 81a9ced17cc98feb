/**
 * The device protocol with a third-party client: Debian's mosquitto_pub / mosquitto_sub, as a firmware
 * vendor would test it. npm does not install mosquitto-clients: without them these tests are skipped with
 * a message saying how to install them, unless LOA_REQUIRE_MOSQUITTO=1 (.ci/run), where they fail.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { topics } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { mosquittoClients } from './support/mosquitto.js';
import { run } from './support/processes.js';
import { waitFor } from './support/wait.js';

const mosquitto = mosquittoClients();
if (mosquitto.skip) console.warn(mosquitto.message);
const describeWithMosquitto = mosquitto.skip ? describe.skip : describe;
const suiteName = mosquitto.skip
  ? `third-party MQTT client (skipped: ${mosquitto.message})`
  : 'third-party MQTT client (mosquitto-clients)';

describeWithMosquitto(suiteName, () => {
  beforeEach(() => {
    // Reached only when the clients are required: each test below then fails (and counts as failed) saying why.
    if (mosquitto.missing.length > 0) throw new Error(mosquitto.message);
  });

  let t: TestApp;
  let port: string;
  let device: { id: string; credentials: { clientId: string; username: string; password: string } };

  beforeEach(async () => {
    t = await createTestApp({ listen: true });
    port = String(t.app.broker.port);
    const tree = await createAreaTree(t);
    device = await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông');
  });
  afterEach(async () => t.close());

  const auth = () => [
    '-h',
    '127.0.0.1',
    '-p',
    port,
    '-V',
    'mqttv311',
    '-u',
    device.id,
    '-P',
    device.credentials.password,
  ];
  /** Publishes as the device, QoS 1, the way firmware would. */
  const publish = (topic: string, message: string) =>
    run('mosquitto_pub', [...auth(), '-i', device.id, '-t', topic, '-q', '1', '-m', message]).done;

  it('receives a command with mosquitto_sub and acknowledges it with mosquitto_pub', async () => {
    let received = '';
    const sub = run(
      'mosquitto_sub',
      [...auth(), '-i', device.id, '-t', topics.cmd(device.id), '-q', '1', '-C', '1'],
      {
        onStdout: (chunk) => (received += chunk),
      },
    );
    await waitFor(() => t.app.broker.isReady(device.id), 'mosquitto_sub subscribed');

    const res = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: { type: 'volume', params: { level: 42 }, targets: { deviceIds: [device.id] } },
    });
    const { id } = res.json<{ id: string }>();
    const result = await sub.done;
    expect(result.code).toBe(0);
    expect(JSON.parse(received)).toMatchObject({
      id,
      type: 'volume',
      params: { level: 42 },
      priority: 'normal',
    });

    const ack = JSON.stringify({ id, status: 'done', at: new Date().toISOString() });
    const pub = await publish(topics.ack(device.id), ack);
    expect(pub.code).toBe(0);
    await waitFor(async () => {
      const detail = (await t.request('GET', `/api/v1/commands/${id}`, { token: t.adminToken })).json<{
        counts: { done: number };
      }>();
      return detail.counts.done === 1;
    }, 'ack recorded');
  });

  it('reports state with Vietnamese text intact', async () => {
    const state = JSON.stringify({ firmware: '2.0.1-bản-thử', volume: 55, playing: null });
    const pub = await publish(topics.state(device.id), state);
    expect(pub.code).toBe(0);
    const stored = await waitFor(async () => {
      const d = (await t.request('GET', `/api/v1/devices/${device.id}`, { token: t.adminToken })).json<{
        state: { firmware: string } | null;
      }>();
      return d.state;
    }, 'state stored');
    expect(stored.firmware).toBe('2.0.1-bản-thử');
  });

  it('is refused at CONNECT with a wrong password', async () => {
    const args = [
      '-h',
      '127.0.0.1',
      '-p',
      port,
      '-V',
      'mqttv311',
      '-i',
      device.id,
      '-u',
      device.id,
      '-P',
      'wrong',
    ];
    const pub = await run('mosquitto_pub', [...args, '-t', topics.state(device.id), '-m', '{}']).done;
    expect(pub.code).not.toBe(0);
    expect(pub.stderr.toLowerCase()).toMatch(/bad user name or password|not authorised|refused/);
  });

  it('is denied a subscription to another device’s commands', async () => {
    const sub = await run('mosquitto_sub', [
      ...auth(),
      '-i',
      device.id,
      '-t',
      topics.cmd('dev_someoneelse0000000'),
      '-q',
      '1',
      '-W',
      '3',
    ]).done;
    // mosquitto_sub reports the SUBACK failure (0x80) on stderr and gives up.
    expect(sub.stderr).toMatch(/all subscription requests were denied/i);
  });

  it('drops malformed payloads sent by a third-party client and goes on serving the device', async () => {
    for (const [channel, payload] of [
      ['ack', 'not json'],
      ['ack', '{"id":'],
      ['state', '[]'],
      ['state', '{"firmware":"9.9.9","volume":500,"playing":null}'],
    ] as const) {
      const pub = await publish(topics[channel](device.id), payload);
      expect(pub.code).toBe(0);
    }
    // A valid state sent after them is stored: the server read past the bad ones without storing any of
    // them (the out-of-range volume would otherwise have been stored first) and without dying.
    const valid = JSON.stringify({ firmware: '3.1.0-sau-lỗi', volume: 40, playing: null });
    expect((await publish(topics.state(device.id), valid)).code).toBe(0);
    const stored = await waitFor(async () => {
      const d = (await t.request('GET', `/api/v1/devices/${device.id}`, { token: t.adminToken })).json<{
        state: { firmware: string; volume: number } | null;
      }>();
      return d.state?.firmware === '3.1.0-sau-lỗi' ? d.state : null;
    }, 'the valid state stored');
    expect(stored.volume).toBe(40);
    const malformed = t.query("SELECT 1 FROM devices WHERE firmware = '9.9.9' OR volume = 500");
    expect(malformed).toEqual([]);
  });
});
