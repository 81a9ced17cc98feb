/** OpenAPI 3 generated from the routes' zod schemas, with Swagger UI at /docs. */
import fp from 'fastify-plugin';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';

export default fp<{ publicUrl: string | undefined }>(
  async (app, options) => {
    await app.register(swagger, {
      openapi: {
        openapi: '3.0.3',
        info: {
          title: 'Loa API',
          version: '1',
          description:
            'Broadcast scheduling and control for commune loudspeaker networks. Log in with POST /api/v1/auth/login ' +
            'and send the token as "Authorization: Bearer <token>". Errors are RFC 9457 problem+json (docs/errors.md).',
        },
        servers: options.publicUrl ? [{ url: options.publicUrl }] : [],
        components: {
          securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
        },
        security: [{ bearer: [] }],
      },
      transform: jsonSchemaTransform,
    });
    await app.register(swaggerUi, { routePrefix: '/docs' });
  },
  { name: 'openapi', fastify: '5.x' },
);
