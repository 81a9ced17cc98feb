import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  acknowledgeSchema,
  alertListSchema,
  alertParamsSchema,
  alertSchema,
  listAlertsQuerySchema,
} from './alerts.schemas.js';

/** Alerts are read by district operators too (they decide where a warning can be heard); acted on by technicians. */
const READERS = ['admin', 'technician', 'district_operator'] as const;
const TECHNICIANS = ['admin', 'technician'] as const;

const routes: FastifyPluginAsyncZod = async (app) => {
  const { alerts } = app.services;

  app.get(
    '/alerts',
    {
      schema: {
        tags: ['health'],
        summary: 'Device alerts in your area, newest first: offline too long, in fault, degraded too long',
        querystring: listAlertsQuerySchema,
        response: { 200: alertListSchema },
      },
      preHandler: app.requireRole(...READERS),
    },
    async (request) => alerts.list(request.actor, request.query),
  );

  app.post(
    '/alerts/:id/acknowledge',
    {
      schema: {
        tags: ['health'],
        summary: 'Acknowledge an alert, with a note; it still resolves by itself when the condition clears',
        params: alertParamsSchema,
        body: acknowledgeSchema,
        response: { 200: alertSchema },
      },
      preHandler: app.requireRole(...TECHNICIANS),
    },
    async (request) => alerts.acknowledge(request.actor, request.params.id, request.body.note),
  );
};

export default routes;
