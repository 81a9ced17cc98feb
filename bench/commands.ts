/**
 * Broadcast benchmark: how long one play command takes to reach N loudspeaker clusters through Loa (REST
 * API → SQLite → embedded Aedes → MQTT), compared with a bare Aedes broker publishing the same payload to
 * the same N simulated devices, measured in the same run. See bench/README.md for how to read the figures.
 *
 *   npm run bench:commands -- --devices 2000 [--rounds 3]
 *
 * Progress goes to stderr; the last line on stdout is one JSON object with the headline figures, the line
 * before it a JSON object with every round in detail.
 */
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import {
  Fleet,
  createArea,
  login,
  provisionDevices,
  type CommandEvent,
  type DeviceCredentials,
  type FleetOptions,
  type SimDevice,
} from '../firmware-sim/src/index.js';
import { newId } from '../src/lib/ids.js';
import { parseBenchArgs } from './lib/cli.js';
import { deliveryCounts, sendPlay, startLoa, type DeliveryCounts, type LoaServer } from './lib/loa.js';
import {
  cleanupScope,
  failOnExit,
  openFileLimit,
  processMemory,
  progress,
  type Memory,
} from './lib/processes.js';
import { RawBroker } from './lib/raw.js';
import { medianBy, round, summarize, type LatencySummary } from './lib/stats.js';

/**
 * mqemitter concurrency of the raw broker: 0, unlimited. Not Aedes' default (100) nor Loa's (1,000): with
 * a limit, messages nobody subscribes to (here the devices' acks, state and logs, thousands per broadcast)
 * queue behind the in-flight command deliveries, and mqemitter 7 drains such a run of queued messages by
 * synchronous recursion (released → _do → parallel → released), which overflows the stack from about
 * 2,000 of them and kills the broker (seen here in one run in three at 2,000 devices with 1,000). Without
 * a limit nothing queues. The setting made no difference to latency beyond run-to-run noise here
 * (bench/README.md); --raw-concurrency repeats that comparison.
 */
const RAW_AEDES_CONCURRENCY = 0;

const USAGE = `Usage: npm run bench:commands -- [options]

Sends one play command to N simulated cluster devices through Loa and, as a baseline, the same payload
through a bare Aedes broker; prints per-device receive latency (p50/p99/max), the time until every ack is
recorded, connect time and server memory as JSON (last line of stdout).

Options:
  --devices <n>      simulated devices (default 2000)
  --rounds <n>       measured rounds per broker, after one warm-up round each; the median round is
                     reported (default 3)
  --raw-concurrency <n>
                     mqemitter concurrency of the raw Aedes broker (default ${RAW_AEDES_CONCURRENCY}: unlimited;
                     Aedes' own default is 100, Loa uses 1000)
  --cpu-prof <dir>   write a V8 CPU profile of the Loa server into <dir> when it exits
  -h, --help         show this help`;

/** Devices per commune: a real commune has a few hundred loudspeaker clusters at most. */
const DEVICES_PER_COMMUNE = 500;
/**
 * The server's default connect-rate cap (500/s) would make connecting 10,000 devices a 20-second
 * throttled crawl that measures the cap, not the broker; the bench raises it and says so in its output.
 */
const MAX_CONNECTS_PER_S = 100_000;
/** File descriptors this process needs besides the device sockets (HTTP, IPC, stdio, module loading). */
const FD_RESERVE = 500;
/**
 * Polling interval for the delivery counts once every device has the command: fine enough that
 * allAckedMs is late by at most this much, coarse enough that the polls are a small load on the server.
 */
const ACK_POLL_MS = 50;

/** A long media file: no playback ends (and sends its `finished` log and state) during the run. */
const MEDIA = {
  url: 'https://media.loa.example/bench/announcement.mp3',
  sha256: 'c0ffee'.padEnd(64, '0'),
  durationMs: 3_600_000,
};

const FLEET_OPTIONS = {
  // Real time: the only simulated-time effects are the heartbeat and playback end, both pushed past the run.
  speed: 1,
  // Telemetry would be noise in a latency measurement; a day-long interval means none during the run.
  heartbeatS: 86_400,
  // The protocol's longest keepalive: the fewest PINGREQs from idle clients between rounds.
  keepaliveS: 120,
  connectConcurrency: 200,
  connectTimeoutMs: 120_000,
  // The announcement URL is a placeholder: this bench measures command delivery, not downloads.
  noDownload: true,
} satisfies Omit<FleetOptions, 'mqttUrl'>;

