/**
 * Device download benchmark: N simulated loudspeakers download the same ~1 MB device rendition at the same
 * moment from Loa's signed URL (GET /downloads/<sha256>.mp3?expires=…&signature=…), as when one play
 * command reaches a whole province, compared with a bare node:http server streaming the same file in the
 * same run. See bench/README.md for how to read the figures.
 *
 *   npm run bench:media -- --devices 2000 [--rounds 3]
 *
 * Progress goes to stderr; the last line on stdout is one JSON object with the headline figures, the line
 * before it a JSON object with every round in detail.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { login } from '../firmware-sim/src/index.js';
import { parseBenchArgs } from './lib/cli.js';
import { startLoa } from './lib/loa.js';
import { generateAnnouncement, secondsForSize } from './lib/media-fixture.js';
import { loaHeap, renditionPath, signedUrl, uploadMedia } from './lib/media-loa.js';
import { MediaRawServer } from './lib/media-raw.js';
import { downloadRound, type RoundResult } from './lib/media-round.js';
import { cleanupScope, failOnExit, forgetTempDir, progress, trackTempDir } from './lib/processes.js';
import { medianBy, round } from './lib/stats.js';

const USAGE = `Usage: npm run bench:media -- [options]

N simulated devices download the same device rendition (MP3) at once from Loa's signed download URL, and
the same file from a bare node:http server; prints MB/s, per-download time to the verified last byte
(p50/p99), and server memory and CPU as JSON (last line of stdout).

Options:
  --devices <n>     simulated devices downloading at once (default 2000)
  --rounds <n>      measured rounds per server, after one small round and one warm-up round each;
                    the median round by MB/s is reported (default 3)
  --small <n>       devices in the first, small round (default devices / 10; 0 skips it): the server's
                    memory with few and with many downloads in flight
  --size-kb <n>     size of the rendition to aim for, KiB (default 1024)
  --log-level <l>   Loa's LOG_LEVEL (default warn; info logs two lines per request, as in production)
  --cpu-prof <dir>  write a V8 CPU profile of the Loa server into <dir> when it exits
  -h, --help        show this help`;

/** Loa's default rendition bitrate (MEDIA_BITRATE_KBPS): the bench sizes its audio for it. */
const BITRATE_KBPS = 64;

interface Options {
  devices: number;
  rounds: number;
  small: number;
  sizeKb: number;
  logLevel: string;
  cpuProfDir: string | undefined;
}

function parseOptions(): Options {
  const { values, number, fail } = parseBenchArgs(
    {
      devices: { type: 'string', default: '2000' },
      rounds: { type: 'string', default: '3' },
      small: { type: 'string' },
      'size-kb': { type: 'string', default: '1024' },
      'log-level': { type: 'string', default: 'warn' },
      'cpu-prof': { type: 'string' },
    },
    USAGE,
  );
  const integer = (name: string, raw: string, min: number) => number(name, raw, min);
  const devices = integer('devices', values.devices, 1);
  const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
  if (!levels.includes(values['log-level'])) fail(`--log-level must be one of ${levels.join(', ')}`);
  return {
    devices,
    rounds: integer('rounds', values.rounds, 1),
    small:
      values.small === undefined ? Math.max(1, Math.round(devices / 10)) : integer('small', values.small, 0),
    sizeKb: integer('size-kb', values['size-kb'], 1),
    logLevel: values['log-level'],
    cpuProfDir: values['cpu-prof'] === undefined ? undefined : path.resolve(values['cpu-prof']),
  };
}

/**
 * A full garbage collection of the bench process before each round (see bench/commands.ts): the
 * downloads of one round leave thousands of response objects behind, and a major GC landing in one round
 * but not the next is noise in the very figures being compared.
 */
const collectGarbage: () => void = (() => {
  setFlagsFromString('--expose-gc');
  const gc: unknown = runInNewContext('gc');
  return typeof gc === 'function' ? (gc as () => void) : () => undefined;
})();

/** A round, with Loa's heap figures read from /metrics once it ended (Loa rounds only). */
type LoaRound = RoundResult & { heapAfter?: { heapUsedMb: number; externalMb: number } | null };

/** Median raw CPU per download ÷ median Loa CPU per download, over the measured rounds. */
function cpuRatio(loaRounds: LoaRound[], rawRounds: LoaRound[]): number | null {
  const perDownload = (rounds: LoaRound[]): number | null => {
    const values = rounds.map((x) => x.serverCpuUsPerDownload).filter((x): x is number => x !== null);
    return values.length > 0 ? medianBy(values, (x) => x) : null;
  };
  const loa = perDownload(loaRounds);
  const raw = perDownload(rawRounds);
  return loa === null || raw === null || loa === 0 ? null : round(raw / loa, 2);
}

const summaryOf = (r: RoundResult) => ({
  mbPerS: r.mbPerS,
  p50Ms: r.p50Ms,
  p99Ms: r.p99Ms,
  maxMs: r.maxMs,
  wallMs: r.wallMs,
  serverCpuUsPerDownload: r.serverCpuUsPerDownload,
});

