import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { AlertsRepository } from './alerts.repository.js';
import { AlertsService } from './alerts.service.js';
import { noNotifier, WebhookNotifier } from './webhook.js';

/** Alerts opened and resolved from devices' live status, and told to a webhook if one is set. */
export default fp<ModuleOptions>(
  async (app, { config, clock, jobs }) => {
    const { areas, audit, health } = app.services;
    const alerts = new AlertsService(
      new AlertsRepository(app.db),
      areas,
      audit,
      config.alerts.webhookUrl
        ? new WebhookNotifier(
            config.alerts.webhookUrl,
            config.alerts.webhookAttempts,
            config.alerts.webhookSecret,
            app.log.child({ module: 'webhook' }),
            clock,
          )
        : noNotifier,
      config.alerts,
      clock,
      app.log.child({ module: 'alerts' }),
    );
    app.services.alerts = alerts;
    if (config.alerts.webhookUrl && !config.alerts.webhookSecret) {
      // Anyone who learns the URL could post fake alerts; a receiver has no way to tell.
      app.log.warn('ALERT_WEBHOOK_URL is set without ALERT_WEBHOOK_SECRET: alert webhooks are unsigned');
    }

    app.addHook('onReady', async () => {
      jobs.every('evaluate alerts', 10_000, () => alerts.evaluate(health.devices));
    });
    // After the periodic jobs have stopped (app.ts), before the broker closes.
    app.addHook('onClose', async () => {
      await alerts.drain(2_000);
    });
  },
  {
    name: 'alerts-module',
    fastify: '5.x',
    dependencies: ['db', 'audit-module', 'areas-module', 'health-module'],
  },
);
