import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { CommandsRepository } from './commands.repository.js';
import { CommandsService } from './commands.service.js';

/** Commands to devices: published over MQTT, delivered again on reconnect, acknowledged, expired. */
export default fp<ModuleOptions>(
  async (app, { clock, jobs, flushOnClose, expirySweepMs }) => {
    const { devices, areas, audit, playback } = app.services;
    const commands = new CommandsService(
      new CommandsRepository(app.db),
      devices,
      areas,
      audit,
      {
        isReady: (id) => app.broker.isReady(id),
        publishCommand: (ids, payload) => {
          const sent = app.broker.publishCommand(ids, payload);
          app.metrics.mqttMessagesOut(sent.length);
          return sent;
        },
      },
      app.metrics,
      clock,
      app.log.child({ module: 'commands' }),
      // Bound late, like the broker's authenticate: programmes and commands each need the other, and the
      // programmes module is registered after this one.
      (actor, programmeId, validUntil) => app.services.programmes.playSource(actor, programmeId, validUntil),
      // Every play opens its playback log records in the transaction that creates it.
      (input) => playback.openRecords(input),
    );
    app.services.commands = commands;
    flushOnClose(() => commands.flush());

    app.addHook('onReady', async () => {
      jobs.every('expire commands', expirySweepMs ?? 1_000, () => commands.expireDue());
    });
  },
  {
    name: 'commands-module',
    fastify: '5.x',
    dependencies: [
      'db',
      'broker',
      'metrics',
      'audit-module',
      'areas-module',
      'devices-module',
      'playback-module',
    ],
  },
);
