/**
 * The playback log (nhật ký phát thanh). Two layers:
 *
 * - what each device says it played (protocol.md §3.5 `log`), stored exactly once: QoS 1 may deliver an
 *   entry twice, and a device re-sends what it produced while offline, so every entry is stored under its
 *   own key and only entries that were new are passed on: whatever follows from an entry (health counting
 *   failures, the records below, resuming) must happen once per entry, not once per copy;
 * - one record per play session per device (playback_log), opened with the command that starts the play
 *   (openRecords, in the command's transaction), followed by the entries of its session in the same
 *   transaction that stores them, and closed with an outcome when the slot closes (closeDue) or at once
 *   when nothing more can happen (outcome.ts).
 *
 * A broadcast to 10,000 devices brings 10,000 `started` and later 10,000 `finished` entries within
 * seconds; one autocommit INSERT each held the event loop ~13 times longer than one transaction per tick
 * (measured: 434 ms against 34 ms for 10,000), so entries go through a BatchWriter.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Readable, pipeline } from 'node:stream';
import { stringify } from 'csv-stringify';
import { stringify as stringifySync } from 'csv-stringify/sync';
import type { FastifyBaseLogger } from 'fastify';
import { BatchWriter, type RetryTimers } from '../../db/batch-writer.js';
import type { AreaRow } from '../../db/schema/index.js';
import type { Clock } from '../../lib/clock.js';
import type { Actor } from '../../lib/scope.js';
import type { Metrics } from '../../plugins/metrics.js';
import type { PlaybackLogEntry } from '../../protocol/index.js';
import type { AreasService } from '../areas/areas.service.js';
import { localDate, localDateTime, onceInstant, rangeInstant } from '../schedules/timing.js';
import type {
  LogFilter,
  LogRow,
  NewPlaybackEvent,
  OpenRecordsInput,
  PlaybackRepository,
  ResumableSession,
} from './playback.repository.js';
import type {
  AlertFigures,
  BroadcastReport,
  BroadcastReportQuery,
  Figures,
  PlaybackLogQuery,
  PlaybackRecordView,
} from './playback.schemas.js';
import { emptyFigures, type BroadcastReports } from './reports.js';

export type { OpenRecordsInput, ResumableSession } from './playback.repository.js';

interface Received {
  deviceId: string;
  entry: PlaybackLogEntry;
  row: NewPlaybackEvent;
}

export type PlaybackListener = (deviceId: string, entry: PlaybackLogEntry) => void;

export interface PlaybackServiceOptions {
  metrics: Pick<Metrics, 'batchWriteRetried' | 'batchWriteDropped'>;
  log: FastifyBaseLogger;
  /** Runs once per entry stored, after its transaction committed; never for a copy of one. */
  onStored?: PlaybackListener;
  /** The retry back-off's timers; tests pass their ManualClock. */
  timers?: RetryTimers;
  /** For the scope checks of the log and the report. */
  areas: Pick<AreasService, 'requireActionable'>;
  reports: BroadcastReports;
  /** Records due (and raw entries made) longer ago than this are deleted (PLAYBACK_LOG_RETENTION_DAYS). */
  retentionMs: number;
}

/** Rows per statement of the CSV export and of the retention job: each a short hold of the event loop. */
const CSV_CHUNK = 1_000;
const PRUNE_BATCH = 5_000;
/** Batches of records the closing job closes per run at most; a backlog (after an outage) takes several. */
const CLOSE_BATCHES_PER_RUN = 10;

const OUTCOME_WORDS: Record<PlaybackRecordView['outcome'], string> = {
  played: 'Phát đủ',
  partial: 'Phát một phần',
  failed: 'Lỗi',
  skipped: 'Bỏ qua',
  expired: 'Hết hạn',
  undelivered: 'Không đến được thiết bị',
  pending: 'Đang chờ',
};

/** What a record aired, in words: a drill says on every line that it is not a real alert. */
function kindWords(r: LogRow): string {
  if (r.emergencyId === null) return 'Thường';
  return r.exercise ? 'Diễn tập (không phải tin thật)' : 'Khẩn cấp';
}

const local = (d: Date | null) => (d ? localDateTime(d) : null);
const secondsOf = (ms: number | null) => (ms === null ? '' : String(Math.round(ms / 100) / 10));

