import { and, asc, desc, eq, exists, gt, gte, inArray, isNotNull, lte, or, sql, type SQL } from 'drizzle-orm';
import { sqliteOf, type Db } from '../../db/index.js';
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
 * A device's commands in the order they were created; the rowid breaks ties between commands created in
 * the same millisecond (deliveries are inserted as their command is created).
 */
const deliverySeq = sql<number>`${commandDeliveries}.rowid`;

/** A command sent to one device, with where that delivery stands. */
export interface DeviceCommand {
  command: CommandRow;
  status: DeliveryStatus;
  /** Creation order among the device's commands. */
  seq: number;
}

/** Why a delivery is closed without being sent again after a reconnect. */
export type ResendCloseReason = 'ended' | 'stopped' | 'replaced';

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
    insertDeliveries: sqliteOf(db).prepare<{
      commandId: string;
      targets: string;
      expiresAt: number;
      updatedAt: number;
    }>(
      `INSERT INTO command_deliveries (command_id, device_id, status, sent_at, expires_at, updated_at)
       SELECT @commandId, json_extract(j.value, '$[0]'), 'pending', json_extract(j.value, '$[1]'), @expiresAt,
         @updatedAt
       FROM json_each(@targets) AS j ORDER BY j.key`,
    ),
    ack: {
      received: ackUpdate('received'),
      done: ackUpdate('done'),
      failed: ackUpdate('failed'),
      rejected: ackUpdate('rejected'),
    } satisfies Record<AckStatus, unknown>,
    resendCandidates: db
      .select({ command: commands, status: commandDeliveries.status, seq: deliverySeq })
      .from(commandDeliveries)
      .innerJoin(commands, eq(commandDeliveries.commandId, commands.id))
      .where(
        and(
          eq(commandDeliveries.deviceId, p('deviceId')),
          // `received` too: the device may have crashed before its final ack, or the ack may have been
          // lost; asked again, it answers with its final ack (protocol rule 2). `done` for plays: one that
          // still runs is what a rebooted device must play again.
          inArray(commandDeliveries.status, ['pending', 'received', 'done']),
          gt(commandDeliveries.expiresAt, p('now')),
          // A play prepared ahead of its time (a schedule's occurrence, CommandsService.preparePlay) is
          // created for the instant it goes out: until then a device must not be sent it.
          lte(commands.createdAt, p('now')),
        ),
      )
      .orderBy(asc(commands.createdAt), asc(deliverySeq))
      .prepare(),
    commandsSince: db
      .select({ command: commands, status: commandDeliveries.status, seq: deliverySeq })
      .from(commandDeliveries)
      .innerJoin(commands, eq(commandDeliveries.commandId, commands.id))
      .where(
        and(
          eq(commandDeliveries.deviceId, p('deviceId')),
          // Every status but a refusal or a failure: a command that expired or never reached the device
          // still counts, as the rest of the fleet carried it out (an emergency stopped while this device
          // was away must not come back on it).
          inArray(commandDeliveries.status, ['pending', 'received', 'done', 'expired', 'offline']),
          // A command created at or after `since` expires after it, so this bound loses none of them and
          // keeps the scan to the last few minutes of the device's history.
          gte(commandDeliveries.expiresAt, p('since')),
          // Not yet issued (prepared ahead): it has stopped or replaced nothing so far.
          lte(commands.createdAt, p('now')),
        ),
      )
      .orderBy(asc(commands.createdAt), asc(deliverySeq))
      .prepare(),
    markSent: db
      .update(commandDeliveries)
      .set({ sentAt: sql`${p('at')}` })
      .where(
        and(eq(commandDeliveries.commandId, p('commandId')), eq(commandDeliveries.deviceId, p('deviceId'))),
      )
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
    this.db.transaction((tx) => {
      tx.insert(commands).values(command).run();
      this.insertDeliveries(command, targets);
      also();
    });
  }

  /**
   * Like insert(), unless a command with this id exists already: then nothing is inserted and `also(false)`
   * runs alone in the transaction. Returns whether the command was inserted. The primary key decides, so
   * the answer holds whoever inserted first.
   */
  insertOnce(
    command: CommandRow,
    targets: readonly { deviceId: string; sentAt: Date | null }[],
    also: (inserted: boolean) => void,
  ): boolean {
    return this.db.transaction((tx) => {
      const inserted = tx.insert(commands).values(command).onConflictDoNothing().run().changes > 0;
      if (inserted) this.insertDeliveries(command, targets);
      also(inserted);
      return inserted;
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

  /**
   * What a device that has just subscribed may have to be sent again, unexpired, oldest first: the
   * commands it has not answered finally, and those it carried out (`done`; only plays matter there).
   */
  resendCandidates(deviceId: string, now: Date): DeviceCommand[] {
    return this.statements.resendCandidates.all({ deviceId, now: now.getTime() });
  }

  /**
   * The device's commands created at or after `since`, oldest first, whatever became of them except a
   * refusal or a failure: those that may have stopped or replaced a play since.
   */
  commandsSince(deviceId: string, since: Date, now: Date): DeviceCommand[] {
    return this.statements.commandsSince.all({ deviceId, since: since.getTime(), now: now.getTime() });
  }

  /**
   * The command and one unsent delivery per target, in the CALLER's transaction (see
   * CommandsService.preparePlay), unless a command with this id exists already. Returns whether it was
   * inserted.
   */
  insertPrepared(command: CommandRow, deviceIds: readonly string[]): boolean {
    const inserted = this.db.insert(commands).values(command).onConflictDoNothing().run().changes > 0;
    if (!inserted) return false;
    this.insertDeliveries(
      command,
      deviceIds.map((deviceId) => ({ deviceId, sentAt: null })),
    );
    return true;
  }

  /**
   * One pending delivery per target, in the caller's transaction, in one statement: a province-wide
   * emergency writes 10,000 of them before it is published, and a statement per row costs ten times as
   * much. In the order given (rowid order is the order re-sends follow).
   */
  private insertDeliveries(
    command: CommandRow,
    targets: readonly { deviceId: string; sentAt: Date | null }[],
  ): void {
    if (targets.length === 0) return;
    this.statements.insertDeliveries.run({
      commandId: command.id,
      targets: JSON.stringify(targets.map((t) => [t.deviceId, t.sentAt?.getTime() ?? null])),
      expiresAt: command.expiresAt.getTime(),
      updatedAt: command.createdAt.getTime(),
    });
  }

  /**
   * Withdraws prepared commands not yet due (createdAt after `now`): they expire now, and their deliveries
   * close `expired` with the reason, so neither the publish timer of a restarted server nor a re-send on
   * reconnect ever sends them. Returns the ids withdrawn (one already out is not among them).
   */
  withdraw(commandIds: readonly string[], now: Date, reason: string): string[] {
    if (commandIds.length === 0) return [];
    return this.db.transaction((tx) => {
      const ids = tx
        .update(commands)
        .set({ expiresAt: now })
        .where(and(inArray(commands.id, [...commandIds]), gt(commands.createdAt, now)))
        .returning({ id: commands.id })
        .all()
        .map((r) => r.id);
      if (ids.length > 0) {
        tx.update(commandDeliveries)
          .set({ status: 'expired', reason, expiresAt: now, updatedAt: now })
          .where(inArray(commandDeliveries.commandId, ids))
          .run();
      }
      return ids;
    });
  }

  /** Records when prepared commands went out, to the devices they reached: one transaction. */
  markSent(sent: readonly { commandId: string; deviceId: string }[], at: Date): void {
    if (sent.length === 0) return;
    const { markSent } = this.statements;
    const ms = at.getTime();
    this.db.transaction(() => {
      for (const s of sent) markSent.run({ commandId: s.commandId, deviceId: s.deviceId, at: ms });
    });
  }

  /**
   * Plays created for an instant after `now` (prepared ahead, not yet due), oldest first, each with the
   * devices it goes to: what a restarted server must still publish on time.
   */
  unpublished(now: Date): { command: CommandRow; deviceIds: string[] }[] {
    const rows = this.db
      .select({ command: commands, deviceId: commandDeliveries.deviceId })
      .from(commands)
      .innerJoin(commandDeliveries, eq(commandDeliveries.commandId, commands.id))
      .where(and(gt(commands.createdAt, now), eq(commands.type, 'play')))
      .orderBy(asc(commands.createdAt), asc(commands.id), asc(deliverySeq))
      .all();
    const found = new Map<string, { command: CommandRow; deviceIds: string[] }>();
    for (const r of rows) {
      const entry = found.get(r.command.id);
      if (entry) entry.deviceIds.push(r.deviceId);
      else found.set(r.command.id, { command: r.command, deviceIds: [r.deviceId] });
    }
    return [...found.values()];
  }

  /**
   * Records a re-send in one transaction: when the commands went out, and the deliveries closed instead of
   * sent, with their reason: `offline` if the command never reached the device, `expired` if it did. Only
   * deliveries still waiting for an answer are closed, so recording late (on a retry) never undoes an ack.
   */
  recordResend(
    deviceId: string,
    at: Date,
    sent: readonly string[],
    closed: readonly { commandId: string; reason: ResendCloseReason }[],
  ): void {
    if (sent.length === 0 && closed.length === 0) return;
    this.db.transaction((tx) => {
      if (sent.length > 0) {
        tx.update(commandDeliveries)
          .set({ sentAt: at })
          .where(and(eq(commandDeliveries.deviceId, deviceId), inArray(commandDeliveries.commandId, sent)))
          .run();
      }
      for (const reason of ['ended', 'stopped', 'replaced'] as const) {
        const ids = closed.filter((c) => c.reason === reason).map((c) => c.commandId);
        if (ids.length === 0) continue;
        tx.update(commandDeliveries)
          .set({
            status: sql`CASE WHEN ${commandDeliveries.sentAt} IS NULL THEN 'offline' ELSE 'expired' END`,
            reason,
            updatedAt: at,
          })
          .where(
            and(
              eq(commandDeliveries.deviceId, deviceId),
              inArray(commandDeliveries.commandId, ids),
              inArray(commandDeliveries.status, ['pending', 'received']),
            ),
          )
          .run();
      }
    });
  }

  /**
   * Deliveries of a command sent but never answered, not even `received`: the devices an emergency re-sends
   * to (src/modules/emergencies), with when each was last sent.
   */
  unacknowledged(commandId: string): { deviceId: string; sentAt: Date }[] {
    return this.db
      .select({ deviceId: commandDeliveries.deviceId, sentAt: commandDeliveries.sentAt })
      .from(commandDeliveries)
      .where(
        and(
          eq(commandDeliveries.commandId, commandId),
          eq(commandDeliveries.status, 'pending'),
          isNotNull(commandDeliveries.sentAt),
        ),
      )
      .all() as { deviceId: string; sentAt: Date }[];
  }

  /**
   * A later expiry for a command and its deliveries still open, with its new parameters (a play's download
   * link must last as long): an emergency extended while it runs.
   */
  extendExpiry(commandId: string, expiresAt: Date, params: unknown): void {
    this.db.transaction((tx) => {
      tx.update(commands).set({ expiresAt, params }).where(eq(commands.id, commandId)).run();
      tx.update(commandDeliveries)
        .set({ expiresAt })
        .where(
          and(
            eq(commandDeliveries.commandId, commandId),
            inArray(commandDeliveries.status, ['pending', 'received', 'done']),
          ),
        )
        .run();
    });
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

  /** True when a command naming the programme has not expired at `now`. */
  hasLivePlay(programmeId: string, now: Date): boolean {
    const row = this.db
      .select({ one: sql<number>`1` })
      .from(commands)
      .where(and(eq(commands.programmeId, programmeId), gt(commands.expiresAt, now)))
      .limit(1)
      .get();
    return row !== undefined;
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

  /**
   * Recent commands the actor created or that reached their area (all of them when pathPrefix is null),
   * issued by `now`: a play prepared ahead (CommandsService.preparePlay) is listed from the instant it goes
   * out, not as a command "created" in the future.
   */
  list(filter: { actorId: string; pathPrefix: string | null; now: Date; limit: number; offset: number }) {
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
      .where(and(lte(commands.createdAt, filter.now), visible))
      .orderBy(desc(commands.createdAt), desc(commands.id))
      .limit(filter.limit)
      .offset(filter.offset)
      .all();
  }
}
