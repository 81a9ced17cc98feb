import { aliasedTable, and, asc, count, desc, eq, inArray, isNull, or, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import {
  areaJingles,
  areas,
  media,
  programmeEvents,
  programmeMedia,
  programmeRevisions,
  programmes,
  users,
  type ProgrammeRevisionRow,
  type ProgrammeRow,
  type ProgrammeStatus,
} from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';

export type ProgrammeEventRow = typeof programmeEvents.$inferInsert;
export type AreaJinglesRow = typeof areaJingles.$inferSelect;

/** A programme with what its views and rules need: its area's path and its creator's name. */
export interface ProgrammeWithArea {
  programme: ProgrammeRow;
  areaPath: string;
  creatorName: string | null;
}

const revisionAuthor = aliasedTable(users, 'revision_author');
const currentRevision = aliasedTable(programmeRevisions, 'current_revision');
const approvedRevision = aliasedTable(programmeRevisions, 'approved_revision');

export interface ProgrammeListRow {
  programme: ProgrammeRow;
  creatorName: string | null;
  revision: number;
  approvedRevision: number | null;
  durationMs: number | null;
}

export class ProgrammesRepository {
  constructor(private readonly db: Db) {}

  /**
   * Runs `fn` in one transaction (better-sqlite3 transactions are synchronous). IMMEDIATE: the write lock
   * is taken before the first read, so that what `fn` checks is still true when it writes, even with a
   * second server process on the same database file.
   */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(() => fn(), { behavior: 'immediate' });
  }

  /**
   * Moves a revision from `from` to `to`, and the programme with it, only if the revision is still in
   * `from` and still the current revision of a programme that is not deleted. False when another request
   * got there first: the caller throws, which rolls back whatever this wrote.
   */
  setStatus(
    programmeId: string,
    revisionId: string,
    from: ProgrammeStatus,
    to: ProgrammeStatus,
    patch: { updatedAt: Date; approvedRevisionId?: string },
  ): boolean {
    const revision = this.db
      .update(programmeRevisions)
      .set({ status: to })
      .where(and(eq(programmeRevisions.id, revisionId), eq(programmeRevisions.status, from)))
      .run().changes;
    if (revision !== 1) return false;
    return (
      this.db
        .update(programmes)
        .set({ status: to, ...patch })
        .where(
          and(
            eq(programmes.id, programmeId),
            eq(programmes.currentRevisionId, revisionId),
            isNull(programmes.deletedAt),
          ),
        )
        .run().changes === 1
    );
  }

  /** Which of these media items still exist (one may have been deleted while a bulletin was rendering). */
  existingMedia(ids: readonly string[]): Set<string> {
    if (ids.length === 0) return new Set();
    return new Set(
      this.db
        .select({ id: media.id })
        .from(media)
        .where(inArray(media.id, [...new Set(ids)]))
        .all()
        .map((r) => r.id),
    );
  }

  insertProgramme(row: ProgrammeRow): void {
    this.db.insert(programmes).values(row).run();
  }

  /** Updates a programme that is not deleted; false when there is none (deleted meanwhile). */
  updateProgramme(
    id: string,
    patch: Partial<Omit<ProgrammeRow, 'id' | 'areaId' | 'kind' | 'createdBy' | 'createdAt'>>,
  ): boolean {
    return (
      this.db
        .update(programmes)
        .set(patch)
        .where(and(eq(programmes.id, id), isNull(programmes.deletedAt)))
        .run().changes === 1
    );
  }

  insertRevision(row: ProgrammeRevisionRow, mediaIds: readonly string[]): void {
    this.db.insert(programmeRevisions).values(row).run();
    this.setRevisionMedia(row.id, mediaIds);
  }

  updateRevision(
    id: string,
    patch: Partial<Omit<ProgrammeRevisionRow, 'id' | 'programmeId' | 'number' | 'createdBy' | 'createdAt'>>,
  ): void {
    this.db.update(programmeRevisions).set(patch).where(eq(programmeRevisions.id, id)).run();
  }

  /** Replaces the list of media a revision uses. */
  setRevisionMedia(revisionId: string, mediaIds: readonly string[]): void {
    this.db.delete(programmeMedia).where(eq(programmeMedia.revisionId, revisionId)).run();
    const unique = [...new Set(mediaIds)];
    if (unique.length > 0) {
      this.db
        .insert(programmeMedia)
        .values(unique.map((mediaId) => ({ revisionId, mediaId })))
        .run();
    }
  }

  mediaOf(revisionId: string): string[] {
    return this.db
      .select({ mediaId: programmeMedia.mediaId })
      .from(programmeMedia)
      .where(eq(programmeMedia.revisionId, revisionId))
      .all()
      .map((r) => r.mediaId);
  }

  insertEvent(row: ProgrammeEventRow): void {
    this.db.insert(programmeEvents).values(row).run();
  }

  /** A programme that is not deleted, with its area's path. */
  findById(id: string): ProgrammeWithArea | undefined {
    return this.db
      .select({ programme: programmes, areaPath: areas.path, creatorName: users.username })
      .from(programmes)
      .innerJoin(areas, eq(programmes.areaId, areas.id))
      .leftJoin(users, eq(programmes.createdBy, users.id))
      .where(and(eq(programmes.id, id), isNull(programmes.deletedAt)))
      .get();
  }

  findRevision(id: string): { revision: ProgrammeRevisionRow; authorName: string | null } | undefined {
    return this.db
      .select({ revision: programmeRevisions, authorName: revisionAuthor.username })
      .from(programmeRevisions)
      .leftJoin(revisionAuthor, eq(programmeRevisions.createdBy, revisionAuthor.id))
      .where(eq(programmeRevisions.id, id))
      .get();
  }

  history(programmeId: string) {
    return this.db
      .select()
      .from(programmeEvents)
      .where(eq(programmeEvents.programmeId, programmeId))
      .orderBy(asc(programmeEvents.id))
      .all();
  }

  /** Whether the user created, edited or submitted this revision: then it is theirs to not approve. */
  isAuthorOf(programmeId: string, revisionNumber: number, userId: string): boolean {
    const row = this.db
      .select({ one: sql<number>`1` })
      .from(programmeEvents)
      .where(
        and(
          eq(programmeEvents.programmeId, programmeId),
          eq(programmeEvents.revisionNumber, revisionNumber),
          eq(programmeEvents.actorId, userId),
          inArray(programmeEvents.action, ['created', 'edited', 'submitted']),
        ),
      )
      .limit(1)
      .get();
    return row !== undefined;
  }

  /**
   * Programmes a user may see: those of areas in their subtree, and those of the areas above theirs (a
   * provincial bulletin is aired by every commune). `ancestorIds` are the areas above the user's;
   * `pathPrefix` null means everything (admins).
   */
  list(filter: {
    pathPrefix: string | null;
    ancestorIds: readonly string[];
    /** Only this subtree (the `areaId` query), already checked to be visible. */
    withinPath?: string | undefined;
    status?: ProgrammeStatus | undefined;
    category?: ProgrammeRow['category'] | undefined;
    /** Folded for search (lower case, no tone marks). */
    q?: string | undefined;
    limit: number;
    offset: number;
  }): { rows: ProgrammeListRow[]; total: number } {
    const where: (SQL | undefined)[] = [isNull(programmes.deletedAt)];
    if (filter.pathPrefix !== null) {
      where.push(
        filter.ancestorIds.length > 0
          ? or(inSubtree(areas.path, filter.pathPrefix), inArray(programmes.areaId, [...filter.ancestorIds]))
          : inSubtree(areas.path, filter.pathPrefix),
      );
    }
    if (filter.withinPath !== undefined) where.push(inSubtree(areas.path, filter.withinPath));
    if (filter.status) where.push(eq(programmes.status, filter.status));
    if (filter.category) where.push(eq(programmes.category, filter.category));
    // instr, not LIKE (as for media): `%` and `_` typed by a user are plain characters.
    if (filter.q) where.push(sql`instr(${programmes.titleSearch}, ${filter.q}) > 0`);
    const condition = and(...where);
    const rows = this.db
      .select({
        programme: programmes,
        creatorName: users.username,
        revision: currentRevision.number,
        approvedRevision: approvedRevision.number,
        durationMs: currentRevision.durationMs,
      })
      .from(programmes)
      .innerJoin(areas, eq(programmes.areaId, areas.id))
      .innerJoin(currentRevision, eq(currentRevision.id, programmes.currentRevisionId))
      .leftJoin(approvedRevision, eq(approvedRevision.id, programmes.approvedRevisionId))
      .leftJoin(users, eq(programmes.createdBy, users.id))
      .where(condition)
      .orderBy(desc(programmes.updatedAt), desc(programmes.id))
      .limit(filter.limit)
      .offset(filter.offset)
      .all();
    const total =
      this.db
        .select({ n: count() })
        .from(programmes)
        .innerJoin(areas, eq(programmes.areaId, areas.id))
        .where(condition)
        .get()?.n ?? 0;
    return { rows, total };
  }

  /** Revision numbers are per programme: the next one. */
  nextRevisionNumber(programmeId: string): number {
    const row = this.db
      .select({ n: sql<number>`coalesce(max(${programmeRevisions.number}), 0)` })
      .from(programmeRevisions)
      .where(eq(programmeRevisions.programmeId, programmeId))
      .get();
    return (row?.n ?? 0) + 1;
  }

  jinglesOf(areaId: string): AreaJinglesRow | undefined {
    return this.db.select().from(areaJingles).where(eq(areaJingles.areaId, areaId)).get();
  }

  /** Jingle rows of these areas that name at least one jingle. */
  jinglesOfMany(areaIds: readonly string[]): AreaJinglesRow[] {
    if (areaIds.length === 0) return [];
    return this.db
      .select()
      .from(areaJingles)
      .where(
        and(
          inArray(areaJingles.areaId, [...areaIds]),
          or(sql`${areaJingles.introMediaId} IS NOT NULL`, sql`${areaJingles.outroMediaId} IS NOT NULL`),
        ),
      )
      .all();
  }

  upsertJingles(row: AreaJinglesRow): void {
    this.db
      .insert(areaJingles)
      .values(row)
      .onConflictDoUpdate({
        target: areaJingles.areaId,
        set: {
          introMediaId: row.introMediaId,
          outroMediaId: row.outroMediaId,
          updatedBy: row.updatedBy,
          updatedAt: row.updatedAt,
        },
      })
      .run();
  }
}
