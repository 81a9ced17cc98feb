/**
 * Serving a stored audio file over HTTP, for users (GET /api/v1/media/:id/audio) and devices (signed
 * GET /downloads/<sha256>.mp3) alike: Content-Length, a single byte range (RFC 9110 §14: a device on a bad
 * 4G link resumes where it stopped), and the content hash as a strong ETag (a file never changes under its
 * name, so If-None-Match answers 304 and If-Range is safe).
 *
 * The file is streamed from disk (64 KiB reads, back-pressured by the socket); nothing is buffered whole.
 */
import fs from 'node:fs';
import { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors.js';

export interface ServedFile {
  path: string;
  sha256: string;
  sizeBytes: number;
}

/** A file nobody may cache anywhere but the caller's own browser (it came through a user's token). */
export const PRIVATE_CACHE = 'private, no-cache';
/** The name is the content hash: whatever caches it may keep it forever. */
export const IMMUTABLE_CACHE = 'public, max-age=31536000, immutable';

type Range = { start: number; end: number } | 'unsatisfiable' | null;

/**
 * One `bytes=` range, or null when the header is to be ignored (RFC 9110 §14.2: a server may ignore a
 * Range it does not understand, and may answer a multi-range request with the whole file).
 */
export function parseRange(header: string, size: number): Range {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match) return null;
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return null;
  if (first === '') {
    // A suffix: the last N bytes.
    const length = Number(last);
    if (length === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - length), end: size - 1 };
  }
  const start = Number(first);
  if (start >= size) return 'unsatisfiable';
  const end = last === '' ? size - 1 : Number(last);
  // Syntactically invalid (RFC 9110 §14.1.1): ignored, the whole file is sent.
  if (end < start) return null;
  return { start, end: Math.min(end, size - 1) };
}

/** If-None-Match holds our ETag (weak comparison, RFC 9110 §13.1.2) or `*`. */
function noneMatch(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  return header.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag);
}

export function sendAudioFile(
  request: FastifyRequest,
  reply: FastifyReply,
  file: ServedFile,
  cacheControl: string,
): FastifyReply {
  const etag = `"${file.sha256}"`;
  const size = file.sizeBytes;
  const ifNoneMatch = request.headers['if-none-match'];
  if (ifNoneMatch !== undefined && noneMatch(ifNoneMatch, etag)) {
    return reply.status(304).header('etag', etag).header('cache-control', cacheControl).send();
  }

  let range: Range = null;
  const rangeHeader = request.headers.range;
  const ifRange = request.headers['if-range'];
  // If-Range with another validator (an older file, or a date): send the whole file instead of a piece.
  if (rangeHeader !== undefined && (ifRange === undefined || String(ifRange).trim() === etag)) {
    range = parseRange(rangeHeader, size);
  }
  if (range === 'unsatisfiable') {
    reply.header('content-range', `bytes */${size}`);
    throw new AppError('range_not_satisfiable', `The file has ${size} bytes`);
  }

  reply
    .header('content-type', 'audio/mpeg')
    .header('accept-ranges', 'bytes')
    .header('etag', etag)
    .header('cache-control', cacheControl);
  const start = range?.start ?? 0;
  const end = range?.end ?? size - 1;
  if (range) {
    reply.status(206).header('content-range', `bytes ${start}-${end}/${size}`);
  }
  reply.header('content-length', String(end - start + 1));
  if (request.method === 'HEAD' || size === 0) return reply.send(Readable.from([]));
  return reply.send(fs.createReadStream(file.path, { start, end }));
}
