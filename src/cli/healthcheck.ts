/**
 * The Docker HEALTHCHECK: exits 0 when this container's Loa answers GET /readyz with 200, 1 otherwise.
 * It asks the address the server listens on, read from the same HOST and PORT variables: a wildcard
 * (0.0.0.0, ::) is reached through loopback, a single interface only through itself — asking 127.0.0.1
 * when HOST names one interface would report a healthy server as down.
 * Deliberately tiny: no configuration parsing, no database, nothing that could fail for another reason.
 */
import { isIPv6 } from 'node:net';

const WILDCARDS = new Set(['0.0.0.0', '::', '[::]']);

function readyzUrl(env: NodeJS.ProcessEnv): string {
  // As in src/config.ts, an empty variable means unset.
  const host = env.HOST || '0.0.0.0';
  const port = env.PORT || '3000';
  const target = WILDCARDS.has(host) ? '127.0.0.1' : host;
  return `http://${isIPv6(target) ? `[${target}]` : target}:${port}/readyz`;
}

const url = readyzUrl(process.env);
try {
  const res = await fetch(url, { signal: AbortSignal.timeout(4_000) });
  if (!res.ok) console.error(`${url}: ${res.status} ${await res.text()}`);
  process.exit(res.ok ? 0 : 1);
} catch (err) {
  console.error(`${url}: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
}
