/**
 * The durable dispatcher: sends each planned occurrence of a schedule once, when it is due.
 *
 * SQLite is the truth, not timers: a `planned` row of schedule_occurrences whose due_at is near is claimed
 * (UPDATE … WHERE status = 'planned') in the same transaction that creates its play command and opens its
 * playback records, and the command's id is derived from (schedule, slot). So:
 *
 * - a crash before that transaction commits leaves the row planned, and the next run sends the same
 *   command id (devices that somehow had it ignore it: they de-duplicate by id);
 * - a crash after the commit but before the publish loses nothing either (below).
 *
 * Prepared ahead, published on time. Writing an occurrence costs far more than publishing it, and a
 * province's bulletins come due by the thousand in the same millisecond; one after the other, the last
 * would go out seconds late. So the database work is done PREPARE_AHEAD_MS before the due time, in
 * batches (one transaction for a batch of rows), and at the due time a timer in memory only publishes
 * the payloads built then. The command is created AT its publish instant (createdAt = wire issuedAt = the
 * due time, or now when it is late), and CommandsService leaves a command out of deliverPending until its
 * createdAt: a device that connects between the prepare and the publish is not sent it early, and gets
 * it from the publish. The timer is not the truth either:
 *
 * - the server dies between the commit and the publish time: the restarted dispatcher finds the plays
 *   created for an instant still ahead (CommandsService.unpublished) and publishes them at their time
 *   (late, if reading them fails until after it: those created after the restart, and it prepares
 *   nothing new before it has read them);
 * - it is down at the publish time: the deliveries are in the database, and devices, which reconnect
 *   after a server restart, are sent the play by CommandsService.deliverPending at the position the
 *   broadcast has reached (resendPayload).
 *
 * Either way, the same command once. A schedule paused or deleted during the few seconds between the
 * prepare and the publish has that play withdrawn (withdraw()): it expires unsent. One already sent is
 * stopped by the schedules service with a stop command.
 *
 * A batch whose transaction throws (a broken row, a busy database) is tried again row by row, each in its
 * own transaction, so that one bad row cannot hold back the others; a row that fails alone stays planned
 * and is tried again after RETRY_MS.
 *
 * The wake-up timer is armed for the earliest due row less PREPARE_AHEAD_MS, never waiting more than
 * MAX_WAIT_MS, so a row written by someone who forgot to call wake() is still seen within a minute.
 *
 * After a restart or a stall, an occurrence whose slot is still open is sent late, joining where the
 * broadcast now is (offsetMs), as a radio would; one whose slot has closed is recorded `skipped` with the
 * reason, on the occurrence and in each device's playback record. Never twice, never silently lost.
 *
 * Pre-emption and resume: a device plays the highest priority it is sent (protocol rule 4), so a priority
 * bulletin or an emergency interrupts a scheduled play there, which the device logs `interrupted`. When the
 * device reports the END of a play above `normal` (finished, failed, or interrupted by a stop), the newest
 * scheduled session of LOWER priority that was interrupted or refused on that device and whose slot is still
 * open is sent again to that device alone: a new command with the same session id (so the playback record
 * continues), joining at the broadcast's position now (now − the occurrence's start). One that would join at
 * or past its end is left alone. A play pre-empted in turn (logged `interrupted`, reason `preempted`) is not
 * an end: the play that pre-empted it ends later, and that end resumes the newest session below it, so
 * nested pre-emptions unwind one level at a time. A lower play that is itself refused while something
 * higher still runs stays resumable (refused `lower_priority`) for that play's end.
 */