interface Options {
  devices: number;
  rounds: number;
  rawConcurrency: number;
  cpuProfDir: string | undefined;
}

function parseOptions(): Options {
  const { values, number } = parseBenchArgs(
    {
      devices: { type: 'string', default: '2000' },
      rounds: { type: 'string', default: '3' },
      'raw-concurrency': { type: 'string', default: String(RAW_AEDES_CONCURRENCY) },
      'cpu-prof': { type: 'string' },
    },
    USAGE,
  );
  const integer = (name: string, raw: string, min: number) => number(name, raw, min);
  return {
    devices: integer('devices', values.devices, 1),
    rounds: integer('rounds', values.rounds, 1),
    rawConcurrency: integer('raw-concurrency', values['raw-concurrency'], 0),
    cpuProfDir: values['cpu-prof'] === undefined ? undefined : path.resolve(values['cpu-prof']),
  };
}

/**
 * A full garbage collection of the bench process, run while settling before each round: the simulated
 * devices allocate a lot per broadcast, and a major GC landing in the middle of one round but not another
 * is noise in the very figures being compared. (The flag must be set before a context is created to
 * expose gc(); this is the documented V8 way to get it without restarting node with --expose-gc.)
 */
const collectGarbage: () => void = (() => {
  setFlagsFromString('--expose-gc');
  const gc: unknown = runInNewContext('gc');
  return typeof gc === 'function' ? (gc as () => void) : () => undefined;
})();

// ---- one round ------------------------------------------------------------------------------------------

/**
 * Records, for one broadcast, when each device of a fleet reported the command (SimDevice's `command`
 * event carries performance.now() taken as the message came off the socket, in this same process).
 */
class Receipts {
  readonly receivedAt: number[] = [];
  /** The command id of each receipt, index for index with receivedAt. */
  readonly ids: string[] = [];
  first: CommandEvent['command'] | undefined;
  private complete: (() => void) | undefined;
  private readonly allIn: Promise<void>;

  constructor(
    private readonly fleet: Fleet,
    private readonly expected: number,
  ) {
    this.allIn = new Promise<void>((resolve) => (this.complete = resolve));
    fleet.on('command', this.onCommand);
  }

  private readonly onCommand = (_device: SimDevice, event: CommandEvent): void => {
    this.first ??= event.command;
    this.receivedAt.push(event.receivedAt);
    this.ids.push(event.command.id);
    if (this.receivedAt.length >= this.expected) this.complete?.();
  };

  /**
   * Waits until every device has the command or the time is up; true if every device has it. Rejects at
   * once if `failed` does (a broker died).
   */
  async wait(timeoutMs: number, failed: Promise<never>): Promise<boolean> {
    const abort = new AbortController();
    try {
      return await Promise.race([
        this.allIn.then(() => true),
        sleep(timeoutMs, false, { signal: abort.signal }).catch(() => false),
        failed,
      ]);
    } finally {
      abort.abort();
      this.fleet.off('command', this.onCommand);
    }
  }

  /** Receive latencies from t0, of one command only (the one this round sent), in ms. */
  latencies(t0: number, commandId: string): number[] {
    return this.receivedAt.filter((_t, i) => this.ids[i] === commandId).map((t) => t - t0);
  }

  /** Receipts of any other command: there should be none (devices ignore ids they already handled). */
  others(commandId: string): string[] {
    return [...new Set(this.ids.filter((id) => id !== commandId))];
  }
}

interface RoundResult extends LatencySummary {
  round: string;
  /** Devices that reported the command (should be every device). */
  received: number;
  /** The request (POST for Loa, IPC trigger for raw) until its answer, ms. */
  triggerMs: number;
}

interface LoaRoundResult extends RoundResult {
  commandId: string;
  /** Devices the API said it sent the command to at once. */
  sent: number;
  /** t0 until GET /commands/:id showed every device done; null if that never happened in time. */
  allAckedMs: number | null;
  counts: DeliveryCounts | undefined;
}

interface RawRoundResult extends RoundResult {
  publishLoopMs: number;
  publishErrors: number;
}

interface Context {
  devices: number;
  loa: LoaServer;
  token: string;
  provinceId: string;
  raw: RawBroker;
  /** How long to wait for every device to receive, and then for every ack. */
  timeoutMs: number;
  /** Rejects when a broker process exits before we stop it. */
  brokerDied: Promise<never>;
}

/**
 * An API call that fails with the real cause when the server died under it: the request is cut off
 * ("fetch failed") a moment before the process's exit is noticed, so a failure waits briefly for that.
 */
