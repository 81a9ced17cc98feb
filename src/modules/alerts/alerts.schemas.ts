import { z } from 'zod';
import { ALERT_KINDS, ALERT_STATES } from '../../db/schema/index.js';

const id = z.string().min(1).max(64);

export const listAlertsQuerySchema = z.object({
  state: z.enum(ALERT_STATES).optional().describe('Default: both'),
  areaId: id.optional().describe('Only devices in this area and below'),
  deviceId: id.optional(),
  limit: z.coerce.number().int().min(1).max(500).default(100),
  offset: z.coerce.number().int().min(0).default(0),
});

export const alertParamsSchema = z.object({ id: z.coerce.number().int().min(1) });

export const acknowledgeSchema = z.object({
  note: z.string().trim().max(2_000).optional().describe('What the technician found or will do'),
});

export const alertSchema = z.object({
  id: z.number().int(),
  deviceId: z.string(),
  deviceName: z.string().nullable().describe('null when the device has since been deleted'),
  areaId: z.string().nullable(),
  kind: z
    .enum(ALERT_KINDS)
    .describe('offline: gone too long; fault: a fault other than offline; degraded: degraded too long'),
  state: z.enum(ALERT_STATES),
  reasons: z.array(z.string()),
  openedAt: z.string(),
  resolvedAt: z.string().nullable(),
  acknowledgedAt: z.string().nullable(),
  acknowledgedBy: z.string().nullable(),
  note: z.string().nullable(),
});

export const alertListSchema = z.object({
  items: z.array(alertSchema),
  total: z.number().int(),
  limit: z.number().int(),
  offset: z.number().int(),
});

export type AlertView = z.infer<typeof alertSchema>;
export type ListAlertsQuery = z.infer<typeof listAlertsQuerySchema>;
