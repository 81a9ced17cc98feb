/**
 * The Loa server under test, as a child process on loopback ports with a fresh database, and the two
 * command API calls the benchmark makes (send a play, read its delivery counts).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { Child, LOOPBACK, forgetTempDir, freePorts, trackTempDir } from './processes.js';

export interface LoaServer {
  child: Child;
  /** http://127.0.0.1:<port> */
  api: string;
  /** mqtt://127.0.0.1:<port> */
  mqttUrl: string;
  /** The SQLite file, for read-only row counts from a bench. */
  databaseFile: string;
  adminPassword: string;
  /** Stops the server (gracefully, then by force) and deletes its data directory. */
  stop(): Promise<void>;
}

export interface StartLoaOptions {
  repoRoot: string;
  /** Connects accepted per second by the broker's preConnect cap (MQTT_MAX_CONNECTS_PER_S). */
  maxConnectsPerSecond: number;
  /** Directory for a V8 CPU profile of the server (written when it exits), or undefined for none. */
  cpuProfDir?: string | undefined;
  /** More environment for the server (a benchmark's own settings). */
  env?: Record<string, string>;
}

export async function startLoa(options: StartLoaOptions): Promise<LoaServer> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'loa-bench-'));
  trackTempDir(dataDir);
  const [httpPort, mqttPort] = await freePorts(2);
  if (httpPort === undefined || mqttPort === undefined) throw new Error('no free ports');
  const adminPassword = 'bench-admin-password';
  const child = Child.start({
    name: 'loa',
    // src/server.ts, run in the child's own process by a launcher that stops it if the bench dies.
    script: 'bench/lib/tied-to-bench.ts',
    args: ['src/server.ts'],
    ipc: true,
    cwd: options.repoRoot,
    env: {
      ...process.env,
      HOST: LOOPBACK,
      PORT: String(httpPort),
      MQTT_HOST: LOOPBACK,
      MQTT_PORT: String(mqttPort),
      DATA_DIR: dataDir,
      // warn, not silent: a refused device or a failed write must still show up in the bench's stderr.
      LOG_LEVEL: 'warn',
      LOG_PRETTY: 'false',
      ADMIN_PASSWORD: adminPassword,
      MQTT_MAX_CONNECTS_PER_S: String(options.maxConnectsPerSecond),
      // Every simulated device connects from the one loopback address: no per-address caps (docs/broker.md).
      MQTT_MAX_CONNECTS_PER_ADDRESS_PER_S: '0',
      MQTT_MAX_CONNECTIONS_PER_ADDRESS: '0',
      // Deliveries of webhooks for alerts would leave the machine: never, whatever the caller's env says.
      ALERT_WEBHOOK_URL: '',
      ...options.env,
      BENCH_REMOVE_ON_EXIT: dataDir,
    },
    nodeFlags: options.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfDir}`] : [],
  });
  const api = `http://${LOOPBACK}:${httpPort}`;
  const stop = async (): Promise<void> => {
    await child.stop();
    await rm(dataDir, { recursive: true, force: true });
    forgetTempDir(dataDir);
  };
  try {
    await waitForHealth(api, child, 60_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    child,
    api,
    mqttUrl: `mqtt://${LOOPBACK}:${mqttPort}`,
    databaseFile: path.join(dataDir, 'loa.sqlite'),
    adminPassword,
    stop,
  };
}

/** Polls /healthz until it answers 200; fails early if the server process dies (bad config, port taken). */
async function waitForHealth(api: string, child: Child, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (!child.running) throw new Error('the Loa server exited during start-up (see its output above)');
    try {
      const response = await fetch(`${api}/healthz`);
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    await sleep(100);
  }
  throw new Error(`the Loa server did not answer /healthz within ${timeoutMs} ms`);
}

async function call<T>(
  api: string,
  token: string,
  method: 'GET' | 'POST',
  urlPath: string,
  body: unknown,
  schema: z.ZodType<T>,
): Promise<T> {
  const response = await fetch(`${api}${urlPath}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      accept: 'application/json',
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${urlPath}: HTTP ${response.status}: ${text.slice(0, 300)}`);
  return schema.parse(JSON.parse(text));
}

const acceptedSchema = z.object({
  id: z.string(),
  targets: z.number(),
  sent: z.number(),
  expiresAt: z.string(),
});
export type CommandAccepted = z.infer<typeof acceptedSchema>;

/** POST /api/v1/commands: one play of a media file to every device under the given areas. */
export function sendPlay(
  api: string,
  token: string,
  areaIds: string[],
  source: { url: string; sha256: string; durationMs: number },
): Promise<CommandAccepted> {
  const body = { type: 'play', params: { source: { kind: 'media', ...source } }, targets: { areaIds } };
  return call(api, token, 'POST', '/api/v1/commands', body, acceptedSchema);
}

const STATUSES = ['pending', 'received', 'done', 'failed', 'rejected', 'expired', 'offline'] as const;
const countsSchema = z.object(
  Object.fromEntries(STATUSES.map((s) => [s, z.number()])) as Record<(typeof STATUSES)[number], z.ZodNumber>,
);
const detailSchema = z.object({ counts: countsSchema });
export type DeliveryCounts = z.infer<typeof countsSchema>;

/**
 * GET /api/v1/commands/:id?status=pending → the delivery counts. The filter only shortens the device list
 * in the answer (the counts always cover every target), which keeps each poll cheap to send and parse.
 */
export async function deliveryCounts(api: string, token: string, commandId: string): Promise<DeliveryCounts> {
  const detail = await call(
    api,
    token,
    'GET',
    `/api/v1/commands/${encodeURIComponent(commandId)}?status=pending`,
    undefined,
    detailSchema,
  );
  return detail.counts;
}
