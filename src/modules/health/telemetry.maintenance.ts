/**
 * Keeps telemetry storage bounded (docs/health.md "Telemetry history"): raw samples are rolled up into
 * 5-minute buckets, raw samples older than TELEMETRY_RAW_HOURS and roll-ups older than
 * TELEMETRY_RETENTION_DAYS are deleted.
 *
 * At 10,000 devices this is tens of thousands of rows every 5 minutes and, after a long downtime, millions:
 * all of it runs in slices (a few hundred devices, a few thousand rows, one transaction each) with a turn
 * of the event loop between slices, so MQTT and HTTP are served in between (bench/telemetry-maintenance.ts).
 * A run stops between two slices when its signal aborts (shutdown); the next run resumes from the mark.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { FastifyBaseLogger } from 'fastify';
import type { Clock } from '../../lib/clock.js';
import { ROLLUP_BUCKET_MS, ROLLUP_JOB, type TelemetryRepository } from './telemetry.repository.js';

export interface TelemetryMaintenanceOptions {
  rawMs: number;
  retentionMs: number;
  /** Devices per slice (one transaction). */
  devicesPerSlice?: number;
  /** Rows deleted per slice at most. */
  rowsPerSlice?: number;
  /** Buckets rolled up per slice at most (about ten raw samples each at a 30 s heartbeat). */
  bucketsPerSlice?: number;
}

export interface MaintenanceResult {
  /** 5-minute buckets written (a device's bucket counts once). */
  bucketsRolledUp: number;
  rawDeleted: number;
  rollupsDeleted: number;
  /** The roll-up mark after the run (every bucket before it is rolled up), null if there is none yet. */
  mark: number | null;
  /** Stopped early by the signal. */
  aborted: boolean;
}

/**
 * A bucket is rolled up once it ended at least this long ago: samples are written a second or so after
 * they arrive (the telemetry flush), so by then the bucket is complete. A sample stored later than that
 * (the database refused writes for over a minute) stays in the raw table but is missing from its
 * already rolled-up bucket: rare, and only long ranges (older than TELEMETRY_RAW_HOURS) ever read it.
 */
export const ROLLUP_DELAY_MS = 60_000;
/**
 * A backlog (first run, or after a downtime) is rolled up this much time at a time, every device in turn:
 * a slice then reads at most devicesPerSlice × 60 samples at a 30 s heartbeat.
 */
const CATCH_UP_WINDOW_MS = 30 * 60_000;
const DEVICES_PER_SLICE = 200;
const ROWS_PER_SLICE = 5_000;
// In steady state a slice rolls up one bucket per device (200); catching up, this keeps a slice at about
// 5,000 raw samples read, a few milliseconds (bench/telemetry-maintenance.ts).
const BUCKETS_PER_SLICE = 500;

const floorToBucket = (ms: number) => Math.floor(ms / ROLLUP_BUCKET_MS) * ROLLUP_BUCKET_MS;

