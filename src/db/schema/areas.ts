import { sqliteTable, text, integer, index, uniqueIndex } from 'drizzle-orm/sqlite-core';

export const AREA_LEVELS = ['province', 'district', 'commune', 'hamlet'] as const;
export type AreaLevel = (typeof AREA_LEVELS)[number];

/**
 * Administrative areas form a tree of any depth (since 2025 many provinces have only two levels).
 * `path` is the materialised chain of ids from the root down to this area, `/ar_a/ar_b/`, so "everything
 * in this subtree" is one indexed prefix match instead of a recursive query on every request.
 */
export const areas = sqliteTable(
  'areas',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    level: text('level', { enum: AREA_LEVELS }).notNull(),
    parentId: text('parent_id'),
    path: text('path').notNull(),
    /**
     * The national administrative code of the province, district or commune (mã đơn vị hành chính), which
     * warning systems name in CAP alerts (`<geocode>` VN-ADMIN); unique among areas when set.
     */
    code: text('code'),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    updatedAt: integer('updated_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [
    index('areas_parent_idx').on(t.parentId),
    index('areas_path_idx').on(t.path),
    uniqueIndex('areas_code_idx').on(t.code),
  ],
);

export type AreaRow = typeof areas.$inferSelect;
