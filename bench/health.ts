/**
 * Device-health benchmark: what it costs Loa to hear from N loudspeaker clusters reporting telemetry on
 * their heartbeat, and how fast the health views technicians use answer while it does.
 *
 *   npm run bench:health -- --devices 10000 [--speed 10]
 *
 * Measures, in a steady state with every device connected and reporting: the server's CPU time per
 * telemetry message (with a bare Aedes broker receiving the same telemetry, measured in the same run, as
 * the reference), the rate of telemetry rows written to SQLite, and the latency of
 * GET /areas/:province/summary and of a filtered device list. Then, in compressed time over several
 * simulated days (bench/lib/health-storage.ts), the database growth per device per day once telemetry is
 * rolled up and pruned, the steady-state size for 10,000 devices, and the event-loop delay during that
 * maintenance. See bench/README.md for how to read them.
 *
 * Progress goes to stderr; the last line on stdout is one JSON object with the headline figures, the line
 * before it a JSON object with everything measured.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Fleet, login, type FleetOptions } from '../firmware-sim/src/index.js';
import { parseBenchArgs } from './lib/cli.js';
import {
  createTechnician,
  metricValue,
  provisionTree,
  scrapeMetrics,
  type MetricSamples,
  type TreeShape,
} from './lib/health-api.js';
import { DbCounter, type RowCounts } from './lib/health-db.js';
import { paceTelemetry } from './lib/health-pacer.js';
import { Probe, type ProbeResult } from './lib/health-probes.js';
import {
  clockTicksPerSecond,
  cpuTime,
  machineCpu,
  totalUs,
  type CpuTime,
  type MachineCpu,
} from './lib/health-proc.js';
import { RawHealthBroker } from './lib/health-raw.js';
import { startHealthServer } from './lib/health-server.js';
import { measureStorage, type StorageResult } from './lib/health-storage.js';
import { cleanupScope, failOnExit, openFileLimit, processMemory, progress } from './lib/processes.js';
import { round, summarize } from './lib/stats.js';

const USAGE = `Usage: npm run bench:health -- [options]

Runs N simulated devices reporting telemetry to Loa (time compressed), and measures in a steady state:
the server's CPU per telemetry message (and a bare Aedes broker's, as the reference), telemetry rows
written to SQLite per second, and p50/p99 latency of the area summary and of a filtered device list.
Prints JSON (last line of stdout: the headline).

Options:
  --devices <n>      simulated devices (default 10000)
  --speed <x>        time compression of the simulated devices (default 10: a 30 s heartbeat every 3 s)
  --heartbeat-s <s>  telemetry interval in simulated seconds (default 30, the protocol's default)
  --warmup-s <s>     seconds of load after every device is connected, before measuring (default 15)
  --window-s <s>     length of the CPU / throughput window, seconds (default 30)
  --samples <n>      timed requests per endpoint, after 10 unmeasured rounds (default 200)
  --gap-ms <ms>      mean pause after each timed request, drawn at random (exponential) so that the
                     requests arrive independently of the server's periodic work (default 150)
  --tick-ms <ms>     telemetry send tick of the simulator; 0 keeps firmware-sim's own, bursty one
                     (default 10: a smooth stream, as real devices with random phases give)
  --skip-baseline    do not measure the bare Aedes broker
  --cpu-prof <dir>   write a V8 CPU profile of the Loa server into <dir> when it stops
  --storage-devices <n>  devices of the storage phase (default 500): an in-process Loa on a manual clock,
                     telemetry every 30 simulated s, the roll-up, pruning and retention jobs as the
                     server runs them; reports dbBytesPerDeviceDay and steadyStateGbFor10kDevices
  --storage-days <n> simulated days of the storage phase (default 3, at least 3: raw telemetry is kept
                     48 h, so only the third day shows the steady growth)
  --storage-only     run the storage phase alone
  --skip-storage     do not run the storage phase
  -h, --help         show this help`;

/** The area tree (see provisionTree): 10 districts × 10 communes × 5 hamlets, whatever N is. */
const TREE: TreeShape = { districts: 10, communesPerDistrict: 10, hamletsPerCommune: 5 };
/**
 * The default connect-rate cap (500/s) would stretch connecting 10,000 devices to 20 throttled seconds,
 * which measures the cap; the steady state measured here starts only once all are in anyway.
 */