export class TelemetryMaintenance {
  private readonly devicesPerSlice: number;
  private readonly rowsPerSlice: number;
  private readonly bucketsPerSlice: number;
  /** The run in flight: a second caller waits for it and then runs its own. */
  private running: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly repo: TelemetryRepository,
    private readonly options: TelemetryMaintenanceOptions,
    private readonly clock: Clock,
    private readonly log: Pick<FastifyBaseLogger, 'info'>,
  ) {
    this.devicesPerSlice = options.devicesPerSlice ?? DEVICES_PER_SLICE;
    this.rowsPerSlice = options.rowsPerSlice ?? ROWS_PER_SLICE;
    this.bucketsPerSlice = options.bucketsPerSlice ?? BUCKETS_PER_SLICE;
  }

  /** Rolls up what is complete, then prunes; runs one at a time. */
  run(signal?: AbortSignal): Promise<MaintenanceResult> {
    const run = this.running.then(() => this.runNow(signal));
    this.running = run.catch(() => undefined);
    return run;
  }

  private async runNow(signal: AbortSignal | undefined): Promise<MaintenanceResult> {
    const started = performance.now();
    // One `now` for the whole run: a run spans many turns of the event loop (and a test's clock moves).
    const now = this.clock.now().getTime();
    const result: MaintenanceResult = {
      bucketsRolledUp: 0,
      rawDeleted: 0,
      rollupsDeleted: 0,
      mark: null,
      aborted: false,
    };
    const aborted = () => (result.aborted = signal?.aborted ?? false);

    result.bucketsRolledUp = await this.rollUp(now, aborted);
    result.mark = this.repo.getMark(ROLLUP_JOB);
    if (!aborted() && result.mark !== null) {
      // Never a raw sample that is not rolled up yet (the roll-up may be behind after a downtime).
      const before = Math.min(result.mark, now - this.options.rawMs);
      result.rawDeleted = await this.prune(
        (after) => this.repo.nextDeviceWithSamples(after),
        (deviceId, limit) => this.repo.deleteSamples(deviceId, before, limit),
        aborted,
      );
    }
    if (!aborted()) {
      const before = now - this.options.retentionMs;
      result.rollupsDeleted = await this.prune(
        (after) => this.repo.nextDeviceWithRollups(after),
        (deviceId, limit) => this.repo.deleteRollups(deviceId, before, limit),
        aborted,
      );
    }
    if (result.bucketsRolledUp > 0 || result.rawDeleted > 0 || result.rollupsDeleted > 0) {
      this.log.info(
        {
          bucketsRolledUp: result.bucketsRolledUp,
          rawDeleted: result.rawDeleted,
          rollupsDeleted: result.rollupsDeleted,
          rolledUpTo: result.mark === null ? null : new Date(result.mark).toISOString(),
          aborted: result.aborted,
          ms: Math.round(performance.now() - started),
        },
        'telemetry rolled up and pruned',
      );
    }
    return result;
  }

  /**
   * Rolls up every complete bucket from the mark on, a window of time at a time; within a window, every
   * device in slices. The mark moves to the window's end in the transaction of its last slice: a crash
   * before that rolls the window up again, which rewrites the same buckets (INSERT OR REPLACE).
   */
  private async rollUp(now: number, aborted: () => boolean): Promise<number> {
    const end = floorToBucket(now - ROLLUP_DELAY_MS);
    const first = this.repo.getMark(ROLLUP_JOB) ?? (await this.firstStart(end, aborted));
    if (first === null) return 0;
    // Buckets older than the retention would be deleted right after being written.
    let start = Math.max(first, floorToBucket(now - this.options.retentionMs));
    let buckets = 0;
    while (start < end) {
      const windowStart = start;
      const windowEnd = Math.min(start + CATCH_UP_WINDOW_MS, end);
      let after = '';
      for (let done = false; !done;) {
        if (aborted()) return buckets;
        done = this.repo.transaction(() => {
          let written = 0;
          for (let i = 0; i < this.devicesPerSlice && written < this.bucketsPerSlice; i++) {
            const next = this.repo.nextDeviceWithSamples(after);
            if (!next) {
              this.repo.setMark(ROLLUP_JOB, windowEnd);
              buckets += written;
              return true;
            }
            after = next.deviceId;
            written += this.repo.rollUp(next.deviceId, windowStart, windowEnd);
          }
          buckets += written;
          return false;
        });
        await nextTurn();
      }
      start = windowEnd;
    }
    return buckets;
  }

  /**
   * Where the first roll-up starts: the bucket of the oldest raw sample, found by one seek per device.
   * With no sample at all, the mark starts at `end` (nothing before it to roll up). Null when aborted.
   */
  private async firstStart(end: number, aborted: () => boolean): Promise<number | null> {
    let oldest = Number.POSITIVE_INFINITY;
    let after = '';
    for (;;) {
      if (aborted()) return null;
      for (let i = 0; i < this.devicesPerSlice * 10; i++) {
        const next = this.repo.nextDeviceWithSamples(after);
        if (!next) {
          const start = oldest === Number.POSITIVE_INFINITY ? end : Math.min(floorToBucket(oldest), end);
          this.repo.setMark(ROLLUP_JOB, start);
          return start;
        }
        after = next.deviceId;
        oldest = Math.min(oldest, next.at);
      }
      await nextTurn();
    }
  }

  /**
   * Deletes, device after device, what `remove` selects, in slices bounded in devices and in rows; a device
   * with more to delete than a slice allows is continued in the next slice.
   */
  private async prune(
    next: (after: string) => { deviceId: string } | undefined,
    remove: (deviceId: string, limit: number) => { deleted: number; more: boolean },
    aborted: () => boolean,
  ): Promise<number> {
    let deleted = 0;
    let after = '';
    /** A device whose rows were not all deleted in the last slice. */
    let unfinished: string | undefined;
    for (let done = false; !done;) {
      if (aborted()) return deleted;
      const slice = this.repo.transaction(() => {
        let rows = 0;
        for (let i = 0; i < this.devicesPerSlice && rows < this.rowsPerSlice; i++) {
          const deviceId = unfinished ?? next(after)?.deviceId;
          if (deviceId === undefined) return { rows, done: true };
          const result = remove(deviceId, this.rowsPerSlice - rows);
          rows += result.deleted;
          unfinished = result.more ? deviceId : undefined;
          after = deviceId;
        }
        return { rows, done: false };
      });
      deleted += slice.rows;
      done = slice.done;
      await nextTurn();
    }
    return deleted;
  }
}
