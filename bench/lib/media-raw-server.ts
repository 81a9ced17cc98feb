/**
 * The baseline for bench/media.ts: a bare `node:http` server that answers every GET with one file,
 * streamed by fs.createReadStream with its Content-Length: no routing, no signature, no database, no
 * logging, no Range, no ETag. What Loa's signed download costs on top of this is Loa's overhead.
 *
 *   node --import tsx bench/lib/media-raw-server.ts <file>
 *
 * Started by the bench with an IPC channel: it binds a free loopback port, sends `{ type: 'ready', port }`,
 * and exits when the bench disconnects or sends SIGTERM, so even a bench killed with SIGKILL leaves
 * nothing running.
 */
import { createReadStream, statSync } from 'node:fs';
import http from 'node:http';
import { pipeline } from 'node:stream';
import type { MediaRawReady } from './media-ipc.js';

/**
 * Fastify's default (72 s), so that both servers keep an idle client connection alive equally long: with
 * node:http's own 5 s the client would reconnect to the baseline between rounds and keep its connections
 * to Loa, and the two sides would no longer do the same work.
 */
const KEEP_ALIVE_TIMEOUT_MS = 72_000;

function main(): void {
  const file = process.argv[2];
  if (!file || !process.send) {
    console.error('usage: node --import tsx bench/lib/media-raw-server.ts <file> (with an IPC channel)');
    process.exit(64);
  }
  // Once: the file does not change during a run, and the baseline is meant to do the least possible.
  const size = statSync(file).size;

  const server = http.createServer((request, response) => {
    if (request.method !== 'GET') {
      response.writeHead(405, { allow: 'GET' }).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'audio/mpeg', 'content-length': size });
    // pipeline destroys the file stream if the client goes away mid-download (no leaked descriptor).
    pipeline(createReadStream(file), response, () => undefined);
  });
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    if (!address || typeof address === 'string') throw new Error('media raw server: no TCP address');
    const ready: MediaRawReady = { type: 'ready', port: address.port, sizeBytes: size };
    process.send?.(ready);
  });

  let closing = false;
  const close = (): void => {
    if (closing) return;
    closing = true;
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2_000).unref();
  };
  process.on('SIGTERM', close);
  process.on('SIGINT', close);
  // The bench went away without stopping us.
  process.on('disconnect', close);
}

main();
