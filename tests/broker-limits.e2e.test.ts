/**
 * The broker's limits over real sockets (docs/broker.md): packet size (and the smaller one of CONNECT),
 * connect rate per address and overall, connections per address, the CONNECT timeout, CONNACK codes of
 * MQTT 3.1.1 only, clean sessions, one re-send of pending commands per subscription, UNSUBSCRIBE, and a
 * misbehaving device that must not flood the log. Flooding hosts use 127.0.0.2/127.0.0.3 as their local
 * address (Linux routes all of 127/8 to lo) so the broker sees them as other hosts.
 */
import net from 'node:net';
import { Writable } from 'node:stream';
import { MqttClient, type IClientOptions } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_CONNECT_BYTES, MAX_STRIKES_PER_CONNECTION, PacketSizeGuard } from '../src/plugins/broker.js';
import { topics } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { metricValue } from './support/faults.js';
import { closed, connectDevice, end } from './support/mqtt.js';
import { rawSocket, socketClosed } from './support/sockets.js';
import { waitFor } from './support/wait.js';

const FLOODER = '127.0.0.2';
const OTHER_FLOODER = '127.0.0.3';

let t: TestApp | undefined;
const clients: MqttClient[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  await end(...clients.splice(0));
  for (const socket of sockets.splice(0)) socket.destroy();
  await t?.close();
  t = undefined;
});

async function start(env: Record<string, string> = {}, clock?: ManualClock) {
  t = await createTestApp({ listen: true, env, ...(clock ? { clock } : {}) });
  const tree = await createAreaTree(t);
  return { t, port: t.app.broker.port, hamlet: tree.hamletA.id };
}

type Outcome = { connected: true; sessionPresent: boolean } | { connected: false; code: number | 'closed' };

/**
 * One MQTT.js connection attempt from `localAddress` (MQTT.js has no such option; its stream builder
 * does): connected with CONNACK 0, refused with a CONNACK code, or closed without any CONNACK.
 */
function attempt(
  port: number,
  localAddress: string,
  options: IClientOptions,
): Promise<{ outcome: Outcome; client: MqttClient }> {
  const client = new MqttClient(() => net.connect({ host: '127.0.0.1', port, localAddress }), {
    protocolVersion: 4,
    protocol: 'mqtt',
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    keepalive: 30,
    ...options,
  });
  clients.push(client);
  return new Promise((resolve) => {
    client.once('connect', (connack) =>
      resolve({ client, outcome: { connected: true, sessionPresent: connack.sessionPresent } }),
    );
    client.once('error', (err) => {
      const code = (err as { code?: unknown }).code;
      resolve({ client, outcome: { connected: false, code: typeof code === 'number' ? code : 'closed' } });
    });
    client.once('close', () => resolve({ client, outcome: { connected: false, code: 'closed' } }));
  });
}

const metric = (test: Pick<TestApp, 'app'>, series: string) => metricValue(test.app, series);

const refusedCount = (test: TestApp, reason: string) =>
  metric(test, `loa_mqtt_connections_refused_total{reason="${reason}"}`);

interface LogLine {
  level: number;
  msg: string;
  deviceId?: string;
  suppressed?: number;
}
const WARN = 40;

/**
 * A listening test app whose log lines are kept for the test to read, with one device in one area; the
 * clock is the test's.
 */
async function startLogged(clock: ManualClock) {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n'))
        if (line) lines.push(JSON.parse(line) as LogLine);
      callback();
    },
  });
  t = await createTestApp({ clock, listen: true, logger: { level: 'info', stream } });
  const { app } = t;
  const area = await t.createArea({ name: 'Tỉnh Quảng Trị', level: 'province' });
  const device = await t.createDevice(area.id);
  const client = await connectDevice(`mqtt://127.0.0.1:${app.broker.port}`, device.credentials);
  clients.push(client);
  const warnings = (msg: string) => lines.filter((l) => l.level === WARN && l.msg.startsWith(msg));
  return { app, device, client, warnings };
}

/** A fixed header: type/flags byte, then the remaining length as MQTT's variable-length integer. */
function fixedHeader(typeByte: number, remainingLength: number): Buffer {
  const bytes = [typeByte];
  let value = remainingLength;
  do {
    let byte = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) byte |= 0x80;
    bytes.push(byte);
  } while (value > 0);
  return Buffer.from(bytes);
}

