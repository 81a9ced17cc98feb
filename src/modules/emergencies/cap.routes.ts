import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { AppError } from '../../errors.js';
import { bearerToken } from '../../plugins/auth.js';
import { capAnswerSchema } from './cap.schemas.js';
import { CAP_MAX_BYTES } from './cap.js';
import { SENDER_ROLES, type Sender } from './emergencies.service.js';

/** application/cap+xml is CAP's registered type (RFC 6838 registration by OASIS); plain XML is common too. */
export const CAP_CONTENT_TYPES = ['application/cap+xml', 'application/xml', 'text/xml'];

const notUtf8 = () =>
  new AppError('validation_failed', 'body: is not valid UTF-8 (CAP documents are UTF-8)', {
    errors: [{ field: 'body', message: 'is not valid UTF-8 (CAP documents are UTF-8)' }],
  });

/**
 * POST /emergencies/cap: a warning system (or district staff) posts a CAP 1.2 document. It is marked public
 * for the global bearer check (src/plugins/auth.ts), which knows only user tokens, and authenticates here,
 * before the body is read: a user token of a role that may send emergencies, or a warning-source key.
 *
 * Registered as its own plugin: the XML body parser below, and the removal of the JSON one, stay inside it.
 */
const routes: FastifyPluginAsyncZod = async (app) => {
  const { capIngest, warningSources, auth } = app.services;
  const senders = new WeakMap<FastifyRequest, Sender>();

  app.removeAllContentTypeParsers();
  // Read whole as bytes (at most 1 MB: a larger body is refused with 413 as it arrives) and decoded
  // strictly: a byte that is not UTF-8 is an error, not a silent U+FFFD in a warning read aloud.
  app.addContentTypeParser(
    CAP_CONTENT_TYPES,
    { parseAs: 'buffer', bodyLimit: CAP_MAX_BYTES },
    (_request, body: Buffer, done) => {
      try {
        done(null, new TextDecoder('utf-8', { fatal: true }).decode(body));
      } catch {
        done(notUtf8(), undefined);
      }
    },
  );
  app.addContentTypeParser('*', (_request, _payload, done) => {
    done(
      new AppError(
        'unsupported_media_type',
        `Send the CAP 1.2 document as ${CAP_CONTENT_TYPES.slice(0, 2).join(' or ')}`,
      ),
      undefined,
    );
  });

  app.post(
    '/emergencies/cap',
    {
      config: { public: true },
      schema: {
        tags: ['emergencies'],
        summary: 'Receive an OASIS CAP 1.2 alert: Alert sends an emergency, Update and Cancel change one',
        description:
          'Body: a CAP 1.2 document (application/cap+xml or application/xml, UTF-8, at most 1 MB, no DTD). ' +
          'Authorization: Bearer with a user token (admin, district_operator; their area applies) or a ' +
          'warning-source key loa_wsk_… (its area applies). status Actual plays, Exercise plays as a drill, ' +
          'Test/System/Draft are kept and never played. The same sender and identifier again from the same key ' +
          'or user get the first answer (replayed: true) and play nothing; from another, they are its own ' +
          "alert, played in its own area. Update/Cancel reference your own alerts (an admin: anyone's). Targets: <geocode> VN-ADMIN by area code, <polygon> and " +
          '<circle> by device position; what matched nothing is listed in `unmatched` (docs/emergency.md).',
        response: { 200: capAnswerSchema, 201: capAnswerSchema },
      },
      // onRequest, not preHandler: an unknown caller is refused before its body is read.
      onRequest: (request, _reply, done) => {
        const token = bearerToken(request);
        if (!token) {
          done(
            new AppError(
              'unauthenticated',
              'Send "Authorization: Bearer <token>" with a user token or a warning-source key (loa_wsk_…)',
            ),
          );
          return;
        }
        try {
          const actor = auth.authenticate(token);
          if (actor) {
            if (!SENDER_ROLES.includes(actor.role)) {
              throw new AppError('forbidden', `This needs one of the roles: ${SENDER_ROLES.join(', ')}`);
            }
            request.actor = actor;
            senders.set(request, { kind: 'user', actor });
          } else {
            senders.set(request, { kind: 'source', source: warningSources.authenticate(token) });
          }
          done();
        } catch (err) {
          done(err as Error);
        }
      },
    },
    async (request, reply) => {
      const sender = senders.get(request)!;
      if (typeof request.body !== 'string' || request.body.trim() === '') {
        throw new AppError('validation_failed', 'body: a CAP 1.2 document is required', {
          errors: [{ field: 'body', message: 'a CAP 1.2 document is required' }],
        });
      }
      const result = await capIngest.ingest(sender, request.body);
      return reply.status(result.statusCode).send(result.answer);
    },
  );
};

export default routes;
