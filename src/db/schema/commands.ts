import { sqliteTable, text, integer, index, primaryKey } from 'drizzle-orm/sqlite-core';
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
    createdBy: text('created_by')
      .notNull()
      .references(() => users.id),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    expiresAt: integer('expires_at', { mode: 'timestamp_ms' }).notNull(),
    targetCount: integer('target_count').notNull(),
  },
  (t) => [index('commands_created_idx').on(t.createdAt)],
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
    index('deliveries_device_status_idx').on(t.deviceId, t.status),
    index('deliveries_status_expires_idx').on(t.status, t.expiresAt),
  ],
);

export type CommandRow = typeof commands.$inferSelect;
