import { sqliteTable, text, integer, index } from 'drizzle-orm/sqlite-core';

/** Who did what to what, and when. Append-only; never updated. */
export const auditLog = sqliteTable(
  'audit_log',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    at: integer('at', { mode: 'timestamp_ms' }).notNull(),
    actorId: text('actor_id'),
    actorUsername: text('actor_username'),
    action: text('action').notNull(),
    targetType: text('target_type').notNull(),
    targetId: text('target_id'),
    details: text('details', { mode: 'json' }),
  },
  (t) => [index('audit_at_idx').on(t.at), index('audit_target_idx').on(t.targetType, t.targetId)],
);