describe('PacketSizeGuard', () => {
  it('follows packet boundaries across chunks and refuses the first packet over the limit', () => {
    const guard = new PacketSizeGuard(1_000);
    const small = Buffer.concat([fixedHeader(0x30, 600), Buffer.alloc(600)]);
    const pingreq = fixedHeader(0xc0, 0);
    const stream = Buffer.concat([small, pingreq, small]);
    // Cut anywhere, including inside a length: the same verdict.
    for (let i = 0; i < stream.length; i += 7) expect(guard.accept(stream.subarray(i, i + 7))).toBe(true);
    expect(guard.accept(fixedHeader(0x30, 1_000))).toBe(true);
    expect(guard.accept(Buffer.alloc(1_000))).toBe(true);
    // 250 MB declared: refused on the length bytes alone, before any body arrives.
    expect(guard.accept(fixedHeader(0x10, 250 * 1024 * 1024))).toBe(false);
    expect(guard.accept(pingreq)).toBe(false);
  });

  it("holds a connection's first packet (its CONNECT) to the smaller limit, later ones to the full one", () => {
    const first = new PacketSizeGuard(256 * 1024, MAX_CONNECT_BYTES);
    expect(first.accept(fixedHeader(0x10, MAX_CONNECT_BYTES))).toBe(true);
    expect(first.accept(Buffer.alloc(MAX_CONNECT_BYTES))).toBe(true);
    expect(first.accept(fixedHeader(0x30, 100 * 1024))).toBe(true);

    const tooLarge = new PacketSizeGuard(256 * 1024, MAX_CONNECT_BYTES);
    expect(tooLarge.accept(fixedHeader(0x10, MAX_CONNECT_BYTES + 1))).toBe(false);
  });

  it('refuses a remaining length of more than four bytes (3.1.1 §2.2.3)', () => {
    const guard = new PacketSizeGuard(Number.MAX_SAFE_INTEGER);
    expect(guard.accept(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80]))).toBe(false);
  });
});

