import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  commandAcceptedSchema,
  commandDetailSchema,
  commandListSchema,
  commandParamsSchema,
  createCommandSchema,
  getCommandQuerySchema,
  listCommandsQuerySchema,
} from './commands.schemas.js';

const routes: FastifyPluginAsyncZod = async (app) => {
  const commands = app.services.commands;

  app.post(
    '/commands',
    {
      // A double-clicked broadcast goes out once (src/plugins/idempotency.ts).
      config: { idempotent: true },
      schema: {
        tags: ['commands'],
        summary: 'Send play / stop / volume to devices and areas; track each device with GET /commands/:id',
        description:
          'stop and volume carry a priority like play: a device refuses one below the priority of what it plays ' +
          '(reason lower_priority), and only admin and district_operator may use emergency. priority defaults ' +
          'to normal for every type. Send an Idempotency-Key header so that a retried request acts once ' +
          '(docs/commands.md).',
        body: createCommandSchema,
        response: { 202: commandAcceptedSchema },
      },
    },
    async (request, reply) => reply.status(202).send(commands.create(request.actor, request.body)),
  );

  app.get(
    '/commands',
    {
      schema: {
        tags: ['commands'],
        summary: 'Recent commands you sent or that reached your area, newest first',
        querystring: listCommandsQuerySchema,
        response: { 200: commandListSchema },
      },
    },
    async (request) => commands.list(request.actor, request.query),
  );

  app.get(
    '/commands/:id',
    {
      schema: {
        tags: ['commands'],
        summary: 'A command with the delivery status of every target device in your area',
        params: commandParamsSchema,
        querystring: getCommandQuerySchema,
        response: { 200: commandDetailSchema },
      },
    },
    async (request) => commands.get(request.actor, request.params.id, request.query.status),
  );
};

export default routes;
