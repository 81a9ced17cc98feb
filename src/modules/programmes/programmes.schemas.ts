import { z } from 'zod';
import { PROGRAMME_CATEGORIES, PROGRAMME_STATUSES } from '../../db/schema/index.js';
import { streamSourceSchema } from '../../protocol/index.js';
import { PITCH, RATE, VOICES, type Voice } from '../tts/engines.js';

const id = z.string().min(1).max(64);

/** Bounds of one bulletin, so that one request cannot keep the audio tools busy for an hour. */
export const BULLETIN_LIMITS = {
  segments: 50,
  textChars: 5_000,
  silenceMs: 60_000,
} as const;

export const categorySchema = z.enum(PROGRAMME_CATEGORIES);
export const statusSchema = z.enum(PROGRAMME_STATUSES);

const title = z.string().trim().min(1, 'must not be empty').max(200);

/**
 * One segment is exactly one of `{ mediaId }`, `{ text, voice?, rate?, pitch? }` or `{ silenceMs }`. Written
 * as one object checked afterwards rather than a union: a union's error says only "invalid input" at the
 * segment, where this one names the field (`body.content.segments.2.text: Too big`).
 */
const segmentSchema = z
  .strictObject({
    mediaId: id.optional().describe('An uploaded recording (POST /media)'),
    text: z
      .string()
      .trim()
      .min(1, 'must not be empty')
      .max(BULLETIN_LIMITS.textChars)
      // Punctuation alone gives the voice nothing to read (and would fail only once rendering started).
      .refine((t) => /[\p{L}\p{N}]/u.test(t), 'must contain something to read')
      .optional()
      .describe('Read by the Vietnamese voice, after normalisation (numbers, dates, abbreviations)'),
    voice: z.enum(VOICES).optional(),
    rate: z
      .number()
      .int()
      .min(RATE.min)
      .max(RATE.max)
      .optional()
      .describe(`Words per minute (default ${RATE.default})`),
    pitch: z
      .number()
      .int()
      .min(PITCH.min)
      .max(PITCH.max)
      .optional()
      .describe(`${PITCH.min}–${PITCH.max} (default ${PITCH.default})`),
    silenceMs: z.number().int().min(1).max(BULLETIN_LIMITS.silenceMs).optional(),
  })
  .superRefine((s, ctx) => {
    const kinds = (['mediaId', 'text', 'silenceMs'] as const).filter((k) => s[k] !== undefined);
    if (kinds.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        message:
          kinds.length === 0
            ? 'a segment needs one of mediaId, text or silenceMs'
            : `a segment is one of mediaId, text or silenceMs, not ${kinds.join(' and ')}`,
      });
    }
    for (const k of ['voice', 'rate', 'pitch'] as const) {
      if (s[k] !== undefined && s.text === undefined) {
        ctx.addIssue({ code: 'custom', path: [k], message: 'only applies to a text segment' });
      }
    }
  });

export type Segment =
  | { mediaId: string }
  | { text: string; voice?: Voice; rate?: number; pitch?: number }
  | { silenceMs: number };

export const relaySchema = z.strictObject({
  url: streamSourceSchema.shape.url.describe('http or https: Icecast, SHOUTcast or HLS'),
  name: z.string().trim().min(1).max(200).optional().describe('"VOV1", "Đài PT-TH Quảng Trị"'),
});

/** Either a bulletin (`segments`) or a relay (`relay`); same single-object reasoning as a segment. */
export const contentSchema = z
  .strictObject({
    segments: z.array(segmentSchema).min(1).max(BULLETIN_LIMITS.segments).optional(),
    jingles: z
      .boolean()
      .optional()
      .describe("Frame the bulletin with the area's intro and outro (or the nearest parent area's)"),
    relay: relaySchema.optional(),
  })
  .superRefine((c, ctx) => {
    if ((c.segments === undefined) === (c.relay === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'give either segments (a bulletin) or relay (a live stream)' });
    }
    if (c.relay !== undefined && c.jingles !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['jingles'], message: 'only applies to a bulletin' });
    }
  });

export type BulletinContent = { segments: Segment[]; jingles?: boolean };
export type RelayContent = { relay: { url: string; name?: string } };
export type ProgrammeContent = BulletinContent | RelayContent;

export const createProgrammeSchema = z.object({
  title: title.describe('With tone marks: "Thông báo lịch tiêm phòng dại – Thôn Đông"'),
  areaId: id.describe('Who may use it: this area and everything below it'),
  category: categorySchema,
  content: contentSchema,
});

export const updateProgrammeSchema = z
  .object({ title: title.optional(), category: categorySchema.optional(), content: contentSchema.optional() })
  .refine((v) => Object.keys(v).length > 0, { message: 'nothing to change' });