const MAX_CONNECTS_PER_S = 100_000;
/** File descriptors this process needs besides the device sockets (HTTP, IPC, stdio, module loading). */
const FD_RESERVE = 500;
/** Unmeasured request rounds before the timed ones. */
const PROBE_WARMUP = 10;
/** The target this benchmark reports against: both health views under 50 ms p99 at 10,000 devices. */
const TARGET_P99_MS = 50;
/** Below this share of the expected telemetry rate, the load was not sustained and the run says so. */
const SUSTAINED_SHARE = 0.95;

interface Options {
  devices: number;
  speed: number;
  heartbeatS: number;
  warmupS: number;
  windowS: number;
  samples: number;
  gapMs: number;
  tickMs: number;
  baseline: boolean;
  cpuProfDir: string | undefined;
  storageDevices: number;
  storageDays: number;
  /** Which phases run: the MQTT load and HTTP latency one, the storage one, or both. */
  load: boolean;
  storage: boolean;
}

function parseOptions(): Options {
  const { values, number, fail } = parseBenchArgs(
    {
      devices: { type: 'string', default: '10000' },
      speed: { type: 'string', default: '10' },
      'heartbeat-s': { type: 'string', default: '30' },
      'warmup-s': { type: 'string', default: '15' },
      'window-s': { type: 'string', default: '30' },
      samples: { type: 'string', default: '200' },
      'gap-ms': { type: 'string', default: '150' },
      'tick-ms': { type: 'string', default: '10' },
      'skip-baseline': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      'storage-devices': { type: 'string', default: '500' },
      'storage-days': { type: 'string', default: '3' },
      'storage-only': { type: 'boolean', default: false },
      'skip-storage': { type: 'boolean', default: false },
    },
    USAGE,
  );
  const tickMs = number('tick-ms', values['tick-ms'], 0, true);
  if (tickMs !== 0 && (tickMs < 5 || tickMs > 1_000)) {
    fail(`--tick-ms must be 0 or between 5 and 1000 (the simulator's bounds), got ${tickMs}`);
  }
  return {
    devices: number('devices', values.devices, 1, true),
    speed: number('speed', values.speed, 0.001, false),
    heartbeatS: number('heartbeat-s', values['heartbeat-s'], 1, false),
    warmupS: number('warmup-s', values['warmup-s'], 0, false),
    windowS: number('window-s', values['window-s'], 5, false),
    samples: number('samples', values.samples, 1, true),
    gapMs: number('gap-ms', values['gap-ms'], 0, true),
    tickMs,
    baseline: !values['skip-baseline'],
    cpuProfDir: values['cpu-prof'] === undefined ? undefined : path.resolve(values['cpu-prof']),
    storageDevices: number('storage-devices', values['storage-devices'], 1, true),
    storageDays: number('storage-days', values['storage-days'], 3, true),
    load: !values['storage-only'],
    storage: !values['skip-storage'],
  };
}

/**
 * The heartbeat, in real seconds, that both sides keep.
 *
 * A simulated device sends telemetry every `heartbeatS / speed` real seconds. The server knows nothing of
 * the simulation: it expects telemetry every HEARTBEAT_S real seconds and marks a connected device
 * offline (`silent`) after SILENT_AFTER_HEARTBEATS (3) of them without any. So HEARTBEAT_S must be the
 * real interval, and it must be an integer ≥ 1 (the config says so). 30 s at speed 10 is exactly 3 s,
 * but 30 s at speed 7 would be 4.29 s: rounding HEARTBEAT_S to 4 would have the server expect telemetry
 * more slowly than it comes, which hides nothing here but is not the same load either.
 *
 * Instead the real interval is chosen first, round(heartbeatS / speed) and at least 1, and the devices'
 * simulated heartbeat is set to realInterval × speed, so that their real interval is exactly HEARTBEAT_S.
 * With the defaults nothing changes (30 s simulated, 3 s real); otherwise the simulated heartbeat moves
 * slightly off the one asked for, and the detail line says so. The load is then exactly N / HEARTBEAT_S
 * messages per second, which is what a real province of N devices on a HEARTBEAT_S heartbeat sends.
 */
