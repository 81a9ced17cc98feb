/**
 * TLS with real clients (docs/operations.md, "TLS"): MQTT.js over MQTT/TLS and over WSS, Debian's
 * mosquitto_sub with --cafile, curl with --cacert. A client that trusts another CA is refused, failed
 * handshakes neither crash the server nor use up the per-address connection cap, and MQTT_PORT=off leaves
 * devices only the TLS listeners.
 */
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import type { MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { topics } from '../src/protocol/index.js';
import type { TestApp } from './support/app.js';
import { createAreaTree } from './support/app.js';
import { curlClient, mosquittoClients } from './support/mosquitto.js';
import { connectDevice, end } from './support/mqtt.js';
import { captureLog } from './support/log.js';
import { run } from './support/processes.js';
import { createTlsApp, devCertificates, fileFingerprint } from './support/tls.js';
import { waitFor } from './support/wait.js';

type Certs = Awaited<ReturnType<typeof devCertificates>>;
type Device = { id: string; credentials: { clientId: string; username: string; password: string } };

const mosquitto = mosquittoClients();
if (mosquitto.skip) console.warn(mosquitto.message);
const itWithMosquitto = mosquitto.skip ? it.skip : it;
const curl = curlClient();
if (curl.skip) console.warn(curl.message);
const itWithCurl = curl.skip ? it.skip : it;

let certs: Certs;
/** Another CA with a server certificate of its own: what a client configured for another server trusts. */
let otherCerts: Certs;

beforeAll(async () => {
  [certs, otherCerts] = await Promise.all([devCertificates(), devCertificates()]);
});
afterAll(() => {
  for (const dir of [certs.dir, otherCerts.dir]) fs.rmSync(dir, { recursive: true, force: true });
});

const clients: MqttClient[] = [];
let t: (TestApp & { httpsPort: number; mqttsPort: number }) | undefined;
afterEach(async () => {
  await end(...clients.splice(0));
  await t?.close();
  t = undefined;
});

async function start(env: Record<string, string> = {}, log?: ReturnType<typeof captureLog>) {
  t = await createTlsApp(certs, { env, ...(log ? { log: log.stream } : {}) });
  const tree = await createAreaTree(t);
  const device: Device = await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông – chợ');
  return { t, device };
}

/** Sends a volume command to the device through the API and returns its id. */
async function sendVolume(app: TestApp, deviceId: string, level: number): Promise<string> {
  const res = await app.request('POST', '/api/v1/commands', {
    token: app.adminToken,
    body: { type: 'volume', params: { level }, targets: { deviceIds: [deviceId] } },
  });
  expect(res.statusCode).toBe(202);
  return res.json<{ id: string }>().id;
}

/** Subscribes a connected client to its cmd topic and resolves with the next command it receives. */
async function nextCommand(app: TestApp, client: MqttClient, deviceId: string) {
  const received = new Promise<Record<string, unknown>>((resolve) =>
    client.once('message', (_topic, payload) => resolve(JSON.parse(payload.toString('utf8')) as never)),
  );
  if (!app.app.broker.isReady(deviceId)) {
    await client.subscribeAsync(topics.cmd(deviceId), { qos: 1 });
    await waitFor(() => app.app.broker.isReady(deviceId), 'device subscribed');
  }
  return received;
}

/** Sends raw bytes (a plain MQTT CONNECT, say) and resolves when the server has closed the socket. */
function sendAndWaitForClose(port: number, bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(bytes));
    socket.on('error', () => {});
    socket.resume();
    socket.once('close', () => resolve());
  });
}

/** GET over HTTPS trusting `ca`; resolves with the status, rejects when the handshake fails. */
function httpsGet(port: number, path: string, ca: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.get(
      { host: '127.0.0.1', servername: 'localhost', port, path, ca, agent: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
  });
}

// A plain MQTT 3.1.1 CONNECT (client id "x", keepalive 30 s): what a device that forgot TLS sends.
const PLAIN_CONNECT = Buffer.from([
  0x10, 0x0d, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x1e, 0x00, 0x01, 0x78,
]);

