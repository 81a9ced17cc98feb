/**
 * The device gateway: routes what the broker hears from devices to the services that own it. Payloads are
 * validated against the protocol schemas; a malformed one is logged (truncated) and dropped, and never
 * reaches a service.
 *
 * Each handler runs on the broker's event emitter, inside Aedes' packet handling: an exception there would
 * end the process, and with it every loudspeaker's connection. So every handler catches its own errors (a
 * database that is full or busy, a bug): the event is logged with its device and channel, counted in
 * /metrics, and lost, and the next message is handled as usual.
 */
import type { FastifyBaseLogger } from 'fastify';
import type { z } from 'zod';
import { systemClock } from '../lib/clock.js';
import { LogWindow } from '../lib/log-window.js';
import type { DeviceBroker } from '../plugins/broker.js';
import { ackSchema, decodePayload, logSchema, stateSchema, telemetrySchema } from '../protocol/index.js';
import type { CommandsService } from '../modules/commands/commands.service.js';
import type { HealthService } from '../modules/health/health.service.js';
import type { PlaybackService } from '../modules/playback/playback.service.js';

// What a log line may quote of a payload that failed validation.
const QUOTE_BYTES = 200;
// Malformed payloads are logged at most once per device and window: one device must not flood the log.
const MALFORMED_LOG_WINDOW_MS = 60_000;

export interface DeviceGatewayHooks {
  messageIn?(channel: string): void;
  malformed?(channel: string): void;
  /** A handler threw; `channel` is a protocol channel or `ready`, `online`, `offline`. */
  failed?(channel: string): void;
}

export interface DeviceGatewayServices {
  health: HealthService;
  commands: CommandsService;
  playback: PlaybackService;
}

export function connectDeviceGateway(
  broker: DeviceBroker,
  services: DeviceGatewayServices,
  log: FastifyBaseLogger,
  hooks: DeviceGatewayHooks = {},
  clock: { now(): Date } = systemClock,
): void {
  const { health, commands, playback } = services;
  const malformedLog = new LogWindow(clock, MALFORMED_LOG_WINDOW_MS);

  const guarded = (deviceId: string, channel: string, handle: () => void): void => {
    try {
      handle();
    } catch (err) {
      try {
        hooks.failed?.(channel);
      } finally {
        log.error({ err, deviceId, channel }, 'device event lost: its handler failed');
      }
    }
  };

  broker.on('online', (deviceId, cause) =>
    guarded(deviceId, 'online', () => health.deviceConnected(deviceId, cause)),
  );
  broker.on('offline', (deviceId, cause) =>
    guarded(deviceId, 'offline', () => health.deviceDisconnected(deviceId, cause)),
  );
  broker.on('ready', (deviceId) => guarded(deviceId, 'ready', () => commands.deliverPending(deviceId)));

  broker.on('message', (deviceId, channel, payload) =>
    guarded(deviceId, channel, () => {
      hooks.messageIn?.(channel);
      const decode = <T>(schema: z.ZodType<T>): T | undefined => {
        const result = decodePayload(schema, payload);
        if (result.ok) return result.value;
        hooks.malformed?.(channel);
        const suppressed = malformedLog.pass(deviceId);
        if (suppressed === undefined) return undefined;
        log.warn(
          {
            deviceId,
            channel,
            error: result.error.slice(0, 500),
            bytes: payload.length,
            payload: payload.subarray(0, QUOTE_BYTES).toString('utf8'),
            suppressed,
            windowS: MALFORMED_LOG_WINDOW_MS / 1000,
          },
          'malformed device payload dropped (logged once per device and window; suppressed: dropped since the last line)',
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
          return;
        }
        case 'state': {
          const state = decode(stateSchema);
          if (state) health.recordState(deviceId, state);
          return;
        }
        case 'telemetry': {
          const telemetry = decode(telemetrySchema);
          if (telemetry) health.recordTelemetry(deviceId, telemetry);
          return;
        }
        case 'log': {
          const entry = decode(logSchema);
          // Stored in batches, once however often QoS 1 delivers it; health hears of it once it is stored.
          if (entry) playback.record(deviceId, entry);
          return;
        }
      }
    }),
  );
}
