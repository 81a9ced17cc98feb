/**
 * `npm run tls:dev -- --host loa.example.vn --host 192.168.1.10 [--data-dir DIR] [--days N]`: a local
 * certificate authority and a server certificate signed by it, under DATA_DIR/tls, for trying Loa with TLS
 * (HTTPS, WSS, MQTT over TLS on 8883) and for the tests. Not for production: there the certificate comes from
 * a real CA (Let's Encrypt, the province's own PKI; docs/operations.md).
 *
 * The CA is made once and reused: running it again for another host name replaces only the server
 * certificate, so devices and firmware-sim instances that already trust ca.pem keep working.
 *
 * Files (keys mode 0600, everything written to a temporary name and renamed, so a server watching the files
 * never reads half of one):
 *   ca.pem          the CA certificate: what devices trust (`--ca`, `mosquitto_sub --cafile`)
 *   ca-key.pem      the CA private key: signs the next server certificates; never leaves this machine
 *   server.pem      the server certificate followed by the CA certificate (the full chain, as TLS_CERT_FILE expects)
 *   server-key.pem  the server private key (TLS_KEY_FILE)
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import selfsigned from 'selfsigned';

export interface DevCertificateOptions {
  dir: string;
  /** DNS names and IP addresses (IPv4 or IPv6) the server is reached by; each becomes a subjectAltName. */
  hosts: string[];
  /** Validity of the server certificate. */
  days?: number;
  now?: Date;
}

export interface DevCertificates {
  caFile: string;
  caKeyFile: string;
  /** Leaf followed by the CA: the full chain. */
  certFile: string;
  keyFile: string;
}

/**
 * 825 days: the longest validity Apple platforms (macOS, iOS: Safari and every app using their TLS stack)
 * accept for a TLS server certificate, even one chained to a root the user installed; Chrome and Firefox
 * enforce their 398-day limit only on publicly trusted roots. Longer would be rejected on an iPhone opening
 * the web UI; shorter would only make a development setup expire sooner.
 */
export const DEFAULT_DAYS = 825;
/** The CA outlives many server certificates: devices given ca.pem need not be touched for years. */
const CA_DAYS = 10 * 365;
/**
 * notBefore is set this far in the past: a device or laptop whose clock runs a little behind would otherwise
 * see a just-made certificate as "not yet valid".
 */
const BACKDATE_MS = 60 * 60 * 1000;
const DAY_MS = 86_400_000;
const CA_NAME = 'Loa development CA';

const DNS_NAME =
  /^(?=.{1,253}$)(\*\.)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** A host as typed (`[::1]` included), lower-cased; throws on anything that is neither a DNS name nor an IP. */
export function normaliseHost(raw: string): string {
  const host = raw.trim().replace(/^\[(.*)\]$/, '$1');
  if (isIP(host) !== 0) return host;
  const lower = host.toLowerCase().replace(/\.$/, '');
  if (!DNS_NAME.test(lower)) throw new Error(`"${raw}" is neither a DNS name nor an IP address`);
  return lower;
}

