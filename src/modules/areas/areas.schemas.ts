import { z } from 'zod';
import { AREA_LEVELS } from '../../db/schema/index.js';

export const areaLevelSchema = z.enum(AREA_LEVELS);
export const areaIdSchema = z.string().min(1).max(64);
const areaName = z.string().trim().min(1, 'must not be empty').max(200);

export const createAreaSchema = z.object({
  name: areaName.describe('Name as people write it, with tone marks: "Xã Hải Lăng"'),
  level: areaLevelSchema,
  parentId: areaIdSchema.optional().describe('Omit for a top-level area (admin only)'),
});

export const updateAreaSchema = z
  .object({
    name: areaName.optional(),
    level: areaLevelSchema.optional(),
    parentId: areaIdSchema.nullable().optional().describe('Move the area (and its subtree) under another'),
  })
  .refine((v) => Object.keys(v).length > 0, { message: 'nothing to change' });

export const areaParamsSchema = z.object({ id: areaIdSchema });

export const areaSchema = z.object({
  id: z.string(),
  name: z.string(),
  level: areaLevelSchema,
  parentId: z.string().nullable(),
  depth: z.number().int().describe('0 for a top-level area'),
  createdAt: z.string(),
  updatedAt: z.string(),
});

export const areaListSchema = z.object({
  items: z.array(areaSchema).describe('Depth-first: every area is followed by its sub-areas, by name'),
});

export type CreateAreaInput = z.infer<typeof createAreaSchema>;
export type UpdateAreaInput = z.infer<typeof updateAreaSchema>;
export type AreaView = z.infer<typeof areaSchema>;
