import { sqliteTable, text, integer, real, index } from 'drizzle-orm/sqlite-core';
import { areas } from './areas.js';
import { HEALTH_LEVELS } from './health.js';

export const DEVICE_KINDS = ['station', 'cluster'] as const;
export type DeviceKind = (typeof DEVICE_KINDS)[number];

export const devices = sqliteTable(
  'devices',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    /** Orders names as Vietnamese readers expect (src/lib/text.ts). */
    sortName: text('sort_name').notNull(),
    kind: text('kind', { enum: DEVICE_KINDS }).notNull(),
    areaId: text('area_id')
      .notNull()
      .references(() => areas.id),
    /** SHA-256 of the device secret (see devices.service for why not scrypt). */
    secretHash: text('secret_hash').notNull(),
    /** Where the loudspeakers stand (WGS84), for alerts that target a polygon or a circle. */
    lat: real('lat'),
    lon: real('lon'),
    /** Takes part in drills: an exercise emergency plays only on these. */
    drillParticipant: integer('drill_participant', { mode: 'boolean' }).notNull().default(false),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    updatedAt: integer('updated_at', { mode: 'timestamp_ms' }).notNull(),
    // Presence, owned by the server; every device is offline at start-up.
    online: integer('online', { mode: 'boolean' }).notNull().default(false),
    /** When `online` last changed. */
    onlineSince: integer('online_since', { mode: 'timestamp_ms' }),
    /** The last time anything was heard from the device. */
    lastSeenAt: integer('last_seen_at', { mode: 'timestamp_ms' }),
    // The latest `state` message the device reported (protocol.md).
    firmware: text('firmware'),
    volume: integer('volume'),
    playing: text('playing', { mode: 'json' }),
    stateAt: integer('state_at', { mode: 'timestamp_ms' }),
    // The latest telemetry message (protocol.md), as the device sent it.
    telemetry: text('telemetry', { mode: 'json' }),
    telemetryAt: integer('telemetry_at', { mode: 'timestamp_ms' }),
    /** Playback failures in a row (reset by a successful start); many in a row is a fault. */
    playbackFailures: integer('playback_failures').notNull().default(0),
    // Derived health (src/modules/health/health.rules.ts), stored so lists and summaries can filter on it.
    health: text('health', { enum: HEALTH_LEVELS }).notNull().default('fault'),
    healthReasons: text('health_reasons', { mode: 'json' }).$type<string[]>().notNull().default(['offline']),
    healthSince: integer('health_since', { mode: 'timestamp_ms' }),
  },
  // No index on `online` or `health`: with two or three values they only lure the planner away from the
  // area-path index (measured by bench:health).
  (t) => [
    index('devices_area_idx').on(t.areaId),
    index('devices_sort_name_idx').on(t.sortName),
    index('devices_last_seen_idx').on(t.lastSeenAt),
  ],
);

export type DeviceRow = typeof devices.$inferSelect;
