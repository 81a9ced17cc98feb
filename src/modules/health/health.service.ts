/**
 * Live status of every device: presence, what it last reported, and the health derived from it.
 *
 * The service keeps the live status of all devices in memory (10,000 devices are a few MB) and is its only
 * writer: events from the broker update memory at once, and the database is brought up to date in batches
 * — at once (next tick) for presence, state and health changes, once per flush interval for telemetry — so
 * 10,000 devices reporting every 30 s cost one small transaction a second.
 *
 * A database that refuses writes (full, busy) must neither end the process nor let memory grow: the live
 * columns are rewritten from memory (one entry per device, however long the outage), tried again after a
 * growing back-off; presence transitions and telemetry samples are history, queued in BatchWriters that
 * retry a failed batch a few times and hold a bounded number of items. Every failure is counted in
 * /metrics (`loa_db_batch_retries_total` and `loa_db_batch_dropped_items_total`, by writer).
 */
import type { FastifyBaseLogger } from 'fastify';
import type { HealthConfig } from '../../config.js';
import { BatchWriter } from '../../db/batch-writer.js';
import type { AreaRow, DeviceRow, PresenceCause } from '../../db/schema/index.js';
import type { Clock } from '../../lib/clock.js';
import { compareNames } from '../../lib/text.js';
import type { OfflineCause, OnlineCause } from '../../plugins/broker.js';
import type { Metrics } from '../../plugins/metrics.js';
import type { DeviceState, PlaybackLogEntry, Telemetry } from '../../protocol/index.js';
import { evaluateHealth, type HealthReason } from './health.rules.js';
import {
  METRICS,
  type HealthRepository,
  type LiveColumns,
  type Metric,
  type Sample,
  type SummaryRow,
  type Transition,
} from './health.repository.js';
import type { AreaSummary, DeviceHealthView } from './health.schemas.js';
import { TelemetryMaintenance, type MaintenanceResult } from './telemetry.maintenance.js';
import {
  ROLLUP_BUCKET_MS,
  ROLLUP_JOB,
  type Aggregate,
  type BucketAggregates,
  type TelemetryRepository,
} from './telemetry.repository.js';

interface Live extends LiveColumns {
  /** When telemetry (or the connection) was last heard, for silence detection. */
  lastHeardMs: number;
  /** True while the MQTT connection is up, even if the device is considered offline for being silent. */
  connected: boolean;
}

const MAX_POINTS = 500;
const SLICE = 200;
const DAY_MS = 86_400_000;
const iso = (d: Date | null) => d?.toISOString() ?? null;
// The live columns' retry back-off after a failed write: doubled per failure, up to half a minute.
const STATUS_RETRY_MS = 500;
const STATUS_RETRY_MAX_MS = 30_000;

/** The counters the health service feeds (src/plugins/metrics.ts). */
export type HealthMetrics = Pick<Metrics, 'batchWriteRetried' | 'batchWriteDropped'>;

export class HealthService {
  private readonly live = new Map<string, Live>();
  private readonly changed = new Set<string>();
  private readonly transitions: BatchWriter<Transition>;
  private readonly samples: BatchWriter<Sample>;
  private slicing = false;
  /** Failed writes of the live columns in a row, and when they may be tried again. */
  private statusFailures = 0;
  private statusRetryAt = 0;
  private readonly maintenance: TelemetryMaintenance;

  constructor(
    private readonly repo: HealthRepository,
    private readonly telemetry: TelemetryRepository,
    private readonly config: HealthConfig,
    private readonly clock: Clock,
    private readonly log: FastifyBaseLogger,
    private readonly metrics: HealthMetrics,
  ) {
    this.maintenance = new TelemetryMaintenance(
      telemetry,
      { rawMs: config.telemetryRawMs, retentionMs: config.telemetryRetentionMs },
      clock,
      log,
    );
    const none = new Map<string, LiveColumns>();
    this.transitions = this.historyWriter('presence', 'presence transitions', (items) =>
      repo.write(none, items, []),
    );
    // Samples wait for the periodic flush: one transaction a second, not one per tick.
    this.samples = this.historyWriter(
      'telemetry',
      'telemetry samples',
      (items) => repo.write(none, [], items),
      false,
    );
  }

