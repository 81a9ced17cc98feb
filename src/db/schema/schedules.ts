import { sqliteTable, text, integer, index, primaryKey, uniqueIndex } from 'drizzle-orm/sqlite-core';
import type { Timing } from '../../modules/schedules/timing.js';
import { users } from './users.js';

/** Schedules use the routine priorities; emergencies have their own path (issue 9). */
export const SCHEDULE_PRIORITIES = ['normal', 'priority'] as const;
export type SchedulePriority = (typeof SCHEDULE_PRIORITIES)[number];

export interface ScheduleTargets {
  areaIds?: string[];
  deviceIds?: string[];
}

/**
 * A programme planned to air on a timing (docs/schedules.md). The row says what the broadcaster asked for;
 * its occurrences (schedule_occurrences) are what the dispatcher sends. Deleted ones are kept (deleted_at):
 * the playback log and past occurrences name them.
 */
export const schedules = sqliteTable(
  'schedules',
  {
    id: text('id').primaryKey(),
    /** No foreign key: programmes are only soft-deleted, and a schedule's history must stay readable. */
    programmeId: text('programme_id').notNull(),
    priority: text('priority', { enum: SCHEDULE_PRIORITIES }).notNull(),
    targets: text('targets', { mode: 'json' }).$type<ScheduleTargets>().notNull(),
    timing: text('timing', { mode: 'json' }).$type<Timing>().notNull(),
    exceptDates: text('except_dates', { mode: 'json' }).$type<string[]>().notNull(),
    volume: integer('volume'),
    /** How long a relay stays on the stream; null for files, which last as long as the programme. */
    durationS: integer('duration_s'),
    note: text('note'),
    /** Devices the targets held when last saved or dispatched: what lists and the calendar show. */
    deviceCount: integer('device_count').notNull(),
    pausedAt: integer('paused_at', { mode: 'timestamp_ms' }),
    createdBy: text('created_by').references(() => users.id, { onDelete: 'set null' }),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    updatedAt: integer('updated_at', { mode: 'timestamp_ms' }).notNull(),
    deletedAt: integer('deleted_at', { mode: 'timestamp_ms' }),
    /** Occurrences exist in schedule_occurrences up to this instant (exclusive); a daily job moves it on. */
    plannedUntil: integer('planned_until', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [index('schedules_programme_idx').on(t.programmeId), index('schedules_created_idx').on(t.createdAt)],
);

/**
 * Each target of a schedule with the area path it lies in: the target area's own path, or the path of a
 * target device's area when the schedule was saved. Scope checks and `?areaId=` filters read the paths.
 */
export const scheduleTargets = sqliteTable(
  'schedule_targets',
  {
    scheduleId: text('schedule_id')
      .notNull()
      .references(() => schedules.id, { onDelete: 'cascade' }),
    areaId: text('area_id'),
    deviceId: text('device_id'),
    path: text('path').notNull(),
  },
  (t) => [
    index('schedule_targets_schedule_idx').on(t.scheduleId),
    index('schedule_targets_path_idx').on(t.path),
  ],
);

export const OCCURRENCE_STATUSES = ['planned', 'dispatched', 'skipped', 'cancelled'] as const;
export type OccurrenceStatus = (typeof OCCURRENCE_STATUSES)[number];

/**
 * The durable job table of the dispatcher: one row per occurrence of a schedule, planned ahead
 * (SCHEDULE_PLANNING_DAYS). `planned` rows whose due_at has come are claimed once, in the transaction that
 * creates their play command, whose id derives from (schedule, slot_at): a re-send after a crash is the
 * same command to the devices.
 */
export const scheduleOccurrences = sqliteTable(
  'schedule_occurrences',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    scheduleId: text('schedule_id')
      .notNull()
      .references(() => schedules.id, { onDelete: 'cascade' }),
    /** Start as the timing gives it (repeats included); with the schedule, it names the occurrence forever. */
    slotAt: integer('slot_at', { mode: 'timestamp_ms' }).notNull(),
    /** When it airs: slot_at, or later when appended after another schedule's occurrence. */
    startsAt: integer('starts_at', { mode: 'timestamp_ms' }).notNull(),
    /** End of the slot: the play command expires then and a late join is no longer possible. */
    endsAt: integer('ends_at', { mode: 'timestamp_ms' }).notNull(),
    /** When the dispatcher sends it: starts_at, less MEDIA_LEAD_S when devices download a file first. */
    dueAt: integer('due_at', { mode: 'timestamp_ms' }).notNull(),
    status: text('status', { enum: OCCURRENCE_STATUSES }).notNull(),
    /** Why it was skipped or cancelled, in words a broadcaster reads. */
    reason: text('reason'),
    commandId: text('command_id'),
    dispatchedAt: integer('dispatched_at', { mode: 'timestamp_ms' }),
  },
  (t) => [
    uniqueIndex('occurrences_slot_idx').on(t.scheduleId, t.slotAt),
    index('occurrences_due_idx').on(t.status, t.dueAt),
    index('occurrences_starts_idx').on(t.startsAt),
  ],
);

/**
 * `onConflict: "override"`: the occurrence `occurrence_id` gives way, on the devices it shares with
 * `by_occurrence_id`'s schedule, to that occurrence. Recorded so the calendar shows it and the dispatcher
 * leaves those devices out (their playback log says `skipped` and why).
 */
export const occurrenceOverrides = sqliteTable(
  'occurrence_overrides',
  {
    occurrenceId: integer('occurrence_id')
      .notNull()
      .references(() => scheduleOccurrences.id, { onDelete: 'cascade' }),
    byOccurrenceId: integer('by_occurrence_id')
      .notNull()
      .references(() => scheduleOccurrences.id, { onDelete: 'cascade' }),
  },
  (t) => [
    primaryKey({ columns: [t.occurrenceId, t.byOccurrenceId] }),
    index('overrides_by_idx').on(t.byOccurrenceId),
  ],
);

export const CONFLICT_RESOLUTIONS = ['override', 'append'] as const;
export type ConflictResolution = (typeof CONFLICT_RESOLUTIONS)[number];

/**
 * How a schedule saved with `onConflict` settles its clashes with another schedule: applied again to the
 * occurrences planned later (the daily planning job), so the choice lasts beyond the first 90 days.
 */
export const scheduleResolutions = sqliteTable(
  'schedule_resolutions',
  {
    scheduleId: text('schedule_id')
      .notNull()
      .references(() => schedules.id, { onDelete: 'cascade' }),
    otherScheduleId: text('other_schedule_id')
      .notNull()
      .references(() => schedules.id, { onDelete: 'cascade' }),
    resolution: text('resolution', { enum: CONFLICT_RESOLUTIONS }).notNull(),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.scheduleId, t.otherScheduleId] }),
    index('resolutions_other_idx').on(t.otherScheduleId),
  ],
);

