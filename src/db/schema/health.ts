import { sqliteTable, text, integer, real, index } from 'drizzle-orm/sqlite-core';

export const HEALTH_LEVELS = ['ok', 'degraded', 'fault'] as const;
export type HealthLevel = (typeof HEALTH_LEVELS)[number];

/** Why a device came online or went offline (docs/health.md). */
export const PRESENCE_CAUSES = [
  'connect',
  'resumed',
  'takeover',
  'disconnect',
  'keepalive',
  'silent',
  'credentials_rotated',
  'deleted',
  'server_restart',
] as const;
export type PresenceCause = (typeof PRESENCE_CAUSES)[number];

/** Every presence transition of every device, with its time and cause. */
export const presenceTransitions = sqliteTable(
  'presence_transitions',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    deviceId: text('device_id').notNull(),
    at: integer('at', { mode: 'timestamp_ms' }).notNull(),
    online: integer('online', { mode: 'boolean' }).notNull(),
    cause: text('cause', { enum: PRESENCE_CAUSES }).notNull(),
  },
  (t) => [index('presence_device_at_idx').on(t.deviceId, t.at)],
);

/**
 * Telemetry history, one row per message, pruned after the retention period. `at` is when the server
 * received it (device clocks drift); `deviceAt` is what the device said.
 */
export const telemetrySamples = sqliteTable(
  'telemetry_samples',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    deviceId: text('device_id').notNull(),
    at: integer('at', { mode: 'timestamp_ms' }).notNull(),
    deviceAt: integer('device_at', { mode: 'timestamp_ms' }).notNull(),
    uptimeS: real('uptime_s').notNull(),
    rssiDbm: real('rssi_dbm'),
    supplyVoltage: real('supply_voltage'),
    onBattery: integer('on_battery', { mode: 'boolean' }),
    ampTempC: real('amp_temp_c'),
    speakerFault: integer('speaker_fault', { mode: 'boolean' }),
  },
  (t) => [index('telemetry_device_at_idx').on(t.deviceId, t.at), index('telemetry_at_idx').on(t.at)],
);

export const ALERT_KINDS = ['offline', 'fault', 'degraded'] as const;
export type AlertKind = (typeof ALERT_KINDS)[number];
export const ALERT_STATES = ['open', 'resolved'] as const;
export type AlertState = (typeof ALERT_STATES)[number];

export const alerts = sqliteTable(
  'alerts',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    deviceId: text('device_id').notNull(),
    kind: text('kind', { enum: ALERT_KINDS }).notNull(),
    state: text('state', { enum: ALERT_STATES }).notNull(),
    reasons: text('reasons', { mode: 'json' }).$type<string[]>().notNull(),
    openedAt: integer('opened_at', { mode: 'timestamp_ms' }).notNull(),
    resolvedAt: integer('resolved_at', { mode: 'timestamp_ms' }),
    acknowledgedAt: integer('acknowledged_at', { mode: 'timestamp_ms' }),
    acknowledgedBy: text('acknowledged_by'),
    note: text('note'),
  },
  (t) => [
    index('alerts_state_idx').on(t.state, t.openedAt),
    index('alerts_device_idx').on(t.deviceId, t.kind, t.state),
  ],
);

export type AlertRow = typeof alerts.$inferSelect;
