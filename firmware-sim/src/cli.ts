/**
 * `npm run sim -- …`: provisions simulated devices through the Loa API (or reads existing credentials)
 * and runs them against the broker until Ctrl-C. See firmware-sim/README.md and `--help`.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ProvisionError, login, provisionDevices, type DeviceCredentials, type DeviceKind } from './api.js';
import type { Faults } from './device.js';
import { Fleet, type ConnectReport, type FleetStats } from './fleet.js';
import { Reporter, formatSummary, logLine, sumStats } from './reporter.js';
import { shutdownSignal } from './signals.js';
import { readCaBundle } from './tls.js';

/** What `--fault-rate` hands out: each faulty device gets one of these. */
const FAULT_PRESETS = {
  dropAcks: { dropAcks: 0.5 },
  // The acks of the device's first command are lost: the server must re-send it, and hears `done` then.
  dropFirstAcks: { dropAcks: { first: 2 } },
  slowAcks: { ackDelayMs: 5_000 },
  failPlayback: { failPlayback: true },
  speakerFault: { speakerFault: true },
  silent: { silent: true },
  powerCut: { powerCut: true },
  flapping: { flapping: { upMs: 60_000, downMs: 10_000 } },
  corruptDownloads: { corruptDownloads: true },
} satisfies Record<string, Partial<Faults>>;
type FaultName = keyof typeof FAULT_PRESETS;
const FAULT_NAMES = Object.keys(FAULT_PRESETS) as FaultName[];
const USAGE = `Loa firmware simulator: runs simulated stations / loudspeaker clusters (device protocol v1).

Usage:
  npm run sim -- --api URL --area AREA_ID --devices N [options]   provision N devices, then run them
  npm run sim -- --devices-file creds.json [--mqtt URL] [options]   run devices that already exist

Provisioning (POST /api/v1/devices; the secrets are shown once, keep them with --save-credentials):
  --api URL                 Loa HTTP API, e.g. http://localhost:3000
  --user NAME               API user (default admin)
  --password PASSWORD       API password (default: environment variable LOA_PASSWORD)
  --area ID                 area the new devices belong to
  --devices N               how many devices (with --devices-file: run only the first N)
  --kind station|cluster    device kind (default cluster)
  --name-prefix TEXT        device names are "TEXT 001", "TEXT 002", … (default "Cụm loa mô phỏng")
  --save-credentials FILE   write the new devices' credentials (JSON, mode 600) for --devices-file

Running:
  --devices-file FILE       JSON array of { "id" or "clientId", "username", "password" }
  --mqtt URL                broker (default: the API's host, port 1883, or mqtts://…:8883 when --api is
                            https://); ws://host:3000/mqtt, mqtts://host:8883, wss://host/mqtt also work
  --ca FILE                 PEM CA bundle the devices trust, and only it, for mqtts://, wss:// and HTTPS
                            media downloads (e.g. data/tls/ca.pem from npm run tls:dev); default: Node's roots
  --speed X                 simulated time runs X times faster: media, heartbeat, reboot (default 1)
  --heartbeat-s S           telemetry interval in simulated seconds (default 30)
  --keepalive-s S           MQTT keepalive in real seconds, at most 120 (default 60)
  --firmware VERSION        firmware version reported in state (default 1.4.2)
  --no-download             play media without downloading it (no HTTP request, checksum taken as
                            verified): keeps very large fleets cheap; by default every device fetches
                            a play's URL, verifies its SHA-256 and keeps the last 16 files by hash
  --connect-concurrency N   connection attempts in flight at once (default 200)
  --workers N               spread the devices over N processes (default 1)
  --summary-s S             seconds between summary lines (default 10)
  --fault-rate P            share of devices (0..1) given one fault at random (default 0)
  --faults LIST             faults to pick from, comma-separated (default all):
                            ${FAULT_NAMES.join(',')}
  -h, --help                this text

Exit codes: 0 after Ctrl-C / SIGTERM, 1 on an error, 2 on bad arguments.`;

