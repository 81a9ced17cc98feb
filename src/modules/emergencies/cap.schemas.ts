import { z } from 'zod';
import { CAP_MSG_TYPES, CAP_STATUSES } from './cap.js';
import { emergencySchema } from './emergencies.schemas.js';

// ---------------------------------------------------------------------------------------------------------
// CAP ingest

export const UNMATCHED_KINDS = ['geocode', 'polygon', 'circle', 'area'] as const;
export const UNMATCHED_REASONS = [
  'unknown_code',
  'unsupported_geocode',
  'outside_scope',
  'no_devices',
  'no_geometry',
] as const;

export const unmatchedSchema = z.object({
  kind: z.enum(UNMATCHED_KINDS).describe('What in the <area> matched nothing'),
  value: z
    .string()
    .describe('The geocode value ("46", or "valueName=value" when not VN-ADMIN), or the shape as written'),
  areaDesc: z.string().describe('The <areaDesc> of the <area> it was in'),
  reason: z
    .enum(UNMATCHED_REASONS)
    .describe(
      'unknown_code: no area has this code; unsupported_geocode: not a VN-ADMIN geocode; outside_scope: ' +
        "only outside your (or the key's) area; no_devices: no loudspeaker there (for an exercise: no " +
        'drill participant); no_geometry: the <area> has no geocode, polygon or circle',
    ),
});
export type Unmatched = z.infer<typeof unmatchedSchema>;

export const CAP_ANSWER_OUTCOMES = ['sent', 'updated', 'cancelled', 'not_played'] as const;

export const capAnswerSchema = z.object({
  emergencyId: z
    .string()
    .nullable()
    .describe('The emergency it started (Alert) or changed (Update, Cancel); null when not played'),
  emergencyIds: z
    .array(z.string())
    .describe('Every emergency it changed: an Update or Cancel may reference several alerts'),
  outcome: z.enum(CAP_ANSWER_OUTCOMES),
  status: z.enum(CAP_STATUSES),
  msgType: z.enum(CAP_MSG_TYPES),
  sender: z.string(),
  identifier: z.string(),
  unmatched: z.array(unmatchedSchema).describe('Targets that reached no loudspeaker'),
  reason: z.string().optional().describe('Why a not_played alert was not played'),
  emergency: emergencySchema.nullable().describe('The emergency as it was after this alert'),
  replayed: z
    .boolean()
    .describe('true: the same key or user sent this (sender, identifier) before; the first answer again'),
});
export type CapAnswer = z.infer<typeof capAnswerSchema>;

// ---------------------------------------------------------------------------------------------------------
// Warning sources

const sourceName = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .max(200)
  .transform((s) => s.normalize('NFC'))
  .describe('Who sends with this key: "Đài Khí tượng Thủy văn khu vực Bắc Trung Bộ"');

export const createWarningSourceSchema = z.strictObject({
  name: sourceName,
  areaId: z.string().min(1).max(64).describe('The area its alerts may reach (and its sub-areas)'),
});
export type CreateWarningSourceInput = z.infer<typeof createWarningSourceSchema>;

export const warningSourceParamsSchema = z.object({ id: z.string().min(1).max(64) });

export const warningSourceSchema = z.object({
  id: z.string(),
  name: z.string(),
  areaId: z.string(),
  areaName: z.string(),
  createdAt: z.string(),
  lastUsedAt: z.string().nullable(),
  revokedAt: z.string().nullable().describe('Set once revoked: the key is refused from then on'),
});
export type WarningSourceView = z.infer<typeof warningSourceSchema>;

export const createdWarningSourceSchema = warningSourceSchema.extend({
  key: z
    .string()
    .describe(
      'Shown this once, never again (only its hash is kept): "Authorization: Bearer loa_wsk_…" on ' +
        'POST /api/v1/emergencies/cap',
    ),
});

export const warningSourceListSchema = z.object({ items: z.array(warningSourceSchema) });
