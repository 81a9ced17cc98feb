/**
 * Programmes: bulletins rendered on save (Vietnamese text through the real eSpeak NG, uploaded recordings,
 * silences, area jingles) with the real ffmpeg, relays probed against a real local HTTP server, listing,
 * search, visibility and deletion.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { closedPortUrl } from './support/programmes.js';
import { makeSine } from './support/audio.js';

type Revision = {
  id: string;
  number: number;
  status: string;
  sha256: string | null;
  sizeBytes: number | null;
  durationMs: number | null;
  loudnessLufs: number | null;
  relayProbe: {
    reachable: boolean;
    status: number | null;
    contentType: string | null;
    error?: string;
  } | null;
  content: Record<string, unknown>;
};
type Programme = {
  id: string;
  title: string;
  kind: string;
  status: string;
  areaId: string;
  durationMs: number | null;
  current: Revision;
  approved: Revision | null;
  history: { action: string; revision: number; by: string; note: string | null }[];
  warnings: string[];
};

const TITLE = 'Thông báo lịch tiêm phòng dại – Thôn Đông';
const TEXT = 'Thông báo của Ủy ban nhân dân xã Hải Phú: lịch tiêm phòng dại cho chó, mèo.';

/** Uploads a file through POST /api/v1/media (multipart), as a browser would. */
async function upload(t: TestApp, token: string, file: string, fields: Record<string, string> = {}) {
  const boundary = `loa-${randomUUID()}`;
  const chunks: Buffer[] = [];
  for (const [name, value] of Object.entries(fields)) {
    chunks.push(
      Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`),
    );
  }
  chunks.push(
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${path.basename(file)}"\r\n` +
        'Content-Type: application/octet-stream\r\n\r\n',
    ),
    fs.readFileSync(file),
    Buffer.from(`\r\n--${boundary}--\r\n`),
  );
  const res = await t.app.inject({
    method: 'POST',
    url: '/api/v1/media',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': `multipart/form-data; boundary=${boundary}`,
    },
    payload: Buffer.concat(chunks),
  });
  if (res.statusCode !== 201) throw new Error(`upload: ${res.statusCode} ${res.body}`);
  return res.json<{ id: string; durationMs: number }>();
}

