import { z } from 'zod';
import { PLAYBACK_OUTCOMES } from '../../db/schema/index.js';
import { dayOrInstantSchema } from '../schedules/timing.js';

const id = z.string().min(1).max(64);

const format = z
  .enum(['json', 'csv'])
  .optional()
  .describe('csv: the same as CSV (or send Accept: text/csv); a CSV export has no page limit');

export const LOG_OUTCOME_FILTERS = [...PLAYBACK_OUTCOMES, 'pending'] as const;

export const playbackLogQuerySchema = z.object({
  areaId: id.optional().describe('Records of devices in this area and its sub-areas'),
  deviceId: id.optional(),
  programmeId: id.optional(),
  scheduleId: id.optional(),
  emergencyId: id.optional().describe('Records of this emergency broadcast (every revision of it)'),
  exercise: z
    .enum(['true', 'false'])
    .transform((v) => v === 'true')
    .optional()
    .describe('true: only drills (emergency exercises); false: everything that is not a drill'),
  from: dayOrInstantSchema.optional().describe('Due at or after (a date: from its start)'),
  to: dayOrInstantSchema.optional().describe('Due before (a date: up to the end of that day, included)'),
  outcome: z
    .enum(LOG_OUTCOME_FILTERS)
    .optional()
    .describe('pending: not decided yet (slot open or closed under a minute ago, or reopened by a late log)'),
  limit: z.coerce.number().int().min(1).max(1_000).default(100),
  offset: z.coerce.number().int().min(0).default(0),
  format,
});
export type PlaybackLogQuery = z.infer<typeof playbackLogQuerySchema>;

const localTime = z.string().describe('Local time with offset, 2026-12-01T06:00:00+07:00');

export const playbackRecordSchema = z.object({
  id: z.number().int(),
  sessionId: z.string(),
  commandId: z.string(),
  device: z.object({ id: z.string(), name: z.string() }),
  area: z.object({ id: z.string(), name: z.string().nullable() }),
  scheduleId: z.string().nullable(),
  occurrenceId: z.number().int().nullable(),
  programme: z
    .object({ id: z.string(), revisionId: z.string().nullable(), title: z.string().nullable() })
    .nullable()
    .describe("null for an emergency's record that plays no programme; its title is then the emergency's"),
  emergency: z
    .object({
      id: z.string(),
      title: z.string().nullable(),
      exercise: z.boolean().describe('true: a drill, never a real alert'),
    })
    .nullable()
    .describe('The emergency broadcast the record aired (docs/emergency.md); null for any other play'),
  priority: z.string(),
  dueAt: localTime,
  endsAt: localTime,
  plannedMs: z.number().int().nullable(),
  sentAt: localTime.nullable(),
  receivedAt: localTime.nullable(),
  startedAt: localTime.nullable(),
  finishedAt: localTime.nullable(),
  airedMs: z.number().int(),
  joinedAtMs: z.number().int().nullable(),
  interruptions: z.number().int(),
  outcome: z.enum(LOG_OUTCOME_FILTERS),
  reason: z.string().nullable(),
});
export type PlaybackRecordView = z.infer<typeof playbackRecordSchema>;

export const playbackLogListSchema = z.object({
  items: z.array(playbackRecordSchema),
  limit: z.number().int(),
  offset: z.number().int(),
});

export const broadcastReportQuerySchema = z.object({
  areaId: id.describe('A province, district or commune: figures per commune and per hamlet below it'),
  month: z
    .string()
    .regex(/^(\d{4})-(0[1-9]|1[0-2])$/, { message: 'must be a month YYYY-MM', abort: true })
    .refine(
      (m) => Number(m.slice(0, 4)) >= 2000 && Number(m.slice(0, 4)) <= 2100,
      'must be in the years 2000–2100',
    )
    .describe('Calendar month in Vietnam (Asia/Ho_Chi_Minh), YYYY-MM'),
  format,
});
export type BroadcastReportQuery = z.infer<typeof broadcastReportQuerySchema>;

/** Everything but emergencies: scheduled occurrences and manual plays. */
const programmeFigures = {
  occurrences: z
    .number()
    .int()
    .describe('Broadcasts planned: distinct occurrences and manual plays (emergencies are apart)'),
  records: z.number().int().describe('Occurrences × devices'),
  played: z.number().int(),
  partial: z.number().int(),
  failed: z.number().int(),
  skipped: z.number().int(),
  expired: z.number().int(),
  undelivered: z.number().int(),
  pending: z.number().int(),
  minutesOnAir: z.number(),
  bulletins: z.array(
    z.object({
      programmeId: z.string(),
      title: z.string().nullable(),
      occurrences: z.number().int(),
      targeted: z.number().int().describe('Devices targeted, summed over the occurrences'),
      played: z.number().int().describe('Of those, the devices that played it in full'),
      partial: z.number().int(),
      share: z.number().describe('played / targeted, 0–1'),
    }),
  ),
  topFailureReasons: z.array(
    z.object({ outcome: z.string(), reason: z.string().nullable(), count: z.number().int() }),
  ),
};
/**
 * Emergency broadcasts (docs/emergency.md) are counted apart from the programmes above, which never include
 * them, and drills apart from real alerts: no figure mixes an exercise with a real warning.
 */
const alertFigures = z.object({
  count: z.number().int().describe('Distinct emergencies'),
  records: z
    .number()
    .int()
    .describe('Emergencies × devices (each revision of an updated text its own record)'),
  played: z.number().int(),
  partial: z.number().int(),
  failed: z.number().int(),
  skipped: z.number().int(),
  expired: z.number().int(),
  undelivered: z.number().int(),
  pending: z.number().int(),
  minutesOnAir: z.number(),
  items: z.array(
    z.object({
      emergencyId: z.string(),
      title: z.string().nullable(),
      sentAt: localTime.describe('Its first record in the month'),
      targeted: z.number().int().describe('Devices targeted'),
      played: z.number().int().describe('Of those, the devices that played it in full (any revision)'),
      partial: z.number().int().describe('Devices that played part of it and never all of it'),
      share: z.number().describe('played / targeted, 0–1'),
    }),
  ),
});

const figures = {
  ...programmeFigures,
  emergencies: alertFigures.describe('Real emergency broadcasts; drills are never counted here'),
  exercises: alertFigures.describe('Emergency exercises (drills, diễn tập): never real alerts'),
};
const areaRef = { id: z.string(), name: z.string(), level: z.string() };

export const broadcastReportSchema = z.object({
  area: z.object(areaRef),
  month: z.string(),
  from: localTime,
  to: localTime,
  total: z.object(figures),
  communes: z.array(
    z.object({ ...areaRef, ...figures, hamlets: z.array(z.object({ ...areaRef, ...figures })) }),
  ),
});
export type BroadcastReport = z.infer<typeof broadcastReportSchema>;
export type Figures = z.infer<typeof broadcastReportSchema>['total'];
export type AlertFigures = Figures['emergencies'];