function toView(r: LogRow): PlaybackRecordView {
  return {
    id: r.id,
    sessionId: r.sessionId,
    commandId: r.commandId,
    device: { id: r.deviceId, name: r.deviceName },
    area: { id: r.areaId, name: r.areaName },
    scheduleId: r.scheduleId,
    occurrenceId: r.occurrenceId,
    // An emergency's record holds the emergency's title where a programme's would be: it is shown as
    // the emergency's, never as the programme's it may play.
    programme: r.programmeId
      ? {
          id: r.programmeId,
          revisionId: r.programmeRevisionId,
          title: r.emergencyId === null ? r.programmeTitle : null,
        }
      : null,
    emergency:
      r.emergencyId === null ? null : { id: r.emergencyId, title: r.programmeTitle, exercise: r.exercise },
    priority: r.priority,
    dueAt: localDateTime(r.dueAt),
    endsAt: localDateTime(r.endsAt),
    plannedMs: r.plannedMs,
    sentAt: local(r.sentAt),
    receivedAt: local(r.receivedAt),
    startedAt: local(r.startedAt),
    finishedAt: local(r.finishedAt),
    airedMs: r.airedMs,
    joinedAtMs: r.joinedAtMs,
    interruptions: r.interruptions,
    outcome: r.outcome ?? 'pending',
    reason: r.reason,
  };
}

/**
 * The CSV columns, titled in Vietnamese for the commune and district staff who open the file in a
 * spreadsheet (the JSON answer keeps the English field names). Times are local (+07:00), durations in
 * seconds; the outcome both in words and as its code, for filtering.
 */
const LOG_CSV_COLUMNS: { header: string; value: (r: LogRow) => string | number | null }[] = [
  { header: 'Thời điểm phát', value: (r) => localDateTime(r.dueAt) },
  { header: 'Hết khung giờ', value: (r) => localDateTime(r.endsAt) },
  { header: 'Thiết bị', value: (r) => r.deviceName },
  { header: 'Mã thiết bị', value: (r) => r.deviceId },
  { header: 'Khu vực', value: (r) => r.areaName },
  // Emergencies and drills: the kind, then their title where a programme's would be, and their id.
  { header: 'Loại phát', value: kindWords },
  { header: 'Chương trình', value: (r) => r.programmeTitle },
  { header: 'Mã chương trình', value: (r) => r.programmeId },
  { header: 'Mã lịch phát', value: (r) => r.scheduleId },
  { header: 'Mã tin khẩn cấp', value: (r) => r.emergencyId },
  { header: 'Diễn tập', value: (r) => (r.exercise ? 'Có' : 'Không') },
  { header: 'Mức ưu tiên', value: (r) => r.priority },
  { header: 'Đã gửi lúc', value: (r) => local(r.sentAt) },
  { header: 'Đã nhận lúc', value: (r) => local(r.receivedAt) },
  { header: 'Bắt đầu phát lúc', value: (r) => local(r.startedAt) },
  { header: 'Kết thúc phát lúc', value: (r) => local(r.finishedAt) },
  { header: 'Thời lượng (giây)', value: (r) => secondsOf(r.plannedMs) },
  { header: 'Đã phát (giây)', value: (r) => secondsOf(r.airedMs) },
  { header: 'Vào muộn (giây)', value: (r) => secondsOf(r.joinedAtMs) },
  { header: 'Số lần bị ngắt', value: (r) => r.interruptions },
  { header: 'Kết quả', value: (r) => OUTCOME_WORDS[r.outcome ?? 'pending'] },
  { header: 'Mã kết quả', value: (r) => r.outcome ?? 'pending' },
  { header: 'Lý do', value: (r) => r.reason },
];

/**
 * Both exports: a BOM, so spreadsheet programs read UTF-8; text in NFC (names and device reasons are stored
 * as typed, and decomposed tone marks show apart in Excel); and a cell that starts like a formula (= + - @,
 * tab, CR) gets a leading ' (OWASP "CSV injection"), so that a device name, a title or a reason a device
 * sent can never run as a formula in the spreadsheet of whoever opens the file.
 */
const CSV_OPTIONS = {
  bom: true,
  header: true,
  escape_formulas: true,
  cast: { string: (value: string) => value.normalize('NFC') },
};

