/**
 * The Loa server under test for bench/health.ts, as a child process on loopback ports with a fresh
 * database. Started the same way as bench/lib/loa.ts does for bench/commands.ts (through
 * tied-to-bench.ts, so it stops when the bench dies), but with the environment this benchmark needs and
 * that startLoa does not take: the heartbeat the simulated devices really keep, and a metrics token.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Child, LOOPBACK, forgetTempDir, freePorts, trackTempDir } from './processes.js';

export interface HealthServer {
  child: Child;
  /** http://127.0.0.1:<port> */
  api: string;
  /** mqtt://127.0.0.1:<port> */
  mqttUrl: string;
  /** The SQLite file, for read-only row counts from the bench. */
  databaseFile: string;
  adminPassword: string;
  /** Bearer token of GET /metrics. */
  metricsToken: string;
  /** Stops the server (SIGTERM: graceful close, then SIGKILL) and deletes its data directory. */
  stop(): Promise<void>;
}

export interface StartHealthServerOptions {
  repoRoot: string;
  /** HEARTBEAT_S: the telemetry interval, in real seconds, the server expects from every device. */
  heartbeatS: number;
  /** MQTT_MAX_CONNECTS_PER_S */
  maxConnectsPerSecond: number;
  /** Directory for a V8 CPU profile of the server (written when it exits), or undefined for none. */
  cpuProfDir: string | undefined;
}

export async function startHealthServer(options: StartHealthServerOptions): Promise<HealthServer> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'loa-bench-health-'));
  trackTempDir(dataDir);
  const [httpPort, mqttPort] = await freePorts(2);
  if (httpPort === undefined || mqttPort === undefined) throw new Error('no free ports');
  const adminPassword = 'bench-admin-password';
  // Loopback only and thrown away with the process; the config wants at least 16 characters.
  const metricsToken = 'bench-health-metrics-token';
  const child = Child.start({
    name: 'loa',
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
      // warn, not silent: a refused device or a failed write must still show up in the bench's stderr;
      // info would log every device coming online, 10,000 lines the bench would have to forward.
      LOG_LEVEL: 'warn',
      LOG_PRETTY: 'false',
      ADMIN_PASSWORD: adminPassword,
      MQTT_MAX_CONNECTS_PER_S: String(options.maxConnectsPerSecond),
      HEARTBEAT_S: String(options.heartbeatS),
      METRICS_TOKEN: metricsToken,
      // Deliveries of webhooks for alerts would leave the machine: never, whatever the caller's env says.
      ALERT_WEBHOOK_URL: '',
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
    metricsToken,
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
