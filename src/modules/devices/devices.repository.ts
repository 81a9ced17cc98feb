import { and, asc, count, desc, eq, inArray, isNull, lt, or, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { areas, devices, type DeviceKind, type DeviceRow, type HealthLevel } from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';

export type DeviceWithPath = DeviceRow & { areaPath: string };

export type DeviceSort = 'name' | 'lastSeenAt' | '-lastSeenAt';

export class DevicesRepository {
  private readonly secretHashById;

  constructor(private readonly db: Db) {
    // Checked on every MQTT CONNECT, so prepared once.
    this.secretHashById = db
      .select({ secretHash: devices.secretHash })
      .from(devices)
      .where(eq(devices.id, sql.placeholder('id')))
      .prepare();
  }

  insert(row: typeof devices.$inferInsert): void {
    this.db.insert(devices).values(row).run();
  }

  findById(id: string): DeviceWithPath | undefined {
    const row = this.db
      .select({ device: devices, areaPath: areas.path })
      .from(devices)
      .innerJoin(areas, eq(devices.areaId, areas.id))
      .where(eq(devices.id, id))
      .get();
    return row && { ...row.device, areaPath: row.areaPath };
  }

  secretHash(id: string): string | undefined {
    return this.secretHashById.get({ id })?.secretHash;
  }

  list(filter: {
    pathPrefix: string | null;
    kind?: DeviceKind | undefined;
    online?: boolean | undefined;
    health?: HealthLevel | undefined;
    firmware?: string | undefined;
    /** Only devices not heard from since this instant (never heard from included). */
    silentSince?: Date | undefined;
    sort: DeviceSort;
    limit: number;
    offset: number;
  }): { rows: DeviceRow[]; total: number } {
    const where: SQL[] = [];
    if (filter.pathPrefix !== null) where.push(inSubtree(areas.path, filter.pathPrefix));
    if (filter.kind) where.push(eq(devices.kind, filter.kind));
    if (filter.online !== undefined) where.push(eq(devices.online, filter.online));
    if (filter.health) where.push(eq(devices.health, filter.health));
    if (filter.firmware) where.push(eq(devices.firmware, filter.firmware));
    if (filter.silentSince)
      where.push(or(isNull(devices.lastSeenAt), lt(devices.lastSeenAt, filter.silentSince))!);
    const condition = and(...where);
    // Never-seen devices sort as the longest silent.
    const order = {
      name: [asc(devices.sortName), asc(devices.id)],
      lastSeenAt: [sql`${devices.lastSeenAt} IS NOT NULL`, asc(devices.lastSeenAt), asc(devices.id)],
      '-lastSeenAt': [desc(devices.lastSeenAt), asc(devices.id)],
    }[filter.sort];
    const rows = this.db
      .select({ device: devices })
      .from(devices)
      .innerJoin(areas, eq(devices.areaId, areas.id))
      .where(condition)
      .orderBy(...order)
      .limit(filter.limit)
      .offset(filter.offset)
      .all()
      .map((r) => r.device);
    const total =
      this.db
        .select({ n: count() })
        .from(devices)
        .innerJoin(areas, eq(devices.areaId, areas.id))
        .where(condition)
        .get()?.n ?? 0;
    return { rows, total };
  }

  /** Ids of every device in any of the given subtrees. */
  idsInSubtrees(pathPrefixes: readonly string[]): string[] {
    if (pathPrefixes.length === 0) return [];
    return this.db
      .select({ id: devices.id })
      .from(devices)
      .innerJoin(areas, eq(devices.areaId, areas.id))
      .where(
        sql.join(
          pathPrefixes.map((p) => inSubtree(areas.path, p)),
          sql` OR `,
        ),
      )
      .all()
      .map((r) => r.id);
  }

  findManyWithPath(ids: readonly string[]): DeviceWithPath[] {
    if (ids.length === 0) return [];
    return this.db
      .select({ device: devices, areaPath: areas.path })
      .from(devices)
      .innerJoin(areas, eq(devices.areaId, areas.id))
      .where(inArray(devices.id, ids))
      .all()
      .map((r) => ({ ...r.device, areaPath: r.areaPath }));
  }

  update(
    id: string,
    patch: Partial<Pick<DeviceRow, 'name' | 'sortName' | 'areaId' | 'secretHash' | 'updatedAt'>>,
  ): void {
    this.db.update(devices).set(patch).where(eq(devices.id, id)).run();
  }

  delete(id: string): void {
    this.db.delete(devices).where(eq(devices.id, id)).run();
  }
}