const alertHeaders = (kind: string) => [
  `${kind}: số tin`,
  `${kind}: số lượt (tin × thiết bị)`,
  `${kind}: phát đủ`,
  `${kind}: phát một phần`,
  `${kind}: không phát được`,
  `${kind}: đang chờ`,
  `${kind}: tỷ lệ thiết bị phát đủ theo tin`,
];

/** An emergency block's cells: records that did not air at all are summed (their reasons are in the log). */
const alertCells = (a: AlertFigures) => [
  a.count,
  a.records,
  a.played,
  a.partial,
  a.failed + a.skipped + a.expired + a.undelivered,
  a.pending,
  a.items
    .map((i) => `${i.title ?? i.emergencyId}: ${i.played}/${i.targeted} (${Math.round(i.share * 100)}%)`)
    .join('; '),
];

const REPORT_CSV_HEADER = [
  'Cấp',
  'Khu vực',
  'Thuộc xã',
  'Số buổi phát',
  'Số lượt (buổi × thiết bị)',
  'Phát đủ',
  'Phát một phần',
  'Lỗi',
  'Bỏ qua',
  'Hết hạn',
  'Không đến được thiết bị',
  'Đang chờ',
  'Số phút phát sóng',
  'Tỷ lệ thiết bị phát đủ theo bản tin',
  'Lý do lỗi nhiều nhất',
  // Emergencies, then drills, each apart from the programmes above and from each other.
  ...alertHeaders('Tin khẩn cấp'),
  ...alertHeaders('Diễn tập (không phải tin thật)'),
];
const LEVEL_WORDS: Record<string, string> = {
  province: 'Tỉnh',
  district: 'Huyện',
  commune: 'Xã',
  hamlet: 'Thôn',
};

/** "2026-12" → its first instant and the first instant of the next month, in Vietnam. */
export function monthBounds(month: string): { from: Date; to: Date } {
  const year = Number(month.slice(0, 4));
  const m = Number(month.slice(5, 7));
  const next = m === 12 ? `${year + 1}-01` : `${year}-${String(m + 1).padStart(2, '0')}`;
  return { from: onceInstant({ once: `${month}-01T00:00` }), to: onceInstant({ once: `${next}-01T00:00` }) };
}

export class PlaybackService {
  private readonly writer: BatchWriter<Received>;
  private readonly listeners: PlaybackListener[] = [];
  private readonly log: FastifyBaseLogger;

  constructor(
    private readonly repo: PlaybackRepository,
    private readonly clock: Clock,
    private readonly options: PlaybackServiceOptions,
  ) {
    const { metrics, log, onStored } = options;
    this.log = log;
    if (onStored) this.listeners.push(onStored);
    this.writer = new BatchWriter<Received>(
      (batch) => {
        const inserted = repo.insertNew(
          batch.map((r) => r.row),
          this.clock.now(),
        );
        // After the commit: a batch that failed and is tried again must not have told anyone already.
        for (const i of inserted) {
          const { deviceId, entry } = batch[i]!;
          log.debug(
            { deviceId, seq: entry.seq, commandId: entry.commandId, event: entry.event },
            'playback event',
          );
          for (const listener of this.listeners) {
            try {
              listener(deviceId, entry);
            } catch (err) {
              // The entry is stored; a listener's failure must neither retry the batch nor skip the others.
              log.error({ err, deviceId, seq: entry.seq }, 'a playback log listener failed');
            }
          }
        }
      },
      (err, batch) => {
        log.error({ err, count: batch.length }, 'failed to store playback log entries; dropped');
        metrics.batchWriteDropped('playback', batch.length);
      },
      {
        ...(options.timers ? { timers: options.timers } : {}),
        onRetry: (err, batch, attempt, delayMs) => {
          log.warn(
            { err, count: batch.length, attempt, delayMs },
            'failed to store playback log entries; will retry',
          );
          metrics.batchWriteRetried('playback');
        },
        onOverflow: () => metrics.batchWriteDropped('playback', 1),
        onOverflowWarning: (dropped) =>
          log.warn({ dropped }, 'playback log queue full while the database refuses writes; entries dropped'),
      },
    );
  }

