/**
 * Bearer-token authentication for everything under /api/v1 (routes marked `config.public` excepted) and
 * the role guard used by routes. Scope (which areas a user may touch) is checked by the services.
 */
import fp from 'fastify-plugin';
import type { FastifyRequest, preHandlerHookHandler } from 'fastify';
import type { Role } from '../db/schema/index.js';
import { AppError } from '../errors.js';
import type { Actor } from '../lib/scope.js';

declare module 'fastify' {
  interface FastifyRequest {
    actor: Actor;
  }
  interface FastifyInstance {
    requireRole(...roles: Role[]): preHandlerHookHandler;
  }
  interface FastifyContextConfig {
    /** No bearer token needed (login). */
    public?: boolean;
  }
}

export function bearerToken(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  if (!header) return null;
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  return match?.[1] ?? null;
}

export interface AuthOptions {
  authenticate: (token: string) => Actor | null;
}

export default fp<AuthOptions>(
  (app, options, done) => {
    app.decorateRequest('actor', null as unknown as Actor);

    app.decorate('requireRole', (...roles: Role[]): preHandlerHookHandler => {
      const allowed = new Set<Role>(roles);
      return (request, _reply, next) => {
        if (!allowed.has(request.actor.role)) {
          next(new AppError('forbidden', `This needs one of the roles: ${roles.join(', ')}`));
          return;
        }
        next();
      };
    });

    app.addHook('onRequest', (request, _reply, next) => {
      if (request.routeOptions.config.public) {
        next();
        return;
      }
      const token = bearerToken(request);
      if (!token) {
        next(
          new AppError(
            'unauthenticated',
            'Send "Authorization: Bearer <token>"; get a token from POST /api/v1/auth/login',
          ),
        );
        return;
      }
      const actor = options.authenticate(token);
      if (!actor) {
        next(new AppError('unauthenticated', 'The token is invalid or has expired; log in again'));
        return;
      }
      request.actor = actor;
      next();
    });
    done();
  },
  { name: 'auth', fastify: '5.x' },
);