  private historyWriter<T>(
    writer: 'presence' | 'telemetry',
    what: string,
    apply: (items: T[]) => void,
    flushEachTick = true,
  ): BatchWriter<T> {
    const log = this.log;
    const metrics = this.metrics;
    return new BatchWriter<T>(
      apply,
      (err, items) => {
        log.error({ err, count: items.length }, `failed to store ${what}; dropped after the last attempt`);
        metrics.batchWriteDropped(writer, items.length);
      },
      {
        timers: this.clock,
        flushEachTick,
        maxBatch: 500,
        onRetry: (err, items, attempt, delayMs) => {
          log.warn({ err, count: items.length, attempt, delayMs }, `failed to store ${what}; will retry`);
          metrics.batchWriteRetried(writer);
        },
        onOverflow: () => metrics.batchWriteDropped(writer, 1),
        onOverflowWarning: (dropped) =>
          log.warn({ dropped }, `${what} queue full while the database refuses writes; dropped`),
      },
    );
  }

  /**
   * Loads every device and records that the ones the database still shows online are not: nothing
   * survives a restart of the embedded broker.
   */
  start(): void {
    const now = this.clock.now();
    for (const row of this.repo.loadAll()) {
      const { id, ...columns } = row;
      const live: Live = { ...columns, lastHeardMs: 0, connected: false };
      this.live.set(id, live);
      if (live.online) this.setPresence(id, live, false, 'server_restart', now);
      else this.reevaluate(id, live, now);
    }
    while (this.writeSlice(Number.POSITIVE_INFINITY, true));
    this.transitions.flush();
  }

  // ---- events from the broker ----

  deviceConnected(deviceId: string, cause: OnlineCause): void {
    const live = this.get(deviceId);
    if (!live) return;
    const now = this.clock.now();
    live.connected = true;
    live.lastHeardMs = now.getTime();
    live.lastSeenAt = now;
    if (cause === 'takeover' && live.online) this.record(deviceId, true, 'takeover', now);
    else this.setPresence(deviceId, live, true, cause, now);
    this.touch(deviceId, true);
  }

  deviceDisconnected(deviceId: string, cause: OfflineCause): void {
    if (cause === 'deleted') return; // forget() already dropped it
    const live = this.get(deviceId);
    if (!live) return;
    live.connected = false;
    if (live.online) this.setPresence(deviceId, live, false, cause, this.clock.now());
  }

  /** The device was deleted: no more live status, and its open alerts resolve at the next evaluation. */
  forget(deviceId: string): void {
    this.live.delete(deviceId);
    this.changed.delete(deviceId);
  }

  recordState(deviceId: string, state: DeviceState): void {
    const live = this.heard(deviceId);
    if (!live) return;
    live.firmware = state.firmware;
    live.volume = state.volume;
    live.playing = state.playing;
    live.stateAt = live.lastSeenAt;
    this.reevaluate(deviceId, live, live.lastSeenAt!);
    this.touch(deviceId, true);
  }

  recordTelemetry(deviceId: string, telemetry: Telemetry): void {
    const live = this.heard(deviceId);
    if (!live) return;
    const now = live.lastSeenAt!;
    live.lastHeardMs = now.getTime();
    live.telemetry = telemetry;
    live.telemetryAt = now;
    this.samples.push({ deviceId, at: now, telemetry });
    if (!live.online && live.connected) this.setPresence(deviceId, live, true, 'resumed', now);
    const urgent = this.reevaluate(deviceId, live, now);
    this.touch(deviceId, urgent);
  }

  /**
   * Playback events: failures in a row make a fault, a successful start clears them. Called once per
   * entry the playback log stored, never for a second copy of one (QoS 1 may deliver twice).
   */
  recordPlayback(deviceId: string, entry: PlaybackLogEntry): void {
    const live = this.heard(deviceId);
    if (!live) return;
    if (entry.event === 'failed') live.playbackFailures += 1;
    else if (entry.event === 'started') live.playbackFailures = 0;
    const urgent = this.reevaluate(deviceId, live, live.lastSeenAt!);
    this.touch(deviceId, urgent);
  }

  /** Any other message (an ack): the device is alive. */
  recordSeen(deviceId: string): void {
    if (this.heard(deviceId)) this.touch(deviceId, false);
  }

  // ---- periodic work ----