import type { FastifyBaseLogger } from 'fastify';
import { and, asc, eq, gt, inArray, lte, min, sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import {
  commands,
  occurrenceOverrides,
  programmes,
  scheduleOccurrences,
  schedules,
  type ScheduleTargets,
} from '../../db/schema/index.js';
import { AppError } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { derivedId } from '../../lib/ids.js';
import type { Actor } from '../../lib/scope.js';
import { LINK_MARGIN_MS } from '../../media/links.js';
import { priorityRank, type Command, type PlaybackLogEntry, type PlaySource } from '../../protocol/index.js';
import type { AuditService } from '../audit/audit.service.js';
import type { CommandsService, PlaybackRecorder, PreparedPlay } from '../commands/commands.service.js';
import type { PlaybackService } from '../playback/playback.service.js';
import type { ProgrammesService } from '../programmes/programmes.service.js';
import { occurrencePlayIds } from './planning.js';
import { resolveTargetDevices, type TargetDeps } from './targets.js';
import { localDateTime } from './timing.js';

/** The longest the dispatcher sleeps: a planned row nobody woke it for is seen within this. */
export const MAX_WAIT_MS = 60_000;
/**
 * How long before its due time an occurrence is written (claimed, its command and records created): the
 * time a burst of thousands has to be prepared in before it must go out. Measured: 2,000 in about a
 * second, in turns that leave the event loop to MQTT and HTTP in between (bench:scheduler).
 */
export const PREPARE_AHEAD_MS = 5_000;
/**
 * Rows per transaction, and per turn of the event loop: between turns it serves MQTT, HTTP and the
 * publish timers, so a turn must stay short. Measured at 0.3–0.6 ms a row (bench:scheduler, LOG_LEVEL
 * debug: 'occurrences prepared'), so 30–60 ms a turn.
 */
const BATCH = 100;
/**
 * A prepare turn holds the event loop for a while (tens of ms for a full batch): none starts this close to
 * a pending publish instant, it waits until that publish is done.
 */
const PUBLISH_GUARD_MS = 100;
/** After a round in which an occurrence failed (database busy, full), the wait before trying again. */
export const RETRY_MS = 5_000;

/** Commands are never changed, so their priorities are remembered for the many entries that name them. */
const RANK_CACHE_SIZE = 1_000;

/**
 * Who the dispatcher acts as towards the programmes service: the server, everywhere. The scope of the
 * person who scheduled was checked when they saved the schedule.
 */
const SERVER: Actor = { id: 'server', username: 'server', role: 'admin', areaId: null, areaPath: null };

export type OccurrenceRow = typeof scheduleOccurrences.$inferSelect;
type ScheduleRow = typeof schedules.$inferSelect;
type PlayParams = Extract<Command, { type: 'play' }>['params'];

/** An occurrence this one gives way to (onConflict override). */
interface Winner {
  scheduleId: string;
  targets: ScheduleTargets;
  title: string | null;
}

/** What the dispatcher uses of the playback log. */
export type DispatcherPlayback = Pick<PlaybackService, 'openRecords' | 'resumable' | 'skipSessions'>;

export class DispatcherRepository {
  constructor(private readonly db: Db) {}

  transaction<T>(fn: () => T): T {
    return this.db.transaction(() => fn());
  }

  /** The schedule's occurrences prepared ahead whose play has not gone out yet (created after `now`). */
  unpublishedOf(scheduleId: string, now: Date): { id: number; slotAt: Date; commandId: string }[] {
    return this.db
      .select({ id: scheduleOccurrences.id, slotAt: scheduleOccurrences.slotAt, commandId: commands.id })
      .from(scheduleOccurrences)
      .innerJoin(commands, eq(commands.id, scheduleOccurrences.commandId))
      .where(
        and(
          eq(scheduleOccurrences.scheduleId, scheduleId),
          eq(scheduleOccurrences.status, 'dispatched'),
          gt(commands.createdAt, now),
        ),
      )
      .all();
  }

  cancel(occurrenceIds: readonly number[], reason: string): void {
    if (occurrenceIds.length === 0) return;
    this.db
      .update(scheduleOccurrences)
      .set({ status: 'cancelled', reason })
      .where(inArray(scheduleOccurrences.id, [...occurrenceIds]))
      .run();
  }

  /** Planned rows due at `until`, oldest first, after `cursor` (the last row of the previous batch). */
  due(until: Date, cursor: { dueAt: Date; id: number } | null, limit: number): OccurrenceRow[] {
    const after = cursor
      ? sql`(${scheduleOccurrences.dueAt}, ${scheduleOccurrences.id}) > (${cursor.dueAt.getTime()}, ${cursor.id})`
      : undefined;
    return this.db
      .select()
      .from(scheduleOccurrences)
      .where(and(eq(scheduleOccurrences.status, 'planned'), lte(scheduleOccurrences.dueAt, until), after))
      .orderBy(asc(scheduleOccurrences.dueAt), asc(scheduleOccurrences.id))
      .limit(limit)
      .all();
  }

  /** When the earliest planned row is due; undefined when none is planned. */
  nextDueAt(): Date | undefined {
    const row = this.db
      .select({ at: min(scheduleOccurrences.dueAt) })
      .from(scheduleOccurrences)
      .where(eq(scheduleOccurrences.status, 'planned'))
      .get();
    return row?.at ?? undefined;
  }

  occurrence(id: number): OccurrenceRow | undefined {
    return this.db.select().from(scheduleOccurrences).where(eq(scheduleOccurrences.id, id)).get();
  }

  /** The dispatched occurrences whose play is one of these commands, by command id. */
  byCommands(commandIds: readonly string[]): Map<string, OccurrenceRow> {
    const found = new Map<string, OccurrenceRow>();
    for (const ids of chunks(commandIds, 500)) {
      const rows = this.db
        .select()
        .from(scheduleOccurrences)
        .where(and(inArray(scheduleOccurrences.commandId, ids), eq(scheduleOccurrences.status, 'dispatched')))
        .all();
      for (const r of rows) if (r.commandId) found.set(r.commandId, r);
    }
    return found;
  }

  /** The schedules, deleted or not, by id. */
  schedules(ids: readonly string[]): Map<string, ScheduleRow> {
    const found = new Map<string, ScheduleRow>();
    for (const batch of chunks([...new Set(ids)], 500)) {
      for (const r of this.db.select().from(schedules).where(inArray(schedules.id, batch)).all()) {
        found.set(r.id, r);
      }
    }
    return found;
  }

  /** Marks a planned row dispatched; returns false when it was no longer planned (someone else did it). */
  claim(id: number, commandId: string, at: Date): boolean {
    return (
      this.db
        .update(scheduleOccurrences)
        .set({ status: 'dispatched', commandId, dispatchedAt: at })
        .where(and(eq(scheduleOccurrences.id, id), eq(scheduleOccurrences.status, 'planned')))
        .run().changes === 1
    );
  }

  /** Closes a planned row without sending it; false when it was no longer planned. */
  settle(id: number, status: 'skipped' | 'cancelled', reason: string): boolean {
    return (
      this.db
        .update(scheduleOccurrences)
        .set({ status, reason })
        .where(and(eq(scheduleOccurrences.id, id), eq(scheduleOccurrences.status, 'planned')))
        .run().changes === 1
    );
  }

  /**
   * The occurrences each of these gives way to (onConflict override), with their schedule's targets and
   * title, by occurrence id; those without any are left out.
   */
  overriddenBy(occurrenceIds: readonly number[]): Map<number, Winner[]> {
    const found = new Map<number, Winner[]>();
    for (const ids of chunks(occurrenceIds, 500)) {
      const rows = this.db
        .select({
          occurrenceId: occurrenceOverrides.occurrenceId,
          scheduleId: schedules.id,
          targets: schedules.targets,
          title: programmes.title,
        })
        .from(occurrenceOverrides)
        .innerJoin(scheduleOccurrences, eq(occurrenceOverrides.byOccurrenceId, scheduleOccurrences.id))
        .innerJoin(schedules, eq(scheduleOccurrences.scheduleId, schedules.id))
        .leftJoin(programmes, eq(schedules.programmeId, programmes.id))
        .where(inArray(occurrenceOverrides.occurrenceId, ids))
        .orderBy(asc(occurrenceOverrides.occurrenceId), asc(occurrenceOverrides.byOccurrenceId))
        .all();
      for (const { occurrenceId, ...winner } of rows) {
        const list = found.get(occurrenceId);
        if (list) list.push(winner);
        else found.set(occurrenceId, [winner]);
      }
    }
    return found;
  }
}

export interface DispatcherDeps {
  repo: DispatcherRepository;
  commands: Pick<
    CommandsService,
    | 'dispatchPlay'
    | 'findCommand'
    | 'preparePlay'
    | 'publishPrepared'
    | 'resumeOverridden'
    | 'unpublished'
    | 'withdrawPrepared'
  >;
  programmes: Pick<ProgrammesService, 'playSource'>;
  playback: DispatcherPlayback;
  targets: TargetDeps;
  audit: Pick<AuditService, 'record'>;
  clock: Clock;
  log: FastifyBaseLogger;
  /** Each dispatch's lag, due → published (metrics). */
  onDispatched?: (lagMs: number) => void;
}

/** A prepared occurrence waiting for its publish instant. */
interface Waiting {
  play: PreparedPlay;
  occurrenceId: number;
  scheduleId: string;
  dueAt: Date;
  offsetMs: number;
}

/** What a committed batch leads to: plays to publish, rows settled without a play (to log). */
interface BatchOutcome {
  prepared: Waiting[];
  settled: { occ: OccurrenceRow; status: 'skipped' | 'cancelled'; reason: string }[];
}

/** "06:00–06:05" in Vietnamese wall-clock time. */
function slotWords(occ: OccurrenceRow): string {
  const hhmm = (d: Date) => localDateTime(d).slice(11, 16);
  return `${hhmm(occ.startsAt)}–${hhmm(occ.endsAt)}`;
}

/**
 * resolveTargetDevices for a whole batch: the named devices and areas of all its schedules are read in
 * one query each, and each distinct set of area paths is expanded once. Targets it was not primed with
 * (an overriding schedule's) fall back to resolveTargetDevices. Same answer: sorted, without repeats.
 */
class BatchTargets {
  private readonly devices = new Set<string>();
  private readonly checkedDevices = new Set<string>();
  private readonly areaPaths = new Map<string, string>();
  private readonly checkedAreas = new Set<string>();
  private readonly subtrees = new Map<string, string[]>();

  constructor(
    private readonly deps: TargetDeps,
    primeWith: readonly ScheduleTargets[],
  ) {
    const deviceIds = new Set<string>();
    const areaIds = new Set<string>();
    for (const t of primeWith) {
      for (const id of t.deviceIds ?? []) deviceIds.add(id);
      for (const id of t.areaIds ?? []) areaIds.add(id);
    }
    for (const d of deps.devices.withPaths([...deviceIds])) this.devices.add(d.id);
    for (const id of deviceIds) this.checkedDevices.add(id);
    for (const a of deps.areas.byIds([...areaIds])) this.areaPaths.set(a.id, a.path);
    for (const id of areaIds) this.checkedAreas.add(id);
  }

  resolve(targets: ScheduleTargets): string[] {
    const deviceIds = targets.deviceIds ?? [];
    const areaIds = targets.areaIds ?? [];
    if (
      !deviceIds.every((id) => this.checkedDevices.has(id)) ||
      !areaIds.every((id) => this.checkedAreas.has(id))
    ) {
      return resolveTargetDevices(this.deps, targets);
    }
    const ids = new Set(deviceIds.filter((id) => this.devices.has(id)));
    const paths = areaIds.flatMap((id) => {
      const path = this.areaPaths.get(id);
      return path === undefined ? [] : [path];
    });
    if (paths.length > 0) {
      const key = [...new Set(paths)].sort().join('\n');
      let inside = this.subtrees.get(key);
      if (!inside) {
        inside = this.deps.devices.idsInSubtrees(paths);
        this.subtrees.set(key, inside);
      }
      for (const id of inside) ids.add(id);
    }
    return [...ids].sort();
  }
}

type Resolved = { source: PlaySource; programmeId: string; revisionId: string };

export class Dispatcher {
  private timer: unknown = null;
  private running = false;
  /** Where a round that yielded to the event loop goes on from. */
  private cursor: { dueAt: Date; id: number } | null = null;
  private roundStart: Date | null = null;
  private roundFailed = false;
  /** Prepared plays not yet published: by publish instant (epoch ms), each with its timer. */
  private readonly waiting = new Map<number, { timer: unknown; items: Waiting[] }>();
  private readonly waitingIds = new Set<string>();
  /** The prepared plays a previous run left unpublished are still to be re-armed (start, or a failed try). */
  private reloadPending = false;
  /**
   * When this run started: a play created for a later instant was prepared by a previous run and not
   * published by it (it had stopped or died by then), even when the reload comes after that instant.
   */
  private startedAt: Date | null = null;
  private readonly ranks = new Map<string, number | null>();

  constructor(private readonly deps: DispatcherDeps) {}

  /**
   * Re-arms what a previous run prepared but had not published yet, sends what is due now (after a
   * restart: everything overdue), then keeps watching.
   */
  start(): void {
    this.running = true;
    this.reloadPending = true;
    this.startedAt = this.deps.clock.now();
    this.fire();
  }

  /**
   * A schedule deleted or paused: its occurrences prepared ahead but not published yet are withdrawn (the
   * command expires unsent, the occurrence is cancelled, its playback records say skipped) and dropped from
   * the publish timers. What has gone out already is the schedules service's to stop. Returns how many.
   */
  withdraw(scheduleId: string, reason: string): number {
    const { repo, commands, playback, clock } = this.deps;
    // A play whose instant has come but whose timer has not fired yet (a handler ran first in this turn of
    // the event loop) is issued already (createdAt ≤ now): it is not withdrawn below but stopped by the
    // caller. Published now, so that it reaches the devices BEFORE that stop, not after it.
    this.publishOverdue();
    const rows = repo.unpublishedOf(scheduleId, clock.now());
    if (rows.length === 0) return 0;
    const withdrawn = repo.transaction(() => {
      const ids = new Set(
        commands.withdrawPrepared(
          rows.map((r) => r.commandId),
          reason,
        ),
      );
      const gone = rows.filter((r) => ids.has(r.commandId));
      repo.cancel(
        gone.map((r) => r.id),
        reason,
      );
      playback.skipSessions(
        gone.map((r) => occurrencePlayIds(scheduleId, r.slotAt).sessionId),
        reason,
      );
      return ids;
    });
    for (const [at, group] of this.waiting) {
      group.items = group.items.filter((item) => !withdrawn.has(item.play.id));
      if (group.items.length > 0) continue;
      this.deps.clock.clearTimeout(group.timer);
      this.waiting.delete(at);
    }
    for (const id of withdrawn) this.waitingIds.delete(id);
    return withdrawn.size;
  }

  /** Publishes at once the waiting plays whose instant has come (their timers have not fired yet). */
  private publishOverdue(): void {
    const now = this.deps.clock.now().getTime();
    for (const [at, group] of [...this.waiting].sort(([x], [y]) => x - y)) {
      if (at > now) continue;
      this.deps.clock.clearTimeout(group.timer);
      this.waiting.delete(at);
      for (const item of group.items) this.waitingIds.delete(item.play.id);
      this.publish(group.items);
    }
  }

  stop(): void {
    this.running = false;
    this.clearTimer();
    for (const group of this.waiting.values()) this.deps.clock.clearTimeout(group.timer);
    this.waiting.clear();
    this.waitingIds.clear();
  }

  /** A schedule was saved: look again at once, its first occurrence may be due sooner than the timer. */
  wake(): void {
    if (!this.running) return;
    this.arm();
  }

  private clearTimer(): void {
    if (this.timer !== null) this.deps.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(delayMs?: number): void {
    if (!this.running) return;
    this.clearTimer();
    let wait = delayMs;
    if (wait === undefined) {
      try {
        const next = this.deps.repo.nextDueAt();
        wait =
          next === undefined
            ? MAX_WAIT_MS
            : next.getTime() - PREPARE_AHEAD_MS - this.deps.clock.now().getTime();
      } catch (err) {
        this.deps.log.error({ err }, 'cannot read the next due occurrence; will try again');
        wait = RETRY_MS;
      }
    }
    this.timer = this.deps.clock.setTimeout(() => this.fire(), Math.min(MAX_WAIT_MS, Math.max(0, wait)));
  }

  private fire(): void {
    this.timer = null;
    if (this.reloadPending) this.reload();
    // Nothing is prepared before the reload has succeeded: a play prepared by this run would be taken for
    // one left by the previous run, and published twice.
    if (this.reloadPending) return this.arm(RETRY_MS);
    const publishIn = this.nextPublishIn();
    if (publishIn !== undefined && publishIn < PUBLISH_GUARD_MS) return this.arm(publishIn + 1);
    let more = false;
    try {
      more = this.runTurn();
    } catch (err) {
      this.deps.log.error({ err }, 'dispatcher round failed; will try again');
      this.roundFailed = true;
      this.cursor = null;
    }
    if (more) return this.arm(0);
    const failed = this.roundFailed;
    this.roundFailed = false;
    this.roundStart = null;
    // A row that failed stays due: waiting for its due time again would spin.
    this.arm(failed ? RETRY_MS : undefined);
  }

  /** How long until the earliest pending publish; undefined when none is pending. */
  private nextPublishIn(): number | undefined {
    let next: number | undefined;
    for (const at of this.waiting.keys()) if (next === undefined || at < next) next = at;
    return next === undefined ? undefined : Math.max(0, next - this.deps.clock.now().getTime());
  }

  /** Re-arms the publish of plays prepared by a previous run (it stopped or died before their time). */
  private reload(): void {
    try {
      // Since the start, not since now: a reload that failed until after a play's instant still publishes
      // it (late), for the devices that subscribed before that instant and were not sent it then.
      const plays = this.deps.commands.unpublished(this.startedAt ?? this.deps.clock.now());
      // Done only once every read has succeeded: a failure below must be tried again too.
      const occurrences = this.deps.repo.byCommands(plays.map((p) => p.id));
      this.reloadPending = false;
      if (plays.length === 0) return;
      const items: Waiting[] = [];
      for (const play of plays) {
        const occ = occurrences.get(play.id);
        if (!occ) continue; // not a schedule's: nothing else prepares plays ahead
        const offsetMs = Math.max(0, play.publishAt.getTime() - occ.startsAt.getTime());
        items.push({ play, occurrenceId: occ.id, scheduleId: occ.scheduleId, dueAt: occ.dueAt, offsetMs });
      }
      this.deps.log.info({ plays: items.length }, 'prepared occurrences re-armed after a restart');
      this.schedulePublish(items);
    } catch (err) {
      // fire() tries again RETRY_MS later, and prepares nothing until then.
      this.deps.log.error({ err }, 'cannot read the prepared occurrences; will try again');
    }
  }

  /**
   * Prepares up to BATCH rows due within PREPARE_AHEAD_MS of the round's start, oldest first; true when
   * the round is not finished (the rest is done after the event loop has served MQTT, HTTP and the
   * publish timers). Rows that fail are passed over until the next round.
   */
  private runTurn(): boolean {
    const { repo } = this.deps;
    this.roundStart ??= this.deps.clock.now();
    const until = new Date(this.roundStart.getTime() + PREPARE_AHEAD_MS);
    const batch = repo.due(until, this.cursor, BATCH);
    if (batch.length === 0) {
      this.cursor = null;
      return false;
    }
    this.prepareBatch(batch);
    const last = batch[batch.length - 1]!;
    this.cursor = { dueAt: last.dueAt, id: last.id };
    return batch.length === BATCH;
  }

  /** Prepares the rows in one transaction; if it throws, each row alone (a bad one stays planned). */
  private prepareBatch(rows: readonly OccurrenceRow[]): void {
    const { repo, log } = this.deps;
    let outcome: BatchOutcome;
    const startedAt = this.deps.clock.now().getTime();
    try {
      outcome = repo.transaction(() => this.prepareRows(rows));
    } catch (err) {
      if (rows.length > 1) {
        log.warn(
          { err, rows: rows.length },
          'preparing a batch of occurrences failed; trying them one by one',
        );
        for (const row of rows) this.prepareBatch([row]);
        return;
      }
      this.roundFailed = true;
      log.error(
        { err, occurrenceId: rows[0]!.id, scheduleId: rows[0]!.scheduleId },
        'dispatching an occurrence failed; it stays planned and is tried again',
      );
      return;
    }
    log.debug(
      {
        rows: rows.length,
        prepared: outcome.prepared.length,
        ms: this.deps.clock.now().getTime() - startedAt,
      },
      'occurrences prepared',
    );
    for (const { occ, status, reason } of outcome.settled) {
      log.info({ occurrenceId: occ.id, scheduleId: occ.scheduleId, status, reason }, `occurrence ${status}`);
    }
    this.schedulePublish(outcome.prepared);
  }

  /**
   * Claims and writes each row (its command, deliveries, playback records and audit entry), or settles
   * it (skipped, cancelled), in the caller's transaction. Nothing is published here.
   */
  private prepareRows(rows: readonly OccurrenceRow[]): BatchOutcome {
    const { repo, clock } = this.deps;
    const now = clock.now();
    const outcome: BatchOutcome = { prepared: [], settled: [] };
    const schedulesById = repo.schedules(rows.map((r) => r.scheduleId));
    const live = [...schedulesById.values()].filter((s) => !s.deletedAt && !s.pausedAt);
    const targets = new BatchTargets(
      this.deps.targets,
      live.map((s) => s.targets),
    );
    const winners = repo.overriddenBy(rows.map((r) => r.id));
    // One link per programme and validity (the same for every occurrence of a burst: same slot end).
    const sources = new Map<string, Resolved | AppError>();
    const playSource = (programmeId: string, validUntil: Date): Resolved => {
      const key = `${programmeId} ${validUntil.getTime()}`;
      let found = sources.get(key);
      if (!found) {
        try {
          found = this.deps.programmes.playSource(SERVER, programmeId, validUntil);
        } catch (err) {
          if (!(err instanceof AppError)) throw err;
          found = err;
        }
        sources.set(key, found);
      }
      if (found instanceof AppError) throw found;
      return found;
    };

    for (const occ of rows) {
      const settle = (status: 'skipped' | 'cancelled', reason: string, also?: () => void) => {
        if (!repo.settle(occ.id, status, reason)) return;
        also?.();
        outcome.settled.push({ occ, status, reason });
      };
      const schedule = schedulesById.get(occ.scheduleId);
      if (!schedule || schedule.deletedAt) {
        settle('cancelled', 'schedule deleted');
        continue;
      }
      // Pause keeps the planned rows (the calendar shows them paused); those that come due are cancelled.
      if (schedule.pausedAt) {
        settle('cancelled', 'schedule paused');
        continue;
      }

      // It goes out at its due time, or now when that has passed (a restart, a stall).
      const publishAt = new Date(Math.max(now.getTime(), occ.dueAt.getTime()));
      const { commandId, sessionId } = occurrencePlayIds(schedule.id, occ.slotAt);
      // Devices as the targets hold them now: a loudspeaker added to the hamlet since the save hears it.
      const deviceIds = targets.resolve(schedule.targets);
      const overridden = this.overriddenDevices(winners.get(occ.id) ?? [], deviceIds, targets);
      const playing = deviceIds.filter((id) => !overridden.has(id));
      const record = {
        sessionId,
        commandId,
        priority: schedule.priority,
        dueAt: occ.startsAt,
        endsAt: occ.endsAt,
        plannedMs: occ.endsAt.getTime() - occ.startsAt.getTime(),
        scheduleId: schedule.id,
        occurrenceId: occ.id,
      };

      const skip = (reason: string, programme: { programmeId: string; revisionId: string | null }) =>
        settle('skipped', reason, () => {
          const ids = { programmeId: programme.programmeId, programmeRevisionId: programme.revisionId };
          this.openSkipped({ ...record, ...ids }, playing, reason);
          for (const [reasonForThem, them] of groupByReason(overridden)) {
            this.openSkipped({ ...record, ...ids }, them, reasonForThem);
          }
        });
      const unresolved = { programmeId: schedule.programmeId, revisionId: null };

      if (publishAt.getTime() >= occ.endsAt.getTime()) {
        skip(`the server was not running when the slot began (${slotWords(occ)})`, unresolved);
        continue;
      }
      if (deviceIds.length === 0) {
        skip('no loudspeakers in the targets', unresolved);
        continue;
      }
      if (playing.length === 0) {
        skip([...overridden.values()][0]!, unresolved);
        continue;
      }

      // The approved revision now, not when the schedule was saved: a newly approved revision airs.
      let resolved: Resolved;
      try {
        resolved = playSource(schedule.programmeId, new Date(occ.endsAt.getTime() + LINK_MARGIN_MS));
      } catch (err) {
        if (err instanceof AppError && err.code === 'not_found') {
          skip('the programme has been deleted', unresolved);
          continue;
        }
        if (err instanceof AppError && err.code === 'not_approved') {
          skip('the programme has never been approved', unresolved);
          continue;
        }
        throw err;
      }
      let source = resolved.source;
      // A relay stays on the stream as long as the schedule says; the device stops it then.
      if (source.kind === 'stream' && schedule.durationS !== null) {
        source = { ...source, durationMs: schedule.durationS * 1000 };
      }

      // Late (a restart, a stall): join where the broadcast is when it goes out. On time: start at the
      // slot, the head start (MEDIA_LEAD_S) being for the download.
      const lateMs = publishAt.getTime() - occ.startsAt.getTime();
      const startAt = lateMs > 0 ? publishAt : occ.startsAt;
      const offsetMs = Math.max(0, lateMs);
      // Claimed first: 0 rows means someone else has it, and nothing of it is written here.
      if (!repo.claim(occ.id, commandId, publishAt)) continue;
      const ids = { programmeId: resolved.programmeId, programmeRevisionId: resolved.revisionId };
      const play = this.deps.commands.preparePlay({
        id: commandId,
        sessionId,
        deviceIds: playing,
        priority: schedule.priority,
        source,
        ...(schedule.volume !== null ? { volume: schedule.volume } : {}),
        startAt,
        offsetMs,
        expiresAt: occ.endsAt,
        ...ids,
        publishAt,
        playbackRecord: {
          dueAt: record.dueAt,
          endsAt: record.endsAt,
          scheduleId: schedule.id,
          occurrenceId: occ.id,
          plannedMs: record.plannedMs,
        },
      });
      for (const [reason, them] of groupByReason(overridden)) {
        this.openSkipped({ ...record, ...ids }, them, reason);
      }
      this.deps.audit.record(
        null,
        'schedule.dispatch',
        { type: 'schedule', id: schedule.id },
        {
          occurrenceId: occ.id,
          commandId,
          slot: localDateTime(occ.slotAt),
          programmeId: resolved.programmeId,
          programmeRevisionId: resolved.revisionId,
          devices: playing.length,
          ...(overridden.size > 0 ? { overridden: overridden.size } : {}),
          ...(offsetMs > 0 ? { offsetMs } : {}),
        },
      );
      // null: the command existed already (written before a crash that left the row planned); the
      // claim catches up, and its devices have it or get it on reconnect.
      if (play) {
        outcome.prepared.push({
          play,
          occurrenceId: occ.id,
          scheduleId: schedule.id,
          dueAt: occ.dueAt,
          offsetMs,
        });
      }
    }
    return outcome;
  }

  /** Publishes the committed plays whose time has come, and arms a timer for each later instant. */
  private schedulePublish(items: readonly Waiting[]): void {
    const now = this.deps.clock.now().getTime();
    const dueNow: Waiting[] = [];
    for (const item of items) {
      if (this.waitingIds.has(item.play.id)) continue;
      const at = item.play.publishAt.getTime();
      if (at <= now) {
        dueNow.push(item);
        continue;
      }
      this.waitingIds.add(item.play.id);
      const group = this.waiting.get(at);
      if (group) group.items.push(item);
      else this.waiting.set(at, { timer: this.armPublish(at, at - now), items: [item] });
    }
    if (dueNow.length > 0) this.publish(dueNow);
  }

  private armPublish(at: number, delayMs: number): unknown {
    return this.deps.clock.setTimeout(() => {
      const group = this.waiting.get(at);
      if (!group) return;
      // A timer may fire a moment early (timers count whole milliseconds): never publish before the time.
      const left = at - this.deps.clock.now().getTime();
      if (left > 0) {
        group.timer = this.armPublish(at, left);
        return;
      }
      this.waiting.delete(at);
      for (const item of group.items) this.waitingIds.delete(item.play.id);
      this.publish(group.items);
    }, delayMs);
  }

  /** Publishes, then logs each occurrence with its lag (due → its own publish). */
  private publish(items: readonly Waiting[]): void {
    const { clock, log } = this.deps;
    // When each went out, taken right after its own publish; logged after the last one has gone.
    const published = new Map<string, { at: number; sent: number }>();
    try {
      this.deps.commands.publishPrepared(
        items.map((i) => i.play),
        (play, sent) => published.set(play.id, { at: clock.now().getTime(), sent }),
      );
    } catch (err) {
      // Committed: devices get what did not go out from deliverPending when they reconnect.
      log.error({ err, plays: items.length }, 'publishing prepared occurrences failed');
    }
    for (const item of items) {
      const done = published.get(item.play.id);
      if (!done) continue;
      const lagMs = done.at - item.dueAt.getTime();
      this.deps.onDispatched?.(lagMs);
      log.info(
        {
          occurrenceId: item.occurrenceId,
          scheduleId: item.scheduleId,
          commandId: item.play.id,
          devices: item.play.deviceIds.length,
          sent: done.sent,
          ...(item.offsetMs > 0 ? { offsetMs: item.offsetMs } : {}),
          lagMs,
        },
        'occurrence dispatched',
      );
    }
  }

  /**
   * The devices of this occurrence that give way to another schedule's occurrence (onConflict override):
   * those it shares with the winner's targets, read now like its own. Device → the reason in words.
   */
  private overriddenDevices(
    winners: readonly Winner[],
    deviceIds: readonly string[],
    targets: BatchTargets,
  ): Map<string, string> {
    const overridden = new Map<string, string>();
    if (winners.length === 0) return overridden;
    const ours = new Set(deviceIds);
    for (const winner of winners) {
      const reason = `overridden by schedule ${winner.scheduleId} («${winner.title ?? '?'}»)`;
      for (const id of targets.resolve(winner.targets)) {
        if (ours.has(id) && !overridden.has(id)) overridden.set(id, reason);
      }
    }
    return overridden;
  }

  private openSkipped(
    record: Omit<Parameters<PlaybackRecorder>[0], 'deviceIds' | 'closed'>,
    deviceIds: readonly string[],
    reason: string,
  ): void {
    if (deviceIds.length === 0) return;
    this.deps.playback.openRecords({ ...record, deviceIds, closed: { outcome: 'skipped', reason } });
  }

  /** The priority rank of a play command; null for another type or an unknown id. */
  private playRank(commandId: string): number | null {
    let rank = this.ranks.get(commandId);
    if (rank === undefined) {
      const command = this.deps.commands.findCommand(commandId);
      rank = command?.type === 'play' ? priorityRank(command.priority) : null;
      // A broadcast to 10,000 devices brings 10,000 `finished` entries naming the same command.
      if (this.ranks.size >= RANK_CACHE_SIZE) this.ranks.clear();
      this.ranks.set(commandId, rank);
    }
    return rank;
  }

  /**
   * A device logged an entry (after it was stored): if it is the end of a play above `normal`, resume the
   * newest lower-priority scheduled session it cut short (the rule is at the top of this file).
   */
  onPlaybackEntry(deviceId: string, entry: PlaybackLogEntry): void {
    const ended =
      entry.event === 'finished' ||
      entry.event === 'failed' ||
      (entry.event === 'interrupted' && entry.reason === 'stopped');
    if (!ended) return;
    const { commands, playback, clock, log } = this.deps;
    const rank = this.playRank(entry.commandId);
    if (rank === null || rank <= priorityRank('normal')) return;

    const now = clock.now();
    const session = playback.resumable(deviceId, now).find((s) => priorityRank(s.priority) < rank);
    if (!session) return;
    // Not over what was sent since: a play the device plays now (this end was reported late, from its
    // offline log), or a stop of the session itself (paused, deleted, stopped by hand meanwhile).
    if (commands.resumeOverridden(deviceId, entry.commandId, session.sessionId, session.commandId)) return;
    const original = commands.findCommand(session.commandId);
    const occ = this.deps.repo.occurrence(session.occurrenceId);
    if (!original || original.type !== 'play' || !occ) return;
    const params = original.params as PlayParams;
    // Where the broadcast is now; before the slot starts (cut short during the head start), at its start.
    const offsetMs = Math.max(0, now.getTime() - occ.startsAt.getTime());
    const length =
      params.source.durationMs === undefined ? undefined : params.source.durationMs * (params.repeat ?? 1);
    if (length !== undefined && offsetMs >= length) return;

    const id = derivedId('cmd', session.sessionId, deviceId, 'resume', now.toISOString());
    const { created } = commands.dispatchPlay({
      id,
      sessionId: session.sessionId,
      deviceIds: [deviceId],
      priority: session.priority,
      source: params.source,
      ...(params.volume !== undefined ? { volume: params.volume } : {}),
      startAt: offsetMs > 0 ? now : occ.startsAt,
      offsetMs,
      expiresAt: session.endsAt,
      programmeId: original.programmeId,
      programmeRevisionId: original.programmeRevisionId,
      playbackRecord: null,
      also: () =>
        this.deps.audit.record(
          null,
          'schedule.resume_play',
          { type: 'schedule', id: session.scheduleId },
          {
            occurrenceId: session.occurrenceId,
            sessionId: session.sessionId,
            commandId: id,
            deviceId,
            after: entry.commandId,
            offsetMs,
          },
        ),
    });
    if (created) {
      log.info(
        { deviceId, sessionId: session.sessionId, commandId: id, after: entry.commandId, offsetMs },
        'occurrence resumed',
      );
    }
  }
}

function groupByReason(devices: ReadonlyMap<string, string>): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const [id, reason] of devices) {
    const group = groups.get(reason);
    if (group) group.push(id);
    else groups.set(reason, [id]);
  }
  return groups;
}

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}