function heartbeat(options: Options): { serverHeartbeatS: number; simHeartbeatS: number } {
  const serverHeartbeatS = Math.max(1, Math.round(options.heartbeatS / options.speed));
  return { serverHeartbeatS, simHeartbeatS: serverHeartbeatS * options.speed };
}

// ---- measurement ----------------------------------------------------------------------------------------

/** Everything read at one instant of a window. */
interface Snapshot {
  at: number;
  metrics: MetricSamples | undefined;
  cpu: CpuTime;
  machine: MachineCpu;
  bench: NodeJS.CpuUsage;
  /** Telemetry messages the simulated devices have sent so far. */
  sent: number;
  rows: RowCounts | undefined;
}

interface WindowResult {
  seconds: number;
  /**
   * Telemetry messages the server received, by its own count (Loa's loa_mqtt_messages_in_total, the bare
   * broker's counter), or, for a Loa without a metrics endpoint, what the devices sent.
   */
  telemetry: number;
  telemetrySource: 'server' | 'devices';
  telemetrySent: number;
  /** All MQTT messages the server received (telemetry plus anything else), when its metrics say. */
  messagesIn: number | null;
  telemetryPerS: number;
  serverCpuMs: number;
  serverCpuPct: number;
  serverCpuUsPerMsg: number;
  /** Share of the server's CPU time spent in the kernel (socket I/O, fsync, page faults). */
  serverSystemShare: number;
  benchCpuPct: number;
  /** Busy share of all the machine's cores. */
  machineBusyPct: number;
  /**
   * CPU used meanwhile by every other process on the machine, in % of one core (the machine's busy time
   * minus the server's and the bench's). The machine may be shared: a high figure means the window was
   * disturbed and its latencies and CPU figures are less trustworthy.
   */
  othersCpuPct: number;
  dbRowsPerS: number | null;
  presenceTransitions: number | null;
  eventLoopLagP99Ms: number | null;
  eventLoopLagMaxMs: number | null;
}

const TELEMETRY = { channel: 'telemetry' };
const CORES = availableParallelism();
const messagesIn = (m: MetricSamples | undefined, labels: Record<string, string> = {}): number | undefined =>
  m && metricValue(m, 'loa_mqtt_messages_in_total', labels);

function allMessagesIn(m: MetricSamples | undefined): number | undefined {
  const samples = m?.get('loa_mqtt_messages_in_total');
  return samples?.reduce((sum, s) => sum + s.value, 0);
}

function windowResult(from: Snapshot, to: Snapshot): WindowResult {
  const seconds = (to.at - from.at) / 1000;
  const t0 = messagesIn(from.metrics, TELEMETRY);
  const t1 = messagesIn(to.metrics, TELEMETRY);
  const fromServer = t0 !== undefined && t1 !== undefined;
  const telemetrySent = to.sent - from.sent;
  const telemetry = fromServer ? t1 - t0 : telemetrySent;
  const all0 = allMessagesIn(from.metrics);
  const all1 = allMessagesIn(to.metrics);
  const cpuUs = totalUs(to.cpu) - totalUs(from.cpu);
  const benchUs = to.bench.user + to.bench.system - from.bench.user - from.bench.system;
  const machineTotal = to.machine.totalTicks - from.machine.totalTicks;
  const machineBusy = (to.machine.busyTicks - from.machine.busyTicks) / machineTotal;
  const serverCpuPct = (cpuUs / 1e6 / seconds) * 100;
  const benchCpuPct = (benchUs / 1e6 / seconds) * 100;
  const lagP99 = to.metrics && metricValue(to.metrics, 'nodejs_eventloop_lag_p99_seconds');
  const lagMax = to.metrics && metricValue(to.metrics, 'nodejs_eventloop_lag_max_seconds');
  return {
    seconds: round(seconds, 2),
    telemetry,
    telemetrySource: fromServer ? 'server' : 'devices',
    telemetrySent,
    messagesIn: all0 !== undefined && all1 !== undefined ? all1 - all0 : null,
    telemetryPerS: round(telemetry / seconds, 1),
    serverCpuMs: Math.round(cpuUs / 1000),
    serverCpuPct: round(serverCpuPct, 1),
    serverCpuUsPerMsg: round(cpuUs / telemetry, 1),
    serverSystemShare: round((to.cpu.systemUs - from.cpu.systemUs) / cpuUs, 2),
    benchCpuPct: round(benchCpuPct, 1),
    machineBusyPct: round(machineBusy * 100, 1),
    othersCpuPct: round(Math.max(0, machineBusy * CORES * 100 - serverCpuPct - benchCpuPct), 1),
    dbRowsPerS:
      from.rows && to.rows
        ? round((to.rows.telemetrySamples - from.rows.telemetrySamples) / seconds, 1)
        : null,
    presenceTransitions:
      from.rows && to.rows ? to.rows.presenceTransitions - from.rows.presenceTransitions : null,
    eventLoopLagP99Ms: lagP99 === undefined ? null : round(lagP99 * 1000, 1),
    eventLoopLagMaxMs: lagMax === undefined ? null : round(lagMax * 1000, 1),
  };
}

