/**
 * Device protocol v1: the contract between Loa and station firmware (docs/protocol.md).
 *
 * This file imports only zod so that firmware-sim, and any vendor tool written in TypeScript, can use it
 * as is. Change it only by adding optional fields; a breaking change needs a new prefix (loa/v2).
 * Payload schemas are not strict: unknown fields are ignored, as the protocol promises.
 */
import { z } from 'zod';

export const PROTOCOL_PREFIX = 'loa/v1/devices';

/** Topics a device publishes on (device → server). */
export const DEVICE_PUBLISH_CHANNELS = ['ack', 'state', 'telemetry', 'log'] as const;
export type DeviceChannel = (typeof DEVICE_PUBLISH_CHANNELS)[number];

export const topics = {
  cmd: (deviceId: string) => `${PROTOCOL_PREFIX}/${deviceId}/cmd`,
  ack: (deviceId: string) => `${PROTOCOL_PREFIX}/${deviceId}/ack`,
  state: (deviceId: string) => `${PROTOCOL_PREFIX}/${deviceId}/state`,
  telemetry: (deviceId: string) => `${PROTOCOL_PREFIX}/${deviceId}/telemetry`,
  log: (deviceId: string) => `${PROTOCOL_PREFIX}/${deviceId}/log`,
} as const;

/** Splits `loa/v1/devices/{id}/{channel}`; null for any other topic. */
export function parseDeviceTopic(topic: string): { deviceId: string; channel: string } | null {
  const parts = topic.split('/');
  if (parts.length !== 5 || parts[0] !== 'loa' || parts[1] !== 'v1' || parts[2] !== 'devices') return null;
  const deviceId = parts[3];
  const channel = parts[4];
  if (!deviceId || !channel) return null;
  return { deviceId, channel };
}

/** QoS per topic, as the protocol table fixes it. */
export const QOS = { cmd: 1, ack: 1, state: 1, telemetry: 0, log: 1 } as const;

export const PRIORITIES = ['normal', 'priority', 'emergency'] as const;
export const prioritySchema = z.enum(PRIORITIES);
export type Priority = z.infer<typeof prioritySchema>;

/**
 * Rank of a priority. A play of equal or higher rank replaces what plays; a play, stop, volume, reboot or
 * identify of lower rank than what plays is rejected (`lower_priority`), so that no routine command ends,
 * turns down or sounds over an emergency. A ping touches no audio and is always answered.
 */
export function priorityRank(priority: Priority): number {
  return PRIORITIES.indexOf(priority);
}

/**
 * Length limits of every string in a payload (docs/protocol.md §3). A device or a server that reads a
 * payload holds it in memory and may log or store parts of it: no field may be as long as the packet.
 */
export const LIMITS = {
  /** Command, session and other ids (the server's are 24 characters). */
  id: 64,
  /** Command types, the one free-form word a device must read before knowing the type. */
  type: 64,
  /** Free-text reasons in acks and log entries. */
  reason: 500,
  firmware: 64,
  /** Media and stream URLs. */
  url: 2048,
} as const;

const isoDateTime = z.iso.datetime({ offset: true });
const volumeLevel = z.number().int().min(0).max(100);
const idString = z.string().min(1).max(LIMITS.id);
const reasonString = z.string().max(LIMITS.reason);
/**
 * No whitespace at either end and no control character anywhere (C0, DEL, C1). URL parsers disagree on
 * such input (WHATWG's drops edge whitespace, tabs and newlines; a firmware's may not), and zod's url check
 * accepts it: it trims the value quietly and passes other control characters through to devices. Refused,
 * not cleaned up, so that what an operator sent is exactly what devices get. Empty passes here so that
 * the url check names what is wrong with it.
 */
const CLEAN_URL = /^(?:[^\s\p{Cc}](?:[^\p{Cc}]*[^\s\p{Cc}])?)?$/u;
/**
 * Devices fetch what the server names: only http and https, never `file:`, `javascript:` or anything
 * else a firmware's URL library might happen to open.
 */
const webUrl = z
  .string()
  .max(LIMITS.url)
  .regex(CLEAN_URL, 'must not start or end with whitespace or contain control characters')
  .pipe(z.url({ protocol: /^https?$/, error: 'must be an http or https URL' }))
  // The pipe's input side has no format of its own; keep the API description saying it is a URL.
  .meta({ format: 'uri' });

export const mediaSourceSchema = z.object({
  kind: z.literal('media'),
  url: webUrl,
  sha256: z.string().regex(/^[0-9a-f]{64}$/i, 'must be 64 hexadecimal characters'),
  durationMs: z.number().int().positive(),
});
export const streamSourceSchema = z.object({
  kind: z.literal('stream'),
  url: webUrl,
  durationMs: z.number().int().positive().optional(),
});
export const playSourceSchema = z.discriminatedUnion('kind', [mediaSourceSchema, streamSourceSchema]);
export type PlaySource = z.infer<typeof playSourceSchema>;

