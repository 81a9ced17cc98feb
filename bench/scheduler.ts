/**
 * Scheduler benchmark: S schedules whose occurrences all come due in the same minute on N simulated
 * loudspeakers, through the real server process. Measures how late the dispatcher publishes each
 * occurrence (its own `occurrence dispatched` log lines) and, as a cross-check, how late the devices receive
 * it; the calendar of the province for a month; and the playback log streamed as CSV. Each against a
 * baseline measured in the same run. See bench/README.md ("bench:scheduler") for how to read the figures.
 *
 *   npm run bench:scheduler -- --schedules 5000 --devices 2000
 *
 * Progress goes to stderr; the last line on stdout is one JSON object with the headline figures, the line
 * before it a JSON object with the details.
 */
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import {
  Fleet,
  createArea,
  login,
  provisionDevices,
  type CommandEvent,
  type DeviceCredentials,
  type SimDevice,
} from '../firmware-sim/src/index.js';
import { derivedId, newId } from '../src/lib/ids.js';
import { localDate, localDateTime } from '../src/modules/schedules/timing.js';
import { parseBenchArgs } from './lib/cli.js';
import { cleanupScope, openFileLimit, processMemory, progress } from './lib/processes.js';
import { RawBroker } from './lib/raw.js';
import {
  Api,
  approvedRelay,
  calendarMonth,
  createBroadcaster,
  csvRows,
  inParallel,
} from './lib/scheduler-api.js';
import { rawCsvRowsPerS, seedHistory } from './lib/scheduler-history.js';
import { startTappedLoa, type TappedLoa } from './lib/scheduler-server.js';
import { percentile, round, summarize } from './lib/stats.js';

const USAGE = `Usage: npm run bench:scheduler -- [options]

Creates S schedules (once, relays) whose occurrences all come due in the same minute on N simulated
devices, waits for that minute, and prints the dispatch lag (due → published, p50/p99/max), the lag to
the devices, the calendar of the province for a month, and the playback log's CSV rows per second, each
with a baseline from the same run, as JSON (last line of stdout).

Options:
  --schedules <n>      schedules, all due in one minute (default 500)
  --devices <n>        simulated devices; at most 5 schedules per device fit in a minute (default 200)
  --calendar-runs <n>  measured GETs of the month's calendar (and of the baseline GET) (default 10)
  --history-days <n>   days of synthetic playback log history written before the CSV is read, three
                       records a day per device (default 30; 0: only the broadcast's own records)
  --skip-baseline      no bare-broker baseline for the dispatch lag
  --cpu-prof <dir>     write a V8 CPU profile of the Loa server into <dir> when it exits
  -h, --help           show this help`;

const DEVICES_PER_HAMLET = 50;
const HAMLETS_PER_COMMUNE = 5;
const COMMUNES_PER_DISTRICT = 4;
/** A device plays one thing at a time, and relays last at least 10 s: slots of 12 s at the least. */
const MIN_SLOT_SPACING_S = 12;
const MIN_DURATION_S = 10;
const DAY_MS = 86_400_000;
const FD_RESERVE = 500;
/** Schedule creations in flight. */
const CREATE_CONCURRENCY = 8;

interface Options {
  schedules: number;
  devices: number;
  calendarRuns: number;
  historyDays: number;
  skipBaseline: boolean;
  cpuProfDir: string | undefined;
}

function parseOptions(): Options {
  const { values, number, fail } = parseBenchArgs(
    {
      schedules: { type: 'string', default: '500' },
      devices: { type: 'string', default: '200' },
      'calendar-runs': { type: 'string', default: '10' },
      'history-days': { type: 'string', default: '30' },
      'skip-baseline': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
    },
    USAGE,
  );
  const options = {
    schedules: number('schedules', values.schedules, 1),
    devices: number('devices', values.devices, 1),
    calendarRuns: number('calendar-runs', values['calendar-runs'], 1),
    historyDays: number('history-days', values['history-days'], 0),
    skipBaseline: values['skip-baseline'],
    cpuProfDir: values['cpu-prof'] === undefined ? undefined : path.resolve(values['cpu-prof']),
  };
  if (Math.ceil(options.schedules / options.devices) > Math.floor(60 / MIN_SLOT_SPACING_S)) {
    fail(
      `--schedules ${options.schedules} on --devices ${options.devices}: a device fits at most ` +
        `${Math.floor(60 / MIN_SLOT_SPACING_S)} non-overlapping relays of ${MIN_DURATION_S} s in one minute`,
    );
  }
  return options;
}

