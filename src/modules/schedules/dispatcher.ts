/**
 * The durable dispatcher: sends each planned occurrence of a schedule once, when it is due.
 *
 * SQLite is the truth, not timers: a `planned` row of schedule_occurrences whose due_at has come is claimed
 * (UPDATE … WHERE status = 'planned') in the same transaction that creates its play command and opens its
 * playback records, and the command's id is derived from (schedule, slot). So:
 *
 * - a crash before that transaction commits leaves the row planned, and the next run sends the same
 *   command id (devices that somehow had it ignore it: they de-duplicate by id);
 * - a crash after the commit but before the publish loses nothing either: the deliveries are in the
 *   database, and devices, which reconnect after a server restart, are sent the play by
 *   CommandsService.deliverPending at the position the broadcast has reached (resendPayload).
 *
 * The one timer in memory is only a wake-up: armed for the earliest due row, never waiting more than
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
import { and, asc, eq, lte, min, sql } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import {
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
import type { CommandsService, PlaybackRecorder } from '../commands/commands.service.js';
import type { PlaybackService } from '../playback/playback.service.js';
import type { ProgrammesService } from '../programmes/programmes.service.js';
import { resolveTargetDevices, type TargetDeps } from './targets.js';
import { localDateTime } from './timing.js';

/** The longest the dispatcher sleeps: a planned row nobody woke it for is seen within this. */
export const MAX_WAIT_MS = 60_000;
/** Rows read per query, and handled per turn of the event loop before it yields to MQTT and HTTP. */
const BATCH = 100;
const PER_TURN = 500;
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

/** What the dispatcher uses of the playback log. */
export type DispatcherPlayback = Pick<PlaybackService, 'openRecords' | 'resumable'>;

export class DispatcherRepository {
  constructor(private readonly db: Db) {}

  transaction<T>(fn: () => T): T {
    return this.db.transaction(() => fn());
  }

  /** Planned rows due at `now`, oldest first, after `cursor` (the last row of the previous batch). */
  due(now: Date, cursor: { dueAt: Date; id: number } | null, limit: number): OccurrenceRow[] {
    const after = cursor
      ? sql`(${scheduleOccurrences.dueAt}, ${scheduleOccurrences.id}) > (${cursor.dueAt.getTime()}, ${cursor.id})`
      : undefined;
    return this.db
      .select()
      .from(scheduleOccurrences)
      .where(and(eq(scheduleOccurrences.status, 'planned'), lte(scheduleOccurrences.dueAt, now), after))
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

  /** The schedule, deleted or not. */
  schedule(id: string): ScheduleRow | undefined {
    return this.db.select().from(schedules).where(eq(schedules.id, id)).get();
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

  /** The occurrences this one gives way to (onConflict override), with their schedule's targets and title. */
  overriddenBy(
    occurrenceId: number,
  ): { scheduleId: string; targets: ScheduleTargets; title: string | null }[] {
    return this.db
      .select({ scheduleId: schedules.id, targets: schedules.targets, title: programmes.title })
      .from(occurrenceOverrides)
      .innerJoin(scheduleOccurrences, eq(occurrenceOverrides.byOccurrenceId, scheduleOccurrences.id))
      .innerJoin(schedules, eq(scheduleOccurrences.scheduleId, schedules.id))
      .leftJoin(programmes, eq(schedules.programmeId, programmes.id))
      .where(eq(occurrenceOverrides.occurrenceId, occurrenceId))
      .orderBy(asc(occurrenceOverrides.byOccurrenceId))
      .all();
  }
}

export interface DispatcherDeps {
  repo: DispatcherRepository;
  commands: Pick<CommandsService, 'dispatchPlay' | 'findCommand'>;
  programmes: Pick<ProgrammesService, 'playSource'>;
  playback: DispatcherPlayback;
  targets: TargetDeps;
  audit: Pick<AuditService, 'record'>;
  clock: Clock;
  log: FastifyBaseLogger;
  /** Each dispatch's lag, due → published (metrics). */
  onDispatched?: (lagMs: number) => void;
}

/** The occurrence was claimed by someone else between reading and claiming it: nothing to do. */
class AlreadyClaimed extends Error {}

/** "06:00–06:05" in Vietnamese wall-clock time. */
function slotWords(occ: OccurrenceRow): string {
  const hhmm = (d: Date) => localDateTime(d).slice(11, 16);
  return `${hhmm(occ.startsAt)}–${hhmm(occ.endsAt)}`;
}

export class Dispatcher {
  private timer: unknown = null;
  private running = false;
  /** Where a round that yielded to the event loop goes on from. */
  private cursor: { dueAt: Date; id: number } | null = null;
  private roundStart: Date | null = null;
  private roundFailed = false;
  private readonly ranks = new Map<string, number | null>();

  constructor(private readonly deps: DispatcherDeps) {}

  /** Sends what is due now (after a restart: everything overdue), then keeps watching. */
  start(): void {
    this.running = true;
    this.fire();
  }

  stop(): void {
    this.running = false;
    this.clearTimer();
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
        wait = next === undefined ? MAX_WAIT_MS : next.getTime() - this.deps.clock.now().getTime();
      } catch (err) {
        this.deps.log.error({ err }, 'cannot read the next due occurrence; will try again');
        wait = RETRY_MS;
      }
    }
    this.timer = this.deps.clock.setTimeout(() => this.fire(), Math.min(MAX_WAIT_MS, Math.max(0, wait)));
  }

