import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { UsersRepository } from '../users/users.repository.js';
import { AuthRepository } from './auth.repository.js';
import { AuthService } from './auth.service.js';
import { LoginThrottle } from './login-throttle.js';

/** Logins and bearer tokens; the /api/v1 auth plugin asks this service about every request's token. */
export default fp<ModuleOptions>(
  async (app, { config, clock }) => {
    app.services.auth = new AuthService(
      new AuthRepository(app.db),
      new UsersRepository(app.db),
      app.services.audit,
      new LoginThrottle(clock),
      clock,
      config.auth.tokenTtlMs,
    );
  },
  { name: 'auth-module', fastify: '5.x', dependencies: ['db', 'audit-module'] },
);
