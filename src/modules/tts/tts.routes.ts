import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  abbreviationListSchema,
  abbreviationParamsSchema,
  abbreviationSchema,
  normaliseBodySchema,
  normaliseResultSchema,
  previewBodySchema,
  setAbbreviationSchema,
} from './tts.schemas.js';

/** Those who write or sign off announcements hear and check how they will be read. */
const SPEAKERS = ['admin', 'district_operator', 'broadcaster', 'approver'] as const;

const routes: FastifyPluginAsyncZod = async (app) => {
  const { tts } = app.services;

  app.post(
    '/tts/preview',
    {
      schema: {
        tags: ['tts'],
        summary: 'Hear a text read by a Vietnamese voice: audio/mpeg, at most 60 s; nothing is stored',
        body: previewBodySchema,
      },
      preHandler: app.requireRole(...SPEAKERS),
    },
    async (request, reply) => {
      const { text, ...options } = request.body;
      const mp3 = await tts.preview(text, options);
      return reply.type('audio/mpeg').header('cache-control', 'no-store').send(mp3);
    },
  );

  app.post(
    '/tts/normalise',
    {
      schema: {
        tags: ['tts'],
        summary: 'The text as the engine will read it: numbers, dates, times, phones, abbreviations in words',
        body: normaliseBodySchema,
        response: { 200: normaliseResultSchema },
      },
      preHandler: app.requireRole(...SPEAKERS),
    },
    async (request) => ({ text: tts.normalise(request.body.text) }),
  );

  app.get(
    '/tts/abbreviations',
    {
      schema: {
        tags: ['tts'],
        summary:
          'The abbreviation dictionary: built-in entries and the custom ones that add to or override them',
        response: { 200: abbreviationListSchema },
      },
      preHandler: app.requireRole(...SPEAKERS),
    },
    async () => ({ items: tts.listAbbreviations() }),
  );

  app.put(
    '/tts/abbreviations/:abbreviation',
    {
      schema: {
        tags: ['tts'],
        summary: 'Add an abbreviation or change how one is read (overrides a built-in entry)',
        params: abbreviationParamsSchema,
        body: setAbbreviationSchema,
        response: { 200: abbreviationSchema },
      },
      preHandler: app.requireRole('admin'),
    },
    async (request) =>
      tts.setAbbreviation(request.actor, request.params.abbreviation, request.body.expansion),
  );

  app.delete(
    '/tts/abbreviations/:abbreviation',
    {
      schema: {
        tags: ['tts'],
        summary:
          'Delete a custom abbreviation (a built-in one it overrode applies again); built-in entries cannot be deleted (409)',
        params: abbreviationParamsSchema,
        response: { 204: z.undefined() },
      },
      preHandler: app.requireRole('admin'),
    },
    async (request, reply) => {
      tts.deleteAbbreviation(request.actor, request.params.abbreviation);
      return reply.status(204).send();
    },
  );
};

export default routes;
