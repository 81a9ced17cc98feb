import { z } from 'zod';
import { DELIVERY_STATUSES } from '../../db/schema/index.js';
import {
  identifyParamsSchema,
  mediaSourceSchema,
  prioritySchema,
  streamSourceSchema,
} from '../../protocol/index.js';

const id = z.string().min(1).max(64);
const volumeLevel = z.number().int().min(0).max(100);

/** Default time a command stays deliverable when the caller gives no expiresInS (docs/commands.md). */
export const DEFAULT_EXPIRY_S = {
  play: 600,
  stop: 300,
  volume: 300,
  reboot: 60,
  ping: 60,
  identify: 60,
} as const;

/**
 * An approved programme, by id: the server fills in the device source (a signed download link to its
 * rendered file, or its relay's stream). API only: devices never see this kind (src/protocol stays as is).
 */
export const programmeSourceSchema = z.object({
  kind: z.literal('programme'),
  programmeId: id,
});

/** What a play may name: a programme, or (admins, tests) an explicit media file or stream. */
const apiPlaySourceSchema = z.discriminatedUnion('kind', [
  programmeSourceSchema,
  mediaSourceSchema,
  streamSourceSchema,
]);

const targetsSchema = z
  .object({
    deviceIds: z.array(id).max(10_000).optional(),
    areaIds: z.array(id).max(1_000).optional().describe('Every device in each area and its sub-areas'),
  })
  .refine((t) => (t.deviceIds?.length ?? 0) + (t.areaIds?.length ?? 0) > 0, {
    message: 'name at least one device or area',
  });

const common = {
  targets: targetsSchema,
  priority: prioritySchema
    .default('normal')
    .describe(
      'normal < priority < emergency, for stop and volume as for play: a device refuses a command below the ' +
        'priority of what it plays (lower_priority), so only a stop at emergency ends an emergency broadcast. ' +
        'emergency: admin and district_operator only. Defaults to normal, also for them.',
    ),
  expiresInS: z
    .number()
    .int()
    .min(1)
    .max(7 * 86_400)
    .optional()
    .describe(
      'How long the command stays deliverable; defaults: play 600 s, stop and volume 300 s, maintenance 60 s',
    ),
};

export const createCommandSchema = z.discriminatedUnion('type', [
  z.object({
    ...common,
    type: z.literal('play'),
    params: z.object({
      source: apiPlaySourceSchema,
      offsetMs: z.number().int().min(0).optional(),
      volume: volumeLevel.optional(),
      repeat: z.number().int().min(1).max(100).optional(),
    }),
  }),
  z.object({
    ...common,
    type: z.literal('stop'),
    params: z.object({ sessionId: id.optional().describe('Omit to stop whatever plays') }).default({}),
  }),
  z.object({ ...common, type: z.literal('volume'), params: z.object({ level: volumeLevel }) }),
  z.object({ ...common, type: z.literal('reboot'), params: z.object({}).default({}) }),
  z.object({ ...common, type: z.literal('ping'), params: z.object({}).default({}) }),
  z.object({ ...common, type: z.literal('identify'), params: identifyParamsSchema.default({}) }),
]);

export const commandParamsSchema = z.object({ id });

export const deliveryStatusSchema = z.enum(DELIVERY_STATUSES);

export const getCommandQuerySchema = z.object({
  status: deliveryStatusSchema.optional().describe('Only list devices in this status (the counts cover all)'),
});

export const listCommandsQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(200).default(50),
  offset: z.coerce.number().int().min(0).default(0),
});

export const commandAcceptedSchema = z.object({
  id: z.string(),
  targets: z.number().int().describe('Devices the command is addressed to'),
  sent: z.number().int().describe('Devices it was sent to at once; the rest get it when they reconnect'),
  expiresAt: z.string(),
});

const commandSummary = {
  id: z.string(),
  type: z.string(),
  priority: prioritySchema,
  params: z.record(z.string(), z.unknown()),
  createdBy: z
    .object({ id: z.string(), username: z.string() })
    .nullable()
    .describe('null for commands the server sent itself, or whose author has been deleted'),
  createdAt: z.string(),
  expiresAt: z.string(),
  targets: z.number().int(),
};

export const commandSummarySchema = z.object(commandSummary);

export const commandDetailSchema = z.object({
  ...commandSummary,
  counts: z.record(deliveryStatusSchema, z.number().int()),
  devices: z.array(
    z.object({
      deviceId: z.string(),
      deviceName: z.string().nullable().describe('null when the device has since been deleted'),
      status: deliveryStatusSchema,
      reason: z.string().optional(),
      rttMs: z
        .number()
        .int()
        .optional()
        .describe('From sending to the final answer, measured by the server; for ping, the round trip'),
      updatedAt: z.string(),
    }),
  ),
});

export const commandListSchema = z.object({
  items: z.array(commandSummarySchema),
  limit: z.number().int(),
  offset: z.number().int(),
});

export type CreateCommandInput = z.infer<typeof createCommandSchema>;
export type CommandSummary = z.infer<typeof commandSummarySchema>;
export type CommandDetail = z.infer<typeof commandDetailSchema>;
