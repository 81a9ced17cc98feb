/**
 * One simulated station or cluster: the firmware side of the device protocol (docs: protocol.md), with
 * faults that can be switched on per device. Topics and payload schemas come from the server's own
 * protocol module, so the simulator and the server cannot drift apart.
 *
 * Built to run by the ten thousand in one process: one MQTT client per device is unavoidable, everything
 * else is a few numbers and at most one timer while something plays. Telemetry of every device in the
 * process is driven by one shared timer (see HeartbeatScheduler).
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { connect, type MqttClient } from 'mqtt';
import {
  COMMAND_TYPES,
  MAINTENANCE_TYPES,
  QOS,
  commandEnvelopeSchema,
  commandSchema,
  decodePayload,
  priorityRank,
  topics,
  type Ack,
  type AckStatus,
  type Command,
  type DeviceChannel,
  type DeviceState,
  type PlaybackLogEntry,
  type Priority,
  type Telemetry,
} from '../../src/protocol/index.js';
import { DownloadError, HashCache, downloadVerified, type DownloadFailure } from './download.js';
import { describeCertificateError } from './tls.js';

/** Faults a tester can switch on, at construction or at any time with `setFaults`. */
export interface Faults {
  /**
   * Acks not sent: `true` drops all, a number in 0..1 is the probability for each ack, `{ first: n }`
   * drops the next n acks from when the fault is set, then sends again (a server's re-send of the same
   * command id is then answered with the device's last ack for it: the retry tests).
   */
  dropAcks: boolean | number | { first: number };
  /** Every ack leaves this many real milliseconds late (a slow 4G link). */
  ackDelayMs: number;
  /** Every play is acked `failed` and logged `failed`; a string is the reason (default `download_failed`). */
  failPlayback: boolean | string;
  /** Telemetry reports `speakerFault: true` and every play fails with reason `speaker_fault`. */
  speakerFault: boolean;
  /** No telemetry while staying connected (a hung application on a live modem). */
  silent: boolean;
  /** Mains power lost: telemetry reports `onBattery: true` and a lower supply voltage. */
  powerCut: boolean;
  /** The link drops and comes back on its own, forever: up for about `upMs`, down for about `downMs`. */
  flapping: { upMs: number; downMs: number } | null;
  /**
   * Media arrives corrupted (a flash write error, a proxy that rewrote it): the play is acked `failed`,
   * reason `checksum_mismatch`, and not cached. `true` for every download, a number in 0..1 is the
   * probability for each. Applies with `noDownload` too, so a cheap fleet can still show the failure.
   */
  corruptDownloads: boolean | number;
}

const NO_FAULTS: Faults = {
  dropAcks: false,
  ackDelayMs: 0,
  failPlayback: false,
  speakerFault: false,
  silent: false,
  powerCut: false,
  flapping: null,
  corruptDownloads: false,
};

/**
 * The device's wall clock: what it stamps on acks and log entries, checks `expiresAt` against, and waits on
 * for a play's `startAt`. Shaped like the server's Clock (src/lib/clock.ts), so a test can hand the same
 * ManualClock to both; the system clock by default.
 */
