import { z } from 'zod';
import { AREA_LEVELS } from '../../db/schema/index.js';

export const areaLevelSchema = z.enum(AREA_LEVELS);
export const areaIdSchema = z.string().min(1).max(64);
const areaName = z.string().trim().min(1, 'must not be empty').max(200);

/**
 * The national administrative code (mã đơn vị hành chính): 2 digits for a province, 3 for a district, 5 for a
 * commune, as warning systems name them in CAP `<geocode>` VN-ADMIN. Leading zeros matter ("01" is Hà Nội), so
 * it is a string of digits, not a number.
 */
export const areaCodeSchema = z
  .string()
  .regex(/^\d{2,10}$/, 'must be 2 to 10 digits')
  .describe(
    'National administrative code, 2 to 10 digits (/^\\d{2,10}$/): 2 for a province, 3 for a district, ' +
      '5 for a commune, e.g. "79"; unique among areas',
  );

export const createAreaSchema = z.object({
  name: areaName.describe('Name as people write it, with tone marks: "Xã Hải Lăng"'),
  level: areaLevelSchema,
  parentId: areaIdSchema.optional().describe('Omit for a top-level area (admin only)'),
  code: areaCodeSchema.optional(),
});

export const updateAreaSchema = z
  .object({
    name: areaName.optional(),
    level: areaLevelSchema.optional(),
    parentId: areaIdSchema.nullable().optional().describe('Move the area (and its subtree) under another'),
    code: areaCodeSchema.nullable().optional().describe('null clears the code'),
  })
  .refine((v) => Object.keys(v).length > 0, { message: 'nothing to change' });

export const areaParamsSchema = z.object({ id: areaIdSchema });

export const listAreasQuerySchema = z.object({
  code: areaCodeSchema.optional().describe('Only the area with this code (none if it is outside your area)'),
});

export const areaSchema = z.object({
  id: z.string(),
  name: z.string(),
  level: areaLevelSchema,
  parentId: z.string().nullable(),
  code: z.string().nullable().describe('National administrative code, null when not set'),
  depth: z.number().int().describe('0 for a top-level area'),
  createdAt: z.string(),
  updatedAt: z.string(),
});

export const areaListSchema = z.object({
  items: z.array(areaSchema).describe('Depth-first: every area is followed by its sub-areas, by name'),
});

export type CreateAreaInput = z.infer<typeof createAreaSchema>;
export type UpdateAreaInput = z.infer<typeof updateAreaSchema>;
export type ListAreasQuery = z.infer<typeof listAreasQuerySchema>;
export type AreaView = z.infer<typeof areaSchema>;
