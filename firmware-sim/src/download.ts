/**
 * Downloading a play's media the way docs/protocol.md §3.6 asks firmware to: fetch the signed URL as given,
 * hash the bytes while they arrive, resume once with `Range` when a 4G link drops mid-file, and play nothing
 * whose SHA-256 differs from the command's.
 *
 * The bytes themselves are thrown away once hashed: a simulated device has no flash to fill, and ten thousand
 * of them in one process must not hold ten thousand copies of a bulletin. What a device keeps is the hash it
 * verified (HashCache), which is what tells it that a second play of the same file needs no download.
 */
import { createHash, type Hash } from 'node:crypto';
import { fetchTrusting } from './tls.js';

export type DownloadFailure = 'download_failed' | 'checksum_mismatch';

/** A download that must not be played: `reason` is the ack / log reason, `message` says what happened. */
export class DownloadError extends Error {
  override readonly name = 'DownloadError';
  constructor(
    readonly reason: DownloadFailure,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${reason}: ${detail}`, options);
  }
}

/**
 * The files a device has verified, keyed by SHA-256, least recently used first out. Files are named by
 * their hash and never change (the server's download URLs say `Cache-Control: immutable`), so a hash seen
 * verified once stays valid; only the room on a device's flash limits how many it keeps.
 */
export class HashCache {
  private readonly entries = new Map<string, number>();

  constructor(readonly capacity = 16) {
    if (!(capacity >= 1)) throw new RangeError(`capacity must be >= 1, got ${capacity}`);
  }

  /** The size of a verified file, or undefined; a hit makes it the most recently used. */
  get(sha256: string): number | undefined {
    const key = sha256.toLowerCase();
    const bytes = this.entries.get(key);
    if (bytes === undefined) return undefined;
    this.entries.delete(key);
    this.entries.set(key, bytes);
    return bytes;
  }

  add(sha256: string, bytes: number): void {
    const key = sha256.toLowerCase();
    this.entries.delete(key);
    this.entries.set(key, bytes);
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
  }

  delete(sha256: string): void {
    this.entries.delete(sha256.toLowerCase());
  }

  get size(): number {
    return this.entries.size;
  }
}

export interface DownloadOptions {
  /**
   * Longest wait, in real ms, for the response headers or for the next chunk of the body (a stalled link).
   * A stall mid-file counts as a broken connection and is resumed once. Default 30 s.
   */
  timeoutMs?: number;
  /** Verified hashes; a hit returns at once without a request, a verified download is added. */
  cache?: HashCache;
  /** Aborts the download (a newer command won); the promise then rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * PEM CA bundle: the only roots trusted for an https: URL, as firmware trusts the bundle it ships with
   * (tls.ts). Unset: Node's built-in roots.
   */
  ca?: string;
}

export interface DownloadResult {
  bytes: number;
  fromCache: boolean;
}

const SHA256_HEX = /^[0-9a-f]{64}$/;
const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

/** A failure of the link rather than of the server's answer: worth one resume. */
class BrokenLink extends Error {}

/**
 * Downloads `url`, verifies that the SHA-256 of the whole body is `sha256`, and resolves with its size.
 * Rejects with DownloadError `download_failed` (HTTP error, network error, time-out, a body shorter than
 * its Content-Length after the one resume) or `checksum_mismatch`; with the signal's reason when aborted.
 */
export async function downloadVerified(
  url: string,
  sha256: string,
  options: DownloadOptions = {},
): Promise<DownloadResult> {
  const expected = sha256.toLowerCase();
  if (!SHA256_HEX.test(expected)) throw new DownloadError('checksum_mismatch', `not a SHA-256: "${sha256}"`);
  const { timeoutMs = 30_000, cache, signal, ca } = options;
  const cached = cache?.get(expected);
  if (cached !== undefined) return { bytes: cached, fromCache: true };
  signal?.throwIfAborted();

  let hash = createHash('sha256');
  let received = 0;
  /** Size of the whole file, from Content-Length (200) or Content-Range (206), when the server said. */
  let total: number | undefined;
  let etag: string | undefined;
  let resumed = false;

  for (;;) {
    const range = received > 0 ? { from: received, etag } : undefined;
    try {
      const outcome = await fetchOnce(url, range, timeoutMs, signal, ca, (response) => {
        if (range && response.status === 206) {
          const span = CONTENT_RANGE.exec(response.headers.get('content-range') ?? '');
          if (!span || Number(span[1]) !== range.from)
            throw new DownloadError(
              'download_failed',
              `resume at byte ${range.from} answered Content-Range "${response.headers.get('content-range')}"`,
            );
          if (span[3] !== '*') total = Number(span[3]);
          return hash;
        }
        if (response.status !== 200)
          throw new DownloadError('download_failed', `HTTP ${response.status} from ${describe(url)}`);
        // A 200 to a resume is the whole file again (the server ignores Range, or If-Range no longer
        // matched because the file changed): start over rather than hash two files into one.
        hash = createHash('sha256');
        received = 0;
        const length = response.headers.get('content-length');
        total = length !== null && /^\d+$/.test(length) ? Number(length) : undefined;
        const tag = response.headers.get('etag');
        // If-Range takes a strong validator only (RFC 9110 §13.1.5); a weak one would resume nothing.
        etag = tag !== null && !tag.startsWith('W/') ? tag : undefined;
        return hash;
      });
      received += outcome.bytes;
      if (outcome.broken) throw outcome.broken;
      if (total !== undefined && received < total)
        throw new BrokenLink(`connection closed after ${received} of ${total} bytes`);
      if (total !== undefined && received > total)
        throw new DownloadError(
          'download_failed',
          `received ${received} bytes, more than the ${total} announced`,
        );
      break;
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      if (error instanceof DownloadError) throw error;
      const detail = error instanceof Error ? error.message : String(error);
      // Resume once: a link that drops twice in one download is not worth a third try before the
      // server re-sends; and nothing received means there is nothing to resume.
      if (error instanceof BrokenLink && received > 0 && !resumed) {
        resumed = true;
        continue;
      }
      throw new DownloadError('download_failed', detail, { cause: error });
    }
  }

  const digest = hash.digest('hex');
  if (digest !== expected)
    throw new DownloadError(
      'checksum_mismatch',
      `SHA-256 of ${received} bytes is ${digest}, expected ${expected}`,
    );
  cache?.add(expected, received);
  return { bytes: received, fromCache: false };
}

/**
 * One request: `accept` checks the response and returns the hash to feed. Resolves with the bytes hashed
 * and, if the body broke off, why (so the caller can count what arrived before resuming).
 */
async function fetchOnce(
  url: string,
  range: { from: number; etag: string | undefined } | undefined,
  timeoutMs: number,
  signal: AbortSignal | undefined,
  ca: string | undefined,
  accept: (response: Response) => Hash,
): Promise<{ bytes: number; broken: BrokenLink | undefined }> {
  const controller = new AbortController();
  const onAbort = (): void => controller.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  let stalled = false;
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      controller.abort(new Error(`no data for ${timeoutMs} ms`));
    }, timeoutMs);
  };
  // Identity: the hash is over the file's bytes and Content-Length counts them, not a compressed form.
  const headers: Record<string, string> = { 'accept-encoding': 'identity' };
  if (range) {
    headers.range = `bytes=${range.from}-`;
    if (range.etag) headers['if-range'] = range.etag;
  }
  let bytes = 0;
  try {
    arm();
    let response: Response;
    try {
      response =
        ca === undefined
          ? await fetch(url, { headers, signal: controller.signal, redirect: 'follow' })
          : await fetchTrusting(url, { headers, signal: controller.signal }, ca);
    } catch (error) {
      throw new Error(stalled ? `no response within ${timeoutMs} ms` : describeFetchError(error), {
        cause: error,
      });
    }
    let hash: Hash;
    try {
      hash = accept(response);
    } catch (error) {
      // Release the connection: an unread body would hold it until the server gives up.
      await response.body?.cancel().catch(() => undefined);
      throw error;
    }
    if (!response.body) return { bytes, broken: undefined };
    try {
      // Typed loosely by the DOM lib; undici delivers Uint8Array chunks.
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        hash.update(chunk);
        bytes += chunk.byteLength;
        arm();
      }
    } catch (error) {
      if (signal?.aborted) throw signal.reason;
      const why = stalled ? `stalled: no data for ${timeoutMs} ms` : describeFetchError(error);
      return { bytes, broken: new BrokenLink(`${why} after ${bytes} bytes`, { cause: error }) };
    }
    return { bytes, broken: undefined };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

/** undici hides the useful part (ECONNREFUSED, ENOTFOUND, "other side closed") in `cause`. */
function describeFetchError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause;
  if (cause instanceof Error) {
    const code = (cause as Error & { code?: unknown }).code;
    return typeof code === 'string' ? `${code}: ${cause.message}` : cause.message;
  }
  return error.message;
}

/** The URL without its query: a signed URL's signature has no place in a log line or an ack. */
function describe(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.origin}${parsed.pathname}`;
  } catch {
    return 'the media URL';
  }
}