export interface WallClock {
  now(): Date;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const systemWallClock: WallClock = {
  now: () => new Date(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export interface SimDeviceOptions {
  /** Device id issued by the API: MQTT clientId and username. */
  id: string;
  /** Device secret issued by the API: MQTT password. */
  password: string;
  /**
   * `mqtt://host:1883`, or `ws://host:3000/mqtt` for MQTT over WebSocket; over TLS `mqtts://host:8883` or
   * `wss://host/mqtt` (docs/protocol.md, Transport).
   */
  mqttUrl: string;
  /**
   * PEM CA bundle the device trusts, and only it, for the broker (mqtts://, wss://) and HTTPS downloads, as
   * firmware ships its own (tls.ts readCaBundle reads one). Unset: Node's built-in roots.
   */
  ca?: string;
  /** MQTT username; the protocol wants the device id, which is the default. Override only to test refusal. */
  username?: string;
  /** MQTT keepalive in real seconds (the protocol allows at most 120). Default 60. */
  keepaliveS?: number;
  /** Telemetry interval in simulated seconds. Default 30. */
  heartbeatS?: number;
  /**
   * How much faster than real time simulated time runs: media durations, the heartbeat and the boot time
   * are divided by it (speed 100: 30 s of audio plays in 300 ms). Timestamps in payloads stay real, and
   * so does a play's `startAt`: it names an instant on the wall clock, not a simulated duration.
   */
  speed?: number;
  /** The wall clock (see WallClock); tests pass a ManualClock to move past a `startAt` without waiting. */
  clock?: WallClock;
  /**
   * What media time runs on. `real` (default): real time multiplied by `speed`. `clock`: the `clock`
   * option's time and timers, one simulated ms per clock ms (`speed` then applies to the heartbeat and the
   * boot only): with a ManualClock a test moves through a play, its repeats and their gaps by advancing
   * the clock, and reads `positionMs` exactly.
   */
  playbackTime?: 'real' | 'clock';
  /** Firmware version reported in `state`. Default 1.4.2. */
  firmware?: string;
  /** Volume at boot, 0..100. Default 70. */
  volume?: number;
  /**
   * Reconnecting after a lost or refused connection (protocol.md §1): exponential back-off with full
   * jitter, a random wait in [0, min(max, base × 2^n)] real ms after the n-th failure in a row. The count
   * starts again once a connection has stayed up `reconnectStableMs`. Defaults: 1 s, 60 s, 60 s.
   */
  reconnectBaseMs?: number;
  reconnectMaxMs?: number;
  reconnectStableMs?: number;
  /**
   * Deprecated: a fixed ceiling instead of back-off (sets base and max alike when they are not given).
   */
  reconnectPeriodMs?: number;
  /** Source of the jitter, a number in [0, 1]; Math.random by default. Tests fix it. */
  random?: () => number;
  /** Simulated seconds a reboot takes before the device connects again. Default 20. */
  bootS?: number;
  /** Whether the firmware implements `ping`, `identify` and `reboot`; if not they are rejected `unsupported`. */
  maintenance?: boolean;
  /**
   * Plays media without downloading it (no HTTP request at all, the checksum taken as verified), as the
   * simulator did before devices downloaded: keeps a fleet of thousands cheap when the download is not
   * what is measured. Default false: a `media` play fetches its URL and verifies its SHA-256 first.
   */
  noDownload?: boolean;
  /** Longest wait in real ms for a download's response or its next chunk (see downloadVerified). Default 30 s. */
  downloadTimeoutMs?: number;
  /** How many verified files the device remembers by hash (its flash). Default 16. */
  cacheEntries?: number;
  faults?: Partial<Faults>;
}

/** What the device tells about a command it accepted for handling (not a duplicate, not malformed). */
export interface CommandEvent {
  /** The command as received: at least `id` and `type`, other fields unvalidated. */
  command: { id: string; type: string } & Record<string, unknown>;
  /** `performance.now()` at receipt, for latency measurements within one process. */
  receivedAt: number;
  at: Date;
}

/** The end of a media download, whatever came of it. */
export interface DownloadEvent {
  commandId: string;
  sha256: string;
  /** Bytes hashed, or the cached file's size on a cache hit; 0 when it failed. */
  bytes: number;
  fromCache: boolean;
  /** Set when the play failed: the ack's reason. */
  reason?: DownloadFailure;
  detail?: string;
}

export interface DeviceCounters {
  /** Commands answered (acked or at least meant to be, before `dropAcks`). */
  handledCommands: number;
  /** Commands whose id was already handled (QoS 1 redelivery, a server re-send): answered again, not run. */
  duplicateCommands: number;
  /** cmd payloads ignored because they were not JSON or had no id / type. */
  malformedCommands: number;
  /** Acks swallowed by the `dropAcks` fault. */
  droppedAcks: number;
  /** Acks and log entries lost because the offline outbox was full. */
  droppedOutbox: number;
  /** Media downloaded and verified. */
  downloads: number;
  /** Media plays served from the hash cache, without a request. */
  cacheHits: number;
  /** Media plays failed by `download_failed` or `checksum_mismatch`. */
  downloadFailures: number;
}

/** What is on air, as the `playback` getter tells it. */
export interface PlaybackView {
  sessionId: string;
  commandId: string;
  priority: Priority;
  /** Where in the session, ms, repeats and gaps included (as `positionMs` in `state`). */
  positionMs: number;
  /** The session's length (see sessionLengthMs); undefined for a stream that plays until stopped. */
  totalMs: number | undefined;
  /** Which play of the content (1-based) the session is at, of `plays` (the play's `repeat`). */
  play: number;
  plays: number;
  /** True during the silence after a play (`repeatGapMs`): the horns are quiet, the session goes on. */
  gap: boolean;
}

/** A reconnection is scheduled: `attempt` counts failures in a row (1 for the first). */
export interface ReconnectEvent {
  attempt: number;
  delayMs: number;
}

export type SimDeviceEvents = {
  /** Connected, subscribed to cmd and state published. */
  connect: [];
  disconnect: [reason: string];
  reconnecting: [event: ReconnectEvent];
  command: [event: CommandEvent];
  malformed: [error: string];
  ack: [ack: Ack];
  log: [entry: PlaybackLogEntry];
  state: [state: DeviceState];
  telemetry: [telemetry: Telemetry];
  download: [event: DownloadEvent];
  error: [error: Error];
};

interface Outgoing {
  ack: Ack;
  log: PlaybackLogEntry;
  state: DeviceState;
  telemetry: Telemetry;
}

interface Playback {
  sessionId: string;
  commandId: string;
  priority: Priority;
  startedAt: string;
  /** Media time (see mediaNow) when it went on air. */
  startedMedia: number;
  offsetMs: number;
  /** Simulated length of the whole session (repeats and gaps included); undefined for a stream that plays until stopped. */
  totalMs: number | undefined;
  /** Length of one play of the content and the silence after it (for `playback`); undefined for an endless stream. */
  durationMs: number | undefined;
  gapMs: number;
  plays: number;
  timer: unknown;
}

/**
 * A play accepted but not on air yet: its file is being downloaded, or its `startAt` has not come (or
 * both). Whatever plays meanwhile goes on.
 */
interface Pending {
  /** The first command of the session: what starts. */
  command: PlayCommand;
  sessionId: string;
  /** The play, then any re-sent for the same session meanwhile: all are answered when it ends. */
  commandIds: string[];
  priority: Priority;
  /** The download in flight; undefined once the file is verified, or when there is nothing to fetch. */
  controller: AbortController | undefined;
  /** The wall-clock timer that fires at its `startAt`, while that is still ahead. */
  timer: unknown;
}

type PlayCommand = Extract<Command, { type: 'play' }>;
type StopCommand = Extract<Command, { type: 'stop' }>;
type VolumeCommand = Extract<Command, { type: 'volume' }>;
type MaintenanceCommand = Extract<Command, { type: (typeof MAINTENANCE_TYPES)[number] }>;

// Unknown fields must survive the envelope check: the full command schema runs on the same object next.
const looseEnvelopeSchema = commandEnvelopeSchema.loose();
const KNOWN_TYPES = new Set<string>([...COMMAND_TYPES, ...MAINTENANCE_TYPES]);
// QoS 1 redelivery comes within seconds and a server re-sends after a reconnect within minutes, so a short
// memory is enough, and it stays small per device (ten thousand devices in one process).
const DEDUPE_WINDOW = 64;
// Acks and log entries produced while offline wait here, like a firmware's flash queue.
const OUTBOX_LIMIT = 500;
// A graceful MQTT end waits for in-flight PUBACKs; a dead broker must not keep close() waiting forever.
const CLOSE_GRACE_MS = 2_000;

/**
 * One timer that ticks every device in the process, each checking whether its telemetry is due:
 * 10,000 setIntervals would mean 10,000 timer wake-ups, this is one loop. The tick is fine enough for the
 * shortest interval registered, and the timer is unref'd so a forgotten device never keeps a process alive.
 */
class HeartbeatScheduler {
  private readonly members = new Set<(now: number) => void>();
  private timer: NodeJS.Timeout | undefined;
  private resolutionMs = Infinity;

  add(tick: (now: number) => void, intervalMs: number): void {
    this.members.add(tick);
    const wanted = Math.min(1_000, Math.max(5, intervalMs / 4));
    if (wanted < this.resolutionMs || !this.timer) {
      this.resolutionMs = Math.min(wanted, this.resolutionMs);
      clearInterval(this.timer);
      this.timer = setInterval(() => this.tick(), this.resolutionMs);
      this.timer.unref();
    }
  }

  delete(tick: (now: number) => void): void {
    this.members.delete(tick);
    if (this.members.size === 0) {
      clearInterval(this.timer);
      this.timer = undefined;
      this.resolutionMs = Infinity;
    }
  }

  private tick(): void {
    const now = performance.now();
    for (const tick of this.members) tick(now);
  }
}

const heartbeats = new HeartbeatScheduler();

const noop = (): void => undefined;
const jitter = (ms: number): number => ms * (0.5 + Math.random());

/**
 * Exponential back-off with full jitter: a random wait in [0, min(maxMs, baseMs × 2^attempt)]. Full
 * jitter spreads a fleet that lost its link together (a power cut, a broker restart) over the whole window
 * instead of bringing it back in waves.
 */
export function backoffDelay(
  attempt: number,
  baseMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 40));
  return Math.round(Math.min(1, Math.max(0, random())) * ceiling);
}
const round = (value: number, decimals: number): number => Number(value.toFixed(decimals));

/** How many acks a `dropAcks: { first: n }` fault drops (0 for the other forms, which count nothing). */
function firstAcks(drop: Faults['dropAcks']): number {
  if (typeof drop !== 'object') return 0;
  if (!Number.isInteger(drop.first) || drop.first < 0)
    throw new RangeError(`dropAcks.first must be an integer >= 0, got ${drop.first}`);
  return drop.first;
}

/**
 * Length of a play's whole session in ms: `repeat` plays of the content with `repeatGapMs` of silence
 * between two (none after the last); undefined for a stream that plays until stopped.
 */
export function sessionLengthMs(params: {
  source: { durationMs?: number };
  repeat?: number;
  repeatGapMs?: number;
}): number | undefined {
  const durationMs = params.source.durationMs;
  if (durationMs === undefined) return undefined;
  const plays = params.repeat ?? 1;
  return durationMs * plays + (params.repeatGapMs ?? 0) * (plays - 1);
}

/** What the device last answered to a command id, to answer a duplicate the same way. */
interface Handled {
  status: AckStatus;
  reason: string | undefined;
}

type ResolvedOptions = Required<Omit<SimDeviceOptions, 'faults' | 'reconnectPeriodMs' | 'ca'>> & {
  ca: string | undefined;
};

export class SimDevice extends EventEmitter<SimDeviceEvents> {
  readonly id: string;
  private readonly options: ResolvedOptions;
  private readonly speed: number;
  private readonly heartbeatMs: number;
  private readonly cmdTopic: string;
  private faultState: Faults;
  /** Acks still to drop under `dropAcks: { first: n }`. */
  private acksToDrop = 0;
  /** Set while `goOffline` holds the link down: the wall-clock timer that brings it back. */
  private offlineTimer: unknown;

