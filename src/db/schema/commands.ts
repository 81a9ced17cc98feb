import { sqliteTable, text, integer, index, primaryKey, uniqueIndex } from 'drizzle-orm/sqlite-core';
import { users } from './users.js';

export const DELIVERY_STATUSES = [
  'pending',
  'received',
  'done',
  'failed',
  'rejected',
  'expired',
  'offline',
] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

export const commands = sqliteTable(
  'commands',
  {
    id: text('id').primaryKey(),
    type: text('type').notNull(),
    priority: text('priority', { enum: ['normal', 'priority', 'emergency'] }).notNull(),
    params: text('params', { mode: 'json' }).notNull(),
    /**
     * Null for commands the server sends itself (schedules, emergencies triggered by CAP) and for those
     * whose author has since been deleted; the audit log keeps who sent it by name.
     */
    createdBy: text('created_by').references(() => users.id, { onDelete: 'set null' }),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    expiresAt: integer('expires_at', { mode: 'timestamp_ms' }).notNull(),
    targetCount: integer('target_count').notNull(),
    /**
     * The programme and revision a play airs (source.kind = "programme"); no foreign key, programmes are
     * only ever soft-deleted and the record of what aired must stay.
     */
    programmeId: text('programme_id'),
    programmeRevisionId: text('programme_revision_id'),
    /**
     * The emergency a play or stop belongs to (src/modules/emergencies). Its plays are heard whole: a
     * device that comes back before the expiry plays the message from the start, not from where the others
     * are (CommandsService.resendPayload).
     */
    emergencyId: text('emergency_id'),
  },
  (t) => [
    index('commands_created_idx').on(t.createdAt),
    index('commands_programme_idx').on(t.programmeId),
    index('commands_emergency_idx').on(t.emergencyId),
  ],
);

/**
 * One row per (command, target device). No foreign key to devices: the record of what was sent must
 * survive the device being deleted.
 */
export const commandDeliveries = sqliteTable(
  'command_deliveries',
  {
    commandId: text('command_id')
      .notNull()
      .references(() => commands.id, { onDelete: 'cascade' }),
    deviceId: text('device_id').notNull(),
    status: text('status', { enum: DELIVERY_STATUSES }).notNull(),
    reason: text('reason'),
    /** When the command was last published to the device; null while it has never been online for it. */
    sentAt: integer('sent_at', { mode: 'timestamp_ms' }),
    /** Copied from the command so that the expiry sweep and re-sends need no join. */
    expiresAt: integer('expires_at', { mode: 'timestamp_ms' }).notNull(),
    updatedAt: integer('updated_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.commandId, t.deviceId] }),
    // expires_at too: a device that reconnects reads its unexpired deliveries, done ones included.
    index('deliveries_device_status_idx').on(t.deviceId, t.status, t.expiresAt),
    index('deliveries_status_expires_idx').on(t.status, t.expiresAt),
  ],
);

export type CommandRow = typeof commands.$inferSelect;

/**
 * The first answer to a POST that carried an Idempotency-Key, kept 24 h per user: the same key again gets
 * this answer and nothing is sent twice (a double-clicked broadcast goes out once).
 */
export const idempotencyKeys = sqliteTable(
  'idempotency_keys',
  {
    userId: text('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    key: text('key').notNull(),
    /** Method and path plus a hash of the body: the same key with another request is refused. */
    fingerprint: text('fingerprint').notNull(),
    statusCode: integer('status_code').notNull(),
    response: text('response', { mode: 'json' }).notNull(),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.key] }), index('idempotency_created_idx').on(t.createdAt)],
);

/**
 * What devices report on their `log` topic, each entry stored once: QoS 1 may deliver a message twice,
 * and `seq` (per device, per boot) with the command and event identifies an entry.
 */
export const playbackEvents = sqliteTable(
  'playback_events',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    deviceId: text('device_id').notNull(),
    seq: integer('seq').notNull(),
    sessionId: text('session_id').notNull(),
    commandId: text('command_id').notNull(),
    event: text('event', { enum: ['started', 'finished', 'interrupted', 'failed'] }).notNull(),
    /** What the device said; `receivedAt` is the server's clock. */
    at: integer('at', { mode: 'timestamp_ms' }).notNull(),
    receivedAt: integer('received_at', { mode: 'timestamp_ms' }).notNull(),
    reason: text('reason'),
  },
  (t) => [
    uniqueIndex('playback_events_entry_idx').on(t.deviceId, t.seq, t.commandId, t.event, t.at),
    index('playback_events_command_idx').on(t.commandId),
    // Retention deletes by age, in batches: without it each batch scans the table from the start.
    index('playback_events_at_idx').on(t.at),
  ],
);
