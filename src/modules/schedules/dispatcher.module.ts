import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { Dispatcher, DispatcherRepository } from './dispatcher.js';

/**
 * The durable dispatcher (src/modules/schedules/dispatcher.ts): sends the schedules' occurrences when
 * due, from the database, and resumes scheduled plays a higher-priority one cut short. It starts once the
 * app is ready (first sending whatever fell due while the server was down) and stops at close.
 */
export default fp<ModuleOptions>(
  async (app, { clock }) => {
    const { commands, programmes, devices, areas, audit, playback } = app.services;
    const dispatcher = new Dispatcher({
      repo: new DispatcherRepository(app.db),
      commands,
      programmes,
      playback,
      targets: { areas, devices },
      audit,
      clock,
      log: app.log.child({ module: 'dispatcher' }),
      onDispatched: (lagMs) => app.metrics.occurrenceDispatched(lagMs),
    });
    app.services.dispatcher = dispatcher;
    playback.subscribe((deviceId, entry) => {
      try {
        dispatcher.onPlaybackEntry(deviceId, entry);
      } catch (err) {
        app.log.error({ err, deviceId, commandId: entry.commandId }, 'resuming a scheduled play failed');
      }
    });
    app.addHook('onReady', async () => dispatcher.start());
    app.addHook('onClose', async () => dispatcher.stop());
  },
  {
    name: 'dispatcher-module',
    fastify: '5.x',
    dependencies: [
      'db',
      'metrics',
      'commands-module',
      'programmes-module',
      'playback-module',
      'devices-module',
      'areas-module',
      'audit-module',
    ],
  },
);
