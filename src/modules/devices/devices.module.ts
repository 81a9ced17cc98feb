import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { DevicesRepository } from './devices.repository.js';
import { DevicesService } from './devices.service.js';

/** The device registry and its credentials; the broker asks it who may connect. */
export default fp<ModuleOptions>(
  async (app, { clock }) => {
    const { areas, audit, health } = app.services;
    const devices = new DevicesService(
      new DevicesRepository(app.db),
      areas,
      audit,
      app.broker,
      (id) => health.forget(id),
      clock,
    );
    app.services.devices = devices;

    const resorted = devices.refreshSortNames();
    if (resorted > 0) app.log.info({ devices: resorted }, 'recomputed device sort keys');
  },
  {
    name: 'devices-module',
    fastify: '5.x',
    dependencies: ['db', 'broker', 'audit-module', 'areas-module', 'health-module'],
  },
);
