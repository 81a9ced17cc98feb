import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  createdWarningSourceSchema,
  createWarningSourceSchema,
  warningSourceListSchema,
  warningSourceParamsSchema,
  warningSourceSchema,
} from './cap.schemas.js';

/** Warning systems' keys for CAP alerts: created, listed and revoked by administrators only. */
const routes: FastifyPluginAsyncZod = async (app) => {
  const { warningSources } = app.services;
  const adminOnly = app.requireRole('admin');

  app.post(
    '/warning-sources',
    {
      schema: {
        tags: ['emergencies'],
        summary: 'Give a warning system a key to send CAP alerts to one area; the key is shown only here',
        body: createWarningSourceSchema,
        response: { 201: createdWarningSourceSchema },
      },
      preHandler: adminOnly,
    },
    async (request, reply) => reply.status(201).send(warningSources.create(request.actor, request.body)),
  );

  app.get(
    '/warning-sources',
    {
      schema: {
        tags: ['emergencies'],
        summary: 'Warning sources, revoked ones included, oldest first (never their keys)',
        response: { 200: warningSourceListSchema },
      },
      preHandler: adminOnly,
    },
    async () => warningSources.list(),
  );

  app.delete(
    '/warning-sources/:id',
    {
      schema: {
        tags: ['emergencies'],
        summary: 'Revoke a warning source: its key is refused from now on (kept in the list, with revokedAt)',
        params: warningSourceParamsSchema,
        response: { 200: warningSourceSchema },
      },
      preHandler: adminOnly,
    },
    async (request) => warningSources.revoke(request.actor, request.params.id),
  );
};

export default routes;