  private client: MqttClient | undefined;
  private ready = false;
  private closed = false;
  private waiters: ((error?: Error) => void)[] = [];
  private timers: Set<NodeJS.Timeout> | undefined;
  private flapTimer: NodeJS.Timeout | undefined;
  private flapDown = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** Connection failures in a row, the exponent of the back-off. */
  private failures = 0;
  private readySince = 0;

  private volume: number;
  private playing: Playback | null = null;
  /**
   * A play due now whose file is still downloading. It counts as what plays for rule 4 (protocol.md §3.6):
   * a newer play of at least its priority, or a stop, abandons it.
   */
  private fetching: Pending | null = null;
  /**
   * Plays whose `startAt` is still ahead (their file may be downloading meanwhile). They are not on air
   * yet, so they do not count for rule 4 until they fall due: a play waiting for its start behaves as if
   * it had arrived at that start (see fallDue). Only a stop ends one early.
   */
  private waiting: Pending[] = [];
  /** Created on the first download: a fleet run with `noDownload` never needs one. */
  private cache: HashCache | undefined;
  private seq = 0;
  private bootedAt = performance.now();
  private nextTelemetryAt: number;
  /** Recently handled command ids, oldest first, with the last status the device answered. */
  private readonly handled = new Map<string, Handled>();
  private outbox: { channel: 'ack' | 'log'; payload: Ack | PlaybackLogEntry }[] | undefined;
  private readonly stats: DeviceCounters = {
    handledCommands: 0,
    duplicateCommands: 0,
    malformedCommands: 0,
    droppedAcks: 0,
    droppedOutbox: 0,
    downloads: 0,
    cacheHits: 0,
    downloadFailures: 0,
  };

  // Each device has its own radio and power supply; fixed at boot so its telemetry stays believable.
  private readonly rssiBase = -95 + Math.random() * 40;
  private readonly supplyBase = 12.5 + Math.random() * 0.6;

  constructor(options: SimDeviceOptions) {
    super();
    this.id = options.id;
    this.options = {
      id: options.id,
      password: options.password,
      mqttUrl: options.mqttUrl,
      ca: options.ca,
      username: options.username ?? options.id,
      keepaliveS: options.keepaliveS ?? 60,
      heartbeatS: options.heartbeatS ?? 30,
      speed: options.speed ?? 1,
      firmware: options.firmware ?? '1.4.2',
      volume: options.volume ?? 70,
      reconnectBaseMs: options.reconnectBaseMs ?? options.reconnectPeriodMs ?? 1_000,
      reconnectMaxMs: options.reconnectMaxMs ?? options.reconnectPeriodMs ?? 60_000,
      reconnectStableMs: options.reconnectStableMs ?? 60_000,
      random: options.random ?? Math.random,
      bootS: options.bootS ?? 20,
      maintenance: options.maintenance ?? true,
      noDownload: options.noDownload ?? false,
      downloadTimeoutMs: options.downloadTimeoutMs ?? 30_000,
      cacheEntries: options.cacheEntries ?? 16,
      clock: options.clock ?? systemWallClock,
      playbackTime: options.playbackTime ?? 'real',
    };
    if (!(this.options.speed > 0)) throw new RangeError(`speed must be > 0, got ${this.options.speed}`);
    if (!(this.options.heartbeatS > 0))
      throw new RangeError(`heartbeatS must be > 0, got ${this.options.heartbeatS}`);
    const { reconnectBaseMs, reconnectMaxMs } = this.options;
    // A zero base would retry in a tight loop, which the protocol forbids.
    if (!(reconnectBaseMs > 0) || !(reconnectMaxMs >= reconnectBaseMs))
      throw new RangeError(
        `need 0 < reconnectBaseMs <= reconnectMaxMs, got ${reconnectBaseMs} and ${reconnectMaxMs}`,
      );
    this.speed = this.options.speed;
    this.heartbeatMs = (this.options.heartbeatS * 1_000) / this.speed;
    this.volume = this.options.volume;
    this.cmdTopic = topics.cmd(this.id);
    this.faultState = { ...NO_FAULTS, ...options.faults };
    this.acksToDrop = firstAcks(this.faultState.dropAcks);
    // A random phase spreads a fleet's telemetry over the whole interval instead of one burst.
    this.nextTelemetryAt = performance.now() + Math.random() * this.heartbeatMs;
  }

  /** Connected to the broker and subscribed to its cmd topic. */
  get connected(): boolean {
    return this.ready;
  }

