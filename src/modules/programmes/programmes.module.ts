import fp from 'fastify-plugin';
import type { ModuleOptions, Services } from '../module.js';
import { ProgrammesRepository } from './programmes.repository.js';
import { ProgrammesService } from './programmes.service.js';
import { relayProber } from './relay-probe.js';

/** Programmes (uploads, text-to-speech bulletins, relays), approved by a second person and played. */
export default fp<ModuleOptions>(
  async (app, { clock, config }) => {
    const { areas, media, tts, commands, audit } = app.services;
    app.services.programmes = new ProgrammesService(
      new ProgrammesRepository(app.db),
      areas,
      media,
      tts,
      relayProber({
        now: () => clock.now(),
        allowPrivateNetworks: config.relayProbePrivateNetworks,
      }),
      {
        hasLivePlay: (programmeId) => commands.hasLivePlay(programmeId),
        // Bound late: the schedules module is registered after this one (and may be absent in a build).
        isScheduled: (programmeId) =>
          (app.services as Partial<Services>).schedules?.airsProgramme(programmeId) ?? false,
      },
      audit,
      clock,
    );
  },
  {
    name: 'programmes-module',
    fastify: '5.x',
    dependencies: ['db', 'audit-module', 'areas-module', 'media-module', 'tts-module', 'commands-module'],
  },
);
