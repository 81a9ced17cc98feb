/**
 * Renders every error as RFC 9457 problem+json with a code from the closed catalogue (src/errors.ts).
 * Unknown errors become a 500 whose body says nothing internal and whose log says everything.
 */
import fp from 'fastify-plugin';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { AppError, toProblem, type ErrorCode, type FieldError } from '../errors.js';

const LOCATION: Record<string, string> = {
  body: 'body',
  querystring: 'query',
  params: 'path',
  headers: 'header',
};

function validationError(err: FastifyError): AppError {
  const where = LOCATION[err.validationContext ?? 'body'] ?? 'body';
  const errors: FieldError[] = hasZodFastifySchemaValidationErrors(err)
    ? err.validation.map((v) => ({
        field: [where, ...v.instancePath.split('/').filter(Boolean)].join('.'),
        message: v.message ?? 'is invalid',
      }))
    : [{ field: where, message: err.message }];
  const detail = errors.map((e) => `${e.field}: ${e.message}`).join('; ');
  return new AppError('validation_failed', detail, { errors });
}

/** Maps Fastify's own errors (bad JSON, wrong content type, body too large…) onto the catalogue. */
function fromFastify(err: FastifyError): AppError | null {
  if (err.validation) return validationError(err);
  const byStatus: Record<number, ErrorCode> = {
    400: 'bad_request',
    404: 'not_found',
    413: 'payload_too_large',
    415: 'unsupported_media_type',
    429: 'too_many_requests',
  };
  const code = err.statusCode ? byStatus[err.statusCode] : undefined;
  return code ? new AppError(code, err.message) : null;
}

export function sendProblem(reply: FastifyReply, request: FastifyRequest, err: AppError): FastifyReply {
  if (err.extra.retryAfterS !== undefined) reply.header('retry-after', String(err.extra.retryAfterS));
  return reply
    .status(err.status)
    .type('application/problem+json; charset=utf-8')
    .send(toProblem(err, request.url.split('?')[0]));
}

export default fp(
  (app, _opts, done) => {
    app.setErrorHandler((error: FastifyError, request, reply) => {
      const appError = error instanceof AppError ? error : fromFastify(error);
      if (appError) {
        if (appError.status >= 500) request.log.error({ err: error }, appError.message);
        return sendProblem(reply, request, appError);
      }
      request.log.error({ err: error }, 'unhandled error');
      return sendProblem(
        reply,
        request,
        new AppError('internal', 'An unexpected error occurred. It has been logged.'),
      );
    });

    app.setNotFoundHandler((request, reply) =>
      sendProblem(
        reply,
        request,
        new AppError('not_found', `No route ${request.method} ${request.url.split('?')[0]}`),
      ),
    );
    done();
  },
  { name: 'errors', fastify: '5.x' },
);