describe('TLS listeners', () => {
  it('MQTT.js connects over MQTT/TLS trusting the CA and receives a command', async () => {
    const { t, device } = await start();
    const client = await connectDevice(`mqtts://localhost:${t.mqttsPort}`, device.credentials, {
      ca: certs.ca,
    });
    clients.push(client);
    const command = nextCommand(t, client, device.id);
    const id = await sendVolume(t, device.id, 37);
    expect(await command).toMatchObject({ id, type: 'volume', params: { level: 37 } });
    // The server serves the certificate of TLS_CERT_FILE.
    const socket = client.stream as unknown as { getPeerCertificate(): { fingerprint256: string } };
    expect(socket.getPeerCertificate().fingerprint256).toBe(fileFingerprint(certs.certFile));
  });

  it('MQTT.js connects over WSS at /mqtt on the HTTPS port and receives a command', async () => {
    const { t, device } = await start();
    const client = await connectDevice(`wss://localhost:${t.httpsPort}/mqtt`, device.credentials, {
      ca: certs.ca,
    });
    clients.push(client);
    const command = nextCommand(t, client, device.id);
    const id = await sendVolume(t, device.id, 64);
    expect(await command).toMatchObject({ id, type: 'volume', params: { level: 64 } });
  });

  it('refuses MQTT.js trusting another CA, over MQTT/TLS and WSS, and stays up', async () => {
    const { t, device } = await start();
    await expect(
      connectDevice(`mqtts://localhost:${t.mqttsPort}`, device.credentials, { ca: otherCerts.ca }),
    ).rejects.toThrow(/certificate/i);
    await expect(
      connectDevice(`wss://localhost:${t.httpsPort}/mqtt`, device.credentials, { ca: otherCerts.ca }),
    ).rejects.toThrow(/certificate/i);
    // The refused handshakes took nothing down: a client trusting the right CA gets in.
    const client = await connectDevice(`mqtts://localhost:${t.mqttsPort}`, device.credentials, {
      ca: certs.ca,
    });
    clients.push(client);
    expect(t.app.broker.isOnline(device.id)).toBe(true);
  });

  it('gives back the per-address connection count of every failed handshake', async () => {
    // A cap of 3 open sockets per address, over every port together.
    const { t, device } = await start({ MAX_CONNECTIONS_PER_ADDRESS: '3' });
    for (let i = 0; i < 4; i += 1) {
      // A device that forgot TLS, and one that trusts another CA; each failure is awaited to its end.
      await sendAndWaitForClose(t.mqttsPort, PLAIN_CONNECT);
      await expect(
        connectDevice(`mqtts://127.0.0.1:${t.mqttsPort}`, device.credentials, { ca: otherCerts.ca }),
      ).rejects.toThrow();
      await expect(httpsGet(t.httpsPort, '/healthz', otherCerts.ca)).rejects.toThrow(/certificate/i);
    }
    // Twelve failed handshakes on a cap of three: had one leaked its count, these would be refused for good.
    // The server sees each close a moment after the client does, hence the retries.
    const client = await waitFor(
      () => connectDevice(`mqtts://127.0.0.1:${t.mqttsPort}`, device.credentials, { ca: certs.ca }),
      'a device trusting the CA connects',
    );
    clients.push(client);
    expect(await waitFor(() => httpsGet(t.httpsPort, '/healthz', certs.ca), 'HTTPS answers')).toBe(200);
  });

  it(
    'closes sockets that never start their handshake, on both TLS ports, within the configured timeouts',
    { timeout: 10_000 },
    async () => {
      // The test's timeout (10 s) is far below Node's default handshake timeout (120 s): without the
      // settings this fails.
      const { t } = await start({ HTTP_HEADERS_TIMEOUT_S: '1', MQTT_CONNECT_TIMEOUT_S: '1' });
      const silent = (port: number) =>
        new Promise<void>((resolve) => {
          const socket = net.connect(port, '127.0.0.1');
          socket.on('error', () => {});
          socket.once('close', () => resolve());
        });
      await Promise.all([silent(t.httpsPort), silent(t.mqttsPort)]);
    },
  );

  it(
    'shuts down without waiting for sockets still in their handshake, on both TLS ports',
    { timeout: 20_000 },
    async () => {
      // Handshake timeouts far beyond the test's: only the shutdown itself can end these sockets. Before, it
      // waited for them (a scanner's half-open connection held a restart past SHUTDOWN_TIMEOUT_S).
      const { t } = await start({ HTTP_HEADERS_TIMEOUT_S: '300', MQTT_CONNECT_TIMEOUT_S: '120' });
      const mqttsServer = (t.app.broker as unknown as { tlsServer: net.Server }).tlsServer;
      const silent = [t.httpsPort, t.mqttsPort].map((port) => {
        const socket = net.connect(port, '127.0.0.1');
        socket.on('error', () => {});
        return { socket, closed: new Promise<void>((resolve) => socket.once('close', () => resolve())) };
      });
      const count = (server: net.Server) =>
        new Promise<number>((resolve, reject) =>
          server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
        );
      // Both accepted by the server (not merely queued), so that the shutdown meets them.
      await waitFor(
        async () => (await count(t.app.server)) === 1 && (await count(mqttsServer)) === 1,
        'both sockets accepted',
      );
      await t.close();
      await Promise.all(silent.map((s) => s.closed));
    },
  );

  itWithCurl('serves the API over HTTPS to curl --cacert, authenticated, Vietnamese intact', async () => {
    if (curl.missing.length > 0) throw new Error(curl.message);
    const { t } = await start();
    const base = `https://localhost:${t.httpsPort}`;
    const health = await run('curl', ['-sS', '--fail', '--cacert', certs.caFile, `${base}/healthz`]).done;
    expect(health.stderr).toBe('');
    expect(health.code).toBe(0);
    expect(JSON.parse(health.stdout)).toEqual({ status: 'ok' });

    const areas = await run('curl', [
      '-sS',
      '--fail',
      '--cacert',
      certs.caFile,
      '-H',
      `Authorization: Bearer ${t.adminToken}`,
      `${base}/api/v1/areas`,
    ]).done;
    expect(areas.code).toBe(0);
    expect(areas.stdout).toContain('Thôn Đông');

    // curl trusting another CA is refused (exit 60: the peer certificate cannot be authenticated).
    const refused = await run('curl', ['-sS', '--cacert', otherCerts.caFile, `${base}/healthz`]).done;
    expect(refused.code).toBe(60);

    // /readyz names the certificate in use, /metrics its expiry.
    const ready = (await t.request('GET', '/readyz')).json<{
      tls: { expiresAt: string; fingerprint: string };
    }>();
    expect(ready.tls.fingerprint).toBe(fileFingerprint(certs.certFile));
    expect(ready.tls.expiresAt).toBe(t.app.tls?.expiresAt.toISOString());
  });

  it('exports the certificate expiry in /metrics', async () => {
    const { t } = await start({ METRICS_TOKEN: 'metrics-token-for-tls-test' });
    const res = await t.app.inject({
      method: 'GET',
      url: '/metrics',
      headers: { authorization: 'Bearer metrics-token-for-tls-test' },
    });
    const line = res.body
      .split('\n')
      .find((l) => l.startsWith('loa_tls_certificate_expiry_timestamp_seconds '));
    expect(Number(line?.split(' ')[1])).toBe(t.app.tls!.expiresAt.getTime() / 1000);
  });

  itWithMosquitto('mosquitto_sub --cafile receives a command over MQTT/TLS as the device', async () => {
    if (mosquitto.missing.length > 0) throw new Error(mosquitto.message);
    const { t, device } = await start();
    let received = '';
    const sub = run(
      'mosquitto_sub',
      [
        ...['-h', 'localhost', '-p', String(t.mqttsPort), '--cafile', certs.caFile, '-V', 'mqttv311'],
        ...['-i', device.id, '-u', device.id, '-P', device.credentials.password],
        ...['-t', topics.cmd(device.id), '-q', '1', '-C', '1'],
      ],
      { onStdout: (chunk) => (received += chunk) },
    );
    await waitFor(() => t.app.broker.isReady(device.id), 'mosquitto_sub subscribed');
    const id = await sendVolume(t, device.id, 51);
    const result = await sub.done;
    expect(result.code).toBe(0);
    expect(JSON.parse(received)).toMatchObject({ id, type: 'volume', params: { level: 51 } });
  });

  itWithMosquitto('mosquitto_sub trusting another CA is refused (non-zero exit)', async () => {
    if (mosquitto.missing.length > 0) throw new Error(mosquitto.message);
    const { t, device } = await start();
    const result = await run('mosquitto_sub', [
      ...['-h', 'localhost', '-p', String(t.mqttsPort), '--cafile', otherCerts.caFile, '-V', 'mqttv311'],
      ...['-i', device.id, '-u', device.id, '-P', device.credentials.password],
      ...['-t', topics.cmd(device.id), '-C', '1'],
    ]).done;
    expect(result.code).not.toBe(0);
    expect(result.code).not.toBeNull(); // exited on its own, not killed by the timeout
    expect(t.app.broker.isOnline(device.id)).toBe(false);
  });

  it('with MQTT_PORT=off, devices have only the TLS listeners, and /readyz is ready', async () => {
    const log = captureLog();
    const { t, device } = await start({ MQTT_PORT: 'off' }, log);
    expect(() => t.app.broker.port).toThrow(/off/);
    expect(log.lines.find((l) => l.msg === 'MQTT broker listening')).toMatchObject({
      port: 'off',
      tlsPort: t.mqttsPort,
    });
    expect((await t.request('GET', '/readyz')).statusCode).toBe(200);
    const client = await connectDevice(`mqtts://localhost:${t.mqttsPort}`, device.credentials, {
      ca: certs.ca,
    });
    clients.push(client);
    expect(t.app.broker.isOnline(device.id)).toBe(true);
  });

  it('warns at start-up when PUBLIC_URL is http:// while the server speaks HTTPS only', async () => {
    const log = captureLog();
    const first = await start({ PUBLIC_URL: 'http://loa.example.vn:3000' }, log);
    expect(log.lines.find((l) => String(l.msg).startsWith('PUBLIC_URL is http://'))).toMatchObject({
      level: 40,
      publicUrl: 'http://loa.example.vn:3000',
    });
    const quiet = captureLog();
    await first.t.close();
    await start({ PUBLIC_URL: 'https://loa.example.vn:3000' }, quiet);
    expect(quiet.lines.some((l) => String(l.msg).startsWith('PUBLIC_URL is http://'))).toBe(false);
  });

  itWithCurl(
    'builds device download links with https when PUBLIC_URL is unset, and serves them over HTTPS',
    async () => {
      if (curl.missing.length > 0) throw new Error(curl.message);
      const { t } = await start();
      const sha256 = 'ab'.repeat(32);
      const url = t.app.services.media.links.urlFor(sha256, new Date(Date.now() + 600_000));
      expect(url.startsWith(`https://127.0.0.1:${t.httpsPort}/downloads/${sha256}.mp3?`)).toBe(true);
      // Over TLS to the download route, which checks the signature (altered here: 403, nothing served).
      const altered = url.replace(/signature=[\w-]/, (m) =>
        m.endsWith('A') ? `${m.slice(0, -1)}B` : `${m.slice(0, -1)}A`,
      );
      const res = await run('curl', [
        '-sS',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        '--cacert',
        certs.caFile,
        altered,
      ]).done;
      expect(res.stderr).toBe('');
      expect(res.stdout).toBe('403');
    },
  );
});
