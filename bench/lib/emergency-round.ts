/**
 * What bench/emergency.ts records about one broadcast, from the simulated devices' side: when each device
 * had its play command, when it had downloaded and verified the file, when it sent its final ack (`done`
 * once the file plays, or `failed` / `rejected`), and when its playback ended. Every time is the
 * performance.now() of this process when firmware-sim reported it (the command's own receipt time for
 * commands), so latencies are differences on one monotonic clock.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CommandEvent, DownloadEvent, Fleet, SimDevice } from '../../firmware-sim/src/index.js';
import type { Ack, PlaybackLogEntry } from '../../src/protocol/index.js';
import { newId } from '../../src/lib/ids.js';
import { round, summarize, type LatencySummary } from './stats.js';

export type ReceivedCommand = CommandEvent['command'];

interface Stamped {
  commandId: string;
  at: number;
}

export class RoundWatch {
  readonly received: (Stamped & { command: ReceivedCommand })[] = [];
  readonly finalAcks: (Stamped & { status: Ack['status']; reason: string | undefined })[] = [];
  readonly downloads: (Stamped & { ok: boolean; reason: string | undefined })[] = [];
  /** Playbacks that ended (finished, interrupted or failed), by log entry. */
  ended = 0;
  private readonly waiters = new Set<() => void>();

  constructor(private readonly fleet: Fleet) {
    fleet.on('command', this.onCommand);
    fleet.on('ack', this.onAck);
    fleet.on('download', this.onDownload);
    fleet.on('log', this.onLog);
  }

  private readonly onCommand = (_device: SimDevice, event: CommandEvent): void => {
    this.received.push({ commandId: event.command.id, at: event.receivedAt, command: event.command });
    this.changed();
  };

  private readonly onAck = (_device: SimDevice, ack: Ack): void => {
    if (ack.status === 'received') return;
    this.finalAcks.push({ commandId: ack.id, at: performance.now(), status: ack.status, reason: ack.reason });
    this.changed();
  };

  private readonly onDownload = (_device: SimDevice, event: DownloadEvent): void => {
    this.downloads.push({
      commandId: event.commandId,
      at: performance.now(),
      ok: event.reason === undefined,
      reason: event.reason === undefined ? undefined : `${event.reason}: ${event.detail ?? ''}`,
    });
    this.changed();
  };

  private readonly onLog = (_device: SimDevice, entry: PlaybackLogEntry): void => {
    if (entry.event === 'started') return;
    this.ended += 1;
    this.changed();
  };

  private changed(): void {
    for (const waiter of this.waiters) waiter();
  }

  /**
   * Waits until `done()` holds (checked on every device event) or the time is up; true if it holds.
   * Rejects at once if `failed` does (a server died).
   */
  async until(done: () => boolean, timeoutMs: number, failed: Promise<never>): Promise<boolean> {
    if (done()) return true;
    const abort = new AbortController();
    let waiter: (() => void) | undefined;
    try {
      return await Promise.race([
        new Promise<boolean>((resolve) => {
          waiter = () => {
            if (done()) resolve(true);
          };
          this.waiters.add(waiter);
        }),
        sleep(timeoutMs, false, { signal: abort.signal }).catch(() => false),
        failed,
      ]);
    } finally {
      abort.abort();
      if (waiter) this.waiters.delete(waiter);
    }
  }

  detach(): void {
    this.fleet.off('command', this.onCommand);
    this.fleet.off('ack', this.onAck);
    this.fleet.off('download', this.onDownload);
    this.fleet.off('log', this.onLog);
    this.waiters.clear();
  }

  /** Other command ids the devices reported during the round: there should be none. */
  others(commandId: string): string[] {
    return [...new Set(this.received.map((r) => r.commandId).filter((id) => id !== commandId))];
  }

  /** Figures of the round's command, with times relative to `t0` (this process's clock). */
  figures(commandId: string, t0: number): DeviceFigures {
    const mine = <T extends Stamped>(items: T[]): T[] => items.filter((x) => x.commandId === commandId);
    const receipts = mine(this.received);
    const acks = mine(this.finalAcks);
    const downloads = mine(this.downloads);
    const okDownloads = downloads.filter((d) => d.ok);
    const failures: Record<string, number> = {};
    for (const ack of acks) {
      if (ack.status === 'done') continue;
      const key = `${ack.status}${ack.reason ? `:${ack.reason}` : ''}`;
      failures[key] = (failures[key] ?? 0) + 1;
    }
    const last = (items: Stamped[]): number | null =>
      items.length === 0 ? null : round(items.reduce((max, x) => Math.max(max, x.at), -Infinity) - t0, 1);
    return {
      received: receipts.length,
      receiveMs: summarize(receipts.map((r) => r.at - t0)),
      receivedAt: receipts.map((r) => r.at),
      done: acks.filter((a) => a.status === 'done').length,
      ackFailures: failures,
      lastFinalAckSentMs: last(acks),
      downloaded: okDownloads.length,
      downloadFailures: downloads.length - okDownloads.length,
      firstDownloadFailure: downloads.find((d) => !d.ok)?.reason,
      downloadMs: okDownloads.length === 0 ? null : summarize(okDownloads.map((d) => d.at - t0)),
      allDownloadedMs: okDownloads.length === 0 ? null : last(okDownloads),
    };
  }
}

export interface DeviceFigures {
  /** Devices that reported the command. */
  received: number;
  /** Receipt latency from t0. */
  receiveMs: LatencySummary;
  /** Receipt times (this process's clock), for latencies from another instant. */
  receivedAt: number[];
  /** Devices that acked `done`. */
  done: number;
  /** Final acks other than `done`, by status and reason. */
  ackFailures: Record<string, number>;
  /** t0 until the last device sent its final ack (as the devices saw it, not the server). */
  lastFinalAckSentMs: number | null;
  downloaded: number;
  downloadFailures: number;
  firstDownloadFailure: string | undefined;
  /** When each device had its file downloaded and verified, from t0. */
  downloadMs: LatencySummary | null;
  /** t0 until the last device had its file verified. */
  allDownloadedMs: number | null;
}

/**
 * The baseline's copy of the command a device received from Loa: fresh command id, session id and times
 * (a device ignores an id it already handled), the file's URL pointed at the baseline's file server with
 * the same path and query (so the length hardly changes), everything else as Loa sent it.
 */
export function baselinePayload(template: ReceivedCommand, fileServer: string): { id: string; json: string } {
  const params = template.params as Record<string, unknown> | undefined;
  const source = params?.source as Record<string, unknown> | undefined;
  if (typeof source?.url !== 'string') throw new Error('the Loa command had no params.source.url');
  const url = new URL(source.url);
  const base = new URL(fileServer);
  url.protocol = base.protocol;
  url.host = base.host;
  const id = newId('cmd');
  const issuedAt = new Date();
  const json = JSON.stringify({
    ...template,
    id,
    issuedAt: issuedAt.toISOString(),
    expiresAt: new Date(issuedAt.getTime() + 600_000).toISOString(),
    params: {
      ...params,
      sessionId: newId('ses'),
      ...(params?.startAt === undefined ? {} : { startAt: issuedAt.toISOString() }),
      source: { ...source, url: url.toString() },
    },
  });
  return { id, json };
}

/** The file name a download URL ends with (`<sha256>.mp3`). */
export const fileNameOf = (url: string): string => new URL(url).pathname.split('/').pop() ?? '';
