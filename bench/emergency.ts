/**
 * Emergency benchmark: an officer sends a typhoon warning to every loudspeaker of a district. How long
 * until each of N loudspeakers has its play command, has downloaded the warning's audio, and until the
 * server has recorded every acknowledgement? Compared, in the same run with the same simulated devices,
 * with a bare Aedes broker (and Mosquitto, when installed) publishing the same play command to them.
 * See bench/README.md (`bench:emergency`) for how to read the figures.
 *
 *   npm run bench:emergency -- --devices 10000 [--rounds 3]
 *
 * Progress goes to stderr; the last line on stdout is one JSON object with the headline figures, the line
 * before it a JSON object with every round in detail.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Fleet, login, type DeviceCredentials, type FleetOptions } from '../firmware-sim/src/index.js';
import { parseBenchArgs } from './lib/cli.js';
import {
  emergencyCounts,
  hasEmergencyRoute,
  limitFetchConnections,
  provisionDistrict,
  sendEmergency,
  unanswered,
  unreceived,
  watchEvents,
  DEVICES_PER_COMMUNE,
  type EmergencyCounts,
} from './lib/emergency-api.js';
import { findMosquitto, startMosquitto, type Mosquitto } from './lib/emergency-mosquitto.js';
import { EmergencyRaw } from './lib/emergency-raw.js';
import {
  RoundWatch,
  baselinePayload,
  fileNameOf,
  type DeviceFigures,
  type ReceivedCommand,
} from './lib/emergency-round.js';
import { clockTicksPerSecond, cpuTime, totalUs } from './lib/health-proc.js';
import { startLoa, type LoaServer } from './lib/loa.js';
import {
  cleanupScope,
  failOnExit,
  forgetTempDir,
  openFileLimit,
  processMemory,
  progress,
  trackTempDir,
  type Memory,
} from './lib/processes.js';
import { medianBy, round, summarize, type LatencySummary } from './lib/stats.js';

const USAGE = `Usage: npm run bench:emergency -- [options]

Sends an emergency (POST /api/v1/emergencies, Vietnamese text rendered by the server's TTS) to a district
of N simulated loudspeakers through Loa, and the same play command through a bare Aedes broker (and
Mosquitto, if installed); prints receive latency (p50/p99/max), the time until every ack is recorded and
every device has downloaded the audio, server CPU and memory as JSON (last line of stdout).

Options:
  --devices <n>       simulated devices (default 2000)
  --rounds <n>        measured rounds per broker, after one warm-up round each; the median round by
                      p99 is reported (default 3)
  --text <text>       the warning's text (default: one Vietnamese sentence; the round number is added
                      so that every round renders, and devices download, a new file)
  --no-download       devices play without downloading (fan-out and acks only, on every side)
  --skip-mosquitto    do not measure Mosquitto even if it is installed
  --cpu-prof <dir>    write a V8 CPU profile of the Loa server into <dir> when it exits
  -h, --help          show this help`;

/** The targets, at 10,000 devices. */
const TARGETS = { ratioP99Max: 1.25, allAckedMaxMs: 3_000 } as const;

const DEFAULT_TEXT = 'Bão số 3 sắp đổ bộ vào Hải Lăng, bà con thôn Đông khẩn trương chằng chống nhà cửa.';

/** See bench:commands: the default connect-rate cap would measure the cap, not the server. */
const MAX_CONNECTS_PER_S = 100_000;
/** File descriptors this process needs besides device sockets and downloads. */
const FD_RESERVE = 1_000;
/** Polling of the delivery counts once every device has sent its final ack (see bench:commands). */
const ACK_POLL_MS = 50;
/** How long the progress stream may lag behind the polled counts before it is reported as not at 100 %. */
const SSE_GRACE_MS = 3_000;

const fleetOptions = (noDownload: boolean) =>
  ({
    // Real time, so that playback ends (and its log and state) come after the acks being measured.
    speed: 1,
    heartbeatS: 86_400,
    keepaliveS: 120,
    connectConcurrency: 200,
    connectTimeoutMs: 120_000,
    noDownload,
    downloadTimeoutMs: 120_000,
  }) satisfies Omit<FleetOptions, 'mqttUrl'>;

interface Options {
  devices: number;
  rounds: number;
  text: string;
  noDownload: boolean;
  skipMosquitto: boolean;
  cpuProfDir: string | undefined;
}