  /** Marks connected devices that stopped sending telemetry as offline (`silent`). */
  detectSilence(): number {
    const now = this.clock.now();
    const cutoff = now.getTime() - this.config.silentAfterMs;
    let count = 0;
    for (const [id, live] of this.live) {
      if (live.online && live.connected && live.lastHeardMs < cutoff) {
        this.setPresence(id, live, false, 'silent', now);
        count += 1;
      }
    }
    return count;
  }

  /**
   * Rolls raw telemetry up into 5-minute buckets and prunes raw samples and roll-ups past their time, in
   * slices that yield to the event loop; ends between slices once `signal` aborts.
   */
  maintainTelemetry(signal?: AbortSignal): Promise<MaintenanceResult> {
    return this.maintenance.run(signal);
  }

  /**
   * Writes everything pending at once, without waiting for any back-off: at shutdown, the last chance
   * (what fails now is dropped and counted).
   */
  flush(): void {
    while (this.writeSlice(Number.POSITIVE_INFINITY, true));
    this.transitions.drain();
    this.samples.drain();
  }

  /**
   * Writes what is pending in slices of a few hundred rows, yielding to the event loop between slices:
   * one transaction for 10,000 devices would hold up MQTT and HTTP for a quarter of a second.
   */
  flushInSlices(): void {
    if (this.slicing) return;
    this.transitions.flush();
    this.samples.flush();
    if (!this.writeSlice(SLICE)) return;
    this.slicing = true;
    setImmediate(() => {
      this.slicing = false;
      this.flushInSlices();
    });
  }

  /**
   * Writes the live columns of up to `max` devices; true when more is pending. After a failure it waits
   * for its back-off, unless `now` (shutdown): retrying every tick would fill the log and burn CPU.
   */
  private writeSlice(max: number, now = false): boolean {
    if (this.changed.size === 0) return false;
    if (!now && this.clock.now().getTime() < this.statusRetryAt) return false;
    const changed = new Map<string, LiveColumns>();
    for (const id of this.changed) {
      if (changed.size >= max) break;
      this.changed.delete(id);
      const live = this.live.get(id);
      if (!live) continue;
      const { lastHeardMs: _heard, connected: _connected, ...columns } = live;
      changed.set(id, columns);
    }
    try {
      this.repo.write(changed, [], []);
    } catch (err) {
      // Rewritten from memory once the back-off is over, with whatever changed meanwhile: nothing is
      // lost and nothing grows but this set of ids, one per device.
      for (const id of changed.keys()) this.changed.add(id);
      const delayMs = Math.min(STATUS_RETRY_MS * 2 ** this.statusFailures, STATUS_RETRY_MAX_MS);
      this.statusFailures += 1;
      this.statusRetryAt = this.clock.now().getTime() + delayMs;
      this.metrics.batchWriteRetried('device_status');
      this.log.error({ err, devices: changed.size, delayMs }, 'failed to store device status; will retry');
      return false;
    }
    this.statusFailures = 0;
    this.statusRetryAt = 0;
    return this.changed.size > 0;
  }

  // ---- reads ----

  /** The live status of every device, read-only (alerts are evaluated over it). */
  get devices(): ReadonlyMap<string, Readonly<LiveColumns>> {
    return this.live;
  }

  /** The live status, or undefined for an unknown device. */
  status(deviceId: string): Readonly<LiveColumns> | undefined {
    return this.live.get(deviceId);
  }

  deviceHealth(device: DeviceRow): DeviceHealthView {
    const live: LiveColumns = this.live.get(device.id) ?? device;
    const telemetry = live.telemetry as Telemetry | null;
    return {
      deviceId: device.id,
      online: live.online,
      since: iso(live.onlineSince),
      health: live.health,
      reasons: live.healthReasons,
      healthSince: iso(live.healthSince),
      telemetry:
        telemetry && live.telemetryAt ? { ...telemetry, receivedAt: live.telemetryAt.toISOString() } : null,
      playing: (live.playing ?? null) as DeviceHealthView['playing'],
      firmware: live.firmware,
      volume: live.volume,
      lastSeenAt: iso(live.lastSeenAt),
      playbackFailures: live.playbackFailures,
      transitions: this.transitionsOf(device.id).map((t) => ({
        at: t.at.toISOString(),
        online: t.online,
        cause: t.cause,
      })),
    };
  }

