/**
 * buildApp(config) → a ready-to-listen Fastify instance holding the API, the embedded MQTT broker and
 * the database. No I/O at import time; the process itself (signals, listen) belongs to server.ts.
 *
 * A table of contents: the infrastructure plugins, then the domain modules (src/modules/module.ts says
 * what a module is), then the routes.
 */
import { randomUUID } from 'node:crypto';
import type { Server as TlsServer } from 'node:tls';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Config } from './config.js';
import { PeriodicJobs, systemClock, type Clock } from './lib/clock.js';
import { ServerCertificate, TLS_SERVER_OPTIONS, trackHandshakes } from './lib/tls.js';
import type { ModuleOptions, Services } from './modules/module.js';
import authPlugin from './plugins/auth.js';
import brokerPlugin from './plugins/broker.js';
import dbPlugin from './plugins/db.js';
import errorsPlugin, { clientErrorHandler, frameworkErrors, MAX_PARAM_LENGTH } from './plugins/errors.js';
import idempotencyPlugin from './plugins/idempotency.js';
import inputPlugin from './plugins/input.js';
import metricsPlugin from './plugins/metrics.js';
import openapiPlugin from './plugins/openapi.js';
import deviceGatewayModule from './gateway/device-gateway.module.js';
import alertsModule from './modules/alerts/alerts.module.js';
import alertsRoutes from './modules/alerts/alerts.routes.js';
import areasModule from './modules/areas/areas.module.js';
import areasRoutes from './modules/areas/areas.routes.js';
import auditModule from './modules/audit/audit.module.js';
import auditRoutes from './modules/audit/audit.routes.js';
import authModule from './modules/auth/auth.module.js';
import authRoutes from './modules/auth/auth.routes.js';
import commandsModule from './modules/commands/commands.module.js';
import commandsRoutes from './modules/commands/commands.routes.js';
import devicesModule from './modules/devices/devices.module.js';
import devicesRoutes from './modules/devices/devices.routes.js';
import emergenciesModule from './modules/emergencies/emergencies.module.js';
import emergenciesRoutes from './modules/emergencies/emergencies.routes.js';
import capRoutes from './modules/emergencies/cap.routes.js';
import warningSourcesRoutes from './modules/emergencies/sources.routes.js';
import healthModule from './modules/health/health.module.js';
import healthRoutes from './modules/health/health.routes.js';
import mediaModule from './modules/media/media.module.js';
import mediaRoutes, { deviceDownloadRoutes, redactedRequest } from './modules/media/media.routes.js';
import playbackModule from './modules/playback/playback.module.js';
import playbackRoutes from './modules/playback/playback.routes.js';
import programmesModule from './modules/programmes/programmes.module.js';
import programmesRoutes from './modules/programmes/programmes.routes.js';
import dispatcherModule from './modules/schedules/dispatcher.module.js';
import schedulesModule from './modules/schedules/schedules.module.js';
import calendarRoutes from './modules/schedules/calendar.routes.js';
import schedulesRoutes from './modules/schedules/schedules.routes.js';
import backupsModule from './modules/system/backups.js';
import retentionModule from './modules/system/retention.js';
import systemRoutes from './modules/system/system.routes.js';
import ttsModule from './modules/tts/tts.module.js';
import ttsRoutes from './modules/tts/tts.routes.js';
import usersModule from './modules/users/users.module.js';
import usersRoutes from './modules/users/users.routes.js';

export type { Services };

export interface AppOptions {
  config: Config;
  /** Tests pass a controllable clock; everything time-dependent reads it. */
  clock?: Clock;
  /** Logger options (level, stream, transport); the redactions below are added whatever is given. */
  logger?: Exclude<FastifyServerOptions['logger'], boolean | undefined>;
  /** How often expired command deliveries are closed. */
  expirySweepMs?: number;
}

/**
 * How every request is logged: as Fastify does, but with a download link's signature blanked out, whatever
 * the route or method (a signature in a log is a working link for whoever reads it).
 */
