import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { toAreaView } from './areas.service.js';
import {
  areaListSchema,
  areaParamsSchema,
  areaSchema,
  createAreaSchema,
  listAreasQuerySchema,
  updateAreaSchema,
} from './areas.schemas.js';

const MANAGERS = ['admin', 'district_operator'] as const;

const routes: FastifyPluginAsyncZod = async (app) => {
  const areas = app.services.areas;

  app.get(
    '/areas',
    {
      schema: {
        tags: ['areas'],
        summary:
          'The area tree visible to the caller (their own area and everything below it), or with `code` ' +
          'the area holding that administrative code',
        querystring: listAreasQuerySchema,
        response: { 200: areaListSchema },
      },
    },
    async (request) => ({ items: areas.list(request.actor, request.query) }),
  );

  app.post(
    '/areas',
    {
      schema: {
        tags: ['areas'],
        summary: 'Create an area under one of yours',
        body: createAreaSchema,
        response: { 201: areaSchema },
      },
      preHandler: app.requireRole(...MANAGERS),
    },
    async (request, reply) => reply.status(201).send(areas.create(request.actor, request.body)),
  );

  app.get(
    '/areas/:id',
    {
      schema: {
        tags: ['areas'],
        summary: 'One area',
        params: areaParamsSchema,
        response: { 200: areaSchema },
      },
    },
    async (request) => toAreaView(areas.getVisible(request.actor, request.params.id)),
  );

  app.patch(
    '/areas/:id',
    {
      schema: {
        tags: ['areas'],
        summary:
          'Rename, change the level or the administrative code of, or move an area (its subtree moves with it)',
        params: areaParamsSchema,
        body: updateAreaSchema,
        response: { 200: areaSchema },
      },
      preHandler: app.requireRole(...MANAGERS),
    },
    async (request) => areas.update(request.actor, request.params.id, request.body),
  );

  app.delete(
    '/areas/:id',
    {
      schema: {
        tags: ['areas'],
        summary: 'Delete an empty area (refused while it has sub-areas, devices or users)',
        params: areaParamsSchema,
        response: { 204: z.undefined() },
      },
      preHandler: app.requireRole(...MANAGERS),
    },
    async (request, reply) => {
      areas.delete(request.actor, request.params.id);
      return reply.status(204).send();
    },
  );
};

export default routes;
