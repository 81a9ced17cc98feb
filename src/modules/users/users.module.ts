import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { newSecret } from '../../lib/ids.js';
import { UsersRepository } from './users.repository.js';
import { UsersService } from './users.service.js';

/** Users and their roles; creates the first user, "admin", on a server that has none. */
export default fp<ModuleOptions>(
  async (app, { config, clock }) => {
    const { areas, audit } = app.services;
    const users = new UsersService(new UsersRepository(app.db), areas, audit, clock);
    app.services.users = users;

    app.addHook('onReady', async () => {
      const admin = await users.ensureAdmin(config.auth.adminPassword, () => newSecret().slice(0, 20));
      if (admin.password) {
        app.log.warn(
          { username: 'admin', initialPassword: admin.password },
          'Created the first user "admin" with a generated password, shown only this once. Set ADMIN_PASSWORD to choose it.',
        );
      }
    });
  },
  { name: 'users-module', fastify: '5.x', dependencies: ['db', 'audit-module', 'areas-module'] },
);
