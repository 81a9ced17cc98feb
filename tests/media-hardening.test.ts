/**
 * What a hostile or unlucky client can do to uploads and downloads: malformed and cut-short forms, odd
 * file names, files that ffmpeg accepts and then chokes on, racing uploads, missing files, non-canonical
 * links, odd ranges, clients that go away mid-download; and what must never reach a log (signatures).
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commands } from '../src/db/schema/index.js';
import { LINK_MARGIN_MS } from '../src/media/links.js';
import { createTestApp, problem, type TestApp } from './support/app.js';
import { makeManyChannelWav, makeSine } from './support/audio.js';
import { ManualClock } from './support/clock.js';
import { multipartBody, openFds, sha256Of, storeContents, upload, type MediaJson } from './support/media.js';
import { waitFor } from './support/wait.js';

const TITLE = 'Thông báo lịch tiêm phòng dại – Thôn Đông';
const HOUR = 3_600_000;

let fixtures: string;
let wav: Buffer;
beforeAll(async () => {
  fixtures = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-media-hard-'));
  wav = fs.readFileSync(await makeSine(fixtures, { seconds: 1, format: 'wav', frequency: 440 }));
});
afterAll(() => fs.rmSync(fixtures, { recursive: true, force: true }));

/** Log lines written by the app, for tests that read them. */
function captureLog(): { lines: string[]; stream: Writable } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
  return { lines, stream };
}

function post(t: TestApp, body: Buffer | string, contentType: string, token = t.adminToken) {
  return t.app.inject({
    method: 'POST',
    url: '/api/v1/media',
    headers: { 'content-type': contentType, authorization: `Bearer ${token}` },
    payload: body,
  });
}