function parseOptions(): Options {
  const { values, number } = parseBenchArgs(
    {
      devices: { type: 'string', default: '2000' },
      rounds: { type: 'string', default: '3' },
      text: { type: 'string', default: DEFAULT_TEXT },
      'no-download': { type: 'boolean', default: false },
      'skip-mosquitto': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
    },
    USAGE,
  );
  return {
    devices: number('devices', values.devices, 1),
    rounds: number('rounds', values.rounds, 1),
    text: values.text,
    noDownload: values['no-download'],
    skipMosquitto: values['skip-mosquitto'],
    cpuProfDir: values['cpu-prof'] === undefined ? undefined : path.resolve(values['cpu-prof']),
  };
}

/** A full GC of the bench process before each round (see bench:commands). */
const collectGarbage: () => void = (() => {
  setFlagsFromString('--expose-gc');
  const gc: unknown = runInNewContext('gc');
  return typeof gc === 'function' ? (gc as () => void) : () => undefined;
})();

type Side = 'loa' | 'raw' | 'mosquitto';

interface Context {
  N: number;
  options: Options;
  loa: LoaServer;
  token: string;
  districtId: string;
  raw: EmergencyRaw;
  mosquitto: Mosquitto | undefined;
  ticks: number;
  timeoutMs: number;
  /** Rejects when a server process exits before we stop it. */
  died: Promise<never>;
  workDir: string;
}

interface RoundBase {
  round: string;
  received: number;
  done: number;
  ackFailures: Record<string, number>;
  downloaded: number;
  downloadFailures: number;
  firstDownloadFailure?: string | undefined;
  /** Receipt latency of the play command (fan-out): from the dispatch instant for Loa, the trigger for the baselines. */
  fanout: LatencySummary;
  /** t0 (the POST for Loa, the trigger for the baselines) until the last device had its file verified. */
  allDownloadedMs: number | null;
  /** When each device had its file verified, from t0. */
  downloadMs: LatencySummary | null;
  /** t0 until the last device sent its final ack (device side). */
  lastFinalAckSentMs: number | null;
  /** CPU time of the broker's process (all threads) from t0 until every device was done, ms. */
  serverCpuMs: number | null;
}

interface LoaRound extends RoundBase {
  emergencyId: string;
  commandId: string;
  targetCount: number;
  /** Receipt latency from just before the POST left the bench. */
  fromPost: LatencySummary;
  /** The POST's round trip. */
  postMs: number;
  /** POST start → the command's issuedAt (HTTP, auth, validation, TTS, render, emergency rows). */
  renderMs: number;
  /** POST start → the emergency's createdAt. */
  createdAtMs: number | null;
  /** POST start → GET /emergencies/:id showing every device at least `received`. */
  allReceivedAckedMs: number | null;
  /** POST start → GET /emergencies/:id showing every device answered (`done`, or failed). */
  allAckedMs: number | null;
  /** Dispatch instant → the same. */
  allAckedFromDispatchMs: number | null;
  /** The dispatch instant → the last device had its file downloaded and verified. */
  allDownloadedFromDispatchMs: number | null;
  /** POST start → the first progress event showing every device at least `received`; null if none did. */
  sseAllReceivedMs: number | null;
  /** POST start → the first progress event showing every device answered; null if none did. */
  sseAllAckedMs: number | null;
  sseEvents: Record<string, number>;
  sseError: string | undefined;
  counts: EmergencyCounts | undefined;
  /** The count polls of this round: how many, and how long each took to answer (ms). */
  polls: { count: number; p50Ms: number; p99Ms: number; maxMs: number } | null;
  fileBytes: number;
  durationMs: number | null;
  payloadBytes: number;
}

interface BaselineRound extends RoundBase {
  /** The IPC trigger's round trip (the publish loop included for Aedes). */
  triggerMs: number;
  loopMs: number;
  /** Mosquitto only: from the trigger until Mosquitto had PUBACKed every PUBLISH. */
  pubackMs?: number | undefined;
  payloadBytes: number;
}

const pick = (s: LatencySummary) => ({ p50Ms: s.p50Ms, p99Ms: s.p99Ms, maxMs: s.maxMs });

async function cpuMs(pid: number, ticks: number): Promise<number | null> {
  try {
    return totalUs(await cpuTime(pid, ticks)) / 1_000;
  } catch {
    return null;
  }
}

function baseOf(
  label: string,
  figures: DeviceFigures,
  fanout: LatencySummary,
  cpu: number | null,
): RoundBase {
  return {
    round: label,
    received: figures.received,
    done: figures.done,
    ackFailures: figures.ackFailures,
    downloaded: figures.downloaded,
    downloadFailures: figures.downloadFailures,
    ...(figures.firstDownloadFailure ? { firstDownloadFailure: figures.firstDownloadFailure } : {}),
    fanout,
    allDownloadedMs: figures.allDownloadedMs,
    downloadMs: figures.downloadMs,
    lastFinalAckSentMs: figures.lastFinalAckSentMs,
    serverCpuMs: cpu === null ? null : Math.round(cpu),
  };
}

