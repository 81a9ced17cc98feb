import fp from 'fastify-plugin';
import type { ModuleOptions } from '../module.js';
import { Audio } from '../../media/audio.js';
import { DownloadLinks, listeningBaseUrl, loadUrlSecret } from '../../media/links.js';
import { MediaStore } from '../../media/store.js';
import { resolveAudioTools } from '../../media/tools.js';
import { MediaRepository } from './media.repository.js';
import { MediaService } from './media.service.js';

/** Audio files: uploads, the renditions devices play, and the signed links they download them by. */
export default fp<ModuleOptions>(
  async (app, { config, clock, jobs }) => {
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
    const scheme = config.tls ? 'https' : 'http';
    const listening = () => listeningBaseUrl(app.server.address(), config.http.port, undefined, scheme);
    let listeningUrl: string | undefined;
    if (config.tls && publicUrl?.startsWith('http://')) {
      // Legitimate only behind something that turns it into HTTPS; otherwise every download link is dead.
      app.log.warn(
        { publicUrl },
        'PUBLIC_URL is http:// but this server speaks HTTPS only (TLS_CERT_FILE): device download links will ' +
          'fail unless a proxy answers plain HTTP there. Use https://.',
      );
    }
    app.addHook('onListen', async () => {
      if (publicUrl || listeningUrl) return;
      listeningUrl = listening();
      app.log.warn(
        { downloadBase: listeningUrl },
        'PUBLIC_URL is unset: device download links use the listening address, which devices on a 4G link may ' +
          'not reach. Set PUBLIC_URL to the address devices use.',
      );
    });

    const { areas, audit } = app.services;
    const media = new MediaService(
      new MediaRepository(app.db),
      areas,
      audit,
      new MediaStore(config.media.dir),
      new DownloadLinks(
        loadUrlSecret(config.media.urlSecret, config.dataDir),
        () => publicUrl ?? listeningUrl ?? listening(),
        clock,
      ),
      new Audio(audioTools, config.media),
      config.media,
      clock,
      app.log.child({ module: 'media' }),
    );
    app.services.media = media;

    app.addHook('onReady', async () => {
      // Files nothing names any more; once now, then hourly (errors are logged, the next run tries again).
      const cleanMedia = () =>
        void media.cleanup().catch((err: unknown) => app.log.error({ err }, 'media clean-up failed'));
      cleanMedia();
      jobs.every('clean media store', 3_600_000, cleanMedia);
    });
  },
  { name: 'media-module', fastify: '5.x', dependencies: ['db', 'audit-module', 'areas-module'] },
);
