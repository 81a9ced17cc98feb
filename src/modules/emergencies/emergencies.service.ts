/**
 * Emergency broadcasts (docs/emergency.md): a warning rendered as one file (attention signal, message)
 * and played at emergency priority on every loudspeaker of its areas, tracked device by device.
 *
 * An emergency rides on the commands module: its play is a command with one delivery per device, sent
 * to those online at once and to the others when they connect (CommandsService.deliverPending, where an
 * emergency is heard whole: from the start, with the repeats still due). What this service adds: the
 * rendering, the rules (who, where, drills only on drill devices), re-sends with back-off to devices that
 * got it but never answered, the per-device status (derived from the delivery and the playback log,
 * EmergenciesRepository), updates as the same emergency, and the cancel.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { EmergencyRow, Hazard, Role } from '../../db/schema/index.js';
import { AppError, forbidden, invalid, notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { newId } from '../../lib/ids.js';
import { inScope, inScopeOrAbove, type Actor } from '../../lib/scope.js';
import { compareNames } from '../../lib/text.js';
import { LINK_MARGIN_MS } from '../../media/links.js';
import type { PlaySource } from '../../protocol/index.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { CommandsService } from '../commands/commands.service.js';
import type { DevicesService } from '../devices/devices.service.js';
import type { ProgrammesService } from '../programmes/programmes.service.js';
import { rangeInstant } from '../schedules/timing.js';
import type { Voice } from '../tts/tts.service.js';
import { emptyCounts, type EmergenciesRepository, type StateScope } from './emergencies.repository.js';
import {
  DEFAULT_EXPIRES_IN_S,
  NOT_REACHED,
  type DeviceCounts,
  type EmergencyDetail,
  type EmergencyStatus,
  type EmergencyView,
  type ListEmergenciesQuery,
} from './emergencies.schemas.js';
import type { EmergencyRenderer } from './render.js';

/** Who sends an emergency: a user, or a warning system by its key (it acts as district staff of its area). */
export type Sender =
  | { kind: 'user'; actor: Actor }
  | { kind: 'source'; source: { id: string; name: string; areaId: string; areaPath: string } };

export interface SendEmergencyInput {
  title: string;
  text?: string | undefined;
  mediaId?: string | undefined;
  programmeId?: string | undefined;
  voice?: Voice | undefined;
  /** Every device in these areas' subtrees. */
  areaIds: readonly string[];
  /** And these devices (a CAP alert's polygons and circles); errors name `deviceIds.N`. */
  deviceIds?: readonly string[] | undefined;
  hazard?: Hazard | undefined;
  riskLevel?: number | undefined;
  repeat?: { count: number; intervalS: number } | undefined;
  volume?: number | undefined;
  /** An absolute expiry (a CAP alert's `expires`); otherwise `expiresInS` from now. */
  expiresAt?: Date | undefined;
  expiresInS?: number | undefined;
  exercise?: boolean | undefined;
}

export interface UpdateEmergencyInput {
  title?: string | undefined;
  text?: string | undefined;
  expiresInS?: number | undefined;
  expiresAt?: Date | undefined;
}

/** Who may send, change and cancel emergencies: district staff, and admins. */
export const SENDER_ROLES: readonly Role[] = ['admin', 'district_operator'];

/**
 * Waits before sending again to a device that got the play and has not answered at all: 5 s, then
 * doubling up to a minute, until the expiry. The first wait leaves a province-wide send the time to be
 * acknowledged (a few seconds for 10,000 devices) before anything is sent twice.
 */
export const RESEND_AFTER_MS = [5_000, 10_000, 20_000, 40_000, 60_000] as const;

/** The devices `notReached` lists at most (the counts cover all of them). */
export const NOT_REACHED_LIST_MAX = 1_000;

export interface EmergenciesDeps {
  repo: EmergenciesRepository;
  commands: Pick<
    CommandsService,
    'dispatchPlay' | 'dispatchStop' | 'resendUnanswered' | 'extendExpiry' | 'findCommand'
  >;
  devices: Pick<DevicesService, 'requireActionableMany' | 'idsInSubtrees' | 'withPaths'>;
  areas: Pick<AreasService, 'requireActionable' | 'byIds'>;
  programmes: Pick<ProgrammesService, 'playSource'>;
  renderer: Pick<EmergencyRenderer, 'renderEmergency'>;
  links: { urlFor(sha256: string, validUntil: Date): string };
  audit: AuditService;
  clock: Clock;
  log: FastifyBaseLogger;
}