async function guarded<T>(ctx: Context, call: Promise<T>): Promise<T> {
  try {
    return await Promise.race([call, ctx.brokerDied]);
  } catch (err) {
    const died = await Promise.race([
      ctx.brokerDied.catch((cause: unknown) => cause),
      sleep(1_000, undefined),
    ]);
    throw died ?? err;
  }
}

/**
 * One play through Loa. t0 is taken just before the POST leaves the bench process: the latency a device
 * sees then includes everything Loa does for an operator's request (HTTP, auth, validation, target
 * resolution, the delivery rows in SQLite, the publish loop), which is what "Loa's overhead" means.
 *
 * Delivery counts are polled only once every device has reported the command, so that the polling (each
 * GET reads all N delivery rows) does not compete with the broadcast it is timing. Devices ack the moment
 * they receive, so by then every ack is on its way or queued in the server; the rest of allAckedMs is the
 * server working through them, and the figure is late by at most one poll interval plus one GET.
 */
async function loaRound(
  ctx: Context,
  fleet: Fleet,
  label: string,
): Promise<{ result: LoaRoundResult; template: CommandEvent['command'] | undefined }> {
  const receipts = new Receipts(fleet, ctx.devices);
  const t0 = performance.now();
  const accepted = await guarded(ctx, sendPlay(ctx.loa.api, ctx.token, [ctx.provinceId], MEDIA));
  const triggerMs = performance.now() - t0;
  const allReceived = await receipts.wait(ctx.timeoutMs, ctx.brokerDied);
  const others = receipts.others(accepted.id);
  if (others.length > 0) progress(`${label}: devices reported other commands too: ${others.join(', ')}`);
  const latencies = receipts.latencies(t0, accepted.id);
  if (!allReceived || latencies.length < ctx.devices) {
    progress(`${label}: only ${latencies.length}/${ctx.devices} devices received the command`);
  }

  let counts: DeliveryCounts | undefined;
  let allAckedMs: number | null = null;
  const deadline = performance.now() + ctx.timeoutMs;
  for (;;) {
    counts = await guarded(ctx, deliveryCounts(ctx.loa.api, ctx.token, accepted.id));
    if (counts.done >= ctx.devices) {
      allAckedMs = performance.now() - t0;
      break;
    }
    if (performance.now() > deadline) {
      progress(`${label}: not every ack recorded after ${ctx.timeoutMs} ms: ${JSON.stringify(counts)}`);
      break;
    }
    await sleep(ACK_POLL_MS);
  }

  return {
    template: receipts.first,
    result: {
      round: label,
      ...summarize(latencies),
      received: latencies.length,
      triggerMs: round(triggerMs, 1),
      commandId: accepted.id,
      sent: accepted.sent,
      allAckedMs: allAckedMs === null ? null : Math.round(allAckedMs),
      counts,
    },
  };
}

/**
 * The same payload (same shape, same byte length: the Loa command the devices just received, with a fresh
 * command id, session id and times) for the raw broker. A fresh id matters: devices ignore an id they
 * have already handled, as QoS 1 redelivery requires.
 */
function rawPayload(template: CommandEvent['command']): { id: string; json: string } {
  const params = template.params;
  if (typeof params !== 'object' || params === null) throw new Error('the Loa command had no params object');
  const id = newId('cmd');
  const issuedAt = new Date();
  const json = JSON.stringify({
    ...template,
    id,
    issuedAt: issuedAt.toISOString(),
    expiresAt: new Date(issuedAt.getTime() + 600_000).toISOString(),
    params: { ...params, sessionId: newId('ses') },
  });
  return { id, json };
}

/**
 * One broadcast through the bare broker. t0 is taken just before the IPC trigger leaves the bench
 * process: as with Loa's POST, the clock starts when the bench asks another process to broadcast, so both
 * figures include one local inter-process hop and everything the broker process does after it.
 */
async function rawRound(
  ctx: Context,
  fleet: Fleet,
  label: string,
  payload: { id: string; json: string },
): Promise<RawRoundResult> {
  const receipts = new Receipts(fleet, ctx.devices);
  const { t0, published } = ctx.raw.broadcast(payload.json);
  const reply = await published;
  const triggerMs = performance.now() - t0;
  const allReceived = await receipts.wait(ctx.timeoutMs, ctx.brokerDied);
  const others = receipts.others(payload.id);
  if (others.length > 0) progress(`${label}: devices reported other commands too: ${others.join(', ')}`);
  const latencies = receipts.latencies(t0, payload.id);
  if (!allReceived || latencies.length < ctx.devices) {
    progress(`${label}: only ${latencies.length}/${ctx.devices} devices received the payload`);
  }
  return {
    round: label,
    ...summarize(latencies),
    received: latencies.length,
    triggerMs: round(triggerMs, 1),
    publishLoopMs: round(reply.loopMs, 1),
    publishErrors: reply.errors,
  };
}

