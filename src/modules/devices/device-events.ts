/**
 * Routes what the broker hears from devices to the services that own it. Payloads are validated against
 * the protocol schemas; a malformed one is logged and dropped, and never reaches a service.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { DeviceBroker } from '../../plugins/broker.js';
import type { z } from 'zod';
import { ackSchema, decodePayload, logSchema, stateSchema, telemetrySchema } from '../../protocol/index.js';
import type { CommandsService } from '../commands/commands.service.js';
import type { DevicesService } from './devices.service.js';

export function connectDeviceEvents(
  broker: DeviceBroker,
  services: { devices: DevicesService; commands: CommandsService },
  log: FastifyBaseLogger,
): void {
  const { devices, commands } = services;

  broker.on('online', (deviceId) => devices.recordPresence(deviceId, true));
  broker.on('offline', (deviceId) => devices.recordPresence(deviceId, false));
  broker.on('ready', (deviceId) => commands.deliverPending(deviceId));

  broker.on('message', (deviceId, channel, payload) => {
    const decode = <T>(schema: z.ZodType<T>): T | undefined => {
      const result = decodePayload(schema, payload);
      if (result.ok) return result.value;
      log.warn(
        { deviceId, channel, error: result.error, payload: payload.subarray(0, 200).toString('utf8') },
        'malformed device payload dropped',
      );
      return undefined;
    };
    switch (channel) {
      case 'ack': {
        const ack = decode(ackSchema);
        if (ack) commands.recordAck(deviceId, ack);
        break;
      }
      case 'state': {
        const state = decode(stateSchema);
        if (state) devices.recordState(deviceId, state);
        break;
      }
      case 'telemetry': {
        if (decode(telemetrySchema)) devices.recordSeen(deviceId);
        break;
      }
      case 'log': {
        // Stored by the playback log once it exists; for now every event is in the structured log.
        const entry = decode(logSchema);
        if (entry) {
          devices.recordSeen(deviceId);
          log.info({ deviceId, entry }, 'playback event');
        }
        break;
      }
    }
  });
}
