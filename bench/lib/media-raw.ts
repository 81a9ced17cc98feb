/** The media baseline server (media-raw-server.ts) as seen from bench/media.ts. */
import type { MediaRawReply } from './media-ipc.js';
import { Child, LOOPBACK, replies } from './processes.js';

const reply = replies<MediaRawReply>();

export class MediaRawServer {
  private constructor(
    readonly child: Child,
    /** http://127.0.0.1:<port> */
    readonly url: string,
    readonly sizeBytes: number,
  ) {}

  static async start(options: { repoRoot: string; file: string }): Promise<MediaRawServer> {
    const child = Child.start({
      name: 'raw-http',
      script: 'bench/lib/media-raw-server.ts',
      args: [options.file],
      ipc: true,
      cwd: options.repoRoot,
      env: process.env,
    });
    try {
      const ready = await reply(child, 'ready', 30_000);
      return new MediaRawServer(child, `http://${LOOPBACK}:${ready.port}`, ready.sizeBytes);
    } catch (err) {
      await child.stop();
      throw err;
    }
  }

  stop(): Promise<void> {
    return this.child.stop();
  }
}
