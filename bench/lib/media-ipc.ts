/** Messages from the media baseline server (media-raw-server.ts) to bench/media.ts over IPC. */
export interface MediaRawReady {
  type: 'ready';
  /** The loopback port it listens on. */
  port: number;
  /** Size of the file it serves. */
  sizeBytes: number;
}

export type MediaRawReply = MediaRawReady;