export const programmeParamsSchema = z.object({ id });

export const listProgrammesQuerySchema = z.object({
  areaId: id.optional().describe('Only programmes of this area and its sub-areas'),
  status: statusSchema.optional(),
  category: categorySchema.optional(),
  q: z
    .string()
    .trim()
    .min(1)
    .max(200)
    .optional()
    .describe('Part of the title, with or without tone marks ("tiem phong" finds "tiêm phòng")'),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  offset: z.coerce.number().int().min(0).default(0),
});

export const audioQuerySchema = z.object({
  revision: z
    .enum(['current', 'approved'])
    .default('current')
    .describe('current: what an editor last saved; approved: what airs'),
});

/** The body is optional: a request without one arrives as null. */
export const approveSchema = z
  .object({ note: z.string().trim().min(1).max(2_000).optional().describe('Shown in the history') })
  .nullish();
export const rejectSchema = z.object({
  reason: z.string().trim().min(1, 'must not be empty').max(2_000).describe('What to change'),
});

export const relayProbeSchema = z.object({
  reachable: z.boolean(),
  status: z.number().int().nullable().describe('HTTP status of the answer; null without one'),
  contentType: z.string().nullable(),
  checkedAt: z.string(),
  error: z.string().optional(),
});
export type RelayProbe = z.infer<typeof relayProbeSchema>;

const userRef = z
  .object({ id: z.string(), username: z.string() })
  .nullable()
  .describe('null when the account has since been deleted');

export const revisionSchema = z.object({
  id: z.string(),
  number: z.number().int(),
  title: z.string(),
  category: categorySchema,
  status: statusSchema,
  content: z.record(z.string(), z.unknown()),
  sha256: z.string().nullable().describe('The rendered file of a bulletin; null for a relay'),
  sizeBytes: z.number().int().nullable(),
  durationMs: z.number().int().nullable(),
  loudnessLufs: z.number().nullable(),
  relayProbe: relayProbeSchema.nullable(),
  createdBy: userRef,
  createdAt: z.string(),
});

export const programmeSummarySchema = z.object({
  id: z.string(),
  title: z.string(),
  areaId: z.string(),
  kind: z.enum(['bulletin', 'relay']),
  category: categorySchema,
  status: statusSchema.describe('The status of the latest revision'),
  revision: z.number().int().describe('Number of the latest revision'),
  approvedRevision: z
    .number()
    .int()
    .nullable()
    .describe('Number of the revision that airs; null until a first approval'),
  durationMs: z.number().int().nullable(),
  createdBy: userRef,
  createdAt: z.string(),
  updatedAt: z.string(),
});

export const historyEntrySchema = z.object({
  action: z.enum(['created', 'edited', 'submitted', 'approved', 'rejected', 'deleted']),
  revision: z.number().int(),
  by: z.string().describe('Username, kept after the account is deleted'),
  at: z.string(),
  note: z.string().nullable(),
});

export const programmeSchema = programmeSummarySchema.extend({
  current: revisionSchema,
  approved: revisionSchema
    .nullable()
    .describe('The revision that airs (may be the current one); null until a first approval'),
  history: z.array(historyEntrySchema),
  warnings: z.array(z.string()).describe('E.g. a relay that did not answer when it was saved'),
});

export const programmeListSchema = z.object({
  items: z.array(programmeSummarySchema),
  total: z.number().int(),
  limit: z.number().int(),
  offset: z.number().int(),
});

export const areaJinglesParamsSchema = z.object({ id });
export const updateJinglesSchema = z
  .object({
    introMediaId: id.nullable().optional().describe('null removes it; omitted leaves it'),
    outroMediaId: id.nullable().optional(),
  })
  .refine((v) => Object.keys(v).length > 0, { message: 'nothing to change' });
export const jinglesSchema = z.object({
  areaId: z.string(),
  introMediaId: z.string().nullable(),
  outroMediaId: z.string().nullable(),
  updatedAt: z.string().nullable(),
});

export type CreateProgrammeInput = z.infer<typeof createProgrammeSchema>;
export type UpdateProgrammeInput = z.infer<typeof updateProgrammeSchema>;
export type ListProgrammesQuery = z.infer<typeof listProgrammesQuerySchema>;
export type UpdateJinglesInput = z.infer<typeof updateJinglesSchema>;
export type ProgrammeView = z.infer<typeof programmeSchema>;
export type ProgrammeSummary = z.infer<typeof programmeSummarySchema>;
export type RevisionView = z.infer<typeof revisionSchema>;
export type JinglesView = z.infer<typeof jinglesSchema>;
