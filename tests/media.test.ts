import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newId } from '../src/lib/ids.js';
import { programmeMedia, programmeRevisions, programmes } from '../src/db/schema/index.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { makeSine, makeTextFile, makeTruncatedMp3, probe } from './support/audio.js';
import { sha256Of, storeContents, upload, type MediaJson } from './support/media.js';

const TITLE = 'Thông báo lịch tiêm phòng dại – Thôn Đông';

let fixtures: string;
let wav: Buffer;
let mp3: Buffer;
let ogg: Buffer;
let quietWav: Buffer;

beforeAll(async () => {
  fixtures = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-media-fixtures-'));
  const [w, m, o, q] = await Promise.all([
    makeSine(fixtures, { seconds: 2, format: 'wav', frequency: 440 }),
    makeSine(fixtures, { seconds: 3, format: 'mp3', frequency: 660 }),
    makeSine(fixtures, { seconds: 2, format: 'ogg-vorbis', frequency: 880 }),
    makeSine(fixtures, { seconds: 2, format: 'wav', lufs: -32, modulated: true }),
  ]);
  [wav, mp3, ogg, quietWav] = [w, m, o, q].map((f) => fs.readFileSync(f)) as [Buffer, Buffer, Buffer, Buffer];
});
afterAll(() => fs.rmSync(fixtures, { recursive: true, force: true }));

