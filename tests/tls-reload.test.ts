/**
 * Certificate renewal without a restart (docs/operations.md, "TLS"): a new certificate written over the
 * files, or read on SIGHUP, is served to new connections while the devices already connected stay
 * connected and keep receiving commands; a broken file is logged and the certificate in use is kept.
 */
import type { ChildProcess } from 'node:child_process';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { createDevCertificates } from '../src/cli/tls-dev.js';
import { topics } from '../src/protocol/index.js';
import { createAreaTree, type TestApp } from './support/app.js';
import { connectDevice, end } from './support/mqtt.js';
import { captureLog, type LogLine } from './support/log.js';
import { freePort, root, startServer, withTsx } from './support/processes.js';
import {
  createTlsApp,
  devCertificates,
  fileFingerprint,
  servedFingerprint,
  TLS_HOSTS,
} from './support/tls.js';
import { waitFor } from './support/wait.js';

const ERROR = 50;
const REFUSED = 'TLS certificate files cannot be used; keeping the certificate in use';
const RELOADED = 'TLS certificate reloaded; new connections use it, open ones keep theirs';

const dirs: string[] = [];
const clients: MqttClient[] = [];
const children: ChildProcess[] = [];
let t: TestApp | undefined;
afterEach(async () => {
  await end(...clients.splice(0));
  await t?.close();
  t = undefined;
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

async function start() {
  const certs = await devCertificates();
  dirs.push(certs.dir);
  const log = captureLog();
  const app = await createTlsApp(certs, { log: log.stream });
  t = app;
  const tree = await createAreaTree(app);
  const device = await app.createDevice(tree.hamletA.id, 'Loa chợ Đông Hà – cổng chính');
  return { certs, app, device, lines: log.lines };
}

/** A device connected over MQTT/TLS and subscribed to its cmd topic, collecting the commands it gets. */
async function connectSubscribed(
  app: TestApp & { mqttsPort: number },
  device: { id: string; credentials: { clientId: string; username: string; password: string } },
  ca: Buffer,
) {
  const client = await connectDevice(`mqtts://localhost:${app.mqttsPort}`, device.credentials, { ca });
  clients.push(client);
  const received: { id: string; params: unknown }[] = [];
  client.on('message', (_topic, payload) => received.push(JSON.parse(payload.toString('utf8')) as never));
  await client.subscribeAsync(topics.cmd(device.id), { qos: 1 });
  await waitFor(() => app.app.broker.isReady(device.id), 'device subscribed');
  return { client, received };
}

async function sendVolume(app: TestApp, deviceId: string, level: number): Promise<string> {
  const res = await app.request('POST', '/api/v1/commands', {
    token: app.adminToken,
    body: { type: 'volume', params: { level }, targets: { deviceIds: [deviceId] } },
  });
  expect(res.statusCode).toBe(202);
  return res.json<{ id: string }>().id;
}

/** The fingerprint a client sees of the connection it opened. */
function connectionFingerprint(client: MqttClient): string {
  return (
    client.stream as unknown as { getPeerCertificate(): { fingerprint256: string } }
  ).getPeerCertificate().fingerprint256;
}

const errors = (lines: LogLine[]) => lines.filter((l) => l.level >= ERROR);

describe('certificate renewal', () => {
  it('serves a certificate written over the files to new connections; a device connected before stays and gets commands', async () => {
    const { certs, app, device, lines } = await start();
    const before = fileFingerprint(certs.certFile);
    const { client, received } = await connectSubscribed(app, device, certs.ca);
    expect(connectionFingerprint(client)).toBe(before);

    // A renewal as `npm run tls:dev` (and certbot) does it: key, then certificate, each renamed into place.
    await createDevCertificates({ dir: certs.dir, hosts: TLS_HOSTS });
    const after = fileFingerprint(certs.certFile);
    expect(after).not.toBe(before);
    await waitFor(() => app.app.tls?.info.fingerprint === after, 'the watched files reloaded');

    // New connections, on both TLS ports, get the new certificate.
    expect(await servedFingerprint(app.mqttsPort, certs.ca)).toBe(after);
    expect(await servedFingerprint(app.httpsPort, certs.ca)).toBe(after);
    expect(
      (await app.request('GET', '/readyz')).json<{ tls: { fingerprint: string } }>().tls.fingerprint,
    ).toBe(after);
    // The device connected before is still on its old connection, with the old certificate, and is reached.
    expect(client.connected).toBe(true);
    expect(connectionFingerprint(client)).toBe(before);
    expect(app.app.broker.isOnline(device.id)).toBe(true);
    const id = await sendVolume(app, device.id, 45);
    await waitFor(() => received.some((c) => c.id === id), 'command received on the old connection');

    expect(lines.some((l) => l.msg === RELOADED && l.fingerprint === after)).toBe(true);
    // Key and certificate written one after the other made one reload, not an error in between.
    expect(errors(lines)).toEqual([]);
  });

  it('keeps the certificate in use when the new files are broken, says why once, and takes a good one later', async () => {
    const { certs, app, device, lines } = await start();
    const good = fileFingerprint(certs.certFile);
    const goodCert = fs.readFileSync(certs.certFile, 'utf8');
    const { client, received } = await connectSubscribed(app, device, certs.ca);

    // Garbage over the certificate.
    fs.writeFileSync(certs.certFile, 'Đây không phải là chứng chỉ\n');
    await waitFor(() => errors(lines).length === 1, 'garbage refused');
    expect(errors(lines)[0]).toMatchObject({ msg: REFUSED, fingerprint: good });
    expect(String(errors(lines)[0]!.reason)).toMatch(/not a complete PEM certificate chain/);

    // A file caught half written: the leaf complete, the chain cut off in the CA certificate.
    fs.writeFileSync(certs.certFile, goodCert.slice(0, goodCert.lastIndexOf('-----BEGIN') + 100));
    await waitFor(() => errors(lines).length === 2, 'half-written chain refused');
    expect(String(errors(lines)[1]!.reason)).toMatch(/not a complete PEM certificate chain/);

    // Another server's key: the pair does not match.
    const other = await devCertificates();
    dirs.push(other.dir);
    fs.writeFileSync(certs.certFile, goodCert);
    fs.copyFileSync(other.keyFile, certs.keyFile);
    await waitFor(() => errors(lines).length === 3, 'mismatched key refused');
    expect(String(errors(lines)[2]!.reason)).toMatch(/is not the private key of/);

    // All the while: the old certificate, for new connections and for the device connected before.
    expect(app.app.tls?.info.fingerprint).toBe(good);
    expect(await servedFingerprint(app.mqttsPort, certs.ca)).toBe(good);
    expect(await servedFingerprint(app.httpsPort, certs.ca)).toBe(good);
    const id = await sendVolume(app, device.id, 30);
    await waitFor(() => received.some((c) => c.id === id), 'command received');
    expect(client.connected).toBe(true);

    // A good pair again is taken.
    await createDevCertificates({ dir: certs.dir, hosts: TLS_HOSTS });
    const renewed = fileFingerprint(certs.certFile);
    await waitFor(() => app.app.tls?.info.fingerprint === renewed, 'good pair reloaded');
    expect(await servedFingerprint(app.mqttsPort, certs.ca)).toBe(renewed);
  });

  it('reload(), what SIGHUP calls, takes new files at once and reports unchanged ones', async () => {
    const { certs, app } = await start();
    await createDevCertificates({ dir: certs.dir, hosts: TLS_HOSTS });
    // Synchronously after the writes: the watch (a later event, then a debounce) has not run yet.
    expect(app.app.tls!.reload()).toBe(true);
    const renewed = fileFingerprint(certs.certFile);
    expect(await servedFingerprint(app.mqttsPort, certs.ca)).toBe(renewed);
    expect(await servedFingerprint(app.httpsPort, certs.ca)).toBe(renewed);
    expect(app.app.tls!.reload()).toBe(false);
  });

  it('a reloaded certificate is served with TLS 1.2 as the lowest version still, whatever Node’s default', async () => {
    // As `node --tls-min-v1.0` with a cipher list allowing it: Node's defaults then admit TLS 1.0 and 1.1.
    const defaults = { minVersion: tls.DEFAULT_MIN_VERSION, ciphers: tls.DEFAULT_CIPHERS };
    tls.DEFAULT_MIN_VERSION = 'TLSv1';
    tls.DEFAULT_CIPHERS = `${defaults.ciphers}:@SECLEVEL=0`;
    try {
      const { certs, app } = await start();
      await createDevCertificates({ dir: certs.dir, hosts: TLS_HOSTS });
      expect(app.app.tls!.reload()).toBe(true);
      const renewed = fileFingerprint(certs.certFile);
      for (const port of [app.mqttsPort, app.httpsPort]) {
        // A TLS 1.2 client gets the new certificate; a TLS 1.1 one is refused, as before the reload.
        expect(await servedFingerprint(port, certs.ca)).toBe(renewed);
        const old = tls.connect({
          host: '127.0.0.1',
          port,
          ca: certs.ca,
          servername: 'localhost',
          minVersion: 'TLSv1',
          maxVersion: 'TLSv1.1',
          ciphers: 'DEFAULT:@SECLEVEL=0',
        });
        const outcome = await new Promise<string>((resolve) => {
          old.once('secureConnect', () => resolve(`accepted ${old.getProtocol()}`));
          old.once('error', (err: Error & { code?: string }) => resolve(`refused ${err.code}`));
        });
        old.destroy();
        expect(outcome).toMatch(/^refused /);
      }
    } finally {
      tls.DEFAULT_MIN_VERSION = defaults.minVersion;
      tls.DEFAULT_CIPHERS = defaults.ciphers;
    }
  });

  it('the server process reloads on SIGHUP a renewal its watch cannot see, and its healthcheck speaks HTTPS', async () => {
    // TLS_CERT_FILE and TLS_KEY_FILE are links into another folder, renewed there: a change the watch of
    // the links' folder does not see (as with some bind mounts), so only SIGHUP can bring it in.
    const certs = await devCertificates();
    const links = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-tls-links-'));
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-server-'));
    dirs.push(certs.dir, links, dataDir);
    fs.symlinkSync(certs.certFile, path.join(links, 'fullchain.pem'));
    fs.symlinkSync(certs.keyFile, path.join(links, 'privkey.pem'));
    const [port, mqttsPort] = [await freePort(), await freePort()];
    const env = {
      PORT: String(port),
      MQTT_PORT: 'off',
      MQTT_TLS_PORT: String(mqttsPort),
      HOST: '127.0.0.1',
      DATA_DIR: dataDir,
      ADMIN_PASSWORD: 'server-test-password',
      LOG_LEVEL: 'info',
      TLS_CERT_FILE: path.join(links, 'fullchain.pem'),
      TLS_KEY_FILE: path.join(links, 'privkey.pem'),
    };
    const server = startServer(env);
    children.push(server.child);
    await waitFor(() => server.output().includes('"msg":"Loa is running"'), 'server up', 30_000);
    const running = server
      .output()
      .split('\n')
      .find((l) => l.includes('"msg":"Loa is running"'));
    expect(JSON.parse(running!)).toMatchObject({
      api: `https://127.0.0.1:${port}`,
      mqtt: 'off',
      mqtts: `mqtts://127.0.0.1:${mqttsPort}`,
    });

    const healthcheck = () =>
      new Promise<number | null>((resolve) =>
        spawn(...withTsx('src/cli/healthcheck.ts'), {
          cwd: root,
          env: { ...process.env, ...env },
          stdio: 'ignore',
        }).on('exit', (code) => resolve(code)),
      );
    expect(await healthcheck()).toBe(0);

    const before = fileFingerprint(certs.certFile);
    await createDevCertificates({ dir: certs.dir, hosts: TLS_HOSTS });
    const after = fileFingerprint(certs.certFile);
    // Nothing told the server yet.
    expect(await servedFingerprint(mqttsPort, certs.ca)).toBe(before);

    server.child.kill('SIGHUP');
    await waitFor(
      () => server.output().includes('"msg":"SIGHUP: new TLS certificate in use"'),
      'SIGHUP handled',
    );
    expect(await servedFingerprint(mqttsPort, certs.ca)).toBe(after);
    expect(await servedFingerprint(port, certs.ca)).toBe(after);
    expect(await healthcheck()).toBe(0);
    // A second SIGHUP finds nothing new, and the process is still there.
    server.child.kill('SIGHUP');
    await waitFor(
      () => server.output().includes('"msg":"SIGHUP: TLS certificate unchanged'),
      'second SIGHUP handled',
    );
    expect(server.child.exitCode).toBeNull();
  });
});
