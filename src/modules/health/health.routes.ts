import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  areaSummarySchema,
  deviceHealthSchema,
  healthParamsSchema,
  telemetryQuerySchema,
  telemetrySeriesSchema,
} from './health.schemas.js';

/**
 * Health is for the people who keep the equipment alive, and for district operators, who must know which
 * loudspeakers are down before they send a warning. Reads only: scope still limits each to their area.
 */
const HEALTH_READERS = ['admin', 'technician', 'district_operator'] as const;

const routes: FastifyPluginAsyncZod = async (app) => {
  const { devices, health, areas } = app.services;

  app.get(
    '/devices/:id/health',
    {
      schema: {
        tags: ['health'],
        summary:
          'Presence, derived health with its reasons, latest telemetry and recent transitions of a device',
        params: healthParamsSchema,
        response: { 200: deviceHealthSchema },
      },
      preHandler: app.requireRole(...HEALTH_READERS),
    },
    async (request) => health.deviceHealth(devices.getVisible(request.actor, request.params.id)),
  );

  app.get(
    '/devices/:id/telemetry',
    {
      schema: {
        tags: ['health'],
        summary: 'Telemetry history of a device; long ranges are averaged into at most 500 points',
        params: healthParamsSchema,
        querystring: telemetryQuerySchema,
        response: { 200: telemetrySeriesSchema },
      },
      preHandler: app.requireRole(...HEALTH_READERS),
    },
    async (request) =>
      health.telemetryHistory(devices.getVisible(request.actor, request.params.id).id, request.query),
  );

  app.get(
    '/areas/:id/summary',
    {
      schema: {
        tags: ['health'],
        summary:
          'Device counts for an area and each of its sub-areas: online, playing, ok / degraded / fault',
        params: healthParamsSchema,
        response: { 200: areaSummarySchema },
      },
      preHandler: app.requireRole(...HEALTH_READERS),
    },
    async (request) => {
      const area = areas.getVisible(request.actor, request.params.id);
      return health.summary(area, areas.childrenOf(area.id));
    },
  );
};

export default routes;
