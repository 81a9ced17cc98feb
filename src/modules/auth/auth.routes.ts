import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { changePasswordSchema, loginResponseSchema, loginSchema, meSchema } from './auth.schemas.js';
import { bearerToken } from '../../plugins/auth.js';

const routes: FastifyPluginAsyncZod = async (app) => {
  app.post(
    '/auth/login',
    {
      config: { public: true },
      schema: {
        tags: ['auth'],
        summary: 'Log in; returns a bearer token',
        security: [],
        body: loginSchema,
        response: { 200: loginResponseSchema },
      },
    },
    async (request) => app.services.auth.login(request.body.username, request.body.password, request.ip),
  );

  app.post(
    '/auth/logout',
    {
      schema: {
        tags: ['auth'],
        summary: 'Revoke the token used for this request (your other tokens stay valid)',
        response: { 204: z.undefined() },
      },
    },
    async (request, reply) => {
      app.services.auth.logout(request.actor, bearerToken(request) ?? '');
      return reply.status(204).send();
    },
  );

  app.post(
    '/auth/password',
    {
      schema: {
        tags: ['auth'],
        summary: 'Change your own password; your other tokens are revoked, this one stays valid',
        body: changePasswordSchema,
        response: { 204: z.undefined() },
      },
    },
    async (request, reply) => {
      await app.services.auth.changePassword(
        request.actor,
        bearerToken(request) ?? '',
        request.body,
        request.ip,
      );
      return reply.status(204).send();
    },
  );

  app.get(
    '/auth/me',
    { schema: { tags: ['auth'], summary: 'Who the token belongs to', response: { 200: meSchema } } },
    async (request) => ({ user: app.services.users.get(request.actor.id) }),
  );
};

export default routes;
