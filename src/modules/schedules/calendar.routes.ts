import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { OCCURRENCE_STATUSES, SCHEDULE_PRIORITIES } from '../../db/schema/index.js';
import type { Clock } from '../../lib/clock.js';
import {
  CALENDAR_DEFAULT_DAYS,
  CALENDAR_MAX_DAYS,
  CalendarService,
  MAX_CONFLICTS_PER_ITEM,
} from './calendar.js';
import { localDateSchema, onceDateTimeSchema } from './timing.js';

const id = z.string().min(1).max(64);

/** A local date, or a date and time (without an offset: Vietnamese wall-clock time). */
const boundSchema = z
  .string()
  .max(40)
  .refine((s) => localDateSchema.safeParse(s).success || onceDateTimeSchema.safeParse(s).success, {
    message:
      'must be a date YYYY-MM-DD or a date and time YYYY-MM-DDTHH:MM, optionally with an offset (+07:00)',
  });

export const calendarQuerySchema = z.object({
  areaId: id
    .optional()
    .describe(
      'Occurrences that play in this area: schedules targeting it, a place inside it, or an area above it',
    ),
  deviceId: id.optional().describe('Occurrences that would play on this device (not with areaId)'),
  from: boundSchema
    .optional()
    .describe('Default: today 00:00 in Vietnam. A date means the start of that day'),
  to: boundSchema
    .optional()
    .describe(
      `Exclusive; a date includes that whole day. Default: ${CALENDAR_DEFAULT_DAYS} days after from; ` +
        `at most ${CALENDAR_MAX_DAYS} days after from`,
    ),
  limit: z.coerce.number().int().min(1).max(5_000).default(500),
  offset: z.coerce.number().int().min(0).default(0),
});

const peerSchema = z.object({
  scheduleId: z.string(),
  programmeTitle: z.string(),
  start: z.string(),
  end: z.string(),
});

export const calendarItemSchema = z.object({
  occurrenceId: z.number().int(),
  scheduleId: z.string(),
  start: z.string().describe('When it airs, local time (+07:00); later than slot when appended'),
  end: z.string(),
  slot: z.string().describe('The start its timing gives'),
  status: z
    .enum([...OCCURRENCE_STATUSES, 'paused'])
    .describe(
      'paused: planned, but its schedule is paused (it will be cancelled at its time unless resumed)',
    ),
  reason: z.string().optional().describe('Why it was skipped or cancelled'),
  priority: z.enum(SCHEDULE_PRIORITIES),
  programme: z.object({ id: z.string(), title: z.string(), kind: z.enum(['bulletin', 'relay']) }),
  targets: z.object({
    areaIds: z.array(z.string()),
    deviceIds: z.array(z.string()),
    deviceCount: z.number().int().describe('Devices the targets reached when the schedule was last saved'),
  }),
  appendedAfter: z
    .object({ scheduleId: z.string(), programmeTitle: z.string() })
    .optional()
    .describe('The occurrence it was moved after (onConflict: append)'),
  overriddenBy: z
    .array(peerSchema)
    .describe('Occurrences it gives way to on the devices they share (onConflict: override)'),
  conflicts: z
    .array(peerSchema)
    .describe(
      `Unresolved overlaps at the same priority on shared devices, among this calendar's schedules ` +
        `(at most ${MAX_CONFLICTS_PER_ITEM})`,
    ),
});

export const calendarPageSchema = z.object({
  from: z.string(),
  to: z.string(),
  items: z.array(calendarItemSchema),
  total: z.number().int(),
  limit: z.number().int(),
  offset: z.number().int(),
});

const routes: FastifyPluginAsyncZod<{ clock: Clock }> = async (app, options) => {
  const calendar = new CalendarService(app.db, app.services, options.clock);

  app.get(
    '/calendar',
    {
      schema: {
        tags: ['schedules'],
        summary:
          'The broadcast calendar of an area or a device: occurrences by start, with overrides and conflicts',
        description:
          'Occurrences that start in [from, to), at most 31 days, sorted by start. Without areaId or deviceId: ' +
          'your own area (administrators: everything). Times are local with their offset (+07:00).',
        querystring: calendarQuerySchema,
        response: { 200: calendarPageSchema },
      },
      // The schema above documents the answer (OpenAPI); it is not run over it. zod's encode of a month's
      // 5,000 nested items cost more than building them. CalendarService.list writes the page to this very
      // schema — its types match it key for key, in its order, with nothing to transform — and the calendar
      // tests parse real answers with calendarPageSchema and find them unchanged.
      serializerCompiler: () => (data) => JSON.stringify(data),
    },
    async (request) => calendar.list(request.actor, request.query),
  );
};

export default routes;
