import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { HealthRepository } from './health.repository.js';
import { HealthService } from './health.service.js';
import { TelemetryRepository } from './telemetry.repository.js';

/** Devices' live status (presence, telemetry), held in memory and written in batches. */
export default fp<ModuleOptions>(
  async (app, { config, clock, jobs, flushOnClose }) => {
    const health = new HealthService(
      new HealthRepository(app.db),
      new TelemetryRepository(app.db),
      config.health,
      clock,
      app.log.child({ module: 'health' }),
      app.metrics,
    );
    app.services.health = health;
    // Loads live status; devices still marked online from before are recorded offline (server_restart).
    // Now, before the broker listens (onReady): a device that connects must find its live status loaded.
    health.start();
    flushOnClose(() => health.flush());

    app.addHook('onReady', async () => {
      jobs.every('store telemetry', 1_000, () => health.flushInSlices());
      jobs.every('detect silent devices', Math.min(config.health.heartbeatMs, 5_000), () =>
        health.detectSilence(),
      );
      // Every completed 5-minute bucket, and raw samples and roll-ups past their time; once soon after a
      // start too, so that a backlog from a downtime is dealt with at once (in slices, in the background).
      jobs.every('roll up and prune telemetry', 300_000, () => health.maintainTelemetry(jobs.signal), {
        firstAfterMs: 60_000,
      });
    });
  },
  { name: 'health-module', fastify: '5.x', dependencies: ['db', 'metrics'] },
);
