/**
 * TLS for the simulated firmware, as docs/protocol.md §"Transport" asks of real firmware: the device trusts the
 * CA bundle it ships with (`--ca FILE`), and only that, for MQTT over TLS (mqtts://, wss://) and for HTTPS
 * media downloads; the server's certificate chain and host name are always verified.
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/**
 * Reads a PEM bundle (one or more CA certificates) and checks that it holds certificates, so a wrong path or
 * a key file given by mistake fails at start with its name rather than as an unexplained TLS error later.
 */
export function readCaBundle(file: string): string {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (error) {
    throw new Error(`cannot read the CA file ${file}: ${(error as Error).message}`, { cause: error });
  }
  const certificates = pem.match(PEM_CERTIFICATE) ?? [];
  if (certificates.length === 0)
    throw new Error(`${file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  for (const certificate of certificates) {
    try {
      new X509Certificate(certificate);
    } catch (error) {
      throw new Error(`${file}: a certificate cannot be read: ${(error as Error).message}`, { cause: error });
    }
  }
  return pem;
}

/** OpenSSL / Node codes of a server certificate the client does not accept, with what they mean in practice. */
const CERTIFICATE_PROBLEMS: Record<string, string> = {
  SELF_SIGNED_CERT_IN_CHAIN: 'its chain ends in a CA this device does not trust',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'it is self-signed and not trusted by this device',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'it is signed by a CA this device does not trust',
  UNABLE_TO_GET_ISSUER_CERT: 'it is signed by a CA this device does not trust',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    'it is signed by a CA this device does not trust (or the chain is incomplete)',
  CERT_SIGNATURE_FAILURE: 'its signature does not verify (a trusted CA of the same name, but another key?)',
  CERT_HAS_EXPIRED: 'it has expired (or this device’s clock is ahead)',
  CERT_NOT_YET_VALID: 'it is not valid yet (or this device’s clock is behind)',
  ERR_TLS_CERT_ALTNAME_INVALID: 'it does not name the host this device connected to',
};

/**
 * A readable sentence for an error that is the server's certificate being refused, or undefined for any other
 * error. Such a refusal does not cure itself by retrying, unlike a refused TCP connection.
 */
export function describeCertificateError(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return undefined;
  const problem = CERTIFICATE_PROBLEMS[code];
  if (problem === undefined) return undefined;
  return `the server's TLS certificate is not accepted: ${problem} (${code}: ${(error as Error).message})`;
}

/**
 * GET with the CA bundle as the only trusted roots, answering a WHATWG Response like fetch. Node 20's built-in
 * fetch cannot be given a CA per request (that takes an Agent from the separate undici package), whereas
 * node:https takes `ca` directly. Redirects are followed as fetch's `redirect: 'follow'` does (at most 20);
 * errors are wrapped as fetch wraps them (a TypeError whose `cause` is the socket or TLS error).
 */
export async function fetchTrusting(
  url: string,
  init: { headers: Record<string, string>; signal: AbortSignal },
  ca: string,
  redirects = 0,
): Promise<Response> {
  const target = new URL(url);
  const client = target.protocol === 'https:' ? https : target.protocol === 'http:' ? http : undefined;
  if (!client)
    throw new TypeError(`fetch failed`, { cause: new Error(`unsupported protocol ${target.protocol}`) });
  const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
    const request = client.get(target, {
      headers: init.headers,
      signal: init.signal,
      ...(client === https ? { ca } : {}),
    });
    request.once('response', resolve);
    request.once('error', (error) => reject(new TypeError('fetch failed', { cause: error })));
  });
  const status = response.statusCode ?? 0;
  const location = response.headers.location;
  if ([301, 302, 303, 307, 308].includes(status) && location) {
    response.resume();
    if (redirects >= 20) throw new TypeError('fetch failed', { cause: new Error('redirect count exceeded') });
    return fetchTrusting(new URL(location, target).href, init, ca, redirects + 1);
  }
  const headers = new Headers();
  for (let i = 0; i + 1 < response.rawHeaders.length; i += 2) {
    headers.append(response.rawHeaders[i]!, response.rawHeaders[i + 1]!);
  }
  const empty = status === 204 || status === 304;
  if (empty) response.resume();
  // A body cut off mid-way errors this stream, as undici's does: the caller sees a broken link and resumes.
  const body = empty ? null : (Readable.toWeb(response) as ReadableStream<Uint8Array>);
  return new Response(body, { status, statusText: response.statusMessage ?? '', headers });
}
