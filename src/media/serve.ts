/**
 * Serving a stored audio file over HTTP, for users (GET /api/v1/media/:id/audio) and devices (signed
 * GET /downloads/<sha256>.mp3) alike: Content-Length, a single byte range (RFC 9110 §14: a device on a bad
 * 4G link resumes where it stopped), and the content hash as a strong ETag (a file never changes under its
 * name, so If-None-Match answers 304 and If-Range is safe).
 *
 * The file is streamed from disk (64 KiB reads, back-pressured by the socket); nothing is buffered whole.
 * It is opened before anything is answered: a file missing from the store is a clear 404 (and a log line
 * for the operator), not a stream that fails after the headers are set; and the length sent is the one of
 * the file actually opened. The open file is closed when the stream ends or the client goes away.
 */
import fsp, { type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors.js';

export interface ServedFile {
  path: string;
  sha256: string;
  /** What the database says, if anything; the length served is that of the file on disk (a mismatch is logged). */
  sizeBytes?: number;
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
  // The unit is case-insensitive (RFC 9110 §14.1); a list of ranges does not match and is ignored.
  const match = /^bytes=(\d*)-(\d*)$/i.exec(header.trim());
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

/** Opens a stored file, or null when it is not there. */
async function openStored(file: string): Promise<FileHandle | null> {
  try {
    return await fsp.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Answers with the file. A file missing from the store (its row says it should be there) is answered 404
 * not_found and logged at `error`: it is lost data, for the operator to look into, not the client's fault.
 */
export async function sendAudioFile(
  request: FastifyRequest,
  reply: FastifyReply,
  file: ServedFile,
  cacheControl: string,
): Promise<FastifyReply> {
  const etag = `"${file.sha256}"`;
  const ifNoneMatch = request.headers['if-none-match'];
  if (ifNoneMatch !== undefined && noneMatch(ifNoneMatch, etag)) {
    return reply.status(304).header('etag', etag).header('cache-control', cacheControl).send();
  }

  const handle = await openStored(file.path);
  if (!handle) {
    request.log.error({ sha256: file.sha256, path: file.path }, 'stored audio file is missing');
    throw new AppError('not_found', 'The audio file is missing from the store; the operator has been told');
  }
  let streaming = false;
  try {
    const { size } = await handle.stat();
    if (file.sizeBytes !== undefined && size !== file.sizeBytes) {
      request.log.error(
        { sha256: file.sha256, path: file.path, expected: file.sizeBytes, actual: size },
        'stored audio file has an unexpected size',
      );
    }

    let range: Range = null;
    const rangeHeader = request.headers.range;
    const ifRange = request.headers['if-range'];
    // If-Range with another validator (an older file, or a date: no Last-Modified is ever sent, so a date
    // never matches): the whole file instead of a piece. A weak tag never matches (strong comparison).
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
    // The stream owns the handle from here (autoClose): closed at its end, or when Fastify destroys it
    // because the client went away.
    const stream = handle.createReadStream({ start, end });
    streaming = true;
    return reply.send(stream);
  } finally {
    if (!streaming) await handle.close();
  }
}