// ---- set-up ---------------------------------------------------------------------------------------------

/** One province with communes of at most DEVICES_PER_COMMUNE devices, provisioned through the API. */
async function provision(
  loa: LoaServer,
  token: string,
  devices: number,
): Promise<{ provinceId: string; credentials: DeviceCredentials[] }> {
  const provinceId = await createArea(loa.api, token, { name: 'Bench province', level: 'province' });
  const communes = Math.ceil(devices / DEVICES_PER_COMMUNE);
  const credentials: DeviceCredentials[] = [];
  let provisioned = 0;
  let nextReport = 0.1;
  for (let c = 0; c < communes; c += 1) {
    // Even sizes (2,001 devices: 3 × 667, not 500 + 500 + 500 + 500 + 1).
    const count = Math.floor(devices / communes) + (c < devices % communes ? 1 : 0);
    const name = `Bench commune ${String(c + 1).padStart(3, '0')}`;
    const areaId = await createArea(loa.api, token, { name, level: 'commune', parentId: provinceId });
    const created = await provisionDevices({
      api: loa.api,
      token,
      areaId,
      count,
      namePrefix: `${name} cluster`,
      kind: 'cluster',
      concurrency: 20,
      onDevice: () => {
        provisioned += 1;
        const done = provisioned / devices;
        if (done >= nextReport) {
          progress(`provisioned ${Math.round(done * 100)} %`);
          nextReport += 0.1;
        }
      },
    });
    credentials.push(...created);
  }
  return { provinceId, credentials };
}

async function connectFleet(
  name: string,
  credentials: DeviceCredentials[],
  mqttUrl: string,
): Promise<{ fleet: Fleet; connectMs: number }> {
  const fleet = new Fleet(credentials, { ...FLEET_OPTIONS, mqttUrl });
  let errors = 0;
  fleet.on('error', (device, error) => {
    errors += 1;
    if (errors <= 5) progress(`${name} device ${device.id}: ${error.message}`);
  });
  const report = await fleet.connectAll();
  if (report.failed.length > 0) {
    const sample = report.failed
      .slice(0, 3)
      .map((f) => `${f.deviceId}: ${f.error}`)
      .join('; ');
    await fleet.closeAll();
    throw new Error(
      `${name}: ${report.failed.length} of ${credentials.length} devices did not connect (${sample})`,
    );
  }
  return { fleet, connectMs: report.elapsedMs };
}

const mb = (memory: Memory | undefined): { rssMb: number; peakRssMb: number | null } | null =>
  memory
    ? {
        rssMb: round(memory.rssMb, 1),
        peakRssMb: memory.peakRssMb === undefined ? null : round(memory.peakRssMb, 1),
      }
    : null;

