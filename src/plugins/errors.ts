/**
 * Renders every error as RFC 9457 problem+json with a code from the closed catalogue (src/errors.ts).
 * Unknown errors become a 500 whose body says nothing internal and whose log says everything.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import fp from 'fastify-plugin';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
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
  if (code === 'unsupported_media_type') {
    return new AppError(code, 'Send the body as application/json (a request without a body needs no type)');
  }
  return code ? new AppError(code, err.message) : null;
}

export function sendProblem(reply: FastifyReply, request: FastifyRequest, err: AppError): FastifyReply {
  if (err.extra.retryAfterS !== undefined) reply.header('retry-after', String(err.extra.retryAfterS));
  return reply
    .status(err.status)
    .type('application/problem+json; charset=utf-8')
    .send(toProblem(err, request.url.split('?')[0]));
}

/**
 * Router limit on one path parameter. Ids are at most 64 characters and every route validates its params, so
 * an over-long id up to this length gets a 400 that names the parameter; beyond it the router answers 414.
 */
export const MAX_PARAM_LENGTH = 1_000;

/**
 * Fastify's `frameworkErrors` option: errors the router raises before any route (and so before the error
 * handler) is chosen. Without it they are plain JSON.
 */
export function frameworkErrors(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  let appError: AppError;
  switch (error.code) {
    case 'FST_ERR_BAD_URL':
      appError = new AppError('bad_request', 'The URL is not valid: a %-escape is malformed or not UTF-8');
      break;
    case 'FST_ERR_MAX_PARAM_LENGTH':
      appError = new AppError('uri_too_long', `A path segment is longer than ${MAX_PARAM_LENGTH} characters`);
      break;
    default:
      request.log.error({ err: error }, 'router error');
      appError = new AppError('internal', 'An unexpected error occurred. It has been logged.');
  }
  // Raised before routing, so the app's onSend hook that adds it does not run.
  reply.header('x-request-id', request.id);
  void sendProblem(reply, request, appError);
}

/**
 * Fastify's `clientErrorHandler`: errors Node's HTTP parser meets before there is a request, such as a request
 * line and headers over `maxHeaderSize` (16 KiB) or a request that never finishes arriving. The answer is
 * written straight to the socket, as problem+json like every other error.
 */
export function clientErrorHandler(this: unknown, error: Error & { code?: string }, socket: Socket): void {
  // A reset peer cannot be answered; a socket already answered gets the parser's repeated errors too.
  if (error.code === 'ECONNRESET' || socket.destroyed || socket.writableEnded) return;
  // A failed TLS handshake (HTTPS hands it here): there is no session to answer in, and nothing to wait for.
  if (error.code?.startsWith('ERR_TLS_') || error.code?.startsWith('ERR_SSL_')) {
    socket.destroy();
    return;
  }
  (this as FastifyInstance | undefined)?.log.debug({ err: error }, 'client error');
  // As Node does by default: a response already under way on this connection must not be corrupted.
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const appError =
    error.code === 'HPE_HEADER_OVERFLOW'
      ? new AppError(
          'headers_too_large',
          'The request line and headers are over 16 KiB; send long lists in a JSON body instead of the query',
        )
      : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new AppError('request_timeout', 'The request did not arrive in time')
        : new AppError('bad_request', 'The request is not valid HTTP/1.1');
  const body = JSON.stringify(toProblem(appError));
  // end(), not write() + destroy(): closing with unread request bytes makes the kernel send a reset, which
  // can discard the answer before the client reads it. The timer bounds a client that never stops sending.
  socket.end(
    `HTTP/1.1 ${appError.status} ${STATUS_CODES[appError.status] ?? ''}\r\n` +
      'Content-Type: application/problem+json; charset=utf-8\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
  setTimeout(() => socket.destroy(), 5_000).unref();
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
