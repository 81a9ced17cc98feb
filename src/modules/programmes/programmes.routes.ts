import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { PRIVATE_CACHE, sendAudioFile } from '../../media/serve.js';
import {
  approveSchema,
  areaJinglesParamsSchema,
  audioQuerySchema,
  createProgrammeSchema,
  jinglesSchema,
  listProgrammesQuerySchema,
  programmeListSchema,
  programmeParamsSchema,
  programmeSchema,
  rejectSchema,
  updateJinglesSchema,
  updateProgrammeSchema,
} from './programmes.schemas.js';

const EDITORS = ['admin', 'district_operator', 'broadcaster'] as const;
const APPROVERS = ['admin', 'district_operator', 'approver'] as const;

const routes: FastifyPluginAsyncZod = async (app) => {
  const programmes = app.services.programmes;

  app.post(
    '/programmes',
    {
      schema: {
        tags: ['programmes'],
        summary: 'Create a programme (a bulletin, rendered now, or a relay of a live stream) as a draft',
        description:
          'A bulletin is rendered into one device-format MP3 when it is saved (text read by the Vietnamese ' +
          'voice, recordings, silences, and the area jingles when `jingles` is true). A relay is probed once; ' +
          'what the probe found is returned as a warning, never a refusal. Nothing airs before approval.',
        body: createProgrammeSchema,
        response: { 201: programmeSchema },
      },
      preHandler: app.requireRole(...EDITORS),
    },
    async (request, reply) => reply.status(201).send(await programmes.create(request.actor, request.body)),
  );

  app.get(
    '/programmes',
    {
      schema: {
        tags: ['programmes'],
        summary: 'Programmes of your area and below, and those of the areas above yours you may air',
        querystring: listProgrammesQuerySchema,
        response: { 200: programmeListSchema },
      },
    },
    async (request) => programmes.list(request.actor, request.query),
  );

  app.get(
    '/programmes/:id',
    {
      schema: {
        tags: ['programmes'],
        summary: 'A programme: its latest revision, the approved one that airs, and its history',
        params: programmeParamsSchema,
        response: { 200: programmeSchema },
      },
    },
    async (request) => programmes.get(request.actor, request.params.id),
  );

  app.patch(
    '/programmes/:id',
    {
      schema: {
        tags: ['programmes'],
        summary: 'Edit a programme: a draft in place, anything else as a new draft revision',
        description:
          'The approved revision keeps airing until the new revision is approved. Changed content is rendered ' +
          '(or probed) again.',
        params: programmeParamsSchema,
        body: updateProgrammeSchema,
        response: { 200: programmeSchema },
      },
      preHandler: app.requireRole(...EDITORS),
    },
    async (request) => programmes.update(request.actor, request.params.id, request.body),
  );

  app.delete(
    '/programmes/:id',
    {
      schema: {
        tags: ['programmes'],
        summary: 'Delete a programme (refused while a command that has not expired plays it)',
        params: programmeParamsSchema,
        response: { 204: z.undefined() },
      },
      preHandler: app.requireRole(...EDITORS),
    },
    async (request, reply) => {
      programmes.delete(request.actor, request.params.id);
      return reply.status(204).send();
    },
  );

  app.post(
    '/programmes/:id/submit',
    {
      schema: {
        tags: ['programmes'],
        summary: 'Submit the draft revision for approval',
        params: programmeParamsSchema,
        response: { 200: programmeSchema },
      },
      preHandler: app.requireRole(...EDITORS),
    },
    async (request) => programmes.submit(request.actor, request.params.id),
  );

  app.post(
    '/programmes/:id/approve',
    {
      schema: {
        tags: ['programmes'],
        summary: 'Approve the submitted revision: from now on it is what airs',
        description:
          'approver, district_operator or admin, inside their area; never for a programme of their own.',
        params: programmeParamsSchema,
        body: approveSchema,
        response: { 200: programmeSchema },
      },
      preHandler: app.requireRole(...APPROVERS),
    },
    async (request) => programmes.approve(request.actor, request.params.id, request.body?.note),
  );

  app.post(
    '/programmes/:id/reject',
    {
      schema: {
        tags: ['programmes'],
        summary: 'Reject the submitted revision, saying why',
        params: programmeParamsSchema,
        body: rejectSchema,
        response: { 200: programmeSchema },
      },
      preHandler: app.requireRole(...APPROVERS),
    },
    async (request) => programmes.reject(request.actor, request.params.id, request.body.reason),
  );

  app.get(
    '/programmes/:id/audio',
    {
      schema: {
        tags: ['programmes'],
        summary: "A bulletin's rendered file (audio/mpeg; Range and If-None-Match honoured)",
        params: programmeParamsSchema,
        querystring: audioQuerySchema,
      },
    },
    async (request, reply) =>
      sendAudioFile(
        request,
        reply,
        programmes.audioFile(request.actor, request.params.id, request.query.revision),
        PRIVATE_CACHE,
      ),
  );

  app.get(
    '/areas/:id/jingles',
    {
      schema: {
        tags: ['programmes'],
        summary: "An area's intro and outro jingles (bulletins with `jingles: true` are framed by them)",
        params: areaJinglesParamsSchema,
        response: { 200: jinglesSchema },
      },
    },
    async (request) => programmes.getJingles(request.actor, request.params.id),
  );

  app.put(
    '/areas/:id/jingles',
    {
      schema: {
        tags: ['programmes'],
        summary: "Set an area's jingles; bulletins of areas below without their own use the nearest above",
        description: 'Bulletins already rendered keep the jingles they were rendered with.',
        params: areaJinglesParamsSchema,
        body: updateJinglesSchema,
        response: { 200: jinglesSchema },
      },
      preHandler: app.requireRole(...EDITORS),
    },
    async (request) => programmes.updateJingles(request.actor, request.params.id, request.body),
  );
};

export default routes;