interface Watched {
  commandId: string;
  expiresAt: number;
  /** Re-sends so far, per device, for the back-off. */
  attempts: Map<string, number>;
}

function actorOf(sender: Sender): Actor {
  if (sender.kind === 'user') return sender.actor;
  const { id, name, areaId, areaPath } = sender.source;
  return { id, username: name, role: 'district_operator', areaId, areaPath };
}

function label(row: Pick<EmergencyRow, 'title' | 'exercise'>): string {
  return row.exercise ? `DIỄN TẬP – ${row.title}` : row.title;
}

export class EmergenciesService {
  /** Emergencies still running, whose unanswered devices are re-sent to. */
  private readonly watched = new Map<string, Watched>();
  /** The update under way per emergency, the next one waits for it (see update). */
  private readonly updating = new Map<string, Promise<EmergencyView>>();

  constructor(private readonly deps: EmergenciesDeps) {}

  /** At start-up: what was running before a restart is watched again. */
  start(): void {
    for (const row of this.deps.repo.active(this.deps.clock.now())) this.watch(row);
  }

  async send(sender: Sender, input: SendEmergencyInput): Promise<EmergencyView> {
    const { repo, clock, audit } = this.deps;
    const actor = this.requireSender(sender);
    const now = clock.now();
    const expiresAt =
      input.expiresAt ?? new Date(now.getTime() + (input.expiresInS ?? DEFAULT_EXPIRES_IN_S) * 1000);
    if (expiresAt.getTime() <= now.getTime()) {
      throw invalid('body.expiresAt', 'the emergency has already expired; nothing was sent');
    }
    const exercise = input.exercise ?? false;
    const targets = this.resolveTargets(actor, input, exercise);
    const validUntil = new Date(expiresAt.getTime() + LINK_MARGIN_MS);
    const programme =
      input.programmeId === undefined ? null : this.programmeRendition(actor, input.programmeId, validUntil);
    const rendition = await this.deps.renderer.renderEmergency(
      actor,
      {
        text: input.text,
        voice: input.voice,
        mediaId: input.mediaId,
        rendition: programme?.rendition,
        exercise,
      },
      validUntil,
    );

    const sentAt = clock.now();
    const repeat = input.repeat ?? { count: 1, intervalS: 0 };
    const row: EmergencyRow = {
      id: newId('emg'),
      title: input.title,
      text: input.text ?? null,
      mediaId: input.mediaId ?? null,
      programmeId: input.programmeId ?? null,
      voice: input.text !== undefined ? (input.voice ?? 'vi') : null,
      hazard: input.hazard ?? null,
      riskLevel: input.riskLevel ?? null,
      volume: input.volume ?? 100,
      repeatCount: repeat.count,
      repeatIntervalS: repeat.intervalS,
      exercise,
      areaIds: [...input.areaIds],
      commandId: newId('cmd'),
      sessionId: newId('ses'),
      revision: 1,
      renditionSha256: rendition.sha256,
      durationMs: rendition.durationMs,
      targetCount: targets.deviceIds.length,
      createdBy: sender.kind === 'user' ? sender.actor.id : null,
      sourceId: sender.kind === 'source' ? sender.source.id : null,
      senderName: actor.username,
      createdAt: sentAt,
      expiresAt,
      cancelledAt: null,
      cancelledBy: null,
      cancelCommandId: null,
      cancelReason: null,
      updatedAt: sentAt,
    };
    const { sent } = this.dispatch(
      row,
      rendition.source,
      targets.deviceIds,
      programme?.revisionId ?? null,
      () => {
        repo.insert(row, targets.areas);
        audit.record(
          this.auditActor(sender),
          'emergency.send',
          { type: 'emergency', id: row.id },
          {
            title: row.title,
            text: row.text,
            mediaId: row.mediaId,
            programmeId: row.programmeId,
            exercise,
            hazard: row.hazard,
            riskLevel: row.riskLevel,
            areaIds: row.areaIds,
            deviceIds: input.deviceIds?.length ? input.deviceIds : undefined,
            targetCount: row.targetCount,
            expiresAt: expiresAt.toISOString(),
            commandId: row.commandId,
            ...(sender.kind === 'source' ? { source: sender.source.id } : {}),
          },
        );
      },
    );
    this.watch(row);
    this.deps.log.warn(
      {
        emergencyId: row.id,
        exercise,
        title: row.title,
        targets: row.targetCount,
        sent,
        by: actor.username,
        renderMs: sentAt.getTime() - now.getTime(),
      },
      exercise ? 'emergency drill sent' : 'EMERGENCY sent',
    );
    return this.view(row, actor);
  }

