/**
 * What every request body and parameter must be before any route sees it: JSON (the only body parser), and
 * well-formed Unicode text.
 */
import fp from 'fastify-plugin';
import { AppError, type FieldError } from '../errors.js';

const MESSAGE = 'contains a lone UTF-16 surrogate (\\ud800–\\udfff), which is not text';
const MAX_REPORTED = 20;
// In a `u` regex a valid pair is one code point, so only a lone surrogate is of category Cs (as
// String.prototype.isWellFormed, which TypeScript's ES2023 library does not declare).
const LONE_SURROGATE = /\p{Cs}/u;

/** Paths (`body.name`, `query.q`) of every string, or object key, in `value` that is not well-formed. */
function illFormed(value: unknown, path: string, found: FieldError[]): void {
  if (found.length >= MAX_REPORTED) return;
  if (typeof value === 'string') {
    if (LONE_SURROGATE.test(value)) found.push({ field: path, message: MESSAGE });
  } else if (Array.isArray(value)) {
    value.forEach((item, i) => illFormed(item, `${path}.${i}`, found));
  } else if (typeof value === 'object' && value !== null) {
    for (const [key, item] of Object.entries(value)) {
      // JSON.stringify escapes a lone surrogate, so naming the bad key in the answer is safe.
      if (LONE_SURROGATE.test(key)) found.push({ field: `${path}.${key}`, message: MESSAGE });
      else illFormed(item, `${path}.${key}`, found);
    }
  }
}

export default fp(
  (app, _opts, done) => {
    // Fastify parses text/plain by default, so a route without a body schema would act on a text body
    // (rotating a device's credentials, say). Without a parser, any type but JSON is refused with 415
    // before the body is read. A future upload route registers its own parser in its own plugin scope.
    app.removeContentTypeParser('text/plain');

    // JSON.parse accepts "\ud800" escapes and SQLite would store them as invalid UTF-8, which strict JSON
    // readers of the stored text (the audit log) then reject. Refused here, for every route at once.
    app.addHook('preValidation', (request, _reply, next) => {
      const found: FieldError[] = [];
      illFormed(request.params, 'path', found);
      illFormed(request.query, 'query', found);
      illFormed(request.body, 'body', found);
      if (found.length === 0) return next();
      next(
        new AppError('validation_failed', found.map((e) => `${e.field}: ${e.message}`).join('; '), {
          errors: found,
        }),
      );
    });
    done();
  },
  { name: 'input', fastify: '5.x' },
);
