import { and, asc, desc, eq, exists, gt, inArray, lte, or, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import {
  areas,
  commandDeliveries,
  commands,
  devices,
  users,
  type CommandRow,
  type DeliveryStatus,
} from '../../db/schema/index.js';
import { inSubtree } from '../../lib/scope.js';
import type { AckStatus } from '../../protocol/index.js';

export interface AckUpdate {
  commandId: string;
  deviceId: string;
  status: AckStatus;
  reason: string | null;
  at: Date;
}

/** Statuses an ack may move a delivery out of. A final answer (done/failed/rejected) is never overwritten,
 * and a late `received` never undoes a final one; a device's ack beats our guess of expired/offline. */
const REPLACEABLE_BY: Record<AckStatus, DeliveryStatus[]> = {
  received: ['pending', 'expired', 'offline'],
  done: ['pending', 'received', 'expired', 'offline'],
  failed: ['pending', 'received', 'expired', 'offline'],
  rejected: ['pending', 'received', 'expired', 'offline'],
};

/**
 * The statements on the hot paths (one row per target, per ack, per reconnect) are prepared once: building
 * and preparing a query per row cost several times more than SQLite's own work (bench:commands). Values
 * bound to placeholders skip drizzle's column encoding, so timestamps go in as epoch milliseconds.
 */
function prepareStatements(db: Db) {
  const p = sql.placeholder;
  const ackUpdate = (status: AckStatus) =>
    db
      .update(commandDeliveries)
      .set({ status, reason: sql`${p('reason')}`, updatedAt: sql`${p('at')}` })
      .where(
        and(
          eq(commandDeliveries.commandId, p('commandId')),
          eq(commandDeliveries.deviceId, p('deviceId')),
          inArray(commandDeliveries.status, REPLACEABLE_BY[status]),
        ),
      )
      .returning({ sentAt: commandDeliveries.sentAt })
      .prepare();
  return {
    insertDelivery: db
      .insert(commandDeliveries)
      .values({
        commandId: p('commandId'),
        deviceId: p('deviceId'),
        status: 'pending',
        // Wrapped in sql`` so that drizzle does not try to encode them: they are bound as epoch ms.
        sentAt: sql`${p('sentAt')}`,
        expiresAt: sql`${p('expiresAt')}`,
        updatedAt: sql`${p('updatedAt')}`,
      })
      .prepare(),
    ack: {
      received: ackUpdate('received'),
      done: ackUpdate('done'),
      failed: ackUpdate('failed'),
      rejected: ackUpdate('rejected'),
    } satisfies Record<AckStatus, unknown>,
    pendingFor: db
      .select({ command: commands })
      .from(commandDeliveries)
      .innerJoin(commands, eq(commandDeliveries.commandId, commands.id))
      .where(
        and(
          eq(commandDeliveries.deviceId, p('deviceId')),
          // `received` too: the device may have crashed before its final ack, or the ack may have been
          // lost; asked again, it answers with its final ack (protocol rule 2).
          inArray(commandDeliveries.status, ['pending', 'received']),
          gt(commandDeliveries.expiresAt, p('now')),
        ),
      )
      .orderBy(asc(commands.createdAt))
      .prepare(),
  };
}

export class CommandsRepository {
  private readonly statements: ReturnType<typeof prepareStatements>;

  constructor(private readonly db: Db) {
    this.statements = prepareStatements(db);
  }

  /** The command and one delivery row per target, atomically, with the audit entry written by `also`. */
  insert(
    command: CommandRow,
    targets: readonly { deviceId: string; sentAt: Date | null }[],
    also: () => void,
  ): void {
    const { insertDelivery } = this.statements;
    const expiresAt = command.expiresAt.getTime();
    const updatedAt = command.createdAt.getTime();
    this.db.transaction((tx) => {
      tx.insert(commands).values(command).run();
      for (const t of targets) {
        insertDelivery.run({
          commandId: command.id,
          deviceId: t.deviceId,
          sentAt: t.sentAt?.getTime() ?? null,
          expiresAt,
          updatedAt,
        });
      }
      also();
    });
  }

  /** Applies acks that move a delivery forward; returns those, with when the command was sent. */
  applyAcks(acks: readonly AckUpdate[]): { ack: AckUpdate; sentAt: Date | null }[] {
    return this.db.transaction(() => {
      const applied: { ack: AckUpdate; sentAt: Date | null }[] = [];
      for (const ack of acks) {
        const [row] = this.statements.ack[ack.status].all({
          commandId: ack.commandId,
          deviceId: ack.deviceId,
          reason: ack.reason,
          at: ack.at.getTime(),
        });
        if (row) applied.push({ ack, sentAt: row.sentAt });
      }
      return applied;
    });
  }

  /** Commands still waiting for this device's (final) answer and not yet expired, oldest first. */
  pendingFor(deviceId: string, now: Date): CommandRow[] {
    return this.statements.pendingFor.all({ deviceId, now: now.getTime() }).map((r) => r.command);
  }

  markSent(commandIds: readonly string[], deviceId: string, at: Date): void {
    if (commandIds.length === 0) return;
    this.db
      .update(commandDeliveries)
      .set({ sentAt: at })
      .where(and(eq(commandDeliveries.deviceId, deviceId), inArray(commandDeliveries.commandId, commandIds)))
      .run();
  }

  /**
   * Closes the deliveries of plays whose content ended before the device could be sent them again, with
   * reason `ended`: `offline` if the play never reached the device, `expired` if it did.
   */
  closeEnded(commandIds: readonly string[], deviceId: string, at: Date): void {
    if (commandIds.length === 0) return;
    this.db
      .update(commandDeliveries)
      .set({
        status: sql`CASE WHEN ${commandDeliveries.sentAt} IS NULL THEN 'offline' ELSE 'expired' END`,
        reason: 'ended',
        updatedAt: at,
      })
      .where(
        and(
          eq(commandDeliveries.deviceId, deviceId),
          inArray(commandDeliveries.commandId, commandIds),
          inArray(commandDeliveries.status, ['pending', 'received']),
        ),
      )
      .run();
  }

  /**
   * Closes deliveries whose command expired without a final ack: `offline` when the command never
   * reached the device, `expired` when it was sent but not carried out in time.
   */
  expireDue(now: Date): number {
    return this.db
      .update(commandDeliveries)
      .set({
        status: sql`CASE WHEN ${commandDeliveries.sentAt} IS NULL THEN 'offline' ELSE 'expired' END`,
        updatedAt: now,
      })
      .where(
        and(
          inArray(commandDeliveries.status, ['pending', 'received']),
          lte(commandDeliveries.expiresAt, now),
        ),
      )
      .run().changes;
  }

  findById(id: string): { command: CommandRow; username: string | null } | undefined {
    return this.db
      .select({ command: commands, username: users.username })
      .from(commands)
      .leftJoin(users, eq(commands.createdBy, users.id))
      .where(eq(commands.id, id))
      .get();
  }

  /** True when the command targets at least one device in the subtree. */
  touchesSubtree(commandId: string, pathPrefix: string): boolean {
    const row = this.db
      .select({ one: sql<number>`1` })
      .from(commandDeliveries)
      .innerJoin(devices, eq(commandDeliveries.deviceId, devices.id))
      .innerJoin(areas, eq(devices.areaId, areas.id))
      .where(and(eq(commandDeliveries.commandId, commandId), inSubtree(areas.path, pathPrefix)))
      .limit(1)
      .get();
    return row !== undefined;
  }

  /** Per-device outcome; limited to devices in the subtree unless pathPrefix is null (admin). */
  deliveries(commandId: string, pathPrefix: string | null) {
    const where: SQL[] = [eq(commandDeliveries.commandId, commandId)];
    if (pathPrefix !== null) where.push(inSubtree(areas.path, pathPrefix));
    return this.db
      .select({
        deviceId: commandDeliveries.deviceId,
        deviceName: devices.name,
        status: commandDeliveries.status,
        reason: commandDeliveries.reason,
        sentAt: commandDeliveries.sentAt,
        updatedAt: commandDeliveries.updatedAt,
      })
      .from(commandDeliveries)
      .leftJoin(devices, eq(commandDeliveries.deviceId, devices.id))
      .leftJoin(areas, eq(devices.areaId, areas.id))
      .where(and(...where))
      .orderBy(asc(devices.sortName), asc(commandDeliveries.deviceId))
      .all();
  }

  /** Recent commands the actor created or that reached their area (all of them when pathPrefix is null). */
  list(filter: { actorId: string; pathPrefix: string | null; limit: number; offset: number }) {
    const visible =
      filter.pathPrefix === null
        ? undefined
        : or(
            eq(commands.createdBy, filter.actorId),
            exists(
              this.db
                .select({ one: sql`1` })
                .from(commandDeliveries)
                .innerJoin(devices, eq(commandDeliveries.deviceId, devices.id))
                .innerJoin(areas, eq(devices.areaId, areas.id))
                .where(
                  and(eq(commandDeliveries.commandId, commands.id), inSubtree(areas.path, filter.pathPrefix)),
                ),
            ),
          );
    return this.db
      .select({ command: commands, username: users.username })
      .from(commands)
      .leftJoin(users, eq(commands.createdBy, users.id))
      .where(visible)
      .orderBy(desc(commands.createdAt), desc(commands.id))
      .limit(filter.limit)
      .offset(filter.offset)
      .all();
  }
}
