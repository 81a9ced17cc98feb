import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { PlaybackRepository } from './playback.repository.js';
import { PlaybackService } from './playback.service.js';

/** The playback log devices report; each entry stored also updates the device's health. */
export default fp<ModuleOptions>(
  async (app, { clock, flushOnClose }) => {
    const { health } = app.services;
    const playback = new PlaybackService(new PlaybackRepository(app.db), clock, {
      metrics: app.metrics,
      log: app.log.child({ module: 'playback' }),
      onStored: (deviceId, entry) => health.recordPlayback(deviceId, entry),
      timers: clock,
    });
    app.services.playback = playback;
    // Registered after health's, so flushed before it: the entries it stores update the device health.
    flushOnClose(() => playback.flush());
  },
  { name: 'playback-module', fastify: '5.x', dependencies: ['db', 'metrics', 'health-module'] },
);