/** Waits for every device to have the command (and so to have sent its `received` ack). */
async function awaitReceived(ctx: Context, watch: RoundWatch, label: string): Promise<void> {
  const N = ctx.N;
  if (!(await watch.until(() => watch.received.length >= N, ctx.timeoutMs, ctx.died)))
    progress(`${label}: only ${watch.received.length}/${N} devices received a command`);
}

/** Waits for every device to have the command, then to have finished with it (downloaded, final ack). */
async function awaitDevices(
  ctx: Context,
  watch: RoundWatch,
  label: string,
  download: boolean,
): Promise<void> {
  const N = ctx.N;
  await awaitReceived(ctx, watch, label);
  const finished = () => watch.finalAcks.length >= N && (!download || watch.downloads.length >= N);
  if (!(await watch.until(finished, ctx.timeoutMs, ctx.died)))
    progress(
      `${label}: after ${ctx.timeoutMs} ms ${watch.finalAcks.length}/${N} final acks, ${watch.downloads.length}/${N} downloads`,
    );
}

/** Waits until every device's playback of the round has ended, so that the next round starts on idle devices. */
async function awaitPlaybackEnd(ctx: Context, watch: RoundWatch, durationMs: number | null): Promise<void> {
  const received = watch.received.length;
  const timeout = (durationMs ?? 60_000) + 30_000;
  if (!(await watch.until(() => watch.ended >= received, timeout, ctx.died)))
    progress(`playback still going on ${received - watch.ended} devices; going on anyway`);
}

// ---- Loa ---------------------------------------------------------------------------------------------

