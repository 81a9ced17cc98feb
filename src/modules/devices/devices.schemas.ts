import { z } from 'zod';
import { DEVICE_KINDS, HEALTH_LEVELS } from '../../db/schema/index.js';
import { playingSchema } from '../../protocol/index.js';

export const deviceKindSchema = z.enum(DEVICE_KINDS);
const deviceName = z.string().trim().min(1, 'must not be empty').max(200);
const id = z.string().min(1).max(64);

export const createDeviceSchema = z.object({
  name: deviceName.describe('What people call it: "Cụm loa thôn Đông"'),
  kind: deviceKindSchema.describe('station: a commune head-end; cluster: a hamlet loudspeaker cluster'),
  areaId: id,
});

export const updateDeviceSchema = z
  .object({ name: deviceName.optional(), areaId: id.optional() })
  .refine((v) => Object.keys(v).length > 0, { message: 'nothing to change' });

export const deviceParamsSchema = z.object({ id });

const booleanQuery = z.enum(['true', 'false']).transform((v) => v === 'true');

export const healthLevelSchema = z.enum(HEALTH_LEVELS);

export const listDevicesQuerySchema = z.object({
  areaId: id.optional().describe('Only devices in this area and its sub-areas'),
  kind: deviceKindSchema.optional(),
  online: booleanQuery.optional(),
  health: healthLevelSchema.optional(),
  firmware: z.string().min(1).max(64).optional().describe('Exact firmware version'),
  silentForS: z.coerce
    .number()
    .int()
    .min(1)
    .optional()
    .describe('Not heard from for at least this many seconds'),
  sort: z
    .enum(['name', 'lastSeenAt', '-lastSeenAt'])
    .default('name')
    .describe('lastSeenAt: longest silent first'),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  offset: z.coerce.number().int().min(0).default(0),
});

export const deviceStateSchema = z.object({
  firmware: z.string().nullable(),
  volume: z.number().int().nullable(),
  playing: playingSchema.nullable(),
  reportedAt: z.string(),
});

export const deviceSchema = z.object({
  id: z.string().describe('Also the MQTT clientId and username'),
  name: z.string(),
  kind: deviceKindSchema,
  areaId: z.string(),
  online: z.boolean(),
  onlineSince: z.string().nullable().describe('When the device last came online or went offline'),
  lastSeenAt: z.string().nullable(),
  health: healthLevelSchema,
  healthReasons: z.array(z.string()),
  state: deviceStateSchema.nullable().describe('The latest state the device reported'),
  createdAt: z.string(),
  updatedAt: z.string(),
});

export const credentialsSchema = z.object({
  clientId: z.string(),
  username: z.string(),
  password: z.string().describe('Shown only once: store it in the device now'),
});

export const deviceWithCredentialsSchema = deviceSchema.extend({ credentials: credentialsSchema });

export const deviceListSchema = z.object({
  items: z.array(deviceSchema),
  total: z.number().int(),
  limit: z.number().int(),
  offset: z.number().int(),
});

export type CreateDeviceInput = z.infer<typeof createDeviceSchema>;
export type UpdateDeviceInput = z.infer<typeof updateDeviceSchema>;
export type ListDevicesQuery = z.infer<typeof listDevicesQuerySchema>;
export type DeviceView = z.infer<typeof deviceSchema>;
export type Credentials = z.infer<typeof credentialsSchema>;
