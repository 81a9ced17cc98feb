/**
 * firmware-sim over TLS against a Loa started with a development certificate (npm run tls:dev): devices trust
 * that CA and only it (`ca`, `--ca FILE`), connect with MQTT over TLS (mqtts://, by host name with SNI or by
 * IP) and over WSS, download a play's file from Loa's signed HTTPS URL, verify and play it; a device given
 * another CA is refused with a sentence saying why, and so is an HTTPS download it cannot trust.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs';
import type { IncomingMessage } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, type DownloadEvent, type SimDeviceOptions } from '../firmware-sim/src/device.js';
import { DownloadError, downloadVerified } from '../firmware-sim/src/download.js';
import { readCaBundle } from '../firmware-sim/src/tls.js';
import { createDevCertificates, type DevCertificates } from '../src/cli/tls-dev.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { root, withTsx } from './support/processes.js';
import { waitFor } from './support/wait.js';

type Detail = {
  counts: Record<string, number>;
  devices: { deviceId: string; status: string; reason?: string }[];
};

describe('firmware-sim over TLS', () => {
  let dir: string;
  let certs: DevCertificates;
  let ca: string;
  let otherCa: string;
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let mqttsPort: number;
  const sims: SimDevice[] = [];

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-sim-tls-'));
    certs = await createDevCertificates({ dir: path.join(dir, 'tls'), hosts: ['localhost', '127.0.0.1'] });
    ca = readCaBundle(certs.caFile);
    // Another installation's CA: a device shipped with it must not accept this server.
    otherCa = readCaBundle(
      (await createDevCertificates({ dir: path.join(dir, 'other'), hosts: ['localhost'] })).caFile,
    );
    t = await createTestApp({
      listen: true,
      env: { TLS_CERT_FILE: certs.certFile, TLS_KEY_FILE: certs.keyFile, MQTT_TLS_PORT: '0' },
    });
    tree = await createAreaTree(t);
    mqttsPort = t.app.broker.tlsPort!;
  });
  afterAll(async () => {
    await t?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  afterEach(async () => {
    await Promise.all(sims.splice(0).map((s) => s.close()));
  });

  async function device(options: Partial<SimDeviceOptions>) {
    const created = await t.createDevice(tree.hamletA.id, `Cụm loa Thôn Đông ${sims.length + 1}`);
    const sim = new SimDevice({
      id: created.id,
      password: created.credentials.password,
      mqttUrl: `mqtts://localhost:${mqttsPort}`,
      speed: 100,
      reconnectPeriodMs: 100,
      ...options,
    });
    sims.push(sim);
    const downloads: DownloadEvent[] = [];
    sim.on('download', (event) => downloads.push(event));
    return { id: created.id, credentials: created.credentials, sim, downloads };
  }

  /** A file in Loa's media store and its signed download URL, as the server hands them to devices. */
  async function storedFile() {
    const temp = t.app.services.media.store.tempPath('.mp3');
    fs.writeFileSync(temp, randomBytes(64 * 1024));
    const { sha256 } = await t.app.services.media.store.putFile(temp);
    const url = t.app.services.media.links.urlFor(sha256, new Date(Date.now() + 3_600_000));
    return { sha256, url };
  }

  async function play(deviceId: string, url: string, sha256: string) {
    const res = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: {
        type: 'play',
        priority: 'normal',
        params: { source: { kind: 'media', url, sha256, durationMs: 600_000 } },
        targets: { deviceIds: [deviceId] },
      },
    });
    expect(res.statusCode, res.body).toBe(202);
    return res.json<{ id: string }>().id;
  }

  const settled = (id: string, expected: Record<string, number>) =>
    waitFor(
      async () => {
        const d = (await t.request('GET', `/api/v1/commands/${id}`, { token: t.adminToken })).json<Detail>();
        return Object.entries(expected).every(([status, n]) => d.counts[status] === n) ? d : null;
      },
      `command ${id} to reach ${JSON.stringify(expected)}`,
    );

  it('connects with mqtts trusting the CA, downloads the play from the HTTPS URL and plays it', async () => {
    const d = await device({ ca });
    await d.sim.connect();
    await waitFor(() => t.app.broker.isReady(d.id), 'device ready over TLS');
    const file = await storedFile();
    expect(file.url.startsWith('https://127.0.0.1:')).toBe(true);
    const id = await play(d.id, file.url, file.sha256);
    await settled(id, { done: 1 });
    expect(d.downloads).toEqual([{ commandId: id, sha256: file.sha256, bytes: 64 * 1024, fromCache: false }]);
    expect(d.sim.state.playing?.commandId).toBe(id);
  });

  it('connects by IP address (no SNI; the certificate names the IP) and over WSS at /mqtt', async () => {
    const byIp = await device({ ca, mqttUrl: `mqtts://127.0.0.1:${mqttsPort}` });
    const { port } = t.app.server.address() as AddressInfo;
    const overWss = await device({ ca, mqttUrl: `wss://localhost:${port}/mqtt` });
    await byIp.sim.connect();
    await overWss.sim.connect();
    await waitFor(() => t.app.broker.isReady(byIp.id) && t.app.broker.isReady(overWss.id), 'both ready');
  });

  it('refuses a server whose certificate another CA signed, saying so, and keeps trying', async () => {
    const d = await device({ ca: otherCa, reconnectBaseMs: 50, reconnectMaxMs: 100 });
    const errors: Error[] = [];
    d.sim.on('error', (error) => errors.push(error));
    let attempts = 0;
    d.sim.on('reconnecting', ({ attempt }) => (attempts = attempt));
    await expect(d.sim.connect(10_000)).rejects.toThrow(
      /the server's TLS certificate is not accepted: its chain ends in a CA this device does not trust \(SELF_SIGNED_CERT_IN_CHAIN/,
    );
    expect(errors[0]).toMatchObject({ code: 'SELF_SIGNED_CERT_IN_CHAIN' });
    // As firmware does: the certificate may be replaced, the clock corrected; it never gives up.
    await waitFor(() => attempts >= 3, 'retries after the refusal');
    expect(errors.length).toBeGreaterThanOrEqual(3);
    expect(t.app.broker.isReady(d.id)).toBe(false);
    // Without any CA (Node's public roots), the development CA is not trusted either.
    const plain = await device({});
    await expect(plain.sim.connect(10_000)).rejects.toThrow(/SELF_SIGNED_CERT_IN_CHAIN/);
  });

  it('fails an HTTPS download it cannot trust with download_failed, naming the TLS error', async () => {
    const file = await storedFile();
    const error = await downloadVerified(file.url, file.sha256, { ca: otherCa }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect(error).toMatchObject({
      reason: 'download_failed',
      message: expect.stringContaining('SELF_SIGNED_CERT_IN_CHAIN') as unknown,
    });
    // docs/protocol.md: a device whose clock is unset takes the time from /healthz's Date header over HTTPS.
    const healthz = await new Promise<IncomingMessage>((resolve, reject) =>
      https.get(new URL('/healthz', file.url), { ca }, resolve).on('error', reject),
    );
    healthz.resume();
    expect(healthz.statusCode).toBe(200);
    expect(Math.abs(Date.parse(healthz.headers.date ?? '') - Date.now())).toBeLessThan(60_000);
    // With the right CA it downloads, by the other name the certificate holds too.
    const viaName = file.url.replace('https://127.0.0.1:', 'https://localhost:');
    await expect(downloadVerified(viaName, file.sha256, { ca })).resolves.toEqual({
      bytes: 64 * 1024,
      fromCache: false,
    });
  });

  it('the CLI takes --ca FILE for mqtts, and explains a CA file that is not one', async () => {
    const d = await device({});
    const credentials = path.join(dir, 'creds.json');
    fs.writeFileSync(credentials, JSON.stringify([d.credentials]), { mode: 0o600 });
    const [node, args] = withTsx('firmware-sim/src/cli.ts');
    const bad = spawn(
      node,
      [
        ...args,
        '--devices-file',
        credentials,
        '--mqtt',
        `mqtts://localhost:${mqttsPort}`,
        '--ca',
        certs.keyFile,
      ],
      {
        cwd: root,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let badOutput = '';
    bad.stderr.setEncoding('utf8').on('data', (chunk: string) => (badOutput += chunk));
    const [code] = (await once(bad, 'exit')) as [number | null];
    expect(code).toBe(2);
    expect(badOutput).toContain(`--ca: ${certs.keyFile} holds no PEM certificate`);

    const child = spawn(
      node,
      [
        ...args,
        '--devices-file',
        credentials,
        '--mqtt',
        `mqtts://localhost:${mqttsPort}`,
        '--ca',
        certs.caFile,
        '--summary-s',
        '0',
      ],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const exited = once(child, 'exit');
    try {
      await waitFor(() => t.app.broker.isReady(d.id), 'CLI device ready over TLS', 20_000);
      await waitFor(() => output.includes('connected 1/1'), 'the CLI reports the connection');
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
