import { and, asc, count, eq, gte, isNull, lte, type SQL } from 'drizzle-orm';
import { isUniqueViolation, type Db } from '../../db/index.js';
import {
  areas,
  capMessages,
  devices,
  warningSources,
  type CapMessageRow,
  type WarningSourceRow,
} from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';

/** A device with a position, as polygon and circle targets need it, and where it stands in the area tree. */
export interface PositionedDeviceRow {
  id: string;
  lat: number;
  lon: number;
  areaPath: string;
}

/** Degrees of latitude and longitude around which candidates are read (null: no limit on that axis). */
export interface BoundingBox {
  minLat: number;
  maxLat: number;
  minLon: number | null;
  maxLon: number | null;
}

export type WarningSourceWithArea = WarningSourceRow & { areaName: string; areaPath: string };

/** Thrown when the same principal stored the same (sender, identifier) first: the UNIQUE index decides. */
export class DuplicateCapMessage extends Error {
  override name = 'DuplicateCapMessage';
}

/** Queries of the CAP ingest (cap_messages, device positions) and of warning sources. */
export class CapRepository {
  constructor(private readonly db: Db) {}

  /** What this principal (a warning source's or a user's id) stored under (sender, identifier). */
  findMessage(principal: string, sender: string, identifier: string): CapMessageRow | undefined {
    return this.db
      .select()
      .from(capMessages)
      .where(
        and(
          eq(capMessages.sender, sender),
          eq(capMessages.identifier, identifier),
          eq(capMessages.principal, principal),
        ),
      )
      .get();
  }

  /**
   * The messages a reference to (sender, identifier) may name: the principal's own (at most one), or with
   * principal null (an admin) every principal's, oldest first.
   */
  findReferenced(principal: string | null, sender: string, identifier: string): CapMessageRow[] {
    const where: SQL[] = [eq(capMessages.sender, sender), eq(capMessages.identifier, identifier)];
    if (principal !== null) where.push(eq(capMessages.principal, principal));
    return this.db
      .select()
      .from(capMessages)
      .where(and(...where))
      .orderBy(asc(capMessages.id))
      .all();
  }

  /** Throws DuplicateCapMessage when (principal, sender, identifier) is already stored. */
  insertMessage(row: Omit<CapMessageRow, 'id'>): CapMessageRow {
    try {
      return this.db.insert(capMessages).values(row).returning().get();
    } catch (err) {
      if (isUniqueViolation(err)) throw new DuplicateCapMessage('already stored', { cause: err });
      throw err;
    }
  }

  /**
   * Devices with a position inside the box (a cheap pre-filter on two columns; the exact shape test is
   * turf's), drill participants only when `drillOnly`. Scope is not applied here: the caller tells apart what
   * is inside and outside the sender's area, to say which of the two a shape reached.
   */
  positionedDevices(box: BoundingBox, drillOnly: boolean): PositionedDeviceRow[] {
    const where: SQL[] = [gte(devices.lat, box.minLat), lte(devices.lat, box.maxLat)];
    if (box.minLon !== null && box.maxLon !== null) {
      where.push(gte(devices.lon, box.minLon), lte(devices.lon, box.maxLon));
    }
    if (drillOnly) where.push(eq(devices.drillParticipant, true));
    return this.db
      .select({ id: devices.id, lat: devices.lat, lon: devices.lon, areaPath: areas.path })
      .from(devices)
      .innerJoin(areas, eq(devices.areaId, areas.id))
      .where(and(...where))
      .all()
      .filter((d): d is PositionedDeviceRow => d.lat !== null && d.lon !== null);
  }

  /** Devices in the subtree of the area with this path (drill participants only when `drillOnly`). */
  countDevicesIn(areaPath: string, drillOnly: boolean): number {
    const where: SQL[] = [inSubtree(areas.path, areaPath)];
    if (drillOnly) where.push(eq(devices.drillParticipant, true));
    return (
      this.db
        .select({ n: count() })
        .from(devices)
        .innerJoin(areas, eq(devices.areaId, areas.id))
        .where(and(...where))
        .get()?.n ?? 0
    );
  }

  // ---------------------------------------------------------------------------------------------------
  // Warning sources

  insertSource(row: WarningSourceRow): void {
    this.db.insert(warningSources).values(row).run();
  }

  private sourcesWithArea() {
    return this.db
      .select({ source: warningSources, areaName: areas.name, areaPath: areas.path })
      .from(warningSources)
      .innerJoin(areas, eq(warningSources.areaId, areas.id));
  }

  findSource(id: string): WarningSourceWithArea | undefined {
    const row = this.sourcesWithArea().where(eq(warningSources.id, id)).get();
    return row && { ...row.source, areaName: row.areaName, areaPath: row.areaPath };
  }

  /** The source holding this key (by its hash, on the unique index), revoked or not. */
  findSourceByKeyHash(keyHash: string): WarningSourceWithArea | undefined {
    const row = this.sourcesWithArea().where(eq(warningSources.keyHash, keyHash)).get();
    return row && { ...row.source, areaName: row.areaName, areaPath: row.areaPath };
  }

  listSources(): WarningSourceWithArea[] {
    return this.sourcesWithArea()
      .orderBy(asc(warningSources.createdAt), asc(warningSources.id))
      .all()
      .map((row) => ({ ...row.source, areaName: row.areaName, areaPath: row.areaPath }));
  }

  /** False when it was already revoked (or does not exist). */
  revokeSource(id: string, at: Date): boolean {
    const result = this.db
      .update(warningSources)
      .set({ revokedAt: at })
      .where(and(eq(warningSources.id, id), isNull(warningSources.revokedAt)))
      .run();
    return result.changes > 0;
  }

  touchSource(id: string, at: Date): void {
    this.db.update(warningSources).set({ lastUsedAt: at }).where(eq(warningSources.id, id)).run();
  }
}
