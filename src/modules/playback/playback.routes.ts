import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { FastifyRequest } from 'fastify';
import {
  broadcastReportQuerySchema,
  broadcastReportSchema,
  playbackLogListSchema,
  playbackLogQuerySchema,
} from './playback.schemas.js';

/** CSV when asked by `?format=csv` or by an Accept header that names text/csv (and JSON is the default). */
function wantsCsv(request: FastifyRequest, format: 'json' | 'csv' | undefined): boolean {
  if (format !== undefined) return format === 'csv';
  return /\btext\/csv\b/i.test(request.headers.accept ?? '');
}

const attachment = (filename: string) => `attachment; filename="${filename}"`;

const routes: FastifyPluginAsyncZod = async (app) => {
  const playback = app.services.playback;

  app.get(
    '/playback-log',
    {
      schema: {
        tags: ['playback-log'],
        summary: 'What each loudspeaker really played (nhật ký phát thanh), newest due first; also as CSV',
        description:
          'One record per occurrence (or manual play) per device in your area. outcome: played, partial, ' +
          "failed, skipped, expired, undelivered, or pending while the slot is open. An emergency broadcast's " +
          'records name it in `emergency` (exercise: true for a drill, never a real alert). With ?format=csv or ' +
          'Accept: text/csv, every matching record (no page limit) as a streamed UTF-8 CSV with BOM and ' +
          'Vietnamese column titles (docs/schedules.md).',
        querystring: playbackLogQuerySchema,
        response: { 200: playbackLogListSchema },
      },
    },
    async (request, reply) => {
      if (!wantsCsv(request, request.query.format)) return playback.list(request.actor, request.query);
      const { filename, stream } = playback.exportCsv(request.actor, request.query);
      return reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', attachment(filename))
        .send(stream as never); // a stream is sent as is, past the JSON response schema
    },
  );

  app.get(
    '/reports/broadcast',
    {
      schema: {
        tags: ['playback-log'],
        summary: 'Monthly broadcast report per commune and per hamlet below it; also as CSV',
        description:
          'For the records due in the month (Vietnam time) in the area: broadcasts planned, records per ' +
          'outcome, minutes on air, the share of devices that played each bulletin in full, and the top 5 ' +
          'failure reasons. Emergency broadcasts are counted apart (emergencies), and drills apart from ' +
          'them (exercises). ?format=csv or Accept: text/csv for CSV (UTF-8 with BOM).',
        querystring: broadcastReportQuerySchema,
        response: { 200: broadcastReportSchema },
      },
    },
    async (request, reply) => {
      if (!wantsCsv(request, request.query.format)) return playback.report(request.actor, request.query);
      const { filename, body } = playback.reportCsv(request.actor, request.query);
      return reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', attachment(filename))
        .send(body as never); // text with its own content type: not serialised as JSON
    },
  );
};

export default routes;
