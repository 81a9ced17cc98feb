import { and, asc, count, eq, inArray, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { areas, devices, type DeviceKind, type DeviceRow } from '../../db/schema/index.js';
import { likePrefix } from '../../lib/scope.js';
import type { DeviceState } from '../../protocol/index.js';

export type DeviceWithPath = DeviceRow & { areaPath: string };

export interface PresenceChange {
  deviceId: string;
  online: boolean;
  at: Date;
}

export interface StateReport {
  deviceId: string;
  state: DeviceState;
  at: Date;
}

const inSubtree = (pathPrefix: string) => sql`${areas.path} LIKE ${likePrefix(pathPrefix)} ESCAPE '\\'`;

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
    kind?: DeviceKind;
    online?: boolean;
    limit: number;
    offset: number;
  }): { rows: DeviceRow[]; total: number } {
    const where: SQL[] = [];
    if (filter.pathPrefix !== null) where.push(inSubtree(filter.pathPrefix));
    if (filter.kind) where.push(eq(devices.kind, filter.kind));
    if (filter.online !== undefined) where.push(eq(devices.online, filter.online));
    const condition = and(...where);
    const rows = this.db
      .select({ device: devices })
      .from(devices)
      .innerJoin(areas, eq(devices.areaId, areas.id))
      .where(condition)
      .orderBy(asc(devices.sortName), asc(devices.id))
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
      .where(sql.join(pathPrefixes.map(inSubtree), sql` OR `))
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

  /** Nothing survives a restart of the embedded broker: every device starts offline. */
  markAllOffline(): void {
    this.db.update(devices).set({ online: false }).where(eq(devices.online, true)).run();
  }

  applyPresence(changes: readonly PresenceChange[]): void {
    this.db.transaction((tx) => {
      for (const c of changes) {
        tx.update(devices).set({ online: c.online, lastSeenAt: c.at }).where(eq(devices.id, c.deviceId)).run();
      }
    });
  }

  applyStates(reports: readonly StateReport[]): void {
    this.db.transaction((tx) => {
      for (const r of reports) {
        tx.update(devices)
          .set({
            firmware: r.state.firmware,
            volume: r.state.volume,
            playing: r.state.playing,
            stateAt: r.at,
            lastSeenAt: r.at,
          })
          .where(eq(devices.id, r.deviceId))
          .run();
      }
    });
  }

  touch(seen: ReadonlyMap<string, Date>): void {
    this.db.transaction((tx) => {
      for (const [deviceId, at] of seen) {
        tx.update(devices).set({ lastSeenAt: at }).where(eq(devices.id, deviceId)).run();
      }
    });
  }
}
