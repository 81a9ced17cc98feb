/**
 * Helpers shared by the media tests: multipart bodies built byte by byte (as a browser sends them, the file
 * name in raw UTF-8), and a look into the content-addressed store.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { LightMyRequestResponse } from 'fastify';
import type { TestApp } from './app.js';

export interface FilePart {
  /** What the file holds. */
  bytes: Buffer;
  /** The name the client claims (raw UTF-8 in the header, as browsers send it; a Buffer: those bytes). */
  filename?: string | Buffer;
  /** The type the client claims. */
  contentType?: string;
  /** Part name; default "file". */
  field?: string;
}

export function multipartBody(
  parts: {
    files?: FilePart[];
    fields?: Record<string, string>;
    /** Fields sent after the files (a client may put the file first). */
    fieldsAfter?: Record<string, string>;
  },
  boundary = `----loa${randomBytes(8).toString('hex')}`,
): { body: Buffer; contentType: string } {
  const chunks: Buffer[] = [];
  const fields = (values: Record<string, string> | undefined) => {
    for (const [name, value] of Object.entries(values ?? {})) {
      chunks.push(
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`,
          'utf8',
        ),
      );
    }
  };
  fields(parts.fields);
  for (const file of parts.files ?? []) {
    const filename =
      file.filename !== undefined
        ? Buffer.concat([Buffer.from('; filename="'), Buffer.from(file.filename), Buffer.from('"')])
        : Buffer.alloc(0);
    chunks.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${file.field ?? 'file'}"`, 'utf8'),
      filename,
      Buffer.from(`\r\nContent-Type: ${file.contentType ?? 'application/octet-stream'}\r\n\r\n`, 'utf8'),
      file.bytes,
      Buffer.from('\r\n'),
    );
  }
  fields(parts.fieldsAfter);
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

export function upload(
  t: TestApp,
  token: string | undefined,
  file: FilePart | null,
  fields: Record<string, string> = {},
): Promise<LightMyRequestResponse> {
  const { body, contentType } = multipartBody({ files: file ? [file] : [], fields });
  return t.app.inject({
    method: 'POST',
    url: '/api/v1/media',
    headers: { 'content-type': contentType, ...(token ? { authorization: `Bearer ${token}` } : {}) },
    payload: body,
  });
}

export interface MediaJson {
  id: string;
  title: string;
  originalName: string | null;
  format: string;
  durationMs: number;
  sizeBytes: number;
  sha256: string;
  loudnessLufs: number | null;
  createdAt: string;
  createdBy: { id: string; username: string } | null;
  areaId: string | null;
  rendition: {
    sha256: string;
    sizeBytes: number;
    durationMs: number;
    loudnessLufs: number | null;
    bitrateKbps: number;
  };
}

/** Files in the store by hash (the tmp folder apart), and what is in tmp. */
export function storeContents(dataDir: string): { hashes: string[]; temps: string[] } {
  const dir = path.join(dataDir, 'media');
  const hashes: string[] = [];
  let temps: string[] = [];
  if (!fs.existsSync(dir)) return { hashes, temps };
  for (const entry of fs.readdirSync(dir)) {
    const full = path.join(dir, entry);
    if (entry === 'tmp') temps = fs.readdirSync(full);
    else if (fs.statSync(full).isDirectory()) hashes.push(...fs.readdirSync(full));
    else hashes.push(entry);
  }
  return { hashes: hashes.sort(), temps };
}

export const sha256Of = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** Open file descriptors of this process (Linux), to show that nothing leaks. */
export function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}