class UsageError extends Error {}

/** Settings every process of a run shares (the parent passes them to its workers). */
interface RunConfig {
  mqttUrl: string;
  /** The PEM text, not the path: workers get it over IPC and need not read the file again. */
  ca: string | undefined;
  speed: number;
  heartbeatS: number;
  keepaliveS: number;
  firmware: string;
  connectConcurrency: number;
  noDownload: boolean;
}

interface CliOptions extends RunConfig {
  api: string | undefined;
  user: string;
  password: string | undefined;
  area: string | undefined;
  devices: number | undefined;
  kind: DeviceKind;
  namePrefix: string;
  saveCredentials: string | undefined;
  devicesFile: string | undefined;
  workers: number;
  summaryS: number;
  faultRate: number;
  faults: FaultName[];
}

type PlannedDevice = DeviceCredentials & { fault?: FaultName };

type ToWorker =
  { type: 'run'; index: number; config: RunConfig; devices: PlannedDevice[] } | { type: 'stop' };
type FromWorker = { type: 'connected'; report: ConnectReport } | { type: 'stats'; stats: FleetStats };

function numberOption(
  name: string,
  raw: string | undefined,
  fallback: number,
  min: number,
  max = Infinity,
  integer = false,
): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (
    raw.trim() === '' ||
    !Number.isFinite(value) ||
    value < min ||
    value > max ||
    (integer && !Number.isInteger(value))
  ) {
    const range = max === Infinity ? `>= ${min}` : `${min}..${max}`;
    throw new UsageError(`--${name} must be ${integer ? 'an integer' : 'a number'} ${range}, got "${raw}"`);
  }
  return value;
}

function parseCli(argv: string[]): CliOptions | 'help' {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        api: { type: 'string' },
        mqtt: { type: 'string' },
        ca: { type: 'string' },
        user: { type: 'string' },
        password: { type: 'string' },
        area: { type: 'string' },
        devices: { type: 'string' },
        kind: { type: 'string' },
        'name-prefix': { type: 'string' },
        'save-credentials': { type: 'string' },
        'devices-file': { type: 'string' },
        speed: { type: 'string' },
        'heartbeat-s': { type: 'string' },
        'keepalive-s': { type: 'string' },
        firmware: { type: 'string' },
        'no-download': { type: 'boolean' },
        'connect-concurrency': { type: 'string' },
        workers: { type: 'string' },
        'summary-s': { type: 'string' },
        'fault-rate': { type: 'string' },
        faults: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return 'help';

  const kind = values.kind ?? 'cluster';
  if (kind !== 'station' && kind !== 'cluster')
    throw new UsageError(`--kind must be station or cluster, got "${kind}"`);
  const faults = (values.faults ?? FAULT_NAMES.join(',')).split(',').map((f) => f.trim());
  for (const fault of faults) {
    if (!(FAULT_NAMES as string[]).includes(fault)) {
      throw new UsageError(`unknown fault "${fault}" in --faults; known: ${FAULT_NAMES.join(', ')}`);
    }
  }
  const api = values.api;
  let mqttUrl = values.mqtt;
  if (api !== undefined && !URL.canParse(api)) throw new UsageError(`--api is not a URL: "${api}"`);
  if (mqttUrl !== undefined && !URL.canParse(mqttUrl))
    throw new UsageError(`--mqtt is not a URL: "${mqttUrl}"`);
  if (mqttUrl === undefined) {
    if (api === undefined) throw new UsageError('give --api, or --mqtt with --devices-file');
    const apiUrl = new URL(api);
    // An API behind TLS means a deployment with TLS: its devices use MQTT over TLS as well.
    mqttUrl =
      apiUrl.protocol === 'https:' ? `mqtts://${apiUrl.hostname}:8883` : `mqtt://${apiUrl.hostname}:1883`;
  }
  let ca: string | undefined;
  if (values.ca !== undefined) {
    try {
      ca = readCaBundle(values.ca);
    } catch (error) {
      throw new UsageError(`--ca: ${(error as Error).message}`);
    }
  }
  const devicesFile = values['devices-file'];
  const options: CliOptions = {
    api,
    mqttUrl,
    ca,
    user: values.user ?? 'admin',
    password: values.password ?? process.env.LOA_PASSWORD,
    area: values.area,
    devices:
      values.devices === undefined
        ? undefined
        : numberOption('devices', values.devices, 0, 1, 1_000_000, true),
    kind,
    namePrefix:
      values['name-prefix'] ?? (kind === 'station' ? 'Đài truyền thanh mô phỏng' : 'Cụm loa mô phỏng'),
    saveCredentials: values['save-credentials'],
    devicesFile,
    speed: numberOption('speed', values.speed, 1, 0.001),
    heartbeatS: numberOption('heartbeat-s', values['heartbeat-s'], 30, 0.001),
    keepaliveS: numberOption('keepalive-s', values['keepalive-s'], 60, 1, 120, true),
    firmware: values.firmware ?? '1.4.2',
    noDownload: values['no-download'] ?? false,
    connectConcurrency: numberOption(
      'connect-concurrency',
      values['connect-concurrency'],
      200,
      1,
      100_000,
      true,
    ),
    workers: numberOption('workers', values.workers, 1, 1, 64, true),
    summaryS: numberOption('summary-s', values['summary-s'], 10, 0),
    faultRate: numberOption('fault-rate', values['fault-rate'], 0, 0, 1),
    faults: faults as FaultName[],
  };
  if (devicesFile === undefined) {
    if (api === undefined)
      throw new UsageError('give --api to provision devices, or --devices-file to run existing ones');
    if (options.area === undefined) throw new UsageError('--area is required to provision devices');
    if (options.devices === undefined) throw new UsageError('--devices is required to provision devices');
    if (options.password === undefined)
      throw new UsageError('--password (or LOA_PASSWORD) is required to provision devices');
  } else if (options.saveCredentials !== undefined) {
    throw new UsageError('--save-credentials only applies when provisioning, not with --devices-file');
  }
  return options;
}