describe('uploads a hostile client may send', () => {
  let t: TestApp;
  let log: ReturnType<typeof captureLog>;
  beforeAll(async () => {
    log = captureLog();
    t = await createTestApp({ listen: true, logger: { level: 'warn', stream: log.stream } });
  });
  afterAll(async () => t.close());

  it('answers a malformed or cut-short form with 400 (never 500, never a request left hanging)', async () => {
    const head =
      '--xx\r\nContent-Disposition: form-data; name="file"; filename="Bản tin.wav"\r\n' +
      'Content-Type: audio/wav\r\n\r\n';
    const cases: [string, Buffer | string, string][] = [
      ['no boundary', 'abc', 'multipart/form-data'],
      ['not a form', 'xin chào', 'multipart/form-data; boundary=xx'],
      // The body stops inside the file part: the parser gives the part up before the route reads it.
      [
        'cut in the file',
        Buffer.concat([Buffer.from(head), wav.subarray(0, 5000)]),
        'multipart/form-data; boundary=xx',
      ],
      // The file part ends, the closing delimiter never comes.
      [
        'no closing delimiter',
        Buffer.concat([Buffer.from(head), wav, Buffer.from('\r\n--xx')]),
        'multipart/form-data; boundary=xx',
      ],
    ];
    for (const [name, body, contentType] of cases) {
      const res = await post(t, body, contentType);
      expect(res.statusCode, name).toBe(400);
      expect(problem(res).code, name).toBe('bad_request');
    }
    expect(storeContents(t.dataDir)).toEqual({ hashes: [], temps: [] });
    expect(log.lines.filter((l) => /"level":50/.test(l))).toEqual([]);
  });

  it('answers an upload cut short over a real connection, after the file part has begun to arrive', async () => {
    const address = t.app.server.address();
    if (!address || typeof address === 'string') throw new Error('not listening');
    const head =
      '--xx\r\nContent-Disposition: form-data; name="file"; filename="Bản tin.wav"\r\n' +
      'Content-Type: audio/wav\r\n\r\n';
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: address.port,
          method: 'POST',
          path: '/api/v1/media',
          headers: {
            'content-type': 'multipart/form-data; boundary=xx',
            authorization: `Bearer ${t.adminToken}`,
          },
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.write(head);
      req.write(wav);
      // The server is reading the file part by now; then the body ends without its closing delimiter.
      setTimeout(() => req.end(), 200);
    });
    expect(status).toBe(400);
    expect(storeContents(t.dataDir)).toEqual({ hashes: [], temps: [] });
  });

  it('takes the file before or after the text fields, and only one file', async () => {
    const after = multipartBody({
      files: [{ bytes: wav, filename: 'tệp.wav' }],
      fieldsAfter: { title: TITLE },
    });
    const res = await post(t, after.body, after.contentType);
    expect(res.statusCode).toBe(201);
    expect(res.json<MediaJson>()).toMatchObject({ title: TITLE, originalName: 'tệp.wav' });

    const two = multipartBody({
      files: [
        { bytes: wav, filename: 'một.wav' },
        { bytes: wav, filename: 'hai.wav' },
      ],
    });
    const refused = await post(t, two.body, two.contentType);
    expect(refused.statusCode).toBe(400);
    expect(problem(refused).errors).toEqual([{ field: 'body.file', message: expect.any(String) as string }]);

    const elsewhere = multipartBody({ files: [{ bytes: wav, filename: 'a.wav', field: 'audio' }] });
    const wrongName = await post(t, elsewhere.body, elsewhere.contentType);
    expect(wrongName.statusCode).toBe(400);
    expect(problem(wrongName).errors?.[0]?.field).toBe('body.audio');
  });

  it('refuses too many fields (413), an over-long or multi-line title and an absurd file name (400)', async () => {
    const fields = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`f${i}`, 'x']));
    const many = multipartBody({ files: [{ bytes: wav, filename: 'a.wav' }], fields });
    const tooMany = await post(t, many.body, many.contentType);
    expect(tooMany.statusCode).toBe(413);
    expect(problem(tooMany).detail).toMatch(/Too many parts/);

    for (const [title, message] of [
      ['ệ'.repeat(201), /200/],
      ['x'.repeat(5000), /too long/],
      ['Dòng một\nDòng hai', /control characters/],
      ['Thông\u0000báo', /control characters/],
    ] as const) {
      const res = await upload(t, t.adminToken, { bytes: wav, filename: 'a.wav' }, { title });
      expect(res.statusCode, title.slice(0, 20)).toBe(400);
      expect(problem(res).errors?.[0]).toMatchObject({
        field: 'body.title',
        message: expect.stringMatching(message) as string,
      });
    }

    const longName = await upload(t, t.adminToken, { bytes: wav, filename: `${'n'.repeat(300)}.wav` });
    expect(longName.statusCode).toBe(400);
    expect(problem(longName).errors?.[0]?.field).toBe('body.file');
    expect(storeContents(t.dataDir).temps).toEqual([]);
  });

  it('keeps only the last part of a file name, without control or direction characters', async () => {
    const cases: [string | Buffer, string, string][] = [
      ['C:\\Users\\Thôn Đông\\Bản tin sáng.wav', 'Bản tin sáng.wav', 'Bản tin sáng'],
      ['../../etc/Thông báo.wav', 'Thông báo.wav', 'Thông báo'],
      // Shown as "Loa xãvaw.exe" by anything that obeys the right-to-left override.
      ['Loa\u0007 xã\u202Eexe.wav', 'Loa xãexe.wav', 'Loa xãexe'],
      // Not UTF-8 (Latin-1 "Thông"): kept readable, with replacement characters, and round-trips.
      [Buffer.from([0x54, 0x68, 0xf4, 0x6e, 0x67, 0x2e, 0x77, 0x61, 0x76]), 'Th\ufffdng.wav', 'Th\ufffdng'],
      // A long name is cut to 200 characters for the title, on whole characters (no half of an emoji).
      [`${'a'.repeat(199)}📢📢.wav`, `${'a'.repeat(199)}📢📢.wav`, `${'a'.repeat(199)}📢`],
    ];
    for (const [filename, originalName, title] of cases) {
      const res = await upload(t, t.adminToken, { bytes: wav, filename });
      expect(res.statusCode, originalName).toBe(201);
      const body = res.json<MediaJson>();
      expect(body).toMatchObject({ originalName, title });
      const again = await t.request('GET', `/api/v1/media/${body.id}`, { token: t.adminToken });
      expect(again.json()).toMatchObject({ originalName, title });
    }
  });

  it('answers 422 when ffmpeg accepts a file and then cannot process it, with nothing left behind', async () => {
    const weird = fs.readFileSync(makeManyChannelWav(fixtures, { channels: 9, seconds: 1 }));
    const before = storeContents(t.dataDir).hashes;
    const res = await upload(t, t.adminToken, { bytes: weird, filename: 'chín kênh.wav' });
    expect(res.statusCode).toBe(422);
    expect(problem(res)).toMatchObject({ code: 'audio_undecodable' });
    expect(storeContents(t.dataDir)).toEqual({ hashes: before, temps: [] });
    // Logged for the operator, with what ffmpeg said.
    const warning = log.lines.find((l) => l.includes('an accepted upload could not be processed'));
    expect(warning).toContain(sha256Of(weird));
    expect(warning).toContain('stderr');
  });

  it('stores identical uploads racing each other once, with no partial file ever under the name', async () => {
    const same = fs.readFileSync(await makeSine(fixtures, { seconds: 2, format: 'wav', frequency: 330 }));
    const results = await Promise.all(
      [1, 2, 3].map((n) => upload(t, t.adminToken, { bytes: same, filename: `bản ${n}.wav` })),
    );
    const bodies = results.map((r) => {
      expect(r.statusCode).toBe(201);
      return r.json<MediaJson>();
    });
    expect(new Set(bodies.map((b) => b.sha256))).toEqual(new Set([sha256Of(same)]));
    expect(new Set(bodies.map((b) => b.rendition.sha256)).size).toBe(1);
    const { hashes, temps } = storeContents(t.dataDir);
    expect(temps).toEqual([]);
    for (const sha of [bodies[0]?.sha256 ?? '', bodies[0]?.rendition.sha256 ?? '']) {
      expect(hashes.filter((h) => h === sha)).toHaveLength(1);
      expect(sha256Of(fs.readFileSync(t.app.services.media.store.pathOf(sha)))).toBe(sha);
    }
  });
});

