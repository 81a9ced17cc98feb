/**
 * One round of bench/media.ts: N simulated devices start downloading the same file at the same moment,
 * each with firmware-sim's own downloadVerified (fetch, SHA-256 hashed while the bytes arrive, bytes
 * discarded), while the server's memory is watched.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { downloadVerified, DownloadError } from '../../firmware-sim/src/download.js';
import { clockTicksPerSecond, cpuTime, machineCpu, totalUs } from './health-proc.js';
import { round, summarize, type LatencySummary } from './stats.js';

export interface RoundResult extends LatencySummary {
  round: string;
  side: 'loa' | 'raw';
  devices: number;
  /** Downloads that ended with the file verified (should be every one). */
  verified: number;
  failures: Record<string, number>;
  /** The message of the first failure, if any. */
  firstError?: string;
  /** First download started until the last one ended, ms. */
  wallMs: number;
  /** Verified bytes of every download ÷ wallMs, in MB/s (1 MB = 10^6 bytes). */
  mbPerS: number;
  rss: RssFigures | null;
  /**
   * CPU time the server process used during the round (all its threads, user + kernel), ms, and per
   * download, µs. Unlike MB/s this is not capped by the client: it is what each download costs the server.
   */
  serverCpuMs: number | null;
  serverCpuUsPerDownload: number | null;
  /** CPU time this bench process (the simulated devices) used meanwhile, ms. */
  clientCpuMs: number;
  /**
   * CPU time every other process on the machine used meanwhile, ms (the machine's busy time minus the
   * server's and the bench's). On a shared machine this is what explains a slow round.
   */
  othersCpuMs: number | null;
}

export interface RssFigures {
  /** Server RSS just before the round, MB. */
  beforeMb: number;
  /** The kernel's peak (VmHWM, reset before the round) or, where that cannot be reset, the sampled peak. */
  peakMb: number;
  /** Highest of the samples taken every SAMPLE_MS while the round ran. */
  sampledPeakMb: number;
  samples: number;
  /** Server RSS once every download has ended, MB. */
  afterMb: number;
}

const SAMPLE_MS = 50;

async function status(pid: number): Promise<{ rssKb: number; hwmKb: number } | undefined> {
  try {
    const text = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string): number =>
      Number(new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(text)?.[1]);
    return { rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
  } catch {
    return undefined;
  }
}

/**
 * The server's resident memory during one round: VmRSS from /proc/<pid>/status before, every SAMPLE_MS
 * during, and after. The peak is also read from VmHWM after resetting it ("5" into /proc/<pid>/clear_refs,
 * allowed for our own children), which catches a spike between two samples; if the reset is refused, the
 * sampled peak is reported. Linux only: elsewhere the figures are null.
 */
export class RssWatch {
  private samples: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private hwmReset = false;
  private beforeKb = 0;

  constructor(private readonly pid: number) {}

  async start(): Promise<void> {
    try {
      await writeFile(`/proc/${this.pid}/clear_refs`, '5');
      this.hwmReset = true;
    } catch {
      this.hwmReset = false;
    }
    this.beforeKb = (await status(this.pid))?.rssKb ?? NaN;
    this.samples = [];
    this.timer = setInterval(() => {
      void status(this.pid).then((s) => {
        if (s) this.samples.push(s.rssKb);
      });
    }, SAMPLE_MS);
  }

  async stop(): Promise<RssFigures | null> {
    clearInterval(this.timer);
    const after = await status(this.pid);
    if (!after || !Number.isFinite(this.beforeKb)) return null;
    const sampledPeakKb = Math.max(this.beforeKb, after.rssKb, ...this.samples);
    const mb = (kb: number): number => round(kb / 1024, 1);
    return {
      beforeMb: mb(this.beforeKb),
      peakMb: mb(this.hwmReset ? Math.max(after.hwmKb, sampledPeakKb) : sampledPeakKb),
      sampledPeakMb: mb(sampledPeakKb),
      samples: this.samples.length,
      afterMb: mb(after.rssKb),
    };
  }
}

export interface RoundOptions {
  side: 'loa' | 'raw';
  label: string;
  url: string;
  sha256: string;
  devices: number;
  /** Per-download stall limit handed to downloadVerified (no data for this long fails it). */
  timeoutMs: number;
  /** The server process whose memory is watched. */
  serverPid: number;
}

/**
 * Starts `devices` downloads in one synchronous loop (so they are all in flight together, as when one play
 * command reaches a whole province), and times each from the call to downloadVerified until it resolved,
 * that is until the last byte was hashed and the hash matched.
 */
const TICKS = clockTicksPerSecond();

async function serverCpuUs(pid: number): Promise<number | undefined> {
  try {
    return totalUs(await cpuTime(pid, TICKS));
  } catch {
    return undefined;
  }
}

export async function downloadRound(options: RoundOptions): Promise<RoundResult> {
  const watch = new RssWatch(options.serverPid);
  await watch.start();
  const cpuBefore = await serverCpuUs(options.serverPid);
  const clientBefore = process.cpuUsage();
  const machineBefore = await machineCpu().catch(() => undefined);
  const times: number[] = [];
  const failures: Record<string, number> = {};
  let bytes = 0;
  let firstError: string | undefined;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: options.devices }, async () => {
      const started = performance.now();
      try {
        const result = await downloadVerified(options.url, options.sha256, { timeoutMs: options.timeoutMs });
        times.push(performance.now() - started);
        bytes += result.bytes;
      } catch (error) {
        const reason = error instanceof DownloadError ? error.reason : 'other';
        failures[reason] = (failures[reason] ?? 0) + 1;
        firstError ??= error instanceof Error ? error.message : String(error);
      }
    }),
  );
  const wallMs = performance.now() - t0;
  const client = process.cpuUsage(clientBefore);
  const cpuAfter = await serverCpuUs(options.serverPid);
  const machineAfter = await machineCpu().catch(() => undefined);
  const rss = await watch.stop();
  const cpuUs = cpuBefore === undefined || cpuAfter === undefined ? null : cpuAfter - cpuBefore;
  const clientUs = client.user + client.system;
  const machineUs =
    machineBefore && machineAfter
      ? ((machineAfter.busyTicks - machineBefore.busyTicks) * 1_000_000) / TICKS
      : undefined;
  return {
    round: options.label,
    side: options.side,
    devices: options.devices,
    verified: times.length,
    failures,
    ...(firstError === undefined ? {} : { firstError }),
    ...summarize(times),
    wallMs: round(wallMs, 1),
    mbPerS: round(bytes / 1e6 / (wallMs / 1000), 1),
    rss,
    serverCpuMs: cpuUs === null ? null : Math.round(cpuUs / 1000),
    serverCpuUsPerDownload: cpuUs === null ? null : Math.round(cpuUs / options.devices),
    clientCpuMs: Math.round(clientUs / 1000),
    othersCpuMs:
      machineUs === undefined || cpuUs === null
        ? null
        : Math.max(0, Math.round((machineUs - cpuUs - clientUs) / 1000)),
  };
}
