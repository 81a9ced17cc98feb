import type { FastifyBaseLogger } from 'fastify';
import { DELIVERY_STATUSES, type CommandRow, type DeliveryStatus, type Role } from '../../db/schema/index.js';
import { BatchWriter } from '../../db/batch-writer.js';
import { AppError, forbidden, notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { newId } from '../../lib/ids.js';
import type { Actor } from '../../lib/scope.js';
import { LINK_MARGIN_MS } from '../../media/links.js';
import {
  priorityRank,
  type Ack,
  type Command,
  type CommandType,
  type PlaySource,
  type Priority,
} from '../../protocol/index.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { DevicesService } from '../devices/devices.service.js';
import type { OpenRecordsInput } from '../playback/playback.service.js';
import type { Metrics } from '../../plugins/metrics.js';
import type {
  AckUpdate,
  CommandsRepository,
  DeviceCommand,
  ResendCloseReason,
} from './commands.repository.js';
import {
  DEFAULT_EXPIRY_S,
  type CommandDetail,
  type CommandSummary,
  type CreateCommandInput,
} from './commands.schemas.js';

/** What the commands service needs from the broker. */
export interface CommandPublisher {
  isReady(deviceId: string): boolean;
  /** Publishes to each ready device; returns the ids it went to. */
  publishCommand(deviceIds: Iterable<string>, payload: Buffer): string[];
}

/**
 * Turns `source.kind = "programme"` into what devices play (src/modules/programmes): the approved revision's
 * rendered file behind a download link valid until `validUntil`, or its relay's stream. Throws not_found for
 * a programme the actor cannot see and not_approved for one never approved.
 */
export type ProgrammeSourceResolver = (
  actor: Actor,
  programmeId: string,
  validUntil: Date,
) => { source: PlaySource; programmeId: string; revisionId: string };

/**
 * Opens the playback log records of a play (src/modules/playback, PlaybackService.openRecords): one per
 * target device, written in the transaction that creates the command, so no play is ever sent without the
 * record that will say what became of it.
 */
export type PlaybackRecorder = (input: OpenRecordsInput) => void;

/** A play the server sends itself (see CommandsService.dispatchPlay). */
export interface DispatchPlayInput {
  id: string;
  sessionId: string;
  deviceIds: readonly string[];
  priority: Priority;
  source: PlaySource;
  volume?: number;
  /**
   * When the device should be at `offsetMs`: the slot start, or now for a late join or a resume. Absent:
   * play on receipt, from the start (an emergency: no device may skip the attention signal).
   */
  startAt?: Date;
  offsetMs?: number;
  /** Plays in all, and the silence between two (an emergency's repeats). */
  repeat?: number;
  repeatGapMs?: number;
  expiresAt: Date;
  programmeId: string | null;
  programmeRevisionId: string | null;
  /** The emergency it airs: heard whole on re-sends (resendPayload), labelled in the playback log. */
  emergency?: { id: string; title: string; exercise: boolean };
  /** The user who sent it (an emergency's sender); null for the server's own plays. */
  createdBy?: string | null;
  /** null for a resume: it continues the record its session already has. */
  playbackRecord: {
    dueAt: Date;
    endsAt: Date;
    scheduleId: string | null;
    occurrenceId: number | null;
    plannedMs: number | null;
  } | null;
  /** Runs inside the transaction that inserts the command (claim the occurrence, audit); throwing aborts. */
  also?: () => void;
}

/** A play prepared ahead (CommandsService.preparePlay): written, not yet published. */
export interface PreparedPlay {
  id: string;
  priority: Priority;
  /** Its targets; it goes to those ready when it is published, the others get it on reconnect. */
  deviceIds: readonly string[];
  /** When it goes out: the command's createdAt, its wire `issuedAt`. */
  publishAt: Date;
  /** The wire form, built once. */
  payload: Buffer;
}

/** The counters the commands service feeds (src/plugins/metrics.ts). */
export type CommandMetrics = Pick<
  Metrics,
  'commandSent' | 'ackRecorded' | 'batchWriteRetried' | 'batchWriteDropped' | 'deviceEventFailed'
>;

/** Who may send what. Playing content is for those who run programming; stop and volume also for technicians. */
const ROLES_FOR_TYPE: Record<CommandType, readonly Role[]> = {
  play: ['admin', 'district_operator', 'broadcaster'],
  stop: ['admin', 'district_operator', 'broadcaster', 'technician'],
  volume: ['admin', 'district_operator', 'broadcaster', 'technician'],
  // Maintenance is the technicians' business.
  reboot: ['admin', 'technician'],
  ping: ['admin', 'technician'],
  identify: ['admin', 'technician'],
};
/** Who may play an explicit media or stream source instead of an approved programme. */
const RAW_SOURCE_ROLES: readonly Role[] = ['admin', 'district_operator'];

/**
 * Only district staff (and admins) may pre-empt everything with an emergency. This also decides who may
 * end or change one: devices refuse (`lower_priority`) a stop or volume below the priority of what plays,
 * so a technician's or broadcaster's stop cannot silence an emergency broadcast.
 */
const ROLES_FOR_PRIORITY: Record<Priority, readonly Role[]> = {
  normal: ROLES_FOR_TYPE.stop,
  priority: ROLES_FOR_TYPE.stop,
  emergency: ['admin', 'district_operator'],
};

const FINAL = new Set<DeliveryStatus>(['done', 'failed', 'rejected']);

/**
 * When a re-send on reconnect failed, the wait before its one retry: a few seconds, so a busy database has
 * had time to settle, and spread over as much again, so that a province reconnecting after a power cut
 * does not retry all at the same moment.
 */
export const RESEND_RETRY_MS = 5_000;

/** The command as it goes on the wire (protocol.md `cmd`). */
export function toWire(row: CommandRow): Command {
  return {
    id: row.id,
    type: row.type,
    issuedAt: row.createdAt.toISOString(),
    expiresAt: row.expiresAt.toISOString(),
    priority: row.priority,
    params: row.params,
  } as Command;
}

/**
 * How a command is sent again when a device (re)subscribes. A play joins the broadcast where it now is,
 * so a cluster that rejoins plays in step with the others. The broadcast's clock starts at `startAt` when
 * the play has one (a schedule's occurrence: its slot start, or the moment a late one was sent), else when
 * the command was created; the position is the time since then plus the offset it started at.
 *
 * - Before `startAt` the play goes out unchanged: the device fetches the file and waits for the start.
 * - After it, `offsetMs` is the position and `startAt` now, so a device that honours `startAt` and one
 *   that plays on receipt both land at the same place (a stale `startAt` would count the wait twice).
 * - A play whose content (duration × repeats) has ended is not sent at all. A stream without a duration has
 *   no position to join at and no end, so it goes out as it was.
 */
export function resendPayload(row: CommandRow, now: Date, answered = false): Command | 'ended' {
  const wire = toWire(row);
  if (wire.type !== 'play') return wire;
  if (row.emergencyId !== null) return emergencyResend(wire, row.createdAt, now, answered);
  const { source, repeat, offsetMs, startAt } = wire.params;
  if (source.durationMs === undefined) return wire;
  const clockStart = startAt === undefined ? row.createdAt.getTime() : Date.parse(startAt);
  if (startAt !== undefined && now.getTime() < clockStart) return wire;
  const position = (offsetMs ?? 0) + Math.max(0, now.getTime() - clockStart);
  if (position >= source.durationMs * (repeat ?? 1)) return 'ended';
  return {
    ...wire,
    params: {
      ...wire.params,
      offsetMs: position,
      ...(startAt === undefined ? {} : { startAt: now.toISOString() }),
    },
  };
}

/**
 * An emergency is heard whole: a device that comes back before the expiry and never played it plays the
 * message from the start (joining a warning mid-sentence tells nobody anything), with the repeats still
 * due: those whose start is still ahead, plus the one under way. Past the last repeat it still plays once.
 * A device that answered `done` (it played, then rebooted or lost its link) is sent it again only while
 * the repeats run: one that played it in full does not sound the warning a second time.
 */
function emergencyResend(
  wire: Extract<Command, { type: 'play' }>,
  createdAt: Date,
  now: Date,
  answered: boolean,
): Command | 'ended' {
  const { source, repeat = 1, repeatGapMs = 0 } = wire.params;
  const { offsetMs: _offset, startAt: _startAt, ...params } = wire.params;
  if (source.durationMs === undefined) return wire;
  const cycleMs = source.durationMs + repeatGapMs;
  const elapsed = Math.max(0, now.getTime() - createdAt.getTime());
  const begun = Math.floor(elapsed / cycleMs);
  if (answered && elapsed >= cycleMs * repeat - repeatGapMs) return 'ended';
  return { ...wire, params: { ...params, repeat: Math.max(1, repeat - begun) } };
}

/**
 * Whether `later`, sent after `play`, ends it: a stop of that session or of whatever plays, or another
 * play, at no lower priority (a device refuses lower ones while the play runs, protocol rule 4).
 */
function endsPlay(later: Command, play: Extract<Command, { type: 'play' }>): 'stopped' | 'replaced' | null {
  if (priorityRank(later.priority) < priorityRank(play.priority)) return null;
  if (later.type === 'play') return 'replaced';
  if (later.type === 'stop') {
    const sessionId = later.params.sessionId;
    if (sessionId === undefined || sessionId === play.params.sessionId) return 'stopped';
  }
  return null;
}

export interface ResendPlan {
  /** In the order to publish: oldest first. */
  send: (DeviceCommand & { payload: Command })[];
  /** Deliveries to close instead of sending; `done` ones are never among them. */
  closed: { commandId: string; reason: ResendCloseReason }[];
}

/**
 * What a device that has just subscribed must be sent so that it does what it should be doing now:
 *
 * - every unexpired command it has not answered finally (`pending`: it was away; `received`: its final
 *   ack may be lost, and asked again it answers with it, protocol rule 2);
 * - and its plays that still run, even those it answered `done`: a device that rebooted or lost power
 *   plays them again from `offsetMs`, one that kept playing through a link flap answers `done` again.
 *
 * A play is not sent when its content has ended (resendPayload), or when a later command of at least its
 * priority stopped or replaced it (`later`: the device's commands since, oldest first, refused and failed
 * ones left out). A lower one does not count: the device refuses it while the play runs. Sending such a
 * play, even oldest first with the stop behind it, would sound a stopped warning for a moment.
 */
export function planResend(
  candidates: readonly DeviceCommand[],
  later: readonly DeviceCommand[],
  now: Date,
): ResendPlan {
  const plan: ResendPlan = { send: [], closed: [] };
  const isAfter = (x: DeviceCommand, y: DeviceCommand) =>
    x.command.createdAt.getTime() > y.command.createdAt.getTime() ||
    (x.command.createdAt.getTime() === y.command.createdAt.getTime() && x.seq > y.seq);
  for (const candidate of candidates) {
    const wire = toWire(candidate.command);
    const answered = candidate.status === 'done';
    if (wire.type !== 'play') {
      // A stop, volume or maintenance command carried out is not carried out again.
      if (!answered) plan.send.push({ ...candidate, payload: wire });
      continue;
    }
    // Content that has run out is `ended`, whatever came after it.
    let payload: Command | ResendCloseReason = resendPayload(candidate.command, now, answered);
    for (const next of typeof payload === 'string' ? [] : later) {
      if (next.command.id === candidate.command.id || !isAfter(next, candidate)) continue;
      const endedBy = endsPlay(toWire(next.command), wire);
      if (endedBy) {
        payload = endedBy;
        break;
      }
    }
    if (typeof payload !== 'string') plan.send.push({ ...candidate, payload });
    else if (!answered) plan.closed.push({ commandId: candidate.command.id, reason: payload });
  }
  return plan;
}

/** The row of a play the server sends itself (dispatchPlay, preparePlay), issued at `createdAt`. */
function serverPlayRow(input: Omit<DispatchPlayInput, 'also'>, createdAt: Date): CommandRow {
  return {
    id: input.id,
    type: 'play',
    priority: input.priority,
    params: {
      sessionId: input.sessionId,
      source: input.source,
      ...(input.offsetMs ? { offsetMs: input.offsetMs } : {}),
      ...(input.startAt ? { startAt: input.startAt.toISOString() } : {}),
      ...(input.volume !== undefined ? { volume: input.volume } : {}),
      ...(input.repeat !== undefined && input.repeat > 1 ? { repeat: input.repeat } : {}),
      ...(input.repeatGapMs ? { repeatGapMs: input.repeatGapMs } : {}),
    },
    createdBy: input.createdBy ?? null,
    createdAt,
    expiresAt: input.expiresAt,
    targetCount: input.deviceIds.length,
    programmeId: input.programmeId,
    programmeRevisionId: input.programmeRevisionId,
    emergencyId: input.emergency?.id ?? null,
  };
}

function summary(row: CommandRow, username: string | null): CommandSummary {
  return {
    id: row.id,
    type: row.type,
    priority: row.priority,
    params: row.params as Record<string, unknown>,
    // null: sent by the server itself, or by a user since deleted (the audit log names them).
    createdBy: row.createdBy && username ? { id: row.createdBy, username } : null,
    createdAt: row.createdAt.toISOString(),
    expiresAt: row.expiresAt.toISOString(),
    targets: row.targetCount,
  };
}

export class CommandsService {
  private readonly ackWriter: BatchWriter<AckUpdate>;
  /** Re-sends that failed and wait for their retry, per device. */
  private readonly resendRetries = new Map<string, unknown>();

  constructor(
    private readonly repo: CommandsRepository,
    private readonly devices: Pick<DevicesService, 'requireActionableMany' | 'idsInSubtrees'>,
    private readonly areas: AreasService,
    private readonly audit: AuditService,
    private readonly publisher: CommandPublisher,
    private readonly metrics: CommandMetrics,
    private readonly clock: Clock,
    private readonly log: FastifyBaseLogger,
    private readonly programmes: ProgrammeSourceResolver | null = null,
    private readonly openRecords: PlaybackRecorder | null = null,
  ) {
    this.ackWriter = new BatchWriter(
      (acks) => {
        for (const { ack, sentAt } of repo.applyAcks(acks)) {
          this.metrics.ackRecorded(ack.status, sentAt ? ack.at.getTime() - sentAt.getTime() : null);
        }
      },
      (err, acks) => {
        log.error({ err, count: acks.length }, 'failed to store acks; dropped after the last attempt');
        this.metrics.batchWriteDropped('acks', acks.length);
      },
      {
        onRetry: (err, acks, attempt, delayMs) => {
          log.warn({ err, count: acks.length, attempt, delayMs }, 'failed to store acks; will retry');
          this.metrics.batchWriteRetried('acks');
        },
        onOverflow: () => this.metrics.batchWriteDropped('acks', 1),
        onOverflowWarning: (dropped) =>
          log.warn({ dropped }, 'ack queue full while the database refuses writes; acks dropped'),
      },
    );
  }

  create(actor: Actor, input: CreateCommandInput) {
    if (!ROLES_FOR_TYPE[input.type].includes(actor.role)) {
      throw forbidden(`Your role (${actor.role}) cannot send ${input.type} commands`);
    }
    if (!ROLES_FOR_PRIORITY[input.priority].includes(actor.role)) {
      throw forbidden(`Your role (${actor.role}) cannot send ${input.priority} commands`);
    }
    const targetIds = this.resolveTargets(actor, input.targets);

    const now = this.clock.now();
    const expiresAt = new Date(now.getTime() + (input.expiresInS ?? DEFAULT_EXPIRY_S[input.type]) * 1000);
    // The server names the playback session so that a later stop can address exactly this broadcast.
    let params: CommandRow['params'] = input.params;
    let programme: { programmeId: string; revisionId: string } | null = null;
    if (input.type === 'play') {
      const { source: given, ...rest } = input.params;
      let source: PlaySource;
      if (given.kind === 'programme') {
        if (!this.programmes) throw new Error('no programme resolver is wired into CommandsService');
        // The link outlives the command a little, so a device that starts late can still finish downloading.
        const resolved = this.programmes(
          actor,
          given.programmeId,
          new Date(expiresAt.getTime() + LINK_MARGIN_MS),
        );
        source = resolved.source;
        programme = { programmeId: resolved.programmeId, revisionId: resolved.revisionId };
      } else {
        // Nothing a commune broadcaster prepares airs before a second person approved it, and a raw URL would
        // skip that: raw sources are for admins and district staff (who approve, and push emergencies).
        if (!RAW_SOURCE_ROLES.includes(actor.role)) {
          throw forbidden(
            `Your role (${actor.role}) plays approved programmes only: use source.kind "programme" ` +
              `instead of "${given.kind}"`,
          );
        }
        source = given;
      }
      params = { sessionId: newId('ses'), ...rest, source };
    }
    const row: CommandRow = {
      id: newId('cmd'),
      type: input.type,
      priority: input.priority,
      params,
      createdBy: actor.id,
      createdAt: now,
      expiresAt,
      targetCount: targetIds.length,
      programmeId: programme?.programmeId ?? null,
      programmeRevisionId: programme?.revisionId ?? null,
      emergencyId: null,
    };
    // Everything from here to the publish is synchronous, so a device cannot become ready in between:
    // one that is ready now is sent the command below, any other gets it from deliverPending() later.
    const ready = targetIds.filter((id) => this.publisher.isReady(id));
    const readySet = new Set(ready);
    this.repo.insert(
      row,
      targetIds.map((deviceId) => ({ deviceId, sentAt: readySet.has(deviceId) ? now : null })),
      () => {
        if (row.type === 'play') this.openPlayRecords(row, targetIds, null);
        this.audit.record(
          actor,
          'command.create',
          { type: 'command', id: row.id },
          {
            type: row.type,
            priority: row.priority,
            params,
            targets: input.targets,
            targetCount: targetIds.length,
          },
        );
      },
    );
    const sent = this.publisher.publishCommand(ready, Buffer.from(JSON.stringify(toWire(row))));
    this.metrics.commandSent(row.type, row.priority, targetIds.length);
    this.log.info(
      {
        commandId: row.id,
        type: row.type,
        priority: row.priority,
        targets: targetIds.length,
        sent: sent.length,
        by: actor.username,
      },
      'command sent',
    );
    return { id: row.id, targets: targetIds.length, sent: sent.length, expiresAt: expiresAt.toISOString() };
  }

  /**
   * A play the server sends itself: a schedule's occurrence, or a resume after pre-emption. No actor: the
   * scope was checked when the schedule was saved. Idempotent by id: when a command with this id exists
   * (the same occurrence dispatched before a crash), it is left as it is and nothing is published
   * (created=false); `also` still runs, so that a caller whose bookkeeping lags behind catches up.
   * The command, its deliveries, its playback records and whatever `also` writes commit together.
   */
  dispatchPlay(input: DispatchPlayInput): { created: boolean; sent: number } {
    const now = this.clock.now();
    const row = serverPlayRow(input, now);
    // Synchronous from here to the publish, as in create().
    const ready = input.deviceIds.filter((id) => this.publisher.isReady(id));
    const readySet = new Set(ready);
    const created = this.repo.insertOnce(
      row,
      input.deviceIds.map((deviceId) => ({ deviceId, sentAt: readySet.has(deviceId) ? now : null })),
      (inserted) => {
        if (inserted && input.playbackRecord) {
          this.openPlayRecords(row, input.deviceIds, input.playbackRecord, input.emergency);
        }
        input.also?.();
      },
    );
    if (!created) return { created: false, sent: 0 };
    const sent = this.publisher.publishCommand(ready, Buffer.from(JSON.stringify(toWire(row))));
    this.metrics.commandSent(row.type, row.priority, input.deviceIds.length);
    this.log.info(
      {
        commandId: row.id,
        type: row.type,
        priority: row.priority,
        targets: input.deviceIds.length,
        sent: sent.length,
        by: null,
      },
      'command sent',
    );
    return { created: true, sent: sent.length };
  }

  /**
   * dispatchPlay split in two, for plays written some seconds before they go out (a schedule's
   * occurrences, src/modules/schedules/dispatcher.ts): this writes the command, its deliveries (not sent)
   * and its playback records in the CALLER's transaction (with whatever else must commit with them: the
   * claim of the occurrence), and publishes nothing; publishPrepared() publishes at `publishAt`.
   *
   * The command is created AT `publishAt` (createdAt = wire issuedAt), and until that instant
   * deliverPending leaves it out: a device that connects in between is not sent it early, and gets it
   * from the publish. After a crash in between, a restarted server finds it with unpublished() and
   * publishes it at its time; a device that reconnects after `publishAt` gets it from deliverPending. So
   * it goes out once, on time, whether or not the server survives the wait.
   *
   * Idempotent by id: null when a command with this id exists (nothing is written).
   */
  preparePlay(input: Omit<DispatchPlayInput, 'also'> & { publishAt: Date }): PreparedPlay | null {
    const row = serverPlayRow(input, input.publishAt);
    if (!this.repo.insertPrepared(row, input.deviceIds)) return null;
    if (input.playbackRecord) this.openPlayRecords(row, input.deviceIds, input.playbackRecord);
    return this.prepared(row, input.deviceIds);
  }

  private prepared(row: CommandRow, deviceIds: readonly string[]): PreparedPlay {
    return {
      id: row.id,
      priority: row.priority,
      deviceIds,
      publishAt: row.createdAt,
      payload: Buffer.from(JSON.stringify(toWire(row))),
    };
  }

  /**
   * Publishes prepared plays (their time has come) to their ready devices, one after the other with
   * nothing else in between (the last of 2,000 goes out a few ms after the first); `onPublished` hears of
   * each right after its publish. Then records when they were sent, in one transaction: if that fails the
   * plays are out all the same, their deliveries only lack sentAt.
   */
  publishPrepared(
    plays: readonly PreparedPlay[],
    onPublished?: (play: PreparedPlay, sent: number) => void,
  ): void {
    const at = this.clock.now();
    const sent: { commandId: string; deviceId: string }[] = [];
    for (const play of plays) {
      const to = this.publisher.publishCommand(play.deviceIds, play.payload);
      onPublished?.(play, to.length);
      for (const deviceId of to) sent.push({ commandId: play.id, deviceId });
    }
    for (const play of plays) this.metrics.commandSent('play', play.priority, play.deviceIds.length);
    try {
      this.repo.markSent(sent, at);
    } catch (err) {
      this.log.error({ err, deliveries: sent.length }, 'could not record when prepared plays were sent');
    }
  }

  /** Withdraws prepared plays that have not gone out yet (see CommandsRepository.withdraw). */
  withdrawPrepared(commandIds: readonly string[], reason: string): string[] {
    return this.repo.withdraw(commandIds, this.clock.now(), reason);
  }

  /**
   * Plays prepared for an instant still ahead of `now` (see preparePlay): after a restart, what must
   * still be published on time.
   */
  unpublished(now: Date): PreparedPlay[] {
    return this.repo.unpublished(now).map((r) => this.prepared(r.command, r.deviceIds));
  }

  /**
   * The playback records of a play, in the caller's transaction. A manual play's session runs from its
   * creation to its expiry, and should air its content in full (duration × repeats; a stream without a
   * duration has no planned length).
   */
  private openPlayRecords(
    row: CommandRow,
    deviceIds: readonly string[],
    scheduled: DispatchPlayInput['playbackRecord'],
    emergency?: DispatchPlayInput['emergency'],
  ): void {
    if (!this.openRecords) return;
    const params = row.params as Extract<Command, { type: 'play' }>['params'];
    const { durationMs } = params.source;
    this.openRecords({
      sessionId: params.sessionId,
      commandId: row.id,
      deviceIds,
      priority: row.priority,
      dueAt: scheduled?.dueAt ?? row.createdAt,
      endsAt: scheduled?.endsAt ?? row.expiresAt,
      plannedMs: scheduled
        ? scheduled.plannedMs
        : durationMs === undefined
          ? null
          : durationMs * (params.repeat ?? 1),
      programmeId: row.programmeId,
      programmeRevisionId: row.programmeRevisionId,
      scheduleId: scheduled?.scheduleId ?? null,
      occurrenceId: scheduled?.occurrenceId ?? null,
      emergency,
    });
  }

  /**
   * A stop the server sends in someone's name (an emergency's cancel): like dispatchPlay, written with
   * its deliveries and whatever `also` writes in one transaction, then published to the ready devices.
   */
  dispatchStop(input: {
    id: string;
    deviceIds: readonly string[];
    priority: Priority;
    sessionId?: string;
    expiresAt: Date;
    createdBy: string | null;
    emergencyId: string | null;
    also?: () => void;
  }): { sent: number } {
    const now = this.clock.now();
    const row: CommandRow = {
      id: input.id,
      type: 'stop',
      priority: input.priority,
      params: input.sessionId === undefined ? {} : { sessionId: input.sessionId },
      createdBy: input.createdBy,
      createdAt: now,
      expiresAt: input.expiresAt,
      targetCount: input.deviceIds.length,
      programmeId: null,
      programmeRevisionId: null,
      emergencyId: input.emergencyId,
    };
    const ready = input.deviceIds.filter((id) => this.publisher.isReady(id));
    const readySet = new Set(ready);
    this.repo.insert(
      row,
      input.deviceIds.map((deviceId) => ({ deviceId, sentAt: readySet.has(deviceId) ? now : null })),
      () => input.also?.(),
    );
    const sent = this.publisher.publishCommand(ready, Buffer.from(JSON.stringify(toWire(row))));
    this.metrics.commandSent('stop', row.priority, input.deviceIds.length);
    return { sent: sent.length };
  }

  /**
   * Sends a command again to the ready devices that have not answered it at all and for which `due` says
   * it is time (an emergency's re-sends with back-off), and records when. Returns the devices sent to.
   */
  resendUnanswered(commandId: string, due: (deviceId: string, sentAt: Date) => boolean): string[] {
    // An ack still queued for the database is an answer.
    this.ackWriter.flush();
    const found = this.repo.findById(commandId);
    if (!found) return [];
    const now = this.clock.now();
    if (found.command.expiresAt.getTime() <= now.getTime()) return [];
    const targets = this.repo
      .unacknowledged(commandId)
      .filter((d) => this.publisher.isReady(d.deviceId) && due(d.deviceId, d.sentAt))
      .map((d) => d.deviceId);
    if (targets.length === 0) return [];
    const payload = resendPayload(found.command, now);
    if (payload === 'ended') return [];
    const sent = this.publisher.publishCommand(targets, Buffer.from(JSON.stringify(payload)));
    this.repo.markSent(
      sent.map((deviceId) => ({ commandId, deviceId })),
      now,
    );
    return sent;
  }

  /** A later expiry for a command (and a play's download link valid until then); see extendExpiry. */
  extendExpiry(commandId: string, expiresAt: Date, params: unknown): void {
    this.repo.extendExpiry(commandId, expiresAt, params);
  }

  /**
   * Whether resuming the session `sessionId` on the device, after the play `endedId` has ended there, would
   * undo what was sent since (a resume is the server's decision; these were someone's):
   *
   * - another play after `endedId` that the device did not refuse or fail: it plays that one now (the end
   *   of `endedId` was reported late, from the device's offline log);
   * - a stop of that session after its play `sessionCommandId` (the schedule paused or deleted, or an
   *   operator stopping it, while the higher play ran): the device had nothing of it to stop then.
   */
  resumeOverridden(deviceId: string, endedId: string, sessionId: string, sessionCommandId: string): boolean {
    // A refusal still queued for the database must count as one.
    this.ackWriter.flush();
    const ended = this.repo.findById(endedId)?.command;
    const original = this.repo.findById(sessionCommandId)?.command;
    if (!ended || !original) return false;
    const from = Math.min(ended.createdAt.getTime(), original.createdAt.getTime());
    const since = this.repo.commandsSince(deviceId, new Date(from), this.clock.now());
    const after = (id: string) => {
      const self = since.find((c) => c.command.id === id);
      return self === undefined
        ? () => false
        : (c: DeviceCommand) =>
            c.command.createdAt.getTime() > self.command.createdAt.getTime() ||
            (c.command.createdAt.getTime() === self.command.createdAt.getTime() && c.seq > self.seq);
    };
    const afterEnded = after(endedId);
    const afterOriginal = after(sessionCommandId);
    return since.some((c) => {
      const wire = toWire(c.command);
      if (wire.type === 'play') return c.command.id !== endedId && afterEnded(c);
      return wire.type === 'stop' && wire.params.sessionId === sessionId && afterOriginal(c);
    });
  }

  /** A command by id, whoever sent it (no scope: for the server's own decisions, such as resumes). */
  findCommand(id: string): CommandRow | undefined {
    return this.repo.findById(id)?.command;
  }

  /**
   * Devices named directly plus every device under the named areas, each checked against the scope, each
   * once. The whole accepted range (10,000 devices, 1,000 areas) is resolved in batches.
   */
  private resolveTargets(actor: Actor, targets: CreateCommandInput['targets']): string[] {
    const ids = new Set<string>();
    for (const device of this.devices.requireActionableMany(
      actor,
      targets.deviceIds ?? [],
      'targets.deviceIds',
    )) {
      ids.add(device.id);
    }
    const areaPaths = new Map<string, string>();
    (targets.areaIds ?? []).forEach((areaId, i) => {
      if (!areaPaths.has(areaId)) {
        areaPaths.set(areaId, this.areas.requireActionable(actor, areaId, `targets.areaIds.${i}`).path);
      }
    });
    for (const id of this.devices.idsInSubtrees([...areaPaths.values()])) ids.add(id);
    if (ids.size === 0) {
      throw new AppError('validation_failed', 'targets: the named areas contain no devices', {
        errors: [{ field: 'body.targets', message: 'the named areas contain no devices' }],
      });
    }
    return [...ids];
  }

  /**
   * A device has (re)subscribed to its cmd topic: bring it back to what it should be doing (see
   * planResend). If the database fails (busy, full), the device would otherwise wait for its next
   * reconnect, perhaps hours away with an emergency running: so a failed step is tried once more a little
   * later.
   */
  deliverPending(deviceId: string): void {
    // A newer attempt for this device replaces one still waiting.
    this.cancelResendRetry(deviceId);
    this.tryOrRetry(deviceId, false, (isRetry) => {
      // Gone since the failure: its next subscription sends everything.
      if (isRetry && !this.publisher.isReady(deviceId)) return;
      this.resend(deviceId, isRetry);
    });
  }

  /** Runs `step`; if it throws, logs and counts it and, unless this is the retry, runs it once more later. */
  private tryOrRetry(deviceId: string, isRetry: boolean, step: (isRetry: boolean) => void): void {
    try {
      step(isRetry);
    } catch (err) {
      this.metrics.deviceEventFailed('ready');
      if (isRetry) {
        this.log.error(
          { err, deviceId },
          're-sending to a reconnected device failed again; it is sent everything on its next reconnect',
        );
        return;
      }
      const delayMs = RESEND_RETRY_MS * (1 + Math.random());
      this.log.warn({ err, deviceId, delayMs }, 're-sending to a reconnected device failed; will retry');
      const handle = this.clock.setTimeout(() => {
        this.resendRetries.delete(deviceId);
        this.tryOrRetry(deviceId, true, step);
      }, delayMs);
      this.resendRetries.set(deviceId, handle);
    }
  }

  private cancelResendRetry(deviceId: string): void {
    const handle = this.resendRetries.get(deviceId);
    if (handle === undefined) return;
    this.clock.clearTimeout(handle);
    this.resendRetries.delete(deviceId);
  }

  private resend(deviceId: string, isRetry: boolean): void {
    // Acks still queued for the database must count, or a command just acknowledged would be re-sent.
    this.ackWriter.flush();
    const now = this.clock.now();
    const candidates = this.repo.resendCandidates(deviceId, now);
    if (candidates.length === 0) return;
    // The history after the oldest play is needed only when there is a play to judge.
    const firstPlay = candidates.find((c) => c.command.type === 'play');
    const later = firstPlay ? this.repo.commandsSince(deviceId, firstPlay.command.createdAt, now) : [];
    const plan = planResend(candidates, later, now);
    if (plan.send.length === 0 && plan.closed.length === 0) return;
    // Published before anything is written: a database that cannot write (busy, full) must not hold back
    // an emergency. What failed to be written is written on the retry, without publishing again.
    const sent: string[] = [];
    for (const c of plan.send) {
      const to = this.publisher.publishCommand([deviceId], Buffer.from(JSON.stringify(c.payload)));
      // A `done` delivery keeps its sentAt: its round trip was measured when it was carried out.
      if (to.length > 0 && c.status !== 'done') sent.push(c.command.id);
    }
    this.log.info(
      { deviceId, commands: plan.send.map((c) => c.command.id), closed: plan.closed },
      'sent commands to reconnected device',
    );
    this.tryOrRetry(deviceId, isRetry, () => this.repo.recordResend(deviceId, now, sent, plan.closed));
  }

  recordAck(deviceId: string, ack: Ack): void {
    this.ackWriter.push({
      commandId: ack.id,
      deviceId,
      status: ack.status,
      reason: ack.reason ?? null,
      at: this.clock.now(),
    });
  }

  /** Whether a command that has not expired yet plays the programme (it cannot be deleted meanwhile). */
  hasLivePlay(programmeId: string): boolean {
    return this.repo.hasLivePlay(programmeId, this.clock.now());
  }

  /** Marks deliveries whose command expired without a final answer; runs on a timer. */
  expireDue(): number {
    this.ackWriter.flush();
    const changed = this.repo.expireDue(this.clock.now());
    if (changed > 0) this.log.info({ deliveries: changed }, 'command deliveries expired');
    return changed;
  }

  /**
   * At shutdown: acks waiting for a retry get one last attempt now (src/db/batch-writer.ts); re-sends
   * waiting for theirs are dropped (the devices are being disconnected, and get them when they return).
   */
  flush(): void {
    for (const deviceId of [...this.resendRetries.keys()]) this.cancelResendRetry(deviceId);
    this.ackWriter.drain();
  }

  get(actor: Actor, id: string, status?: DeliveryStatus): CommandDetail {
    const found = this.repo.findById(id);
    // A play prepared ahead does not exist for anyone before the instant it goes out (see preparePlay).
    if (!found || found.command.createdAt.getTime() > this.clock.now().getTime()) throw notFound('Command');
    const { command, username } = found;
    const visible =
      actor.areaPath === null ||
      command.createdBy === actor.id ||
      this.repo.touchesSubtree(id, actor.areaPath);
    if (!visible) throw notFound('Command');

    // A commune user looking at a district-wide command sees only their own devices.
    const rows = this.repo.deliveries(id, command.createdBy === actor.id ? null : actor.areaPath);
    const counts = Object.fromEntries(DELIVERY_STATUSES.map((s) => [s, 0])) as Record<DeliveryStatus, number>;
    for (const r of rows) counts[r.status] += 1;
    return {
      ...summary(command, username),
      counts,
      devices: rows
        .filter((r) => status === undefined || r.status === status)
        .map((r) => ({
          deviceId: r.deviceId,
          deviceName: r.deviceName,
          status: r.status,
          ...(r.reason ? { reason: r.reason } : {}),
          ...(r.sentAt && FINAL.has(r.status) ? { rttMs: r.updatedAt.getTime() - r.sentAt.getTime() } : {}),
          updatedAt: r.updatedAt.toISOString(),
        })),
    };
  }

  list(actor: Actor, query: { limit: number; offset: number }) {
    const rows = this.repo.list({
      actorId: actor.id,
      pathPrefix: actor.areaPath,
      now: this.clock.now(),
      ...query,
    });
    return { items: rows.map((r) => summary(r.command, r.username)), ...query };
  }
}