  /** Queues a log entry of a device; it is stored (and passed on) at the end of the tick, once. */
  record(deviceId: string, entry: PlaybackLogEntry): void {
    this.writer.push({
      deviceId,
      entry,
      row: {
        deviceId,
        seq: entry.seq,
        sessionId: entry.sessionId,
        commandId: entry.commandId,
        event: entry.event,
        at: new Date(entry.at),
        receivedAt: this.clock.now(),
        reason: entry.reason ?? null,
      },
    });
  }

  /** Called once per new log entry, after the transaction that stored it (and updated its record) committed. */
  subscribe(listener: PlaybackListener): void {
    this.listeners.push(listener);
  }

  /**
   * Opens one record per target device of a play session (synchronous plain statements, so it joins the
   * caller's transaction). A second call for the same (session, device) is ignored. `closed`: devices left
   * out on purpose, recorded closed at once.
   */
  openRecords(input: OpenRecordsInput): void {
    this.repo.openRecords(input, this.clock.now());
  }

  /**
   * Closes the still open records of these sessions as `skipped` with the reason: plays withdrawn before
   * they went out (a schedule deleted or paused in the seconds its occurrence was prepared ahead).
   */
  skipSessions(sessionIds: readonly string[], reason: string): void {
    this.repo.skipSessions(sessionIds, reason, this.clock.now());
  }

  /**
   * Open scheduled records of the device that could resume now: interrupted (not by a stop) or refused
   * `lower_priority`, slot still open, not playing; newest due first.
   */
  resumable(deviceId: string, now: Date): ResumableSession[] {
    return this.repo.resumable(deviceId, now);
  }

  /** Closes the records whose slot ended more than the grace ago (a periodic job). */
  closeDue(): number {
    // Entries queued this tick belong to the records about to close.
    this.writer.flush();
    const now = this.clock.now();
    let closed = 0;
    for (let i = 0; i < CLOSE_BATCHES_PER_RUN; i++) {
      const n = this.repo.closeDue(now);
      closed += n;
      if (n === 0) break;
    }
    if (closed > 0) this.log.info({ records: closed }, 'playback records closed');
    return closed;
  }

  /**
   * Deletes records due, and raw entries made, before the retention period, in batches with a turn of the
   * event loop between them: a year of a province must not hold up MQTT and HTTP for seconds.
   */
  async prune(): Promise<{ records: number; events: number }> {
    const before = new Date(this.clock.now().getTime() - this.options.retentionMs);
    const inBatches = async (deleteBatch: (before: Date, batch: number) => number) => {
      let total = 0;
      for (;;) {
        const n = deleteBatch(before, PRUNE_BATCH);
        total += n;
        if (n < PRUNE_BATCH) return total;
        await nextTurn();
      }
    };
    const records = await inBatches((b, n) => this.repo.pruneRecords(b, n));
    const events = await inBatches((b, n) => this.repo.pruneEvents(b, n));
    if (records + events > 0) this.log.info({ records, events, before }, 'playback log pruned');
    return { records, events };
  }

  /** Flush queued entries now (tests, and before reading records that entries may just have changed). */
  flushEntries(): void {
    this.writer.flush();
  }

  /** At shutdown: entries queued or waiting for a retry get one last attempt now. */
  flush(): void {
    this.writer.drain();
  }

  private filter(actor: Actor, q: PlaybackLogQuery): LogFilter {
    const paths: string[] = [];
    if (actor.areaPath !== null) paths.push(actor.areaPath);
    if (q.areaId !== undefined)
      paths.push(this.options.areas.requireActionable(actor, q.areaId, 'areaId').path);
    return {
      paths,
      deviceId: q.deviceId,
      programmeId: q.programmeId,
      scheduleId: q.scheduleId,
      emergencyId: q.emergencyId,
      exercise: q.exercise,
      from: q.from === undefined ? undefined : rangeInstant(q.from, false),
      to: q.to === undefined ? undefined : rangeInstant(q.to, true),
      outcome: q.outcome,
    };
  }

  list(actor: Actor, q: PlaybackLogQuery) {
    const rows = this.repo.list(this.filter(actor, q), q.limit, q.offset);
    return { items: rows.map(toView), limit: q.limit, offset: q.offset };
  }

