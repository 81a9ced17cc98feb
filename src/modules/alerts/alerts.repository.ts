import { and, count, desc, eq, inArray, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import {
  alerts,
  areas,
  devices,
  type AlertKind,
  type AlertRow,
  type AlertState,
} from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';

export type AlertWithDevice = AlertRow & {
  deviceName: string | null;
  areaId: string | null;
  areaPath: string | null;
  areaName: string | null;
};

export class AlertsRepository {
  constructor(private readonly db: Db) {}

  transaction<T>(fn: () => T): T {
    return this.db.transaction(() => fn());
  }

  open(): AlertRow[] {
    return this.db.select().from(alerts).where(eq(alerts.state, 'open')).all();
  }

  /** Inserts open alerts in one statement (evaluate() writes hundreds at a time); returns them in order. */
  insertMany(rows: { deviceId: string; kind: AlertKind; reasons: string[]; openedAt: Date }[]): AlertRow[] {
    if (rows.length === 0) return [];
    return this.db
      .insert(alerts)
      .values(rows.map((row) => ({ ...row, state: 'open' as const })))
      .returning()
      .all();
  }

  /** Resolves the alerts among `ids` that are still open; returns those it resolved. */
  resolveMany(ids: number[], at: Date): AlertRow[] {
    if (ids.length === 0) return [];
    return this.db
      .update(alerts)
      .set({ state: 'resolved', resolvedAt: at })
      .where(and(inArray(alerts.id, ids), eq(alerts.state, 'open')))
      .returning()
      .all();
  }

  setReasons(id: number, reasons: string[]): void {
    this.db.update(alerts).set({ reasons }).where(eq(alerts.id, id)).run();
  }

  acknowledge(id: number, by: string, at: Date, note: string | null): void {
    this.db
      .update(alerts)
      .set({ acknowledgedAt: at, acknowledgedBy: by, note })
      .where(eq(alerts.id, id))
      .run();
  }

  private withDevice() {
    return this.db
      .select({
        alert: alerts,
        deviceName: devices.name,
        areaId: devices.areaId,
        areaPath: areas.path,
        areaName: areas.name,
      })
      .from(alerts)
      .leftJoin(devices, eq(alerts.deviceId, devices.id))
      .leftJoin(areas, eq(devices.areaId, areas.id));
  }

  findById(id: number): AlertWithDevice | undefined {
    return this.findManyById([id]).get(id);
  }

  /** One query for many alerts (a webhook batch of them), keyed by id. */
  findManyById(ids: number[]): Map<number, AlertWithDevice> {
    if (ids.length === 0) return new Map();
    const rows = this.withDevice().where(inArray(alerts.id, ids)).all();
    return new Map(rows.map((row) => [row.alert.id, flatten(row)]));
  }

  /** Newest first; limited to devices in the subtree unless pathPrefix is null (admin). */
  list(filter: {
    pathPrefix: string | null;
    state?: AlertState | undefined;
    deviceId?: string | undefined;
    limit: number;
    offset: number;
  }) {
    const where: SQL[] = [];
    if (filter.pathPrefix !== null) where.push(inSubtree(areas.path, filter.pathPrefix));
    if (filter.state) where.push(eq(alerts.state, filter.state));
    if (filter.deviceId) where.push(eq(alerts.deviceId, filter.deviceId));
    const condition = and(...where);
    const rows = this.withDevice()
      .where(condition)
      .orderBy(desc(alerts.openedAt), desc(alerts.id))
      .limit(filter.limit)
      .offset(filter.offset)
      .all()
      .map(flatten);
    const total =
      this.db
        .select({ n: count() })
        .from(alerts)
        .leftJoin(devices, eq(alerts.deviceId, devices.id))
        .leftJoin(areas, eq(devices.areaId, areas.id))
        .where(condition)
        .get()?.n ?? 0;
    return { rows, total };
  }
}

/** A row of withDevice() as one object. */
function flatten({
  alert,
  ...device
}: { alert: AlertRow } & Omit<AlertWithDevice, keyof AlertRow>): AlertWithDevice {
  return { ...alert, ...device };
}
