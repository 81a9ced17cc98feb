/**
 * What a domain module is: a named fastify plugin (src/modules/<name>/<name>.module.ts) that builds its
 * repository and service from the infrastructure (app.db, app.broker, app.metrics) and from the services
 * of the modules it declares as `dependencies`, puts its service on `app.services`, and owns its start-up
 * and shutdown work. app.ts registers them in dependency order; Fastify checks the declared order.
 */
import type { Config } from '../config.js';
import type { Clock, PeriodicJobs } from '../lib/clock.js';
import type { AlertsService } from './alerts/alerts.service.js';
import type { AreasService } from './areas/areas.service.js';
import type { AuditService } from './audit/audit.service.js';
import type { AuthService } from './auth/auth.service.js';
import type { CommandsService } from './commands/commands.service.js';
import type { DevicesService } from './devices/devices.service.js';
import type { CapIngestService } from './emergencies/cap.ingest.js';
import type { EmergenciesService } from './emergencies/emergencies.service.js';
import type { EmergencyEvents } from './emergencies/events.js';
import type { WarningSourcesService } from './emergencies/sources.service.js';
import type { Dispatcher } from './schedules/dispatcher.js';
import type { HealthService } from './health/health.service.js';
import type { MediaService } from './media/media.service.js';
import type { PlaybackService } from './playback/playback.service.js';
import type { ProgrammesService } from './programmes/programmes.service.js';
import type { SchedulesService } from './schedules/schedules.service.js';
import type { TtsService } from './tts/tts.service.js';
import type { UsersService } from './users/users.service.js';

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
  schedules: SchedulesService;
  dispatcher: Dispatcher;
  emergencies: EmergenciesService;
  emergencyEvents: EmergencyEvents;
  capIngest: CapIngestService;
  warningSources: WarningSourcesService;
}

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
  }
}

/** What every module plugin is registered with (app.ts). */
export interface ModuleOptions {
  config: Config;
  /** Tests pass a controllable clock; everything time-dependent reads it. */
  clock: Clock;
  /** Shared by all modules, on the injected clock (tests drive jobs by moving time). Add jobs onReady. */
  jobs: PeriodicJobs;
  /**
   * At shutdown, after the broker has closed (nothing more arrives from devices) and before the database
   * closes, writes still queued in memory are flushed: the last registered first, so that a module's
   * queue is flushed before those of the modules it depends on.
   */
  flushOnClose: (flush: () => void) => void;
  /** How often expired command deliveries are closed. */
  expirySweepMs?: number;
}
