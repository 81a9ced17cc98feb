import { and, asc, count, desc, eq, inArray, isNull, lt, or, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import {
  areas,
  devices,
  scheduleTargets,
  type DeviceKind,
  type DeviceRow,
  type HealthLevel,
} from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';

export type DeviceWithPath = DeviceRow & { areaPath: string };

const SUBTREES_PER_QUERY = 200;
const IDS_PER_QUERY = 1_000;

function* chunks<T>(items: readonly T[], size: number): Generator<T[]> {
  for (let i = 0; i < items.length; i += size) yield items.slice(i, i + size);
}

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
    drillParticipant?: boolean | undefined;
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
    if (filter.drillParticipant !== undefined)
      where.push(eq(devices.drillParticipant, filter.drillParticipant));
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

  /**
   * Ids of every device in any of the given subtrees. The subtrees go to SQLite a batch at a time: one OR
   * per subtree nests the expression, and SQLite refuses trees deeper than 1,000 (SQLITE_MAX_EXPR_DEPTH).
   */
  idsInSubtrees(pathPrefixes: readonly string[]): string[] {
    const ids: string[] = [];
    for (const batch of chunks(pathPrefixes, SUBTREES_PER_QUERY)) {
      const rows = this.db
        .select({ id: devices.id })
        .from(devices)
        .innerJoin(areas, eq(devices.areaId, areas.id))
        .where(
          sql.join(
            batch.map((p) => inSubtree(areas.path, p)),
            sql` OR `,
          ),
        )
        .all();
      for (const r of rows) ids.push(r.id);
    }
    return ids;
  }

  /** Batched to stay well under SQLite's limit on bound variables (32,766) whatever the caller sends. */
  findManyWithPath(ids: readonly string[]): DeviceWithPath[] {
    const found: DeviceWithPath[] = [];
    for (const batch of chunks(ids, IDS_PER_QUERY)) {
      const rows = this.db
        .select({ device: devices, areaPath: areas.path })
        .from(devices)
        .innerJoin(areas, eq(devices.areaId, areas.id))
        .where(inArray(devices.id, batch))
        .all();
      for (const r of rows) found.push({ ...r.device, areaPath: r.areaPath });
    }
    return found;
  }

  update(
    id: string,
    patch: Partial<
      Pick<
        DeviceRow,
        'name' | 'sortName' | 'areaId' | 'secretHash' | 'lat' | 'lon' | 'drillParticipant' | 'updatedAt'
      >
    >,
  ): void {
    this.db.transaction((tx) => {
      tx.update(devices).set(patch).where(eq(devices.id, id)).run();
      if (patch.areaId === undefined) return;
      // Schedules that name the device keep its area's path for scope checks and area filters.
      tx.update(scheduleTargets)
        .set({ path: sql`(SELECT ${areas.path} FROM ${areas} WHERE ${areas.id} = ${patch.areaId})` })
        .where(eq(scheduleTargets.deviceId, id))
        .run();
    });
  }

  delete(id: string): void {
    this.db.delete(devices).where(eq(devices.id, id)).run();
  }

  names(): { id: string; name: string; sortName: string }[] {
    return this.db
      .select({ id: devices.id, name: devices.name, sortName: devices.sortName })
      .from(devices)
      .all();
  }

  setSortNames(rows: readonly { id: string; sortName: string }[]): void {
    this.db.transaction((tx) => {
      for (const r of rows)
        tx.update(devices).set({ sortName: r.sortName }).where(eq(devices.id, r.id)).run();
    });
  }
}