/** The minute's layout: schedule i plays on device i mod N, in slot ⌊i / N⌋ of the minute. */
function layout(schedules: number, devices: number) {
  const slots = Math.ceil(schedules / devices);
  // The shortest relays, two seconds apart on the same device: the bursts as close together as they may
  // be, and the run no longer than it must.
  return { slots, spacingS: MIN_SLOT_SPACING_S, durationS: MIN_DURATION_S };
}

interface Area {
  id: string;
  name: string;
}

/** Province → districts → communes → hamlets, sized for N devices; returns the province and the hamlets. */
async function buildTree(api: string, token: string, devices: number) {
  const hamletCount = Math.ceil(devices / DEVICES_PER_HAMLET);
  const communeCount = Math.ceil(hamletCount / HAMLETS_PER_COMMUNE);
  const districtCount = Math.ceil(communeCount / COMMUNES_PER_DISTRICT);
  const provinceId = await createArea(api, token, { name: 'Tỉnh Quảng Trị (bench)', level: 'province' });
  const hamlets: Area[] = [];
  for (let d = 0; d < districtCount; d += 1) {
    const districtId = await createArea(api, token, {
      name: `Huyện Vĩnh Linh ${d + 1}`,
      level: 'district',
      parentId: provinceId,
    });
    for (let c = 0; c < COMMUNES_PER_DISTRICT && hamlets.length < hamletCount; c += 1) {
      const communeId = await createArea(api, token, {
        name: `Xã Vĩnh Thạch ${d + 1}.${c + 1}`,
        level: 'commune',
        parentId: districtId,
      });
      for (let h = 0; h < HAMLETS_PER_COMMUNE && hamlets.length < hamletCount; h += 1) {
        const name = `Thôn Đông ${d + 1}.${c + 1}.${h + 1}`;
        hamlets.push({
          id: await createArea(api, token, { name, level: 'hamlet', parentId: communeId }),
          name,
        });
      }
    }
  }
  return { provinceId, hamlets, districts: districtCount, communes: communeCount };
}

async function provision(api: string, token: string, hamlets: Area[], devices: number) {
  const credentials: DeviceCredentials[] = [];
  for (const [h, hamlet] of hamlets.entries()) {
    const count = Math.floor(devices / hamlets.length) + (h < devices % hamlets.length ? 1 : 0);
    credentials.push(
      ...(await provisionDevices({
        api,
        token,
        areaId: hamlet.id,
        count,
        namePrefix: `Cụm loa ${hamlet.name}`,
        kind: 'cluster',
        concurrency: 20,
      })),
    );
  }
  return credentials;
}

async function connectFleet(credentials: DeviceCredentials[], mqttUrl: string): Promise<Fleet> {
  const fleet = new Fleet(credentials, {
    mqttUrl,
    speed: 1,
    // No telemetry during the run: the only traffic is the broadcast being measured.
    heartbeatS: 86_400,
    keepaliveS: 120,
    connectConcurrency: 200,
    connectTimeoutMs: 120_000,
    noDownload: true,
  });
  let errors = 0;
  fleet.on('error', (device, error) => {
    errors += 1;
    if (errors <= 5) progress(`device ${device.id}: ${error.message}`);
  });
  const report = await fleet.connectAll();
  if (report.failed.length > 0) {
    await fleet.closeAll();
    throw new Error(`${report.failed.length} of ${credentials.length} devices did not connect`);
  }
  progress(`${credentials.length} devices connected in ${report.elapsedMs} ms`);
  return fleet;
}