async function main(): Promise<number> {
  const options = parseOptions();
  const N = options.devices;
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const startedAt = performance.now();
  const { cleanups, cleanup } = cleanupScope(10 * 60_000 + N * 60);

  try {
    const workDir = await mkdtemp(path.join(tmpdir(), 'loa-bench-media-'));
    trackTempDir(workDir);
    cleanups.push(async () => {
      await rm(workDir, { recursive: true, force: true });
      forgetTempDir(workDir);
    });

    const secret = randomBytes(32).toString('base64url');
    const metricsToken = randomBytes(24).toString('base64url');
    progress(`starting Loa (MAX_CONNECTIONS_PER_ADDRESS=0, LOG_LEVEL=${options.logLevel})`);
    const [loa, fixture] = await Promise.all([
      startLoa({
        repoRoot,
        // No MQTT client connects in this bench; the setting only has to be valid.
        maxConnectsPerSecond: 500,
        cpuProfDir: options.cpuProfDir,
        env: {
          MEDIA_URL_SECRET: secret,
          // Every simulated device downloads from 127.0.0.1, and the per-address cap counts the HTTP port's
          // sockets too (docs/broker.md): 0 turns it off, or 2,000 downloads would be 200 and 1,800 resets.
          MAX_CONNECTIONS_PER_ADDRESS: '0',
          MEDIA_BITRATE_KBPS: String(BITRATE_KBPS),
          LOG_LEVEL: options.logLevel,
          // Read once after each Loa round (heap and Buffer memory), never during one.
          METRICS_TOKEN: metricsToken,
        },
      }),
      generateAnnouncement(workDir, secondsForSize(options.sizeKb * 1024, BITRATE_KBPS)),
    ]);
    const watch = failOnExit([loa.child]);
    cleanups.push(
      () => loa.stop(),
      async () => watch.stop(),
    );

    const token = await login(loa.api, 'admin', loa.adminPassword);
    progress(`uploading a ${Math.round(fixture.sizeBytes / 1024)} KiB MP3; Loa renders the device rendition`);
    const t = performance.now();
    const media = await uploadMedia(
      loa.api,
      token,
      fixture.file,
      'Thông báo lịch tiêm phòng dại – Thôn Đông',
    );
    const uploadMs = Math.round(performance.now() - t);
    progress(
      `rendition ${media.sha256.slice(0, 12)}…: ${media.sizeBytes} bytes, ${media.durationMs} ms (${uploadMs} ms)`,
    );

    // Valid well past the run: an expiry inside a round would be a 403 storm, not a measurement.
    const url = signedUrl(secret, loa.api, media.sha256, new Date(Date.now() + 3_600_000));
    const file = renditionPath(path.dirname(loa.databaseFile), media.sha256);
    const raw = await MediaRawServer.start({ repoRoot, file });
    const rawWatch = failOnExit([raw.child]);
    cleanups.push(
      () => raw.stop(),
      async () => rawWatch.stop(),
    );
    if (raw.sizeBytes !== media.sizeBytes)
      throw new Error(`the rendition on disk has ${raw.sizeBytes} bytes, the API said ${media.sizeBytes}`);
    const rawUrl = `${raw.url}/downloads/${media.sha256}.mp3`;
    const died = Promise.race([watch.failed, rawWatch.failed]);

    const settle = async (): Promise<void> => {
      await sleep(1_000);
      collectGarbage();
      await sleep(200);
    };
    const run = async (side: 'loa' | 'raw', label: string, devices: number): Promise<LoaRound> => {
      await settle();
      const result: LoaRound = await Promise.race([
        downloadRound({
          side,
          label: `${side} ${label}`,
          url: side === 'loa' ? url : rawUrl,
          sha256: media.sha256,
          devices,
          timeoutMs: 60_000,
          serverPid: side === 'loa' ? loa.child.pid : raw.child.pid,
        }),
        died,
      ]);
      if (side === 'loa') result.heapAfter = await loaHeap(loa.api, metricsToken);
      const failed = devices - result.verified;
      progress(
        `${result.round} (${devices}): ${result.mbPerS} MB/s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ` +
          `server RSS ${result.rss?.beforeMb ?? '?'} → peak ${result.rss?.peakMb ?? '?'} → ${result.rss?.afterMb ?? '?'} MB, ` +
          `server CPU ${result.serverCpuUsPerDownload ?? '?'} µs/download` +
          (failed > 0 ? `, ${failed} FAILED (${result.firstError ?? ''})` : ''),
      );
      return result;
    };

    // Small round first (memory with few downloads in flight), then one warm-up at full size (JIT, and the
    // client's keep-alive connections, which later rounds reuse on both sides alike), then the measured
    // rounds. The order within a pair flips every round so that neither side always runs on the heels of
    // the other's trailing work (socket teardown, GC).
    const smallRounds: LoaRound[] = [];
    if (options.small > 0) {
      smallRounds.push(await run('loa', 'small', options.small));
      smallRounds.push(await run('raw', 'small', options.small));
    }
    const warmUp = [await run('raw', 'warm-up', N), await run('loa', 'warm-up', N)];
    const loaRounds: LoaRound[] = [];
    const rawRounds: LoaRound[] = [];
    for (let r = 1; r <= options.rounds; r += 1) {
      const order: ('loa' | 'raw')[] = r % 2 === 1 ? ['loa', 'raw'] : ['raw', 'loa'];
      for (const side of order) (side === 'loa' ? loaRounds : rawRounds).push(await run(side, String(r), N));
    }

    const loaMedian = medianBy(loaRounds, (x) => x.mbPerS);
    const rawMedian = medianBy(rawRounds, (x) => x.mbPerS);
    const all = [...smallRounds, ...warmUp, ...loaRounds, ...rawRounds];
    const complete = all.every((x) => x.verified === x.devices);
    const loaAll = all.filter((x) => x.side === 'loa');
    const peak = (rounds: LoaRound[]): number | null => {
      const peaks = rounds.map((x) => x.rss?.peakMb).filter((x): x is number => x !== undefined);
      return peaks.length > 0 ? Math.max(...peaks) : null;
    };
    const loaSmall = smallRounds.find((x) => x.side === 'loa');
    const serverRss = {
      // Before the first download, after the small round, and after the last round.
      idleMb: loaAll[0]?.rss?.beforeMb ?? null,
      smallRoundPeakMb: loaSmall?.rss?.peakMb ?? null,
      peakMb: peak(loaAll),
      afterEachRoundMb: loaAll.map((x) => x.rss?.afterMb ?? null),
      heapUsedAfterEachRoundMb: loaAll.map((x) => x.heapAfter?.heapUsedMb ?? null),
      externalAfterEachRoundMb: loaAll.map((x) => x.heapAfter?.externalMb ?? null),
      afterMb: loaAll.at(-1)?.rss?.afterMb ?? null,
      rawPeakMb: peak(all.filter((x) => x.side === 'raw')),
    };
    // How much of the machine other processes took during the measured rounds (0 to 1): on a shared
    // machine this, not Loa, is what makes a run slow, and it rarely hits both sides of a pair alike.
    const measured = [...loaRounds, ...rawRounds];
    const othersMs = measured.reduce((sum, x) => sum + (x.othersCpuMs ?? 0), 0);
    const capacityMs = measured.reduce((sum, x) => sum + x.wallMs, 0) * availableParallelism();
    const othersCpuShare = round(othersMs / capacityMs, 2);
    const downloads = all.reduce((sum, x) => sum + x.verified, 0);

    progress('stopping the servers');
    await cleanup();

    const detail = {
      bench: 'media',
      devices: N,
      rounds: options.rounds,
      complete,
      fileBytes: media.sizeBytes,
      durationMs: media.durationMs,
      uploadMs,
      settings: {
        smallRoundDevices: options.small,
        logLevel: options.logLevel,
        bitrateKbps: BITRATE_KBPS,
        client: 'firmware-sim downloadVerified (global fetch, SHA-256 while streaming)',
        node: process.version,
      },
      smallRounds,
      warmUp,
      loaRounds,
      rawRounds,
      medianRound: { loa: loaMedian.round, raw: rawMedian.round },
      // Each Loa round against the raw round of the same pair, which ran under the same machine load.
      pairedRatios: loaRounds.map((l, i) => round(l.mbPerS / (rawRounds[i]?.mbPerS ?? NaN), 2)),
      serverRss,
      othersCpuShare,
      downloadsServedByLoa: loaAll.reduce((sum, x) => sum + x.verified, 0),
      downloads,
      totalMs: Math.round(performance.now() - startedAt),
    };
    const summary = {
      devices: N,
      fileBytes: media.sizeBytes,
      rounds: options.rounds,
      loa: summaryOf(loaMedian),
      raw: summaryOf(rawMedian),
      ratio: round(loaMedian.mbPerS / rawMedian.mbPerS, 2),
      // The same comparison by server CPU per download (raw ÷ Loa, so higher is better here too): unlike
      // MB/s it does not depend on how busy the client and the rest of the machine were.
      cpuRatio: cpuRatio(loaRounds, rawRounds),
      serverRssMb: serverRss.peakMb === null ? null : Math.round(serverRss.peakMb),
      serverRss: {
        idleMb: serverRss.idleMb,
        smallRoundPeakMb: serverRss.smallRoundPeakMb,
        peakMb: serverRss.peakMb,
        afterMb: serverRss.afterMb,
        rawPeakMb: serverRss.rawPeakMb,
      },
      othersCpuShare,
      complete,
    };
    await new Promise<void>((resolve) =>
      process.stdout.write(`${JSON.stringify(detail)}\n${JSON.stringify(summary)}\n`, () => resolve()),
    );
    if (othersCpuShare > 0.2)
      progress(
        `other processes used ${Math.round(othersCpuShare * 100)} % of the machine's CPU during the rounds: ` +
          'MB/s and times are lower than on a quiet machine, and the ratio is noisier (see pairedRatios)',
      );
    if (!complete) progress('INCOMPLETE: some download failed (see the rounds in the detail line)');
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
