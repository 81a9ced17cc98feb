/**
 * TLS in tests: a development CA and server certificate (src/cli/tls-dev.ts) for `localhost` and 127.0.0.1,
 * a Loa app serving them, and what a client sees of the certificate it is served.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import tls from 'node:tls';
import { createDevCertificates, type DevCertificates } from '../../src/cli/tls-dev.js';
import { createTestApp, type TestApp } from './app.js';

export const TLS_HOSTS = ['localhost', '127.0.0.1'];

/** A fresh CA and server certificate in a temporary folder; `remove()` deletes it. */
export async function devCertificates(): Promise<DevCertificates & { dir: string; ca: Buffer }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-tls-'));
  const files = await createDevCertificates({ dir, hosts: TLS_HOSTS });
  return { ...files, dir, ca: fs.readFileSync(files.caFile) };
}

/** The SHA-256 fingerprint of the leaf certificate in a PEM chain file, as clients report it. */
export function fileFingerprint(certFile: string): string {
  return new crypto.X509Certificate(fs.readFileSync(certFile)).fingerprint256;
}

/** Opens a TLS connection trusting `ca` and returns the fingerprint of the certificate the server sent. */
export function servedFingerprint(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fingerprint);
    });
    socket.on('error', reject);
  });
}

/** A listening app with TLS on (HTTPS/WSS on its HTTP port, MQTT over TLS on its own port 0). */
export async function createTlsApp(
  certs: DevCertificates,
  options: { env?: Record<string, string>; log?: Writable } = {},
): Promise<TestApp & { httpsPort: number; mqttsPort: number }> {
  const t = await createTestApp({
    listen: true,
    env: {
      TLS_CERT_FILE: certs.certFile,
      TLS_KEY_FILE: certs.keyFile,
      MQTT_TLS_PORT: '0',
      ...options.env,
    },
    ...(options.log ? { logger: { level: 'info', stream: options.log } } : {}),
  });
  const address = t.app.server.address();
  if (!address || typeof address === 'string') throw new Error('not listening');
  const mqttsPort = t.app.broker.tlsPort;
  if (mqttsPort === null) throw new Error('no MQTT over TLS listener');
  return Object.assign(t, { httpsPort: address.port, mqttsPort });
}