describe('programmes', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let dir: string;
  let broadcasterA: string;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-programmes-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  beforeEach(async () => {
    // The stations these tests relay listen on 127.0.0.1, which the probe leaves alone by default.
    t = await createTestApp({ env: { RELAY_PROBE_PRIVATE_NETWORKS: 'true' } });
    tree = await createAreaTree(t);
    broadcasterA = await t.createUser('broadcaster', tree.communeA.id, 'phat.thanh.vien');
  });
  afterEach(async () => t.close());

  const create = (body: unknown, token = broadcasterA) =>
    t.request('POST', '/api/v1/programmes', { token, body });
  const putJingles = (areaId: string, token: string, body: object) =>
    t.app.inject({
      method: 'PUT',
      url: `/api/v1/areas/${areaId}/jingles`,
      headers: { authorization: `Bearer ${token}` },
      payload: body,
    });

  /** How long the voice takes to read `text`, measured on the engine's own output. */
  async function spokenMs(text: string, options: { voice?: 'vi'; rate?: number }): Promise<number> {
    const wav = await t.app.services.tts.speak(text, options);
    try {
      return (await t.app.services.media.audio.inspect(wav)).durationMs;
    } finally {
      fs.rmSync(wav, { force: true });
    }
  }

  it('renders a bulletin of Vietnamese text, an uploaded recording and a silence into one device file', async () => {
    const tone = await makeSine(dir, { seconds: 2, format: 'mp3' });
    const recording = await upload(t, broadcasterA, tone, { title: 'Tiếng chuông báo' });

    const res = await create({
      title: TITLE,
      areaId: tree.communeA.id,
      category: 'health',
      content: {
        segments: [{ text: TEXT, voice: 'vi', rate: 160 }, { silenceMs: 1500 }, { mediaId: recording.id }],
      },
    });
    expect(res.statusCode).toBe(201);
    const programme = res.json<Programme>();
    expect(programme).toMatchObject({
      title: TITLE,
      kind: 'bulletin',
      status: 'draft',
      areaId: tree.communeA.id,
    });
    expect(programme.current).toMatchObject({ number: 1, status: 'draft', relayProbe: null });
    expect(programme.current.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(programme.current.loudnessLufs).toEqual(expect.any(Number));

    // The voice's part measured on the engine's own output for the same text and settings.
    const expected = (await spokenMs(TEXT, { voice: 'vi', rate: 160 })) + 1500 + recording.durationMs;
    expect(Math.abs(programme.current.durationMs! - expected)).toBeLessThan(250);
    expect(programme.durationMs).toBe(programme.current.durationMs);

    // The file in the store is what the revision says, in the device format.
    const audio = await t.request('GET', `/api/v1/programmes/${programme.id}/audio`, { token: broadcasterA });
    expect(audio.statusCode).toBe(200);
    expect(audio.headers['content-type']).toBe('audio/mpeg');
    expect(audio.headers.etag).toBe(`"${programme.current.sha256}"`);
    expect(createHash('sha256').update(audio.rawPayload).digest('hex')).toBe(programme.current.sha256);
    expect(audio.rawPayload.length).toBe(programme.current.sizeBytes);
    const info = await t.app.services.media.audio.inspect(
      t.app.services.media.store.pathOf(programme.current.sha256!),
    );
    expect(info).toMatchObject({ format: 'mp3', channels: 1, sampleRate: 44100 });

    // The recording is recorded as used: it cannot be deleted while the programme exists.
    expect(
      t.query(`SELECT media_id FROM programme_media WHERE revision_id = '${programme.current.id}'`),
    ).toEqual([{ media_id: recording.id }]);
    const del = await t.request('DELETE', `/api/v1/media/${recording.id}`, { token: broadcasterA });
    expect(del.statusCode).toBe(409);

    // Tone marks survive the round trip.
    const got = await t.request('GET', `/api/v1/programmes/${programme.id}`, { token: broadcasterA });
    expect(got.json<Programme>().current.content).toEqual({
      segments: [{ text: TEXT, voice: 'vi', rate: 160 }, { silenceMs: 1500 }, { mediaId: recording.id }],
    });
    expect(got.json<Programme>().history).toEqual([
      { action: 'created', revision: 1, by: 'phat.thanh.vien', at: expect.any(String) as string, note: null },
    ]);
  });

  it('frames a bulletin with the jingles of the nearest area that has them, when asked', async () => {
    const district = await t.createUser('district_operator', tree.district.id);
    const intro = await upload(t, district, await makeSine(dir, { seconds: 1, frequency: 600 }), {
      title: 'Nhạc hiệu mở đầu',
    });
    const outro = await upload(t, district, await makeSine(dir, { seconds: 1.5, frequency: 800 }), {
      title: 'Nhạc hiệu kết thúc',
    });
    const put = await putJingles(tree.district.id, district, {
      introMediaId: intro.id,
      outroMediaId: outro.id,
    });
    expect(put.statusCode).toBe(200);
    expect(put.json()).toMatchObject({
      areaId: tree.district.id,
      introMediaId: intro.id,
      outroMediaId: outro.id,
    });
    // The commune has none of its own: the district's frame its bulletins.
    const own = await t.request('GET', `/api/v1/areas/${tree.communeA.id}/jingles`, { token: broadcasterA });
    expect(own.json()).toMatchObject({ introMediaId: null, outroMediaId: null });

    const framed = (
      await create({
        title: 'Bản tin sáng – Xã Hải Phú',
        areaId: tree.communeA.id,
        category: 'news',
        content: { segments: [{ silenceMs: 1000 }], jingles: true },
      })
    ).json<Programme>();
    expect(Math.abs(framed.current.durationMs! - 3500)).toBeLessThan(150);
    const used = t.query(`SELECT media_id FROM programme_media WHERE revision_id = '${framed.current.id}'`);
    expect(used.map((r) => (r as { media_id: string }).media_id).sort()).toEqual([intro.id, outro.id].sort());

    const plain = (
      await create({
        title: 'Bản tin trưa',
        areaId: tree.communeA.id,
        category: 'news',
        content: { segments: [{ silenceMs: 1000 }] },
      })
    ).json<Programme>();
    expect(Math.abs(plain.current.durationMs! - 1000)).toBeLessThan(100);

    // A broadcaster cannot set another commune's jingles, nor use a recording they cannot see.
    const other = await putJingles(tree.communeB.id, broadcasterA, { introMediaId: null });
    expect(other.statusCode).toBe(403);
    const missing = await putJingles(tree.communeA.id, broadcasterA, { introMediaId: 'med_nothing' });
    expect(missing.statusCode).toBe(404);
    expect(problem(missing).detail).toContain('body.introMediaId');

    const audit = await t.request('GET', '/api/v1/audit?targetType=area', { token: t.adminToken });
    expect(audit.json<{ items: { action: string }[] }>().items.map((i) => i.action)).toContain(
      'area.jingles_update',
    );
  });

  it('probes a relay once and stores what it found; an unreachable one is saved with a warning', async () => {
    const station = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'audio/mpeg', 'icy-name': 'VOV1' });
      // A live stream never ends: the probe must not wait for it.
      const timer = setInterval(() => res.write(Buffer.alloc(1024)), 50);
      res.on('close', () => clearInterval(timer));
    });
    await new Promise<void>((resolve) => station.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(station.address() as AddressInfo).port}/vov1.mp3`;
      const res = await create({
        title: 'Tiếp sóng VOV1 – Thời sự',
        areaId: tree.communeA.id,
        category: 'news',
        content: { relay: { url, name: 'VOV1' } },
      });
      expect(res.statusCode).toBe(201);
      const relay = res.json<Programme>();
      expect(relay.kind).toBe('relay');
      expect(relay.current.relayProbe).toMatchObject({
        reachable: true,
        status: 200,
        contentType: 'audio/mpeg',
      });
      expect(relay.warnings).toEqual([]);
      expect(relay.current.sha256).toBeNull();
      const audio = await t.request('GET', `/api/v1/programmes/${relay.id}/audio`, { token: broadcasterA });
      expect(audio.statusCode).toBe(404);
    } finally {
      station.closeAllConnections();
      await new Promise<void>((resolve) => station.close(() => resolve()));
    }

    const down = await create({
      title: 'Tiếp sóng Đài tỉnh',
      areaId: tree.communeA.id,
      category: 'news',
      content: { relay: { url: await closedPortUrl() } },
    });
    expect(down.statusCode).toBe(201);
    const saved = down.json<Programme>();
    expect(saved.current.relayProbe).toMatchObject({
      reachable: false,
      status: null,
      error: 'connection refused',
    });
    expect(saved.warnings).toHaveLength(1);
    expect(saved.warnings[0]).toContain('did not answer');
  });

  it('refuses bad input with problem+json naming the field', async () => {
    const base = { title: TITLE, areaId: tree.communeA.id, category: 'health' };
    const cases: [unknown, string][] = [
      [{ ...base, content: { segments: [{ text: 'x'.repeat(5001) }] } }, 'body.content.segments.0.text'],
      [{ ...base, content: { segments: [{ silenceMs: 60_001 }] } }, 'body.content.segments.0.silenceMs'],
      [
        { ...base, content: { segments: [{ silenceMs: 10 }, { mediaId: 'med_x', text: 'hai' }] } },
        'body.content.segments.1',
      ],
      [{ ...base, content: { segments: [{ silenceMs: 10, rate: 100 }] } }, 'body.content.segments.0.rate'],
      [
        { ...base, content: { segments: [{ text: 'Xin chào', voice: 'en' }] } },
        'body.content.segments.0.voice',
      ],
      [
        { ...base, content: { segments: Array.from({ length: 51 }, () => ({ silenceMs: 10 })) } },
        'body.content.segments',
      ],
      [{ ...base, content: { segments: [] } }, 'body.content.segments'],
      [{ ...base, content: { relay: { url: 'ftp://radio.example/vov1' } } }, 'body.content.relay.url'],
      [{ ...base, content: { relay: { url: ' http://radio.example/vov1' } } }, 'body.content.relay.url'],
      [{ ...base, content: {} }, 'body.content'],
      [{ ...base, category: 'sport', content: { segments: [{ silenceMs: 10 }] } }, 'body.category'],
      [{ ...base, title: '  ', content: { segments: [{ silenceMs: 10 }] } }, 'body.title'],
    ];
    for (const [body, field] of cases) {
      const res = await create(body);
      expect(res.statusCode, field).toBe(400);
      expect(
        problem(res).errors?.map((e) => e.field),
        field,
      ).toContain(field);
    }

    const unknownMedia = await create({
      ...base,
      content: { segments: [{ silenceMs: 10 }, { mediaId: 'med_unknown' }] },
    });
    expect(unknownMedia.statusCode).toBe(404);
    expect(problem(unknownMedia).detail).toContain('body.content.segments.1.mediaId');

    const elsewhere = await create({
      ...base,
      areaId: tree.communeB.id,
      content: { segments: [{ silenceMs: 10 }] },
    });
    expect(elsewhere.statusCode).toBe(403);
    expect(problem(elsewhere).detail).toContain('body.areaId');

    const technician = await t.createUser('technician', tree.communeA.id);
    const byTechnician = await create({ ...base, content: { segments: [{ silenceMs: 10 }] } }, technician);
    expect(byTechnician.statusCode).toBe(403);

    const anonymous = await t.request('GET', '/api/v1/programmes');
    expect(anonymous.statusCode).toBe(401);
  });

  it('lists with filters, finds titles with or without tone marks, and shows what is above but not beside', async () => {
    const relay = async (title: string, areaId: string, category: string, token = t.adminToken) => {
      const res = await create(
        { title, areaId, category, content: { relay: { url: await closedPortUrl() } } },
        token,
      );
      expect(res.statusCode).toBe(201);
      return res.json<Programme>();
    };
    const rabies = await relay(TITLE, tree.communeA.id, 'health', broadcasterA);
    const provincial = await relay('Bản tin Đài Phát thanh tỉnh Quảng Trị', tree.province.id, 'news');
    const otherCommune = await relay('Lịch cắt điện – Xã Hải Thượng', tree.communeB.id, 'announcement');

    const list = async (query: string, token = broadcasterA) => {
      const res = await t.request('GET', `/api/v1/programmes${query}`, { token });
      expect(res.statusCode).toBe(200);
      return res.json<{ items: { id: string; title: string; revision: number }[]; total: number }>();
    };

    // A commune sees its own and the province's, not its neighbour's.
    const mine = await list('');
    expect(mine.items.map((i) => i.id).sort()).toEqual([rabies.id, provincial.id].sort());
    expect(mine.total).toBe(2);
    expect((await list('', t.adminToken)).total).toBe(3);

    for (const q of ['tiêm phòng', 'tiem phong', 'TIEM PHONG', 'Tiêm Phòng Dại', 'thon dong', 'Đông']) {
      expect(
        (await list(`?q=${encodeURIComponent(q)}`)).items.map((i) => i.id),
        q,
      ).toEqual([rabies.id]);
    }
    expect((await list(`?q=${encodeURIComponent('quang tri')}`)).items.map((i) => i.id)).toEqual([
      provincial.id,
    ]);
    // LIKE wildcards in a query are plain characters.
    expect((await list('?q=%25')).total).toBe(0);
    expect((await list('?category=health')).items.map((i) => i.id)).toEqual([rabies.id]);
    expect((await list('?status=approved')).total).toBe(0);
    expect((await list(`?areaId=${tree.communeA.id}`)).items.map((i) => i.id)).toEqual([rabies.id]);
    // The province is above the commune: its programmes are there to air, though the area is not browsable.
    expect((await list(`?areaId=${tree.province.id}`)).items.map((i) => i.id).sort()).toEqual(
      [rabies.id, provincial.id].sort(),
    );
    expect(
      (await t.request('GET', `/api/v1/programmes?areaId=${tree.communeB.id}`, { token: broadcasterA }))
        .statusCode,
    ).toBe(404);
    expect((await list('?limit=1')).items).toHaveLength(1);
    expect((await list('?limit=1')).total).toBe(2);

    // Seen from below, a provincial programme can be read but not changed.
    const read = await t.request('GET', `/api/v1/programmes/${provincial.id}`, { token: broadcasterA });
    expect(read.statusCode).toBe(200);
    const patch = await t.request('PATCH', `/api/v1/programmes/${provincial.id}`, {
      token: broadcasterA,
      body: { title: 'Đổi tên' },
    });
    expect(patch.statusCode).toBe(403);
    // The neighbour's does not exist as far as this commune knows.
    const hidden = await t.request('GET', `/api/v1/programmes/${otherCommune.id}`, { token: broadcasterA });
    expect(hidden.statusCode).toBe(404);

    const badQuery = await t.request('GET', '/api/v1/programmes?status=live', { token: broadcasterA });
    expect(problem(badQuery).errors?.[0]?.field).toBe('query.status');
  });

  it('documents its routes in the OpenAPI document, the programme source of a play included', async () => {
    const doc = (await t.request('GET', '/docs/json')).json<{ paths: Record<string, unknown> }>();
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/api/v1/programmes',
        '/api/v1/programmes/{id}',
        '/api/v1/programmes/{id}/approve',
        '/api/v1/programmes/{id}/audio',
        '/api/v1/areas/{id}/jingles',
      ]),
    );
    expect(JSON.stringify(doc.paths['/api/v1/commands'])).toContain('programmeId');
  });

  it('deletes softly, keeps the record, and an area with programmes cannot be deleted', async () => {
    const hamlet = await t.createArea({ name: 'Thôn Bắc', level: 'hamlet', parentId: tree.communeA.id });
    const res = await create({
      title: 'Thông báo họp thôn Bắc',
      areaId: hamlet.id,
      category: 'announcement',
      content: { relay: { url: await closedPortUrl() } },
    });
    const programme = res.json<Programme>();

    const areaDelete = await t.request('DELETE', `/api/v1/areas/${hamlet.id}`, { token: t.adminToken });
    expect(areaDelete.statusCode).toBe(409);
    expect(problem(areaDelete)).toMatchObject({ code: 'area_not_empty' });
    expect(problem(areaDelete).detail).toContain('1 programme(s)');

    const del = await t.request('DELETE', `/api/v1/programmes/${programme.id}`, { token: broadcasterA });
    expect(del.statusCode).toBe(204);
    expect(
      (await t.request('GET', `/api/v1/programmes/${programme.id}`, { token: broadcasterA })).statusCode,
    ).toBe(404);
    expect(
      t.query(`SELECT deleted_at IS NOT NULL AS deleted FROM programmes WHERE id = '${programme.id}'`),
    ).toEqual([{ deleted: 1 }]);
    expect(
      t.query(
        `SELECT action, actor_name FROM programme_events WHERE programme_id = '${programme.id}' ORDER BY id`,
      ),
    ).toEqual([
      { action: 'created', actor_name: 'phat.thanh.vien' },
      { action: 'deleted', actor_name: 'phat.thanh.vien' },
    ]);
    const audit = await t.request('GET', `/api/v1/audit?targetType=programme&targetId=${programme.id}`, {
      token: t.adminToken,
    });
    expect(
      audit
        .json<{ items: { action: string }[] }>()
        .items.map((i) => i.action)
        .sort(),
    ).toEqual(['programme.create', 'programme.delete']);
  });
});
