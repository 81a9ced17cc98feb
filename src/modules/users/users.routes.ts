import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { createUserSchema, userListSchema, userSchema } from './users.schemas.js';

const routes: FastifyPluginAsyncZod = async (app) => {
  app.post(
    '/users',
    {
      schema: {
        tags: ['users'],
        summary: 'Create a user (admin)',
        body: createUserSchema,
        response: { 201: userSchema },
      },
      preHandler: app.requireRole('admin'),
    },
    async (request, reply) =>
      reply.status(201).send(await app.services.users.create(request.actor, request.body)),
  );

  app.get(
    '/users',
    {
      schema: { tags: ['users'], summary: 'List users (admin)', response: { 200: userListSchema } },
      preHandler: app.requireRole('admin'),
    },
    async (request) => ({ items: app.services.users.list(request.actor) }),
  );
};

export default routes;
