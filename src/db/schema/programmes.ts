import { sql } from 'drizzle-orm';
import {
  sqliteTable,
  text,
  integer,
  real,
  index,
  primaryKey,
  uniqueIndex,
  check,
} from 'drizzle-orm/sqlite-core';
import { areas } from './areas.js';
import { users } from './users.js';

/**
 * An uploaded recording. The upload (the original) and its device rendition (MP3, mono, 44.1 kHz, CBR,
 * loudness-normalised) are files in the content-addressed store under DATA_DIR/media, named by SHA-256:
 * rows share files, so the same bytes uploaded twice are stored once.
 */
export const media = sqliteTable(
  'media',
  {
    id: text('id').primaryKey(),
    /** Who may see and use it: this area's subtree and the areas below. Null: every area (admins' uploads). */
    areaId: text('area_id').references(() => areas.id, { onDelete: 'cascade' }),
    title: text('title').notNull(),
    /** Title folded for search (lower case, tone marks removed, đ → d). */
    titleSearch: text('title_search').notNull(),
    originalName: text('original_name'),
    /** What ffprobe found in the file, e.g. `mp3`, `wav`, `ogg/opus`, `m4a/aac`, `flac`. */
    format: text('format').notNull(),
    durationMs: integer('duration_ms').notNull(),
    sizeBytes: integer('size_bytes').notNull(),
    sha256: text('sha256').notNull(),
    /** Integrated loudness of the original (EBU R128); null when it is silent. */
    loudnessLufs: real('loudness_lufs'),
    renditionSha256: text('rendition_sha256').notNull(),
    renditionSizeBytes: integer('rendition_size_bytes').notNull(),
    renditionDurationMs: integer('rendition_duration_ms').notNull(),
    renditionLoudnessLufs: real('rendition_loudness_lufs'),
    /** The settings the rendition was made with, so a change of MEDIA_* settings can be detected. */
    renditionBitrateKbps: integer('rendition_bitrate_kbps').notNull(),
    renditionTargetLufs: real('rendition_target_lufs').notNull(),
    createdBy: text('created_by').references(() => users.id, { onDelete: 'set null' }),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [
    index('media_area_idx').on(t.areaId, t.createdAt),
    index('media_sha256_idx').on(t.sha256),
    index('media_rendition_idx').on(t.renditionSha256),
  ],
);

export const PROGRAMME_CATEGORIES = [
  'news',
  'announcement',
  'music',
  'agriculture',
  'health',
  'security',
  'other',
] as const;
export type ProgrammeCategory = (typeof PROGRAMME_CATEGORIES)[number];

export const PROGRAMME_STATUSES = ['draft', 'submitted', 'approved', 'rejected'] as const;
export type ProgrammeStatus = (typeof PROGRAMME_STATUSES)[number];

/**
 * What a commune airs. Its content lives in revisions: editing an approved programme makes a new draft
 * revision while the approved one keeps airing. The row carries the latest revision's title, category and
 * status for listing, and which revision airs. Deleting sets `deleted_at`: commands and playback logs keep
 * naming it.
 */
export const programmes = sqliteTable(
  'programmes',
  {
    id: text('id').primaryKey(),
    areaId: text('area_id')
      .notNull()
      .references(() => areas.id),
    kind: text('kind', { enum: ['bulletin', 'relay'] }).notNull(),
    title: text('title').notNull(),
    titleSearch: text('title_search').notNull(),
    category: text('category', { enum: PROGRAMME_CATEGORIES }).notNull(),
    status: text('status', { enum: PROGRAMME_STATUSES }).notNull(),
    /** The latest revision (what an editor sees). */
    currentRevisionId: text('current_revision_id').notNull(),
    /** The approved revision that airs; null until a first approval. */
    approvedRevisionId: text('approved_revision_id'),
    createdBy: text('created_by').references(() => users.id, { onDelete: 'set null' }),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
    updatedAt: integer('updated_at', { mode: 'timestamp_ms' }).notNull(),
    deletedAt: integer('deleted_at', { mode: 'timestamp_ms' }),
  },
  (t) => [
    index('programmes_area_idx').on(t.areaId, t.updatedAt),
    index('programmes_status_idx').on(t.status),
  ],
);

export const programmeRevisions = sqliteTable(
  'programme_revisions',
  {
    id: text('id').primaryKey(),
    programmeId: text('programme_id')
      .notNull()
      .references(() => programmes.id, { onDelete: 'cascade' }),
    /** 1, 2, 3… per programme. */
    number: integer('number').notNull(),
    title: text('title').notNull(),
    category: text('category', { enum: PROGRAMME_CATEGORIES }).notNull(),
    /** `{ segments: [...] }` or `{ relay: { url, name } }`, as the API took it. */
    content: text('content', { mode: 'json' }).notNull(),
    status: text('status', { enum: PROGRAMME_STATUSES }).notNull(),
    /** The rendered device-format file of a bulletin; null for relays. */
    renditionSha256: text('rendition_sha256'),
    sizeBytes: integer('size_bytes'),
    durationMs: integer('duration_ms'),
    loudnessLufs: real('loudness_lufs'),
    /** For relays: what probing the stream found when it was saved (a warning, never a refusal). */
    relayProbe: text('relay_probe', { mode: 'json' }),
    createdBy: text('created_by').references(() => users.id, { onDelete: 'set null' }),
    createdAt: integer('created_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [uniqueIndex('programme_revisions_number_idx').on(t.programmeId, t.number)],
);

/** Which media a revision's segments use: a media item in use cannot be deleted. */
export const programmeMedia = sqliteTable(
  'programme_media',
  {
    revisionId: text('revision_id')
      .notNull()
      .references(() => programmeRevisions.id, { onDelete: 'cascade' }),
    mediaId: text('media_id')
      .notNull()
      .references(() => media.id),
  },
  (t) => [
    primaryKey({ columns: [t.revisionId, t.mediaId] }),
    index('programme_media_media_idx').on(t.mediaId),
  ],
);

export const PROGRAMME_ACTIONS = [
  'created',
  'edited',
  'submitted',
  'approved',
  'rejected',
  'deleted',
] as const;

/** The programme's history: every transition, who made it and why. */
export const programmeEvents = sqliteTable(
  'programme_events',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    programmeId: text('programme_id')
      .notNull()
      .references(() => programmes.id, { onDelete: 'cascade' }),
    revisionNumber: integer('revision_number').notNull(),
    action: text('action', { enum: PROGRAMME_ACTIONS }).notNull(),
    actorId: text('actor_id').references(() => users.id, { onDelete: 'set null' }),
    /** Kept by name: the history still says who after the account is deleted. */
    actorName: text('actor_name').notNull(),
    note: text('note'),
    at: integer('at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [index('programme_events_programme_idx').on(t.programmeId, t.id)],
);

/** An area's intro and outro jingles, framing its bulletins when a bulletin asks for them. */
export const areaJingles = sqliteTable(
  'area_jingles',
  {
    areaId: text('area_id')
      .primaryKey()
      .references(() => areas.id, { onDelete: 'cascade' }),
    introMediaId: text('intro_media_id').references(() => media.id),
    outroMediaId: text('outro_media_id').references(() => media.id),
    updatedBy: text('updated_by').references(() => users.id, { onDelete: 'set null' }),
    updatedAt: integer('updated_at', { mode: 'timestamp_ms' }).notNull(),
  },
  (t) => [
    index('area_jingles_intro_idx').on(t.introMediaId),
    index('area_jingles_outro_idx').on(t.outroMediaId),
  ],
);

/** Admins' additions to the built-in abbreviation dictionary of the text-to-speech normaliser. */
export const ttsAbbreviations = sqliteTable(
  'tts_abbreviations',
  {
    /** As written in announcements, case-sensitive: `UBND`, `km/h`. */
    abbreviation: text('abbreviation').primaryKey(),
    expansion: text('expansion').notNull(),
    updatedBy: text('updated_by').references(() => users.id, { onDelete: 'set null' }),
    updatedAt: integer('updated_at', { mode: 'timestamp_ms' }).notNull(),
  },
  () => [check('tts_abbreviations_not_empty', sql`length("abbreviation") > 0 AND length("expansion") > 0`)],
);

export type MediaRow = typeof media.$inferSelect;
export type ProgrammeRow = typeof programmes.$inferSelect;
export type ProgrammeRevisionRow = typeof programmeRevisions.$inferSelect;