// ---- main -----------------------------------------------------------------------------------------------

/** The storage phase (bench/lib/health-storage.ts), with its headline figures. */
async function storagePhase(options: Options): Promise<StorageResult> {
  progress(
    `storage phase: ${options.storageDevices} devices, ${options.storageDays} simulated days, in-process Loa on a manual clock`,
  );
  const storage = await measureStorage({
    devices: options.storageDevices,
    days: options.storageDays,
    heartbeatS: 30,
    progress,
  });
  progress(
    `storage: ${storage.dbBytesPerDeviceDay} bytes/device/day (raw ${storage.rawBytesPerDeviceDay}, roll-ups ` +
      `${storage.rollupBytesPerDeviceDay}): ${storage.steadyStateGbFor10kDevices} GB steady state for 10,000 devices; ` +
      `event-loop delay p99 ${storage.maintenanceLoopDelayP99Ms} ms during maintenance, ${storage.idleLoopDelayP99Ms} ms idle`,
  );
  return storage;
}

const storageHeadline = (s: StorageResult) => ({
  dbBytesPerDeviceDay: s.dbBytesPerDeviceDay,
  rawBytesPerDeviceDay: s.rawBytesPerDeviceDay,
  rollupBytesPerDeviceDay: s.rollupBytesPerDeviceDay,
  steadyStateGbFor10kDevices: s.steadyStateGbFor10kDevices,
  maintenanceLoopDelayP99Ms: s.maintenanceLoopDelayP99Ms,
  idleLoopDelayP99Ms: s.idleLoopDelayP99Ms,
});

/** The storage phase alone (--storage-only): its detail, then its headline, as the last line. */
async function storageOnly(options: Options): Promise<number> {
  cleanupScope(STORAGE_WATCHDOG_MS(options));
  const storage = await storagePhase(options);
  const detail = { bench: 'health', phase: 'storage', storage };
  const summary = { storageDevices: storage.devices, ...storageHeadline(storage) };
  await new Promise<void>((resolve) =>
    process.stdout.write(`${JSON.stringify(detail)}\n${JSON.stringify(summary)}\n`, () => resolve()),
  );
  return 0;
}

/** Generous: a simulated day of 500 devices takes 1–3 minutes (2 shared cores). */
const STORAGE_WATCHDOG_MS = (o: Options) => 5 * 60_000 + o.storageDevices * o.storageDays * 500;

