import { z } from 'zod';
import { HEALTH_LEVELS, PRESENCE_CAUSES } from '../../db/schema/index.js';
import { playingSchema, telemetrySchema } from '../../protocol/index.js';
import { METRICS } from './health.repository.js';

const id = z.string().min(1).max(64);
export const healthParamsSchema = z.object({ id });

export const deviceHealthSchema = z.object({
  deviceId: z.string(),
  online: z.boolean(),
  since: z.string().nullable().describe('When the device last came online or went offline'),
  health: z.enum(HEALTH_LEVELS),
  reasons: z.array(z.string()).describe('Why it is not ok (docs/health.md); empty when ok'),
  healthSince: z.string().nullable(),
  telemetry: telemetrySchema.extend({ receivedAt: z.string() }).nullable().describe('The latest telemetry'),
  playing: playingSchema.nullable(),
  firmware: z.string().nullable(),
  volume: z.number().int().nullable(),
  lastSeenAt: z.string().nullable(),
  playbackFailures: z.number().int().describe('Playback failures in a row'),
  transitions: z
    .array(z.object({ at: z.string(), online: z.boolean(), cause: z.enum(PRESENCE_CAUSES) }))
    .describe('The last 20 presence transitions, newest first'),
});

export const telemetryQuerySchema = z
  .object({
    from: z.iso.datetime({ offset: true }).optional().describe('Default: 24 hours before `to`'),
    to: z.iso.datetime({ offset: true }).optional().describe('Default: now'),
    metric: z.enum(METRICS).optional().describe('Default: every metric'),
  })
  .refine((q) => !q.from || !q.to || Date.parse(q.from) < Date.parse(q.to), {
    path: ['from'],
    message: 'must be before `to`',
  });

const point = z.object({
  at: z.string(),
  avg: z.number().nullable(),
  min: z.number().nullable(),
  max: z.number().nullable(),
  count: z.number().int(),
});

export const telemetrySeriesSchema = z.object({
  deviceId: z.string(),
  from: z.string(),
  to: z.string(),
  bucketS: z
    .number()
    .nullable()
    .describe('Averaging bucket for long ranges; null when the points are raw samples'),
  series: z.record(z.string(), z.array(point)).describe('Per metric; booleans average to the share of true'),
});

const counts = {
  total: z.number().int(),
  online: z.number().int(),
  offline: z.number().int(),
  playing: z.number().int(),
  ok: z.number().int(),
  degraded: z.number().int(),
  fault: z.number().int(),
};

export const areaSummarySchema = z.object({
  areaId: z.string(),
  name: z.string(),
  ...counts,
  children: z
    .array(z.object({ areaId: z.string(), name: z.string(), level: z.string(), ...counts }))
    .describe('One entry per direct sub-area (with everything below it), worst first'),
  direct: z.object(counts).describe('Devices placed directly in this area, not in a sub-area'),
});

export type DeviceHealthView = z.infer<typeof deviceHealthSchema>;
export type AreaSummary = z.infer<typeof areaSummarySchema>;