  /** The latest transitions, newest first, including those not written yet (without waiting for them). */
  transitionsOf(deviceId: string, limit = 20): Transition[] {
    const pending = this.transitions
      .snapshot()
      .filter((t) => t.deviceId === deviceId)
      .reverse();
    return [...pending, ...this.repo.recentTransitions(deviceId, limit)].slice(0, limit);
  }

  /**
   * Metrics over a period (default: the last 24 hours). Within the raw window (TELEMETRY_RAW_HOURS), from
   * the raw samples: as they are while they fit in 500 points, averaged into buckets of whole heartbeats
   * beyond that. Further back, from the 5-minute roll-ups merged into at most 500 buckets of whole
   * 5 minutes, plus the raw samples not rolled up yet where the range reaches them; same shape either way.
   */
  telemetryHistory(
    deviceId: string,
    query: { from?: string | undefined; to?: string | undefined; metric?: Metric | undefined },
  ) {
    const now = this.clock.now().getTime();
    const to = query.to ? new Date(query.to) : new Date(now);
    const from = query.from ? new Date(query.from) : new Date(to.getTime() - DAY_MS);
    const metrics = query.metric ? [query.metric] : METRICS;
    const fromRaw = from.getTime() >= now - this.config.telemetryRawMs;
    const { bucketMs, series } = fromRaw
      ? this.rawHistory(deviceId, metrics, from, to)
      : this.rolledUpHistory(deviceId, metrics, from.getTime(), to.getTime());
    return {
      deviceId,
      from: from.toISOString(),
      to: to.toISOString(),
      bucketS: bucketMs === null ? null : bucketMs / 1000,
      series,
    };
  }

  private rawHistory(deviceId: string, metrics: readonly Metric[], from: Date, to: Date) {
    const span = to.getTime() - from.getTime();
    const heartbeat = this.config.heartbeatMs;
    const bucketMs =
      span / heartbeat <= MAX_POINTS ? null : Math.ceil(span / MAX_POINTS / heartbeat) * heartbeat;
    const series: Record<string, SeriesPoint[]> = {};
    for (const metric of metrics) {
      series[metric] = this.repo
        .series(deviceId, metric, from, to, bucketMs ?? 1)
        .map((p) => ({ ...p, at: new Date(p.at).toISOString() }));
    }
    return { bucketMs, series };
  }

