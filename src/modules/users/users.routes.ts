import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  createUserSchema,
  resetPasswordSchema,
  userListSchema,
  userParamsSchema,
  userSchema,
} from './users.schemas.js';

const routes: FastifyPluginAsyncZod = async (app) => {
  const users = app.services.users;
  const adminOnly = app.requireRole('admin');

  app.post(
    '/users',
    {
      schema: {
        tags: ['users'],
        summary: 'Create a user (admin)',
        body: createUserSchema,
        response: { 201: userSchema },
      },
      preHandler: adminOnly,
    },
    async (request, reply) => reply.status(201).send(await users.create(request.actor, request.body)),
  );

  app.get(
    '/users',
    {
      schema: { tags: ['users'], summary: 'List users (admin)', response: { 200: userListSchema } },
      preHandler: adminOnly,
    },
    async (request) => ({ items: users.list(request.actor) }),
  );

  app.get(
    '/users/:id',
    {
      schema: {
        tags: ['users'],
        summary: 'One user (admin)',
        params: userParamsSchema,
        response: { 200: userSchema },
      },
      preHandler: adminOnly,
    },
    async (request) => users.get(request.params.id),
  );

  app.post(
    '/users/:id/password',
    {
      schema: {
        tags: ['users'],
        summary:
          "Set another user's password (admin); revokes all their tokens. Your own: POST /auth/password",
        params: userParamsSchema,
        body: resetPasswordSchema,
        response: { 204: z.undefined() },
      },
      preHandler: adminOnly,
    },
    async (request, reply) => {
      await users.resetPassword(request.actor, request.params.id, request.body.newPassword);
      return reply.status(204).send();
    },
  );

  app.post(
    '/users/:id/disable',
    {
      schema: {
        tags: ['users'],
        summary: 'Disable a user (admin): login refused, all tokens revoked',
        params: userParamsSchema,
        response: { 200: userSchema },
      },
      preHandler: adminOnly,
    },
    async (request) => users.disable(request.actor, request.params.id),
  );

  app.post(
    '/users/:id/enable',
    {
      schema: {
        tags: ['users'],
        summary: 'Enable a disabled user again (admin)',
        params: userParamsSchema,
        response: { 200: userSchema },
      },
      preHandler: adminOnly,
    },
    async (request) => users.enable(request.actor, request.params.id),
  );

  app.delete(
    '/users/:id',
    {
      schema: {
        tags: ['users'],
        summary: 'Delete a user (admin); their commands stay, without a creator',
        params: userParamsSchema,
        response: { 204: z.undefined() },
      },
      preHandler: adminOnly,
    },
    async (request, reply) => {
      users.delete(request.actor, request.params.id);
      return reply.status(204).send();
    },
  );
};

export default routes;