/** Receipts of commands by the devices, as epoch ms (performance.now() at receipt + the time origin). */
class Receipts {
  readonly byCommand = new Map<string, number[]>();
  first: CommandEvent['command'] | undefined;
  count = 0;
  constructor(private readonly fleet: Fleet) {
    fleet.on('command', this.onCommand);
  }
  private readonly onCommand = (_device: SimDevice, event: CommandEvent): void => {
    this.first ??= event.command;
    this.count += 1;
    const at = performance.timeOrigin + event.receivedAt;
    const list = this.byCommand.get(event.command.id);
    if (list) list.push(at);
    else this.byCommand.set(event.command.id, [at]);
  };
  close(): void {
    this.fleet.off('command', this.onCommand);
  }
}

async function waitUntil(check: () => boolean, deadline: number, what: string): Promise<boolean> {
  while (!check()) {
    if (Date.now() > deadline) {
      progress(`gave up waiting for ${what}`);
      return false;
    }
    await sleep(50);
  }
  return true;
}

/** The bare-broker baseline: the same slot bursts, published by Aedes on trigger to the same devices. */
async function rawBaseline(
  repoRoot: string,
  credentials: DeviceCredentials[],
  bursts: string[][],
  template: CommandEvent['command'],
) {
  const raw = await RawBroker.start({ repoRoot, concurrency: 0 });
  let fleet: Fleet | undefined;
  try {
    fleet = await connectFleet(credentials, raw.mqttUrl);
    const receipts = new Receipts(fleet);
    const latencies: number[] = [];
    const perBurst: { devices: number; p99Ms: number; loopMs: number }[] = [];
    for (const deviceIds of bursts) {
      await sleep(1_000 + deviceIds.length * 0.5);
      await raw.setTargets(deviceIds);
      const id = newId('cmd');
      const now = new Date();
      const params = { ...(template.params as Record<string, unknown>), sessionId: newId('ses') };
      if ('startAt' in params) params.startAt = now.toISOString();
      const payload = JSON.stringify({
        ...template,
        id,
        issuedAt: now.toISOString(),
        expiresAt: new Date(now.getTime() + 600_000).toISOString(),
        params,
      });
      const { t0, published } = raw.broadcast(payload);
      const t0Epoch = performance.timeOrigin + t0;
      const reply = await published;
      await waitUntil(
        () => (receipts.byCommand.get(id)?.length ?? 0) >= deviceIds.length,
        Date.now() + 30_000 + deviceIds.length * 5,
        'every raw receipt',
      );
      const burst = (receipts.byCommand.get(id) ?? []).map((at) => at - t0Epoch);
      latencies.push(...burst);
      perBurst.push({
        devices: burst.length,
        p99Ms: round(
          percentile(
            [...burst].sort((a, b) => a - b),
            99,
          ),
          1,
        ),
        loopMs: round(reply.loopMs, 1),
      });
    }
    receipts.close();
    const expected = bursts.reduce((n, b) => n + b.length, 0);
    return { receiveMs: summarize(latencies), received: latencies.length, expected, perBurst };
  } finally {
    await fleet?.closeAll();
    await raw.stop();
  }
}