async function loaRound(
  ctx: Context,
  fleet: Fleet,
  label: string,
  text: string,
  download: boolean,
): Promise<{ result: LoaRound; template: ReceivedCommand | undefined }> {
  const N = ctx.N;
  const watch = new RoundWatch(fleet);
  try {
    const cpu0 = await cpuMs(ctx.loa.child.pid, ctx.ticks);
    // Wall clock minus this process's monotonic clock, to place the server's timestamps on the latter.
    const offset = Date.now() - performance.now();
    const t0 = performance.now();
    const view = await Promise.race([
      sendEmergency(ctx.loa.api, ctx.token, {
        title: 'Cảnh báo bão số 3 – Huyện Hải Lăng',
        text,
        areaIds: [ctx.districtId],
        hazard: 'storm',
        riskLevel: 4,
      }),
      ctx.died,
    ]);
    const postMs = performance.now() - t0;
    if (view.targetCount !== N) progress(`${label}: targetCount ${view.targetCount}, expected ${N}`);
    const sse = watchEvents(ctx.loa.api, ctx.token, view.id);

    // Polls the counts until `settled` holds; when it does, the time, else undefined (after the timeout).
    let counts: EmergencyCounts | undefined;
    const polls: number[] = [];
    const pollUntil = async (settled: (c: EmergencyCounts) => boolean, what: string) => {
      const deadline = performance.now() + ctx.timeoutMs;
      for (;;) {
        const asked = performance.now();
        counts = await Promise.race([emergencyCounts(ctx.loa.api, ctx.token, view.id), ctx.died]);
        polls.push(performance.now() - asked);
        if (settled(counts)) return performance.now();
        if (performance.now() > deadline) {
          progress(`${label}: ${what} not recorded after ${ctx.timeoutMs} ms: ${JSON.stringify(counts)}`);
          return undefined;
        }
        await sleep(ACK_POLL_MS);
      }
    };
    // Every device has the command and has sent `received` at once: poll until the server shows them all
    // (the operator's "every loudspeaker confirmed it"). Then, once every device has sent its final ack
    // (after its download), until the server shows those recorded too. No polling while devices are still
    // receiving: each GET reads all N delivery rows, and must not slow the broadcast it measures.
    await awaitReceived(ctx, watch, label);
    const allReceivedAt = await pollUntil((c) => unreceived(c) === 0, 'every received ack');
    await awaitDevices(ctx, watch, label, download);
    const allAckedAt = await pollUntil((c) => unanswered(c) === 0, 'every final ack');
    const commandId = view.commandId ?? watch.received[0]?.commandId ?? '';
    const others = watch.others(commandId);
    if (others.length > 0) progress(`${label}: devices reported other commands too: ${others.join(', ')}`);
    const cpu1 = await cpuMs(ctx.loa.child.pid, ctx.ticks);
    if (allAckedAt !== undefined && sse.allAckedAt === undefined && sse.error === undefined) {
      const until = performance.now() + SSE_GRACE_MS;
      while (sse.allAckedAt === undefined && sse.error === undefined && performance.now() < until)
        await sleep(20);
    }
    sse.close();

    const template = watch.received.find((r) => r.commandId === commandId)?.command;
    const issuedAt = typeof template?.issuedAt === 'string' ? Date.parse(template.issuedAt) : NaN;
    const createdAt = Date.parse(view.createdAt);
    // The dispatch instant on this process's clock: the command's issuedAt (ms resolution), else createdAt.
    const dispatch = (Number.isFinite(issuedAt) ? issuedAt : createdAt) - offset;
    const figures = watch.figures(commandId, t0);
    const fanout = summarize(figures.receivedAt.map((at) => at - dispatch));
    const source = (template?.params as { source?: { durationMs?: number } } | undefined)?.source;
    const durationMs = source?.durationMs ?? null;
    const repeat = (template?.params as { repeat?: number } | undefined)?.repeat ?? 1;
    const cpu = cpu0 === null || cpu1 === null ? null : cpu1 - cpu0;
    const sinceDispatch = (at: number | undefined) => (at === undefined ? null : Math.round(at - dispatch));
    const result: LoaRound = {
      ...baseOf(label, figures, fanout, cpu),
      emergencyId: view.id,
      commandId,
      targetCount: view.targetCount,
      fromPost: figures.receiveMs,
      postMs: round(postMs, 1),
      renderMs: round(dispatch - t0, 1),
      createdAtMs: Number.isFinite(createdAt) ? round(createdAt - offset - t0, 1) : null,
      allReceivedAckedMs: allReceivedAt === undefined ? null : Math.round(allReceivedAt - t0),
      allAckedMs: allAckedAt === undefined ? null : Math.round(allAckedAt - t0),
      allAckedFromDispatchMs: sinceDispatch(allAckedAt),
      allDownloadedFromDispatchMs:
        figures.allDownloadedMs === null ? null : round(figures.allDownloadedMs + t0 - dispatch, 1),
      sseAllReceivedMs: sse.allReceivedAt === undefined ? null : Math.round(sse.allReceivedAt - t0),
      sseAllAckedMs: sse.allAckedAt === undefined ? null : Math.round(sse.allAckedAt - t0),
      sseEvents: sse.events,
      sseError: sse.error,
      counts,
      polls: polls.length === 0 ? null : { count: polls.length, ...pick(summarize(polls)) },
      fileBytes: 0,
      durationMs,
      payloadBytes: template ? Buffer.byteLength(JSON.stringify(template)) : 0,
    };
    await awaitPlaybackEnd(ctx, watch, durationMs === null ? null : durationMs * repeat);
    return { result, template };
  } finally {
    watch.detach();
  }
}

/**
 * The file Loa rendered for a round, downloaded once by the bench (outside any measurement) and handed
 * to the baseline's file server under the same name, for the baseline rounds that replay this command.
 */
async function shareFile(ctx: Context, template: ReceivedCommand): Promise<number> {
  const url = (template.params as { source: { url: string } }).source.url;
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
  const bytes = Buffer.from(await response.arrayBuffer());
  const name = fileNameOf(url);
  const file = path.join(ctx.workDir, name);
  await writeFile(file, bytes);
  return ctx.raw.serveFile(name, file);
}

// ---- baselines ---------------------------------------------------------------------------------------

