/**
 * The Loa server under test for bench/health.ts: started by bench/lib/loa.ts like bench/commands.ts does,
 * plus what this benchmark needs: the heartbeat the simulated devices really keep, and a metrics token.
 */
import { startLoa, type LoaServer } from './loa.js';

export interface HealthServer extends LoaServer {
  /** Bearer token of GET /metrics. */
  metricsToken: string;
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
  // Loopback only and thrown away with the process; the config wants at least 16 characters.
  const metricsToken = 'bench-health-metrics-token';
  const server = await startLoa({
    repoRoot: options.repoRoot,
    maxConnectsPerSecond: options.maxConnectsPerSecond,
    cpuProfDir: options.cpuProfDir,
    env: { HEARTBEAT_S: String(options.heartbeatS), METRICS_TOKEN: metricsToken },
  });
  return { ...server, metricsToken };
}
