import fs from 'node:fs/promises';
import type {
  AreaRow,
  MediaRow,
  ProgrammeRevisionRow,
  ProgrammeRow,
  ProgrammeStatus,
  Role,
} from '../../db/schema/index.js';
import { AppError, forbidden, invalid, notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { newId } from '../../lib/ids.js';
import { inScope, inScopeOrAbove, type Actor } from '../../lib/scope.js';
import { foldForSearch } from '../../lib/text.js';
import type { RenderPart, RenderResult } from '../../media/audio.js';
import { ToolError } from '../../media/tools.js';
import type { PlaySource } from '../../protocol/index.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { ProgrammesRepository, ProgrammeWithArea } from './programmes.repository.js';
import type {
  BulletinContent,
  CreateProgrammeInput,
  JinglesView,
  ListProgrammesQuery,
  ProgrammeContent,
  ProgrammeSummary,
  ProgrammeView,
  RelayProbe,
  RevisionView,
  Segment,
  UpdateJinglesInput,
  UpdateProgrammeInput,
} from './programmes.schemas.js';
import type { Voice } from '../tts/engines.js';
import { probeWarnings, type RelayProber } from './relay-probe.js';

/** What programmes need from the media module (src/modules/media: MediaService and its parts). */
export interface MediaAccess {
  /** The media item if the actor may use it; AppError not_found otherwise. */
  getUsable(actor: Actor, mediaId: string): MediaRow;
  readonly store: {
    pathOf(sha256: string): string;
    tempPath(suffix?: string): string;
    /** Moves the file into the content-addressed store (or drops it if already there). */
    putFile(tempFile: string): Promise<{ sha256: string; sizeBytes: number }>;
  };
  readonly links: { urlFor(sha256: string, validUntil: Date): string };
  readonly audio: {
    render(parts: RenderPart[], outFile: string): Promise<RenderResult>;
  };
}

/** The text-to-speech engine (src/modules/tts): renders to a WAV file the caller deletes. */
export interface Speech {
  speak(text: string, options: { voice?: Voice; rate?: number; pitch?: number }): Promise<string>;
}

/** Whether a command that is still live plays the programme (src/modules/commands). */
export interface LivePlays {
  hasLivePlay(programmeId: string): boolean;
  /** Whether a schedule that is not deleted airs the programme (src/modules/schedules). */
  isScheduled?(programmeId: string): boolean;
}

/** What a schedule needs of the programme it airs (src/modules/schedules). */
export interface ScheduleProgramme {
  id: string;
  title: string;
  kind: 'bulletin' | 'relay';
  approvedRevisionId: string;
  /** The approved revision's length; null for a relay (a schedule says how long it stays on the stream). */
  durationMs: number | null;
}

/** Who makes programmes, and who signs them off: never the same person for one programme. */
const EDITORS: readonly Role[] = ['admin', 'district_operator', 'broadcaster'];
const APPROVERS: readonly Role[] = ['admin', 'district_operator', 'approver'];

/** The ids of the areas above an area, nearest first (`/a/b/c/` → b, a). */
function ancestorIds(path: string): string[] {
  return path.split('/').filter(Boolean).slice(0, -1).reverse();
}

/** The path of the area `id` when it lies on `path` (the actor's own area or one above it), else null. */
function ancestorPath(path: string | null, id: string): string | null {
  const at = path?.indexOf(`/${id}/`) ?? -1;
  return path && at !== -1 ? path.slice(0, at + id.length + 2) : null;
}

function toSegment(s: {
  mediaId?: string | undefined;
  text?: string | undefined;
  voice?: Voice | undefined;
  rate?: number | undefined;
  pitch?: number | undefined;
  silenceMs?: number | undefined;
}): Segment {
  if (s.mediaId !== undefined) return { mediaId: s.mediaId };
  if (s.silenceMs !== undefined) return { silenceMs: s.silenceMs };
  return {
    // NFC: a text typed on a Mac arrives decomposed; stored composed, tone marks compare and search alike.
    text: (s.text ?? '').normalize('NFC'),
    ...(s.voice !== undefined ? { voice: s.voice } : {}),
    ...(s.rate !== undefined ? { rate: s.rate } : {}),
    ...(s.pitch !== undefined ? { pitch: s.pitch } : {}),
  };
}

/** The content as stored: only the fields that were given, in one canonical shape. */
function canonicalContent(content: CreateProgrammeInput['content']): ProgrammeContent {
  if (content.relay) {
    const { url, name } = content.relay;
    return { relay: { url, ...(name ? { name: name.normalize('NFC') } : {}) } };
  }
  return {
    segments: (content.segments ?? []).map(toSegment),
    ...(content.jingles !== undefined ? { jingles: content.jingles } : {}),
  };
}

/** Titles, notes and reasons as stored: composed (NFC), whatever form the client sent. */
const nfc = <T extends string | undefined>(text: T): T => text?.normalize('NFC') as T;

/**
 * The parts of a revision an edit was made against. An edit that renders for a while saves only if these
 * are unchanged when it is done; otherwise someone else's change would be silently overwritten.
 */
function editedState(revision: ProgrammeRevisionRow): string {
  return JSON.stringify([
    revision.status,
    revision.title,
    revision.category,
    revision.content,
    revision.renditionSha256,
  ]);
}

/** `err` as the cause of `appError`, so that the log of a 500 shows what really happened. */
function withCause(appError: AppError, err: unknown): AppError {
  appError.cause = err;
  return appError;
}

const isRelay = (content: ProgrammeContent): content is { relay: { url: string; name?: string } } =>
  'relay' in content;

/** What saving a content produced: a rendered file or a probe, and the media it uses. */
interface Prepared {
  kind: 'bulletin' | 'relay';
  content: ProgrammeContent;
  renditionSha256: string | null;
  sizeBytes: number | null;
  durationMs: number | null;
  loudnessLufs: number | null;
  relayProbe: RelayProbe | null;
  mediaIds: string[];
}

/**
 * Programmes: what a commune airs, and the approval that must come before it airs.
 *
 * A programme's content lives in numbered revisions. A draft is edited in place (and rendered again when its
 * content changes); editing a submitted, approved or rejected revision starts a new draft, while the approved
 * revision (`approvedRevisionId`) keeps airing until another one is approved. The programme row mirrors the
 * latest revision's title, category and status for listing.
 *
 * Bulletins are rendered when they are saved, never at air time: devices get one finished file.
 */
export class ProgrammesService {
  /** Told after a revision is approved, so schedules re-time what they have yet to send (bound late). */
  onApproved?: (programmeId: string) => void;

  constructor(
    private readonly repo: ProgrammesRepository,
    private readonly areas: AreasService,
    private readonly media: MediaAccess,
    private readonly speech: Speech,
    private readonly probe: RelayProber,
    private readonly livePlays: LivePlays,
    private readonly audit: AuditService,
    private readonly clock: Clock,
  ) {}

  // ---------------------------------------------------------------- reading

  list(actor: Actor, query: ListProgrammesQuery) {
    let withinPath: string | undefined;
    if (query.areaId !== undefined) {
      // An area above one's own cannot be browsed, but its programmes are visible (and aired) below it.
      withinPath =
        ancestorPath(actor.areaPath, query.areaId) ?? this.areas.getVisible(actor, query.areaId).path;
    }
    const { rows, total } = this.repo.list({
      pathPrefix: actor.areaPath,
      ancestorIds: actor.areaPath ? ancestorIds(actor.areaPath) : [],
      withinPath,
      status: query.status,
      category: query.category,
      q: query.q !== undefined ? foldForSearch(query.q) : undefined,
      limit: query.limit,
      offset: query.offset,
    });
    const items: ProgrammeSummary[] = rows.map((r) =>
      this.summary(r.programme, r.creatorName, r.durationMs, {
        current: r.revision,
        approved: r.approvedRevision,
      }),
    );
    return { items, total, limit: query.limit, offset: query.offset };
  }

  get(actor: Actor, id: string): ProgrammeView {
    return this.view(this.requireVisible(actor, id));
  }

  /** The rendered file of the current (or the approved) revision, for users to listen to. */
  audioFile(
    actor: Actor,
    id: string,
    which: 'current' | 'approved',
  ): { path: string; sha256: string; sizeBytes: number } {
    const { programme } = this.requireVisible(actor, id);
    if (programme.kind === 'relay') throw new AppError('not_found', 'A relay has no audio file of its own');
    const revisionId = which === 'approved' ? programme.approvedRevisionId : programme.currentRevisionId;
    if (!revisionId) throw new AppError('not_found', 'The programme has no approved revision yet');
    const revision = this.requireRevision(revisionId).revision;
    if (!revision.renditionSha256 || revision.sizeBytes === null) throw notFound('Audio');
    return {
      path: this.media.store.pathOf(revision.renditionSha256),
      sha256: revision.renditionSha256,
      sizeBytes: revision.sizeBytes,
    };
  }

  /**
   * The device source of an approved programme, for a play command (src/modules/commands): a bulletin's
   * rendered file through a signed download link valid until `validUntil`, or a relay's stream. Only the
   * approved revision ever airs; a programme never approved is refused (409 not_approved).
   */
  playSource(
    actor: Actor,
    programmeId: string,
    validUntil: Date,
  ): { source: PlaySource; programmeId: string; revisionId: string } {
    const revision = this.requireApproved(actor, programmeId, 'params.source.programmeId', 'played').revision;
    const content = revision.content as ProgrammeContent;
    if (isRelay(content)) {
      return {
        source: { kind: 'stream', url: content.relay.url },
        programmeId,
        revisionId: revision.id,
      };
    }
    if (!revision.renditionSha256 || revision.durationMs === null) {
      // Every saved bulletin revision has a rendition; one without is a broken row, not a client error.
      throw new Error(`programme revision ${revision.id} has no rendition`);
    }
    return {
      source: {
        kind: 'media',
        url: this.media.links.urlFor(revision.renditionSha256, validUntil),
        sha256: revision.renditionSha256,
        durationMs: revision.durationMs,
      },
      programmeId,
      revisionId: revision.id,
    };
  }

  /**
   * The approved programme a schedule airs: visible to the actor (404 naming `field` otherwise) and approved
   * once at least (409 not_approved). `actor` null: the server's own read, when it plans occurrences ahead
   * of a schedule whose programme was checked when it was saved.
   */
  scheduleInfo(actor: Actor | null, programmeId: string, field = 'body.programmeId'): ScheduleProgramme {
    const { programme, revision } = this.requireApproved(actor, programmeId, field, 'scheduled');
    return {
      id: programme.id,
      title: programme.title,
      kind: programme.kind,
      approvedRevisionId: revision.id,
      durationMs: programme.kind === 'relay' ? null : revision.durationMs,
    };
  }

  /**
   * The programme and its approved revision: visible to the actor (404 naming `field` otherwise; `actor`
   * null: the server's own read) and approved once at least (409 not_approved).
   */
  private requireApproved(
    actor: Actor | null,
    programmeId: string,
    field: string,
    use: 'played' | 'scheduled',
  ): { programme: ProgrammeRow; revision: ProgrammeRevisionRow } {
    const found = this.repo.findById(programmeId);
    if (!found || (actor !== null && !inScopeOrAbove(actor, found.areaPath))) {
      throw new AppError('not_found', `${field}: programme ${programmeId} not found`);
    }
    const { programme } = found;
    if (!programme.approvedRevisionId) {
      throw new AppError(
        'not_approved',
        `"${programme.title}" has never been approved (it is ${programme.status}); only an approved programme can be ${use}`,
      );
    }
    return { programme, revision: this.requireRevision(programme.approvedRevisionId).revision };
  }

  // ---------------------------------------------------------------- editing

  async create(actor: Actor, input: CreateProgrammeInput): Promise<ProgrammeView> {
    this.requireRole(actor, EDITORS, 'create programmes');
    const area = this.areas.requireActionable(actor, input.areaId, 'body.areaId');
    const prepared = await this.prepare(actor, area, canonicalContent(input.content));

    const now = this.clock.now();
    const title = nfc(input.title);
    const programme: ProgrammeRow = {
      id: newId('prg'),
      areaId: area.id,
      kind: prepared.kind,
      title,
      titleSearch: foldForSearch(title),
      category: input.category,
      status: 'draft',
      currentRevisionId: newId('rev'),
      approvedRevisionId: null,
      createdBy: actor.id,
      createdAt: now,
      updatedAt: now,
      deletedAt: null,
    };
    const revision = this.revisionRow(
      programme.currentRevisionId,
      programme.id,
      1,
      { title, category: input.category },
      prepared,
      actor,
      now,
    );
    this.repo.transaction(() => {
      this.requireMediaStillThere(prepared.mediaIds);
      this.repo.insertProgramme(programme);
      this.repo.insertRevision(revision, prepared.mediaIds);
      this.event(programme.id, 1, 'created', actor, null, now);
      this.audit.record(
        actor,
        'programme.create',
        { type: 'programme', id: programme.id },
        { title: programme.title, areaId: area.id, kind: programme.kind, category: programme.category },
      );
    });
    return this.get(actor, programme.id);
  }

  async update(actor: Actor, id: string, input: UpdateProgrammeInput): Promise<ProgrammeView> {
    this.requireRole(actor, EDITORS, 'edit programmes');
    const found = this.requireEditable(actor, id);
    const before = this.requireRevision(found.programme.currentRevisionId).revision;
    const stateBefore = editedState(before);

    let prepared: Prepared | null = null;
    if (input.content !== undefined) {
      const content = canonicalContent(input.content);
      const kind = isRelay(content) ? 'relay' : 'bulletin';
      if (kind !== found.programme.kind) {
        const was = found.programme.kind;
        throw invalid('body.content', `a ${was} stays a ${was}; make a new programme for a ${kind}`);
      }
      // Unchanged content is not rendered (or probed) again.
      if (JSON.stringify(content) !== JSON.stringify(before.content)) {
        const area = this.areas.getVisible(actor, found.programme.areaId);
        prepared = await this.prepare(actor, area, content);
      }
    }

    const now = this.clock.now();
    const title = nfc(input.title) ?? before.title;
    const category = input.category ?? before.category;
    const content: Prepared = prepared ?? {
      kind: found.programme.kind,
      content: before.content as ProgrammeContent,
      renditionSha256: before.renditionSha256,
      sizeBytes: before.sizeBytes,
      durationMs: before.durationMs,
      loudnessLufs: before.loudnessLufs,
      relayProbe: (before.relayProbe as RelayProbe | null) ?? null,
      mediaIds: [],
    };
    const inPlace = before.status === 'draft';
    this.repo.transaction(() => {
      // Rendering took time: if someone else changed the programme meanwhile (edited, submitted, approved,
      // deleted it), this edit was made against a state that is gone and must not overwrite theirs. Checked
      // inside the write transaction, so nothing can change between the check and the write.
      const latest = this.repo.findById(id);
      const current = latest
        ? this.repo.findRevision(latest.programme.currentRevisionId)?.revision
        : undefined;
      if (!current || current.id !== before.id || editedState(current) !== stateBefore) {
        throw new AppError(
          'conflict',
          'The programme changed while this edit was being saved; reload it and try again',
        );
      }
      if (prepared) this.requireMediaStillThere(prepared.mediaIds);
      let number = before.number;
      if (inPlace) {
        this.repo.updateRevision(before.id, {
          title,
          category,
          ...(prepared
            ? {
                content: prepared.content,
                renditionSha256: prepared.renditionSha256,
                sizeBytes: prepared.sizeBytes,
                durationMs: prepared.durationMs,
                loudnessLufs: prepared.loudnessLufs,
                relayProbe: prepared.relayProbe,
              }
            : {}),
        });
        if (prepared) this.repo.setRevisionMedia(before.id, prepared.mediaIds);
        this.repo.updateProgramme(id, { title, titleSearch: foldForSearch(title), category, updatedAt: now });
      } else {
        number = this.repo.nextRevisionNumber(id);
        const revision = this.revisionRow(newId('rev'), id, number, { title, category }, content, actor, now);
        // An unchanged content keeps using the same media as the revision it was copied from.
        const mediaIds = prepared ? prepared.mediaIds : this.repo.mediaOf(before.id);
        this.repo.insertRevision(revision, mediaIds);
        this.repo.updateProgramme(id, {
          title,
          titleSearch: foldForSearch(title),
          category,
          status: 'draft',
          currentRevisionId: revision.id,
          updatedAt: now,
        });
      }
      this.event(
        id,
        number,
        'edited',
        actor,
        inPlace ? null : `revision ${number} started from revision ${before.number}`,
        now,
      );
      this.audit.record(
        actor,
        'programme.update',
        { type: 'programme', id },
        {
          revision: number,
          newRevision: !inPlace,
          changed: Object.keys(input),
          ...(input.title !== undefined ? { title } : {}),
        },
      );
    });
    return this.get(actor, id);
  }

  submit(actor: Actor, id: string): ProgrammeView {
    this.requireRole(actor, EDITORS, 'submit programmes');
    const { programme } = this.requireEditable(actor, id);
    const revision = this.requireRevision(programme.currentRevisionId).revision;
    this.requireStatus(revision, 'draft', 'submitted');
    this.transition(actor, programme, revision, 'submitted', null);
    return this.get(actor, id);
  }

  approve(actor: Actor, id: string, note: string | undefined): ProgrammeView {
    const { programme, revision } = this.requireReviewable(actor, id, 'approve');
    this.transition(actor, programme, revision, 'approved', nfc(note) ?? null);
    this.onApproved?.(id);
    return this.get(actor, id);
  }

  reject(actor: Actor, id: string, reason: string): ProgrammeView {
    const { programme, revision } = this.requireReviewable(actor, id, 'reject');
    this.transition(actor, programme, revision, 'rejected', nfc(reason));
    return this.get(actor, id);
  }

  delete(actor: Actor, id: string): void {
    this.requireRole(actor, EDITORS, 'delete programmes');
    const { programme } = this.requireEditable(actor, id);
    if (this.livePlays.hasLivePlay(id)) {
      throw new AppError(
        'in_use',
        `"${programme.title}" is being played by a command that has not expired yet`,
      );
    }
    if (this.livePlays.isScheduled?.(id)) {
      throw new AppError(
        'in_use',
        `"${programme.title}" is aired by a schedule; delete the schedule (or make it air another programme) first`,
      );
    }
    const now = this.clock.now();
    this.repo.transaction(() => {
      if (!this.repo.updateProgramme(id, { deletedAt: now, updatedAt: now })) throw notFound('Programme');
      const revision = this.requireRevision(programme.currentRevisionId).revision;
      this.event(id, revision.number, 'deleted', actor, null, now);
      this.audit.record(actor, 'programme.delete', { type: 'programme', id }, { title: programme.title });
    });
  }

  // ---------------------------------------------------------------- area jingles

  getJingles(actor: Actor, areaId: string): JinglesView {
    this.areas.getVisible(actor, areaId);
    return this.jinglesView(areaId);
  }

  updateJingles(actor: Actor, areaId: string, input: UpdateJinglesInput): JinglesView {
    this.requireRole(actor, EDITORS, 'set jingles');
    this.areas.requireActionable(actor, areaId, 'path.id');
    const current = this.repo.jinglesOf(areaId);
    const pick = (field: 'introMediaId' | 'outroMediaId'): string | null => {
      const given = input[field];
      if (given === undefined) return current?.[field] ?? null;
      if (given === null) return null;
      return this.usableMedia(actor, given, `body.${field}`).id;
    };
    const row = {
      areaId,
      introMediaId: pick('introMediaId'),
      outroMediaId: pick('outroMediaId'),
      updatedBy: actor.id,
      updatedAt: this.clock.now(),
    };
    this.repo.transaction(() => {
      this.repo.upsertJingles(row);
      this.audit.record(
        actor,
        'area.jingles_update',
        { type: 'area', id: areaId },
        { introMediaId: row.introMediaId, outroMediaId: row.outroMediaId },
      );
    });
    return this.jinglesView(areaId);
  }

  // ---------------------------------------------------------------- rules

  private requireRole(actor: Actor, roles: readonly Role[], what: string): void {
    if (!roles.includes(actor.role)) throw forbidden(`Your role (${actor.role}) cannot ${what}`);
  }

  /** Seen by those below the programme's area (who edit it if allowed) and those above (who air it). */
  private requireVisible(actor: Actor, id: string): ProgrammeWithArea {
    const found = this.repo.findById(id);
    if (!found || !inScopeOrAbove(actor, found.areaPath)) throw notFound('Programme');
    return found;
  }

  /** Visible, and in the actor's own subtree: a provincial bulletin is aired by a commune, not changed by it. */
  private requireEditable(actor: Actor, id: string): ProgrammeWithArea {
    const found = this.requireVisible(actor, id);
    if (!inScope(actor, found.areaPath)) {
      throw forbidden('The programme belongs to an area above yours: you may air it but not change it');
    }
    return found;
  }

  /**
   * A submitted revision the actor may approve or reject: an approver's role, inside their area, and never
   * their own work, whether they created the programme or wrote, edited or submitted this revision.
   */
  private requireReviewable(
    actor: Actor,
    id: string,
    verb: 'approve' | 'reject',
  ): { programme: ProgrammeRow; revision: ProgrammeRevisionRow } {
    this.requireRole(actor, APPROVERS, `${verb} programmes`);
    const found = this.requireVisible(actor, id);
    if (!inScope(actor, found.areaPath)) {
      throw forbidden(
        `The programme belongs to an area above yours: it is ${verb === 'approve' ? 'approved' : 'rejected'} there`,
      );
    }
    const { programme } = found;
    const revision = this.requireRevision(programme.currentRevisionId).revision;
    if (
      programme.createdBy === actor.id ||
      revision.createdBy === actor.id ||
      this.repo.isAuthorOf(id, revision.number, actor.id)
    ) {
      throw forbidden(
        `You cannot ${verb} a programme you created, wrote or submitted yourself: a second person must ${verb} it`,
      );
    }
    this.requireStatus(revision, 'submitted', verb === 'approve' ? 'approved' : 'rejected');
    return { programme, revision };
  }

  private requireStatus(revision: ProgrammeRevisionRow, from: ProgrammeStatus, to: ProgrammeStatus): void {
    if (revision.status !== from) {
      throw new AppError(
        'invalid_transition',
        `Revision ${revision.number} is ${revision.status}; only a ${from} revision can become ${to}`,
      );
    }
  }

  private requireRevision(id: string) {
    const found = this.repo.findRevision(id);
    if (!found) throw new Error(`programme revision ${id} is missing`);
    return found;
  }

  private usableMedia(actor: Actor, mediaId: string, field: string): MediaRow {
    try {
      return this.media.getUsable(actor, mediaId);
    } catch (err) {
      if (err instanceof AppError && err.code === 'not_found') {
        throw new AppError('not_found', `${field}: media ${mediaId} not found`);
      }
      throw err;
    }
  }

  private transition(
    actor: Actor,
    programme: ProgrammeRow,
    revision: ProgrammeRevisionRow,
    status: 'submitted' | 'approved' | 'rejected',
    note: string | null,
  ): void {
    const now = this.clock.now();
    const from: ProgrammeStatus = status === 'submitted' ? 'draft' : 'submitted';
    this.repo.transaction(() => {
      // The status is checked again by the UPDATE itself: of two approvals (or an approval and an edit)
      // racing, only one moves the revision; the other is refused and writes nothing.
      const moved = this.repo.setStatus(programme.id, revision.id, from, status, {
        updatedAt: now,
        ...(status === 'approved' ? { approvedRevisionId: revision.id } : {}),
      });
      if (!moved) {
        const latest = this.repo.findRevision(revision.id)?.revision;
        if (latest && latest.status !== from) this.requireStatus(latest, from, status);
        throw new AppError('conflict', 'The programme changed meanwhile; reload it and try again');
      }
      this.event(programme.id, revision.number, status, actor, note, now);
      const action = (
        {
          submitted: 'programme.submit',
          approved: 'programme.approve',
          rejected: 'programme.reject',
        } as const
      )[status];
      this.audit.record(
        actor,
        action,
        { type: 'programme', id: programme.id },
        { title: revision.title, revision: revision.number, ...(note !== null ? { note } : {}) },
      );
    });
  }

  /** Media a bulletin was rendered from must still exist when it is saved (one may be deleted meanwhile). */
  private requireMediaStillThere(mediaIds: readonly string[]): void {
    const existing = this.repo.existingMedia(mediaIds);
    const gone = mediaIds.filter((m) => !existing.has(m));
    if (gone.length > 0) {
      throw new AppError(
        'conflict',
        `media ${gone.join(', ')} was deleted while the bulletin was being rendered; nothing was saved`,
      );
    }
  }

  private event(
    programmeId: string,
    revisionNumber: number,
    action: 'created' | 'edited' | 'submitted' | 'approved' | 'rejected' | 'deleted',
    actor: Actor,
    note: string | null,
    at: Date,
  ): void {
    this.repo.insertEvent({
      programmeId,
      revisionNumber,
      action,
      actorId: actor.id,
      actorName: actor.username,
      note,
      at,
    });
  }

  // ---------------------------------------------------------------- rendering

  /** Probes a relay, or renders a bulletin into one device-format file in the store. */
  private async prepare(actor: Actor, area: AreaRow, content: ProgrammeContent): Promise<Prepared> {
    if (isRelay(content)) {
      return {
        kind: 'relay',
        content,
        renditionSha256: null,
        sizeBytes: null,
        durationMs: null,
        loudnessLufs: null,
        relayProbe: await this.probe(content.relay.url),
        mediaIds: [],
      };
    }
    return { kind: 'bulletin', content, relayProbe: null, ...(await this.render(actor, area, content)) };
  }

  private async render(actor: Actor, area: AreaRow, content: BulletinContent) {
    // Every media item is checked before any rendering starts, so a wrong id fails at once.
    const media = content.segments.map((s, i) =>
      'mediaId' in s ? this.usableMedia(actor, s.mediaId, `body.content.segments.${i}.mediaId`) : null,
    );
    const jingles = content.jingles ? this.jinglesFor(actor, area) : { intro: null, outro: null };
    const used = [jingles.intro, ...media, jingles.outro].filter((m): m is MediaRow => m !== null);
    // A row whose file is gone from the store (a restored backup, a disk mishap) would only fail deep in
    // ffmpeg: say which recording it is.
    await Promise.all([
      ...(jingles.intro ? [this.requireFile(jingles.intro, 'jingles.introMediaId')] : []),
      ...media.map((m, i) => (m ? this.requireFile(m, `body.content.segments.${i}.mediaId`) : null)),
      ...(jingles.outro ? [this.requireFile(jingles.outro, 'jingles.outroMediaId')] : []),
    ]);

    const temporary: string[] = [];
    try {
      const parts: RenderPart[] = [];
      // Originals, not renditions: the bulletin is encoded once, from the best copy there is. With their
      // decoded durations (measured at upload), so that the render need not probe them for its time limit.
      const original = (item: MediaRow): RenderPart => ({
        file: this.media.store.pathOf(item.sha256),
        durationMs: item.durationMs,
      });
      if (jingles.intro) parts.push(original(jingles.intro));
      for (const [i, segment] of content.segments.entries()) {
        const item = media[i];
        if (item) {
          parts.push(original(item));
        } else if ('silenceMs' in segment) {
          parts.push({ silenceMs: segment.silenceMs });
        } else if ('text' in segment) {
          const { text, ...voice } = segment;
          const wav = await this.speakSegment(text, voice, i);
          temporary.push(wav);
          parts.push({ file: wav });
        }
      }
      if (jingles.outro) parts.push(original(jingles.outro));

      const out = this.media.store.tempPath('.mp3');
      temporary.push(out);
      let result: RenderResult;
      try {
        result = await this.media.audio.render(parts, out);
      } catch (err) {
        if (err instanceof AppError) throw err;
        const why = err instanceof ToolError && err.timedOut ? 'took too long and was stopped' : 'failed';
        throw withCause(
          new AppError(
            'internal',
            `Rendering the bulletin ${why} (ffmpeg); nothing was saved. It has been logged.`,
          ),
          err,
        );
      }
      const stored = await this.media.store.putFile(out);
      return {
        renditionSha256: stored.sha256,
        sizeBytes: stored.sizeBytes,
        durationMs: result.durationMs,
        loudnessLufs: result.loudnessLufs,
        mediaIds: used.map((m) => m.id),
      };
    } finally {
      await Promise.all(temporary.map((file) => fs.rm(file, { force: true })));
    }
  }

  /** Speaks one text segment; a failure names the segment, and a validation error its field. */
  private async speakSegment(
    text: string,
    voice: { voice?: Voice; rate?: number; pitch?: number },
    index: number,
  ): Promise<string> {
    const field = `body.content.segments.${index}.text`;
    try {
      return await this.speech.speak(text, voice);
    } catch (err) {
      if (err instanceof AppError && err.code === 'validation_failed') {
        const problem = err.extra.errors?.[0];
        const key =
          problem?.field && problem.field !== 'text'
            ? `body.content.segments.${index}.${problem.field}`
            : field;
        throw invalid(key, problem?.message ?? err.detail ?? 'is invalid');
      }
      const detail = err instanceof AppError ? (err.detail ?? err.message) : 'text-to-speech failed';
      throw withCause(
        new AppError(err instanceof AppError ? err.code : 'internal', `${field}: ${detail}`),
        err,
      );
    }
  }

  /** The stored original of a media item must be on disk. */
  private async requireFile(item: MediaRow, field: string): Promise<void> {
    try {
      await fs.access(this.media.store.pathOf(item.sha256));
    } catch (err) {
      throw withCause(
        new AppError(
          'internal',
          `${field}: the file of recording "${item.title}" (${item.id}) is missing from the media store; ` +
            'nothing was saved. It has been logged.',
        ),
        err,
      );
    }
  }

  /** The jingles of the area, or of the nearest area above it that has any. */
  private jinglesFor(actor: Actor, area: AreaRow): { intro: MediaRow | null; outro: MediaRow | null } {
    const chain = [area.id, ...ancestorIds(area.path)];
    const rows = new Map(this.repo.jinglesOfMany(chain).map((r) => [r.areaId, r]));
    const row = chain.map((areaId) => rows.get(areaId)).find((r) => r !== undefined);
    if (!row) return { intro: null, outro: null };
    return {
      intro: row.introMediaId ? this.usableMedia(actor, row.introMediaId, 'jingles.introMediaId') : null,
      outro: row.outroMediaId ? this.usableMedia(actor, row.outroMediaId, 'jingles.outroMediaId') : null,
    };
  }

  // ---------------------------------------------------------------- views

  private revisionRow(
    id: string,
    programmeId: string,
    number: number,
    input: { title: string; category: ProgrammeRow['category'] },
    prepared: Prepared,
    actor: Actor,
    now: Date,
  ): ProgrammeRevisionRow {
    return {
      id,
      programmeId,
      number,
      title: input.title,
      category: input.category,
      content: prepared.content,
      status: 'draft',
      renditionSha256: prepared.renditionSha256,
      sizeBytes: prepared.sizeBytes,
      durationMs: prepared.durationMs,
      loudnessLufs: prepared.loudnessLufs,
      relayProbe: prepared.relayProbe,
      createdBy: actor.id,
      createdAt: now,
    };
  }

  private summary(
    programme: ProgrammeRow,
    creatorName: string | null,
    durationMs: number | null,
    numbers: { current: number; approved: number | null },
  ): ProgrammeSummary {
    return {
      id: programme.id,
      title: programme.title,
      areaId: programme.areaId,
      kind: programme.kind,
      category: programme.category,
      status: programme.status,
      revision: numbers.current,
      approvedRevision: numbers.approved,
      durationMs,
      createdBy:
        programme.createdBy && creatorName ? { id: programme.createdBy, username: creatorName } : null,
      createdAt: programme.createdAt.toISOString(),
      updatedAt: programme.updatedAt.toISOString(),
    };
  }

  private revisionView(id: string): RevisionView {
    const { revision, authorName } = this.requireRevision(id);
    return {
      id: revision.id,
      number: revision.number,
      title: revision.title,
      category: revision.category,
      status: revision.status,
      content: revision.content as Record<string, unknown>,
      sha256: revision.renditionSha256,
      sizeBytes: revision.sizeBytes,
      durationMs: revision.durationMs,
      loudnessLufs: revision.loudnessLufs,
      relayProbe: (revision.relayProbe as RelayProbe | null) ?? null,
      createdBy: revision.createdBy && authorName ? { id: revision.createdBy, username: authorName } : null,
      createdAt: revision.createdAt.toISOString(),
    };
  }

  private view({ programme, creatorName }: ProgrammeWithArea): ProgrammeView {
    const current = this.revisionView(programme.currentRevisionId);
    const approved = programme.approvedRevisionId ? this.revisionView(programme.approvedRevisionId) : null;
    return {
      ...this.summary(programme, creatorName, current.durationMs, {
        current: current.number,
        approved: approved?.number ?? null,
      }),
      current,
      approved,
      history: this.repo.history(programme.id).map((e) => ({
        action: e.action,
        revision: e.revisionNumber,
        by: e.actorName,
        at: e.at.toISOString(),
        note: e.note,
      })),
      warnings: probeWarnings(current.relayProbe),
    };
  }

  private jinglesView(areaId: string): JinglesView {
    const row = this.repo.jinglesOf(areaId);
    return {
      areaId,
      introMediaId: row?.introMediaId ?? null,
      outroMediaId: row?.outroMediaId ?? null,
      updatedAt: row?.updatedAt.toISOString() ?? null,
    };
  }
}