export const PLAYBACK_OUTCOMES = [
  'played',
  'partial',
  'failed',
  'skipped',
  'expired',
  'undelivered',
] as const;
export type PlaybackOutcome = (typeof PLAYBACK_OUTCOMES)[number];

/**
 * The playback log (nhật ký phát thanh): one record per play session per device, i.e. per occurrence per
 * device for schedules and per device for a manual play. A resume after pre-emption continues the same
 * session, so the same record. Built from the command's delivery, the acks and the device's `log` entries;
 * `outcome` is null while the slot is open and set once when it closes. Names are copied in so the record
 * stays readable after the device, area or programme is gone.
 */
export const playbackLog = sqliteTable(
  'playback_log',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    sessionId: text('session_id').notNull(),
    /** The command that opened the session (a resume's own command is not recorded here). */
    commandId: text('command_id').notNull(),
    deviceId: text('device_id').notNull(),
    deviceName: text('device_name').notNull(),
    areaId: text('area_id').notNull(),
    areaPath: text('area_path').notNull(),
    scheduleId: text('schedule_id'),
    occurrenceId: integer('occurrence_id'),
    programmeId: text('programme_id'),
    programmeRevisionId: text('programme_revision_id'),
    programmeTitle: text('programme_title'),
    /** The emergency a session aired (its title is in programmeTitle, its exercise flag here too). */
    emergencyId: text('emergency_id'),
    exercise: integer('exercise', { mode: 'boolean' }).notNull().default(false),
    priority: text('priority', { enum: ['normal', 'priority', 'emergency'] }).notNull(),
    /** Slot start (schedules) or when the command was sent (manual plays). */
    dueAt: integer('due_at', { mode: 'timestamp_ms' }).notNull(),
    /** Slot end (schedules) or the command's expiry. */
    endsAt: integer('ends_at', { mode: 'timestamp_ms' }).notNull(),
    /** What should air in full: the content length, repeats included; null for a stream without one. */
    plannedMs: integer('planned_ms'),
    sentAt: integer('sent_at', { mode: 'timestamp_ms' }),
    receivedAt: integer('received_at', { mode: 'timestamp_ms' }),
    startedAt: integer('started_at', { mode: 'timestamp_ms' }),
    finishedAt: integer('finished_at', { mode: 'timestamp_ms' }),
    /** Sum of the spans the device played (device time), joins and resumes included. */
    airedMs: integer('aired_ms').notNull().default(0),
    /** Start of the span playing now (device time); null when not playing. */
    playingSince: integer('playing_since', { mode: 'timestamp_ms' }),
    /** Position in the content where the first span began: above zero when the device joined late. */
    joinedAtMs: integer('joined_at_ms'),
    interruptions: integer('interruptions').notNull().default(0),
    outcome: text('outcome', { enum: PLAYBACK_OUTCOMES }),
    reason: text('reason'),
    updatedAt: integer('updated_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [
    uniqueIndex('playback_log_session_idx').on(t.sessionId, t.deviceId),
    index('playback_log_due_idx').on(t.dueAt),
    index('playback_log_area_due_idx').on(t.areaPath, t.dueAt),
    index('playback_log_device_due_idx').on(t.deviceId, t.dueAt),
    index('playback_log_schedule_idx').on(t.scheduleId),
    index('playback_log_open_idx').on(t.outcome, t.endsAt),
  ],
);
