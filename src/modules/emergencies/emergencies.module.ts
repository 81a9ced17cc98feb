import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { CapIngestService } from './cap.ingest.js';
import { CapRepository } from './cap.repository.js';
import { EmergenciesRepository } from './emergencies.repository.js';
import { EmergenciesService } from './emergencies.service.js';
import { EmergencyEvents } from './events.js';
import { EmergencyRenderer } from './render.js';
import { WarningSourcesService } from './sources.service.js';

/** How often devices that got an emergency and never answered are looked at for a re-send. */
const RESEND_CHECK_MS = 1_000;

/**
 * Emergency broadcasts (src/modules/emergencies): rendering, sending, re-sends with back-off, tracking and
 * the live progress stream. Re-sends start once the app is ready (what ran before a restart included);
 * open progress streams are ended before the server closes, or they would hold it open.
 */
export default fp<ModuleOptions>(
  async (app, { config, clock, jobs }) => {
    const { commands, devices, areas, programmes, media, tts, audit } = app.services;
    const log = app.log.child({ module: 'emergencies' });
    const renderer = new EmergencyRenderer(
      { media, speech: tts, ffmpeg: media.audio.ffmpegPath },
      {
        attentionMediaId: config.emergencies.attentionMediaId,
        findMedia: (id) => media.find(id),
      },
    );
    if (renderer.configuredSignalMissing()) {
      log.warn(
        { mediaId: config.emergencies.attentionMediaId },
        'EMERGENCY_ATTENTION_MEDIA_ID names no media item: the built-in attention tone plays instead',
      );
    }
    const repo = new EmergenciesRepository(app.db);
    const service = new EmergenciesService({
      repo,
      commands,
      devices,
      areas,
      programmes,
      renderer,
      links: media.links,
      audit,
      clock,
      log,
    });
    const events = new EmergencyEvents(service, repo, clock, log);
    app.services.emergencies = service;
    app.services.emergencyEvents = events;
    // CAP 1.2 alerts from warning systems, and the keys those systems use.
    const capRepo = new CapRepository(app.db);
    app.services.warningSources = new WarningSourcesService(capRepo, areas, audit, clock);
    app.services.capIngest = new CapIngestService(
      capRepo,
      service,
      areas,
      audit,
      clock,
      app.log.child({ module: 'cap' }),
    );

    app.addHook('onReady', async () => {
      service.start();
      jobs.every('emergency re-sends', RESEND_CHECK_MS, () => service.resendDue());
    });
    app.addHook('preClose', async () => events.closeAll());
  },
  {
    name: 'emergencies-module',
    fastify: '5.x',
    dependencies: [
      'db',
      'audit-module',
      'areas-module',
      'devices-module',
      'media-module',
      'tts-module',
      'commands-module',
      'programmes-module',
      'playback-module',
    ],
  },
);
