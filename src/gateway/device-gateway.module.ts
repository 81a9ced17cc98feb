import fp from 'fastify-plugin';
import type { ModuleOptions } from '../modules/module.js';
import { connectDeviceGateway } from './device-gateway.js';

/**
 * Routes what devices say over MQTT to the services that own it. Connected at start-up, before the
 * broker listens (onReady), so no event arrives before its service exists.
 */
export default fp<ModuleOptions>(
  async (app, { clock }) => {
    connectDeviceGateway(
      app.broker,
      app.services,
      app.log.child({ module: 'device-gateway' }),
      {
        messageIn: (channel) => app.metrics.mqttMessageIn(channel),
        malformed: (channel) => app.metrics.malformedPayload(channel),
        failed: (channel) => app.metrics.deviceEventFailed(channel),
      },
      clock,
    );
  },
  {
    name: 'device-gateway',
    fastify: '5.x',
    dependencies: ['broker', 'metrics', 'health-module', 'commands-module', 'playback-module'],
  },
);