async function main(): Promise<number> {
  const options = parseOptions();
  if (!options.load) return storageOnly(options);
  const N = options.devices;
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const startedAt = performance.now();
  if (!existsSync('/proc/self/stat')) {
    progress('this benchmark reads CPU time from /proc (Linux only)');
    return 1;
  }
  const fdLimit = openFileLimit();
  if (fdLimit !== undefined && N + FD_RESERVE > fdLimit) {
    progress(
      `the open-file limit (${fdLimit}) is below ${N} device sockets + ${FD_RESERVE}: raise it (ulimit -n)`,
    );
    return 1;
  }
  const { serverHeartbeatS, simHeartbeatS } = heartbeat(options);
  const expectedPerS = N / serverHeartbeatS;
  const ticksPerS = clockTicksPerSecond();

  // A hung step must not keep the machine busy forever; the exit hook of processes.ts kills the children.
  const { cleanups, cleanup } = cleanupScope(
    5 * 60_000 + N * 30 + (options.storage ? STORAGE_WATCHDOG_MS(options) : 0),
  );

  try {
    progress(
      `${N} devices, heartbeat ${round(simHeartbeatS, 2)} simulated s at speed ${options.speed} = every ${serverHeartbeatS} real s ` +
        `(HEARTBEAT_S=${serverHeartbeatS}): ${Math.round(expectedPerS)} telemetry messages/s expected`,
    );
    progress('starting Loa' + (options.baseline ? ' and the bare Aedes baseline' : ''));
    const [loa, raw] = await Promise.all([
      startHealthServer({
        repoRoot,
        heartbeatS: serverHeartbeatS,
        maxConnectsPerSecond: MAX_CONNECTS_PER_S,
        cpuProfDir: options.cpuProfDir,
      }),
      options.baseline ? RawHealthBroker.start(repoRoot) : Promise.resolve(undefined),
    ]);
    const watch = failOnExit(raw ? [loa.child, raw.child] : [loa.child]);
    // Pushed last, so run first: a child stopped by the clean-up is not a child that died.
    cleanups.push(() => loa.stop());
    if (raw) cleanups.push(() => raw.stop());
    cleanups.push(async () => watch.stop());
    /** A pause that ends at once, with the cause, if a broker dies meanwhile. */
    const wait = (ms: number): Promise<void> => Promise.race([sleep(ms), watch.failed]);

    const adminToken = await login(loa.api, 'admin', loa.adminPassword);
    const t = performance.now();
    progress(
      `provisioning ${N} devices through the API (province → ${TREE.districts} districts → communes → hamlets)`,
    );
    const tree = await provisionTree(loa.api, adminToken, N, TREE, 20);
    const provisionMs = Math.round(performance.now() - t);
    progress(
      `provisioned ${tree.credentials.length} devices (${tree.stations} stations, ${tree.clusters} clusters) in ${provisionMs} ms`,
    );
    const technician = await createTechnician(loa.api, adminToken, tree.provinceId);
    const technicianToken = await login(loa.api, technician.username, technician.password);

    if (options.tickMs > 0) {
      const pacer = await paceTelemetry(options.tickMs);
      cleanups.push(() => pacer.stop());
    }

    // ---- Loa: connect, warm up, measure ----
    const fleetOptions: Omit<FleetOptions, 'mqttUrl'> = {
      speed: options.speed,
      heartbeatS: simHeartbeatS,
      // With telemetry every few seconds MQTT.js never needs a PINGREQ; 60 s is the firmware default.
      keepaliveS: 60,
      connectConcurrency: 200,
      connectTimeoutMs: 120_000,
    };
    let sent = 0;
    const connectFleet = async (
      name: string,
      mqttUrl: string,
    ): Promise<{ fleet: Fleet; connectMs: number }> => {
      const fleet = new Fleet(tree.credentials, { ...fleetOptions, mqttUrl });
      // Fleet forwards no telemetry events; each device emits one as it publishes (a count, for the
      // device-side cross-check of the server's counter).
      for (const device of fleet.devices) device.on('telemetry', () => (sent += 1));
      let errors = 0;
      fleet.on('error', (device, error) => {
        errors += 1;
        if (errors <= 5) progress(`${name} device ${device.id}: ${error.message}`);
      });
      cleanups.push(() => fleet.closeAll());
      progress(`connecting ${N} simulated devices to ${name}`);
      const report = await Promise.race([fleet.connectAll(), watch.failed]);
      if (report.failed.length > 0) {
        const sample = report.failed
          .slice(0, 3)
          .map((f) => `${f.deviceId}: ${f.error}`)
          .join('; ');
        throw new Error(`${name}: ${report.failed.length} of ${N} devices did not connect (${sample})`);
      }
      progress(`connected in ${report.elapsedMs} ms`);
      return { fleet, connectMs: report.elapsedMs };
    };

    const loaSide = await connectFleet('Loa', loa.mqttUrl);
    progress(`warming up for ${options.warmupS} s under load`);
    await wait(options.warmupS * 1000);

    const db = new DbCounter(loa.databaseFile);
    cleanups.push(async () => db.close());
    const loaSnapshot = async (): Promise<Snapshot> => {
      // The scrape first, then the counters: the scrape's own cost falls inside the window at its end and
      // outside it at its start, so each window pays for exactly one. Today the scrape also writes the
      // server's pending telemetry (its device gauge flushes first), so the row count read right after it
      // matches the message count; without that flush the two differ by at most one flush interval
      // (1 s of rows, ±3 % of a 30 s window).
      const metrics = await scrapeMetrics(loa.api, loa.metricsToken);
      const [cpu, machine] = await Promise.all([cpuTime(loa.child.pid, ticksPerS), machineCpu()]);
      return {
        at: performance.now(),
        metrics,
        cpu,
        machine,
        bench: process.cpuUsage(),
        sent,
        rows: db.counts(),
      };
    };

    progress(`measuring the steady state for ${options.windowS} s (no API requests)`);
    const w0 = await loaSnapshot();
    await wait(options.windowS * 1000);
    const w1 = await loaSnapshot();
    const steady = windowResult(w0, w1);
    if (steady.telemetrySource === 'devices')
      progress('the server has no /metrics: telemetry counted on the device side');
    progress(
      `steady state: ${steady.telemetryPerS} telemetry/s, server ${steady.serverCpuPct} % CPU = ${steady.serverCpuUsPerMsg} µs/message, ` +
        `${steady.dbRowsPerS ?? '?'} rows/s, event-loop lag p99 ${steady.eventLoopLagP99Ms ?? '?'} ms`,
    );

    const district = tree.districtIds[0];
    if (district === undefined) throw new Error('no district');
    const silentForS = 2 * serverHeartbeatS;
    const endpoints = [
      { name: 'summary', path: `/api/v1/areas/${tree.provinceId}/summary` },
      {
        name: 'list',
        path: `/api/v1/devices?areaId=${district}&online=true&health=ok&sort=lastSeenAt&limit=50`,
      },
      // "Who has gone quiet?": devices not heard from for two heartbeats, longest silent first.
      {
        name: 'listSilent',
        path: `/api/v1/devices?areaId=${district}&silentForS=${silentForS}&sort=lastSeenAt&limit=50`,
      },
    ];
    progress(
      `timing ${endpoints.length} endpoints × ${options.samples} requests in random order, ${options.gapMs} ms apart on average, as a province technician`,
    );
    const probe = await Probe.start(repoRoot);
    cleanups.push(() => probe.stop());
    const p0 = await loaSnapshot();
    const probeTimeoutMs =
      60_000 + (options.samples + PROBE_WARMUP) * endpoints.length * (5 * options.gapMs + 1_000);
    const job = {
      api: loa.api,
      token: technicianToken,
      endpoints,
      samples: options.samples,
      warmup: PROBE_WARMUP,
      gapMs: options.gapMs,
    };
    const probes = await Promise.race([probe.run(job, probeTimeoutMs), watch.failed]);
    const p1 = await loaSnapshot();
    await probe.stop();
    const underQueries = windowResult(p0, p1);
    const memory = await processMemory(loa.child.pid);
    // Closed before the server stops: a reader left open would keep its WAL from being checkpointed.
    db.close();

    const latency = (name: string): ProbeResult => {
      const result = probes.find((p) => p.name === name);
      if (!result) throw new Error(`no probe result for ${name}`);
      return result;
    };
    const summaryProbe = latency('summary');
    const listProbe = latency('list');
    const silentProbe = latency('listSilent');
    const stats = (p: ProbeResult) => ({ ...summarize(p.latenciesMs), errors: p.errors });
    const latencies = {
      summary: stats(summaryProbe),
      list: stats(listProbe),
      listSilent: stats(silentProbe),
    };
    progress(
      `summary p50 ${latencies.summary.p50Ms} ms p99 ${latencies.summary.p99Ms} ms; list p50 ${latencies.list.p50Ms} ms ` +
        `p99 ${latencies.list.p99Ms} ms; silent list p50 ${latencies.listSilent.p50Ms} ms p99 ${latencies.listSilent.p99Ms} ms`,
    );

    // What the endpoints said, to check the load was what it should be: every device online and ok.
    const lastSummary = parseJson(summaryProbe.lastBody) as
      { total?: number; online?: number; ok?: number } | undefined;
    const lastList = parseJson(listProbe.lastBody) as { total?: number } | undefined;
    const lastSilent = parseJson(silentProbe.lastBody) as { total?: number } | undefined;
    const answered = {
      summary: {
        total: lastSummary?.total ?? null,
        online: lastSummary?.online ?? null,
        ok: lastSummary?.ok ?? null,
      },
      listTotal: lastList?.total ?? null,
      listSilentTotal: lastSilent?.total ?? null,
    };
    const serverSide = serverHistogram(p1.metrics, ['/api/v1/areas/:id/summary', '/api/v1/devices']);

    // Phase times relative to the moment the server is asked to stop, to cut the CPU profile by time.
    const stopAt = performance.now();
    const beforeStop = (at: number): number => round((stopAt - at) / 1000, 1);
    progress('closing the Loa fleet and stopping Loa');
    await loaSide.fleet.closeAll();
    watch.stop();
    await loa.stop();

    // ---- baseline: the same devices and telemetry to a bare Aedes broker ----
    // Loa's figures are complete by now: a baseline that fails is reported as such, not as a failed run.
    let baseline: (WindowResult & { connectMs: number; clientsConnected: number }) | null = null;
    let baselineError: string | null = null;
    if (raw) {
      try {
        const rawSide = await connectFleet('the bare Aedes broker', raw.mqttUrl);
        progress(`warming up for ${options.warmupS} s under load`);
        await sleep(options.warmupS * 1000);
        const rawSnapshot = async (): Promise<
          Snapshot & { count: Awaited<ReturnType<RawHealthBroker['count']>> }
        > => {
          const count = await raw.count();
          const [cpu, machine] = await Promise.all([cpuTime(raw.child.pid, ticksPerS), machineCpu()]);
          return {
            at: performance.now(),
            metrics: undefined,
            cpu,
            machine,
            bench: process.cpuUsage(),
            sent,
            rows: undefined,
            count,
          };
        };
        progress(`measuring the bare broker for ${options.windowS} s`);
        const r0 = await rawSnapshot();
        await sleep(options.windowS * 1000);
        const r1 = await rawSnapshot();
        const result = windowResult(r0, r1);
        // The broker's own count of telemetry publishes, the counterpart of Loa's counter.
        const telemetry = r1.count.telemetry - r0.count.telemetry;
        const cpuUs = totalUs(r1.cpu) - totalUs(r0.cpu);
        baseline = {
          ...result,
          telemetry,
          telemetrySource: 'server',
          messagesIn: r1.count.messages - r0.count.messages,
          telemetryPerS: round(telemetry / result.seconds, 1),
          serverCpuUsPerMsg: round(cpuUs / telemetry, 1),
          connectMs: rawSide.connectMs,
          clientsConnected: r1.count.clients,
        };
        progress(
          `bare broker: ${baseline.telemetryPerS} telemetry/s, ${baseline.serverCpuPct} % CPU = ${baseline.serverCpuUsPerMsg} µs/message`,
        );
        await rawSide.fleet.closeAll();
      } catch (err) {
        baselineError = err instanceof Error ? err.message : String(err);
        progress(`the baseline failed: ${baselineError}`);
      }
    }

    progress('cleaning up');
    await cleanup();
    // After the load phase, alone on the machine: its in-process work must not disturb the windows above.
    const storage = options.storage ? await storagePhase(options) : null;

    const sustained = steady.telemetryPerS >= SUSTAINED_SHARE * expectedPerS;
    const allOnline = answered.summary.online === N && answered.summary.total === N;
    const noErrors = probes.every((p) => p.errors === 0);
    const noFlapping = steady.presenceTransitions === 0 || steady.presenceTransitions === null;
    const complete = sustained && allOnline && noErrors && noFlapping;
    const rssMb = memory ? Math.round(memory.rssMb) : null;

    const detail = {
      bench: 'health',
      devices: N,
      complete,
      checks: { sustained, allOnline, noErrors, noFlapping },
      settings: {
        speed: options.speed,
        simulatedHeartbeatS: round(simHeartbeatS, 3),
        serverHeartbeatS,
        expectedTelemetryPerS: round(expectedPerS, 1),
        tree: {
          ...TREE,
          communes: tree.communes,
          hamlets: tree.hamlets,
          stations: tree.stations,
          clusters: tree.clusters,
        },
        warmupS: options.warmupS,
        windowS: options.windowS,
        samples: options.samples,
        gapMs: options.gapMs,
        tickMs: options.tickMs,
        maxConnectsPerSecond: MAX_CONNECTS_PER_S,
        clockTicksPerSecond: ticksPerS,
        node: process.version,
      },
      provisionMs,
      connectMs: loaSide.connectMs,
      steady,
      underQueries,
      latencyMs: latencies,
      serverSideHttp: serverSide,
      answered,
      endpoints: Object.fromEntries(endpoints.map((e) => [e.name, e.path])),
      memory: memory
        ? {
            rssMb: round(memory.rssMb, 1),
            peakRssMb: memory.peakRssMb === undefined ? null : round(memory.peakRssMb, 1),
          }
        : null,
      baseline,
      baselineError,
      storage,
      loaOverUsPerMsg: baseline ? round(steady.serverCpuUsPerMsg - baseline.serverCpuUsPerMsg, 1) : null,
      ratioToBaseline: baseline ? round(steady.serverCpuUsPerMsg / baseline.serverCpuUsPerMsg, 2) : null,
      target: {
        p99Ms: TARGET_P99_MS,
        summaryMet: latencies.summary.p99Ms < TARGET_P99_MS,
        listMet: latencies.list.p99Ms < TARGET_P99_MS,
      },
      profile: options.cpuProfDir
        ? {
            dir: options.cpuProfDir,
            // Seconds before the server was asked to stop; its profile ends a moment after that.
            secondsBeforeStop: {
              windowStart: beforeStop(w0.at),
              windowEnd: beforeStop(w1.at),
              queriesStart: beforeStop(p0.at),
              queriesEnd: beforeStop(p1.at),
            },
          }
        : null,
      totalMs: Math.round(performance.now() - startedAt),
    };
    const summary = {
      devices: N,
      telemetryPerS: steady.telemetryPerS,
      serverCpuUsPerMsg: steady.serverCpuUsPerMsg,
      summaryP99Ms: latencies.summary.p99Ms,
      listP99Ms: latencies.list.p99Ms,
      serverRssMb: rssMb,
      ...(storage ? storageHeadline(storage) : {}),
    };
    // Waits for the write: process.exit() right after could cut the line short on a slow pipe.
    await new Promise<void>((resolve) =>
      process.stdout.write(`${JSON.stringify(detail)}\n${JSON.stringify(summary)}\n`, () => resolve()),
    );
    if (!complete) progress(`INCOMPLETE: ${JSON.stringify(detail.checks)} (see the detail line)`);
    return complete ? 0 : 2;
  } finally {
    await cleanup();
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The server's own view of the timed requests, from its request-duration histogram (onRequest to
 * response sent, so without the time a request waits in the socket before the event loop reads it): how
 * many answered within 50 ms. Cumulative since the server started, so the warm-up requests are included.
 */
function serverHistogram(
  metrics: MetricSamples | undefined,
  routes: string[],
): Record<string, { count: number; within50Ms: number; meanMs: number }> | null {
  if (!metrics) return null;
  const out: Record<string, { count: number; within50Ms: number; meanMs: number }> = {};
  for (const route of routes) {
    const labels = { method: 'GET', route, status_code: '200' };
    const count = metricValue(metrics, 'loa_http_request_duration_seconds_count', labels);
    const sum = metricValue(metrics, 'loa_http_request_duration_seconds_sum', labels);
    const within = metricValue(metrics, 'loa_http_request_duration_seconds_bucket', {
      ...labels,
      le: '0.05',
    });
    if (count === undefined || sum === undefined || within === undefined) continue;
    out[route] = { count, within50Ms: within, meanMs: round((sum / count) * 1000, 2) };
  }
  return out;
}

main().then(
  (code) => {
    // Undici's keep-alive sockets and MQTT.js timers could hold the loop open for a few more seconds;
    // everything of ours is closed, so leave now.
    process.exit(code);
  },
  (err: unknown) => {
    progress(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
