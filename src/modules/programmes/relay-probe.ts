/**
 * Probes a relay's stream once when it is saved. The answer is a warning for the editor, never a refusal:
 * a station may only be on air at broadcast time, and the server's network is not the devices' network.
 *
 * Only the status line and headers are read; the body of a live stream never ends, so it is cancelled at
 * once. Redirects are followed (stations move their streams behind redirecting links), at most
 * MAX_REDIRECTS of them and only to http or https.
 *
 * The probe is made from the server, so its answer tells the editor whether an address the server can
 * reach answers (a form of server-side request forgery that only broadcasters and above can use). What is
 * reported is bounded accordingly: reachable or not, the status code, the content type (cut short) and a
 * reason in words; never the body, and never the server's own headers beyond the content type. And unless
 * RELAY_PROBE_PRIVATE_NETWORKS allows it, addresses of loopback, private, link-local and other special
 * networks are not probed at all: the check is made on the address actually connected to (every redirect
 * hop, every address a name resolves to), so a public name that resolves to 10.0.0.1 is caught too.
 */
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import type { RelayProbe } from './programmes.schemas.js';

export type RelayProber = (url: string) => Promise<RelayProbe>;

export const PROBE_TIMEOUT_MS = 3_000;
/** Redirects followed before giving up: enough for a station's "latest stream" link and a CDN hop. */
export const MAX_REDIRECTS = 5;
/** A content type is a short token; a longer header is cut to this before it is stored and shown. */
const MAX_CONTENT_TYPE = 200;

/** Content types of what devices can relay: audio, Ogg, and HLS playlists. */
const STREAM_TYPES = [
  /^audio\//,
  /^application\/ogg\b/,
  /^application\/(vnd\.apple\.mpegurl|x-mpegurl)\b/,
  /^video\/mp2t\b/,
];

export function isStreamContentType(contentType: string | null): boolean {
  if (contentType === null) return false;
  const type = contentType.toLowerCase();
  return STREAM_TYPES.some((re) => re.test(type));
}

/** Why a request failed, in words for the editor: undici puts the system error in `cause`. */
function describe(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return `no answer within ${timeoutMs / 1000} s`;
  const code = e.cause?.code ?? (err as { code?: string }).code;
  if (code === PRIVATE_ADDRESS) return 'not probed: the address is on a private or special network';
  const known: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ENOTFOUND: 'host name not found',
    EAI_AGAIN: 'host name could not be resolved',
    ECONNRESET: 'connection reset',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
  };
  if (code && known[code]) return known[code];
  // Old SHOUTcast servers answer "ICY 200 OK", which is not HTTP.
  if (code === 'HPE_INVALID_CONSTANT') return 'the answer is not HTTP (an old SHOUTcast server?)';
  return (e.cause?.message ?? e.message ?? 'request failed').slice(0, 200);
}

const PRIVATE_ADDRESS = 'LOA_PRIVATE_ADDRESS';

/** Networks that are not the public internet (RFC 6890 and friends): never probed unless allowed. */
const SPECIAL_NETWORKS = (() => {
  const list = new BlockList();
  for (const [net, prefix] of [
    ['0.0.0.0', 8],
    ['10.0.0.0', 8],
    ['100.64.0.0', 10],
    ['127.0.0.0', 8],
    ['169.254.0.0', 16],
    ['172.16.0.0', 12],
    ['192.0.0.0', 24],
    ['192.168.0.0', 16],
    ['198.18.0.0', 15],
    ['224.0.0.0', 4],
    ['240.0.0.0', 4],
  ] as const) {
    list.addSubnet(net, prefix, 'ipv4');
  }
  for (const [net, prefix] of [
    ['::', 128],
    ['::1', 128],
    ['64:ff9b::', 96],
    ['fc00::', 7],
    ['fe80::', 10],
    ['ff00::', 8],
  ] as const) {
    list.addSubnet(net, prefix, 'ipv6');
  }
  return list;
})();

