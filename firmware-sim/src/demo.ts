/**
 * `npm run demo`: a commune on one laptop. Starts the Loa server (unless --api points at a running one),
 * creates a small area tree with one station and ten loudspeaker clusters, runs them in the simulator and
 * prints what to try. Ctrl-C stops the simulator, then the server.
 *
 * The server's data lives in DATA_DIR (default data/demo); the demo keeps the ids and device secrets it
 * created there too (firmware-sim-demo.json), so a second run reuses the same commune instead of creating
 * another. PORT, MQTT_PORT, DATA_DIR and ADMIN_PASSWORD mean what they mean to `npm start`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { createArea, createDevice, deviceExists, login, type DeviceCredentials } from './api.js';
import { DEMO_USAGE, parseDemoOptions, UsageError } from './demo-options.js';
import { Fleet } from './fleet.js';
import { Reporter, logLine } from './reporter.js';
import { shutdownSignal } from './signals.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** What the demo keeps in the server's data directory. */
function demoFiles(dataDir: string) {
  return {
    state: path.join(dataDir, 'firmware-sim-demo.json'),
    password: path.join(dataDir, 'demo-admin-password'),
    serverLog: path.join(dataDir, 'server.log'),
  };
}
type DemoFiles = ReturnType<typeof demoFiles>;

const HAMLETS = ['Thôn Đông', 'Thôn Tây', 'Thôn Nam'] as const;
const CLUSTERS = 10;

const demoStateSchema = z.object({
  provinceId: z.string(),
  communeId: z.string(),
  hamletIds: z.array(z.string()),
  devices: z.array(
    z.object({ id: z.string(), username: z.string(), password: z.string(), name: z.string().optional() }),
  ),
});
type DemoState = z.infer<typeof demoStateSchema>;

async function healthy(api: string): Promise<boolean> {
  try {
    const response = await fetch(`${api}/healthz`, { signal: AbortSignal.timeout(2_000) });
    const body: unknown = await response.json();
    return response.status === 200 && (body as { status?: unknown }).status === 'ok';
  } catch {
    return false;
  }
}

/** The demo admin password: given, or generated once and kept next to the demo's data. */
function demoPassword(given: string | undefined, file: string): string {
  if (given) return given;
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const generated = randomBytes(12).toString('base64url');
  writeFileSync(file, `${generated}\n`, { mode: 0o600 });
  return generated;
}

/**
 * Runs `node --import tsx src/server.ts` rather than `npx tsx …`: no npm wrapper between us and the
 * server, so our SIGTERM reaches it. It gets its own process group so that Ctrl-C reaches only us and the
 * simulated devices can disconnect before the server goes away.
 */
function startServer(
  password: string,
  where: { port: number; mqttPort: number; dataDir: string },
  logFile: string,
): ChildProcess {
  const log = openSync(logFile, 'a');
  const server = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: ROOT,
    env: {
      ...process.env,
      PORT: String(where.port),
      MQTT_PORT: String(where.mqttPort),
      DATA_DIR: where.dataDir,
      ADMIN_PASSWORD: password,
    },
    stdio: ['ignore', log, log],
    detached: true,
  });
  // If the demo dies without stopping it, the server must not outlive it.
  process.on('exit', () => server.kill('SIGTERM'));
  return server;
}

function tail(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function waitHealthy(
  api: string,
  server: { process: ChildProcess; log: string } | undefined,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server && server.process.exitCode !== null) {
      throw new Error(
        `the server exited with code ${server.process.exitCode}; last lines of ${server.log}:\n` +
          `${tail(server.log, 20)}\n(a port in use? choose others with PORT=… MQTT_PORT=… npm run demo)`,
      );
    }
    if (await healthy(api)) return;
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
  throw new Error(`${api}/healthz did not answer {status:"ok"} within ${timeoutMs / 1_000} s`);
}

async function createCommune(api: string, token: string): Promise<DemoState> {
  const provinceId = await createArea(api, token, { name: 'Tỉnh Quảng Trị', level: 'province' });
  const communeId = await createArea(api, token, {
    name: 'Xã Hải Lăng',
    level: 'commune',
    parentId: provinceId,
  });
  const hamletIds: string[] = [];
  for (const name of HAMLETS)
    hamletIds.push(await createArea(api, token, { name, level: 'hamlet', parentId: communeId }));
  const devices: DeviceCredentials[] = [
    await createDevice(api, token, {
      name: 'Đài truyền thanh xã Hải Lăng',
      kind: 'station',
      areaId: communeId,
    }),
  ];
  for (let i = 0; i < CLUSTERS; i += 1) {
    const hamlet = i % HAMLETS.length;
    const areaId = hamletIds[hamlet] as string;
    const number = Math.floor(i / HAMLETS.length) + 1;
    devices.push(
      await createDevice(api, token, {
        name: `Cụm loa ${HAMLETS[hamlet]} ${number}`,
        kind: 'cluster',
        areaId,
      }),
    );
  }
  return { provinceId, communeId, hamletIds, devices };
}