  private fire(): void {
    this.timer = null;
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

  /**
   * Handles up to PER_TURN due rows, oldest first; true when the round is not finished (the rest is done
   * after the event loop has served MQTT and HTTP). Rows that fail are passed over until the next round.
   */
  private runTurn(): boolean {
    const { repo, log } = this.deps;
    this.roundStart ??= this.deps.clock.now();
    let handled = 0;
    for (;;) {
      const batch = repo.due(this.roundStart, this.cursor, BATCH);
      if (batch.length === 0) {
        this.cursor = null;
        return false;
      }
      for (const occ of batch) {
        try {
          this.dispatch(occ);
        } catch (err) {
          this.roundFailed = true;
          log.error(
            { err, occurrenceId: occ.id, scheduleId: occ.scheduleId },
            'dispatching an occurrence failed; it stays planned and is tried again',
          );
        }
      }
      const last = batch[batch.length - 1]!;
      this.cursor = { dueAt: last.dueAt, id: last.id };
      handled += batch.length;
      if (handled >= PER_TURN) return true;
    }
  }

  /** Sends, skips or cancels one due occurrence. */
  private dispatch(occ: OccurrenceRow): void {
    const { repo, clock, log } = this.deps;
    const schedule = repo.schedule(occ.scheduleId);
    if (!schedule || schedule.deletedAt) return this.close(occ, 'cancelled', 'schedule deleted');
    // Pause keeps the planned rows (the calendar shows them paused); those that come due are cancelled.
    if (schedule.pausedAt) return this.close(occ, 'cancelled', 'schedule paused');

    const now = clock.now();
    const slot = occ.slotAt.toISOString();
    const commandId = derivedId('cmd', schedule.id, slot);
    const sessionId = derivedId('ses', schedule.id, slot);
    // Devices as the targets hold them now: a loudspeaker added to the hamlet since the save hears it.
    const deviceIds = resolveTargetDevices(this.deps.targets, schedule.targets);
    const overridden = this.overriddenDevices(occ.id, deviceIds);
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
      this.close(occ, 'skipped', reason, () => {
        const ids = { programmeId: programme.programmeId, programmeRevisionId: programme.revisionId };
        this.openSkipped({ ...record, ...ids }, playing, reason);
        for (const [reasonForThem, them] of groupByReason(overridden)) {
          this.openSkipped({ ...record, ...ids }, them, reasonForThem);
        }
      });
    const unresolved = { programmeId: schedule.programmeId, revisionId: null };

    if (now.getTime() >= occ.endsAt.getTime()) {
      return skip(`the server was not running when the slot began (${slotWords(occ)})`, unresolved);
    }
    if (deviceIds.length === 0) return skip('no loudspeakers in the targets', unresolved);
    if (playing.length === 0) return skip([...overridden.values()][0]!, unresolved);

    // The approved revision now, not when the schedule was saved: a newly approved revision airs.
    let resolved: { source: PlaySource; programmeId: string; revisionId: string };
    try {
      resolved = this.deps.programmes.playSource(
        SERVER,
        schedule.programmeId,
        new Date(occ.endsAt.getTime() + LINK_MARGIN_MS),
      );
    } catch (err) {
      if (err instanceof AppError && err.code === 'not_found') {
        return skip('the programme has been deleted', unresolved);
      }
      if (err instanceof AppError && err.code === 'not_approved') {
        return skip('the programme has never been approved', unresolved);
      }
      throw err;
    }
    let source = resolved.source;
    // A relay stays on the stream as long as the schedule says; the device stops it then.
    if (source.kind === 'stream' && schedule.durationS !== null) {
      source = { ...source, durationMs: schedule.durationS * 1000 };
    }

    // Late (a restart, a stall): join where the broadcast now is. On time: start at the slot, the head
    // start (MEDIA_LEAD_S) being for the download.
    const lateMs = now.getTime() - occ.startsAt.getTime();
    const startAt = lateMs > 0 ? now : occ.startsAt;
    const offsetMs = Math.max(0, lateMs);
    let result: { created: boolean; sent: number };
    try {
      result = this.deps.commands.dispatchPlay({
        id: commandId,
        sessionId,
        deviceIds: playing,
        priority: schedule.priority,
        source,
        ...(schedule.volume !== null ? { volume: schedule.volume } : {}),
        startAt,
        offsetMs,
        expiresAt: occ.endsAt,
        programmeId: resolved.programmeId,
        programmeRevisionId: resolved.revisionId,
        playbackRecord: {
          dueAt: record.dueAt,
          endsAt: record.endsAt,
          scheduleId: schedule.id,
          occurrenceId: occ.id,
          plannedMs: record.plannedMs,
        },
        also: () => {
          if (!repo.claim(occ.id, commandId, now)) throw new AlreadyClaimed();
          const ids = { programmeId: resolved.programmeId, programmeRevisionId: resolved.revisionId };
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
        },
      });
    } catch (err) {
      if (err instanceof AlreadyClaimed) return;
      throw err;
    }
    const lagMs = clock.now().getTime() - occ.dueAt.getTime();
    this.deps.onDispatched?.(lagMs);
    log.info(
      {
        occurrenceId: occ.id,
        scheduleId: schedule.id,
        commandId,
        devices: playing.length,
        sent: result.sent,
        ...(offsetMs > 0 ? { offsetMs } : {}),
        lagMs,
      },
      'occurrence dispatched',
    );
  }

  /**
   * The devices of this occurrence that give way to another schedule's occurrence (onConflict override):
   * those it shares with the winner's targets, read now like its own. Device → the reason in words.
   */
  private overriddenDevices(occurrenceId: number, deviceIds: readonly string[]): Map<string, string> {
    const overridden = new Map<string, string>();
    const winners = this.deps.repo.overriddenBy(occurrenceId);
    if (winners.length === 0) return overridden;
    const ours = new Set(deviceIds);
    for (const winner of winners) {
      const reason = `overridden by schedule ${winner.scheduleId} («${winner.title ?? '?'}»)`;
      for (const id of resolveTargetDevices(this.deps.targets, winner.targets)) {
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

  /** Settles a due row without sending it, with `also` (its playback records) in the same transaction. */
  private close(
    occ: OccurrenceRow,
    status: 'skipped' | 'cancelled',
    reason: string,
    also?: () => void,
  ): void {
    const settled = this.deps.repo.transaction(() => {
      if (!this.deps.repo.settle(occ.id, status, reason)) return false;
      also?.();
      return true;
    });
    if (settled) {
      this.deps.log.info(
        { occurrenceId: occ.id, scheduleId: occ.scheduleId, status, reason },
        `occurrence ${status}`,
      );
    }
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