async function baselineRound(
  ctx: Context,
  fleet: Fleet,
  side: 'raw' | 'mosquitto',
  label: string,
  template: ReceivedCommand,
  download: boolean,
): Promise<BaselineRound> {
  const payload = baselinePayload(template, ctx.raw.httpUrl);
  const watch = new RoundWatch(fleet);
  try {
    const pid = side === 'raw' ? ctx.raw.child.pid : ctx.mosquitto?.pid;
    const cpu0 = pid === undefined ? null : await cpuMs(pid, ctx.ticks);
    let t0: number;
    let loopMs: number;
    let triggerMs: number;
    let pubackMs: number | undefined;
    if (side === 'raw') {
      const trigger = ctx.raw.broadcast(payload.json);
      t0 = trigger.t0;
      const reply = await Promise.race([trigger.published, ctx.died]);
      triggerMs = performance.now() - t0;
      loopMs = reply.loopMs;
      if (reply.errors > 0) progress(`${label}: ${reply.errors} publish errors so far`);
      await awaitDevices(ctx, watch, label, download);
    } else {
      const trigger = ctx.raw.broadcastMosquitto(payload.json);
      t0 = trigger.t0;
      await awaitDevices(ctx, watch, label, download);
      const reply = await Promise.race([trigger.acked, ctx.died]);
      triggerMs = NaN;
      loopMs = reply.loopMs;
      pubackMs = reply.pubackMs < 0 ? undefined : round(reply.pubackMs, 1);
    }
    const cpu1 = pid === undefined ? null : await cpuMs(pid, ctx.ticks);
    const figures = watch.figures(payload.id, t0);
    const others = watch.others(payload.id);
    if (others.length > 0) progress(`${label}: devices reported other commands too: ${others.join(', ')}`);
    const cpu = cpu0 === null || cpu1 === null ? null : cpu1 - cpu0;
    const result: BaselineRound = {
      ...baseOf(label, figures, figures.receiveMs, cpu),
      triggerMs: round(triggerMs, 1),
      loopMs: round(loopMs, 1),
      ...(pubackMs === undefined ? {} : { pubackMs }),
      payloadBytes: Buffer.byteLength(payload.json),
    };
    const params = template.params as { source?: { durationMs?: number }; repeat?: number } | undefined;
    const durationMs = params?.source?.durationMs;
    await awaitPlaybackEnd(ctx, watch, durationMs === undefined ? null : durationMs * (params?.repeat ?? 1));
    return result;
  } finally {
    watch.detach();
  }
}

// ---- set-up ------------------------------------------------------------------------------------------

