/**
 * `npm run tls:dev` (src/cli/tls-dev.ts): a development CA made once and reused, a server certificate for every
 * host given (DNS names and IP addresses), a chain that verifies, and a real HTTPS server with it that a client
 * trusting the CA reaches and one without it is refused by.
 */
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { createDevCertificates, DEFAULT_DAYS } from '../src/cli/tls-dev.js';
import { root, withTsx } from './support/processes.js';

const DAY_MS = 86_400_000;
const dirs: string[] = [];
const servers: https.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((resolve) => s.close(resolve));
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-tls-dev-'));
  dirs.push(dir);
  return dir;
}

/** server.pem holds the leaf then the CA. */
function chain(file: string): crypto.X509Certificate[] {
  const pems = fs
    .readFileSync(file, 'utf8')
    .match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g);
  return (pems ?? []).map((pem) => new crypto.X509Certificate(pem));
}

/** GET / on a server presenting these files, as a client trusting `ca` (or the system roots when undefined). */
async function get(port: number, ca: string | undefined, servername = 'loa.example.vn') {
  return new Promise<string>((resolve, reject) => {
    https
      .get({ host: '127.0.0.1', port, path: '/', servername, ...(ca ? { ca } : {}) }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

describe('createDevCertificates', () => {
  it('makes a CA and a server certificate for every host, keys private, the chain verifying', async () => {
    const dir = path.join(tempDir(), 'tls');
    const now = new Date('2026-03-01T08:00:00Z');
    const files = await createDevCertificates({
      dir,
      hosts: ['Loa.Example.VN', '192.168.1.10', '[::1]', 'loa.example.vn'],
      now,
    });
    expect(files).toEqual({
      caFile: path.join(dir, 'ca.pem'),
      caKeyFile: path.join(dir, 'ca-key.pem'),
      certFile: path.join(dir, 'server.pem'),
      keyFile: path.join(dir, 'server-key.pem'),
    });
    expect(fs.statSync(files.keyFile).mode & 0o777).toBe(0o600);
    expect(fs.statSync(files.caKeyFile).mode & 0o777).toBe(0o600);
    // Nothing half-written left behind.
    expect(fs.readdirSync(dir).sort()).toEqual(['ca-key.pem', 'ca.pem', 'server-key.pem', 'server.pem']);

    const ca = new crypto.X509Certificate(fs.readFileSync(files.caFile));
    expect(ca.subject).toContain('CN=Loa development CA');
    // A name of its own: clients find an issuer by name, and every installation makes its own CA.
    expect(ca.subject).toMatch(/OU=dev-[0-9a-f]{12}/);
    expect(ca.ca).toBe(true);
    expect(ca.verify(ca.publicKey)).toBe(true);

    const [leaf, chainedCa, ...rest] = chain(files.certFile);
    expect(rest).toEqual([]);
    expect(chainedCa?.fingerprint256).toBe(ca.fingerprint256);
    expect(leaf!.ca).toBe(false);
    expect(leaf!.checkIssued(ca)).toBe(true);
    expect(leaf!.verify(ca.publicKey)).toBe(true);
    expect(leaf!.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(files.keyFile)))).toBe(true);
    expect(leaf!.publicKey.asymmetricKeyType).toBe('ec');
    expect(leaf!.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    // Lower-cased, brackets removed, duplicates dropped; IPs as IP entries, not DNS names.
    expect(leaf!.subjectAltName).toBe(
      'DNS:loa.example.vn, IP Address:192.168.1.10, IP Address:0:0:0:0:0:0:0:1',
    );
    expect(leaf!.checkHost('loa.example.vn')).toBe('loa.example.vn');
    expect(leaf!.checkIP('192.168.1.10')).toBe('192.168.1.10');
    expect(leaf!.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // extKeyUsage serverAuth
    // Back-dated an hour for clocks running a little behind; DEFAULT_DAYS long from there.
    expect(new Date(leaf!.validFrom).getTime()).toBe(now.getTime() - 3_600_000);
    expect(new Date(leaf!.validTo).getTime()).toBe(now.getTime() - 3_600_000 + DEFAULT_DAYS * DAY_MS);
  });

  it('reuses the CA on a second run, so devices that trust it keep working with the new certificate', async () => {
    const dir = tempDir();
    const first = await createDevCertificates({ dir, hosts: ['localhost'], days: 30 });
    const caBefore = fs.readFileSync(first.caFile, 'utf8');
    const caKeyBefore = fs.readFileSync(first.caKeyFile, 'utf8');
    const leafBefore = chain(first.certFile)[0]!;

    const second = await createDevCertificates({ dir, hosts: ['loa-thon-dong.local', '10.0.0.7'], days: 30 });
    expect(fs.readFileSync(second.caFile, 'utf8')).toBe(caBefore);
    expect(fs.readFileSync(second.caKeyFile, 'utf8')).toBe(caKeyBefore);
    const leaf = chain(second.certFile)[0]!;
    expect(leaf.fingerprint256).not.toBe(leafBefore.fingerprint256);
    expect(leaf.subjectAltName).toBe('DNS:loa-thon-dong.local, IP Address:10.0.0.7');
    expect(leaf.verify(new crypto.X509Certificate(caBefore).publicKey)).toBe(true);
  });

  it('refuses half a CA or a key of another CA rather than replacing the trust devices have', async () => {
    const dir = tempDir();
    const files = await createDevCertificates({ dir, hosts: ['localhost'] });
    const other = await createDevCertificates({ dir: tempDir(), hosts: ['localhost'] });
    fs.copyFileSync(other.caKeyFile, files.caKeyFile);
    await expect(createDevCertificates({ dir, hosts: ['localhost'] })).rejects.toThrow(/is not the key of/);
    fs.rmSync(files.caKeyFile);
    await expect(createDevCertificates({ dir, hosts: ['localhost'] })).rejects.toThrow(/without/);
  });

  it('rejects a host that is neither a DNS name nor an IP address', async () => {
    await expect(createDevCertificates({ dir: tempDir(), hosts: ['loa example'] })).rejects.toThrow(
      /neither a DNS name nor an IP address/,
    );
    await expect(createDevCertificates({ dir: tempDir(), hosts: [] })).rejects.toThrow(/at least one host/);
  });

  it('serves HTTPS that a client trusting the CA reaches and one without it refuses', async () => {
    const files = await createDevCertificates({ dir: tempDir(), hosts: ['loa.example.vn', '127.0.0.1'] });
    const server = https.createServer(
      { cert: fs.readFileSync(files.certFile), key: fs.readFileSync(files.keyFile) },
      (_req, res) => res.end('Thông báo lịch tiêm phòng dại – Thôn Đông'),
    );
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const ca = fs.readFileSync(files.caFile, 'utf8');

    expect(await get(port, ca)).toBe('Thông báo lịch tiêm phòng dại – Thôn Đông');
    // By IP, no SNI name: the IP entry in the certificate is what matches.
    expect(await get(port, ca, '')).toBe('Thông báo lịch tiêm phòng dại – Thôn Đông');
    // The full chain ends in the development CA, which no system trust store holds.
    await expect(get(port, undefined)).rejects.toMatchObject({ code: 'SELF_SIGNED_CERT_IN_CHAIN' });
    // Trusting the CA does not make a name the certificate lacks acceptable.
    await expect(get(port, ca, 'other.example.vn')).rejects.toMatchObject({
      code: 'ERR_TLS_CERT_ALTNAME_INVALID',
    });
  });
});

describe('npm run tls:dev', () => {
  it('writes DATA_DIR/tls and prints the environment to use', async () => {
    const dataDir = tempDir();
    const { stdout } = await promisify(execFile)(
      withTsx('src/cli/tls-dev.ts')[0],
      [...withTsx('src/cli/tls-dev.ts')[1], '--host', 'loa.example.vn', '--host', '192.168.1.10'],
      { cwd: root, env: { ...process.env, DATA_DIR: dataDir } },
    );
    const tls = path.join(dataDir, 'tls');
    expect(stdout).toContain(`TLS_CERT_FILE=${path.join(tls, 'server.pem')}`);
    expect(stdout).toContain(`TLS_KEY_FILE=${path.join(tls, 'server-key.pem')}`);
    expect(stdout).toContain(`--mqtt mqtts://loa.example.vn:8883 --ca ${path.join(tls, 'ca.pem')}`);
    expect(stdout).toContain(`--cafile ${path.join(tls, 'ca.pem')}`);
    expect(chain(path.join(tls, 'server.pem'))[0]!.subjectAltName).toBe(
      'DNS:loa.example.vn, IP Address:192.168.1.10',
    );
  });

  it('defaults to localhost and 127.0.0.1 and explains a bad argument', async () => {
    const dataDir = tempDir();
    const [node, args] = withTsx('src/cli/tls-dev.ts');
    await promisify(execFile)(node, [...args], { cwd: root, env: { ...process.env, DATA_DIR: dataDir } });
    expect(chain(path.join(dataDir, 'tls', 'server.pem'))[0]!.subjectAltName).toBe(
      'DNS:localhost, IP Address:127.0.0.1',
    );
    await expect(
      promisify(execFile)(node, [...args, '--host', 'a b'], {
        cwd: root,
        env: { ...process.env, DATA_DIR: dataDir },
      }),
    ).rejects.toMatchObject({
      code: 1,
      stderr: expect.stringContaining('usage: npm run tls:dev') as unknown,
    });
  });
});
