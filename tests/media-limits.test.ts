import { spawn } from 'node:child_process';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestApp, type TestApp } from './support/app.js';
import { waitFor } from './support/wait.js';
import { multipartBody, storeContents } from './support/media.js';

const MB = 1024 * 1024;
const UPLOAD = 128 * MB;

/**
 * The server's live memory (heap and buffers) after a full garbage collection. Resident size would also
 * count read buffers not yet collected, which depends on the Node version's collector (about 30 MB on Node 20,
 * over 60 MB on Node 24, whatever the upload's size), not on whether the upload is held.
 */
const collectGarbage = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();
function liveMemory(): number {
  collectGarbage();
  const { heapUsed, arrayBuffers } = process.memoryUsage();
  return heapUsed + arrayBuffers;
}

/** Samples live memory while `work` runs; returns its result and the most memory grew meanwhile. */
async function peakGrowth<T>(work: () => Promise<T>): Promise<{ result: T; grown: number }> {
  const before = liveMemory();
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, liveMemory())), 50);
  try {
    const result = await work();
    return { result, grown: Math.max(peak, liveMemory()) - before };
  } finally {
    clearInterval(sampler);
  }
}

/**
 * The uploading client, run as a child process so that the server's memory is measured alone: it sends a
 * multipart upload of `total` bytes of file data, generated as it goes (one 64 KiB chunk held, whatever the
 * size), chunked (or declaring its Content-Length, or going away after `total` bytes), and prints the
 * answer as JSON once the whole body is sent (or the server closed the connection after answering).
 */
const CLIENT = `
const http = require('node:http');
const [port, token, total, mode] = process.argv.slice(1);
const boundary = '----loa-limit-test';
let fields = '';
if (mode === 'fields') for (let i = 0; i < 12; i++) fields += '--' + boundary + '\\r\\nContent-Disposition: form-data; name="f' + i + '"\\r\\n\\r\\nThôn Đông\\r\\n';
const head = Buffer.from(fields + '--' + boundary + '\\r\\nContent-Disposition: form-data; name="file"; filename="Bản tin quá lớn.wav"\\r\\nContent-Type: audio/wav\\r\\n\\r\\n');
const tail = Buffer.from('\\r\\n--' + boundary + '--\\r\\n');
const chunk = Buffer.alloc(64 * 1024, 0x55);
const headers = { authorization: 'Bearer ' + token, 'content-type': 'multipart/form-data; boundary=' + boundary };
if (mode === 'length') headers['content-length'] = head.length + Number(total) + tail.length;
const req = http.request({ host: '127.0.0.1', port: Number(port), method: 'POST', path: '/api/v1/media', headers });
let sent = 0, answer, finished = false;
const done = () => { if (answer && finished) { process.stdout.write(JSON.stringify({ ...answer, sent })); process.exit(0); } };
req.on('response', (res) => {
  let body = '';
  res.setEncoding('utf8');
  res.on('data', (d) => (body += d));
  res.on('end', () => { answer = { status: res.statusCode, body, closes: res.headers.connection === 'close' }; done(); });
});
req.on('error', (err) => { if (mode === 'abort') return; if (!answer) { console.error(err); process.exit(1); } finished = true; done(); });
req.write(head);
const pump = () => {
  while (sent < Number(total)) {
    const piece = sent + chunk.length <= Number(total) ? chunk : chunk.subarray(0, Number(total) - sent);
    sent += piece.length;
    if (!req.write(piece)) { req.once('drain', pump); return; }
  }
  if (mode === 'abort') {
    // Give the server a moment to read what was sent, then go away mid-upload.
    setTimeout(() => { req.destroy(); process.stdout.write(JSON.stringify({ status: 0, body: '', closes: true, sent })); process.exit(0); }, 300);
    return;
  }
  req.end(tail, () => { finished = true; done(); });
};
pump();
`;

