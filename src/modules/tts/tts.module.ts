import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { resolveSpeechEngine } from './engines.js';
import { TtsRepository } from './tts.repository.js';
import { TtsService } from './tts.service.js';

/** Vietnamese text-to-speech, rendered to audio through the media module's tools. */
export default fp<ModuleOptions>(
  async (app, { config, clock }) => {
    // TTS_COMMAND, else Debian's espeak-ng, else the WebAssembly build shipped in node_modules.
    const tts = new TtsService(
      new TtsRepository(app.db),
      app.services.audit,
      await resolveSpeechEngine({ command: config.tts.command, espeakPath: config.tts.espeakPath }),
      clock,
      // The store's temporary folder is emptied at start-up: speech left there by a crash does not pile up.
      { audio: app.services.media.audio, tmpDir: app.services.media.store.tmpDir },
    );
    app.log.info(tts.engineInfo, 'text-to-speech engine');
    app.services.tts = tts;
  },
  { name: 'tts-module', fastify: '5.x', dependencies: ['db', 'audit-module', 'media-module'] },
);