async function main(): Promise<number> {
  const options = parseOptions();
  const { schedules: S, devices: N } = options;
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const startedAt = performance.now();
  const { cleanups, cleanup } = cleanupScope(30 * 60_000);
  const plan = layout(S, N);

  try {
    progress('starting Loa (LOG_LEVEL=info: the dispatcher logs each occurrence it publishes)');
    const loa: TappedLoa = await startTappedLoa({ repoRoot, env: {}, cpuProfDir: options.cpuProfDir });
    cleanups.push(() => loa.stop());
    const adminToken = await login(loa.api, 'admin', loa.adminPassword);
    const admin = new Api(loa.api, adminToken);

    let t = performance.now();
    const tree = await buildTree(loa.api, adminToken, N);
    progress(`provisioning ${N} devices in ${tree.hamlets.length} hamlets`);
    const credentials = await provision(loa.api, adminToken, tree.hamlets, N);
    const provisionMs = Math.round(performance.now() - t);
    const broadcasterToken = await createBroadcaster(admin, loa.api, tree.provinceId);
    const programmeId = await approvedRelay(
      admin,
      broadcasterToken,
      tree.provinceId,
      'Tiếp sóng Đài Tiếng nói Việt Nam – Thời sự sáng',
    );

    progress(`connecting ${N} simulated devices`);
    const fleet = await connectFleet(credentials, loa.mqttUrl);
    cleanups.push(() => fleet.closeAll());

    // How fast does this machine create schedules? A few probes (a day later, on distinct devices,
    // deleted again) time it, so that the measured minute is close enough not to wait long, and far
    // enough that every schedule exists before it comes.
    const probes = Math.min(40, N);
    const probeAt = new Date(Math.ceil((Date.now() + 2 * DAY_MS) / 60_000) * 60_000);
    t = performance.now();
    const probeIds: string[] = [];
    await inParallel(probes, CREATE_CONCURRENCY, async (i) => {
      const created = await admin.call<{ id: string }>('POST', '/api/v1/schedules', {
        programmeId,
        targets: { deviceIds: [credentials[i]?.id] },
        timing: { once: localDateTime(probeAt) },
        durationS: MIN_DURATION_S,
        note: 'bench probe',
      });
      probeIds.push(created.id);
    });
    const msPerSchedule = (performance.now() - t) / probes;
    for (const id of probeIds) {
      const deleted = await fetch(`${loa.api}/api/v1/schedules/${id}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${adminToken}` },
      });
      if (!deleted.ok) progress(`could not delete probe schedule ${id}: HTTP ${deleted.status}`);
    }
    // The minute is the 60 s from a whole ten seconds after the estimate, not a clock minute: waiting for
    // hh:mm:00 would add up to a minute to every run and change nothing measured.
    // Generous, and more so for more schedules: creating slows down as the table fills (here 5,000 took
    // three times the pace of the probes on an empty table; 500, about the same).
    const estimateMs = S * msPerSchedule * (2 + S / 2_000) + 10_000;
    const minuteAt = Math.ceil((Date.now() + estimateMs) / 10_000) * 10_000;
    progress(
      `${round(msPerSchedule, 1)} ms per schedule; creating ${S} schedules for ${localDateTime(new Date(minuteAt))} ` +
        `(${plan.slots} per device, every ${plan.spacingS} s, ${plan.durationS} s each)`,
    );

    // Schedule i: device i mod N, slot ⌊i / N⌋. Its command id follows from (schedule, slot).
    const due = new Map<string, number>();
    const scheduleIds = new Set<string>();
    const bursts: string[][] = Array.from({ length: plan.slots }, () => []);
    t = performance.now();
    let done = 0;
    await inParallel(S, CREATE_CONCURRENCY, async (i) => {
      const device = credentials[i % N];
      if (!device) throw new Error(`no device ${i % N}`);
      const slot = Math.floor(i / N);
      const slotAt = new Date(minuteAt + slot * plan.spacingS * 1_000);
      const created = await admin.call<{ id: string }>('POST', '/api/v1/schedules', {
        programmeId,
        targets: { deviceIds: [device.id] },
        timing: { once: localDateTime(slotAt) },
        durationS: plan.durationS,
      });
      scheduleIds.add(created.id);
      due.set(derivedId('cmd', created.id, slotAt.toISOString()), slotAt.getTime());
      bursts[slot]?.push(device.id);
      done += 1;
      if (done % Math.max(1, Math.floor(S / 10)) === 0) progress(`created ${done}/${S} schedules`);
    });
    const createMs = Math.round(performance.now() - t);
    const waitMs = minuteAt - Date.now();
    if (waitMs < 2_000) {
      throw new Error(
        `creating the schedules took ${createMs} ms, longer than estimated: the minute came too close; run again`,
      );
    }
    progress(`created in ${createMs} ms; waiting ${Math.round(waitMs / 1000)} s for the minute`);

    const receipts = new Receipts(fleet);
    const lastSlotAt = minuteAt + (plan.slots - 1) * plan.spacingS * 1_000;
    const ours = () => loa.dispatches.filter((d) => scheduleIds.has(d.scheduleId));
    const deadline = lastSlotAt + 60_000 + S * 10;
    await waitUntil(() => ours().length >= S && receipts.count >= S, deadline, 'every dispatch and receipt');
    // Late duplicates, if any, would show up within a moment.
    await sleep(2_000);
    receipts.close();

    const dispatched = ours();
    const dispatchLag = summarize(dispatched.map((d) => d.lagMs));
    const receiveLags: number[] = [];
    let unknownCommands = 0;
    let duplicateReceipts = 0;
    for (const [commandId, times] of receipts.byCommand) {
      const dueAt = due.get(commandId);
      if (dueAt === undefined) {
        unknownCommands += times.length;
        continue;
      }
      if (times.length > 1) duplicateReceipts += times.length - 1;
      receiveLags.push(...times.map((at) => at - dueAt));
    }
    const receiveLag = summarize(receiveLags);
    const dispatchedOccurrences = new Set(dispatched.map((d) => d.occurrenceId)).size;
    progress(
      `dispatch lag p50 ${dispatchLag.p50Ms} p99 ${dispatchLag.p99Ms} max ${dispatchLag.maxMs} ms; ` +
        `received p99 ${receiveLag.p99Ms} ms (${receiveLags.length}/${S} receipts)`,
    );
    const rssAfterBroadcast = await processMemory(loa.pid);

    // The calendar of the province for a month: every page, after two unmeasured runs.
    const from = localDate(new Date(minuteAt));
    // A date as `to` includes that day: from + 30 days is 31 days, the most one request may span.
    const to = localDate(new Date(Date.parse(`${from}T12:00:00+07:00`) + 30 * DAY_MS));
    const calendarRuns: number[] = [];
    const trivialRuns: number[] = [];
    let calendarItems = 0;
    let calendarPages = 0;
    for (let r = -2; r < options.calendarRuns; r += 1) {
      const month = await calendarMonth(admin, tree.provinceId, from, to);
      const trivial = await admin.timedGet('/api/v1/auth/me');
      calendarItems = month.items;
      calendarPages = month.pages;
      if (r < 0) continue;
      calendarRuns.push(month.ms);
      trivialRuns.push(trivial.ms);
    }
    const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
    const calendarMonthMs = {
      p50: round(percentile(sorted(calendarRuns), 50), 1),
      p95: round(percentile(sorted(calendarRuns), 95), 1),
    };
    const trivialGetMs = {
      p50: round(percentile(sorted(trivialRuns), 50), 1),
      p95: round(percentile(sorted(trivialRuns), 95), 1),
    };
    progress(
      `calendar month p50 ${calendarMonthMs.p50} ms (${calendarItems} items); trivial GET ${trivialGetMs.p50} ms`,
    );

    // The playback log as CSV: the broadcast's records plus, optionally, weeks of synthetic history.
    const historyRows = seedHistory(loa.databaseFile, options.historyDays, new Date(minuteAt));
    const csvFrom = localDate(new Date(minuteAt - (options.historyDays + 1) * DAY_MS));
    const csvTo = localDate(new Date(minuteAt + DAY_MS));
    const csvQuery = `areaId=${tree.provinceId}&from=${csvFrom}&to=${csvTo}`;
    const csvRuns: { rows: number; ms: number; bytes: number; bom: boolean }[] = [];
    for (let r = 0; r < 3; r += 1) csvRuns.push(await csvRows(admin, adminToken, csvQuery));
    const csvBest = csvRuns.reduce((a, b) => (b.rows / b.ms > a.rows / a.ms ? b : a));
    const csvRowsPerS = Math.round(csvBest.rows / (csvBest.ms / 1000));
    const rawCsv = await rawCsvRowsPerS(loa.databaseFile, `/${tree.provinceId}/`);
    const rawCsvPerS = Math.round(rawCsv.rows / (rawCsv.ms / 1000));
    progress(
      `CSV ${csvBest.rows} rows in ${Math.round(csvBest.ms)} ms (${csvRowsPerS}/s); plain SELECT ${rawCsvPerS}/s`,
    );
    const rss = await processMemory(loa.pid);

    await fleet.closeAll();

    // Baseline for the lag: the same bursts, published by a bare Aedes broker the moment it is asked.
    let baseline: Awaited<ReturnType<typeof rawBaseline>> | null = null;
    const fdLimit = openFileLimit();
    if (options.skipBaseline) progress('baseline skipped (--skip-baseline)');
    else if (!receipts.first) progress('baseline skipped: no device received a command to copy');
    else if (fdLimit !== undefined && N + FD_RESERVE > fdLimit)
      progress(`baseline skipped: open-file limit ${fdLimit}`);
    else {
      progress('baseline: the same bursts through a bare Aedes broker');
      baseline = await rawBaseline(repoRoot, credentials, bursts, receipts.first);
    }

    const complete =
      dispatched.length === S &&
      dispatchedOccurrences === S &&
      receiveLags.length === S &&
      duplicateReceipts === 0 &&
      unknownCommands === 0 &&
      csvBest.rows >= S + historyRows;
    const detail = {
      bench: 'scheduler',
      schedules: S,
      devices: N,
      complete,
      areas: { districts: tree.districts, communes: tree.communes, hamlets: tree.hamlets.length },
      minute: localDateTime(new Date(minuteAt)),
      layout: plan,
      provisionMs,
      msPerScheduleCreated: round(createMs / S, 2),
      dispatch: {
        lines: dispatched.length,
        occurrences: dispatchedOccurrences,
        devices: dispatched.reduce((n, d) => n + d.devices, 0),
        lagMs: dispatchLag,
        firstLineAt: dispatched[0] ? new Date(dispatched[0].time).toISOString() : null,
      },
      received: { receipts: receiveLags.length, duplicateReceipts, unknownCommands, lagMs: receiveLag },
      calendar: {
        from,
        to,
        items: calendarItems,
        pages: calendarPages,
        runsMs: calendarRuns.map((x) => round(x, 1)),
      },
      trivialGetMs: trivialRuns.map((x) => round(x, 1)),
      csv: { query: csvQuery, historyRows, runs: csvRuns.map((r) => ({ ...r, ms: round(r.ms, 1) })) },
      rawCsv: { rows: rawCsv.rows, ms: round(rawCsv.ms, 1) },
      baseline,
      memory: {
        afterBroadcastMb: rssAfterBroadcast ? round(rssAfterBroadcast.rssMb, 1) : null,
        afterCsvMb: rss ? round(rss.rssMb, 1) : null,
        peakMb: rss?.peakRssMb === undefined ? null : round(rss.peakRssMb, 1),
      },
      node: process.version,
      totalMs: Math.round(performance.now() - startedAt),
    };
    const summary = {
      schedules: S,
      devices: N,
      dispatchLagMs: { p50: dispatchLag.p50Ms, p99: dispatchLag.p99Ms, max: dispatchLag.maxMs },
      receivedLagMs: { p50: receiveLag.p50Ms, p99: receiveLag.p99Ms, max: receiveLag.maxMs },
      calendarMonthMs,
      csvRowsPerS,
      baseline: {
        rawBrokerReceiveMs: baseline
          ? { p50: baseline.receiveMs.p50Ms, p99: baseline.receiveMs.p99Ms, max: baseline.receiveMs.maxMs }
          : null,
        trivialGetMs,
        plainSelectCsvRowsPerS: rawCsvPerS,
      },
      targets: {
        dispatchLagP99Under100Ms: dispatchLag.p99Ms < 100,
        calendarMonthUnder200Ms: calendarMonthMs.p50 < 200,
      },
      serverRssMb: rss ? Math.round(rss.rssMb) : null,
      complete,
    };
    await cleanup();
    await new Promise<void>((resolve) =>
      process.stdout.write(`${JSON.stringify(detail)}\n${JSON.stringify(summary)}\n`, () => resolve()),
    );
    if (!complete) progress('INCOMPLETE: see dispatch, received and csv in the detail line');
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