async function streamUpload(
  port: number,
  token: string,
  totalBytes: number,
  mode: 'chunked' | 'length' | 'abort' | 'fields' = 'chunked',
): Promise<{ status: number; body: string; closes: boolean; sent: number }> {
  const child = spawn(process.execPath, ['-e', CLIENT, String(port), token, String(totalBytes), mode], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  if (code !== 0) throw new Error(`upload client failed (${code}): ${err}`);
  return JSON.parse(out) as { status: number; body: string; closes: boolean; sent: number };
}

describe('upload size limit (MEDIA_MAX_MB=1)', () => {
  let t: TestApp;
  let port: number;
  beforeAll(async () => {
    t = await createTestApp({ env: { MEDIA_MAX_MB: '1' }, listen: true });
    const address = t.app.server.address();
    if (!address || typeof address === 'string') throw new Error('not listening');
    port = address.port;
  });
  afterAll(async () => t.close());

  it('answers 413 to a 128 MB upload, leaves nothing on disk and does not hold the upload in memory', async () => {
    // Warm up the route and the parser, so that what is measured is the upload itself.
    await streamUpload(port, t.adminToken, 2 * MB);
    const { result: res, grown } = await peakGrowth(() => streamUpload(port, t.adminToken, UPLOAD));

    expect(res.status).toBe(413);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'payload_too_large', status: 413 });
    // Read to the end, then answered on a connection that stays open.
    expect(res.sent).toBe(UPLOAD);
    expect(res.closes).toBe(false);
    expect(storeContents(t.dataDir)).toEqual({ hashes: [], temps: [] });
    // At no moment did the server hold the upload (or any large part of it).
    expect(grown).toBeLessThan(UPLOAD / 2);
  });

  it('refuses an upload whose Content-Length is over the limit without storing it, and keeps serving', async () => {
    const res = await streamUpload(port, t.adminToken, 8 * MB, 'length');
    expect(res.status).toBe(413);
    // Read to the end without parsing, so that the client gets the answer on a connection it may reuse.
    expect(res).toMatchObject({ sent: 8 * MB, closes: false });
    expect(JSON.parse(res.body)).toMatchObject({ code: 'payload_too_large' });
    expect(storeContents(t.dataDir)).toEqual({ hashes: [], temps: [] });

    // A refusal before the body is read (here: a bad token) is answered as cleanly.
    const anonymous = await streamUpload(port, 'not-a-token', 8 * MB);
    expect(anonymous).toMatchObject({ status: 401, sent: 8 * MB, closes: false });

    // An upload just under the limit is read to the end (it is not audio: 415), so the limit is the file's.
    const { body, contentType } = multipartBody({
      files: [{ bytes: Buffer.alloc(MB - 1024, 0x55), filename: 'gần giới hạn.wav' }],
    });
    const under = await fetch(`http://127.0.0.1:${port}/api/v1/media`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': contentType },
      body,
    });
    expect(under.status).toBe(415);
    expect(storeContents(t.dataDir)).toEqual({ hashes: [], temps: [] });
  });

  it('refuses a form with too many fields before its file without buffering the file (413)', async () => {
    // The parser stops at its field limit and lets go of the request; what follows (here 128 MB) is
    // read and thrown away, not queued in memory for a parser that no longer reads (see above for what
    // memory does grow by).
    const { result: res, grown } = await peakGrowth(() => streamUpload(port, t.adminToken, UPLOAD, 'fields'));
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'payload_too_large' });
    expect(res).toMatchObject({ sent: UPLOAD, closes: false });
    expect(grown).toBeLessThan(UPLOAD / 2);
    expect(storeContents(t.dataDir)).toEqual({ hashes: [], temps: [] });
  });

  it('leaves nothing on disk when the client goes away mid-upload', async () => {
    await streamUpload(port, t.adminToken, MB / 2, 'abort');
    await waitFor(() => {
      const { hashes, temps } = storeContents(t.dataDir);
      return hashes.length === 0 && temps.length === 0;
    }, 'the temporary file to be removed');
    // The server goes on serving.
    expect((await t.request('GET', '/api/v1/media', { token: t.adminToken })).statusCode).toBe(200);
  });
});
