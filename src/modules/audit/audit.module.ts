import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { AuditRepository } from './audit.repository.js';
import { AuditService } from './audit.service.js';

/** The audit log: every other module records its state changes here. */
export default fp<ModuleOptions>(
  async (app, { clock }) => {
    app.services.audit = new AuditService(new AuditRepository(app.db), clock);
  },
  { name: 'audit-module', fastify: '5.x', dependencies: ['db'] },
);
