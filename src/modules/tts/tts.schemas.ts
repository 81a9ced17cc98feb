import { z } from 'zod';
import { PITCH, RATE, VOICES } from './engines.js';

/** One text segment: a few minutes of speech, so that one request cannot keep the engine busy for long. */
export const MAX_SEGMENT_CHARS = 5_000;
/** A preview is for trying a voice: at most 60 s of audio is returned anyway. */
export const MAX_PREVIEW_CHARS = 1_000;

export const voiceSchema = z
  .enum(VOICES)
  .describe('eSpeak NG Vietnamese voice: vi (Northern), vi-vn-x-central (Huế), vi-vn-x-south (Southern)');
export const rateSchema = z
  .number()
  .int()
  .min(RATE.min)
  .max(RATE.max)
  .describe(`Words per minute, ${RATE.min}–${RATE.max} (default ${RATE.default})`);
export const pitchSchema = z
  .number()
  .int()
  .min(PITCH.min)
  .max(PITCH.max)
  .describe(`Pitch, ${PITCH.min}–${PITCH.max} (default ${PITCH.default})`);

/** Text to be spoken, with tone marks: at least one letter or digit, within `max` characters. */
export const spokenTextSchema = (max: number) =>
  z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .refine((t) => /[\p{L}\p{N}]/u.test(t), 'must contain something to read');

/** For programme segments (PROGRAMMES reuses these): `{ text, voice?, rate?, pitch? }`. */
export const speechSegmentFields = {
  text: spokenTextSchema(MAX_SEGMENT_CHARS),
  voice: voiceSchema.optional(),
  rate: rateSchema.optional(),
  pitch: pitchSchema.optional(),
};

export const previewBodySchema = z.object({
  ...speechSegmentFields,
  text: spokenTextSchema(MAX_PREVIEW_CHARS).describe(
    'Vietnamese text with tone marks: "Ủy ban nhân dân xã thông báo: ngày 25/11/2026 có bão số 3."',
  ),
});

export const normaliseBodySchema = z.object({
  text: z.string().max(MAX_SEGMENT_CHARS, `must be at most ${MAX_SEGMENT_CHARS} characters`),
});
export const normaliseResultSchema = z.object({
  text: z.string().describe('What the engine will read: numbers, dates, phones and abbreviations in words'),
});

export const abbreviationKeySchema = z
  .string()
  .min(1, 'must not be empty')
  .max(32)
  .refine((a) => a === a.trim(), 'must not start or end with a space')
  .refine((a) => /[\p{L}\p{N}]/u.test(a), 'must contain a letter or digit')
  .describe('As written, case-sensitive: UBND, km/h (URL-encoded in the path: km%2Fh)');

export const abbreviationParamsSchema = z.object({ abbreviation: abbreviationKeySchema });
export const setAbbreviationSchema = z.object({
  expansion: z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(200)
    .describe('What is read instead, with tone marks: "Ủy ban nhân dân"'),
});

export const abbreviationSchema = z.object({
  abbreviation: z.string(),
  expansion: z.string().describe('What is read: the custom entry if there is one, else the built-in one'),
  source: z.enum(['built_in', 'custom']),
  builtInExpansion: z
    .string()
    .nullable()
    .describe('The built-in reading, also when a custom entry overrides it; null for custom-only entries'),
  updatedAt: z.string().nullable(),
  updatedBy: z.string().nullable(),
});
export const abbreviationListSchema = z.object({ items: z.array(abbreviationSchema) });

export type PreviewInput = z.infer<typeof previewBodySchema>;
export type AbbreviationView = z.infer<typeof abbreviationSchema>;