  /** What the device would report in `state` right now. */
  get state(): DeviceState {
    const p = this.playing;
    return {
      firmware: this.options.firmware,
      volume: this.volume,
      playing: p
        ? {
            sessionId: p.sessionId,
            commandId: p.commandId,
            priority: p.priority,
            startedAt: p.startedAt,
            positionMs: this.positionMs(p),
          }
        : null,
    };
  }

  /**
   * What is on air, in more detail than `state` tells the server: which of the `plays` (1-based) the
   * session is at, and whether it is in the silence after it (`repeatGapMs`). Null when nothing plays.
   */
  get playback(): PlaybackView | null {
    const p = this.playing;
    if (!p) return null;
    const positionMs = this.positionMs(p);
    const view = { sessionId: p.sessionId, commandId: p.commandId, priority: p.priority, positionMs };
    if (p.durationMs === undefined) return { ...view, totalMs: undefined, play: 1, plays: 1, gap: false };
    const cycleMs = p.durationMs + p.gapMs;
    const index = Math.min(p.plays - 1, Math.floor(positionMs / cycleMs));
    const gap = positionMs - index * cycleMs >= p.durationMs;
    return { ...view, totalMs: p.totalMs, play: index + 1, plays: p.plays, gap };
  }

  /** True while `goOffline` holds the link down. */
  get offline(): boolean {
    return this.offlineTimer !== undefined;
  }

  get counters(): Readonly<DeviceCounters> {
    return this.stats;
  }

  get faults(): Readonly<Faults> {
    return this.faultState;
  }

  setFaults(faults: Partial<Faults>): void {
    const flappingBefore = this.faultState.flapping;
    // `{ first: n }` counts from now: setting it again drops n more. Checked before anything changes.
    const acksToDrop = 'dropAcks' in faults ? firstAcks(faults.dropAcks ?? false) : this.acksToDrop;
    this.faultState = { ...this.faultState, ...faults };
    this.acksToDrop = acksToDrop;
    // Flapping acts on a running device only; connect() starts it for one that is not running yet.
    const running = this.client !== undefined || this.flapDown;
    if ('flapping' in faults && faults.flapping !== flappingBefore && running) this.restartFlapping();
  }