export function isSpecialAddress(address: string): boolean {
  // An IPv4 address written as IPv6 (::ffff:10.0.0.1) is that IPv4 address.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return SPECIAL_NETWORKS.check(mapped, 'ipv4');
  const family = isIP(address);
  if (family === 0) return true;
  return SPECIAL_NETWORKS.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

function privateAddressError(): Error {
  return Object.assign(new Error('the address is on a private or special network'), {
    code: PRIVATE_ADDRESS,
  });
}

/** dns.lookup, refusing a name any of whose addresses is special: what is checked is what is connected to. */
const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
  dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '', 0);
    if (addresses.length === 0 || addresses.some((a) => isSpecialAddress(a.address))) {
      return callback(privateAddressError(), '', 0);
    }
    if (options.all)
      return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, addresses);
    const first = addresses[0]!;
    callback(null, first.address, first.family);
  });
};

interface Answer {
  status: number;
  location: string | null;
  contentType: string | null;
}

/** One GET, resolved with the status line and headers as soon as they arrive; the body is never read. */
function head(url: URL, signal: AbortSignal, allowPrivate: boolean): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    // A literal address is connected to without a lookup: check it here.
    if (!allowPrivate && isIP(host) !== 0 && isSpecialAddress(host)) return reject(privateAddressError());
    const request = (url.protocol === 'https:' ? https : http).request(url, {
      method: 'GET',
      signal,
      // No ICY metadata interleaved in the stream: only the headers matter here.
      headers: { 'icy-metadata': '0', 'user-agent': 'Loa relay probe' },
      ...(allowPrivate ? {} : { lookup: publicOnlyLookup }),
      // A fresh connection each time, so that every hop's address is checked.
      agent: false,
    });
    request.on('response', (res) => {
      const header = (name: string) => {
        const value = res.headers[name];
        return typeof value === 'string' ? value : null;
      };
      resolve({
        status: res.statusCode ?? 0,
        location: header('location'),
        contentType: header('content-type'),
      });
      // Never read a live stream (or anything else the server sends) beyond what has already arrived.
      res.destroy();
    });
    request.on('error', reject);
    request.end();
  });
}

export function relayProber(options: {
  now: () => Date;
  timeoutMs?: number;
  /** RELAY_PROBE_PRIVATE_NETWORKS: also probe loopback and private addresses (a station on the LAN, tests). */
  allowPrivateNetworks?: boolean;
}): RelayProber {
  const timeoutMs = options.timeoutMs ?? PROBE_TIMEOUT_MS;
  const allowPrivate = options.allowPrivateNetworks ?? false;
  return async (url) => {
    const checkedAt = options.now().toISOString();
    const failed = (error: string, status: number | null = null): RelayProbe => ({
      reachable: false,
      status,
      contentType: null,
      checkedAt,
      error,
    });
    // One deadline for the whole chain of redirects.
    const signal = AbortSignal.timeout(timeoutMs);
    let target = url;
    try {
      for (let redirects = 0; ; redirects++) {
        // Redirects by hand: only this loop can check each hop and say which one went wrong.
        const res = await head(new URL(target), signal, allowPrivate);
        const location = res.status >= 300 && res.status < 400 ? res.location : null;
        if (location !== null) {
          if (redirects >= MAX_REDIRECTS) return failed(`more than ${MAX_REDIRECTS} redirects`, res.status);
          let next: URL;
          try {
            next = new URL(location, target);
          } catch {
            return failed('the server redirected to an address that is not a URL', res.status);
          }
          if (next.protocol !== 'http:' && next.protocol !== 'https:') {
            return failed(
              `the server redirected to a ${next.protocol.slice(0, 20)} address; only http and https are followed`,
              res.status,
            );
          }
          target = next.href;
          continue;
        }
        const contentType = res.contentType?.slice(0, MAX_CONTENT_TYPE) ?? null;
        const ok = res.status >= 200 && res.status < 300;
        return {
          reachable: ok,
          status: res.status,
          contentType,
          checkedAt,
          ...(ok ? {} : { error: `the server answered HTTP ${res.status}` }),
        };
      }
    } catch (err) {
      return failed(describe(err, timeoutMs));
    }
  };
}

/** The probe as sentences for the editor; empty when the stream looked fine. */
export function probeWarnings(probe: RelayProbe | null): string[] {
  if (!probe) return [];
  if (!probe.reachable) {
    return [
      `The stream did not answer when it was saved (${probe.error ?? 'unreachable'}); check it before airing`,
    ];
  }
  if (!isStreamContentType(probe.contentType)) {
    return [`The stream answered with content type ${probe.contentType ?? '(none)'}, which is not audio`];
  }
  return [];
}