  /**
   * The log as CSV (UTF-8 with BOM, so spreadsheet programs read the Vietnamese right), every matching row,
   * streamed: chunks of CSV_CHUNK rows are read as the client takes the text (the stringifier's
   * back-pressure pauses the reading), so the whole export is never in memory. Scope and filters are
   * checked before the first byte, so a refusal is still a problem+json answer.
   */
  exportCsv(actor: Actor, q: PlaybackLogQuery): { filename: string; stream: Readable } {
    const filter = this.filter(actor, q);
    const repo = this.repo;
    let sent = 0;
    async function* rows() {
      let after: { dueAt: Date; id: number } | null = null;
      for (;;) {
        const chunk = repo.chunkAfter(filter, after, CSV_CHUNK);
        for (const r of chunk) {
          yield LOG_CSV_COLUMNS.map((c) => c.value(r));
          sent += 1;
        }
        if (chunk.length < CSV_CHUNK) return;
        const last = chunk[chunk.length - 1]!;
        after = { dueAt: last.dueAt, id: last.id };
        // Let MQTT and HTTP in between two chunks.
        await nextTurn();
      }
    }
    const csv = stringify({ ...CSV_OPTIONS, columns: LOG_CSV_COLUMNS.map((c) => c.header) });
    // A client that goes away destroys `csv` (Fastify does on the response's close); the pipeline then ends
    // the generator, so no chunk is read for nobody.
    pipeline(Readable.from(rows()), csv, (err) => {
      if (err) this.log.warn({ err, rows: sent }, 'playback log export ended early');
    });
    return { filename: `nhat-ky-phat-thanh-${localDate(this.clock.now())}.csv`, stream: csv };
  }

  report(actor: Actor, q: BroadcastReportQuery): BroadcastReport {
    const area = this.options.areas.requireActionable(actor, q.areaId, 'areaId');
    const { from, to } = monthBounds(q.month);
    const all = this.options.reports.areasOf(area);
    const figures = this.options.reports.figures(
      all.map((a) => a.id),
      from,
      to,
    );
    const of = (a: AreaRow) => figures.get(a.id) ?? emptyFigures();
    const ref = (a: AreaRow) => ({ id: a.id, name: a.name, level: a.level });
    // By name as Vietnamese readers sort them (the query gives path order, which follows random ids).
    const byName = (x: AreaRow, y: AreaRow) => x.name.localeCompare(y.name, 'vi');
    const communes = all.filter((a) => a.level === 'commune').sort(byName);
    return {
      area: ref(area),
      month: q.month,
      from: localDateTime(from),
      to: localDateTime(to),
      total: of(area),
      communes: communes.map((c) => ({
        ...ref(c),
        ...of(c),
        hamlets: all
          .filter((h) => h.level === 'hamlet' && h.path.startsWith(c.path))
          .sort(byName)
          .map((h) => ({ ...ref(h), ...of(h) })),
      })),
    };
  }

  /** The report as CSV: one row for the area, then each commune followed by its hamlets. */
  reportCsv(actor: Actor, q: BroadcastReportQuery): { filename: string; body: string } {
    const report = this.report(actor, q);
    const line = (level: string, name: string, commune: string, f: Figures) => [
      LEVEL_WORDS[level] ?? level,
      name,
      commune,
      f.occurrences,
      f.records,
      f.played,
      f.partial,
      f.failed,
      f.skipped,
      f.expired,
      f.undelivered,
      f.pending,
      f.minutesOnAir,
      f.bulletins
        .map((b) => `${b.title ?? b.programmeId}: ${b.played}/${b.targeted} (${Math.round(b.share * 100)}%)`)
        .join('; '),
      f.topFailureReasons.map((r) => `${r.reason ?? r.outcome} (${r.count})`).join('; '),
      ...alertCells(f.emergencies),
      ...alertCells(f.exercises),
    ];
    const rows = [line(report.area.level, report.area.name, '', report.total)];
    for (const c of report.communes) {
      if (c.id !== report.area.id) rows.push(line('commune', c.name, c.name, c));
      for (const h of c.hamlets) rows.push(line('hamlet', h.name, c.name, h));
    }
    const body = stringifySync(rows, { ...CSV_OPTIONS, columns: REPORT_CSV_HEADER });
    return { filename: `bao-cao-phat-thanh-${q.month}.csv`, body };
  }
}
