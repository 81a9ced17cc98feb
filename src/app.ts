/**
 * buildApp(config) → a ready-to-listen Fastify instance holding the API, the embedded MQTT broker and
 * the database. No I/O at import time; the process itself (signals, listen) belongs to server.ts.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Config } from './config.js';
import { PeriodicJobs, systemClock, type Clock } from './lib/clock.js';
import { newSecret } from './lib/ids.js';
import authPlugin from './plugins/auth.js';
import { connectDeviceGateway } from './gateway/device-gateway.js';
import brokerPlugin from './plugins/broker.js';
import dbPlugin from './plugins/db.js';
import errorsPlugin, { clientErrorHandler, frameworkErrors, MAX_PARAM_LENGTH } from './plugins/errors.js';
import idempotencyPlugin from './plugins/idempotency.js';
import inputPlugin from './plugins/input.js';
import metricsPlugin from './plugins/metrics.js';
import openapiPlugin from './plugins/openapi.js';
import { AlertsRepository } from './modules/alerts/alerts.repository.js';
import alertsRoutes from './modules/alerts/alerts.routes.js';
import { AlertsService } from './modules/alerts/alerts.service.js';
import { noNotifier, WebhookNotifier } from './modules/alerts/webhook.js';
import { AreasRepository } from './modules/areas/areas.repository.js';
import areasRoutes from './modules/areas/areas.routes.js';
import { AreasService } from './modules/areas/areas.service.js';
import { AuditRepository } from './modules/audit/audit.repository.js';
import auditRoutes from './modules/audit/audit.routes.js';
import { AuditService } from './modules/audit/audit.service.js';
import { AuthRepository } from './modules/auth/auth.repository.js';
import authRoutes from './modules/auth/auth.routes.js';
import { AuthService } from './modules/auth/auth.service.js';
import { LoginThrottle } from './modules/auth/login-throttle.js';
import { CommandsRepository } from './modules/commands/commands.repository.js';
import commandsRoutes from './modules/commands/commands.routes.js';
import { CommandsService } from './modules/commands/commands.service.js';
import { DevicesRepository } from './modules/devices/devices.repository.js';
import devicesRoutes from './modules/devices/devices.routes.js';
import { DevicesService } from './modules/devices/devices.service.js';
import systemRoutes from './modules/system/system.routes.js';
import { HealthRepository } from './modules/health/health.repository.js';
import healthRoutes from './modules/health/health.routes.js';
import { HealthService } from './modules/health/health.service.js';
import { PlaybackRepository } from './modules/playback/playback.repository.js';
import { PlaybackService } from './modules/playback/playback.service.js';
import { Audio } from './media/audio.js';
import { DownloadLinks, listeningBaseUrl, loadUrlSecret } from './media/links.js';
import { MediaStore } from './media/store.js';
import { resolveAudioTools } from './media/tools.js';
import { MediaRepository } from './modules/media/media.repository.js';
import mediaRoutes, { deviceDownloadRoutes } from './modules/media/media.routes.js';
import { MediaService } from './modules/media/media.service.js';
import { resolveSpeechEngine } from './modules/tts/engines.js';
import { TtsRepository } from './modules/tts/tts.repository.js';
import ttsRoutes from './modules/tts/tts.routes.js';
import { TtsService } from './modules/tts/tts.service.js';
import { ProgrammesRepository } from './modules/programmes/programmes.repository.js';
import programmesRoutes from './modules/programmes/programmes.routes.js';
import { ProgrammesService } from './modules/programmes/programmes.service.js';
import { relayProber } from './modules/programmes/relay-probe.js';
import { UsersRepository } from './modules/users/users.repository.js';
import usersRoutes from './modules/users/users.routes.js';
import { UsersService } from './modules/users/users.service.js';

export interface Services {
  audit: AuditService;
  areas: AreasService;
  users: UsersService;
  auth: AuthService;
  devices: DevicesService;
  health: HealthService;
  alerts: AlertsService;
  commands: CommandsService;
  playback: PlaybackService;
  media: MediaService;
  tts: TtsService;
  programmes: ProgrammesService;
}

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
  }
}

export interface AppOptions {
  config: Config;
  /** Tests pass a controllable clock; everything time-dependent reads it. */
  clock?: Clock;
  logger?: FastifyServerOptions['logger'];
  /** How often expired command deliveries are closed. */
  expirySweepMs?: number;
}

