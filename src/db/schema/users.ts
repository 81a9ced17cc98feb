import { sql } from 'drizzle-orm';
import { sqliteTable, text, integer, index, check } from 'drizzle-orm/sqlite-core';
import { areas } from './areas.js';

/**
 * admin: everything everywhere. district_operator: district staff (emergencies, approval). broadcaster:
 * a commune's announcer. technician: station health and maintenance. approver: the commune leader who
 * signs off what airs (approves programmes, sends nothing).
 */
export const ROLES = ['admin', 'district_operator', 'broadcaster', 'technician', 'approver'] as const;
export type Role = (typeof ROLES)[number];

export const users = sqliteTable(
  'users',
  {
    id: text('id').primaryKey(),
    username: text('username').notNull().unique(),
    displayName: text('display_name'),
    passwordHash: text('password_hash').notNull(),
    role: text('role', { enum: ROLES }).notNull(),
    // Null only for admins, who act everywhere.
    areaId: text('area_id').references(() => areas.id),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    /** Set while an admin has disabled the account: login is refused and no token is valid. */
    disabledAt: integer('disabled_at', { mode: 'timestamp_ms' }),
  },
  (t) => [
    index('users_area_idx').on(t.areaId),
    // The database itself refuses what the services already refuse, so no code path (or a later
    // migration) can store a user who would act nowhere or with an unknown role. Column names unqualified:
    // drizzle-kit builds the table under a temporary name and renames it.
    check(
      'users_role_check',
      sql`"role" IN ('admin', 'district_operator', 'broadcaster', 'technician', 'approver')`,
    ),
    check('users_area_check', sql`"role" = 'admin' OR "area_id" IS NOT NULL`),
  ],
);

/** API tokens are stored as SHA-256 hashes: a leaked database does not leak usable tokens. */
export const apiTokens = sqliteTable(
  'api_tokens',
  {
    tokenHash: text('token_hash').primaryKey(),
    userId: text('user_id')
      .notNull()
      .references(() => users.id, { onDelete: 'cascade' }),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    expiresAt: integer('expires_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [index('api_tokens_user_idx').on(t.userId), index('api_tokens_expires_idx').on(t.expiresAt)],
);

export type UserRow = typeof users.$inferSelect;
