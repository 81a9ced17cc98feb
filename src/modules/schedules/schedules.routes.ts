import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  createScheduleSchema,
  listSchedulesQuerySchema,
  scheduleListSchema,
  scheduleParamsSchema,
  scheduleSchema,
  updateScheduleSchema,
} from './schedules.schemas.js';

const EDITORS = ['admin', 'district_operator', 'broadcaster'] as const;

const CONFLICTS =
  'Occurrences that overlap another schedule at the same priority on a shared device are refused (409 ' +
  'schedule_conflict, with a `conflicts` list) unless `onConflict` says how to settle them. Times without an ' +
  'offset are wall-clock time in Vietnam (Asia/Ho_Chi_Minh); answers give local time with +07:00.';

const routes: FastifyPluginAsyncZod = async (app) => {
  const schedules = app.services.schedules;

  app.post(
    '/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Schedule an approved programme on areas and devices (once, daily, weekly or cron)',
        description:
          'Only an approved programme can be scheduled, and only on areas and devices inside your area. Each ' +
          `occurrence airs the programme's approved revision at that time. ${CONFLICTS}`,
        body: createScheduleSchema,
        response: { 201: scheduleSchema },
      },
      preHandler: app.requireRole(...EDITORS),
    },
    async (request, reply) => reply.status(201).send(schedules.create(request.actor, request.body)),
  );

  app.get(
    '/schedules',
    {
      schema: {
        tags: ['schedules'],
        summary:
          'Schedules that play in your area (and those of the areas above that play in it), newest first',
        querystring: listSchedulesQuerySchema,
        response: { 200: scheduleListSchema },
      },
    },
    async (request) => schedules.list(request.actor, request.query),
  );

  app.get(
    '/schedules/:id',
    {
      schema: {
        tags: ['schedules'],
        summary: 'A schedule, its timing in words and its next occurrence',
        params: scheduleParamsSchema,
        response: { 200: scheduleSchema },
      },
    },
    async (request) => schedules.get(request.actor, request.params.id),
  );

  app.patch(
    '/schedules/:id',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Edit a schedule: future occurrences change, past ones stay as they were',
        description: CONFLICTS,
        params: scheduleParamsSchema,
        body: updateScheduleSchema,
        response: { 200: scheduleSchema },
      },
      preHandler: app.requireRole(...EDITORS),
    },
    async (request) => schedules.update(request.actor, request.params.id, request.body),
  );

  app.delete(
    '/schedules/:id',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Delete a schedule: nothing more airs; what aired stays in the playback log',
        params: scheduleParamsSchema,
        response: { 204: z.undefined() },
      },
      preHandler: app.requireRole(...EDITORS),
    },
    async (request, reply) => {
      schedules.delete(request.actor, request.params.id);
      return reply.status(204).send();
    },
  );

  app.post(
    '/schedules/:id/pause',
    {
      schema: {
        tags: ['schedules'],
        summary:
          'Pause a schedule: its occurrences are not sent until it is resumed (the calendar shows them)',
        params: scheduleParamsSchema,
        response: { 200: scheduleSchema },
      },
      preHandler: app.requireRole(...EDITORS),
    },
    async (request) => schedules.pause(request.actor, request.params.id),
  );

  app.post(
    '/schedules/:id/resume',
    {
      schema: {
        tags: ['schedules'],
        summary: 'Resume a paused schedule: occurrences from now on air again',
        params: scheduleParamsSchema,
        response: { 200: scheduleSchema },
      },
      preHandler: app.requireRole(...EDITORS),
    },
    async (request) => schedules.resume(request.actor, request.params.id),
  );
};

export default routes;