  private rolledUpHistory(deviceId: string, metrics: readonly Metric[], from: number, to: number) {
    const bucketMs = Math.max(
      ROLLUP_BUCKET_MS,
      Math.ceil((to - from) / MAX_POINTS / ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS,
    );
    // Every bucket before the mark is rolled up; after it, only raw samples hold the data (and raw samples
    // before it may be pruned already). Reading each side of the mark from one table counts nothing twice.
    const mark = this.telemetry.getMark(ROLLUP_JOB) ?? Number.NEGATIVE_INFINITY;
    const parts: BucketAggregates[] = [];
    if (from < mark) {
      // The 5-minute buckets that overlap [from, to) (one that starts at `to` would hold only later samples).
      parts.push(
        ...this.telemetry.rollupAggregates(
          deviceId,
          from - ROLLUP_BUCKET_MS + 1,
          Math.min(to, mark) - 1,
          bucketMs,
        ),
      );
    }
    if (to >= mark) {
      parts.push(...this.telemetry.rawAggregates(deviceId, Math.max(from, mark), to, bucketMs));
    }
    // A bucket straddling the mark has a part from each table: merged here.
    const merged = new Map<number, BucketAggregates>();
    for (const part of parts) {
      const into = merged.get(part.at);
      if (!into) merged.set(part.at, part);
      else for (const metric of metrics) into[metric] = mergeAggregates(into[metric], part[metric]);
    }
    const buckets = [...merged.values()].sort((a, b) => a.at - b.at);
    const series: Record<string, SeriesPoint[]> = {};
    for (const metric of metrics) {
      series[metric] = buckets
        .filter((b) => b[metric].n > 0)
        .map((b) => {
          const { n, sum, min, max } = b[metric];
          return { at: new Date(b.at).toISOString(), avg: sum / n, min, max, count: n };
        });
    }
    return { bucketMs, series };
  }

  countByTopArea() {
    return this.repo.countByTopArea();
  }

  /** Counts for an area's whole subtree, broken down per direct sub-area, worst first. */
  summary(area: AreaRow, children: readonly AreaRow[]): AreaSummary {
    const rows = new Map(this.repo.summary(area.path).map((r) => [r.childId, r]));
    const counts = (r: SummaryRow | undefined) => {
      const c = r ?? { total: 0, online: 0, playing: 0, ok: 0, degraded: 0, fault: 0 };
      return {
        total: c.total,
        online: c.online,
        offline: c.total - c.online,
        playing: c.playing,
        ok: c.ok,
        degraded: c.degraded,
        fault: c.fault,
      };
    };
    const all = counts(
      [...rows.values()].reduce(
        (sum, r) => ({
          childId: null,
          total: sum.total + r.total,
          online: sum.online + r.online,
          playing: sum.playing + r.playing,
          ok: sum.ok + r.ok,
          degraded: sum.degraded + r.degraded,
          fault: sum.fault + r.fault,
        }),
        { childId: null, total: 0, online: 0, playing: 0, ok: 0, degraded: 0, fault: 0 } as SummaryRow,
      ),
    );
    return {
      areaId: area.id,
      name: area.name,
      ...all,
      children: children
        .map((child) => ({
          areaId: child.id,
          name: child.name,
          level: child.level,
          ...counts(rows.get(child.id)),
        }))
        .sort((a, b) => b.fault - a.fault || b.degraded - a.degraded || compareNames(a.name, b.name)),
      direct: counts(rows.get(null)),
    };
  }

  // ---- internals ----

  private get(deviceId: string): Live | undefined {
    let live = this.live.get(deviceId);
    if (!live) {
      // Registered after start-up.
      const row = this.repo.loadOne(deviceId);
      if (!row) return undefined;
      const { id: _id, ...columns } = row;
      live = { ...columns, lastHeardMs: 0, connected: false };
      this.live.set(deviceId, live);
    }
    return live;
  }

  private heard(deviceId: string): Live | undefined {
    const live = this.get(deviceId);
    if (live) live.lastSeenAt = this.clock.now();
    return live;
  }

  private setPresence(deviceId: string, live: Live, online: boolean, cause: PresenceCause, now: Date): void {
    live.online = online;
    live.onlineSince = now;
    this.record(deviceId, online, cause, now);
    this.reevaluate(deviceId, live, now);
    this.touch(deviceId, true);
  }

  private record(deviceId: string, online: boolean, cause: PresenceCause, at: Date): void {
    this.transitions.push({ deviceId, at, online, cause });
    this.log.info({ deviceId, online, cause }, online ? 'device online' : 'device offline');
  }

  /** Re-derives health; true when it changed. */
  private reevaluate(deviceId: string, live: Live, now: Date): boolean {
    const { health, reasons } = evaluateHealth(
      {
        online: live.online,
        telemetry: live.telemetry as Telemetry | null,
        firmware: live.firmware,
        playbackFailures: live.playbackFailures,
      },
      this.config.thresholds,
    );
    const same = health === live.health && sameReasons(reasons, live.healthReasons);
    if (same && live.healthSince) return false;
    if (health !== live.health || !live.healthSince) live.healthSince = now;
    const before = live.health;
    live.health = health;
    live.healthReasons = reasons;
    if (before !== health) this.log.info({ deviceId, health, reasons, was: before }, 'device health changed');
    return true;
  }

  private touch(deviceId: string, urgent: boolean): void {
    this.changed.add(deviceId);
    // Presence and health changes are written on the next tick; telemetry-only ones by the periodic job.
    if (urgent && !this.slicing) {
      this.slicing = true;
      setImmediate(() => {
        this.slicing = false;
        this.flushInSlices();
      });
    }
  }
}

interface SeriesPoint {
  at: string;
  avg: number | null;
  min: number | null;
  max: number | null;
  count: number;
}

function mergeAggregates(a: Aggregate, b: Aggregate): Aggregate {
  const pick = (x: number | null, y: number | null, f: (p: number, q: number) => number) =>
    x === null ? y : y === null ? x : f(x, y);
  return {
    n: a.n + b.n,
    sum: a.sum + b.sum,
    min: pick(a.min, b.min, Math.min),
    max: pick(a.max, b.max, Math.max),
  };
}

function sameReasons(a: readonly HealthReason[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((r, i) => r === b[i]);
}