describe('the store against the clean-up', () => {
  let t: TestApp;
  let clock: ManualClock;
  beforeAll(async () => {
    clock = new ManualClock(new Date().toISOString());
    t = await createTestApp({ clock });
  });
  afterAll(async () => t.close());

  it('dates a file from its arrival in the store, so a long render does not leave its original for removal', async () => {
    const store = t.app.services.media.store;
    const temp = store.tempPath();
    fs.writeFileSync(temp, `${TITLE} – bản gốc`);
    // Uploaded two hours ago; inspected and rendered since.
    const old = new Date(Date.now() - 2 * HOUR);
    fs.utimesSync(temp, old, old);
    const stored = await store.adopt({
      tempPath: temp,
      sha256: sha256Of(fs.readFileSync(temp)),
      sizeBytes: 0,
    });
    expect(fs.statSync(stored.path).mtimeMs).toBeGreaterThan(Date.now() - 60_000);
    // Its row is not written yet: the clean-up must still leave it alone.
    await t.app.services.media.cleanup();
    expect(fs.existsSync(stored.path)).toBe(true);
  });

  it('keeps a file reused between the clean-up listing it and removing it, and leaves no debris', async () => {
    const store = t.app.services.media.store;
    const temp = store.tempPath();
    fs.writeFileSync(temp, `${TITLE} – dùng lại`);
    const { sha256, path: file } = await store.putFile(temp);
    const old = new Date(clock.now().getTime() - 2 * HOUR);
    fs.utimesSync(file, old, old);
    const cutoff = new Date(clock.now().getTime() - HOUR);
    // Listed as old; then an upload reuses it (touch) before the removal.
    expect(await store.touch(sha256)).toBe(true);
    expect(await store.removeIfOlderThan(sha256, cutoff)).toBe(false);
    expect(sha256Of(fs.readFileSync(file))).toBe(sha256);

    fs.utimesSync(file, old, old);
    expect(await store.removeIfOlderThan(sha256, cutoff)).toBe(true);
    expect(fs.existsSync(file)).toBe(false);
    expect(await store.touch(sha256)).toBe(false);
    expect(storeContents(t.dataDir).temps).toEqual([]);
  });

  it('keeps a file as long as any link to it is valid, to the second', async () => {
    const media = t.app.services.media;
    const temp = media.store.tempPath();
    fs.writeFileSync(temp, `${TITLE} – lệnh phát`);
    const { sha256, path: file } = await media.store.putFile(temp);
    const old = new Date(clock.now().getTime() - 2 * HOUR);
    fs.utimesSync(file, old, old);
    // A command expiring at a fraction of a second: its link is rounded up to the next second.
    const expiresAt = new Date(Math.floor(clock.now().getTime() / 1000) * 1000 + 600_400);
    t.app.db
      .insert(commands)
      .values({
        id: 'cmd_margin_test',
        type: 'play',
        priority: 'normal',
        params: { source: { kind: 'media', url: 'https://x.example/a.mp3', sha256, durationMs: 1000 } },
        createdAt: clock.now(),
        expiresAt,
        targetCount: 1,
      })
      .run();
    const url = new URL(media.links.urlFor(sha256, new Date(expiresAt.getTime() + LINK_MARGIN_MS)));
    clock.advance(expiresAt.getTime() + LINK_MARGIN_MS + 300 - clock.now().getTime());
    // The link still works...
    const res = await t.app.inject({ method: 'GET', url: `${url.pathname}${url.search}` });
    expect(res.statusCode).toBe(200);
    // ...so the clean-up keeps its file.
    await media.cleanup();
    expect(fs.existsSync(file)).toBe(true);
    clock.advance(2_000);
    expect((await t.app.inject({ method: 'GET', url: `${url.pathname}${url.search}` })).statusCode).toBe(403);
    await media.cleanup();
    expect(fs.existsSync(file)).toBe(false);
  });
});

