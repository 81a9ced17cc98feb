import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  createDeviceSchema,
  credentialsSchema,
  deviceListSchema,
  deviceParamsSchema,
  deviceSchema,
  deviceWithCredentialsSchema,
  listDevicesQuerySchema,
  updateDeviceSchema,
} from './devices.schemas.js';

const MANAGERS = ['admin', 'district_operator', 'technician'] as const;

const routes: FastifyPluginAsyncZod = async (app) => {
  const devices = app.services.devices;

  app.post(
    '/devices',
    {
      schema: {
        tags: ['devices'],
        summary:
          'Register a station or loudspeaker cluster; the answer holds its MQTT credentials (shown once)',
        body: createDeviceSchema,
        response: { 201: deviceWithCredentialsSchema },
      },
      preHandler: app.requireRole(...MANAGERS),
    },
    async (request, reply) => reply.status(201).send(devices.create(request.actor, request.body)),
  );

  app.get(
    '/devices',
    {
      schema: {
        tags: ['devices'],
        summary: 'Devices in your area, filtered and paginated, by name',
        querystring: listDevicesQuerySchema,
        response: { 200: deviceListSchema },
      },
    },
    async (request) => devices.list(request.actor, request.query),
  );

  app.get(
    '/devices/:id',
    {
      schema: {
        tags: ['devices'],
        summary: 'One device, with presence and its latest reported state',
        params: deviceParamsSchema,
        response: { 200: deviceSchema },
      },
    },
    async (request) => devices.get(request.actor, request.params.id),
  );

  app.patch(
    '/devices/:id',
    {
      schema: {
        tags: ['devices'],
        summary: 'Rename, move to another area, place (lat/lon) or flag for drills a device',
        params: deviceParamsSchema,
        body: updateDeviceSchema,
        response: { 200: deviceSchema },
      },
      preHandler: app.requireRole(...MANAGERS),
    },
    async (request) => devices.update(request.actor, request.params.id, request.body),
  );

  app.delete(
    '/devices/:id',
    {
      schema: {
        tags: ['devices'],
        summary: 'Delete a device; its connection is closed and its credentials stop working',
        params: deviceParamsSchema,
        response: { 204: z.undefined() },
      },
      preHandler: app.requireRole(...MANAGERS),
    },
    async (request, reply) => {
      devices.delete(request.actor, request.params.id);
      return reply.status(204).send();
    },
  );

  app.post(
    '/devices/:id/credentials',
    {
      schema: {
        tags: ['devices'],
        summary: 'Rotate the device secret: the old one stops working and the current session is closed',
        params: deviceParamsSchema,
        response: { 200: credentialsSchema },
      },
      preHandler: app.requireRole(...MANAGERS),
    },
    async (request) => devices.rotateCredentials(request.actor, request.params.id),
  );
};

export default routes;
