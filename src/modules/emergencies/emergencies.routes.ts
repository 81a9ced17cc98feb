import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { SENDER_ROLES } from './emergencies.service.js';
import {
  cancelEmergencySchema,
  emergencyDetailSchema,
  emergencyListSchema,
  emergencyParamsSchema,
  emergencySchema,
  listEmergenciesQuerySchema,
  sendEmergencySchema,
  updateEmergencySchema,
} from './emergencies.schemas.js';
import { formatEvent } from './events.js';

const SENDERS = SENDER_ROLES as ('admin' | 'district_operator')[];

const routes: FastifyPluginAsyncZod = async (app) => {
  const { emergencies, emergencyEvents: events } = app.services;

  app.post(
    '/emergencies',
    {
      // A double-clicked send goes out once (src/plugins/idempotency.ts).
      config: { idempotent: true },
      schema: {
        tags: ['emergencies'],
        summary: 'Send an emergency broadcast now to every loudspeaker of the areas (pre-empts everything)',
        description:
          'No approval step. The text is read by the Vietnamese voice after the attention signal, and the whole ' +
          'is sent as one file at emergency priority. Answered once it has gone out to the devices online; ' +
          'follow it with GET /emergencies/:id or the live /events stream. exercise: true sends a drill, only ' +
          'to devices flagged drillParticipant, framed by "Đây là diễn tập". Send an Idempotency-Key header so ' +
          'that a retried request sends once (docs/emergency.md).',
        body: sendEmergencySchema,
        response: { 201: emergencySchema },
      },
      preHandler: app.requireRole(...SENDERS),
    },
    async (request, reply) =>
      reply.status(201).send(await emergencies.send({ kind: 'user', actor: request.actor }, request.body)),
  );

  app.get(
    '/emergencies',
    {
      schema: {
        tags: ['emergencies'],
        summary: 'Emergencies that played in your area (and those from above that reached it), newest first',
        querystring: listEmergenciesQuerySchema,
        response: { 200: emergencyListSchema },
      },
    },
    async (request) => emergencies.list(request.actor, request.query),
  );

  app.get(
    '/emergencies/:id',
    {
      schema: {
        tags: ['emergencies'],
        summary:
          'An emergency: devices per status, per commune, and those not reached yet with their last contact',
        params: emergencyParamsSchema,
        response: { 200: emergencyDetailSchema },
      },
    },
    async (request) => emergencies.get(request.actor, request.params.id),
  );

  app.patch(
    '/emergencies/:id',
    {
      schema: {
        tags: ['emergencies'],
        summary:
          'Change a running emergency: a new text (re-sent as the same emergency), a later expiry, the title',
        params: emergencyParamsSchema,
        body: updateEmergencySchema,
        response: { 200: emergencySchema },
      },
      preHandler: app.requireRole(...SENDERS),
    },
    async (request) =>
      emergencies.update({ kind: 'user', actor: request.actor }, request.params.id, request.body),
  );

  app.post(
    '/emergencies/:id/cancel',
    {
      schema: {
        tags: ['emergencies'],
        summary: 'Stop an emergency everywhere now (a stop to every device, acknowledged per device)',
        params: emergencyParamsSchema,
        body: cancelEmergencySchema.optional(),
        response: { 200: emergencySchema },
      },
      preHandler: app.requireRole(...SENDERS),
    },
    async (request) =>
      emergencies.cancel({ kind: 'user', actor: request.actor }, request.params.id, request.body?.reason),
  );

  app.get(
    '/emergencies/:id/events',
    {
      schema: {
        tags: ['emergencies'],
        summary: 'Live progress as Server-Sent Events: a snapshot, then progress as devices answer',
        description:
          'text/event-stream. `snapshot` first (counts), then `progress` events (counts and the devices that ' +
          'changed, coalesced every 0.5 s), and `end` 30 s after the emergency expired or was cancelled. Each ' +
          'event has an id: reconnect with Last-Event-ID to get what changed meanwhile (docs/emergency.md).',
        params: emergencyParamsSchema,
        headers: z.object({
          'last-event-id': z
            .string()
            .regex(/^\d{1,15}$/, 'must be the id of an event of this stream')
            .optional(),
        }),
      },
    },
    async (request, reply) => {
      const raw = reply.raw;
      const header = request.headers['last-event-id'];
      const lastEventId = typeof header === 'string' ? Number(header) : undefined;
      let close = () => {};
      let opened = false;
      const write = (chunk: string) => {
        if (!raw.writableEnded) raw.write(chunk);
      };
      // Opened before the answer starts: an unknown or invisible emergency is a 404 problem+json.
      const pending: string[] = [];
      close = events.open(
        request.actor,
        request.params.id,
        lastEventId,
        (event) => {
          const chunk = formatEvent(event);
          if (!opened) pending.push(chunk);
          else write(chunk);
          if (event.event === 'end') {
            close();
            raw.end();
          }
        },
        () => write(': keepalive\n\n'),
      );
      reply.hijack();
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
        'x-request-id': request.id,
      });
      opened = true;
      // Tells EventSource how long to wait before reconnecting.
      write('retry: 2000\n\n');
      for (const chunk of pending) write(chunk);
      // Whichever side goes first; a client that left while the stream was being opened is let go now.
      request.raw.on('close', () => close());
      raw.on('close', () => close());
      if (request.raw.destroyed || raw.destroyed) close();
    },
  );
};

export default routes;
