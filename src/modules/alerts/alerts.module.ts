import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { AlertsRepository } from './alerts.repository.js';
import { AlertsService } from './alerts.service.js';
import { WebhookOutboxRepository } from './outbox.repository.js';
import { WebhookSender } from './webhook.js';

/** Given-up webhook events are kept this long after they were given up, for whoever investigates. */
const GIVEN_UP_KEPT_MS = 30 * 86_400_000;

/** Alerts opened and resolved from devices' live status, and told to a webhook if one is set. */
export default fp<ModuleOptions>(
  async (app, { config, clock, jobs }) => {
    const { areas, audit, health } = app.services;
    const outbox = new WebhookOutboxRepository(app.db);
    const url = config.alerts.webhookUrl;
    const sender = url
      ? new WebhookSender(
          outbox,
          {
            url,
            attempts: config.alerts.webhookAttempts,
            batchMax: config.alerts.webhookBatchMax,
            secret: config.alerts.webhookSecret,
          },
          clock,
          app.log.child({ module: 'webhook' }),
          {
            requested: (outcome) => app.metrics.alertWebhookRequest(outcome),
            gaveUp: (events) => app.metrics.alertWebhookEventsGivenUp(events),
          },
        )
      : null;
    const alerts = new AlertsService(
      new AlertsRepository(app.db),
      areas,
      audit,
      sender,
      config.alerts,
      clock,
      app.log.child({ module: 'alerts' }),
      outbox,
    );
    app.services.alerts = alerts;
    if (url && !config.alerts.webhookSecret) {
      // Anyone who learns the URL could post fake alerts; a receiver has no way to tell.
      app.log.warn('ALERT_WEBHOOK_URL is set without ALERT_WEBHOOK_SECRET: alert webhooks are unsigned');
    }

    app.addHook('onReady', async () => {
      jobs.every('evaluate alerts', 10_000, () => alerts.evaluate(health.devices));
      // Also without a URL: given-up events of an earlier configuration still age out.
      jobs.every('prune given-up webhook events', 3_600_000, () => {
        const removed = outbox.pruneGivenUp(new Date(clock.now().getTime() - GIVEN_UP_KEPT_MS));
        if (removed > 0) app.log.info({ removed }, 'pruned given-up alert webhook events');
      });
      // Events left pending before a restart go out now (after their back-off, if they had one).
      sender?.start();
      const { pending } = outbox.countByState();
      if (!url && pending > 0) {
        // Written while a webhook was configured; kept (not lost) for when one is set again.
        app.log.warn(
          { pending },
          'alert webhook events are pending but ALERT_WEBHOOK_URL is not set; they are sent once it is set again',
        );
      }
    });
    // After the periodic jobs have stopped (app.ts), before the database closes. Undelivered events stay
    // pending in the outbox for the next start.
    app.addHook('onClose', async () => {
      await sender?.stop(2_000);
    });
  },
  {
    name: 'alerts-module',
    fastify: '5.x',
    dependencies: ['db', 'metrics', 'audit-module', 'areas-module', 'health-module'],
  },
);
