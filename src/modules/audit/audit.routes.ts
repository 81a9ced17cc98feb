import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { auditListSchema, auditQuerySchema } from './audit.schemas.js';

const routes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/audit',
    {
      schema: {
        tags: ['audit'],
        summary: 'The audit log, newest first (admin)',
        querystring: auditQuerySchema,
        response: { 200: auditListSchema },
      },
      preHandler: app.requireRole('admin'),
    },
    async (request) => ({ items: app.services.audit.list(request.query) }),
  );
};

export default routes;
