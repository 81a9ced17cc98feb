import { sqliteTable, text, integer, index, primaryKey, uniqueIndex } from 'drizzle-orm/sqlite-core';
import { areas } from './areas.js';

export const HAZARDS = ['storm', 'flood', 'landslide', 'fire', 'epidemic', 'other'] as const;
export type Hazard = (typeof HAZARDS)[number];

/**
 * An emergency broadcast (docs/emergency.md): a warning played at emergency priority on every loudspeaker
 * of its areas, tracked device by device. Its devices and their delivery are those of its play command
 * (`commandId`, in commands / command_deliveries / playback_log); an update of the text sends a new play
 * command in the same emergency (`revision` + 1), a cancel a stop (`cancelCommandId`).
 */
export const emergencies = sqliteTable(
  'emergencies',
  {
    id: text('id').primaryKey(),
    title: text('title').notNull(),
    /** What is spoken (text-to-speech), or null when a recording or a programme is played. */
    text: text('text'),
    mediaId: text('media_id'),
    programmeId: text('programme_id'),
    voice: text('voice'),
    hazard: text('hazard', { enum: HAZARDS }),
    riskLevel: integer('risk_level'),
    volume: integer('volume').notNull(),
    /** Plays in all (1 = once) and the silence between two of them. */
    repeatCount: integer('repeat_count').notNull(),
    repeatIntervalS: integer('repeat_interval_s').notNull(),
    /** A drill: only drill participants play it, framed by "Đây là diễn tập". */
    exercise: integer('exercise', { mode: 'boolean' }).notNull(),
    /** The areas as the sender named them (POST areaIds, or those a CAP alert's geocodes matched). */
    areaIds: text('area_ids', { mode: 'json' }).$type<string[]>().notNull(),
    commandId: text('command_id').notNull(),
    sessionId: text('session_id').notNull(),
    revision: integer('revision').notNull(),
    renditionSha256: text('rendition_sha256').notNull(),
    durationMs: integer('duration_ms').notNull(),
    targetCount: integer('target_count').notNull(),
    /** The user who sent it (null: a warning system's key, or a user since deleted; see senderName). */
    createdBy: text('created_by'),
    sourceId: text('source_id'),
    /** Who sent it, by name, as it was then: a username or a warning source's name. */
    senderName: text('sender_name').notNull(),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    expiresAt: integer('expires_at', { mode: 'timestamp_ms' }).notNull(),
    cancelledAt: integer('cancelled_at', { mode: 'timestamp_ms' }),
    cancelledBy: text('cancelled_by'),
    cancelCommandId: text('cancel_command_id'),
    cancelReason: text('cancel_reason'),
    updatedAt: integer('updated_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [index('emergencies_created_idx').on(t.createdAt), index('emergencies_command_idx').on(t.commandId)],
);
export type EmergencyRow = typeof emergencies.$inferSelect;

/**
 * The areas an emergency played in, with their paths: who may see it (scope) and the history's `areaId`
 * filter. For a CAP alert matched by polygon or circle, the areas of the devices it matched.
 */
export const emergencyAreas = sqliteTable(
  'emergency_areas',
  {
    emergencyId: text('emergency_id')
      .notNull()
      .references(() => emergencies.id, { onDelete: 'cascade' }),
    areaId: text('area_id').notNull(),
    areaPath: text('area_path').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.emergencyId, t.areaId] }),
    index('emergency_areas_path_idx').on(t.areaPath),
  ],
);

/**
 * A warning system allowed to send CAP alerts (POST /api/v1/emergencies/cap) with its own key, limited to
 * an area. The key is shown once at creation and stored hashed.
 */
export const warningSources = sqliteTable(
  'warning_sources',
  {
    id: text('id').primaryKey(),
    name: text('name').notNull(),
    areaId: text('area_id')
      .notNull()
      .references(() => areas.id),
    keyHash: text('key_hash').notNull(),
    createdBy: text('created_by'),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    lastUsedAt: integer('last_used_at', { mode: 'timestamp_ms' }),
    revokedAt: integer('revoked_at', { mode: 'timestamp_ms' }),
  },
  (t) => [
    uniqueIndex('warning_sources_key_idx').on(t.keyHash),
    index('warning_sources_area_idx').on(t.areaId),
  ],
);
export type WarningSourceRow = typeof warningSources.$inferSelect;

export const CAP_OUTCOMES = ['sent', 'updated', 'cancelled', 'not_played'] as const;
export type CapOutcome = (typeof CAP_OUTCOMES)[number];

/**
 * Every CAP document accepted, once per principal and (sender, identifier): a replay is answered from here
 * and plays nothing. `<sender>` is only what the document says, so the same alert from another key or user
 * is its own submission (see src/modules/emergencies/cap.ingest.ts). Test, System and Draft alerts are
 * kept here and never played (`not_played`).
 */
export const capMessages = sqliteTable(
  'cap_messages',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    /**
     * Who submitted it: the warning source's id for a key, the user's id for a user token. The default only
     * lets the migration add the column to rows kept from before, which no principal's lookup then matches.
     */
    principal: text('principal').notNull().default(''),
    sender: text('sender').notNull(),
    identifier: text('identifier').notNull(),
    sent: integer('sent', { mode: 'timestamp_ms' }).notNull(),
    status: text('status').notNull(),
    msgType: text('msg_type').notNull(),
    /** The emergency it started, updated or cancelled; null when not played. */
    emergencyId: text('emergency_id'),
    outcome: text('outcome', { enum: CAP_OUTCOMES }).notNull(),
    /** The answer given the first time, given again to a replay. */
    answer: text('answer', { mode: 'json' }).$type<Record<string, unknown>>().notNull(),
    userId: text('user_id'),
    sourceId: text('source_id'),
    receivedAt: integer('received_at', { mode: 'timestamp_ms' }).notNull(),
    /** The document as received (at most 1 MB), for the record. */
    document: text('document').notNull(),
  },
  (t) => [
    // (sender, identifier) first: an admin's reference looks an alert up among every principal's.
    uniqueIndex('cap_messages_identity_idx').on(t.sender, t.identifier, t.principal),
    index('cap_messages_emergency_idx').on(t.emergencyId),
  ],
);
export type CapMessageRow = typeof capMessages.$inferSelect;