export const LOG_SERIALIZERS = { req: redactedRequest };

/** Never logged, whoever builds the logger (server.ts passes its own options). */
export const REDACT = [
  'req.headers.authorization',
  '*.password',
  '*.currentPassword',
  '*.newPassword',
  'body.password',
];

/**
 * In dependency order (each module's plugin declares what it needs, and Fastify checks it). Media and
 * text-to-speech come before health and devices: a server that lacks its audio tools or speech engine
 * fails at start-up before it writes anything (health's restart records, devices' sort keys).
 */
const MODULES = [
  auditModule,
  areasModule,
  usersModule,
  authModule,
  mediaModule,
  ttsModule,
  healthModule,
  devicesModule,
  // Before commands: every play a command starts opens its playback log records in the same transaction.
  playbackModule,
  commandsModule,
  alertsModule,
  programmesModule,
  dispatcherModule,
  schedulesModule,
  emergenciesModule,
  deviceGatewayModule,
  backupsModule,
  retentionModule,
];

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { config, expirySweepMs } = options;
  const clock = options.clock ?? systemClock;
  // Read before the server exists (HTTPS needs it at creation); a missing or broken pair stops the start.
  const certificate = config.tls ? ServerCertificate.load(config.tls) : null;
  // A socket that sends no complete request headers in time (nothing at all, or a slowloris trickle)
  // is answered 408 and closed. Node counts from the connection's opening (later, from a request's
  // first byte) and looks every connectionsCheckingInterval (default 30 s). An upgraded WebSocket
  // leaves the HTTP parser and is never cut by this: MQTT keepalive is up to 120 s.
  const httpTimeouts = { headersTimeout: config.http.headersTimeoutMs, connectionsCheckingInterval: 1_000 };

  const app = Fastify({
    logger: {
      level: config.log.level,
      ...options.logger,
      redact: REDACT,
      serializers: { ...options.logger?.serializers, ...LOG_SERIALIZERS },
    },
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.-]{1,128}$/.test(given) ? given : randomUUID();
    },
    bodyLimit: 1024 * 1024,
    // Errors raised before a route is chosen, or before there is a request at all, are problem+json too.
    frameworkErrors,
    clientErrorHandler,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    trustProxy: config.http.trustProxy,
    http: httpTimeouts,
    // With a certificate: HTTPS, and /mqtt is WSS. Fastify ignores `http` then, so the timeouts go here too,
    // and a TLS handshake gets as long as the request headers that would follow it.
    ...(certificate && {
      https: {
        ...certificate.pair,
        ...TLS_SERVER_OPTIONS,
        ...httpTimeouts,
        handshakeTimeout: config.http.headersTimeoutMs,
      },
    }),
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.addHook('onSend', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });

  await app.register(errorsPlugin);
  await app.register(inputPlugin);
  // First, so that its timing hook sees every route. Its sources are read at scrape time only.
  await app.register(metricsPlugin, {
    token: config.metricsToken,
    mqttConnections: () => app.broker.onlineCount,
    devicesByTopArea: () => app.services.health.countByTopArea(),
    ...(certificate && { tlsCertificateExpiry: () => certificate.expiresAt }),
    alertWebhookEvents: () => app.services.alerts.webhookEvents(),
  });
  await app.register(dbPlugin, { file: config.databaseFile });
  // Before the routes: it adds the Idempotency-Key header to the schema of each route that honours it.
  await app.register(idempotencyPlugin, { db: app.db, clock });
  // onClose hooks run in reverse order of registration: the broker closes (no more acks arrive), then
  // queued writes are flushed (this hook), then the database closes.
  const flushes: (() => void)[] = [];
  app.addHook('onClose', async () => {
    for (const flush of flushes) flush();
  });
  await app.register(brokerPlugin, {
    ...config.mqtt,
    tls: certificate?.pair ?? null,
    clock,
    onRefused: (reason) => app.metrics.mqttConnectionRefused(reason),
    onSubscriptionRefused: () => app.metrics.mqttSubscriptionRefused(),
    // Bound late: devices only connect once the app is listening, when the services exist.
    authenticate: (deviceId, secret) => app.services.devices.authenticate(deviceId, secret),
  });

  // Filled by the modules, each adding its service.
  app.decorate('services', {} as Services);
  const jobs = new PeriodicJobs(clock, app.log);
  const moduleOptions: ModuleOptions = {
    config,
    clock,
    jobs,
    flushOnClose: (flush) => flushes.unshift(flush),
    expirySweepMs,
  };
  for (const plugin of MODULES) await app.register(plugin, moduleOptions);
  app.decorate('tls', certificate);
  if (certificate) wireCertificate(app, certificate, jobs, clock);
  // After the modules, so that at shutdown it runs before their onClose hooks: no job starts meanwhile.
  // Awaited: a sliced job in flight ends at its next slice (jobs.signal) before the database closes.
  app.addHook('onClose', async () => {
    await jobs.stop();
  });

  await app.register(openapiPlugin, { publicUrl: config.http.publicUrl });
  await app.register(systemRoutes);
  // Outside /api/v1 and its token check: the signature in the URL is what authorises a device download.
  await app.register(deviceDownloadRoutes);
  await app.register(
    async (api) => {
      await api.register(authPlugin, { authenticate: (token) => app.services.auth.authenticate(token) });
      await api.register(authRoutes);
      await api.register(usersRoutes);
      await api.register(areasRoutes);
      await api.register(devicesRoutes);
      await api.register(commandsRoutes);
      await api.register(healthRoutes);
      await api.register(alertsRoutes);
      await api.register(auditRoutes);
      await api.register(mediaRoutes);
      await api.register(programmesRoutes);
      await api.register(schedulesRoutes);
      await api.register(calendarRoutes, { clock });
      await api.register(ttsRoutes);
      await api.register(playbackRoutes);
      await api.register(emergenciesRoutes);
      // Its own plugin, not wrapped: it swaps the JSON body parser for the CAP XML one in its scope only.
      await api.register(capRoutes);
      await api.register(warningSourcesRoutes);
    },
    { prefix: '/api/v1' },
  );

  return app;
}

