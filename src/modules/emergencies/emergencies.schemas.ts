import { z } from 'zod';
import { HAZARDS } from '../../db/schema/index.js';
import { dayOrInstantSchema } from '../schedules/timing.js';
import { VOICES } from '../tts/engines.js';

const id = z.string().min(1).max(64);

/** Where a device is with an emergency, from the first send to its last log entry (docs/emergency.md). */
export const DEVICE_STATUSES = [
  'queued',
  'sent',
  'received',
  'playing',
  'played',
  'stopped',
  'failed',
  'undelivered',
] as const;
export type DeviceStatus = (typeof DEVICE_STATUSES)[number];

/** Statuses in which a device has not confirmed anything: whom a technician should call. */
export const NOT_REACHED: readonly DeviceStatus[] = ['queued', 'sent', 'undelivered', 'failed'];

export const EMERGENCY_STATUSES = ['active', 'expired', 'cancelled'] as const;
export type EmergencyStatus = (typeof EMERGENCY_STATUSES)[number];

export const DEFAULT_EXPIRES_IN_S = 3_600;
export const MAX_EXPIRES_IN_S = 86_400;
export const MAX_TEXT_LENGTH = 5_000;

const title = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .max(200)
  .transform((s) => s.normalize('NFC'))
  .describe('Shown to operators and in the playback log: "Cảnh báo bão số 9 – sơ tán khẩn cấp"');
const text = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .max(MAX_TEXT_LENGTH)
  .transform((s) => s.normalize('NFC'))
  .describe('Read out by the Vietnamese text-to-speech after the attention signal');
const expiresInS = z
  .number()
  .int()
  .min(60)
  .max(MAX_EXPIRES_IN_S)
  .describe('Seconds from now; a device that has not got it by then never plays it');

export const sendEmergencySchema = z
  .strictObject({
    title,
    text: text.optional(),
    mediaId: id.optional().describe('A recording (media item) you may use, played after the signal'),
    programmeId: id.optional().describe('An approved bulletin (not a relay), played after the signal'),
    voice: z.enum(VOICES).optional().describe('Voice of the text (default vi, northern)'),
    areaIds: z
      .array(id)
      .min(1)
      .max(1_000)
      .describe('Every loudspeaker in each area and its sub-areas; all must be inside your area'),
    hazard: z.enum(HAZARDS).optional(),
    riskLevel: z.number().int().min(1).max(5).optional().describe('Cấp độ rủi ro thiên tai, 1 to 5'),
    repeat: z
      .strictObject({
        count: z.number().int().min(1).max(10).describe('Plays in all, the first included'),
        intervalS: z
          .number()
          .int()
          .min(0)
          .max(3_600)
          .default(0)
          .describe('Silence between the end of one play and the start of the next'),
      })
      .optional(),
    volume: z.number().int().min(0).max(100).default(100),
    expiresInS: expiresInS.default(DEFAULT_EXPIRES_IN_S),
    exercise: z
      .boolean()
      .default(false)
      .describe('A drill: only devices flagged drillParticipant play it, framed by "Đây là diễn tập"'),
  })
  .superRefine((body, ctx) => {
    const given = (['text', 'mediaId', 'programmeId'] as const).filter((k) => body[k] !== undefined);
    if (given.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        path: given.length === 0 ? ['text'] : [given[1] as string],
        message: 'give exactly one of text, mediaId or programmeId',
      });
    }
  });
export type SendEmergencyBody = z.infer<typeof sendEmergencySchema>;

export const updateEmergencySchema = z
  .strictObject({
    title: title.optional(),
    text: text.optional().describe('A new text: re-rendered and re-sent as the same emergency'),
    expiresInS: expiresInS.optional().describe('A new expiry, from now; only later than the current one'),
  })
  .refine((b) => b.title !== undefined || b.text !== undefined || b.expiresInS !== undefined, {
    message: 'give title, text or expiresInS',
  });

