import { and, desc, eq, gt, isNotNull, isNull, or, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import {
  areaJingles,
  areas,
  commands,
  emergencies,
  media,
  programmeMedia,
  programmeRevisions,
  programmes,
  users,
  type MediaRow,
} from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';

/** A media row with what its view and its visibility need. */
export interface MediaRecord {
  media: MediaRow;
  /** Materialised path of its area; null when it belongs to every area. */
  areaPath: string | null;
  creatorName: string | null;
}

const HASH = /[0-9a-f]{64}/g;

/**
 * Media visible from an area path: in its subtree, on the way up to it (a province's recordings are used
 * by its communes), or of no area at all. `path` null (an admin): everything.
 */
function visibleFrom(path: string | null): SQL | undefined {
  if (path === null) return undefined;
  return or(
    isNull(media.areaId),
    inSubtree(areas.path, path),
    // An ancestor's path is a prefix of ours.
    sql`substr(${path}, 1, length(${areas.path})) = ${areas.path}`,
  );
}

export class MediaRepository {
  constructor(private readonly db: Db) {}

  insert(row: MediaRow): void {
    this.db.insert(media).values(row).run();
  }

  private select() {
    return this.db
      .select({ media, areaPath: areas.path, creatorName: users.username })
      .from(media)
      .leftJoin(areas, eq(media.areaId, areas.id))
      .leftJoin(users, eq(media.createdBy, users.id));
  }

  findById(id: string): MediaRecord | undefined {
    return this.select().where(eq(media.id, id)).get();
  }

  /** Newest first; `search` is already folded (foldForSearch) and matched anywhere in the folded title. */
  list(filter: { visibleFrom: string | null; search?: string; limit: number; offset: number }): {
    items: MediaRecord[];
    total: number;
  } {
    const where = and(
      visibleFrom(filter.visibleFrom),
      // instr, not LIKE: `%` and `_` typed by a user are plain characters.
      filter.search ? sql`instr(${media.titleSearch}, ${filter.search}) > 0` : undefined,
    );
    const items = this.select()
      .where(where)
      .orderBy(desc(media.createdAt), desc(media.id))
      .limit(filter.limit)
      .offset(filter.offset)
      .all();
    const total =
      this.db
        .select({ n: sql<number>`count(*)` })
        .from(media)
        .leftJoin(areas, eq(media.areaId, areas.id))
        .where(where)
        .get()?.n ?? 0;
    return { items, total };
  }

  /** A row made from the same original with the same device settings, whose rendition can be reused. */
  findRendered(sha256: string, bitrateKbps: number, targetLufs: number): MediaRow | undefined {
    return this.db
      .select()
      .from(media)
      .where(
        and(
          eq(media.sha256, sha256),
          eq(media.renditionBitrateKbps, bitrateKbps),
          eq(media.renditionTargetLufs, targetLufs),
        ),
      )
      .orderBy(desc(media.createdAt))
      .get();
  }

  /** What keeps a media item from being deleted: programmes (not deleted) whose revisions use it, jingles. */
  usage(mediaId: string): {
    programmes: { id: string; title: string }[];
    jingleAreas: { id: string; name: string }[];
  } {
    const usedBy = this.db
      .selectDistinct({ id: programmes.id, title: programmes.title })
      .from(programmeMedia)
      .innerJoin(programmeRevisions, eq(programmeMedia.revisionId, programmeRevisions.id))
      .innerJoin(programmes, eq(programmeRevisions.programmeId, programmes.id))
      .where(and(eq(programmeMedia.mediaId, mediaId), isNull(programmes.deletedAt)))
      .orderBy(programmes.title)
      .all();
    const jingleAreas = this.db
      .select({ id: areas.id, name: areas.name })
      .from(areaJingles)
      .innerJoin(areas, eq(areaJingles.areaId, areas.id))
      .where(or(eq(areaJingles.introMediaId, mediaId), eq(areaJingles.outroMediaId, mediaId)))
      .orderBy(areas.name)
      .all();
    return { programmes: usedBy, jingleAreas };
  }

  /**
   * Deletes the row. Revisions of deleted programmes may still list it in programme_media (an index of use,
   * kept for live programmes only by the caller's check): those links go first, or the foreign key refuses.
   */
  delete(id: string): void {
    this.db.transaction((tx) => {
      tx.delete(programmeMedia).where(eq(programmeMedia.mediaId, id)).run();
      tx.delete(media).where(eq(media.id, id)).run();
    });
  }

  /**
   * Every hash the store must keep: originals and renditions of media rows, rendered programme revisions,
   * and any hash named in the parameters of a command that expires after `liveAfter` (its devices may
   * still be downloading). Every emergency's rendition, of every revision (those its play commands name),
   * is kept for good: it is the record of what was broadcast as a warning.
   */
  referencedHashes(liveAfter: Date): Set<string> {
    const keep = new Set<string>();
    for (const row of this.db
      .select({ sha256: media.sha256, rendition: media.renditionSha256 })
      .from(media)
      .all()) {
      keep.add(row.sha256);
      keep.add(row.rendition);
    }
    for (const row of this.db
      .select({ sha256: programmeRevisions.renditionSha256 })
      .from(programmeRevisions)
      .where(isNotNull(programmeRevisions.renditionSha256))
      .all()) {
      if (row.sha256) keep.add(row.sha256);
    }
    for (const row of this.db
      .select({ params: sql<string>`CAST(${commands.params} AS TEXT)` })
      .from(commands)
      .where(or(gt(commands.expiresAt, liveAfter), isNotNull(commands.emergencyId)))
      .all()) {
      for (const hash of row.params.match(HASH) ?? []) keep.add(hash);
    }
    for (const row of this.db.select({ sha256: emergencies.renditionSha256 }).from(emergencies).all()) {
      keep.add(row.sha256);
    }
    return keep;
  }
}