/**
 * A renewed certificate (files changed, SIGHUP, or the hourly look for file systems whose changes are not
 * seen, such as some network and bind mounts) goes to the HTTPS server and the MQTT over TLS listener, for
 * new connections; open ones keep theirs. An operator is warned daily when expiry is near.
 */
function wireCertificate(
  app: FastifyInstance,
  certificate: ServerCertificate,
  jobs: PeriodicJobs,
  clock: Clock,
): void {
  const log = app.log.child({ component: 'tls' });
  const server = app.server as unknown as TlsServer;
  certificate.onReload((pair) => {
    server.setSecureContext({ ...pair, ...TLS_SERVER_OPTIONS });
    app.broker.setSecureContext(pair);
    certificate.warnIfExpiring(clock.now());
  });
  app.addHook('onReady', async () => {
    certificate.watch(log);
    const { subject, fingerprint, expiresAt } = certificate.info;
    log.info({ subject, fingerprint, expiresAt: expiresAt.toISOString() }, 'TLS certificate loaded');
    certificate.warnIfExpiring(clock.now());
  });
  jobs.every('tls-certificate-reread', 3_600_000, () => certificate.reload());
  jobs.every('tls-certificate-expiry', 86_400_000, () => certificate.warnIfExpiring(clock.now()));
  app.addHook('onClose', async () => certificate.close());
  // Before Fastify's server.close(), which would wait for them until their handshake timeout (lib/tls.ts).
  const endHandshakes = trackHandshakes(server);
  app.addHook('preClose', async () => endHandshakes());
}

declare module 'fastify' {
  interface FastifyInstance {
    /** The TLS certificate in use (TLS_CERT_FILE); null: plain HTTP and MQTT. */
    tls: ServerCertificate | null;
  }
}