/** Writes to a temporary file beside `file`, then renames it over: readers see the old file or the new one. */
function writeAtomic(file: string, content: string, mode: number): void {
  const temp = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${process.pid}.${crypto.randomUUID()}.tmp`,
  );
  try {
    fs.writeFileSync(temp, content, { mode, flag: 'wx' });
    // writeFileSync's mode is masked by the umask; chmod makes a key 0600 whatever the umask.
    fs.chmodSync(temp, mode);
    fs.renameSync(temp, file);
  } catch (err) {
    fs.rmSync(temp, { force: true });
    throw err;
  }
}

async function loadOrCreateCa(
  caFile: string,
  caKeyFile: string,
  now: Date,
): Promise<{ cert: string; key: string }> {
  const haveCert = fs.existsSync(caFile);
  const haveKey = fs.existsSync(caKeyFile);
  if (haveCert && haveKey) {
    const cert = fs.readFileSync(caFile, 'utf8');
    const key = fs.readFileSync(caKeyFile, 'utf8');
    if (!new crypto.X509Certificate(cert).checkPrivateKey(crypto.createPrivateKey(key))) {
      throw new Error(`${caKeyFile} is not the key of ${caFile}; remove both to make a new CA`);
    }
    return { cert, key };
  }
  // Half a CA is someone's mistake; replacing it silently would break the trust of every device given ca.pem.
  if (haveCert || haveKey) {
    throw new Error(
      `Found ${haveCert ? caFile : caKeyFile} without ${haveCert ? caKeyFile : caFile}; remove it to make a new CA`,
    );
  }
  const notBeforeDate = new Date(now.getTime() - BACKDATE_MS);
  const ca = await selfsigned.generate(
    [
      { name: 'commonName', value: CA_NAME },
      { name: 'organizationName', value: 'Loa' },
      // Unique per CA: clients look a chain's issuer up by name, and two installations' CAs with one name
      // make a device holding the other one fail with a misleading "signature failure".
      { shortName: 'OU', value: `dev-${crypto.randomBytes(6).toString('hex')}` },
    ],
    {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      notBeforeDate,
      notAfterDate: new Date(notBeforeDate.getTime() + CA_DAYS * DAY_MS),
      extensions: [
        { name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true },
        { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
      ],
    },
  );
  // The key first: a ca.pem without its key would be refused by the next run.
  writeAtomic(caKeyFile, ca.private, 0o600);
  writeAtomic(caFile, ca.cert, 0o644);
  return { cert: ca.cert, key: ca.private };
}

export async function createDevCertificates(options: DevCertificateOptions): Promise<DevCertificates> {
  const now = options.now ?? new Date();
  const days = options.days ?? DEFAULT_DAYS;
  if (!Number.isInteger(days) || days < 1)
    throw new Error(`days must be a positive whole number, not ${days}`);
  const hosts = [...new Set(options.hosts.map(normaliseHost))];
  if (hosts.length === 0) throw new Error('at least one host is needed');

  const dir = path.resolve(options.dir);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const files: DevCertificates = {
    caFile: path.join(dir, 'ca.pem'),
    caKeyFile: path.join(dir, 'ca-key.pem'),
    certFile: path.join(dir, 'server.pem'),
    keyFile: path.join(dir, 'server-key.pem'),
  };
  const ca = await loadOrCreateCa(files.caFile, files.caKeyFile, now);

  const notBeforeDate = new Date(now.getTime() - BACKDATE_MS);
  // Never valid beyond the CA that vouches for it: such a certificate fails then anyway, with a worse message.
  const caNotAfter = new Date(new crypto.X509Certificate(ca.cert).validTo);
  const notAfterDate = new Date(Math.min(notBeforeDate.getTime() + days * DAY_MS, caNotAfter.getTime()));
  const server = await selfsigned.generate(
    // Clients match the subjectAltName, never the CN (RFC 6125); the CN only names the certificate to people.
    [{ name: 'commonName', value: hosts[0]! }],
    {
      keyType: 'ec',
      curve: 'P-256',
      algorithm: 'sha256',
      notBeforeDate,
      notAfterDate,
      ca,
      extensions: [
        { name: 'basicConstraints', cA: false, critical: true },
        { name: 'keyUsage', digitalSignature: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        {
          name: 'subjectAltName',
          altNames: hosts.map((h) =>
            isIP(h) ? { type: 7 as const, ip: h } : { type: 2 as const, value: h },
          ),
        },
      ],
    },
  );
  // The key before the certificate: a server reloading when server.pem changes finds the matching key there.
  writeAtomic(files.keyFile, server.private, 0o600);
  writeAtomic(files.certFile, `${server.cert.trimEnd()}\n${ca.cert.trimEnd()}\n`, 0o644);
  return files;
}

const USAGE =
  'usage: npm run tls:dev -- [--host NAME]... [--data-dir DIR] [--days N]\n' +
  '  NAME: a DNS name or IP address devices and browsers use to reach Loa (default: localhost and 127.0.0.1)\n' +
  '  DIR:  defaults to DATA_DIR, then ./data; the files go to DIR/tls';

class UsageError extends Error {}

/** The lines printed: how to start Loa with the files, and how clients trust them. */
export function instructions(files: DevCertificates, hosts: string[], days: number): string {
  const host = normaliseHost(hosts[0] ?? 'localhost');
  const hostInUrl = isIP(host) === 6 ? `[${host}]` : host;
  return [
    `Development CA:      ${files.caFile} (reused on later runs; give it to devices)`,
    `Server certificate:  ${files.certFile} for ${hosts.join(', ')}, ${days} days`,
    '',
    'Start Loa with:',
    `  TLS_CERT_FILE=${files.certFile}`,
    `  TLS_KEY_FILE=${files.keyFile}`,
    '',
    'Clients trust the CA:',
    `  npm run sim -- --mqtt mqtts://${hostInUrl}:8883 --ca ${files.caFile} ...`,
    // As a device: it may subscribe only to its own cmd topic (docs/protocol.md).
    `  mosquitto_sub -h ${host} -p 8883 --cafile ${files.caFile} -V mqttv311 -i DEVICE_ID -u DEVICE_ID -P SECRET -t loa/v1/devices/DEVICE_ID/cmd -q 1`,
    `  curl --cacert ${files.caFile} https://${hostInUrl}:3000/healthz`,
    '',
  ].join('\n');
}

export async function main(
  argv: string[],
  env: Record<string, string | undefined> = process.env,
): Promise<{ files: DevCertificates; output: string }> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        host: { type: 'string', multiple: true },
        'data-dir': { type: 'string' },
        days: { type: 'string' },
      },
      strict: true,
    }));
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${USAGE}`);
  }
  const days = values.days === undefined ? DEFAULT_DAYS : Number(values.days);
  if (!Number.isInteger(days) || days < 1)
    throw new UsageError(`--days must be a positive whole number\n${USAGE}`);
  let hosts: string[];
  try {
    hosts = [...new Set((values.host?.length ? values.host : ['localhost', '127.0.0.1']).map(normaliseHost))];
  } catch (err) {
    throw new UsageError(`--host ${(err as Error).message}\n${USAGE}`);
  }
  // `npm run` moves to the package root; a --data-dir typed on the command line means where the user stood.
  const cwd = (env.npm_lifecycle_event === 'tls:dev' && env.INIT_CWD) || process.cwd();
  // DATA_DIR read as src/config.ts reads it (empty means unset, default ./data) but without loadConfig: this
  // runs before TLS is configured, when e.g. MQTT_PORT=off would still make the whole configuration invalid.
  const dataDir = values['data-dir']
    ? path.resolve(cwd, values['data-dir'])
    : path.resolve(env.DATA_DIR || './data');
  const files = await createDevCertificates({ dir: path.join(dataDir, 'tls'), hosts, days });
  return { files, output: instructions(files, hosts, days) };
}

const invokedDirectly =
  process.argv[1] !== undefined && path.resolve(process.argv[1]) === import.meta.filename;
if (invokedDirectly) {
  main(process.argv.slice(2)).then(
    ({ output }) => {
      console.log(output);
    },
    (err: unknown) => {
      console.error(err instanceof UsageError ? err.message : err);
      process.exit(1);
    },
  );
}
