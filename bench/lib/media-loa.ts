/**
 * What bench/media.ts needs from Loa: upload an announcement through the real API (Loa renders its device
 * rendition), build the signed device URL for it, and find the rendition on disk for the baseline server.
 */
import { openAsBlob } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { systemClock } from '../../src/lib/clock.js';
import { DownloadLinks } from '../../src/media/links.js';
import { isSha256 } from '../../src/media/store.js';

const uploadedSchema = z.object({
  id: z.string(),
  rendition: z.object({ sha256: z.string(), sizeBytes: z.number(), durationMs: z.number() }),
});

export interface Rendition {
  mediaId: string;
  sha256: string;
  sizeBytes: number;
  durationMs: number;
}

/** POST /api/v1/media (multipart, field `file`): 201 with the media item and its device rendition. */
export async function uploadMedia(
  api: string,
  token: string,
  file: string,
  title: string,
): Promise<Rendition> {
  const form = new FormData();
  form.append('title', title);
  // A Blob backed by the file: fetch streams it from disk.
  form.append('file', await openAsBlob(file, { type: 'audio/mpeg' }), path.basename(file));
  const response = await fetch(`${api}/api/v1/media`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
    body: form,
  });
  const text = await response.text();
  if (response.status !== 201)
    throw new Error(`POST /api/v1/media: HTTP ${response.status}: ${text.slice(0, 300)}`);
  const media = uploadedSchema.parse(JSON.parse(text));
  return { mediaId: media.id, ...media.rendition };
}

/**
 * The device URL, signed with Loa's own DownloadLinks and the MEDIA_URL_SECRET the bench gave the server:
 * exactly what a play command carries (docs/protocol.md), without needing a programme and its approval.
 */
export function signedUrl(secret: string, api: string, sha256: string, validUntil: Date): string {
  return new DownloadLinks(Buffer.from(secret, 'utf8'), () => api, systemClock).urlFor(sha256, validUntil);
}

/**
 * Where Loa keeps a file: DATA_DIR/media/<first two hex digits>/<sha256> (MediaStore.pathOf). Not through a
 * MediaStore instance, whose constructor tidies the live server's temporary folder.
 */
export function renditionPath(dataDir: string, sha256: string): string {
  if (!isSha256(sha256)) throw new Error(`not a SHA-256: ${sha256}`);
  return path.join(dataDir, 'media', sha256.slice(0, 2), sha256);
}

/**
 * The server's V8 heap and the memory outside it (Buffers: file chunks, socket data), from Loa's own
 * /metrics (prom-client's process metrics): RSS that grows while these do not is the allocator keeping
 * pages it may reuse, not a leak.
 */
export async function loaHeap(
  api: string,
  metricsToken: string,
): Promise<{ heapUsedMb: number; externalMb: number } | null> {
  try {
    const response = await fetch(`${api}/metrics`, { headers: { authorization: `Bearer ${metricsToken}` } });
    if (!response.ok) return null;
    const text = await response.text();
    const value = (name: string): number =>
      Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1]);
    const mb = (bytes: number): number => Math.round((bytes / 1_048_576) * 10) / 10;
    const heapUsed = value('nodejs_heap_size_used_bytes');
    const external = value('nodejs_external_memory_bytes');
    return Number.isFinite(heapUsed) && Number.isFinite(external)
      ? { heapUsedMb: mb(heapUsed), externalMb: mb(external) }
      : null;
  } catch {
    return null;
  }
}