function instructions(
  api: string,
  password: string,
  state: DemoState,
  serverLog: string | undefined,
): string {
  // A real checksum of something, so the example passes validation as it stands.
  const sha256 = createHash('sha256').update('Bản tin sáng xã Hải Lăng').digest('hex');
  const login = JSON.stringify({ username: 'admin', password });
  const play = JSON.stringify({
    type: 'play',
    priority: 'normal',
    targets: { areaIds: [state.communeId] },
    params: {
      source: { kind: 'media', url: 'https://example.org/ban-tin-sang.mp3', sha256, durationMs: 30_000 },
    },
  });
  const emergency = JSON.stringify({
    type: 'play',
    priority: 'emergency',
    targets: { areaIds: [state.hamletIds[0]] },
    params: {
      source: { kind: 'media', url: 'https://example.org/canh-bao-lu.mp3', sha256, durationMs: 60_000 },
      repeat: 2,
    },
  });
  return `
Loa demo is running: 1 station and ${CLUSTERS} clusters in Xã Hải Lăng (${HAMLETS.join(', ')}).
  API docs      ${api}/docs
  admin login   admin / ${password}${serverLog ? `\n  server log    ${serverLog}` : ''}
  commune id    ${state.communeId}   hamlet ids ${state.hamletIds.join(' ')}

Try (bash):
  TOKEN=$(curl -s -X POST ${api}/api/v1/auth/login -H 'content-type: application/json' \\
    -d '${login}' | sed -E 's/.*"token":"([^"]+)".*/\\1/')

  # a 30 s bulletin to the whole commune (answers 202 with the command id)
  curl -s -X POST ${api}/api/v1/commands -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
    -d '${play}'

  # an emergency to ${HAMLETS[0]}: pre-empts what plays there (logged "interrupted")
  curl -s -X POST ${api}/api/v1/commands -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
    -d '${emergency}'

  # which loudspeakers did and did not play it
  curl -s ${api}/api/v1/commands/COMMAND_ID -H "authorization: Bearer $TOKEN"

Ctrl-C stops the simulator and the server.
`;
}

async function stopServer(server: ChildProcess): Promise<void> {
  if (server.exitCode !== null || server.signalCode !== null) return;
  const exited = once(server, 'exit');
  server.kill('SIGTERM');
  const force = setTimeout(() => server.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(force);
}

async function main(): Promise<number> {
  let options;
  try {
    options = parseDemoOptions(process.argv.slice(2), process.env, process.cwd());
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`error: ${error.message}\n\n${DEMO_USAGE}`);
    return 2;
  }
  if (options === 'help') {
    console.log(DEMO_USAGE);
    return 0;
  }

  const { api } = options;
  let server: { process: ChildProcess; log: string } | undefined;
  let files: DemoFiles | undefined;
  let password: string;
  if (options.server) {
    if (await healthy(api)) {
      throw new Error(
        `a server already answers at ${api}; use it with: npm run demo -- --api ${api}, ` +
          'or start another on free ports: PORT=… MQTT_PORT=… npm run demo',
      );
    }
    files = demoFiles(options.server.dataDir);
    mkdirSync(options.server.dataDir, { recursive: true });
    password = demoPassword(options.password, files.password);
    logLine(`starting the Loa server (log: ${path.relative(process.cwd(), files.serverLog)})`);
    server = { process: startServer(password, options.server, files.serverLog), log: files.serverLog };
  } else {
    if (!options.password)
      throw new Error('with --api, give the admin password with --password or ADMIN_PASSWORD');
    password = options.password;
  }

  let fleet: Fleet | undefined;
  let reporter: Reporter | undefined;
  try {
    await waitHealthy(api, server, 90_000);
    const token = await login(api, 'admin', password);

    // Reuse what an earlier run created on the same database (if that database still has it); a server we
    // did not start gets a new tree.
    let state =
      files && existsSync(files.state)
        ? demoStateSchema.parse(JSON.parse(readFileSync(files.state, 'utf8')))
        : undefined;
    const station = state?.devices[0];
    if (files && state && station && (await deviceExists(api, token, station.id))) {
      logLine(`reusing the demo commune and devices from ${path.relative(process.cwd(), files.state)}`);
    } else {
      state = await createCommune(api, token);
      logLine(
        `created Tỉnh Quảng Trị › Xã Hải Lăng › ${HAMLETS.join(', ')} and ${state.devices.length} devices`,
      );
      if (files) writeFileSync(files.state, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    }

    // The example plays below name placeholder files: the demo's devices play without downloading, so
    // that they work as printed. A play of an approved programme (source.kind programme) works either way.
    fleet = new Fleet(state.devices, { mqttUrl: options.mqttUrl, speed: options.speed, noDownload: true });
    reporter = new Reporter(fleet);
    reporter.start(60_000);
    const report = await fleet.connectAll();
    if (report.failed.length > 0) {
      logLine(
        `${report.failed.length} device(s) did not connect: ${report.failed.map((f) => f.error).join('; ')}`,
      );
      if (options.server)
        logLine(
          `if their credentials are stale, delete ${path.relative(process.cwd(), options.server.dataDir)} and run again`,
        );
    }
    // Ctrl-C or SIGTERM, or the server dying under us. Listening before the instructions are printed: a
    // script that stops the demo as soon as it reads them must not find the default handler still in place.
    const stopped = new Promise<string>((resolve) => {
      void shutdownSignal().then(resolve);
      server?.process.once('exit', (code, signal) =>
        resolve(`the server exited (${signal ?? `code ${code}`})`),
      );
    });
    console.log(
      instructions(api, password, state, files ? path.relative(process.cwd(), files.serverLog) : undefined),
    );
    logLine(`${await stopped}: stopping`);
    return 0;
  } finally {
    reporter?.stop();
    await fleet?.closeAll();
    if (server) await stopServer(server.process);
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