  /**
   * Connects (or keeps connecting) and resolves once subscribed with state published. Transient errors
   * (refused TCP, a broker rate-limiting connects) are retried by the MQTT client; the promise rejects on
   * a CONNACK that refuses the credentials (return code 4 or 5), on timeout, or if the device is closed
   * or disconnected meanwhile. The device goes on retrying in the background after a rejection.
   */
  connect(timeoutMs = 30_000): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`device ${this.id} is closed`));
    // Asked to connect during an outage (goOffline): the outage ends now (flapping resumes below).
    this.endOutage();
    heartbeats.add(this.onHeartbeat, this.heartbeatMs);
    if (this.faultState.flapping && !this.flapTimer) this.restartFlapping();
    if (!this.client) this.openClient();
    if (this.ready) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const settle = (error?: Error): void => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== settle);
        if (error) reject(error);
        else resolve();
      };
      const timer = setTimeout(
        () => settle(new Error(`device ${this.id}: no connection within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.waiters.push(settle);
    });
  }

  /**
   * Drops the link abruptly, as a lost 4G signal does (no MQTT DISCONNECT: the broker notices the socket
   * close). The device stays offline until `connect()` or `reconnect()`. Stops the flapping fault.
   */
  disconnect(): void {
    this.endOutage();
    clearTimeout(this.flapTimer);
    this.flapTimer = undefined;
    this.flapDown = false;
    this.faultState = { ...this.faultState, flapping: null };
    this.dropLink('disconnected', false);
  }

  /**
   * Takes the link down now, as `disconnect()` does (no MQTT DISCONNECT: out of coverage, a cut cable),
   * and brings it back after `ms` on the device's wall clock (the `clock` option: real ms by default,
   * a ManualClock's ms when a test passes one, so "back before / after the expiry" is the test's to
   * choose). Meanwhile the device keeps playing and queues its acks and log entries, as firmware does;
   * the flapping fault pauses. `connect()` or `reconnect()` ends the outage early, `disconnect()` makes
   * it last until one of them; another `goOffline` restarts it with the new length.
   */
  goOffline(ms: number): void {
    if (!(ms >= 0) || !Number.isFinite(ms)) throw new RangeError(`goOffline needs ms >= 0, got ${ms}`);
    if (this.closed) return;
    this.endOutage();
    clearTimeout(this.flapTimer);
    this.flapTimer = undefined;
    this.flapDown = false;
    this.dropLink('offline', false);
    this.offlineTimer = this.options.clock.setTimeout(() => {
      this.offlineTimer = undefined;
      if (this.closed) return;
      this.connect().catch(noop);
    }, ms);
  }

  /** Drops the link if it is up, then connects again. */
  reconnect(timeoutMs?: number): Promise<void> {
    this.dropLink('reconnecting', false);
    return this.connect(timeoutMs);
  }

  /** Ends everything this device holds: timers, playback, the MQTT client (gracefully if connected). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    heartbeats.delete(this.onHeartbeat);
    for (const timer of this.timers ?? []) clearTimeout(timer);
    this.timers = undefined;
    clearTimeout(this.flapTimer);
    clearTimeout(this.reconnectTimer);
    this.endOutage();
    this.clearMediaTimeout(this.playing?.timer);
    this.abandonPending();
    this.settleWaiters(new Error(`device ${this.id} closed`));
    const client = this.client;
    this.client = undefined;
    this.ready = false;
    if (!client) return;
    client.removeAllListeners();
    client.on('error', noop);
    await new Promise<void>((resolve) => {
      const guard = setTimeout(() => {
        client.stream?.destroy();
        resolve();
      }, CLOSE_GRACE_MS);
      client.end(!client.connected, () => {
        clearTimeout(guard);
        resolve();
      });
    });
  }

  // ---- connection -------------------------------------------------------------------------------------

  /** Cancels a `goOffline` outage's return; true if one was under way. */
  private endOutage(): boolean {
    if (this.offlineTimer === undefined) return false;
    this.options.clock.clearTimeout(this.offlineTimer);
    this.offlineTimer = undefined;
    return true;
  }

  private openClient(): void {
    const client = connect(this.options.mqttUrl, {
      clientId: this.id,
      username: this.options.username,
      password: this.options.password,
      protocolVersion: 4,
      clean: true,
      keepalive: this.options.keepaliveS,
      // MQTT.js retries at a fixed period; the back-off is ours (scheduleReconnect). Real firmware keeps
      // retrying after a refusal too (the server may be rate-limiting connects, or a technician may fix
      // the credentials); it does not brick itself.
      reconnectPeriod: 0,
      // We subscribe ourselves on every connect, so that state is published only after the SUBACK.
      resubscribe: false,
      queueQoSZero: false,
      // MQTT.js passes it to tls.connect (mqtts) and to ws (wss); the host name, not an IP, goes out as SNI.
      ...(this.options.ca === undefined ? {} : { ca: this.options.ca }),
    });
    client.on('connect', () => this.onConnect(client));
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.on('close', () => this.onClose(client));
    client.on('error', (error) => this.onClientError(error));
    this.client = client;
  }

  private onConnect(client: MqttClient): void {
    // protocol.md: subscribe to cmd (QoS 1), then publish state, on every connect.
    client.subscribe(this.cmdTopic, { qos: QOS.cmd }, (error, granted) => {
      if (client !== this.client) return;
      if (error || !granted || granted.some((g) => g.qos === 128)) {
        const refused = error ?? new Error(`subscription to ${this.cmdTopic} refused`);
        this.emitError(refused);
        this.settleWaiters(refused);
        return;
      }
      this.ready = true;
      this.readySince = performance.now();
      this.publishState();
      const queued = this.outbox;
      this.outbox = undefined;
      for (const item of queued ?? []) this.publish(item.channel, item.payload);
      this.settleWaiters();
      this.emit('connect');
    });
  }

  private onClose(client: MqttClient): void {
    if (client !== this.client) return;
    if (this.ready) {
      this.ready = false;
      // Only a connection that held counts as a recovery; one dropped at once is another failure.
      if (performance.now() - this.readySince >= this.options.reconnectStableMs) this.failures = 0;
      this.emit('disconnect', 'connection lost');
    }
    this.scheduleReconnect(client);
  }

  private scheduleReconnect(client: MqttClient): void {
    if (this.reconnectTimer || this.closed) return;
    const { reconnectBaseMs, reconnectMaxMs, random } = this.options;
    const delayMs = backoffDelay(this.failures, reconnectBaseMs, reconnectMaxMs, random);
    this.failures += 1;
    this.emit('reconnecting', { attempt: this.failures, delayMs });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (client !== this.client) return;
      // Keeping the stores re-sends acks and log entries that were in flight without a PUBACK.
      client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore });
    }, delayMs);
  }

  private onClientError(error: Error): void {
    this.emitError(error);
    // CONNACK 4 (bad user name or password) and 5 (not authorized) will not cure themselves by waiting.
    const code = (error as Error & { code?: unknown }).code;
    if (code === 4 || code === 5) this.settleWaiters(error);
    // Nor will a certificate the device does not trust (real firmware keeps retrying: the server's may be
    // replaced, the clock corrected); connect() says so now, in words, rather than timing out.
    const refused = describeCertificateError(error);
    if (refused) this.settleWaiters(new Error(`device ${this.id}: ${refused}`, { cause: error }));
  }

  /** Abandons the current client; a graceful end lets queued acks and logs leave first (reboot). */
  private dropLink(reason: string, graceful: boolean): void {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const client = this.client;
    if (!client) return;
    this.client = undefined;
    const wasReady = this.ready;
    this.ready = false;
    client.removeAllListeners();
    // A late socket error on an abandoned client must not become an unhandled 'error' event.
    client.on('error', noop);
    client.end(!graceful);
    this.settleWaiters(new Error(`device ${this.id} ${reason}`));
    if (wasReady) this.emit('disconnect', reason);
  }

  private settleWaiters(error?: Error): void {
    for (const settle of [...this.waiters]) settle(error);
  }

  private emitError(error: Error): void {
    // A simulated device always recovers by itself: an error nobody listens to must not crash a process
    // that hosts thousands of devices (an 'error' event without a listener throws).
    if (this.listenerCount('error') > 0) this.emit('error', error);
  }

  private restartFlapping(): void {
    clearTimeout(this.flapTimer);
    this.flapTimer = undefined;
    const flapping = this.faultState.flapping;
    if (!flapping) {
      if (this.flapDown && !this.closed) this.connect().catch(noop);
      this.flapDown = false;
      return;
    }
    this.flapTimer = setTimeout(
      () => {
        if (this.closed) return;
        this.flapDown = !this.flapDown;
        if (this.flapDown) this.dropLink('flapping', false);
        else this.connect().catch(noop);
        this.restartFlapping();
      },
      jitter(this.flapDown ? flapping.downMs : flapping.upMs),
    );
  }

  // ---- outgoing ---------------------------------------------------------------------------------------

  private publish<C extends keyof Outgoing>(channel: C, payload: Outgoing[C]): void {
    const client = this.client;
    if (!client || !this.ready) {
      // State is sent fresh on every connect and telemetry is only worth anything live; acks and playback
      // log entries must survive an outage (domain.md: nothing that happened meanwhile may be lost).
      if (channel === 'ack' || channel === 'log') {
        this.outbox ??= [];
        if (this.outbox.length >= OUTBOX_LIMIT) {
          this.outbox.shift();
          this.stats.droppedOutbox += 1;
        }
        this.outbox.push({ channel, payload: payload as Ack | PlaybackLogEntry });
      }
      return;
    }
    client.publish(topics[channel](this.id), JSON.stringify(payload), { qos: QOS[channel] }, (error) => {
      if (error) this.emitError(error);
    });
  }

  private notify<C extends DeviceChannel>(channel: C, payload: Outgoing[C]): void {
    (this.emit as (event: C, payload: Outgoing[C]) => boolean)(channel, payload);
    this.publish(channel, payload);
  }

  private ack(id: string, status: AckStatus, reason?: string): void {
    // Remembered before any fault: what the device decided is what it answers a duplicate with.
    const handled = this.handled.get(id);
    if (handled) {
      handled.status = status;
      handled.reason = reason;
    }
    if (this.dropsAck()) {
      this.stats.droppedAcks += 1;
      return;
    }
    const ack: Ack =
      reason === undefined ? { id, status, at: this.isoNow() } : { id, status, reason, at: this.isoNow() };
    const delay = this.faultState.ackDelayMs;
    if (delay > 0) this.later(delay, () => this.notify('ack', ack));
    else this.notify('ack', ack);
  }

  private dropsAck(): boolean {
    const drop = this.faultState.dropAcks;
    if (typeof drop === 'object') {
      if (this.acksToDrop <= 0) return false;
      this.acksToDrop -= 1;
      return true;
    }
    return drop === true || (typeof drop === 'number' && Math.random() < drop);
  }

  private log(
    event: PlaybackLogEntry['event'],
    playback: { sessionId: string; commandId: string },
    reason?: string,
  ): void {
    this.seq += 1;
    const entry: PlaybackLogEntry = {
      seq: this.seq,
      sessionId: playback.sessionId,
      commandId: playback.commandId,
      event,
      at: this.isoNow(),
    };
    if (reason !== undefined) entry.reason = reason;
    this.notify('log', entry);
  }

  private publishState(): void {
    this.notify('state', this.state);
  }

  private readonly onHeartbeat = (now: number): void => {
    if (now < this.nextTelemetryAt) return;
    // From now, not from the missed due time: a device back from an outage sends one heartbeat, not a burst.
    this.nextTelemetryAt = now + this.heartbeatMs;
    if (!this.ready || this.faultState.silent) return;
    const onBattery = this.faultState.powerCut;
    this.notify('telemetry', {
      at: this.isoNow(),
      uptimeS: Math.floor((now - this.bootedAt) / 1_000),
      rssiDbm: Math.round(this.rssiBase + (Math.random() - 0.5) * 6),
      supplyVoltage: round(
        (onBattery ? this.supplyBase - 0.9 : this.supplyBase) + (Math.random() - 0.5) * 0.2,
        2,
      ),
      onBattery,
      // Amplifiers run warm while they drive the horns.
      ampTempC: round(33 + (this.playing ? 14 : 0) + Math.random() * 3, 1),
      speakerFault: this.faultState.speakerFault,
    });
  };

  /** The device's wall-clock time in ms (see WallClock). */
  private now(): number {
    return this.options.clock.now().getTime();
  }

  private isoNow(): string {
    return this.options.clock.now().toISOString();
  }

  private later(ms: number, fn: () => void): NodeJS.Timeout {
    const timers = (this.timers ??= new Set());
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
    return timer;
  }

  // ---- incoming ---------------------------------------------------------------------------------------

  private onMessage(topic: string, payload: Buffer): void {
    if (topic !== this.cmdTopic) return;
    const receivedAt = performance.now();
    const decoded = decodePayload(looseEnvelopeSchema, payload);
    if (!decoded.ok) {
      this.stats.malformedCommands += 1;
      this.emit('malformed', decoded.error);
      return;
    }
    const command = decoded.value;
    const seen = this.handled.get(command.id);
    if (seen) {
      // protocol.md rule 2: answer again, never run twice. The first answer may have been lost with a
      // server that crashed before storing it, and the server re-sends what it has no final ack for.
      this.stats.duplicateCommands += 1;
      this.ack(command.id, seen.status, seen.reason);
      return;
    }
    this.handled.set(command.id, { status: 'received', reason: undefined });
    if (this.handled.size > DEDUPE_WINDOW) {
      const oldest = this.handled.keys().next().value;
      if (oldest !== undefined) this.handled.delete(oldest);
    }
    this.stats.handledCommands += 1;
    this.emit('command', { command, receivedAt, at: this.options.clock.now() });
    this.ack(command.id, 'received');
    this.execute(command);
  }

  private execute(raw: { id: string; type: string } & Record<string, unknown>): void {
    // Checked before anything else: a stale command is refused whatever it asks for.
    const expiresAt = typeof raw.expiresAt === 'string' ? Date.parse(raw.expiresAt) : NaN;
    if (expiresAt <= this.now()) {
      this.ack(raw.id, 'rejected', 'expired');
      return;
    }
    if (!KNOWN_TYPES.has(raw.type)) {
      this.ack(raw.id, 'rejected', 'unsupported');
      return;
    }
    const parsed = commandSchema.safeParse(raw);
    if (!parsed.success) {
      this.ack(raw.id, 'rejected', 'bad_params');
      return;
    }
    const command = parsed.data;
    switch (command.type) {
      case 'play':
        this.play(command);
        return;
      case 'stop':
        this.stop(command);
        return;
      case 'volume':
        this.setVolume(command);
        return;
      case 'reboot':
      case 'ping':
      case 'identify':
        this.maintenance(command);
        return;
    }
  }

  private maintenance(command: MaintenanceCommand): void {
    const { id, type } = command;
    if (!this.options.maintenance) {
      this.ack(id, 'rejected', 'unsupported');
      return;
    }
    switch (type) {
      case 'ping':
        // Touches neither audio nor playback, so it is answered whatever plays: the round trip is the point.
        this.ack(id, 'done');
        return;
      case 'identify':
      case 'reboot':
        // protocol.md rule 4: a test tone over an emergency would drown the warning, and a reboot ends it;
        // a technician's routine command must not do either.
        // A reboot would also lose a download in flight; the test tone only sounds over what plays.
        if (this.outranked(command, type === 'reboot' ? [this.playing, this.fetching] : [this.playing])) {
          this.ack(id, 'rejected', 'lower_priority');
          return;
        }
        this.ack(id, 'done');
        // identify would sound a test tone; there is nothing to sound here, so it is done at once.
        if (type === 'reboot') this.reboot();
        return;
    }
  }

  private play(command: PlayCommand): void {
    const params = command.params;
    // The server re-sends what a device must be doing when it comes back; the same session keeps playing.
    // Nothing else is special about a session id: a resume (a new command for an interrupted session,
    // protocol.md §4) finds the session not playing and starts like any other play.
    if (this.playing?.sessionId === params.sessionId) {
      this.ack(command.id, 'done');
      return;
    }
    // ... or keeps downloading, or waiting for its start: this command is answered with the first.
    const pending = [this.fetching, ...this.waiting].find((p) => p?.sessionId === params.sessionId);
    if (pending) {
      if (!pending.commandIds.includes(command.id)) pending.commandIds.push(command.id);
      return;
    }
    const failure = this.playbackFault();
    const startAt = params.startAt === undefined ? undefined : Date.parse(params.startAt);
    if (startAt !== undefined && startAt > this.now()) {
      // Sent ahead of its slot (protocol.md §3.1 startAt): fetched now, compared with what plays only when
      // it falls due. A fault the device knows of already fails it now, so the server hears it early.
      if (failure) {
        this.failPlay([command.id], params.sessionId, failure);
        return;
      }
      if (this.pastEnd(params, params.offsetMs ?? 0)) {
        this.ack(command.id, 'rejected', 'offset_past_end');
        return;
      }
      this.accept(command, startAt);
      return;
    }
    // protocol.md rule 4 counts a play being downloaded as if it played: a routine play arriving during
    // an emergency's download must not start once the emergency has ended its download.
    if (this.outranked(command, [this.playing, this.fetching])) {
      this.ack(command.id, 'rejected', 'lower_priority');
      return;
    }
    if (failure) {
      this.failPlay([command.id], params.sessionId, failure);
      return;
    }
    // Received late (after its startAt), its content may have ended meanwhile: the same answer as an
    // offsetMs past the end.
    if (this.pastEnd(params, this.joinPosition(params))) {
      this.ack(command.id, 'rejected', 'offset_past_end');
      return;
    }
    // Newer wins: a play of at least the priority of the one being downloaded replaces it.
    if (this.fetching) this.cancelPending(this.fetching, 'preempted');
    this.accept(command, undefined);
  }

  /** The reason every play fails with while a fault is switched on; undefined without one. */
  private playbackFault(): string | undefined {
    const faults = this.faultState;
    if (faults.speakerFault) return 'speaker_fault';
    if (typeof faults.failPlayback === 'string') return faults.failPlayback;
    return faults.failPlayback ? 'download_failed' : undefined;
  }

  /**
   * Where in the session (ms, repeats included) the device should be now: `offsetMs` at `startAt`, plus
   * the time since then when it is received or started late (protocol.md §3.1). Without `startAt`, at
   * `offsetMs`, whenever it starts.
   */
  private joinPosition(params: PlayCommand['params']): number {
    const offsetMs = params.offsetMs ?? 0;
    if (params.startAt === undefined) return offsetMs;
    return offsetMs + Math.max(0, this.now() - Date.parse(params.startAt));
  }

  private pastEnd(params: PlayCommand['params'], positionMs: number): boolean {
    const totalMs = sessionLengthMs(params);
    return totalMs !== undefined && positionMs >= totalMs;
  }

  /**
   * Takes a play on: fetches its file (unless cached or `noDownload`), then starts it at once
   * (`startAt` undefined) or keeps it waiting until `startAt`, while whatever plays goes on.
   */
  private accept(command: PlayCommand, startAt: number | undefined): void {
    const pending: Pending = {
      command,
      sessionId: command.params.sessionId,
      commandIds: [command.id],
      priority: command.priority,
      controller: undefined,
      timer: undefined,
    };
    const source = command.params.source;
    if (source.kind === 'media') {
      if (this.options.noDownload) {
        if (this.corrupted()) {
          this.stats.downloadFailures += 1;
          this.failPlay([command.id], pending.sessionId, 'checksum_mismatch');
          return;
        }
      } else {
        pending.controller = new AbortController();
        this.download(pending, source.url, source.sha256);
      }
    }
    if (startAt === undefined) {
      this.begin(pending);
      return;
    }
    this.waiting.push(pending);
    pending.timer = this.options.clock.setTimeout(() => this.fallDue(pending), startAt - this.now());
  }

  /** The play is due: on air now if its file is verified, else as soon as it is. */
  private begin(pending: Pending): void {
    if (pending.controller) {
      this.fetching = pending;
      return;
    }
    this.startPlayback(pending.command, pending.commandIds);
  }

  /**
   * A waiting play's `startAt` has come. It is handled as if it had arrived now: rule 4 against what plays
   * (and downloads) now, and a play of at least that priority is replaced. So sending a play early, to
   * give the device time for the download, never changes what goes on air: a lower play that began
   * meanwhile is pre-empted at the start, a higher one that still plays keeps the air and this play is
   * refused `lower_priority` (the server resumes it when the higher one ends, protocol.md §4).
   */
  private fallDue(pending: Pending): void {
    if (!this.waiting.includes(pending)) return;
    this.waiting = this.waiting.filter((p) => p !== pending);
    pending.timer = undefined;
    if (this.outranked(pending, [this.playing, this.fetching])) {
      pending.controller?.abort(new Error('download abandoned'));
      for (const id of pending.commandIds) this.ack(id, 'rejected', 'lower_priority');
      return;
    }
    if (this.fetching) this.cancelPending(this.fetching, 'preempted');
    this.begin(pending);
  }

  /**
   * Downloads and verifies the file of a pending play. When it is verified, a play that is due starts;
   * one still waiting for its `startAt` starts then. Something newer (a play of at least its priority, a
   * stop, a reboot) may abandon it meanwhile: that one aborts the request and answers for it.
   */
  private download(pending: Pending, url: string, sha256: string): void {
    const cache = (this.cache ??= new HashCache(this.options.cacheEntries));
    const commandId = pending.command.id;
    const report = (event: Omit<DownloadEvent, 'commandId' | 'sha256'>): void => {
      this.emit('download', { commandId, sha256, ...event });
    };
    const controller = pending.controller;
    if (!controller) return;
    downloadVerified(url, sha256, {
      timeoutMs: this.options.downloadTimeoutMs,
      cache,
      ...(this.options.ca === undefined ? {} : { ca: this.options.ca }),
      signal: controller.signal,
    }).then(
      ({ bytes, fromCache }) => {
        if (!this.holds(pending)) return;
        pending.controller = undefined;
        // The fault stands for bytes that arrived damaged: a cached hash was verified earlier, so it holds.
        if (!fromCache && this.corrupted()) {
          cache.delete(sha256);
          this.stats.downloadFailures += 1;
          report({ bytes, fromCache, reason: 'checksum_mismatch', detail: 'corruptDownloads fault' });
          this.dropPending(pending);
          this.failPlay(pending.commandIds, pending.sessionId, 'checksum_mismatch');
          return;
        }
        if (fromCache) this.stats.cacheHits += 1;
        else this.stats.downloads += 1;
        report({ bytes, fromCache });
        if (this.fetching !== pending) return;
        this.fetching = null;
        this.startPlayback(pending.command, pending.commandIds);
      },
      (error: unknown) => {
        // Abandoned (superseded, stopped, rebooted, closed): whoever abandoned it has answered for it.
        if (!this.holds(pending)) return;
        pending.controller = undefined;
        this.dropPending(pending);
        const reason = error instanceof DownloadError ? error.reason : 'download_failed';
        const detail = error instanceof Error ? error.message : String(error);
        this.stats.downloadFailures += 1;
        report({ bytes: 0, fromCache: false, reason, detail });
        // Failed now, not at its startAt: the server learns early that this device will stay silent.
        this.failPlay(pending.commandIds, pending.sessionId, reason);
      },
    );
  }

  /** True while the play is still the device's to start (not abandoned, not answered). */
  private holds(pending: Pending): boolean {
    return this.fetching === pending || this.waiting.includes(pending);
  }

  /** protocol.md §3.1 rule 8: a play that could not be carried out is acked `failed` and logged `failed`. */
  private failPlay(commandIds: string[], sessionId: string, reason: string): void {
    const [first] = commandIds;
    if (first === undefined) return;
    for (const id of commandIds) this.ack(id, 'failed', reason);
    this.log('failed', { sessionId, commandId: first }, reason);
  }

  /**
   * Ends a pending play (downloading or waiting for its start) that something newer overrode. It never
   * started, so it is acked `failed` with the reason (`preempted`, `stopped`) and logged `interrupted`,
   * not `failed`: the device did nothing wrong, and the server counts `failed` entries against a device's
   * health.
   */
  private cancelPending(pending: Pending, reason: 'preempted' | 'stopped'): void {
    this.dropPending(pending);
    pending.controller?.abort(new Error('download abandoned'));
    const [first] = pending.commandIds;
    if (first === undefined) return;
    for (const id of pending.commandIds) this.ack(id, 'failed', reason);
    this.log('interrupted', { sessionId: pending.sessionId, commandId: first }, reason);
  }

  /** Forgets a pending play wherever it is, with its timer; answers nothing. */
  private dropPending(pending: Pending): void {
    if (this.fetching === pending) this.fetching = null;
    this.waiting = this.waiting.filter((p) => p !== pending);
    if (pending.timer !== undefined) this.options.clock.clearTimeout(pending.timer);
    pending.timer = undefined;
  }

  /** Aborts every pending play, answering nothing (a reboot forgets them; close ends everything). */
  private abandonPending(): void {
    for (const pending of [this.fetching, ...this.waiting]) {
      if (!pending) continue;
      this.dropPending(pending);
      pending.controller?.abort(new Error('download abandoned'));
    }
  }

  private corrupted(): boolean {
    const corrupt = this.faultState.corruptDownloads;
    return corrupt === true || (typeof corrupt === 'number' && Math.random() < corrupt);
  }

  private startPlayback(command: PlayCommand, commandIds: string[]): void {
    const params = command.params;
    const totalMs = sessionLengthMs(params);
    // Computed when it goes on air: a download that outlasted the startAt joins where the broadcast is.
    const offsetMs = this.joinPosition(params);
    if (this.pastEnd(params, offsetMs)) {
      for (const id of commandIds) this.ack(id, 'rejected', 'offset_past_end');
      return;
    }
    if (this.playing) this.endPlayback('interrupted', 'preempted', false);
    if (params.volume !== undefined) this.volume = params.volume;
    const playback: Playback = {
      sessionId: params.sessionId,
      commandId: command.id,
      priority: command.priority,
      startedAt: this.isoNow(),
      startedMedia: this.mediaNow(),
      offsetMs,
      totalMs,
      durationMs: params.source.durationMs,
      gapMs: params.repeatGapMs ?? 0,
      plays: params.repeat ?? 1,
      timer: undefined,
    };
    // One timer for the whole session, repeats and gaps included: nothing is announced between two plays
    // (the session plays on, silent during a gap), and `finished` is logged once, after the last.
    if (totalMs !== undefined) {
      playback.timer = this.mediaTimeout(() => {
        if (this.playing === playback) this.endPlayback('finished');
      }, totalMs - offsetMs);
    }
    this.playing = playback;
    for (const id of commandIds) this.ack(id, 'done');
    this.log('started', playback);
    this.publishState();
  }

  private stop(command: StopCommand): void {
    const sessionId = command.params.sessionId;
    const named = <T extends { sessionId: string }>(p: T | null): p is T =>
      p !== null && (sessionId === undefined || sessionId === p.sessionId);
    const current = this.playing;
    const affected = named(current) ? current : null;
    // Whatever waits to start is ended too: a stop is sent after the play, so it wins over it.
    const cancels = [this.fetching, ...this.waiting].filter(named);
    // protocol.md rule 4: a routine stop must not end an emergency, nor one downloading or waiting.
    if (this.outranked(command, [affected, ...cancels])) {
      this.ack(command.id, 'rejected', 'lower_priority');
      return;
    }
    // Idempotent: stopping a session that is not playing (any more) is done all the same.
    this.ack(command.id, 'done');
    for (const pending of cancels) this.cancelPending(pending, 'stopped');
    if (affected) this.endPlayback('interrupted', 'stopped');
  }

  private setVolume(command: VolumeCommand): void {
    // While nothing plays any volume applies; while something plays, only one of at least its priority.
    if (this.outranked(command, [this.playing])) {
      this.ack(command.id, 'rejected', 'lower_priority');
      return;
    }
    this.ack(command.id, 'done');
    if (command.params.level === this.volume) return;
    this.volume = command.params.level;
    this.publishState();
  }

  /** True when one of `over` (what plays, what is being downloaded) has a higher priority than the command. */
  private outranked(command: { priority: Priority }, over: ({ priority: Priority } | null)[]): boolean {
    const rank = priorityRank(command.priority);
    return over.some((other) => other !== null && rank < priorityRank(other.priority));
  }

  private endPlayback(event: 'finished' | 'interrupted', reason?: string, announce = true): void {
    const playback = this.playing;
    if (!playback) return;
    this.clearMediaTimeout(playback.timer);
    this.playing = null;
    this.log(event, playback, reason);
    if (announce) this.publishState();
  }

  /** Where in the session (ms, repeats and gaps included) the playback is now. */
  private positionMs(playback: Playback): number {
    const position = playback.offsetMs + (this.mediaNow() - playback.startedMedia);
    return Math.floor(playback.totalMs === undefined ? position : Math.min(position, playback.totalMs));
  }

  /** Media time in simulated ms (see the `playbackTime` option); only differences between two mean anything. */
  private mediaNow(): number {
    return this.options.playbackTime === 'clock' ? this.now() : performance.now() * this.speed;
  }

  /** Calls `fn` after `ms` of media time. */
  private mediaTimeout(fn: () => void, ms: number): unknown {
    if (this.options.playbackTime === 'clock') return this.options.clock.setTimeout(fn, ms);
    return setTimeout(fn, ms / this.speed);
  }

  private clearMediaTimeout(handle: unknown): void {
    if (handle === undefined) return;
    if (this.options.playbackTime === 'clock') this.options.clock.clearTimeout(handle);
    else clearTimeout(handle as NodeJS.Timeout);
  }

  /**
   * A reboot forgets everything a boot keeps in RAM: what played, which command ids were handled, the log
   * sequence (protocol.md: seq counts per boot) and whatever had not been sent yet. Volume is in flash.
   */
  private reboot(): void {
    this.endPlayback('interrupted', 'reboot', false);
    // Forgotten like the handled ids: the server re-sends the play, which the device then handles afresh.
    this.abandonPending();
    // Graceful: the done ack and the interrupted entry are already with the MQTT client and leave first.
    this.dropLink('rebooting', true);
    this.seq = 0;
    this.handled.clear();
    this.outbox = undefined;
    this.bootedAt = performance.now();
    this.later((this.options.bootS * 1_000) / this.speed, () => {
      // Booted during an outage (goOffline): the link comes back when the outage ends, not before.
      if (!this.offline) this.connect().catch(noop);
    });
  }
}
