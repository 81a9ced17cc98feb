/**
 * Routes what the broker hears from devices to the services that own it. Payloads are validated against
 * the protocol schemas; a malformed one is logged and dropped, and never reaches a service.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { z } from 'zod';
import type { DeviceBroker } from '../../plugins/broker.js';
import { ackSchema, decodePayload, logSchema, stateSchema, telemetrySchema } from '../../protocol/index.js';
import type { CommandsService } from '../commands/commands.service.js';
import type { HealthService } from './health.service.js';

export interface DeviceEventHooks {
  messageIn?(channel: string): void;
  malformed?(channel: string): void;
}

export function connectDeviceEvents(
  broker: DeviceBroker,
  services: { health: HealthService; commands: CommandsService },
  log: FastifyBaseLogger,
  hooks: DeviceEventHooks = {},
): void {
  const { health, commands } = services;

  broker.on('online', (deviceId, cause) => health.deviceConnected(deviceId, cause));
  broker.on('offline', (deviceId, cause) => health.deviceDisconnected(deviceId, cause));
  broker.on('ready', (deviceId) => commands.deliverPending(deviceId));

  broker.on('message', (deviceId, channel, payload) => {
    hooks.messageIn?.(channel);
    const decode = <T>(schema: z.ZodType<T>): T | undefined => {
      const result = decodePayload(schema, payload);
      if (result.ok) return result.value;
      hooks.malformed?.(channel);
      log.warn(
        { deviceId, channel, error: result.error, payload: payload.subarray(0, 200).toString('utf8') },
        'malformed device payload dropped',
      );
      return undefined;
    };
    switch (channel) {
      case 'ack': {
        const ack = decode(ackSchema);
        if (ack) {
          health.recordSeen(deviceId);
          commands.recordAck(deviceId, ack);
        }
        break;
      }
      case 'state': {
        const state = decode(stateSchema);
        if (state) health.recordState(deviceId, state);
        break;
      }
      case 'telemetry': {
        const telemetry = decode(telemetrySchema);
        if (telemetry) health.recordTelemetry(deviceId, telemetry);
        break;
      }
      case 'log': {
        // The playback log itself is a later feature; failures already count towards health.
        const entry = decode(logSchema);
        if (entry) {
          health.recordPlayback(deviceId, entry);
          log.info({ deviceId, entry }, 'playback event');
        }
        break;
      }
    }
  });
}