describe('broker limits', () => {
  it('closes a connection whose CONNECT declares 250 MB, and a device still connects', async () => {
    // A long CONNECT timeout, so that only the size check can close the socket.
    const { t, port, hamlet } = await start({ MQTT_CONNECT_TIMEOUT_S: '120', MQTT_MAX_PACKET_KB: '256' });
    const device = await t.createDevice(hamlet);
    const socket = await rawSocket(port, '127.0.0.1', sockets);
    const whenClosed = socketClosed(socket);
    socket.write(Buffer.concat([fixedHeader(0x10, 250 * 1024 * 1024), Buffer.alloc(64 * 1024, 0x61)]));
    await whenClosed;
    expect(await refusedCount(t, 'packet_too_large')).toBe(1);

    const ok = await attempt(port, '127.0.0.1', device.credentials);
    expect(ok.outcome).toEqual({ connected: true, sessionPresent: false });
  });

  it('closes a connection whose CONNECT is 100 KB (under the packet limit), and a device still connects', async () => {
    const { t, port, hamlet } = await start({ MQTT_CONNECT_TIMEOUT_S: '120', MQTT_MAX_PACKET_KB: '256' });
    const device = await t.createDevice(hamlet);
    const socket = await rawSocket(port, '127.0.0.1', sockets);
    const whenClosed = socketClosed(socket);
    // Before authentication: the whole 100 KB would otherwise be buffered for the parser.
    socket.write(Buffer.concat([fixedHeader(0x10, 100 * 1024), Buffer.alloc(100 * 1024, 0x61)]));
    await whenClosed;
    expect(await refusedCount(t, 'packet_too_large')).toBe(1);

    const ok = await attempt(port, '127.0.0.1', device.credentials);
    expect(ok.outcome).toEqual({ connected: true, sessionPresent: false });
  });

  it('closes a device connection that publishes a packet over the limit; smaller ones pass', async () => {
    const { t, port, hamlet } = await start({ MQTT_MAX_PACKET_KB: '4' });
    const device = await t.createDevice(hamlet);
    const { client, outcome } = await attempt(port, '127.0.0.1', device.credentials);
    expect(outcome.connected).toBe(true);
    const telemetry = JSON.stringify({ at: new Date().toISOString(), uptimeS: 1, note: 'x'.repeat(3_000) });
    await client.publishAsync(topics.telemetry(device.id), telemetry, { qos: 1 });
    expect(client.connected).toBe(true);

    const whenClosed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    client.publish(topics.log(device.id), 'x'.repeat(5 * 1024), { qos: 1 });
    await whenClosed;
    expect(await refusedCount(t, 'packet_too_large')).toBe(1);
  });

  it('refuses a flooding address by its own cap with CONNACK 3, while a device elsewhere connects', async () => {
    // A frozen clock: every connect below falls in one rate window, whatever the machine's speed.
    const clock = new ManualClock();
    const { t, port, hamlet } = await start(
      { MQTT_MAX_CONNECTS_PER_ADDRESS_PER_S: '5', MQTT_MAX_CONNECTS_PER_S: '12' },
      clock,
    );
    const device = await t.createDevice(hamlet);
    const bad = { clientId: 'dev_flood', username: 'dev_flood', password: 'guess' };

    const flood = [];
    for (let i = 0; i < 40; i++) flood.push((await attempt(port, FLOODER, bad)).outcome);
    // The first five reach authentication (bad credentials: 4); the rest are turned away first.
    expect(flood.slice(0, 5)).toEqual(Array(5).fill({ connected: false, code: 4 }));
    expect(flood.slice(5)).toEqual(Array(35).fill({ connected: false, code: 3 }));

    const ok = await attempt(port, '127.0.0.1', device.credentials);
    expect(ok.outcome).toEqual({ connected: true, sessionPresent: false });

    // The global cap still holds: 5 + 1 charged so far, 6 more from another host fill it to 12.
    const other = [];
    for (let i = 0; i < 5; i++) other.push((await attempt(port, OTHER_FLOODER, bad)).outcome);
    expect(other).toEqual(Array(5).fill({ connected: false, code: 4 }));
    const late = await t.createDevice(hamlet);
    expect((await attempt(port, '127.0.0.1', late.credentials)).outcome.connected).toBe(true);
    expect((await attempt(port, '127.0.0.1', late.credentials)).outcome).toEqual({
      connected: false,
      code: 3,
    });
    expect(await refusedCount(t, 'connect_rate_address')).toBe(35);
    expect(await refusedCount(t, 'connect_rate_global')).toBe(1);

    // A new window lets everyone in again.
    clock.advance(1_000);
    expect((await attempt(port, '127.0.0.1', late.credentials)).outcome.connected).toBe(true);
  });

  it('caps open connections per address; other addresses are unaffected', async () => {
    const { t, port, hamlet } = await start({
      MQTT_MAX_CONNECTIONS_PER_ADDRESS: '3',
      MQTT_CONNECT_TIMEOUT_S: '120',
    });
    const device = await t.createDevice(hamlet);
    const idle = [];
    for (let i = 0; i < 3; i++) idle.push(await rawSocket(port, FLOODER, sockets));

    // A fourth connection from that address, even a real device's, is closed before any CONNACK.
    expect((await attempt(port, FLOODER, device.credentials)).outcome).toEqual({
      connected: false,
      code: 'closed',
    });
    expect(await refusedCount(t, 'connections_per_address')).toBe(1);
    const elsewhere = await attempt(port, '127.0.0.1', device.credentials);
    expect(elsewhere.outcome.connected).toBe(true);
    await elsewhere.client.endAsync();

    // Freeing a slot lets the address connect again (once the server has seen the close).
    idle[0]!.destroy();
    await waitFor(
      async () => (await attempt(port, FLOODER, device.credentials)).outcome.connected,
      'a connection from the address once a slot is free',
    );
  });

  it(
    'closes a connection that sends no CONNECT within MQTT_CONNECT_TIMEOUT_S',
    { timeout: 10_000 },
    async () => {
      // The test's own timeout (10 s) is below Aedes' former fixed 15 s: without the setting it fails.
      const { port } = await start({ MQTT_CONNECT_TIMEOUT_S: '1' });
      const socket = await rawSocket(port, '127.0.0.1', sockets);
      await socketClosed(socket);
    },
  );

  it('refuses keepalive 600 and 0 with CONNACK 5 (3.1.1 has no code 6)', async () => {
    const { t, port, hamlet } = await start();
    const device = await t.createDevice(hamlet);
    expect((await attempt(port, '127.0.0.1', { ...device.credentials, keepalive: 600 })).outcome).toEqual({
      connected: false,
      code: 5,
    });
    expect((await attempt(port, '127.0.0.1', { ...device.credentials, keepalive: 0 })).outcome).toEqual({
      connected: false,
      code: 5,
    });
    expect(await refusedCount(t, 'keepalive')).toBe(2);
    const ok = await attempt(port, '127.0.0.1', { ...device.credentials, keepalive: 120 });
    expect(ok.outcome.connected).toBe(true);
  });

  it('serves cleanSession = 0 as a clean session: no session present, nothing queued while offline', async () => {
    const { t, port, hamlet } = await start();
    const device = await t.createDevice(hamlet);
    const cmd = topics.cmd(device.id);
    const persistent = { ...device.credentials, clean: false };

    const first = await attempt(port, '127.0.0.1', persistent);
    expect(first.outcome).toEqual({ connected: true, sessionPresent: false });
    await first.client.subscribeAsync(cmd, { qos: 1 });
    await first.client.endAsync();
    await waitFor(() => !t.app.broker.isOnline(device.id), 'device offline');

    // Published while the device is away: a persistent session would queue it for the device.
    await new Promise<void>((resolve, reject) =>
      t.app.broker.aedes.publish(
        {
          cmd: 'publish',
          topic: cmd,
          payload: Buffer.from('while-offline'),
          qos: 1,
          retain: false,
          dup: false,
        },
        (err) => (err ? reject(err) : resolve()),
      ),
    );

    const second = await attempt(port, '127.0.0.1', persistent);
    expect(second.outcome).toEqual({ connected: true, sessionPresent: false });
    const received: string[] = [];
    second.client.on('message', (_topic, payload) => received.push(payload.toString()));
    await second.client.subscribeAsync(cmd, { qos: 1 });
    t.app.broker.aedes.publish(
      { cmd: 'publish', topic: cmd, payload: Buffer.from('marker'), qos: 1, retain: false, dup: false },
      () => undefined,
    );
    // A queued message would have been written right after CONNACK, before the marker.
    await waitFor(() => received.includes('marker'), 'the marker');
    expect(received).toEqual(['marker']);
    // Nor did Aedes keep the subscription for a next session (its typings omit the persistence).
    const { persistence } = t.app.broker.aedes as unknown as {
      persistence: { subscriptionsByClient(client: { id: string }): Promise<unknown[]> };
    };
    await second.client.endAsync();
    await waitFor(() => !t.app.broker.isOnline(device.id), 'device offline again');
    expect(await persistence.subscriptionsByClient({ id: device.id })).toEqual([]);
  });

  it('re-sends pending commands once per connection, however often the device subscribes', async () => {
    const { t, port, hamlet } = await start();
    const device = await t.createDevice(hamlet);
    const PENDING = 3;
    for (let i = 0; i < PENDING; i++) {
      const res = await t.request('POST', '/api/v1/commands', {
        token: t.adminToken,
        body: { type: 'ping', targets: { deviceIds: [device.id] } },
      });
      expect([201, 202]).toContain(res.statusCode);
    }

    const client = await connectDevice(`mqtt://127.0.0.1:${port}`, device.credentials);
    clients.push(client);
    const ids: string[] = [];
    client.on('message', (_topic, payload) =>
      ids.push((JSON.parse(payload.toString()) as { id: string }).id),
    );
    for (let i = 0; i < 50; i++) await client.subscribeAsync(topics.cmd(device.id), { qos: 1 });

    // Every re-send was handed to the connection before the last SUBACK went out; a command sent now
    // arrives after all of them.
    const marker = (
      await t.request('POST', '/api/v1/commands', {
        token: t.adminToken,
        body: { type: 'ping', targets: { deviceIds: [device.id] } },
      })
    ).json<{ id: string }>().id;
    await waitFor(() => ids.includes(marker), 'the command sent after the subscriptions');
    expect(ids.filter((id) => id !== marker)).toHaveLength(PENDING);
    expect(new Set(ids).size).toBe(PENDING + 1);
  });

  it('makes an unsubscribed device not ready; its next SUBSCRIBE re-sends what is pending, once', async () => {
    const { t, port, hamlet } = await start();
    const device = await t.createDevice(hamlet);
    const cmd = topics.cmd(device.id);
    const send = async () => {
      const res = await t.request('POST', '/api/v1/commands', {
        token: t.adminToken,
        body: { type: 'ping', targets: { deviceIds: [device.id] } },
      });
      expect([201, 202]).toContain(res.statusCode);
      return res.json<{ id: string }>().id;
    };
    const status = (commandId: string) =>
      (
        t.query(`SELECT status FROM command_deliveries WHERE command_id = '${commandId}'`)[0] as {
          status: string;
        }
      ).status;

    const client = await connectDevice(`mqtt://127.0.0.1:${port}`, device.credentials);
    clients.push(client);
    const ids: string[] = [];
    client.on('message', (_topic, payload) =>
      ids.push((JSON.parse(payload.toString()) as { id: string }).id),
    );
    await client.subscribeAsync(cmd, { qos: 1 });
    expect(t.app.broker.isReady(device.id)).toBe(true);

    // Aedes reports the UNSUBSCRIBE in the same turn as it writes UNSUBACK.
    await client.unsubscribeAsync(cmd);
    expect(t.app.broker.isReady(device.id)).toBe(false);
    // Not handed to a connection that would drop it: it waits for the device.
    const whileAway = await send();
    expect(status(whileAway)).toBe('pending');

    for (let i = 0; i < 5; i++) await client.subscribeAsync(cmd, { qos: 1 });
    expect(t.app.broker.isReady(device.id)).toBe(true);
    const marker = await send();
    await waitFor(() => ids.includes(marker), 'the command sent after the subscriptions');
    // Once for the subscription after the UNSUBSCRIBE, not once per SUBSCRIBE.
    expect(ids).toEqual([whileAway, marker]);
  });

  it('logs refused subscriptions once per device and minute, counts them all, and closes the connection at the limit', async () => {
    const clock = new ManualClock();
    const { app, client, warnings } = await startLogged(clock);
    const refused = () => metric({ app }, 'loa_mqtt_subscriptions_refused_total');
    // Resolves on SUBACK, refused or not (subscribeAsync rejects a refusal).
    const subscribe = (topic: string) =>
      new Promise<void>((resolve) => client.subscribe(topic, { qos: 1 }, () => resolve()));

    for (let i = 0; i < 5; i++) await subscribe(`loa/other${i}/cmd`);
    expect(await refused()).toBe(5);
    expect(warnings('subscription refused')).toHaveLength(1);

    clock.advance(60_000);
    await subscribe('#');
    expect(warnings('subscription refused').map((l) => l.suppressed)).toEqual([0, 4]);

    for (let i = 6; i < MAX_STRIKES_PER_CONNECTION - 1; i++) await subscribe('#');
    expect(client.connected).toBe(true);
    const whenClosed = closed(client);
    client.subscribe('#', { qos: 1 }, () => undefined);
    await whenClosed;
    expect(await refused()).toBe(MAX_STRIKES_PER_CONNECTION);
    expect(warnings('subscription refused')).toHaveLength(2);
    expect(warnings('too many refusals on one connection')).toHaveLength(1);
  });

  it('logs malformed payloads once per device and minute, and counts them all', async () => {
    const clock = new ManualClock();
    const { app, device, client, warnings } = await startLogged(clock);
    const malformed = () => metric({ app }, 'loa_mqtt_malformed_payloads_total{channel="telemetry"}');

    for (let i = 0; i < 5; i++)
      await client.publishAsync(topics.telemetry(device.id), 'not json', { qos: 1 });
    // Counted and logged in the same turn: once the count is there, so is every line.
    await waitFor(async () => (await malformed()) === 5, 'five malformed payloads counted');
    expect(warnings('malformed device payload dropped')).toHaveLength(1);

    clock.advance(60_000);
    await client.publishAsync(topics.telemetry(device.id), '{"bad": true}', { qos: 1 });
    await waitFor(async () => (await malformed()) === 6, 'the sixth counted');
    const lines = warnings('malformed device payload dropped');
    expect(lines.map((l) => [l.deviceId, l.suppressed])).toEqual([
      [device.id, 0],
      [device.id, 4],
    ]);
    expect(client.connected).toBe(true);
  });
});
