import { z } from 'zod';

const id = z.string().min(1).max(64);

/** Multipart text fields of an upload (the file itself is the `file` part, streamed, not in this schema). */
export const uploadFieldsSchema = z.object({
  title: z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(200)
    // A title is one line of text: no line breaks, tabs or other control characters.
    .regex(/^\P{Cc}*$/u, 'must not contain control characters (line breaks, tabs, …)')
    .optional()
    .describe('Default: the file name without its extension'),
  areaId: id
    .optional()
    .describe("Who may use it: this area and the areas below. Default: the uploader's area"),
});

export const mediaParamsSchema = z.object({ id });

export const listMediaQuerySchema = z.object({
  q: z
    .string()
    .trim()
    .min(1)
    .max(200)
    .optional()
    .describe('Words of the title, with or without tone marks ("tiem phong" finds "Tiêm phòng")'),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  offset: z.coerce.number().int().min(0).default(0),
});

export const renditionSchema = z.object({
  sha256: z.string(),
  sizeBytes: z.number().int(),
  durationMs: z.number().int(),
  loudnessLufs: z.number().nullable(),
  bitrateKbps: z.number().int(),
});

export const mediaSchema = z.object({
  id: z.string(),
  title: z.string(),
  originalName: z.string().nullable().describe('The uploaded file name, as the client sent it'),
  format: z.string().describe('What the file really is: mp3, wav, ogg/vorbis, ogg/opus, m4a/aac, flac'),
  durationMs: z.number().int(),
  sizeBytes: z.number().int(),
  sha256: z.string().describe('Of the original file'),
  loudnessLufs: z
    .number()
    .nullable()
    .describe('Integrated loudness of the original (EBU R128); null: silent'),
  createdAt: z.string(),
  createdBy: z.object({ id: z.string(), username: z.string() }).nullable(),
  areaId: z.string().nullable().describe('null: usable in every area'),
  rendition: renditionSchema.describe('The device format (MP3 mono 44.1 kHz CBR, loudness-normalised)'),
});

export const mediaListSchema = z.object({
  items: z.array(mediaSchema),
  total: z.number().int(),
  limit: z.number().int(),
  offset: z.number().int(),
});

export type UploadFields = z.infer<typeof uploadFieldsSchema>;
export type ListMediaQuery = z.infer<typeof listMediaQuerySchema>;
export type MediaView = z.infer<typeof mediaSchema>;