export const cancelEmergencySchema = z.strictObject({
  reason: z.string().trim().max(500).optional().describe('Kept in the audit log'),
});

export const emergencyParamsSchema = z.object({ id });

const booleanQuery = z.enum(['true', 'false']).transform((v) => v === 'true');
export const listEmergenciesQuerySchema = z.object({
  areaId: id.optional().describe('Emergencies that played in this area, its sub-areas or from above it'),
  from: dayOrInstantSchema.optional().describe('Sent at or after'),
  to: dayOrInstantSchema.optional().describe('Sent before (a date: up to the end of that day)'),
  exercise: booleanQuery.optional().describe('true: drills only; false: real alerts only'),
  limit: z.coerce.number().int().min(1).max(100).default(50),
  offset: z.coerce.number().int().min(0).default(0),
});
export type ListEmergenciesQuery = z.infer<typeof listEmergenciesQuerySchema>;

export const countsSchema = z.object(
  Object.fromEntries(DEVICE_STATUSES.map((s) => [s, z.number().int()])) as Record<DeviceStatus, z.ZodNumber>,
);
export type DeviceCounts = z.infer<typeof countsSchema>;

export const emergencySchema = z.object({
  id: z.string(),
  title: z.string(),
  text: z.string().nullable(),
  mediaId: z.string().nullable(),
  programmeId: z.string().nullable(),
  voice: z.string().nullable(),
  hazard: z.enum(HAZARDS).nullable(),
  riskLevel: z.number().int().nullable(),
  volume: z.number().int(),
  repeat: z.object({ count: z.number().int(), intervalS: z.number().int() }),
  exercise: z.boolean().describe('A drill: never a real alert'),
  label: z.string().describe('"DIỄN TẬP – …" for drills, the title otherwise: what to show on a screen'),
  areaIds: z.array(z.string()),
  status: z.enum(EMERGENCY_STATUSES),
  revision: z.number().int().describe('1, then +1 for each change of text'),
  durationMs: z.number().int().describe('Length of one play: attention signal and message'),
  targetCount: z.number().int(),
  sentBy: z.object({ kind: z.enum(['user', 'source']), id: z.string().nullable(), name: z.string() }),
  createdAt: z.string(),
  expiresAt: z.string(),
  updatedAt: z.string(),
  cancelledAt: z.string().nullable(),
  commandId: z.string().describe('The play command of the current revision (GET /commands/:id)'),
  counts: countsSchema.describe('Devices per status (only those in your area)'),
  reached: z.number().int().describe('Devices that confirmed it (received, playing, played or stopped)'),
  percent: z.number().describe('reached / devices counted, 0..100'),
});
export type EmergencyView = z.infer<typeof emergencySchema>;

export const emergencyDetailSchema = emergencySchema.extend({
  byCommune: z.array(
    z.object({
      areaId: z.string().nullable(),
      name: z.string(),
      code: z.string().nullable(),
      targetCount: z.number().int(),
      counts: countsSchema,
    }),
  ),
  notReachedCount: z.number().int().describe('All of them; the list stops at 1,000'),
  notReached: z
    .array(
      z.object({
        deviceId: z.string(),
        name: z.string(),
        areaId: z.string(),
        areaName: z.string(),
        status: z.enum(DEVICE_STATUSES),
        reason: z.string().nullable(),
        online: z.boolean(),
        lastSeenAt: z.string().nullable(),
      }),
    )
    .describe(
      'Devices that have not confirmed it (queued, sent, undelivered, failed), with when they were last seen',
    ),
  cancel: z
    .object({
      commandId: z.string(),
      reason: z.string().nullable(),
      counts: z.record(z.string(), z.number().int()).describe('The stop, per delivery status'),
    })
    .nullable(),
});
export type EmergencyDetail = z.infer<typeof emergencyDetailSchema>;

export const emergencyListSchema = z.object({
  items: z.array(emergencySchema),
  limit: z.number().int(),
  offset: z.number().int(),
});
