import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { PlaybackRepository } from './playback.repository.js';
import { PlaybackService } from './playback.service.js';
import { BroadcastReports } from './reports.js';

/** How often open playback records are checked for closing (their slot ended over a minute ago). */
export const CLOSE_EVERY_MS = 30_000;
const PRUNE_EVERY_MS = 24 * 3_600_000;

/**
 * The playback log devices report and the records built from it; each entry stored also updates the
 * device's health.
 */
export default fp<ModuleOptions>(
  async (app, { config, clock, jobs, flushOnClose }) => {
    const { health, areas } = app.services;
    const playback = new PlaybackService(new PlaybackRepository(app.db), clock, {
      metrics: app.metrics,
      log: app.log.child({ module: 'playback' }),
      onStored: (deviceId, entry) => health.recordPlayback(deviceId, entry),
      timers: clock,
      areas,
      reports: new BroadcastReports(app.db),
      retentionMs: config.schedules.playbackLogRetentionMs,
    });
    app.services.playback = playback;
    // Registered after health's, so flushed before it: the entries it stores update the device health.
    flushOnClose(() => playback.flush());

    app.addHook('onReady', async () => {
      jobs.every('close playback records', CLOSE_EVERY_MS, () => playback.closeDue());
      jobs.every('prune playback log', PRUNE_EVERY_MS, () =>
        playback.prune().catch((err: unknown) => app.log.error({ err }, 'pruning the playback log failed')),
      );
    });
  },
  {
    name: 'playback-module',
    fastify: '5.x',
    dependencies: ['db', 'metrics', 'health-module', 'areas-module'],
  },
);
