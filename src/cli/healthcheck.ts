/**
 * The Docker HEALTHCHECK: exits 0 when this container's Loa answers GET /readyz with 200, 1 otherwise.
 * It asks the address the server listens on, read from the same HOST and PORT variables: a wildcard
 * (0.0.0.0, ::) is reached through loopback, a single interface only through itself — asking 127.0.0.1
 * when HOST names one interface would report a healthy server as down.
 * Deliberately tiny: no configuration parsing, no database, nothing that could fail for another reason.
 */
import http from 'node:http';
import https from 'node:https';
import { isIPv6 } from 'node:net';

const WILDCARDS = new Set(['0.0.0.0', '::', '[::]']);
const TIMEOUT_MS = 4_000;

function readyzUrl(env: NodeJS.ProcessEnv): URL {
  // As in src/config.ts, an empty variable means unset.
  const host = env.HOST || '0.0.0.0';
  const port = env.PORT || '3000';
  const target = WILDCARDS.has(host) ? '127.0.0.1' : host;
  // With a certificate the API port speaks HTTPS only (src/app.ts).
  const scheme = env.TLS_CERT_FILE ? 'https' : 'http';
  return new URL(`${scheme}://${isIPv6(target) ? `[${target}]` : target}:${port}/readyz`);
}

/** Status and body of GET `url`; rejects on a network error or after TIMEOUT_MS. */
function get(url: URL): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const options = {
      timeout: TIMEOUT_MS,
      // Not verified, deliberately: the probe asks this container's own server by IP address, which no
      // public certificate names, and TLS_CERT_FILE holds the server's chain without the root a client
      // would anchor it to. What it checks is that Loa answers and is ready; who it talks to is settled by
      // the address (the container's own listener), and nothing secret is sent.
      rejectUnauthorized: false,
    };
    const req = (url.protocol === 'https:' ? https : http).get(url, options, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
    req.on('error', reject);
  });
}

const url = readyzUrl(process.env);
try {
  const { status, body } = await get(url);
  const ok = status === 200;
  if (!ok) console.error(`${url.href}: ${status} ${body}`);
  process.exit(ok ? 0 : 1);
} catch (err) {
  console.error(`${url.href}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