const credentialsFileSchema = z
  .array(
    z
      .object({
        id: z.string().min(1).optional(),
        clientId: z.string().min(1).optional(),
        username: z.string().min(1),
        password: z.string().min(1),
        name: z.string().optional(),
      })
      .transform(({ id, clientId, username, password, name }) => ({
        id: id ?? clientId ?? username,
        username,
        password,
        name,
      })),
  )
  .min(1, 'no devices in the file');

async function readCredentials(file: string): Promise<DeviceCredentials[]> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw new Error(`cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
  const parsed = credentialsFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(
      `${file}: ${issue ? `${issue.path.join('.') || '(root)'}: ${issue.message}` : 'invalid'}`,
    );
  }
  return parsed.data;
}

async function saveCredentials(file: string, credentials: DeviceCredentials[]): Promise<void> {
  // Device secrets: readable by the owner only.
  await writeFile(file, `${JSON.stringify(credentials, null, 2)}\n`, { encoding: 'utf8', mode: 0o600 });
  logLine(`saved ${credentials.length} device credential(s) to ${file}`);
}

async function obtainCredentials(options: CliOptions): Promise<DeviceCredentials[]> {
  if (options.devicesFile !== undefined) {
    const all = await readCredentials(options.devicesFile);
    return options.devices === undefined ? all : all.slice(0, options.devices);
  }
  // parseCli guarantees these when provisioning.
  const api = options.api as string;
  const count = options.devices as number;
  const token = await login(api, options.user, options.password as string);
  logLine(
    `logged in to ${api} as ${options.user}; creating ${count} ${options.kind}(s) in area ${options.area}`,
  );
  let lastReport = 0;
  try {
    const created = await provisionDevices({
      api,
      token,
      areaId: options.area as string,
      count,
      namePrefix: options.namePrefix,
      kind: options.kind,
      onDevice: (_device, done) => {
        const now = Date.now();
        if (now - lastReport >= 1_000 || done === count) {
          lastReport = now;
          logLine(`provisioned ${done}/${count}`);
        }
      },
    });
    if (options.saveCredentials !== undefined) await saveCredentials(options.saveCredentials, created);
    return created;
  } catch (error) {
    if (
      error instanceof ProvisionError &&
      options.saveCredentials !== undefined &&
      error.created.length > 0
    ) {
      await saveCredentials(options.saveCredentials, error.created);
    }
    throw error;
  }
}

function planFaults(credentials: DeviceCredentials[], options: CliOptions): PlannedDevice[] {
  const counts = new Map<FaultName, number>();
  const planned = credentials.map((c): PlannedDevice => {
    if (options.faults.length === 0 || Math.random() >= options.faultRate) return c;
    const fault = options.faults[Math.floor(Math.random() * options.faults.length)] as FaultName;
    counts.set(fault, (counts.get(fault) ?? 0) + 1);
    return { ...c, fault };
  });
  if (counts.size > 0) logLine(`faults: ${[...counts].map(([f, n]) => `${f} ${n}`).join(', ')}`);
  return planned;
}

function buildFleet(devices: PlannedDevice[], config: RunConfig): Fleet {
  return new Fleet(devices, {
    ...config,
    faults: (_credentials, index) => {
      const fault = devices[index]?.fault;
      return fault ? FAULT_PRESETS[fault] : undefined;
    },
  });
}

function describeConnect(report: ConnectReport, total: number): string {
  const failures = report.failed
    .slice(0, 5)
    .map((f) => `${f.deviceId}: ${f.error}`)
    .join('; ');
  const more = report.failed.length > 5 ? ` (+${report.failed.length - 5} more)` : '';
  return (
    `connected ${report.connected}/${total} in ${report.elapsedMs} ms` +
    (report.failed.length > 0 ? `; ${report.failed.length} failed, still retrying: ${failures}${more}` : '')
  );
}

async function runInProcess(devices: PlannedDevice[], config: RunConfig, summaryS: number): Promise<number> {
  const fleet = buildFleet(devices, config);
  const reporter = new Reporter(fleet);
  reporter.start(summaryS * 1_000);
  logLine(
    `starting ${devices.length} device(s) against ${config.mqttUrl} (speed ${config.speed}, heartbeat ${config.heartbeatS} s` +
      `${config.noDownload ? ', no downloads' : ''})`,
  );
  const connecting = fleet.connectAll().then((report) => logLine(describeConnect(report, devices.length)));
  const signal = await shutdownSignal();
  logLine(`${signal}: closing ${devices.length} device(s)`);
  reporter.stop();
  await fleet.closeAll();
  await connecting;
  logLine(formatSummary(fleet.stats()));
  return 0;
}

/**
 * Several processes rather than worker_threads: MQTT.js does its parsing and serialising on the JS thread,
 * so one process saturates one core long before 10,000 busy devices; fork() inherits tsx's loader through
 * execArgv, each child has its own heap and GC pauses, and a crash takes down a share of the fleet, not all
 * of it. The parent provisions, hands each child its devices over IPC (secrets stay off the command line)
 * and prints the combined summary.
 */
async function runWorkers(
  devices: PlannedDevice[],
  config: RunConfig,
  workers: number,
  summaryS: number,
): Promise<number> {
  const chunks: PlannedDevice[][] = Array.from({ length: workers }, () => []);
  devices.forEach((device, i) => chunks[i % workers]?.push(device));
  const latest = new Map<number, FleetStats>();
  const reports: ConnectReport[] = [];
  const children = new Map<number, ChildProcess>();
  let crashed = false;
  logLine(`starting ${devices.length} device(s) in ${workers} worker processes against ${config.mqttUrl}`);

  const exits = chunks.map(async (chunk, i) => {
    const index = i + 1;
    const child = fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, LOA_SIM_WORKER: '1' } });
    children.set(index, child);
    child.on('message', (raw) => {
      const message = raw as FromWorker;
      if (message.type === 'stats') latest.set(index, message.stats);
      else {
        reports.push(message.report);
        if (reports.length === workers) {
          const failed = reports.flatMap((r) => r.failed);
          const connected = reports.reduce((n, r) => n + r.connected, 0);
          const elapsedMs = Math.max(...reports.map((r) => r.elapsedMs));
          logLine(describeConnect({ connected, failed, elapsedMs }, devices.length));
        }
      }
    });
    // Each child connects its share; together they keep to the requested concurrency.
    const share = {
      ...config,
      connectConcurrency: Math.max(1, Math.ceil(config.connectConcurrency / workers)),
    };
    child.send({ type: 'run', index, config: share, devices: chunk } satisfies ToWorker);
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    children.delete(index);
    if (code !== 0) {
      crashed = true;
      logLine(`worker ${index} exited with ${signal ?? `code ${code}`}`);
    }
  });

  const summary =
    summaryS > 0
      ? setInterval(() => logLine(formatSummary(sumStats([...latest.values()]))), summaryS * 1_000)
      : undefined;
  const allExited = Promise.all(exits).then(() => 'workers exited' as const);
  const reason = await Promise.race([shutdownSignal(), allExited]);
  clearInterval(summary);
  if (reason !== 'workers exited') {
    logLine(`${reason}: stopping ${workers} worker(s)`);
    for (const child of children.values())
      if (child.connected) child.send({ type: 'stop' } satisfies ToWorker);
    const grace = setTimeout(() => {
      for (const child of children.values()) child.kill('SIGKILL');
    }, 15_000);
    await allExited;
    clearTimeout(grace);
  }
  logLine(formatSummary(sumStats([...latest.values()])));
  return crashed ? 1 : 0;
}

/** A worker process: runs the devices its parent sends and reports back until told to stop. */
async function runWorker(): Promise<number> {
  const [raw] = (await once(process, 'message')) as [ToWorker];
  if (raw.type !== 'run') return 0;
  const { index, config, devices } = raw;
  const fleet = buildFleet(devices, config);
  const reporter = new Reporter(fleet, `[w${index}] `);
  reporter.start(0);
  const send = (message: FromWorker): void => {
    if (process.connected) process.send?.(message);
  };
  const stopping = new Promise<void>((resolve) => {
    process.on('message', (m: ToWorker) => {
      if (m.type === 'stop') resolve();
    });
    // Ctrl-C reaches the whole process group, and a parent that died closes the IPC channel.
    void shutdownSignal().then(() => resolve());
    process.once('disconnect', () => resolve());
  });
  const statsTimer = setInterval(() => send({ type: 'stats', stats: fleet.stats() }), 1_000);
  const connecting = fleet.connectAll().then((report) => send({ type: 'connected', report }));
  await stopping;
  reporter.stop();
  await fleet.closeAll();
  await connecting;
  clearInterval(statsTimer);
  send({ type: 'stats', stats: fleet.stats() });
  if (process.connected) process.disconnect?.();
  return 0;
}

async function main(): Promise<number> {
  if (process.env.LOA_SIM_WORKER === '1') return runWorker();
  let options: CliOptions | 'help';
  try {
    options = parseCli(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`error: ${error.message}\n\n${USAGE}`);
    return 2;
  }
  if (options === 'help') {
    console.log(USAGE);
    return 0;
  }
  const credentials = planFaults(await obtainCredentials(options), options);
  if (credentials.length === 0) throw new Error('no devices to run');
  const config: RunConfig = {
    mqttUrl: options.mqttUrl,
    ca: options.ca,
    speed: options.speed,
    heartbeatS: options.heartbeatS,
    keepaliveS: options.keepaliveS,
    firmware: options.firmware,
    connectConcurrency: options.connectConcurrency,
    noDownload: options.noDownload,
  };
  const workers = Math.min(options.workers, credentials.length);
  return workers > 1
    ? runWorkers(credentials, config, workers, options.summaryS)
    : runInProcess(credentials, config, options.summaryS);
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`error: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
