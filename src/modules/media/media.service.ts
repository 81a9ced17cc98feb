import path from 'node:path';
import type { FastifyBaseLogger } from 'fastify';
import type { MediaRow } from '../../db/schema/index.js';
import { AppError, forbidden, invalid, notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import { newId } from '../../lib/ids.js';
import { inScope, inScopeOrAbove, type Actor } from '../../lib/scope.js';
import { foldForSearch } from '../../lib/text.js';
import type { Audio } from '../../media/audio.js';
import { ToolError } from '../../media/tools.js';
import { LINK_MARGIN_MS, type DownloadLinks } from '../../media/links.js';
import type { ServedFile } from '../../media/serve.js';
import type { MediaStore, ReceivedFile } from '../../media/store.js';
import type { AreasService } from '../areas/areas.service.js';
import type { AuditService } from '../audit/audit.service.js';
import type { MediaRecord, MediaRepository } from './media.repository.js';
import type { ListMediaQuery, MediaView, UploadFields } from './media.schemas.js';

export interface MediaSettings {
  maxUploadBytes: number;
  /** The device format, as config.media says now; a rendition made with other settings is not reused. */
  bitrateKbps: number;
  loudnessLufs: number;
}

/** A stored file younger than this is never removed: its upload or render may not have written its row yet. */
export const CLEANUP_MIN_AGE_MS = 3_600_000;
/** A temporary file this old belongs to no upload still running (a 200 MB upload over 4G takes well under it). */
const TEMP_MAX_AGE_MS = 6 * 3_600_000;

export function toMediaView(record: MediaRecord): MediaView {
  const row = record.media;
  return {
    id: row.id,
    title: row.title,
    originalName: row.originalName,
    format: row.format,
    durationMs: row.durationMs,
    sizeBytes: row.sizeBytes,
    sha256: row.sha256,
    loudnessLufs: row.loudnessLufs,
    createdAt: row.createdAt.toISOString(),
    createdBy:
      row.createdBy && record.creatorName ? { id: row.createdBy, username: record.creatorName } : null,
    areaId: row.areaId,
    rendition: {
      sha256: row.renditionSha256,
      sizeBytes: row.renditionSizeBytes,
      durationMs: row.renditionDurationMs,
      loudnessLufs: row.renditionLoudnessLufs,
      bitrateKbps: row.renditionBitrateKbps,
    },
  };
}

/** Longest file name kept (filesystems allow 255 bytes; anything longer was made up by the client). */
export const MAX_FILE_NAME = 255;
/**
 * Control characters, and the bidirectional controls that make "báo\u202Egpj.mp3" display as "báo3pm.jpg":
 * nothing a person typed, so dropped from names.
 */
const UNPRINTABLE = /[\p{Cc}\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;

/**
 * The file name as stored: NFC (macOS sends decomposed names), without control characters, and without
 * any folder (the parser keeps only the last part of `C:\\…\\x.mp3` or `../x.mp3`; this is its second line).
 * Only ever shown, never used as a path. Null when nothing is left; 400 when absurdly long.
 */
export function cleanFileName(name: string | null): string | null {
  if (!name) return null;
  const base = name.normalize('NFC').replace(UNPRINTABLE, '').split(/[\\/]/).pop()?.trim() ?? '';
  if ([...base].length > MAX_FILE_NAME) {
    throw invalid('body.file', `the file name is longer than ${MAX_FILE_NAME} characters`);
  }
  return base === '' || base === '.' || base === '..' ? null : base;
}

/** "Thông báo.mp3" → "Thông báo", at most 200 characters (whole code points: no half emoji). */
function titleFromName(name: string | null): string | null {
  if (!name) return null;
  const ext = path.extname(name);
  const title = [...(ext && ext !== name ? name.slice(0, -ext.length) : name)].slice(0, 200).join('').trim();
  return title || null;
}

/**
 * Uploaded recordings. Visibility follows the area tree both ways: a user sees media of their own subtree
 * (to manage it) and of the areas above them (a provincial announcement aired in every commune), plus media
 * of no area (an admin's, for everyone). Changing or deleting is for the subtree only.
 */
export class MediaService {
  constructor(
    private readonly repo: MediaRepository,
    private readonly areas: AreasService,
    private readonly audit: AuditService,
    readonly store: MediaStore,
    readonly links: DownloadLinks,
    readonly audio: Audio,
    private readonly settings: MediaSettings,
    private readonly clock: Clock,
    private readonly log: FastifyBaseLogger,
  ) {}

  get maxUploadBytes(): number {
    return this.settings.maxUploadBytes;
  }

  private visible(actor: Actor, record: MediaRecord): boolean {
    return record.media.areaId === null || inScopeOrAbove(actor, record.areaPath ?? '');
  }

  private getRecord(actor: Actor, id: string): MediaRecord {
    const record = this.repo.findById(id);
    if (!record || !this.visible(actor, record)) throw notFound('Media');
    return record;
  }

  /** A media item by id, whoever may see it: for what the operator configured (the emergency signal). */
  find(id: string): MediaRow | undefined {
    return this.repo.findById(id)?.media;
  }

  /** A media item the actor may see and use in a programme; 404 otherwise (nothing outside is revealed). */
  getUsable(actor: Actor, mediaId: string): MediaRow {
    return this.getRecord(actor, mediaId).media;
  }

  get(actor: Actor, id: string): MediaView {
    return toMediaView(this.getRecord(actor, id));
  }

  list(actor: Actor, query: ListMediaQuery) {
    const search = query.q ? foldForSearch(query.q) : undefined;
    const { items, total } = this.repo.list({
      visibleFrom: actor.areaPath,
      ...(search ? { search } : {}),
      limit: query.limit,
      offset: query.offset,
    });
    return { items: items.map(toMediaView), total, limit: query.limit, offset: query.offset };
  }

  /** The device rendition, for a user who may see the media. */
  audioFile(actor: Actor, id: string): ServedFile {
    const row = this.getRecord(actor, id).media;
    return {
      path: this.store.pathOf(row.renditionSha256),
      sha256: row.renditionSha256,
      sizeBytes: row.renditionSizeBytes,
    };
  }

  /**
   * Stores an upload that `received` holds in a temporary file (the caller removes it whatever happens):
   * reads what it really is (415/422 from Audio.inspect), measures it, renders the device format, and keeps
   * both files in the store. The same original with the same device settings is rendered only once.
   */
  async upload(
    actor: Actor,
    received: ReceivedFile,
    originalName: string | null,
    fields: UploadFields,
  ): Promise<MediaView> {
    // Cheap checks first: no ffmpeg run for a request that is refused anyway.
    const areaId =
      fields.areaId !== undefined
        ? this.areas.requireActionable(actor, fields.areaId, 'areaId').id
        : actor.areaId;
    const fileName = cleanFileName(originalName);
    const title = fields.title?.normalize('NFC') ?? titleFromName(fileName);
    if (!title) throw invalid('body.title', 'is required when the file has no name');

    const { bitrateKbps, loudnessLufs: targetLufs } = this.settings;
    let rendered: Pick<
      MediaRow,
      | 'format'
      | 'durationMs'
      | 'loudnessLufs'
      | 'renditionSha256'
      | 'renditionSizeBytes'
      | 'renditionDurationMs'
      | 'renditionLoudnessLufs'
    >;
    const previous = this.repo.findRendered(received.sha256, bitrateKbps, targetLufs);
    if (previous && (await this.store.touch(previous.renditionSha256))) {
      rendered = previous;
    } else {
      const info = await this.audio.inspect(received.tempPath);
      const out = this.store.tempPath('.mp3');
      try {
        // The decoded duration, not the header's claim, sets the time limits of what follows.
        const { loudnessLufs, result } = await this.processed(received, async () => ({
          loudnessLufs: await this.audio.loudness(received.tempPath, info.durationMs),
          result: await this.audio.render([{ file: received.tempPath, durationMs: info.durationMs }], out),
        }));
        const rendition = await this.store.putFile(out);
        rendered = {
          format: info.format,
          durationMs: info.durationMs,
          loudnessLufs,
          renditionSha256: rendition.sha256,
          renditionSizeBytes: rendition.sizeBytes,
          renditionDurationMs: result.durationMs,
          renditionLoudnessLufs: result.loudnessLufs,
        };
      } finally {
        await this.store.discard(out);
      }
    }
    const original = await this.store.adopt(received);

    const row: MediaRow = {
      id: newId('med'),
      areaId,
      title,
      titleSearch: foldForSearch(title),
      originalName: fileName,
      format: rendered.format,
      durationMs: rendered.durationMs,
      sizeBytes: original.sizeBytes,
      sha256: original.sha256,
      loudnessLufs: rendered.loudnessLufs,
      renditionSha256: rendered.renditionSha256,
      renditionSizeBytes: rendered.renditionSizeBytes,
      renditionDurationMs: rendered.renditionDurationMs,
      renditionLoudnessLufs: rendered.renditionLoudnessLufs,
      renditionBitrateKbps: bitrateKbps,
      renditionTargetLufs: targetLufs,
      createdBy: actor.id,
      createdAt: this.clock.now(),
    };
    this.repo.insert(row);
    this.audit.record(
      actor,
      'media.upload',
      { type: 'media', id: row.id },
      {
        title,
        areaId,
        format: row.format,
        durationMs: row.durationMs,
        sizeBytes: row.sizeBytes,
        sha256: row.sha256,
        reusedRendition: previous !== undefined && rendered === previous,
      },
    );
    return toMediaView({ media: row, areaPath: null, creatorName: actor.username });
  }

  /**
   * Runs ffmpeg work on a file that Audio.inspect accepted. If ffmpeg still fails on it (a stream that
   * decodes but cannot be resampled or encoded, or a run over its time limit), that is the file's doing:
   * 422 audio_undecodable, with ffmpeg's complaint in the log, never a 500. A tool that cannot even start is
   * the server's fault and stays one.
   */
  private async processed<T>(received: ReceivedFile, work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (err) {
      if (!(err instanceof ToolError) || err.message.startsWith('could not start')) throw err;
      this.log.warn(
        { sha256: received.sha256, error: err.message, stderr: err.stderr.slice(-2000) },
        'an accepted upload could not be processed',
      );
      throw new AppError(
        'audio_undecodable',
        err.timedOut
          ? 'the audio took longer to process than allowed'
          : 'the audio could not be processed (damaged or unusual encoding)',
      );
    }
  }

  /**
   * Deletes a media item of the actor's subtree (409 in_use while a programme or a jingle uses it). Its files
   * stay until the clean-up finds nothing else naming them.
   */
  delete(actor: Actor, id: string): void {
    const record = this.getRecord(actor, id);
    const mine = record.areaPath === null ? actor.areaPath === null : inScope(actor, record.areaPath);
    if (!mine) throw forbidden('This media belongs to a higher area; only its own area can delete it');
    const usage = this.repo.usage(id);
    if (usage.programmes.length > 0 || usage.jingleAreas.length > 0) {
      const parts: string[] = [];
      if (usage.programmes.length > 0) {
        parts.push(`programmes ${usage.programmes.map((p) => `"${p.title}" (${p.id})`).join(', ')}`);
      }
      if (usage.jingleAreas.length > 0) {
        parts.push(`the jingles of ${usage.jingleAreas.map((a) => `"${a.name}" (${a.id})`).join(', ')}`);
      }
      throw new AppError('in_use', `Used by ${parts.join(' and ')}`);
    }
    this.repo.delete(id);
    this.audit.record(
      actor,
      'media.delete',
      { type: 'media', id },
      { title: record.media.title, sha256: record.media.sha256 },
    );
  }

  /**
   * Removes stored files that nothing names any more: no media row (original or rendition), no programme
   * revision, no command still live or within LINK_MARGIN_MS of its expiry (devices may be downloading
   * it). Files younger than CLEANUP_MIN_AGE_MS are kept: their row may not be written yet.
   */
  async cleanup(): Promise<{ removed: number; bytes: number; temps: number }> {
    const now = this.clock.now().getTime();
    // Links are valid until the command's expiry plus LINK_MARGIN_MS, rounded up to the second (urlFor):
    // one more second here, so that no valid link ever names a removed file.
    const keep = this.repo.referencedHashes(new Date(now - LINK_MARGIN_MS - 1000));
    const olderThan = new Date(now - CLEANUP_MIN_AGE_MS);
    let removed = 0;
    let bytes = 0;
    for await (const entry of this.store.list()) {
      if (keep.has(entry.sha256) || entry.modifiedAt >= olderThan) continue;
      if (await this.store.removeIfOlderThan(entry.sha256, olderThan)) {
        removed++;
        bytes += entry.sizeBytes;
      }
    }
    const temps = await this.store.removeTempsOlderThan(new Date(now - TEMP_MAX_AGE_MS));
    if (removed > 0 || temps > 0) {
      this.log.info({ removed, bytes, temps }, 'media clean-up removed unreferenced files');
    } else {
      this.log.debug('media clean-up: nothing to remove');
    }
    return { removed, bytes, temps };
  }
}
