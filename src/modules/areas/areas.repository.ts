import { count, eq, inArray, sql } from 'drizzle-orm';
import { isUniqueViolation, type Db } from '../../db/index.js';
import {
  areas,
  devices,
  media,
  programmes,
  scheduleTargets,
  users,
  warningSources,
  type AreaRow,
} from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';

/** Thrown when a write would give an area a code another area already has (the UNIQUE index decides). */
export class DuplicateAreaCode extends Error {
  override name = 'DuplicateAreaCode';
}

/** Runs a write, turning the UNIQUE index on `code` refusing it into DuplicateAreaCode. */
function guardCode<T>(write: () => T): T {
  try {
    return write();
  } catch (err) {
    // `id` is the only other unique column, and ids are fresh: a unique violation here is the code.
    if (isUniqueViolation(err)) throw new DuplicateAreaCode('code already used', { cause: err });
    throw err;
  }
}

export class AreasRepository {
  constructor(private readonly db: Db) {}

  /** Throws DuplicateAreaCode when the code is taken. */
  insert(row: AreaRow): void {
    guardCode(() => this.db.insert(areas).values(row).run());
  }

  findByCode(code: string): AreaRow | undefined {
    return this.db.select().from(areas).where(eq(areas.code, code)).get();
  }

  findById(id: string): AreaRow | undefined {
    return this.db.select().from(areas).where(eq(areas.id, id)).get();
  }

  findMany(ids: readonly string[]): AreaRow[] {
    if (ids.length === 0) return [];
    return this.db.select().from(areas).where(inArray(areas.id, ids)).all();
  }

  children(id: string): AreaRow[] {
    return this.db.select().from(areas).where(eq(areas.parentId, id)).all();
  }

  /** Every area whose path starts with `pathPrefix` (the whole table when null). */
  listSubtree(pathPrefix: string | null): AreaRow[] {
    const query = this.db.select().from(areas);
    return pathPrefix === null ? query.all() : query.where(inSubtree(areas.path, pathPrefix)).all();
  }

  /** What still hangs off an area; deleting it would orphan these. */
  dependents(id: string): {
    children: number;
    devices: number;
    users: number;
    programmes: number;
    media: number;
    warningSources: number;
  } {
    const one = (q: { c: number } | undefined) => q?.c ?? 0;
    return {
      children: one(this.db.select({ c: count() }).from(areas).where(eq(areas.parentId, id)).get()),
      devices: one(this.db.select({ c: count() }).from(devices).where(eq(devices.areaId, id)).get()),
      users: one(this.db.select({ c: count() }).from(users).where(eq(users.areaId, id)).get()),
      // Deleted programmes too: they are kept for the record of what aired, and still name the area.
      programmes: one(this.db.select({ c: count() }).from(programmes).where(eq(programmes.areaId, id)).get()),
      media: one(this.db.select({ c: count() }).from(media).where(eq(media.areaId, id)).get()),
      // Revoked ones too: the key's row stays for the record (who sent which alert) and its foreign key
      // still names the area.
      warningSources: one(
        this.db.select({ c: count() }).from(warningSources).where(eq(warningSources.areaId, id)).get(),
      ),
    };
  }

  /** Throws DuplicateAreaCode when the code is taken. */
  update(id: string, patch: Partial<Pick<AreaRow, 'name' | 'level' | 'code' | 'updatedAt'>>): void {
    guardCode(() => this.db.update(areas).set(patch).where(eq(areas.id, id)).run());
  }

  /** Moves an area and its whole subtree: every descendant's path gets the new prefix, atomically. */
  reparent(id: string, parentId: string | null, oldPath: string, newPath: string, at: Date): void {
    this.db.transaction((tx) => {
      tx.update(areas).set({ parentId, updatedAt: at }).where(eq(areas.id, id)).run();
      tx.update(areas)
        .set({ path: sql`${newPath} || substr(${areas.path}, ${oldPath.length + 1})` })
        .where(inSubtree(areas.path, oldPath))
        .run();
      // Schedules keep the path of each target for scope checks and area filters: they move with the area.
      tx.update(scheduleTargets)
        .set({ path: sql`${newPath} || substr(${scheduleTargets.path}, ${oldPath.length + 1})` })
        .where(inSubtree(scheduleTargets.path, oldPath))
        .run();
    });
  }

  delete(id: string): void {
    this.db.delete(areas).where(eq(areas.id, id)).run();
  }
}
