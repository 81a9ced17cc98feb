import multipart, { type Multipart } from '@fastify/multipart';
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError, type FieldError } from '../../errors.js';
import { IMMUTABLE_CACHE, PRIVATE_CACHE, sendAudioFile } from '../../media/serve.js';
import { uploadTooLarge, type ReceivedFile } from '../../media/store.js';
import {
  listMediaQuerySchema,
  mediaListSchema,
  mediaParamsSchema,
  mediaSchema,
  uploadFieldsSchema,
} from './media.schemas.js';

const UPLOADERS = ['admin', 'district_operator', 'broadcaster'] as const;
/** Room for the multipart framing and the text fields around the file. */
const MULTIPART_OVERHEAD = 64 * 1024;
/**
 * How long the rest of a refused upload is read (and thrown away) before answering. Node stops reading a
 * keep-alive connection once its response is sent, so a client still sending would stall; and closing with
 * unread bytes makes the kernel reset the connection, which can destroy the answer in flight. Reading to the
 * end first gives the client a clean answer on a connection it can reuse. A client still sending after this
 * long is answered anyway, and the connection closed.
 */
const DRAIN_MS = 10_000;

/** Whether the request body has arrived to its end (`complete`) or been read to it (`readableEnded`). */
const bodyRead = (request: FastifyRequest): boolean => request.raw.complete || request.raw.readableEnded;

/**
 * Reads what is left of a refused request and throws it away; resolves at its end, or after DRAIN_MS.
 * `parts`: the multipart parser is reading the request, and must be kept going (any further file part
 * emptied); otherwise the request is read raw.
 */
