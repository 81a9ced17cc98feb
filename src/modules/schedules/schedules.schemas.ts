import { z } from 'zod';
import { CONFLICT_RESOLUTIONS, SCHEDULE_PRIORITIES } from '../../db/schema/schedules.js';
import { exceptDatesSchema, timingSchema } from './timing.js';

const id = z.string().min(1).max(64);

/** Longest relay slot: half a day (a whole day would overlap the next day's occurrence of a daily timing). */
export const MAX_RELAY_DURATION_S = 43_200;
export const NOTE_MAX_LENGTH = 500;

export const scheduleTargetsSchema = z
  .object({
    areaIds: z
      .array(id)
      .max(1_000)
      .optional()
      .describe('Every device in each area and its sub-areas, now and later'),
    deviceIds: z.array(id).max(10_000).optional(),
  })
  .refine((t) => (t.areaIds?.length ?? 0) + (t.deviceIds?.length ?? 0) > 0, {
    message: 'name at least one area or device',
  });

const note = z
  .string()
  .max(NOTE_MAX_LENGTH)
  .describe('For the people who read the calendar (why, for whom); not broadcast');

const fields = {
  programmeId: id.describe(
    'An approved programme you may air; its approved revision airs at each occurrence',
  ),
  targets: scheduleTargetsSchema,
  priority: z
    .enum(SCHEDULE_PRIORITIES)
    .describe('normal or priority; a priority schedule pre-empts normal plays on the device at air time'),
  volume: z.number().int().min(0).max(100).describe('Device volume for this broadcast; none: as set'),
  timing: timingSchema,
  exceptDates: exceptDatesSchema.describe('Local dates to skip (Tết, a funeral in the hamlet)'),
  durationS: z
    .number()
    .int()
    .min(10)
    .max(MAX_RELAY_DURATION_S)
    .describe(
      'Relays only (required for them): how long to stay on the stream; files last as long as the programme',
    ),
  note,
  onConflict: z
    .enum(CONFLICT_RESOLUTIONS)
    .describe(
      'How to settle overlaps with other schedules at the same priority on shared devices: override (theirs ' +
        'are skipped on those devices) or append (this one starts when the other ends). Without it, an ' +
        'overlap is refused (409 schedule_conflict, listing each clash).',
    ),
};

export const createScheduleSchema = z.object({
  programmeId: fields.programmeId,
  targets: fields.targets,
  priority: fields.priority.default('normal'),
  volume: fields.volume.optional(),
  timing: fields.timing,
  exceptDates: fields.exceptDates.default([]),
  durationS: fields.durationS.optional(),
  note: note.optional(),
  onConflict: fields.onConflict.optional(),
});

export const updateScheduleSchema = z
  .object({
    programmeId: fields.programmeId.optional(),
    targets: fields.targets.optional(),
    priority: fields.priority.optional(),
    volume: fields.volume.nullable().optional().describe('null: as set on the device'),
    timing: fields.timing.optional(),
    exceptDates: fields.exceptDates.optional(),
    durationS: fields.durationS.nullable().optional(),
    note: note.nullable().optional(),
    onConflict: fields.onConflict.optional(),
  })
  .refine((v) => Object.keys(v).some((k) => k !== 'onConflict'), { message: 'nothing to change' });

export const scheduleParamsSchema = z.object({ id });

export const listSchedulesQuerySchema = z.object({
  areaId: id.optional().describe('Schedules that play in this area: targets inside it, or areas above it'),
  programmeId: id.optional(),
  active: z
    .enum(['true', 'false'])
    .transform((v) => v === 'true')
    .optional()
    .describe('true: neither paused nor ended; false: paused or ended'),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  offset: z.coerce.number().int().min(0).default(0),
});

export const SCHEDULE_STATUSES = ['active', 'paused', 'ended'] as const;

export const scheduleSchema = z.object({
  id: z.string(),
  programme: z.object({ id: z.string(), title: z.string(), kind: z.enum(['bulletin', 'relay']) }),
  targets: z.object({ areaIds: z.array(z.string()), deviceIds: z.array(z.string()) }),
  deviceCount: z.number().int().describe('Devices the targets reached when the schedule was last saved'),
  priority: z.enum(SCHEDULE_PRIORITIES),
  volume: z.number().int().nullable(),
  timing: z.record(z.string(), z.unknown()).describe('As given when saved'),
  exceptDates: z.array(z.string()),
  durationS: z.number().int().nullable(),
  note: z.string().nullable(),
  description: z
    .object({ vi: z.string(), en: z.string() })
    .describe('The timing in words, with the skipped dates'),
  status: z.enum(SCHEDULE_STATUSES).describe('ended: no occurrence is left to air'),
  nextOccurrence: z
    .string()
    .nullable()
    .describe('Local start (+07:00) of the next occurrence; null when paused or ended'),
  createdBy: z
    .object({ id: z.string(), username: z.string() })
    .nullable()
    .describe('null when the account has since been deleted'),
  createdAt: z.string(),
  updatedAt: z.string(),
});

export const scheduleListSchema = z.object({
  items: z.array(scheduleSchema),
  total: z.number().int(),
  limit: z.number().int(),
  offset: z.number().int(),
});

export type CreateScheduleInput = z.infer<typeof createScheduleSchema>;
export type UpdateScheduleInput = z.infer<typeof updateScheduleSchema>;
export type ListSchedulesQuery = z.infer<typeof listSchedulesQuerySchema>;
export type ScheduleView = z.infer<typeof scheduleSchema>;
export type ScheduleStatus = (typeof SCHEDULE_STATUSES)[number];
