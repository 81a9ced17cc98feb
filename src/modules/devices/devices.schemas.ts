import { z } from 'zod';
import { DEVICE_KINDS, HEALTH_LEVELS } from '../../db/schema/index.js';
import { playingSchema } from '../../protocol/index.js';

export const deviceKindSchema = z.enum(DEVICE_KINDS);
const deviceName = z.string().trim().min(1, 'must not be empty').max(200);
const id = z.string().min(1).max(64);

const lat = z.number().min(-90).max(90).describe('Latitude in degrees, WGS84');
const lon = z.number().min(-180).max(180).describe('Longitude in degrees, WGS84');

/**
 * A position is a point or nothing: half of one would place the loudspeakers on a line across the globe for
 * the alerts that target a polygon or a circle. So `lat` and `lon` come together, both numbers or both null
 * (which clears the position); the error names the field that breaks the pair.
 */
function positionPaired(v: { lat?: number | null; lon?: number | null }, ctx: z.RefinementCtx): void {
  if (v.lat === undefined && v.lon === undefined) return;
  if (v.lat === undefined || v.lon === undefined) {
    const missing = v.lat === undefined ? 'lat' : 'lon';
    ctx.addIssue({ code: 'custom', path: [missing], message: 'lat and lon are given together' });
  } else if ((v.lat === null) !== (v.lon === null)) {
    const nulled = v.lat === null ? 'lat' : 'lon';
    ctx.addIssue({ code: 'custom', path: [nulled], message: 'lat and lon are both numbers or both null' });
  }
}

const drillParticipant = z
  .boolean()
  .describe('Takes part in drills: an exercise emergency plays only on these devices');

export const createDeviceSchema = z
  .object({
    name: deviceName.describe('What people call it: "Cụm loa thôn Đông"'),
    kind: deviceKindSchema.describe('station: a commune head-end; cluster: a hamlet loudspeaker cluster'),
    areaId: id,
    lat: lat.optional().describe('Latitude in degrees (WGS84), given with lon'),
    lon: lon.optional().describe('Longitude in degrees (WGS84), given with lat'),
    drillParticipant: drillParticipant.default(false),
  })
  .superRefine(positionPaired);

export const updateDeviceSchema = z
  .object({
    name: deviceName.optional(),
    areaId: id.optional(),
    lat: lat.nullable().optional().describe('Latitude (WGS84), given with lon; null with lon null clears'),
    lon: lon.nullable().optional().describe('Longitude (WGS84), given with lat; null with lat null clears'),
    drillParticipant: drillParticipant.optional(),
  })
  .refine((v) => Object.keys(v).length > 0, { message: 'nothing to change' })
  .superRefine(positionPaired);

export const deviceParamsSchema = z.object({ id });

const booleanQuery = z.enum(['true', 'false']).transform((v) => v === 'true');

export const healthLevelSchema = z.enum(HEALTH_LEVELS);

export const listDevicesQuerySchema = z.object({
  areaId: id.optional().describe('Only devices in this area and its sub-areas'),
  kind: deviceKindSchema.optional(),
  online: booleanQuery.optional(),
  health: healthLevelSchema.optional(),
  firmware: z.string().min(1).max(64).optional().describe('Exact firmware version'),
  drillParticipant: booleanQuery.optional().describe('true: only devices that take part in drills'),
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
  lat: z.number().nullable().describe('Where the loudspeakers stand (WGS84), null when not set'),
  lon: z.number().nullable(),
  drillParticipant: z.boolean(),
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
