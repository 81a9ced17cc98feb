/**
 * The demo's options: command-line flags plus the variables `npm start` reads (PORT, MQTT_PORT, DATA_DIR,
 * ADMIN_PASSWORD), so that someone whose port 3000 is taken runs `PORT=3100 npm run demo` as they would
 * `PORT=3100 npm start`. Pure (argv and env in, options out) so it can be tested without starting anything.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';

export const DEMO_USAGE = `Loa demo: a commune with one station and ten loudspeaker clusters, simulated.

Usage: npm run demo [-- options]
  --api URL        use a Loa server that is already running instead of starting one
  --mqtt URL       its broker (default: the API's host, port MQTT_PORT or 1883)
  --password PW    admin password (default: ADMIN_PASSWORD, or generated and kept in the data directory)
  --speed X        simulated time runs X times faster (default 1: a 30 s bulletin plays 30 s)
  -h, --help       this text

Without --api the server is started as \`npm start\` would be, with these variables (defaults in brackets):
  PORT [3000]  MQTT_PORT [1883]  DATA_DIR [./data/demo]  ADMIN_PASSWORD [generated, kept in DATA_DIR]`;

export class UsageError extends Error {}

export interface DemoOptions {
  /** Base URL of the API, without a trailing slash. */
  api: string;
  mqttUrl: string;
  /** Set when the demo starts its own server: where and how. */
  server?: { port: number; mqttPort: number; dataDir: string };
  /** Given by flag or variable; otherwise the demo generates one and keeps it in `server.dataDir`. */
  password?: string;
  speed: number;
}

function port(env: Record<string, string | undefined>, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  // 0 ("any free port") would leave the demo not knowing where its server listens.
  if (!/^\d+$/.test(raw) || value < 1 || value > 65_535)
    throw new UsageError(`${name} must be a port number from 1 to 65535, got "${raw}"`);
  return value;
}

export function parseDemoOptions(
  argv: readonly string[],
  env: Record<string, string | undefined>,
  cwd: string,
): DemoOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        api: { type: 'string' },
        mqtt: { type: 'string' },
        password: { type: 'string' },
        speed: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return 'help';
  for (const name of ['api', 'mqtt'] as const) {
    const value = values[name];
    if (value !== undefined && !URL.canParse(value))
      throw new UsageError(`--${name} is not a URL: "${value}"`);
  }
  const speed = values.speed === undefined ? 1 : Number(values.speed);
  if (!Number.isFinite(speed) || speed <= 0)
    throw new UsageError(`--speed must be a number > 0, got "${values.speed}"`);

  // LOA_ADMIN_PASSWORD was the demo's own name for it before it read what `npm start` reads.
  const password = values.password || env.ADMIN_PASSWORD || env.LOA_ADMIN_PASSWORD || undefined;
  // The server refuses shorter ones (src/config.ts); say so now rather than through its log.
  if (password !== undefined && password.length < 10)
    throw new UsageError('the admin password must be at least 10 characters');
  const mqttPort = port(env, 'MQTT_PORT', 1883);

  if (values.api !== undefined) {
    const api = values.api.replace(/\/+$/, '');
    return {
      api,
      mqttUrl: values.mqtt ?? `mqtt://${new URL(api).hostname}:${mqttPort}`,
      ...(password !== undefined ? { password } : {}),
      speed,
    };
  }
  const httpPort = port(env, 'PORT', 3000);
  return {
    api: `http://localhost:${httpPort}`,
    mqttUrl: values.mqtt ?? `mqtt://localhost:${mqttPort}`,
    server: {
      port: httpPort,
      mqttPort,
      dataDir: path.resolve(cwd, env.DATA_DIR || 'data/demo'),
    },
    ...(password !== undefined ? { password } : {}),
    speed,
  };
}