  /**
   * Changes a running emergency. A new text is rendered and sent to the same devices as the next revision
   * of the same emergency (a play of equal priority replaces the one playing; devices still offline get
   * only the new one); a later expiry reaches the devices that have not got it yet; a title is a label.
   */
  update(sender: Sender, id: string, patch: UpdateEmergencyInput): Promise<EmergencyView> {
    // One at a time per emergency: a text takes a second to render, and a change made meanwhile (another
    // text, a later expiry) must apply on top of it, not be overwritten by it. A cancel needs no turn: the
    // row is read again after the render and a cancelled emergency is not changed.
    const previous = this.updating.get(id) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.applyUpdate(sender, id, patch));
    this.updating.set(id, run);
    const done = () => {
      if (this.updating.get(id) === run) this.updating.delete(id);
    };
    run.then(done, done);
    return run;
  }

  private async applyUpdate(sender: Sender, id: string, patch: UpdateEmergencyInput): Promise<EmergencyView> {
    const { repo, clock, audit, commands } = this.deps;
    const actor = this.requireSender(sender);
    let row = this.requireChangeable(actor, id);
    const now = clock.now();
    let expiresAt = row.expiresAt;
    const newExpiry =
      patch.expiresAt ??
      (patch.expiresInS === undefined ? undefined : new Date(now.getTime() + patch.expiresInS * 1000));
    if (newExpiry !== undefined) {
      if (newExpiry.getTime() <= row.expiresAt.getTime()) {
        throw invalid(
          patch.expiresAt ? 'body.expiresAt' : 'body.expiresInS',
          `must end after the current expiry (${row.expiresAt.toISOString()}); cancel it to end it sooner`,
        );
      }
      expiresAt = newExpiry;
    }
    const changes: Record<string, unknown> = {};
    const set: Partial<EmergencyRow> = { updatedAt: now };
    if (patch.title !== undefined && patch.title !== row.title) {
      set.title = patch.title;
      changes.title = { from: row.title, to: patch.title };
    }
    if (expiresAt !== row.expiresAt) {
      set.expiresAt = expiresAt;
      changes.expiresAt = { from: row.expiresAt.toISOString(), to: expiresAt.toISOString() };
    }
    const validUntil = new Date(expiresAt.getTime() + LINK_MARGIN_MS);
    const newText = patch.text !== undefined && patch.text !== row.text ? patch.text : undefined;
    if (newText !== undefined) {
      const rendition = await this.deps.renderer.renderEmergency(
        actor,
        { text: newText, voice: (row.voice as Voice | null) ?? 'vi', exercise: row.exercise },
        validUntil,
      );
      // Read again after the render: a cancel or another update may have come meanwhile.
      row = this.requireChangeable(actor, id);
      const next: EmergencyRow = {
        ...row,
        ...set,
        text: newText,
        mediaId: null,
        programmeId: null,
        voice: row.voice ?? 'vi',
        commandId: newId('cmd'),
        sessionId: newId('ses'),
        revision: row.revision + 1,
        renditionSha256: rendition.sha256,
        durationMs: rendition.durationMs,
        expiresAt,
      };
      changes.text = { from: row.text, to: newText };
      const deviceIds = repo.deviceIdsOf(row.commandId);
      this.dispatch(next, rendition.source, deviceIds, null, () => {
        repo.update(id, {
          ...set,
          text: next.text,
          mediaId: null,
          programmeId: null,
          voice: next.voice,
          commandId: next.commandId,
          sessionId: next.sessionId,
          revision: next.revision,
          renditionSha256: next.renditionSha256,
          durationMs: next.durationMs,
        });
        audit.record(
          this.auditActor(sender),
          'emergency.update',
          { type: 'emergency', id },
          {
            revision: next.revision,
            commandId: next.commandId,
            changes,
          },
        );
      });
      this.watch(next);
      return this.view(next, actor);
    }
    if (Object.keys(changes).length === 0) return this.view(row, actor);
    repo.transaction(() => {
      repo.update(id, set);
      if (set.expiresAt) {
        const command = commands.findCommand(row.commandId);
        const params = command?.params as { source: PlaySource } | undefined;
        if (params) {
          // The download link must last as long as devices may still start it.
          const source =
            params.source.kind === 'media'
              ? { ...params.source, url: this.deps.links.urlFor(row.renditionSha256, validUntil) }
              : params.source;
          commands.extendExpiry(row.commandId, expiresAt, { ...params, source });
        }
        repo.extendRecords(row.sessionId, expiresAt, now);
      }
      if (set.title) repo.retitleRecords(row.sessionId, set.title, now);
      audit.record(this.auditActor(sender), 'emergency.update', { type: 'emergency', id }, { changes });
    });
    const updated = { ...row, ...set };
    this.watch(updated);
    return this.view(updated, actor);
  }

  /**
   * Stops it everywhere at once: a stop of its session at emergency priority to every device (acked per
   * device, shown under `cancel`). Devices still offline are not sent the play any more: the stop after
   * it tells the re-send that it has ended (CommandsService.planResend). Earlier revisions' sessions are
   * stopped too: a device whose link dropped while it played the first text, and that missed the update,
   * still plays that one.
   */
  cancel(sender: Sender, id: string, reason?: string): EmergencyView {
    const { repo, clock, audit, commands } = this.deps;
    const actor = this.requireSender(sender);
    const row = this.requireChangeable(actor, id);
    const now = clock.now();
    const stopId = newId('cmd');
    const deviceIds = repo.deviceIdsOf(row.commandId);
    const { sent } = commands.dispatchStop({
      id: stopId,
      deviceIds,
      priority: 'emergency',
      sessionId: row.sessionId,
      // A device back before the play's expiry must get the stop too, and an hour at least.
      expiresAt: new Date(Math.max(row.expiresAt.getTime(), now.getTime() + 3_600_000)),
      createdBy: sender.kind === 'user' ? sender.actor.id : null,
      emergencyId: id,
      also: () => {
        repo.update(id, {
          cancelledAt: now,
          cancelledBy: actor.username,
          cancelCommandId: stopId,
          cancelReason: reason ?? null,
          updatedAt: now,
        });
        audit.record(
          this.auditActor(sender),
          'emergency.cancel',
          { type: 'emergency', id },
          {
            reason: reason ?? null,
            stopCommandId: stopId,
            targetCount: deviceIds.length,
          },
        );
      },
    });
    const expiresAt = new Date(Math.max(row.expiresAt.getTime(), now.getTime() + 3_600_000));
    for (const earlier of repo.earlierPlays(id, row.commandId)) {
      commands.dispatchStop({
        id: newId('cmd'),
        deviceIds: repo.deviceIdsOf(earlier.commandId),
        priority: 'emergency',
        sessionId: earlier.sessionId,
        expiresAt,
        createdBy: sender.kind === 'user' ? sender.actor.id : null,
        emergencyId: id,
      });
    }
    this.watched.delete(id);
    this.deps.log.warn({ emergencyId: id, sent, by: actor.username }, 'emergency cancelled');
    return this.view(
      {
        ...row,
        cancelledAt: now,
        cancelledBy: actor.username,
        cancelCommandId: stopId,
        cancelReason: reason ?? null,
        updatedAt: now,
      },
      actor,
    );
  }

  get(actor: Actor, id: string): EmergencyDetail {
    const row = this.requireVisible(actor, id);
    const scope = this.scopeOf(row, actor);
    const states = this.deps.repo.states(scope);

    // Devices by commune: the commune on each device's path, or its own area if it hangs above communes.
    const onPaths = new Set<string>();
    for (const s of states) for (const a of (s.areaPath ?? '').split('/')) if (a) onPaths.add(a);
    const areas = new Map(this.deps.repo.areasByIds([...onPaths]).map((a) => [a.id, a]));
    const communes = new Map<string, EmergencyDetail['byCommune'][number]>();
    for (const s of states) {
      const ids = (s.areaPath ?? '').split('/').filter(Boolean);
      const communeId = ids.find((a) => areas.get(a)?.level === 'commune') ?? s.areaId;
      const key = communeId ?? '';
      let entry = communes.get(key);
      if (!entry) {
        const area = communeId ? areas.get(communeId) : undefined;
        entry = {
          areaId: communeId,
          name: area?.name ?? s.areaName ?? '(deleted devices)',
          code: area?.code ?? null,
          targetCount: 0,
          counts: emptyCounts(),
        };
        communes.set(key, entry);
      }
      entry.targetCount += 1;
      entry.counts[s.status] += 1;
    }

    const notReached = states
      .filter((s) => NOT_REACHED.includes(s.status))
      .sort(
        (a, b) =>
          compareNames(a.areaName ?? '', b.areaName ?? '') ||
          compareNames(a.name ?? a.deviceId, b.name ?? b.deviceId),
      );
    const counts = emptyCounts();
    for (const s of states) counts[s.status] += 1;

    return {
      ...this.viewWith(row, counts),
      byCommune: [...communes.values()].sort((a, b) => compareNames(a.name, b.name)),
      notReachedCount: notReached.length,
      notReached: notReached.slice(0, NOT_REACHED_LIST_MAX).map((s) => ({
        deviceId: s.deviceId,
        name: s.name ?? s.deviceId,
        areaId: s.areaId ?? '',
        areaName: s.areaName ?? '',
        status: s.status,
        reason: s.reason,
        online: s.online === 1,
        lastSeenAt: s.lastSeenAt === null ? null : new Date(s.lastSeenAt).toISOString(),
      })),
      cancel:
        row.cancelCommandId === null
          ? null
          : {
              commandId: row.cancelCommandId,
              reason: row.cancelReason,
              counts: this.deps.repo.deliveryCounts(row.cancelCommandId),
            },
    };
  }

  list(actor: Actor, query: ListEmergenciesQuery) {
    let areaPath: string | undefined;
    if (query.areaId !== undefined) {
      const area = this.deps.areas.byIds([query.areaId])[0];
      if (!area || !inScopeOrAbove(actor, area.path)) throw notFound('Area');
      areaPath = area.path;
    }
    const rows = this.deps.repo.list({
      visibleFrom: actor.areaPath,
      areaPath,
      from: query.from === undefined ? undefined : rangeInstant(query.from, false),
      to: query.to === undefined ? undefined : rangeInstant(query.to, true),
      exercise: query.exercise,
      limit: query.limit,
      offset: query.offset,
    });
    const counts = this.deps.repo.countsMany(rows, actor.areaPath);
    return {
      items: rows.map((r, i) => this.viewWith(r, counts[i] as DeviceCounts)),
      limit: query.limit,
      offset: query.offset,
    };
  }

  /** For the live stream (events.ts): the emergency if the actor may see it, and what to count. */
  watchable(actor: Actor, id: string): { row: EmergencyRow; scope: StateScope } {
    const row = this.requireVisible(actor, id);
    return { row, scope: this.scopeOf(row, actor) };
  }

  /** The row as it is now (the stream follows updates and the end), no scope check. */
  current(id: string): EmergencyRow | undefined {
    return this.deps.repo.find(id);
  }

  statusOf(row: Pick<EmergencyRow, 'cancelledAt' | 'expiresAt'>): EmergencyStatus {
    if (row.cancelledAt !== null) return 'cancelled';
    return row.expiresAt.getTime() <= this.deps.clock.now().getTime() ? 'expired' : 'active';
  }

  /** Progress in a few numbers: who confirmed it, out of how many. */
  static progress(counts: DeviceCounts): { reached: number; percent: number } {
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const reached = counts.received + counts.playing + counts.played + counts.stopped;
    return { reached, percent: total === 0 ? 0 : Math.round((reached / total) * 1000) / 10 };
  }

  /**
   * Runs every second: sends the play again to the devices that got it and have not answered at all,
   * each after its back-off (RESEND_AFTER_MS). A device that answers, even `received`, is left alone.
   */
  resendDue(): number {
    const now = this.deps.clock.now().getTime();
    let total = 0;
    for (const [id, w] of this.watched) {
      if (w.expiresAt <= now) {
        this.watched.delete(id);
        continue;
      }
      const sent = this.deps.commands.resendUnanswered(w.commandId, (deviceId, sentAt) => {
        const attempts = w.attempts.get(deviceId) ?? 0;
        const wait = RESEND_AFTER_MS[Math.min(attempts, RESEND_AFTER_MS.length - 1)] as number;
        return now - sentAt.getTime() >= wait;
      });
      for (const deviceId of sent) w.attempts.set(deviceId, (w.attempts.get(deviceId) ?? 0) + 1);
      if (sent.length > 0) {
        this.deps.log.info(
          { emergencyId: id, devices: sent.length },
          'emergency re-sent to devices that did not answer',
        );
      }
      total += sent.length;
    }
    return total;
  }

  private watch(row: EmergencyRow): void {
    const previous = this.watched.get(row.id);
    this.watched.set(row.id, {
      commandId: row.commandId,
      expiresAt: row.expiresAt.getTime(),
      attempts: previous?.commandId === row.commandId ? previous.attempts : new Map<string, number>(),
    });
  }

  /** Writes the play of a revision, its playback records and `also` together, then publishes it. */
  private dispatch(
    row: EmergencyRow,
    source: PlaySource,
    deviceIds: readonly string[],
    programmeRevisionId: string | null,
    also: () => void,
  ): { sent: number } {
    const repeat = row.repeatCount;
    const { sent } = this.deps.commands.dispatchPlay({
      id: row.commandId,
      sessionId: row.sessionId,
      deviceIds,
      priority: 'emergency',
      source,
      volume: row.volume,
      repeat,
      repeatGapMs: row.repeatIntervalS * 1000,
      expiresAt: row.expiresAt,
      programmeId: row.programmeId,
      programmeRevisionId,
      emergency: { id: row.id, title: row.title, exercise: row.exercise },
      createdBy: row.createdBy,
      playbackRecord: {
        dueAt: row.updatedAt,
        endsAt: row.expiresAt,
        scheduleId: null,
        occurrenceId: null,
        plannedMs: row.durationMs * repeat,
      },
      also,
    });
    return { sent };
  }

  private requireSender(sender: Sender): Actor {
    const actor = actorOf(sender);
    if (!SENDER_ROLES.includes(actor.role)) {
      throw forbidden(`Your role (${actor.role}) cannot send emergencies: district staff and admins do`);
    }
    return actor;
  }

  private auditActor(sender: Sender): { id: string; username: string } {
    return sender.kind === 'user'
      ? sender.actor
      : { id: sender.source.id, username: `warning source: ${sender.source.name}` };
  }

  private requireVisible(actor: Actor, id: string): EmergencyRow {
    const row = this.deps.repo.find(id);
    if (!row) throw notFound('Emergency');
    if (actor.areaPath !== null && !this.deps.repo.isVisibleFrom(id, actor.areaPath))
      throw notFound('Emergency');
    return row;
  }

  /** Running, and every area it plays in is inside the actor's own. */
  private requireChangeable(actor: Actor, id: string): EmergencyRow {
    const row = this.requireVisible(actor, id);
    if (!this.deps.repo.areaPaths(id).every((p) => inScope(actor, p))) {
      throw forbidden('The emergency also plays outside your area; someone above it must change it');
    }
    const status = this.statusOf(row);
    if (status !== 'active') {
      throw new AppError('invalid_transition', `The emergency is ${status}; it can no longer be changed`);
    }
    return row;
  }

  private scopeOf(row: EmergencyRow, actor: Actor): StateScope {
    return { commandId: row.commandId, sessionId: row.sessionId, path: actor.areaPath };
  }

  private view(row: EmergencyRow, actor: Actor): EmergencyView {
    return this.viewWith(row, this.deps.repo.counts(this.scopeOf(row, actor)).counts);
  }

  private viewWith(row: EmergencyRow, counts: DeviceCounts): EmergencyView {
    return {
      id: row.id,
      title: row.title,
      text: row.text,
      mediaId: row.mediaId,
      programmeId: row.programmeId,
      voice: row.voice,
      hazard: row.hazard,
      riskLevel: row.riskLevel,
      volume: row.volume,
      repeat: { count: row.repeatCount, intervalS: row.repeatIntervalS },
      exercise: row.exercise,
      label: label(row),
      areaIds: row.areaIds,
      status: this.statusOf(row),
      revision: row.revision,
      durationMs: row.durationMs,
      // The devices the caller may see: all of them for its sender and admins, the area's own for others.
      targetCount: Object.values(counts).reduce((a, b) => a + b, 0),
      sentBy: {
        kind: row.sourceId === null ? 'user' : 'source',
        id: row.sourceId ?? row.createdBy,
        name: row.senderName,
      },
      createdAt: row.createdAt.toISOString(),
      expiresAt: row.expiresAt.toISOString(),
      updatedAt: row.updatedAt.toISOString(),
      cancelledAt: row.cancelledAt?.toISOString() ?? null,
      commandId: row.commandId,
      counts,
      ...EmergenciesService.progress(counts),
    };
  }

  /**
   * The devices it plays on: every device under the named areas and the devices named, each inside the
   * sender's area; for a drill only the drill participants. None at all: 422, nothing is rendered or sent.
   */
  private resolveTargets(
    actor: Actor,
    input: SendEmergencyInput,
    exercise: boolean,
  ): { deviceIds: string[]; areas: { areaId: string; areaPath: string }[] } {
    const areas = new Map<string, string>();
    input.areaIds.forEach((areaId, i) => {
      if (!areas.has(areaId))
        areas.set(areaId, this.deps.areas.requireActionable(actor, areaId, `body.areaIds.${i}`).path);
    });
    const ids = new Set(this.deps.devices.idsInSubtrees([...areas.values()]));
    const named = this.deps.devices.requireActionableMany(actor, input.deviceIds ?? [], 'deviceIds');
    const recorded = new Map(
      [...areas].map(([areaId, areaPath]) => ({ areaId, areaPath })).map((a) => [a.areaId, a]),
    );
    for (const device of named) {
      ids.add(device.id);
      if (!recorded.has(device.areaId))
        recorded.set(device.areaId, { areaId: device.areaId, areaPath: device.areaPath });
    }
    const deviceIds = exercise ? this.deps.repo.drillParticipants([...ids]) : [...ids];
    if (deviceIds.length === 0) {
      const detail = exercise
        ? 'No loudspeaker in the targets takes part in drills (devices: drillParticipant); nothing was sent'
        : 'The targets contain no loudspeaker; nothing was sent';
      throw new AppError('no_target_devices', detail, {
        members: { areaIds: [...areas.keys()], devicesInTargets: ids.size, exercise },
      });
    }
    return { deviceIds, areas: [...recorded.values()] };
  }

  /** An approved bulletin's rendition; a relay (a live stream) cannot follow an attention signal in one file. */
  private programmeRendition(actor: Actor, programmeId: string, validUntil: Date) {
    let resolved: ReturnType<ProgrammesService['playSource']>;
    try {
      resolved = this.deps.programmes.playSource(actor, programmeId, validUntil);
    } catch (err) {
      if (err instanceof AppError && (err.code === 'not_found' || err.code === 'not_approved')) {
        throw new AppError(
          err.code,
          `body.programmeId: ${err.detail ?? err.message}`.replace('params.source.programmeId: ', ''),
        );
      }
      throw err;
    }
    if (resolved.source.kind !== 'media') {
      throw invalid(
        'body.programmeId',
        'is a relay (a live stream); an emergency plays a bulletin, a recording or text',
      );
    }
    return {
      revisionId: resolved.revisionId,
      rendition: { sha256: resolved.source.sha256, durationMs: resolved.source.durationMs },
    };
  }
}
