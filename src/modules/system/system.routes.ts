import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { sqliteOf } from '../../db/index.js';
import { AppError, toProblem } from '../../errors.js';
import { checkBrokerListening, checkDatabaseWritable, type CheckResult } from './readiness.js';

const checkSchema = z.string().describe('`ok`, or why this part is not ready');
const checksSchema = z.object({ database: checkSchema, broker: checkSchema });
// Information, not a readiness check: an old or failed backup must not take the server out of service.
const backupSchema = z
  .object({
    lastSuccessAt: z.iso.datetime().nullable().describe('the newest good scheduled backup, or null if none'),
    ageSeconds: z.number().int().nullable(),
    lastError: z
      .string()
      .nullable()
      .describe('why the latest scheduled backup failed; null once one succeeds'),
  })
  .describe('Scheduled database backups (BACKUP_EVERY_MIN, docs/operations.md)');
// Information too: nothing a restart or another replica would fix. Public in every TLS handshake anyway.
const tlsSchema = z
  .object({
    expiresAt: z.iso.datetime(),
    fingerprint: z.string().describe('SHA-256 of the certificate in use, as openssl prints it'),
  })
  .optional()
  .describe('The TLS certificate in use (TLS_CERT_FILE, docs/operations.md); absent when TLS is off');

/**
 * Liveness (`/healthz`: the process answers) and readiness (`/readyz`: it can do its job — the database takes
 * writes and devices can connect) for load balancers, orchestrators and the Docker HEALTHCHECK. The two
 * endpoints without authentication: they reveal nothing but the state of the service.
 */
const routes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/healthz',
    {
      config: { public: true },
      schema: {
        tags: ['health'],
        summary: 'Liveness probe (no authentication)',
        security: [],
        response: { 200: z.object({ status: z.literal('ok') }) },
      },
    },
    async () => ({ status: 'ok' as const }),
  );

  const sqlite = sqliteOf(app.db);

  app.get(
    '/readyz',
    {
      config: { public: true },
      schema: {
        tags: ['health'],
        summary: 'Readiness probe (no authentication): database writable and MQTT broker listening',
        description:
          '200 when ready; otherwise 503 problem+json with code `not_ready` and `checks` saying what is not ready.',
        security: [],
        response: {
          200: z.object({
            status: z.literal('ready'),
            checks: checksSchema,
            backup: backupSchema,
            tls: tlsSchema,
          }),
          503: z.object({
            type: z.string(),
            title: z.string(),
            status: z.literal(503),
            detail: z.string(),
            instance: z.string().optional(),
            code: z.literal('not_ready'),
            checks: checksSchema,
            backup: backupSchema,
            tls: tlsSchema,
          }),
        },
      },
    },
    async (request, reply) => {
      const results: Record<'database' | 'broker', CheckResult> = {
        database: checkDatabaseWritable(sqlite),
        broker: checkBrokerListening(app.broker),
      };
      const checks = {
        database: results.database.ok ? 'ok' : results.database.reason,
        broker: results.broker.ok ? 'ok' : results.broker.reason,
      };
      const backup = app.backups.report();
      const tls = app.tls
        ? { expiresAt: app.tls.expiresAt.toISOString(), fingerprint: app.tls.info.fingerprint }
        : undefined;
      const failing = (Object.keys(results) as (keyof typeof results)[]).filter((k) => !results[k].ok);
      if (failing.length === 0) return { status: 'ready' as const, checks, backup, tls };

      request.log.warn({ checks }, 'not ready');
      const problem = toProblem(
        new AppError('not_ready', `Not ready: ${failing.map((k) => `${k} ${checks[k]}`).join('; ')}`),
        request.url.split('?')[0],
      );
      return reply
        .status(503)
        .type('application/problem+json; charset=utf-8')
        .send({
          ...problem,
          status: 503 as const,
          code: 'not_ready' as const,
          detail: problem.detail ?? '',
          checks,
          backup,
          tls,
        });
    },
  );
};

export default routes;