/** Never logged, whoever builds the logger (server.ts passes its own options). */
export const REDACT = [
  'req.headers.authorization',
  '*.password',
  '*.currentPassword',
  '*.newPassword',
  'body.password',
];

export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const { config } = options;
  const clock = options.clock ?? systemClock;

  const app = Fastify({
    logger: options.logger ?? { level: config.log.level, redact: REDACT },
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
    http: {
      // A socket that sends no complete request headers in time (nothing at all, or a slowloris trickle)
      // is answered 408 and closed. Node counts from the connection's opening (later, from a request's
      // first byte) and looks every connectionsCheckingInterval (default 30 s). An upgraded WebSocket
      // leaves the HTTP parser and is never cut by this: MQTT keepalive is up to 120 s.
      headersTimeout: config.http.headersTimeoutMs,
      connectionsCheckingInterval: 1_000,
    },
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
  });
  await app.register(dbPlugin, { file: config.databaseFile });
  // Before the routes: it adds the Idempotency-Key header to the schema of each route that honours it.
  await app.register(idempotencyPlugin, { db: app.db, clock });
  // onClose hooks run in reverse order of registration: the broker closes (no more acks arrive), then
  // queued writes are flushed, then the database closes.
  app.addHook('onClose', async () => {
    // Playback first: the entries it stores update the device health that is flushed next.
    app.services.playback.flush();
    app.services.health.flush();
    app.services.commands.flush();
  });

  const repos = {
    audit: new AuditRepository(app.db),
    areas: new AreasRepository(app.db),
    users: new UsersRepository(app.db),
    auth: new AuthRepository(app.db),
    devices: new DevicesRepository(app.db),
    commands: new CommandsRepository(app.db),
    health: new HealthRepository(app.db),
    playback: new PlaybackRepository(app.db),
  };

  await app.register(brokerPlugin, {
    ...config.mqtt,
    clock,
    onRefused: (reason) => app.metrics.mqttConnectionRefused(reason),
    onSubscriptionRefused: () => app.metrics.mqttSubscriptionRefused(),
    // Bound late: devices only connect once the app is listening, when the services exist.
    authenticate: (deviceId, secret) => app.services.devices.authenticate(deviceId, secret),
  });

  const audit = new AuditService(repos.audit, clock);
  const areas = new AreasService(repos.areas, audit, clock);
  const health = new HealthService(
    repos.health,
    config.health,
    clock,
    app.log.child({ module: 'health' }),
    app.metrics,
  );
  const devices = new DevicesService(
    repos.devices,
    areas,
    audit,
    app.broker,
    (id) => health.forget(id),
    clock,
  );
  // ffmpeg/ffprobe are checked now: a server that cannot process audio says so at start-up.
  const audioTools = await resolveAudioTools(config.media);
  app.log.info(
    {
      ffmpeg: audioTools.ffmpeg,
      ffmpegVersion: audioTools.ffmpegVersion,
      ffprobe: audioTools.ffprobe,
      ffprobeVersion: audioTools.ffprobeVersion,
      source: audioTools.source,
    },
    'audio tools',
  );
  // Device download links need an address devices can reach; without PUBLIC_URL, the listening one.
  const publicUrl = config.http.publicUrl?.replace(/\/+$/, '');
  let listeningUrl: string | undefined;
  app.addHook('onListen', async () => {
    if (publicUrl || listeningUrl) return;
    listeningUrl = listeningBaseUrl(app.server.address(), config.http.port);
    app.log.warn(
      { downloadBase: listeningUrl },
      'PUBLIC_URL is unset: device download links use the listening address, which devices on a 4G link may ' +
        'not reach. Set PUBLIC_URL to the address devices use.',
    );
  });
  const media = new MediaService(
    new MediaRepository(app.db),
    areas,
    audit,
    new MediaStore(config.media.dir),
    new DownloadLinks(
      loadUrlSecret(config.media.urlSecret, config.dataDir),
      () => publicUrl ?? listeningUrl ?? listeningBaseUrl(app.server.address(), config.http.port),
      clock,
    ),
    new Audio(audioTools, config.media),
    config.media,
    clock,
    app.log.child({ module: 'media' }),
  );
  // TTS_COMMAND, else Debian's espeak-ng, else the WebAssembly build shipped in node_modules.
  const tts = new TtsService(
    new TtsRepository(app.db),
    audit,
    await resolveSpeechEngine({ command: config.tts.command, espeakPath: config.tts.espeakPath }),
    clock,
    { audio: media.audio },
  );
  app.log.info(tts.engineInfo, 'text-to-speech engine');
  const services: Services = {
    audit,
    areas,
    users: new UsersService(repos.users, areas, audit, clock),
    auth: new AuthService(
      repos.auth,
      repos.users,
      audit,
      new LoginThrottle(clock),
      clock,
      config.auth.tokenTtlMs,
    ),
    devices,
    health,
    alerts: new AlertsService(
      new AlertsRepository(app.db),
      areas,
      audit,
      config.alerts.webhookUrl
        ? new WebhookNotifier(
            config.alerts.webhookUrl,
            config.alerts.webhookAttempts,
            app.log.child({ module: 'webhook' }),
            clock,
          )
        : noNotifier,
      config.alerts,
      clock,
      app.log.child({ module: 'alerts' }),
    ),
    commands: new CommandsService(
      repos.commands,
      devices,
      areas,
      audit,
      {
        isReady: (id) => app.broker.isReady(id),
        publishCommand: (ids, payload) => {
          const sent = app.broker.publishCommand(ids, payload);
          app.metrics.mqttMessagesOut(sent.length);
          return sent;
        },
      },
      app.metrics,
      clock,
      app.log.child({ module: 'commands' }),
      // Bound late, like the broker's authenticate: programmes and commands each need the other.
      (actor, programmeId, validUntil) => services.programmes.playSource(actor, programmeId, validUntil),
    ),
    playback: new PlaybackService(repos.playback, clock, {
      metrics: app.metrics,
      log: app.log.child({ module: 'playback' }),
      onStored: (deviceId, entry) => health.recordPlayback(deviceId, entry),
      timers: clock,
    }),
    media,
    tts,
    programmes: new ProgrammesService(
      new ProgrammesRepository(app.db),
      areas,
      media,
      tts,
      relayProber({ now: () => clock.now() }),
      { hasLivePlay: (programmeId) => services.commands.hasLivePlay(programmeId) },
      audit,
      clock,
    ),
  };
  app.decorate('services', services);

  const resorted = services.devices.refreshSortNames();
  if (resorted > 0) app.log.info({ devices: resorted }, 'recomputed device sort keys');
  // Loads live status; devices still marked online from before are recorded offline (server_restart).
  services.health.start();
  connectDeviceGateway(
    app.broker,
    services,
    app.log.child({ module: 'device-gateway' }),
    {
      messageIn: (channel) => app.metrics.mqttMessageIn(channel),
      malformed: (channel) => app.metrics.malformedPayload(channel),
      failed: (channel) => app.metrics.deviceEventFailed(channel),
    },
    clock,
  );

  // Periodic jobs run on the injected clock, so tests drive them by moving time.
  const jobs = new PeriodicJobs(clock, app.log);
  app.addHook('onReady', async () => {
    const admin = await services.users.ensureAdmin(config.auth.adminPassword, () => newSecret().slice(0, 20));
    if (admin.password) {
      app.log.warn(
        { username: 'admin', initialPassword: admin.password },
        'Created the first user "admin" with a generated password, shown only this once. Set ADMIN_PASSWORD to choose it.',
      );
    }
    jobs.every('expire commands', options.expirySweepMs ?? 1_000, () => services.commands.expireDue());
    jobs.every('store telemetry', 1_000, () => services.health.flushInSlices());
    jobs.every('detect silent devices', Math.min(config.health.heartbeatMs, 5_000), () =>
      services.health.detectSilence(),
    );
    jobs.every('prune telemetry', 3_600_000, () => services.health.pruneTelemetry());
    jobs.every('evaluate alerts', 10_000, () => services.alerts.evaluate(services.health.devices));
    // Files nothing names any more; once now, then hourly (errors are logged, the next run tries again).
    const cleanMedia = () =>
      void services.media.cleanup().catch((err: unknown) => app.log.error({ err }, 'media clean-up failed'));
    cleanMedia();
    jobs.every('clean media store', 3_600_000, cleanMedia);
  });
  app.addHook('onClose', async () => {
    jobs.stop();
    await services.alerts.drain(2_000);
  });

  await app.register(openapiPlugin, { publicUrl: config.http.publicUrl });
  await app.register(systemRoutes);
  // Outside /api/v1 and its token check: the signature in the URL is what authorises a device download.
  await app.register(deviceDownloadRoutes);
  await app.register(
    async (api) => {
      await api.register(authPlugin, { authenticate: (token) => services.auth.authenticate(token) });
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
      await api.register(ttsRoutes);
    },
    { prefix: '/api/v1' },
  );

  return app;
}