describe('POST /api/v1/media', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let broadcaster: string;
  beforeAll(async () => {
    t = await createTestApp();
    tree = await createAreaTree(t);
    broadcaster = await t.createUser('broadcaster', tree.communeA.id);
  });
  afterAll(async () => t.close());

  it('reads the real format and duration whatever the name and type claim, and keeps a Vietnamese title', async () => {
    // A WAV that claims to be an Ogg called .mp3.
    const res = await upload(t, broadcaster, {
      bytes: wav,
      filename: `${TITLE}.mp3`,
      contentType: 'audio/ogg',
    });
    expect(res.statusCode).toBe(201);
    const body = res.json<MediaJson>();
    expect(body).toMatchObject({
      title: TITLE,
      originalName: `${TITLE}.mp3`,
      format: 'wav',
      sizeBytes: wav.length,
      sha256: sha256Of(wav),
      areaId: tree.communeA.id,
      createdBy: { username: expect.any(String) as string },
      rendition: { bitrateKbps: 64 },
    });
    expect(body.id).toMatch(/^med_/);
    expect(Math.abs(body.durationMs - 2000)).toBeLessThan(100);
    expect(Math.abs(body.rendition.durationMs - 2000)).toBeLessThan(150);
    expect(body.loudnessLufs).toEqual(expect.any(Number));

    // The rendition is the device format, in the store under its hash.
    const renditionFile = path.join(
      t.dataDir,
      'media',
      body.rendition.sha256.slice(0, 2),
      body.rendition.sha256,
    );
    const bytes = fs.readFileSync(renditionFile);
    expect(sha256Of(bytes)).toBe(body.rendition.sha256);
    expect(bytes.length).toBe(body.rendition.sizeBytes);
    const probed = await probe(renditionFile);
    expect(probed).toMatchObject({ codec: 'mp3', sampleRate: 44100, channels: 1, bitRate: 64000 });

    // What the database and the API give back later is the same, tone marks included.
    const again = await t.request('GET', `/api/v1/media/${body.id}`, { token: broadcaster });
    expect(again.json()).toEqual(body);
  });

  it('accepts MP3 and OGG with their real formats', async () => {
    // macOS sends file names decomposed (NFD): stored composed, as typed elsewhere.
    const fromMp3 = await upload(t, broadcaster, {
      bytes: mp3,
      filename: 'Bản tin sáng.wav'.normalize('NFD'),
      contentType: 'audio/wav',
    });
    expect(fromMp3.statusCode).toBe(201);
    expect(fromMp3.json()).toMatchObject({
      format: 'mp3',
      title: 'Bản tin sáng',
      originalName: 'Bản tin sáng.wav',
    });
    expect(Math.abs(fromMp3.json<MediaJson>().durationMs - 3000)).toBeLessThan(150);

    const fromOgg = await upload(
      t,
      broadcaster,
      { bytes: ogg, filename: 'nhạc hiệu.flac', contentType: 'audio/flac' },
      { title: 'Nhạc hiệu đài xã Hải Phú' },
    );
    expect(fromOgg.statusCode).toBe(201);
    expect(fromOgg.json()).toMatchObject({ format: 'ogg/vorbis', title: 'Nhạc hiệu đài xã Hải Phú' });
  });

  it('normalises the rendition to within 1 LU of the target (-16 LUFS), from a quiet recording', async () => {
    const res = await upload(t, broadcaster, { bytes: quietWav, filename: 'nhỏ.wav' });
    expect(res.statusCode).toBe(201);
    const body = res.json<MediaJson>();
    expect(body.loudnessLufs).toBeLessThan(-28);
    expect(body.rendition.loudnessLufs).not.toBeNull();
    expect(Math.abs((body.rendition.loudnessLufs ?? 0) + 16)).toBeLessThanOrEqual(1);
    // Measured independently of what the server reported.
    const measured = await t.app.services.media.audio.loudness(
      path.join(t.dataDir, 'media', body.rendition.sha256.slice(0, 2), body.rendition.sha256),
    );
    expect(Math.abs((measured ?? 0) + 16)).toBeLessThanOrEqual(1);
  });

  it('refuses a text file renamed .mp3 with 415 and a truncated MP3 with 422, leaving no temporary file', async () => {
    const text = fs.readFileSync(makeTextFile(fixtures));
    const res = await upload(t, broadcaster, {
      bytes: text,
      filename: 'thông báo.mp3',
      contentType: 'audio/mpeg',
    });
    expect(res.statusCode).toBe(415);
    expect(problem(res)).toMatchObject({ code: 'unsupported_media_type' });
    expect(problem(res).detail).toMatch(/text/);

    const truncated = fs.readFileSync(await makeTruncatedMp3(fixtures, { seconds: 4 }));
    const bad = await upload(t, broadcaster, {
      bytes: truncated,
      filename: 'cắt.mp3',
      contentType: 'audio/mpeg',
    });
    expect(bad.statusCode).toBe(422);
    expect(problem(bad)).toMatchObject({ code: 'audio_undecodable' });

    expect(storeContents(t.dataDir).temps).toEqual([]);
  });

  it('names the field when the request is not a usable upload', async () => {
    const noFile = await upload(t, broadcaster, null, { title: TITLE });
    expect(noFile.statusCode).toBe(400);
    expect(problem(noFile).errors).toEqual([{ field: 'body.file', message: expect.any(String) as string }]);

    const longTitle = await upload(
      t,
      broadcaster,
      { bytes: wav, filename: 'a.wav' },
      { title: 'â'.repeat(201) },
    );
    expect(longTitle.statusCode).toBe(400);
    expect(problem(longTitle).errors?.[0]?.field).toBe('body.title');

    const json = await t.request('POST', '/api/v1/media', { token: broadcaster, body: { title: TITLE } });
    expect(json.statusCode).toBe(415);
    expect(problem(json).code).toBe('unsupported_media_type');
    expect(storeContents(t.dataDir).temps).toEqual([]);
  });

  it("places media in an area of the uploader's subtree only", async () => {
    const inHamlet = await upload(
      t,
      broadcaster,
      { bytes: wav, filename: 'thôn.wav' },
      { areaId: tree.hamletA.id },
    );
    expect(inHamlet.statusCode).toBe(201);
    expect(inHamlet.json()).toMatchObject({ areaId: tree.hamletA.id });

    const outside = await upload(
      t,
      broadcaster,
      { bytes: wav, filename: 'x.wav' },
      { areaId: tree.communeB.id },
    );
    expect(outside.statusCode).toBe(403);
    expect(problem(outside).detail).toMatch(/areaId/);

    // An admin's upload without an area is for every area.
    const everywhere = await upload(t, t.adminToken, { bytes: wav, filename: 'toàn tỉnh.wav' });
    expect(everywhere.statusCode).toBe(201);
    expect(everywhere.json()).toMatchObject({ areaId: null, createdBy: { username: 'admin' } });
  });

  it('lets only admins, district operators and broadcasters upload; everyone else reads', async () => {
    const technician = await t.createUser('technician', tree.communeA.id);
    const approver = await t.createUser('approver', tree.communeA.id);
    const operator = await t.createUser('district_operator', tree.district.id);
    for (const token of [technician, approver]) {
      const res = await upload(t, token, { bytes: wav, filename: 'x.wav' });
      expect(res.statusCode).toBe(403);
      expect(problem(res).code).toBe('forbidden');
    }
    const byOperator = await upload(t, operator, { bytes: wav, filename: 'huyện.wav' });
    expect(byOperator.statusCode).toBe(201);
    for (const token of [technician, approver]) {
      const list = await t.request('GET', '/api/v1/media', { token });
      expect(list.statusCode).toBe(200);
      expect(list.json<{ total: number }>().total).toBeGreaterThan(0);
    }
  });

  it('requires a token', async () => {
    const res = await upload(t, undefined, { bytes: wav, filename: 'x.wav' });
    expect(res.statusCode).toBe(401);
    expect(problem(res).code).toBe('unauthenticated');
    expect((await t.request('GET', '/api/v1/media')).statusCode).toBe(401);
  });
});