async function connectFleet(
  name: string,
  credentials: DeviceCredentials[],
  mqttUrl: string,
  noDownload: boolean,
): Promise<{ fleet: Fleet; connectMs: number }> {
  const fleet = new Fleet(credentials, { ...fleetOptions(noDownload), mqttUrl });
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

const mb = (memory: Memory | undefined) =>
  memory
    ? {
        rssMb: round(memory.rssMb, 1),
        peakRssMb: memory.peakRssMb === undefined ? null : round(memory.peakRssMb, 1),
      }
    : null;

// ---- main --------------------------------------------------------------------------------------------

/**
 * The two kinds of rounds. `fanout`: devices play without downloading (as in bench:commands), so that a
 * receipt time is when the command came off the socket and not when the bench process, busy starting the
 * downloads of the devices before, got round to it; this is what the brokers are compared on. `full`:
 * devices download and verify the file before they play and ack `done`, as real ones do; this is what
 * the time to every download and to every ack recorded are measured on.
 */
type Phase = 'fanout' | 'full';

async function main(): Promise<number> {
  const options = parseOptions();
  const N = options.devices;
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const startedAt = performance.now();
  const { cleanups, cleanup } = cleanupScope(30 * 60_000 + N * 150);

  try {
    const workDir = await mkdtemp(path.join(tmpdir(), 'loa-bench-emergency-'));
    trackTempDir(workDir);
    cleanups.push(async () => {
      await rm(workDir, { recursive: true, force: true });
      forgetTempDir(workDir);
    });

    const found = options.skipMosquitto ? { missing: '--skip-mosquitto' } : findMosquitto();
    progress('starting Loa and the baseline (bare Aedes broker + bare file server)');
    const [loa, raw] = await Promise.all([
      startLoa({
        repoRoot,
        maxConnectsPerSecond: MAX_CONNECTS_PER_S,
        cpuProfDir: options.cpuProfDir,
        // Every simulated device connects and downloads from 127.0.0.1: no per-address caps.
        env: { MAX_CONNECTIONS_PER_ADDRESS: '0' },
      }),
      EmergencyRaw.start(repoRoot),
    ]);
    const watch = failOnExit([loa.child, raw.child]);
    cleanups.push(
      () => loa.stop(),
      () => raw.stop(),
      async () => watch.stop(),
    );

    let mosquitto: Mosquitto | undefined;
    let mosquittoStopping = false;
    let mosquittoDied: Promise<never> = new Promise<never>(() => undefined);
    if ('path' in found) {
      progress(`starting Mosquitto ${found.version} (${found.path})`);
      mosquitto = await startMosquitto(found.path, workDir);
      const started = mosquitto;
      cleanups.push(async () => {
        mosquittoStopping = true;
        await started.stop();
      });
      mosquittoDied = started.exited.then(() => {
        if (!mosquittoStopping) throw new Error('mosquitto exited unexpectedly (see its output above)');
        return new Promise<never>(() => undefined);
      });
      mosquittoDied.catch(() => undefined);
      await raw.connectMosquitto(started.port);
    } else {
      progress(`Mosquitto not measured: ${found.missing}`);
    }

    const token = await login(loa.api, 'admin', loa.adminPassword);
    if (!(await hasEmergencyRoute(loa.api, token)))
      throw new Error('POST /api/v1/emergencies answered 404: this server has no emergencies API');

    const t = performance.now();
    progress(`provisioning ${N} cluster devices in one district through the API`);
    const { districtId, communeIds, credentials } = await provisionDistrict(loa.api, token, N);
    const provisionMs = Math.round(performance.now() - t);
    progress(
      `provisioned ${credentials.length} devices in ${communeIds.length} communes in ${provisionMs} ms`,
    );
    await raw.setTargets(credentials.map((c) => c.id));

    const ctx: Context = {
      N,
      options,
      loa,
      token,
      districtId,
      raw,
      mosquitto,
      ticks: clockTicksPerSecond(),
      timeoutMs: 30_000 + N * 6,
      died: Promise.race([watch.failed, mosquittoDied]),
      workDir,
    };
    ctx.died.catch(() => undefined);
    const settleMs = 1_000 + Math.round(N * 0.2);
    const settle = async (): Promise<void> => {
      await sleep(settleMs);
      collectGarbage();
      await sleep(100);
    };

    // Open files: each connected device is a socket here and one in its broker; each download in flight a
    // socket here and a socket and an open file in the server. When every side's fleet fits, all stay
    // connected and rounds alternate between sides, so that drift in machine load hits every side alike;
    // otherwise one side after the other, with the downloads in flight capped at what the server can open.
    const fdLimit = openFileLimit() ?? Infinity;
    const phases: Phase[] = options.noDownload ? ['fanout'] : ['fanout', 'full'];
    const sidesOf = (phase: Phase): Side[] =>
      phase === 'full' ? ['loa', 'raw'] : mosquitto ? ['loa', 'raw', 'mosquitto'] : ['loa', 'raw'];
    const fits = (phase: Phase): boolean =>
      sidesOf(phase).length * N * (phase === 'full' ? 2 : 1) + FD_RESERVE <= fdLimit;
    const mode = {
      fanout: fits('fanout') ? 'alternating' : 'sequential',
      full: options.noDownload ? null : fits('full') ? 'alternating' : 'sequential',
    };
    let httpConnections: number | null = null;
    if (!options.noDownload && Number.isFinite(fdLimit)) {
      const room = fits('full') ? N : Math.floor((fdLimit - N - FD_RESERVE) / 2);
      if (room < 100)
        throw new Error(
          `open-file limit ${fdLimit} leaves no room for downloads with ${N} devices (ulimit -n)`,
        );
      httpConnections = Math.min(N, room);
    }
    // A fresh fetch dispatcher (capped) before each group of full rounds: the idle keep-alive sockets to
    // the previous side's server are closed, not left holding descriptors the next side needs.
    const freshDownloads = (): void => {
      if (httpConnections !== null && !limitFetchConnections(httpConnections)) {
        progress('could not cap fetch connections; downloads may run out of file descriptors');
        httpConnections = null;
      }
    };
    progress(
      `open-file limit ${fdLimit}: fan-out rounds ${mode.fanout}` +
        (mode.full ? `, full rounds ${mode.full} with ≤ ${httpConnections ?? '∞'} download connections` : ''),
    );

    const connectMs: Record<string, number> = {};
    const connect = async (side: Side, phase: Phase): Promise<Fleet> => {
      const url = side === 'loa' ? loa.mqttUrl : side === 'raw' ? raw.mqttUrl : (mosquitto?.mqttUrl ?? '');
      progress(`connecting ${N} simulated devices to ${side} (${phase} rounds)`);
      const connected = await connectFleet(side, credentials, url, phase === 'fanout');
      cleanups.push(() => connected.fleet.closeAll());
      connectMs[`${side} ${phase}`] = connected.connectMs;
      progress(`connected in ${connected.connectMs} ms`);
      return connected.fleet;
    };

    const pidOf = (side: Side): number | undefined =>
      side === 'loa' ? loa.child.pid : side === 'raw' ? raw.child.pid : mosquitto?.pid;
    const memory: Record<string, { connected?: Memory | undefined; after?: Memory | undefined }> = {};
    const rounds = {
      loa: { fanout: [] as LoaRound[], full: [] as LoaRound[] },
      raw: { fanout: [] as BaselineRound[], full: [] as BaselineRound[] },
      mosquitto: { fanout: [] as BaselineRound[], full: [] as BaselineRound[] },
    };
    const warmUps: LoaRound[] = [];
    const templates: Record<Phase, ReceivedCommand[]> = { fanout: [], full: [] };

    const runRound = async (fleet: Fleet, side: Side, phase: Phase, r: number): Promise<void> => {
      const label = `${side} ${phase} ${r === 0 ? 'warm-up' : r}`;
      await settle();
      if (side === 'loa') {
        const text = `${options.text} Bản tin ${phase === 'full' ? 'thứ hai' : 'thứ nhất'}, lần ${r + 1}.`;
        const { result, template } = await loaRound(ctx, fleet, label, text, phase === 'full');
        if (!template) throw new Error(`${label}: no device received the emergency; nothing to compare`);
        templates[phase][r] = template;
        if (phase === 'full') result.fileBytes = await shareFile(ctx, template);
        if (r === 0) warmUps.push(result);
        else rounds.loa[phase].push(result);
        progress(
          `${label}: render ${result.renderMs} ms, fan-out p50 ${result.fanout.p50Ms} / p99 ${result.fanout.p99Ms} ms` +
            (phase === 'full' ? `, all downloaded ${result.allDownloadedMs ?? 'never'} ms` : '') +
            `, all acked ${result.allAckedMs ?? 'never'} ms (from the POST)`,
        );
        return;
      }
      const template = templates[phase][r];
      if (!template) throw new Error(`${label}: the Loa round ${r} left no command to replay`);
      const result = await baselineRound(ctx, fleet, side, label, template, phase === 'full');
      if (r > 0) rounds[side][phase].push(result);
      progress(
        `${label}: fan-out p50 ${result.fanout.p50Ms} / p99 ${result.fanout.p99Ms} ms` +
          (phase === 'full' ? `, all downloaded ${result.allDownloadedMs ?? 'never'} ms` : ''),
      );
    };

    for (const phase of phases) {
      const sides = sidesOf(phase);
      const groups = mode[phase] === 'alternating' ? [sides] : sides.map((side) => [side]);
      for (const group of groups) {
        if (phase === 'full') freshDownloads();
        const fleets = new Map<Side, Fleet>();
        for (const side of group) fleets.set(side, await connect(side, phase));
        for (const side of group)
          memory[`${side} ${phase}`] = { connected: await processMemory(pidOf(side) ?? 0) };
        for (let r = 0; r <= options.rounds; r += 1)
          for (const [side, fleet] of fleets) await runRound(fleet, side, phase, r);
        for (const side of group)
          (memory[`${side} ${phase}`] ??= {}).after = await processMemory(pidOf(side) ?? 0);
        progress(`closing the ${group.join(' and ')} fleet${group.length > 1 ? 's' : ''}`);
        await Promise.all([...fleets.values()].map((fleet) => fleet.closeAll()));
        // The servers record N devices going offline; let that finish before the next fleet connects.
        await sleep(settleMs);
      }
    }

    const byP99 = <T extends RoundBase>(items: T[]): T | undefined =>
      items.length === 0 ? undefined : medianBy(items, (x) => x.fanout.p99Ms);
    const loaFan = byP99(rounds.loa.fanout);
    const rawFan = byP99(rounds.raw.fanout);
    const mosqFan = byP99(rounds.mosquitto.fanout);
    if (!loaFan || !rawFan) throw new Error('no measured round');
    // The full phase's reported round: the median by time to every ack recorded (its own figures together).
    const loaFull =
      rounds.loa.full.length === 0 ? undefined : medianBy(rounds.loa.full, (x) => x.allAckedMs ?? Infinity);
    const rawFull =
      rounds.raw.full.length === 0
        ? undefined
        : medianBy(rounds.raw.full, (x) => x.allDownloadedMs ?? Infinity);
    const allDone = (x: RoundBase, download: boolean) =>
      x.received === N && x.done === N && (!download || x.downloaded === N);
    const complete =
      rounds.loa.fanout.every((x) => allDone(x, false) && x.allAckedMs !== null && x.targetCount === N) &&
      rounds.loa.full.every((x) => allDone(x, true) && x.allAckedMs !== null && x.targetCount === N) &&
      [rounds.raw.fanout, rounds.mosquitto.fanout].every((list) => list.every((x) => allDone(x, false))) &&
      rounds.raw.full.every((x) => allDone(x, true));
    const ratioP99 = round(loaFan.fanout.p99Ms / rawFan.fanout.p99Ms, 2);
    const loaMemory = memory[options.noDownload ? 'loa fanout' : 'loa full']?.after;
    const allLoa = [...rounds.loa.fanout, ...rounds.loa.full];
    const medianOf = (values: (number | null)[]): number | null => {
      const known = values.filter((v): v is number => v !== null);
      return known.length === 0 ? null : medianBy(known, (v) => v);
    };
    const headline = loaFull ?? loaFan;

    progress('closing clients and servers');
    await cleanup();

    const detail = {
      bench: 'emergency',
      devices: N,
      roundsPerSide: options.rounds,
      mode,
      complete,
      settings: {
        noDownload: options.noDownload,
        text: options.text,
        maxConnectsPerSecond: MAX_CONNECTS_PER_S,
        devicesPerCommune: DEVICES_PER_COMMUNE,
        communes: communeIds.length,
        httpConnectionsPerOrigin: httpConnections,
        ackPollMs: ACK_POLL_MS,
        settleMs,
        openFileLimit: Number.isFinite(fdLimit) ? fdLimit : null,
        node: process.version,
        mosquitto: 'path' in found ? { path: found.path, version: found.version } : null,
      },
      mosquittoSkipped: 'missing' in found ? found.missing : null,
      provisionMs,
      connectMs,
      memory: Object.fromEntries(
        Object.entries(memory).map(([key, m]) => [
          key,
          { connected: mb(m.connected), afterRounds: mb(m.after) },
        ]),
      ),
      warmUps,
      rounds,
      medianRound: {
        loaFanout: loaFan.round,
        rawFanout: rawFan.round,
        mosquittoFanout: mosqFan?.round ?? null,
        loaFull: loaFull?.round ?? null,
        rawFull: rawFull?.round ?? null,
      },
      loaOverheadMs: {
        p50: round(loaFan.fanout.p50Ms - rawFan.fanout.p50Ms, 1),
        p99: round(loaFan.fanout.p99Ms - rawFan.fanout.p99Ms, 1),
      },
      pairedRatiosP99: rounds.loa.fanout.map((l, i) =>
        round(l.fanout.p99Ms / (rounds.raw.fanout[i]?.fanout.p99Ms ?? NaN), 2),
      ),
      medianOfRounds: {
        renderMs: medianOf(allLoa.map((x) => x.renderMs)),
        allAckedMs: medianOf(rounds.loa.full.map((x) => x.allAckedMs)),
        allDownloadedMs: medianOf(rounds.loa.full.map((x) => x.allDownloadedMs)),
        allAckedNoDownloadMs: medianOf(rounds.loa.fanout.map((x) => x.allAckedMs)),
        allReceivedAckedMs: medianOf(rounds.loa.full.map((x) => x.allReceivedAckedMs)),
      },
      totalMs: Math.round(performance.now() - startedAt),
    };
    const summary = {
      devices: N,
      loa: { ...pick(loaFan.fanout), fromPost: pick(loaFan.fromPost) },
      raw: pick(rawFan.fanout),
      ratioP99,
      mosquitto: mosqFan ? pick(mosqFan.fanout) : null,
      ratioP99VsMosquitto: mosqFan ? round(loaFan.fanout.p99Ms / mosqFan.fanout.p99Ms, 2) : null,
      allAckedMs: headline.allAckedMs,
      allReceivedAckedMs: headline.allReceivedAckedMs,
      allAckedNoDownloadMs: loaFan.allAckedMs,
      allDownloadedMs: loaFull?.allDownloadedMs ?? null,
      allDownloadedFromDispatchMs: loaFull?.allDownloadedFromDispatchMs ?? null,
      rawAllDownloadedMs: rawFull?.allDownloadedMs ?? null,
      renderMs: headline.renderMs,
      postMs: headline.postMs,
      fileBytes: loaFull?.fileBytes ?? null,
      serverCpuMs: headline.serverCpuMs,
      serverRssMb: loaMemory ? Math.round(loaMemory.rssMb) : null,
      serverPeakRssMb: loaMemory?.peakRssMb === undefined ? null : Math.round(loaMemory.peakRssMb),
      targets: {
        ...TARGETS,
        ratioP99Met: ratioP99 <= TARGETS.ratioP99Max,
        allAckedMet: headline.allAckedMs !== null && headline.allAckedMs <= TARGETS.allAckedMaxMs,
        allAckedNoDownloadMet: loaFan.allAckedMs !== null && loaFan.allAckedMs <= TARGETS.allAckedMaxMs,
      },
      complete,
    };
    await new Promise<void>((resolve) =>
      process.stdout.write(`${JSON.stringify(detail)}\n${JSON.stringify(summary)}\n`, () => resolve()),
    );
    if (!complete)
      progress('INCOMPLETE: some device missed the command, the file or an ack (see the detail line)');
    return complete ? 0 : 2;
  } finally {
    await cleanup();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    progress(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