export const playParamsSchema = z.object({
  sessionId: idString,
  source: playSourceSchema,
  offsetMs: z.number().int().min(0).optional(),
  /**
   * Optional (added in v1): the instant at which the device should be at `offsetMs` (0 when absent). In
   * the future: fetch the file now, start then. In the past (received late): join where the broadcast now
   * is, `offsetMs` + (now − startAt). A device without it plays on receipt from `offsetMs`.
   */
  startAt: isoDateTime.optional(),
  volume: volumeLevel.optional(),
  /** Plays in all (1 when absent): the content is played this many times. */
  repeat: z.number().int().min(1).optional(),
  /**
   * Optional (added in v1 for emergencies): silence between two plays of a repeat, in ms (0 when absent).
   * A device without it plays the repeats back to back.
   */
  repeatGapMs: z.number().int().min(0).max(3_600_000).optional(),
});
export const stopParamsSchema = z.object({ sessionId: idString.optional() });
export const volumeParamsSchema = z.object({ level: volumeLevel });

export const COMMAND_TYPES = ['play', 'stop', 'volume'] as const;
/**
 * Optional maintenance commands (added in v1 as optional): a device that lacks one answers `rejected`
 * with reason `unsupported`. reboot: ack `done` just before restarting; ping: ack `done` at once (the
 * server measures the round trip); identify: play a test tone so a technician can find the cluster.
 */
export const MAINTENANCE_TYPES = ['reboot', 'ping', 'identify'] as const;
export type CommandType = (typeof COMMAND_TYPES)[number] | (typeof MAINTENANCE_TYPES)[number];
export const identifyParamsSchema = z.object({ durationS: z.number().int().min(1).max(600).optional() });

const commandBase = {
  id: idString,
  issuedAt: isoDateTime,
  expiresAt: isoDateTime.optional(),
  priority: prioritySchema,
};

export const commandSchema = z.discriminatedUnion('type', [
  z.object({ ...commandBase, type: z.literal('play'), params: playParamsSchema }),
  z.object({ ...commandBase, type: z.literal('stop'), params: stopParamsSchema }),
  z.object({ ...commandBase, type: z.literal('volume'), params: volumeParamsSchema }),
  z.object({ ...commandBase, type: z.literal('reboot'), params: z.object({}) }),
  z.object({ ...commandBase, type: z.literal('ping'), params: z.object({}) }),
  z.object({ ...commandBase, type: z.literal('identify'), params: identifyParamsSchema }),
]);
export type Command = z.infer<typeof commandSchema>;

/**
 * What a device must accept on `cmd` without crashing: any object with an id and a type. Unknown types
 * (maintenance commands a device lacks) are answered `rejected` / `unsupported`, not dropped.
 */
export const commandEnvelopeSchema = z.object({
  id: idString,
  type: z.string().min(1).max(LIMITS.type),
});

export const ACK_STATUSES = ['received', 'done', 'failed', 'rejected'] as const;
export const ackSchema = z.object({
  id: idString,
  status: z.enum(ACK_STATUSES),
  reason: reasonString.optional(),
  at: isoDateTime,
});
export type Ack = z.infer<typeof ackSchema>;
export type AckStatus = Ack['status'];

export const playingSchema = z.object({
  sessionId: idString,
  commandId: idString,
  priority: prioritySchema,
  startedAt: isoDateTime,
  positionMs: z.number().int().min(0),
});
export const stateSchema = z.object({
  firmware: z.string().min(1).max(LIMITS.firmware),
  volume: volumeLevel,
  playing: playingSchema.nullable(),
});
export type DeviceState = z.infer<typeof stateSchema>;

export const telemetrySchema = z.object({
  at: isoDateTime,
  uptimeS: z.number().min(0),
  rssiDbm: z.number().optional(),
  supplyVoltage: z.number().optional(),
  onBattery: z.boolean().optional(),
  ampTempC: z.number().optional(),
  speakerFault: z.boolean().optional(),
});
export type Telemetry = z.infer<typeof telemetrySchema>;

export const LOG_EVENTS = ['started', 'finished', 'interrupted', 'failed'] as const;
export const logSchema = z.object({
  seq: z.number().int().min(0),
  sessionId: idString,
  commandId: idString,
  event: z.enum(LOG_EVENTS),
  at: isoDateTime,
  reason: reasonString.optional(),
});
export type PlaybackLogEntry = z.infer<typeof logSchema>;

/**
 * Parses an MQTT payload as UTF-8 JSON against a schema. Returns an error string instead of throwing:
 * a malformed payload is logged and dropped, never allowed to crash the receiver.
 */
export function decodePayload<T>(
  schema: z.ZodType<T>,
  payload: Uint8Array | string,
): { ok: true; value: T } | { ok: false; error: string } {
  let json: unknown;
  try {
    const text =
      typeof payload === 'string' ? payload : new TextDecoder('utf-8', { fatal: true }).decode(payload);
    json = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `not UTF-8 JSON: ${(err as Error).message}` };
  }
  const result = schema.safeParse(json);
  if (!result.success) {
    const detail = result.error.issues
      .map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`)
      .join('; ');
    return { ok: false, error: detail };
  }
  return { ok: true, value: result.data };
}