describe('the store', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await createTestApp();
  });
  afterAll(async () => t.close());

  it('stores the same bytes once, and renders them once', async () => {
    const first = (await upload(t, t.adminToken, { bytes: mp3, filename: 'một.mp3' })).json<MediaJson>();
    const second = await upload(t, t.adminToken, { bytes: mp3, filename: 'hai.mp3' });
    expect(second.statusCode).toBe(201);
    const body = second.json<MediaJson>();
    expect(body.id).not.toBe(first.id);
    expect(body.title).toBe('hai');
    expect(body.sha256).toBe(first.sha256);
    expect(body.rendition).toEqual(first.rendition);

    // One original and one rendition, whatever the number of uploads.
    const { hashes, temps } = storeContents(t.dataDir);
    expect(hashes).toEqual([first.sha256, first.rendition.sha256].sort());
    expect(temps).toEqual([]);
    const audit = t.query(
      `SELECT action, details FROM audit_log WHERE action = 'media.upload' ORDER BY id`,
    ) as {
      details: string;
    }[];
    expect(audit.map((a) => JSON.parse(a.details) as { reusedRendition: boolean })).toMatchObject([
      { reusedRendition: false },
      { reusedRendition: true },
    ]);
  });
});

describe('reading, searching and deleting', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let broadcasterA: string;
  let broadcasterB: string;
  let communeMedia: MediaJson;
  let provinceMedia: MediaJson;
  beforeAll(async () => {
    t = await createTestApp();
    tree = await createAreaTree(t);
    broadcasterA = await t.createUser('broadcaster', tree.communeA.id);
    broadcasterB = await t.createUser('broadcaster', tree.communeB.id);
    communeMedia = (
      await upload(t, broadcasterA, { bytes: wav, filename: `${TITLE}.wav` })
    ).json<MediaJson>();
    provinceMedia = (
      await upload(
        t,
        t.adminToken,
        { bytes: ogg, filename: 'tỉnh.ogg' },
        { title: 'Bản tin Đài Phát thanh tỉnh Quảng Trị', areaId: tree.province.id },
      )
    ).json<MediaJson>();
  });
  afterAll(async () => t.close());

  it("hides another commune's media (404) and shows the province's to the communes below", async () => {
    const hidden = await t.request('GET', `/api/v1/media/${communeMedia.id}`, { token: broadcasterB });
    expect(hidden.statusCode).toBe(404);
    expect(problem(hidden).code).toBe('not_found');
    expect(
      (await t.request('GET', `/api/v1/media/${communeMedia.id}/audio`, { token: broadcasterB })).statusCode,
    ).toBe(404);
    // The service that programmes use gives the same answers.
    const actorB = {
      id: 'usr_b',
      username: 'b',
      role: 'broadcaster' as const,
      areaId: tree.communeB.id,
      areaPath: `/${tree.province.id}/${tree.district.id}/${tree.communeB.id}/`,
    };
    expect(() => t.app.services.media.getUsable(actorB, communeMedia.id)).toThrow(/not found/);
    expect(t.app.services.media.getUsable(actorB, provinceMedia.id).id).toBe(provinceMedia.id);

    const list = await t.request('GET', '/api/v1/media', { token: broadcasterB });
    expect(list.json<{ items: MediaJson[] }>().items.map((m) => m.id)).toEqual([provinceMedia.id]);
    const provincial = await t.request('GET', `/api/v1/media/${provinceMedia.id}`, { token: broadcasterB });
    expect(provincial.statusCode).toBe(200);
  });

  it('finds titles with or without tone marks, paginated', async () => {
    for (const q of ['tiêm phòng', 'tiem phong', 'THÔN ĐÔNG', 'thon dong']) {
      const res = await t.request('GET', `/api/v1/media?q=${encodeURIComponent(q)}`, { token: t.adminToken });
      expect(res.statusCode).toBe(200);
      expect(res.json<{ items: MediaJson[] }>().items.map((m) => m.id)).toEqual([communeMedia.id]);
    }
    const none = await t.request('GET', `/api/v1/media?q=${encodeURIComponent('50%_')}`, {
      token: t.adminToken,
    });
    expect(none.json()).toMatchObject({ items: [], total: 0 });

    const page = await t.request('GET', '/api/v1/media?limit=1&offset=1', { token: t.adminToken });
    expect(page.json()).toMatchObject({ total: 2, limit: 1, offset: 1 });
    expect(page.json<{ items: MediaJson[] }>().items.map((m) => m.id)).toEqual([communeMedia.id]);

    const bad = await t.request('GET', '/api/v1/media?limit=0', { token: t.adminToken });
    expect(bad.statusCode).toBe(400);
    expect(problem(bad).errors?.[0]?.field).toBe('query.limit');
  });

  it('serves the rendition to users with Range, ETag and If-None-Match', async () => {
    const url = `/api/v1/media/${communeMedia.id}/audio`;
    const auth = { authorization: `Bearer ${broadcasterA}` };
    const whole = await t.app.inject({ method: 'GET', url, headers: auth });
    expect(whole.statusCode).toBe(200);
    expect(whole.headers).toMatchObject({
      'content-type': 'audio/mpeg',
      'accept-ranges': 'bytes',
      etag: `"${communeMedia.rendition.sha256}"`,
      'content-length': String(communeMedia.rendition.sizeBytes),
    });
    expect(sha256Of(whole.rawPayload)).toBe(communeMedia.rendition.sha256);

    const part = await t.app.inject({ method: 'GET', url, headers: { ...auth, range: 'bytes=100-199' } });
    expect(part.statusCode).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 100-199/${communeMedia.rendition.sizeBytes}`);
    expect(part.headers['content-length']).toBe('100');
    expect(part.rawPayload.equals(whole.rawPayload.subarray(100, 200))).toBe(true);

    const tail = await t.app.inject({ method: 'GET', url, headers: { ...auth, range: 'bytes=-10' } });
    expect(tail.statusCode).toBe(206);
    expect(tail.rawPayload.equals(whole.rawPayload.subarray(-10))).toBe(true);

    const outside = await t.app.inject({
      method: 'GET',
      url,
      headers: { ...auth, range: `bytes=${communeMedia.rendition.sizeBytes}-` },
    });
    expect(outside.statusCode).toBe(416);
    expect(problem(outside).code).toBe('range_not_satisfiable');
    expect(outside.headers['content-range']).toBe(`bytes */${communeMedia.rendition.sizeBytes}`);

    const cached = await t.app.inject({
      method: 'GET',
      url,
      headers: { ...auth, 'if-none-match': `"${communeMedia.rendition.sha256}"` },
    });
    expect(cached.statusCode).toBe(304);
    expect(cached.rawPayload.length).toBe(0);
  });

  it('refuses to delete media a programme uses (409 naming it), then deletes it once unused', async () => {
    const now = new Date();
    const programmeId = newId('prg');
    const revisionId = newId('rev');
    const programmeTitle = 'Bản tin sáng thứ Hai';
    t.app.db.transaction((tx) => {
      tx.insert(programmes)
        .values({
          id: programmeId,
          areaId: tree.communeA.id,
          kind: 'bulletin',
          title: programmeTitle,
          titleSearch: 'ban tin sang thu hai',
          category: 'news',
          status: 'draft',
          currentRevisionId: revisionId,
          createdAt: now,
          updatedAt: now,
        })
        .run();
      tx.insert(programmeRevisions)
        .values({
          id: revisionId,
          programmeId,
          number: 1,
          title: programmeTitle,
          category: 'news',
          content: { segments: [{ mediaId: communeMedia.id }] },
          status: 'draft',
          createdAt: now,
        })
        .run();
      tx.insert(programmeMedia).values({ revisionId, mediaId: communeMedia.id }).run();
    });

    const refused = await t.request('DELETE', `/api/v1/media/${communeMedia.id}`, { token: broadcasterA });
    expect(refused.statusCode).toBe(409);
    expect(problem(refused)).toMatchObject({ code: 'in_use' });
    expect(problem(refused).detail).toContain(programmeTitle);
    expect(problem(refused).detail).toContain(programmeId);

    // A broadcaster below may use the province's media but not delete it; another commune cannot see it.
    const notMine = await t.request('DELETE', `/api/v1/media/${provinceMedia.id}`, { token: broadcasterA });
    expect(notMine.statusCode).toBe(403);
    expect(
      (await t.request('DELETE', `/api/v1/media/${communeMedia.id}`, { token: broadcasterB })).statusCode,
    ).toBe(404);

    // Once the programme is deleted, the media can go.
    t.app.db.update(programmes).set({ deletedAt: new Date() }).run();
    const deleted = await t.request('DELETE', `/api/v1/media/${communeMedia.id}`, { token: broadcasterA });
    expect(deleted.statusCode).toBe(204);
    expect(
      (await t.request('GET', `/api/v1/media/${communeMedia.id}`, { token: broadcasterA })).statusCode,
    ).toBe(404);
    const audit = t.query(`SELECT action, target_id FROM audit_log WHERE action = 'media.delete'`);
    expect(audit).toEqual([{ action: 'media.delete', target_id: communeMedia.id }]);
  });
});