describe('serving files', () => {
  let t: TestApp;
  let log: ReturnType<typeof captureLog>;
  let item: MediaJson;
  let big: { sha256: string; size: number };
  let port: number;
  beforeAll(async () => {
    log = captureLog();
    // Below `warn`, so that anything Fastify logs about requests is seen.
    t = await createTestApp({ listen: true, logger: { level: 'debug', stream: log.stream } });
    const address = t.app.server.address();
    if (!address || typeof address === 'string') throw new Error('not listening');
    port = address.port;
    item = (await upload(t, t.adminToken, { bytes: wav, filename: `${TITLE}.wav` })).json<MediaJson>();
    // A file larger than what socket buffers hold, so that a client going away leaves a stream mid-way.
    const temp = t.app.services.media.store.tempPath();
    fs.writeFileSync(temp, Buffer.alloc(8 * 1024 * 1024, 0x4c));
    const stored = await t.app.services.media.store.putFile(temp);
    big = { sha256: stored.sha256, size: stored.sizeBytes };
  });
  afterAll(async () => t.close());

  const link = (sha256 = item.rendition.sha256) => {
    const url = new URL(t.app.services.media.links.urlFor(sha256, new Date(Date.now() + 600_000)));
    return { path: url.pathname, query: url.search, signature: url.searchParams.get('signature') ?? '' };
  };

  it('refuses other spellings of a link: leading zeros in expires, other bits in the signature', async () => {
    const { path: p, query } = link();
    const params = new URLSearchParams(query);
    const expires = params.get('expires') ?? '';
    const signature = params.get('signature') ?? '';
    expect((await t.app.inject({ method: 'GET', url: `${p}${query}` })).statusCode).toBe(200);
    // The last of 43 base64url characters carries 2 unused bits: flipping them decodes to the same bytes.
    const last = signature.at(-1) ?? 'A';
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const twin = alphabet[alphabet.indexOf(last) ^ 1] ?? 'A';
    expect(Buffer.from(`${signature.slice(0, -1)}${twin}`, 'base64url')).toEqual(
      Buffer.from(signature, 'base64url'),
    );
    for (const url of [
      `${p}?expires=0${expires}&signature=${signature}`,
      `${p}?expires=+${expires}&signature=${signature}`,
      `${p}?expires=${expires}&signature=${signature.slice(0, -1)}${twin}`,
      `${p}?expires=${expires}&signature=${signature}=`,
      `${p.toUpperCase().replace('/DOWNLOADS/', '/downloads/')}${query}`,
    ]) {
      const res = await t.app.inject({ method: 'GET', url });
      expect(res.statusCode, url).toBe(403);
      expect(problem(res).code).toBe('invalid_signature');
    }
  });

  it('answers odd ranges as RFC 9110 says', async () => {
    const { path: p, query } = link();
    const size = item.rendition.sizeBytes;
    const get = (headers: Record<string, string>) =>
      t.app.inject({ method: 'GET', url: `${p}${query}`, headers });
    const whole = async (headers: Record<string, string>) => {
      const res = await get(headers);
      expect(res.statusCode, JSON.stringify(headers)).toBe(200);
      expect(sha256Of(res.rawPayload)).toBe(item.rendition.sha256);
    };
    // Ignored: several ranges, an inverted one, If-Range with a date or a weak tag (only a strong tag matches).
    await whole({ range: 'bytes=0-9,20-29' });
    await whole({ range: 'bytes=9-3' });
    await whole({ range: 'bytes=0-9', 'if-range': 'Thu, 26 Nov 2026 01:00:00 GMT' });
    await whole({ range: 'bytes=0-9', 'if-range': `W/"${item.rendition.sha256}"` });

    const matching = await get({ range: 'bytes=0-9', 'if-range': `"${item.rendition.sha256}"` });
    expect(matching.statusCode).toBe(206);
    expect(matching.rawPayload.length).toBe(10);
    const unitCase = await get({ range: 'Bytes=10-19' });
    expect(unitCase.headers['content-range']).toBe(`bytes 10-19/${size}`);

    // Numbers beyond any file: clamped to it, or 416 with the size.
    const huge = await get({ range: 'bytes=0-99999999999999999999999' });
    expect(huge.statusCode).toBe(206);
    expect(huge.headers['content-range']).toBe(`bytes 0-${size - 1}/${size}`);
    const suffix = await get({ range: 'bytes=-99999999999999999999999' });
    expect(suffix.statusCode).toBe(206);
    expect(sha256Of(suffix.rawPayload)).toBe(item.rendition.sha256);
    for (const range of ['bytes=-0', `bytes=${size}-`, 'bytes=99999999999999999999999-']) {
      const res = await get({ range });
      expect(res.statusCode, range).toBe(416);
      expect(res.headers['content-range']).toBe(`bytes */${size}`);
    }
  });

  it('never writes a download signature to the log, not even for a mistyped download path', async () => {
    const { path: p, query, signature } = link();
    for (const url of [`${p}${query}`, `${p}/${query}`, `/downloads${query}`, `/downloads/x/y.mp3${query}`]) {
      for (const method of ['GET', 'HEAD'] as const) {
        const res = await t.app.inject({ method, url });
        expect([200, 404], url).toContain(res.statusCode);
      }
    }
    // Any method, any path: the request line is logged without the signature.
    for (const method of ['POST', 'DELETE'] as const) {
      await t.app.inject({ method, url: `${p}${query}` });
      await t.app.inject({ method, url: `/api/v1/media${query}` });
    }
    const missing = link('0'.repeat(64));
    expect((await t.app.inject({ method: 'GET', url: `${missing.path}${missing.query}` })).statusCode).toBe(
      404,
    );
    // The app does log requests at this level (here: the uploads above).
    expect(log.lines.some((l) => l.includes('incoming request'))).toBe(true);
    expect(log.lines.filter((l) => l.includes(signature) || l.includes(missing.signature))).toEqual([]);
  });

  it('answers a file missing from the store with a clear 404, logged, for users and devices', async () => {
    const bytes = fs.readFileSync(await makeSine(fixtures, { seconds: 1, format: 'wav', frequency: 770 }));
    const orphan = (await upload(t, t.adminToken, { bytes, filename: 'mất tệp.wav' })).json<MediaJson>();
    const device = link(orphan.rendition.sha256);
    // Served once (the size is remembered), then lost from the disk.
    expect((await t.app.inject({ method: 'GET', url: `${device.path}${device.query}` })).statusCode).toBe(
      200,
    );
    fs.rmSync(t.app.services.media.store.pathOf(orphan.rendition.sha256));

    const user = await t.request('GET', `/api/v1/media/${orphan.id}/audio`, { token: t.adminToken });
    expect(user.statusCode).toBe(404);
    expect(problem(user).detail).toMatch(/missing from the store/);
    const fromDevice = await t.app.inject({ method: 'GET', url: `${device.path}${device.query}` });
    expect(fromDevice.statusCode).toBe(404);
    const errors = log.lines.filter(
      (l) => l.includes('stored audio file is missing') && l.includes(orphan.rendition.sha256),
    );
    expect(errors).toHaveLength(2);
    expect(errors.every((l) => l.includes('"level":50'))).toBe(true);
    expect(errors.join('')).not.toContain(device.signature);
  });

  it('closes the file of every download a client abandons (no descriptor leak)', async () => {
    const { path: p, query } = link(big.sha256);
    const abandon = (readFirst: boolean) =>
      new Promise<void>((resolve, reject) => {
        const req = http.get({ host: '127.0.0.1', port, path: `${p}${query}` }, (res) => {
          if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
          if (!readFirst) {
            req.destroy();
            return;
          }
          res.once('data', () => req.destroy());
        });
        req.on('close', resolve);
        req.on('error', (err: NodeJS.ErrnoException) =>
          err.code === 'ECONNRESET' ? resolve() : reject(err),
        );
      });
    const connections = () =>
      new Promise<number>((resolve, reject) =>
        t.app.server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
      );
    // Once first, so that whatever the server opens once (and keeps) is open before counting.
    await abandon(true);
    await waitFor(async () => (await connections()) === 0, 'the first connection to close');
    const before = openFds();
    for (let round = 0; round < 5; round++) {
      await Promise.all(Array.from({ length: 20 }, (_, i) => abandon(i % 2 === 0)));
    }
    // Every socket and every file handle closed again.
    await waitFor(async () => (await connections()) === 0 && openFds() <= before, 'descriptors to be closed');
    // And the server still serves the whole file.
    const res = await fetch(`http://127.0.0.1:${port}${p}${query}`);
    expect(sha256Of(Buffer.from(await res.arrayBuffer()))).toBe(big.sha256);
  });
});