async function drainRest(request: FastifyRequest, parts?: AsyncIterator<Multipart>): Promise<void> {
  const raw = request.raw;
  // Read to the end already, or the client went away (an aborted upload).
  if (bodyRead(request) || raw.destroyed || raw.socket.destroyed) return;
  const ended = new Promise<void>((resolve) => {
    raw.once('end', resolve);
    raw.once('close', resolve);
  });
  if (parts) {
    void (async () => {
      try {
        for (;;) {
          const next = await parts.next();
          if (next.done) break;
          if (next.value.type === 'file') next.value.file.resume();
        }
      } catch {
        // The parser's own complaint about the refused part (its size limit) or an aborted request.
      }
      // The parser has stopped: at the end of the body, or at an error after which it reads no more (no
      // boundary, too many fields), leaving the request paused. What is left is read and thrown away here,
      // not piped into a parser that would buffer it.
      raw.unpipe();
      raw.resume();
    })();
  } else {
    raw.resume();
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([ended, new Promise((resolve) => (timer = setTimeout(resolve, DRAIN_MS)))]);
  clearTimeout(timer);
}

/**
 * What the multipart parser throws, as the catalogue says it: its limits (413), a malformed or cut-short
 * body (400: no boundary, no closing delimiter, a field declared JSON that is not). Errors of the disk
 * (they carry a `syscall`) and anything already an AppError pass through.
 */
function fromMultipart(err: unknown): unknown {
  if (err instanceof AppError || !(err instanceof Error) || 'syscall' in err) return err;
  const code = (err as { code?: string }).code;
  if (code === 'FST_PARTS_LIMIT' || code === 'FST_FILES_LIMIT' || code === 'FST_FIELDS_LIMIT') {
    return new AppError(
      'payload_too_large',
      `Too many parts in the form (${err.message}): send the part "file" and the fields "title" and "areaId"`,
    );
  }
  return new AppError('bad_request', `The multipart/form-data body could not be read: ${err.message}`);
}

const routes: FastifyPluginAsyncZod = async (app) => {
  const media = app.services.media;
  const maxBytes = media.maxUploadBytes;

  // The upload route in a scope of its own: the multipart parser (and its hooks) serve nothing else.
  await app.register(async (scope) => {
    await scope.register(multipart, {
      limits: {
        // One byte over, so that the store sees the excess and answers 413 itself (busboy then skips the rest).
        fileSize: maxBytes + 1,
        files: 2,
        fields: 10,
        parts: 12,
        fieldNameSize: 100,
        fieldSize: 4096,
        headerPairs: 20,
      },
    });

    // A refusal before the body was read (no token, wrong role, declared too large) reads it first, so that
    // the client gets the answer (see DRAIN_MS). A client still sending after that gets the answer with the
    // connection closed, as Fastify does for its own body limit.
    scope.addHook('onError', async (request) => {
      await drainRest(request);
    });
    scope.addHook('onSend', async (request, reply) => {
      if (!bodyRead(request)) reply.header('connection', 'close');
    });

    scope.post(
      '/media',
      {
        schema: {
          tags: ['media'],
          summary: 'Upload a recording (multipart/form-data: file, title?, areaId?)',
          description:
            'The `file` part is streamed to disk (limit MEDIA_MAX_MB). Its real format and duration are read from ' +
            'its content: MP3, WAV, OGG (Vorbis/Opus), M4A/AAC or FLAC; anything else is 415, a damaged file or one ' +
            'longer than MEDIA_MAX_DURATION_S 422. It is rendered once into the device format (MP3 mono 44.1 kHz ' +
            'CBR, loudness-normalised). `title` defaults to the file name without its extension; `areaId` to ' +
            'your area (admins: none, i.e. every area).',
          response: { 201: mediaSchema },
        },
        preHandler: scope.requireRole(...UPLOADERS),
      },
      async (request, reply) => {
        if (!request.isMultipart()) {
          throw new AppError(
            'unsupported_media_type',
            'Send multipart/form-data with the recording in a part named "file"',
          );
        }
        // Declared too large: refused without parsing or storing anything.
        const declared = Number(request.headers['content-length']);
        if (declared > maxBytes + MULTIPART_OVERHEAD) throw uploadTooLarge(maxBytes);

        const parts = request.parts();
        const fields: Record<string, string> = {};
        let received: ReceivedFile | undefined;
        let originalName: string | null = null;
        try {
          for (;;) {
            const next = await parts.next();
            if (next.done) break;
            const part = next.value;
            if (part.type === 'file') {
              if (part.fieldname !== 'file' || received) {
                part.file.resume();
                throw fieldError(`body.${part.fieldname}`, 'only one file is accepted, in the part "file"');
              }
              originalName = part.filename || null;
              // A part cut short (the body ends inside it) fails here: MediaStore.receive sees the stream
              // the parser destroyed, or its error.
              received = await media.store.receive(part.file, maxBytes);
            } else if (part.valueTruncated) {
              throw fieldError(`body.${part.fieldname}`, 'is too long');
            } else {
              fields[part.fieldname] = String(part.value);
            }
          }
        } catch (err) {
          if (received) await media.store.discard(received.tempPath);
          await drainRest(request, parts);
          throw fromMultipart(err);
        }
        if (!received) throw fieldError('body.file', 'is required: the recording, as a file part');

        try {
          const parsed = uploadFieldsSchema.safeParse(fields);
          if (!parsed.success) {
            throw new AppError(
              'validation_failed',
              parsed.error.issues.map((i) => `body.${i.path.join('.')}: ${i.message}`).join('; '),
              {
                errors: parsed.error.issues.map((i): FieldError => ({
                  field: `body.${i.path.join('.')}`,
                  message: i.message,
                })),
              },
            );
          }
          const view = await media.upload(request.actor, received, originalName, parsed.data);
          return await reply.status(201).send(view);
        } finally {
          await media.store.discard(received.tempPath);
        }
      },
    );
  });

  app.get(
    '/media',
    {
      schema: {
        tags: ['media'],
        summary: 'Recordings you may use (your area, the areas above it and below it), newest first',
        querystring: listMediaQuerySchema,
        response: { 200: mediaListSchema },
      },
    },
    async (request) => media.list(request.actor, request.query),
  );

  app.get(
    '/media/:id',
    {
      schema: {
        tags: ['media'],
        summary: 'One recording',
        params: mediaParamsSchema,
        response: { 200: mediaSchema },
      },
    },
    async (request) => media.get(request.actor, request.params.id),
  );

  app.delete(
    '/media/:id',
    {
      schema: {
        tags: ['media'],
        summary: 'Delete a recording of your area (409 while a programme or an area jingle uses it)',
        params: mediaParamsSchema,
        response: { 204: z.undefined() },
      },
      preHandler: app.requireRole(...UPLOADERS),
    },
    async (request, reply) => {
      media.delete(request.actor, request.params.id);
      return reply.status(204).send();
    },
  );

  app.get(
    '/media/:id/audio',
    {
      schema: {
        tags: ['media'],
        summary: 'The device rendition (audio/mpeg), with Range and ETag / If-None-Match',
        params: mediaParamsSchema,
      },
    },
    async (request, reply) =>
      sendAudioFile(request, reply, media.audioFile(request.actor, request.params.id), PRIVATE_CACHE),
  );
};

function fieldError(field: string, message: string): AppError {
  return new AppError('validation_failed', `${field}: ${message}`, { errors: [{ field, message }] });
}

export default routes;

const downloadParamsSchema = z.object({
  file: z.string().max(80).describe('<sha256>.mp3'),
});
const downloadQuerySchema = z.object({
  expires: z.string().max(20).optional().describe('Unix time (s) after which the link is refused'),
  signature: z.string().max(100).optional().describe('HMAC-SHA256 of "<sha256>.<expires>", base64url'),
});

/**
 * How every request is logged (src/app.ts LOG_SERIALIZERS): as Fastify logs it, but with a download link's
 * signature blanked out. A signature in a log would be a working download link for whoever reads the logs.
 */
export function redactedRequest(request: FastifyRequest) {
  return {
    method: request.method,
    url: request.url.replace(/([?&]signature=)[^&#]*/gi, '$1[redacted]'),
    host: request.host,
    remoteAddress: request.ip,
    remotePort: request.socket.remotePort,
  };
}

/**
 * GET /downloads/<sha256>.mp3?expires=…&signature=… — what devices fetch (docs/protocol.md). No token: the
 * signature is the authorisation. Kept lean because a province's loudspeakers fetch the same file at the
 * same moment: no database query, the file streamed from disk, and no per-request log lines (two thousand
 * downloads would otherwise write four thousand). Nothing logged here carries the signature, not even a
 * mistyped download path (a device adding a slash), which the app's not-found handler would log whole.
 */
export const deviceDownloadRoutes: FastifyPluginAsyncZod = async (app) => {
  const media = app.services.media;
  // The request serializer that blanks the signature is the app's own (LOG_SERIALIZERS in src/app.ts): a
  // route-level copy would only make Fastify build a logger with its own serializers for every download.
  const quiet = { logLevel: 'warn' } as const;
  app.get(
    '/downloads/:file',
    {
      ...quiet,
      schema: {
        tags: ['devices'],
        summary: 'Signed device download of a rendition (no token; Range, ETag, immutable)',
        security: [],
        params: downloadParamsSchema,
        querystring: downloadQuerySchema,
      },
    },
    async (request, reply) => {
      const sha256 = media.links.verify(request.params.file, request.query.expires, request.query.signature);
      return sendAudioFile(request, reply, { path: media.store.pathOf(sha256), sha256 }, IMMUTABLE_CACHE);
    },
  );
  for (const url of ['/downloads', '/downloads/*']) {
    app.get(url, { ...quiet, schema: { hide: true } }, async (request) => {
      throw new AppError('not_found', `No route ${request.method} ${request.url.split('?')[0]}`);
    });
  }
};