// ---- main -----------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const options = parseOptions();
  const N = options.devices;
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const startedAt = performance.now();

  // A hung step must not keep the machine busy forever; the exit hook of processes.ts kills the children.
  const { cleanups, cleanup } = cleanupScope(20 * 60_000 + N * 60);

  try {
    progress(`starting Loa (MQTT_MAX_CONNECTS_PER_S=${MAX_CONNECTS_PER_S}) and the raw Aedes baseline`);
    const [loa, raw] = await Promise.all([
      startLoa({ repoRoot, maxConnectsPerSecond: MAX_CONNECTS_PER_S, cpuProfDir: options.cpuProfDir }),
      RawBroker.start({ repoRoot, concurrency: options.rawConcurrency }),
    ]);
    const watch = failOnExit([loa.child, raw.child]);
    // Pushed last, so run first: a broker stopped by the clean-up is not a broker that died.
    cleanups.push(
      () => loa.stop(),
      () => raw.stop(),
      async () => watch.stop(),
    );

    const token = await login(loa.api, 'admin', loa.adminPassword);
    const t = performance.now();
    progress(`provisioning ${N} cluster devices through the API`);
    const { provinceId, credentials } = await provision(loa, token, N);
    const provisionMs = Math.round(performance.now() - t);
    progress(`provisioned ${credentials.length} devices in ${provisionMs} ms`);

    await raw.setTargets(credentials.map((c) => c.id));
    const ctx: Context = {
      devices: N,
      loa,
      token,
      provinceId,
      raw,
      timeoutMs: 30_000 + N * 5,
      brokerDied: watch.failed,
    };
    // Between broadcasts both processes finish what trails one (acks, playback logs, state reports and
    // their SQLite writes, garbage collection), so that no round pays for the one before it.
    const settleMs = 1_000 + Math.round(N * 0.2);
    const settle = async (): Promise<void> => {
      await sleep(settleMs);
      collectGarbage();
      // What the collection freed (sockets' buffers, timers) may have work queued; let that run first.
      await sleep(100);
    };

    // Each simulated device holds one socket in this process. When both fleets fit under the open-file
    // limit they stay connected and the rounds alternate Loa / raw, so that slow drift on a shared machine
    // (another job, thermal throttling) hits both sides alike. Otherwise (10,000 devices under a limit of
    // 20,000) all Loa rounds run first, then the Loa fleet is closed and the raw fleet connected.
    const fdLimit = openFileLimit();
    const alternate = fdLimit === undefined || 2 * N + FD_RESERVE <= fdLimit;
    const mode = alternate ? 'alternating' : 'sequential';
    if (!alternate)
      progress(`open-file limit ${fdLimit} < 2 × ${N} + ${FD_RESERVE}: Loa rounds first, then raw rounds`);

    const connect = async (side: 'loa' | 'raw'): Promise<{ fleet: Fleet; connectMs: number }> => {
      progress(`connecting ${N} simulated devices to ${side === 'loa' ? 'Loa' : 'the raw broker'}`);
      const connected = await connectFleet(side, credentials, side === 'loa' ? loa.mqttUrl : raw.mqttUrl);
      cleanups.push(() => connected.fleet.closeAll());
      progress(`connected in ${connected.connectMs} ms`);
      return connected;
    };
    const memoryIdle: { loa?: Memory; raw?: Memory } = {};
    const memoryAfter: { loa?: Memory; raw?: Memory } = {};
    const loaRounds: LoaRoundResult[] = [];
    const rawRounds: RawRoundResult[] = [];
    let template: CommandEvent['command'] | undefined;
    let loaPayloadBytes = 0;
    let rawPayloadBytes = 0;

    // One unmeasured round per side first: it JIT-compiles the hot paths (HTTP route, zod, SQL statements,
    // MQTT encode/decode), and it makes every measured round alike for the devices, which from then on
    // always interrupt a playing session (5 messages back per command instead of 4). Loa's goes first: its
    // command, as the devices received it, is the template of the raw payload.
    const runLoa = async (fleet: Fleet, label: string): Promise<void> => {
      const { result, template: received } = await loaRound(ctx, fleet, label);
      if (!template) {
        if (!received) throw new Error('no device received the warm-up command; nothing to compare');
        template = received;
        loaPayloadBytes = Buffer.byteLength(JSON.stringify(received));
      }
      if (label.endsWith('warm-up')) return;
      loaRounds.push(result);
      progress(
        `${label}: p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, max ${result.maxMs} ms, all acked ${result.allAckedMs ?? 'never'} ms`,
      );
    };
    const runRaw = async (fleet: Fleet, label: string): Promise<void> => {
      if (!template) throw new Error('the raw round needs the Loa command as a template');
      const payload = rawPayload(template);
      rawPayloadBytes = Buffer.byteLength(payload.json);
      const result = await rawRound(ctx, fleet, label, payload);
      if (label.endsWith('warm-up')) return;
      rawRounds.push(result);
      progress(`${label}: p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, max ${result.maxMs} ms`);
    };

    let loaSide: { fleet: Fleet; connectMs: number };
    let rawSide: { fleet: Fleet; connectMs: number };
    if (alternate) {
      loaSide = await connect('loa');
      rawSide = await connect('raw');
      memoryIdle.loa = await processMemory(loa.child.pid);
      memoryIdle.raw = await processMemory(raw.child.pid);
      for (let r = 0; r <= options.rounds; r += 1) {
        const label = r === 0 ? 'warm-up' : String(r);
        await settle();
        await runLoa(loaSide.fleet, `loa ${label}`);
        await settle();
        await runRaw(rawSide.fleet, `raw ${label}`);
      }
      memoryAfter.loa = await processMemory(loa.child.pid);
      memoryAfter.raw = await processMemory(raw.child.pid);
    } else {
      loaSide = await connect('loa');
      memoryIdle.loa = await processMemory(loa.child.pid);
      for (let r = 0; r <= options.rounds; r += 1) {
        await settle();
        await runLoa(loaSide.fleet, `loa ${r === 0 ? 'warm-up' : r}`);
      }
      memoryAfter.loa = await processMemory(loa.child.pid);
      progress('closing the Loa fleet');
      await loaSide.fleet.closeAll();
      // Loa records 10,000 devices going offline; let that finish before measuring the baseline.
      await sleep(settleMs);
      rawSide = await connect('raw');
      memoryIdle.raw = await processMemory(raw.child.pid);
      for (let r = 0; r <= options.rounds; r += 1) {
        await settle();
        await runRaw(rawSide.fleet, `raw ${r === 0 ? 'warm-up' : r}`);
      }
      memoryAfter.raw = await processMemory(raw.child.pid);
    }

    const loaMedian = medianBy(loaRounds, (x) => x.p99Ms);
    const pairedRatios = loaRounds.map((l, i) => round(l.p99Ms / (rawRounds[i]?.p99Ms ?? NaN), 2));
    const rawMedian = medianBy(rawRounds, (x) => x.p99Ms);
    const complete =
      loaRounds.every((x) => x.received === N && x.allAckedMs !== null && x.sent === N) &&
      rawRounds.every((x) => x.received === N);

    progress('closing clients and brokers');
    await cleanup();

    const detail = {
      bench: 'commands',
      devices: N,
      rounds: options.rounds,
      mode,
      complete,
      settings: {
        maxConnectsPerSecond: MAX_CONNECTS_PER_S,
        rawAedesConcurrency: options.rawConcurrency,
        devicesPerCommune: DEVICES_PER_COMMUNE,
        connectConcurrency: FLEET_OPTIONS.connectConcurrency,
        ackPollMs: ACK_POLL_MS,
        settleMs,
        openFileLimit: fdLimit ?? null,
        node: process.version,
      },
      provisionMs,
      connectMs: { loa: loaSide.connectMs, raw: rawSide.connectMs },
      payloadBytes: { loa: loaPayloadBytes, raw: rawPayloadBytes },
      memory: {
        loa: { connected: mb(memoryIdle.loa), afterRounds: mb(memoryAfter.loa) },
        raw: { connected: mb(memoryIdle.raw), afterRounds: mb(memoryAfter.raw) },
      },
      loaRounds,
      rawRounds,
      medianRound: { loa: loaMedian.round, raw: rawMedian.round },
      // What Loa adds, in milliseconds, median round against median round. The simulated devices share one
      // core in this process, so latencies carry a floor set by the simulator; differences do not.
      loaOverheadMs: {
        p50: round(loaMedian.p50Ms - rawMedian.p50Ms, 1),
        p99: round(loaMedian.p99Ms - rawMedian.p99Ms, 1),
        trigger: round(loaMedian.triggerMs - rawMedian.triggerMs, 1),
      },
      // Each Loa round against the raw round right after it, which ran under the same machine load: the
      // median of these is a cross-check of ratioP99 that is less sensitive to drift during the run.
      pairedRatiosP99: pairedRatios,
      medianPairedRatioP99: medianBy(pairedRatios, (x) => x),
      totalMs: Math.round(performance.now() - startedAt),
    };
    const summary = {
      devices: N,
      connectMs: loaSide.connectMs,
      loa: {
        p50Ms: loaMedian.p50Ms,
        p99Ms: loaMedian.p99Ms,
        maxMs: loaMedian.maxMs,
        allAckedMs: loaMedian.allAckedMs,
      },
      raw: { p50Ms: rawMedian.p50Ms, p99Ms: rawMedian.p99Ms, maxMs: rawMedian.maxMs },
      ratioP99: round(loaMedian.p99Ms / rawMedian.p99Ms, 2),
      serverRssMb: memoryAfter.loa ? Math.round(memoryAfter.loa.rssMb) : null,
    };
    // Waits for the write: process.exit() right after could cut the line short on a slow pipe.
    await new Promise<void>((resolve) =>
      process.stdout.write(`${JSON.stringify(detail)}\n${JSON.stringify(summary)}\n`, () => resolve()),
    );
    if (!complete)
      progress(
        'INCOMPLETE: some device did not receive a command or some ack was not recorded (see the detail line)',
      );
    return complete ? 0 : 2;
  } finally {
    await cleanup();
  }
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
