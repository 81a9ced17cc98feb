import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { AreasRepository } from './areas.repository.js';
import { AreasService } from './areas.service.js';

/** The tree of areas: every user's scope, and every device's place, is a subtree of it. */
export default fp<ModuleOptions>(
  async (app, { clock }) => {
    app.services.areas = new AreasService(new AreasRepository(app.db), app.services.audit, clock);
  },
  { name: 'areas-module', fastify: '5.x', dependencies: ['db', 'audit-module'] },
);
