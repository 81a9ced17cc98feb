/**
 * The HTTP port's limits over real sockets (docs/broker.md): it carries the API and MQTT over WebSocket at
 * /mqtt, so it shares the per-address connection cap with the MQTT TCP port, and it closes sockets that
 * send no request headers in time, but never an upgraded WebSocket. Flooding hosts use 127.0.0.2 as their
 * local address (Linux routes all of 127/8 to lo) so the server sees them as another host.
 */
import http from 'node:http';
import type net from 'node:net';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { topics } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { connectDevice, end } from './support/mqtt.js';
import { rawSocket, socketClosed } from './support/sockets.js';

const FLOODER = '127.0.0.2';

let t: TestApp | undefined;
const clients: MqttClient[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  await end(...clients.splice(0));
  for (const socket of sockets.splice(0)) socket.destroy();
  await t?.close();
  t = undefined;
});

async function start(env: Record<string, string>) {
  t = await createTestApp({ listen: true, env });
  const tree = await createAreaTree(t);
  const address = t.app.server.address();
  if (!address || typeof address !== 'object') throw new Error('not listening');
  return { t, httpPort: address.port, mqttPort: t.app.broker.port, hamlet: tree.hamletA.id };
}

/** GET over a connection of its own (no pooling), from `localAddress`. */
function get(port: number, path: string, localAddress = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, localAddress, agent: false }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('error', reject);
  });
}

async function refusedCount(test: TestApp, reason: string): Promise<number> {
  const text = await test.app.metrics.render();
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`loa_mqtt_connections_refused_total{reason="${reason}"}`));
  return Number(line?.split(' ').pop() ?? NaN);
}

describe('HTTP port limits', () => {
  it('caps idle sockets per address; another address still gets /healthz and connects over WebSocket', async () => {
    const CAP = 5;
    // Long timeouts: only the cap may close a socket here.
    const { t, httpPort, mqttPort, hamlet } = await start({
      MAX_CONNECTIONS_PER_ADDRESS: String(CAP),
      HTTP_HEADERS_TIMEOUT_S: '120',
      MQTT_CONNECT_TIMEOUT_S: '120',
    });
    const device = await t.createDevice(hamlet);
    for (let i = 0; i < CAP; i++) await rawSocket(httpPort, FLOODER, sockets);

    // Every further socket from that address is closed at once, on either port: one counter for both.
    for (let i = 0; i < 10; i++) {
      const socket = await rawSocket(httpPort, FLOODER, sockets).catch(() => undefined);
      if (socket) await socketClosed(socket);
    }
    const mqtt = await rawSocket(mqttPort, FLOODER, sockets).catch(() => undefined);
    if (mqtt) await socketClosed(mqtt);
    expect(await refusedCount(t, 'connections_per_address')).toBe(11);

    expect(await get(httpPort, '/healthz')).toBe(200);
    const client = await connectDevice(`ws://127.0.0.1:${httpPort}/mqtt`, device.credentials);
    clients.push(client);
    await client.subscribeAsync(topics.cmd(device.id), { qos: 1 });
    expect(t.app.broker.isReady(device.id)).toBe(true);
  });

  it('counts a WebSocket MQTT connection once, as the HTTP socket it is', async () => {
    const { t, httpPort, hamlet } = await start({ MAX_CONNECTIONS_PER_ADDRESS: '1' });
    const device = await t.createDevice(hamlet);
    const client = await connectDevice(`ws://127.0.0.1:${httpPort}/mqtt`, device.credentials);
    clients.push(client);
    expect(t.app.broker.isOnline(device.id)).toBe(true);
    // Its one slot is taken: a second socket from the address is refused.
    const second = await rawSocket(httpPort, '127.0.0.1', sockets).catch(() => undefined);
    if (second) await socketClosed(second);
    expect(await refusedCount(t, 'connections_per_address')).toBe(1);
  });

  it('closes a socket that sends no request headers in time, but not an open WebSocket', async () => {
    const { t, httpPort, hamlet } = await start({ HTTP_HEADERS_TIMEOUT_S: '1' });
    const device = await t.createDevice(hamlet);
    // Opened first: if the timeout reached upgraded sockets, this one would be cut no later than the idle one.
    const client = await connectDevice(`ws://127.0.0.1:${httpPort}/mqtt`, device.credentials, {
      keepalive: 120,
    });
    clients.push(client);

    const idle = await rawSocket(httpPort, '127.0.0.1', sockets);
    await socketClosed(idle);

    // A round trip over the WebSocket after the idle socket was closed: it is still served.
    await client.subscribeAsync(topics.cmd(device.id), { qos: 1 });
    const received = new Promise<string>((resolve) =>
      client.once('message', (_topic, payload) => resolve(payload.toString())),
    );
    const res = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: { type: 'ping', targets: { deviceIds: [device.id] } },
    });
    expect([201, 202]).toContain(res.statusCode);
    expect(JSON.parse(await received)).toMatchObject({ id: res.json<{ id: string }>().id, type: 'ping' });
    expect(client.connected).toBe(true);
  });
});

describe('MAX_CONNECTIONS_PER_ADDRESS', () => {
  it('is read under its former name MQTT_MAX_CONNECTIONS_PER_ADDRESS too; the new name wins', () => {
    expect(loadConfig({}).mqtt.maxConnectionsPerAddress).toBe(200);
    expect(loadConfig({ MQTT_MAX_CONNECTIONS_PER_ADDRESS: '0' }).mqtt.maxConnectionsPerAddress).toBe(0);
    expect(
      loadConfig({ MAX_CONNECTIONS_PER_ADDRESS: '7', MQTT_MAX_CONNECTIONS_PER_ADDRESS: '0' }).mqtt
        .maxConnectionsPerAddress,
    ).toBe(7);
    expect(loadConfig({}).http.headersTimeoutMs).toBe(10_000);
  });
});
