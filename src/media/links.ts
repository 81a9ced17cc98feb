/**
 * Signed device download URLs: `${base}/downloads/<sha256>.mp3?expires=<unix s>&signature=<b64url>`, where
 * the signature is HMAC-SHA256 over `<sha256>.<expires>` with a server secret. A device on a commune's 4G
 * link fetches the file with no user token; the link is only good for what it names and until it expires
 * (the command's expiry plus LINK_MARGIN_MS, so a device that starts late can still finish downloading).
 *
 * Checking a link needs no database: the download path stays as fast as a bare file server, which matters
 * when a province's 2,000 loudspeakers fetch the same bulletin at once.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import { isIPv6, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { AppError } from '../errors.js';
import type { Clock } from '../lib/clock.js';
import { isSha256 } from './store.js';

/** How long a link stays valid after the command that carries it expires. */
export const LINK_MARGIN_MS = 3_600_000;

const FILE_NAME = /^([0-9a-f]{64})\.mp3$/;
/** Unix seconds as urlFor writes them: digits, no sign, no leading zero, at most 12 (year 33658). */
const EXPIRES = /^[1-9]\d{0,11}$/;
/** 32 bytes in unpadded base64url. */
const SIGNATURE = /^[A-Za-z0-9_-]{43}$/;

/**
 * The HMAC key: MEDIA_URL_SECRET when set; otherwise a random one created once in
 * DATA_DIR/media-url.secret (mode 0600), so links survive a restart without any configuration.
 */
export function loadUrlSecret(configured: string | undefined, dataDir: string): Buffer {
  if (configured) return Buffer.from(configured, 'utf8');
  const file = path.join(dataDir, 'media-url.secret');
  fs.mkdirSync(dataDir, { recursive: true });
  try {
    fs.writeFileSync(file, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const secret = fs.readFileSync(file, 'utf8').trim();
  if (secret.length < 32) throw new Error(`${file} holds no usable secret: delete it to make a new one`);
  return Buffer.from(secret, 'utf8');
}

export class DownloadLinks {
  /**
   * @param base the URL devices reach the server at, without a trailing slash; a function because the
   *   listening address is only known once the server listens.
   */
  constructor(
    private readonly secret: Buffer,
    private readonly base: () => string,
    private readonly clock: Clock,
  ) {}

  private sign(sha256: string, expires: number): Buffer {
    return createHmac('sha256', this.secret).update(`${sha256}.${expires}`).digest();
  }

  /** An absolute URL for the file, valid until `validUntil` (rounded up to the second). */
  urlFor(sha256: string, validUntil: Date): string {
    if (!isSha256(sha256)) throw new Error(`not a SHA-256: ${sha256}`);
    const expires = Math.ceil(validUntil.getTime() / 1000);
    const signature = this.sign(sha256, expires).toString('base64url');
    return `${this.base()}/downloads/${sha256}.mp3?expires=${expires}&signature=${signature}`;
  }

  /**
   * The hash a download request names, if its signature is right and it has not expired; 403
   * invalid_signature otherwise (one answer for every failure, so a prober learns nothing).
   */
  verify(file: string, expires: string | undefined, signature: string | undefined): string {
    const match = FILE_NAME.exec(file);
    const sha256 = match?.[1];
    // Exactly the text urlFor writes, nothing equivalent: `expires=0123` or a signature whose unused last
    // bits differ (43 characters carry 258 bits for 256) would otherwise be other spellings of one link.
    const given = signature && SIGNATURE.test(signature) ? Buffer.from(signature, 'base64url') : null;
    if (
      !sha256 ||
      !expires ||
      !EXPIRES.test(expires) ||
      !given ||
      given.toString('base64url') !== signature
    ) {
      throw new AppError('invalid_signature', 'The link is malformed: ask for a new command');
    }
    const expected = this.sign(sha256, Number(expires));
    // Constant time, so the signature cannot be guessed byte by byte from response times.
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new AppError('invalid_signature', 'The link signature is not valid');
    }
    if (Number(expires) * 1000 < this.clock.now().getTime()) {
      throw new AppError('invalid_signature', 'The link has expired: ask for a new command');
    }
    return sha256;
  }
}

/**
 * The base of download URLs when PUBLIC_URL is unset: the address the server listens on. A wildcard
 * (0.0.0.0, ::) is no address a device can use, so the machine's first non-internal IPv4 stands in for it
 * (127.0.0.1 on a machine with none). Before listening, `fallbackPort` on loopback. `scheme` is https when
 * the server has a certificate (TLS_CERT_FILE): its port then speaks nothing else.
 */
export function listeningBaseUrl(
  address: AddressInfo | string | null,
  fallbackPort: number,
  interfaces: NodeJS.Dict<os.NetworkInterfaceInfo[]> = os.networkInterfaces(),
  scheme: 'http' | 'https' = 'http',
): string {
  if (address === null || typeof address === 'string') return `${scheme}://127.0.0.1:${fallbackPort}`;
  let host = address.address;
  if (host === '0.0.0.0' || host === '::') {
    const external = Object.values(interfaces)
      .flat()
      .find((i) => i !== undefined && i.family === 'IPv4' && !i.internal);
    host = external?.address ?? '127.0.0.1';
  }
  return `${scheme}://${isIPv6(host) ? `[${host}]` : host}:${address.port}`;
}
