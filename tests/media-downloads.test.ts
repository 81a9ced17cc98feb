import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commands } from '../src/db/schema/index.js';
import { LINK_MARGIN_MS, listeningBaseUrl, loadUrlSecret } from '../src/media/links.js';
import { createTestApp, problem, type TestApp } from './support/app.js';
import { makeSine } from './support/audio.js';
import { ManualClock } from './support/clock.js';
import { waitFor } from './support/wait.js';
import { sha256Of, storeContents, upload, type MediaJson } from './support/media.js';

let fixtures: string;
let wav: Buffer;
beforeAll(async () => {
  fixtures = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-media-dl-'));
  wav = fs.readFileSync(await makeSine(fixtures, { seconds: 3, format: 'wav', frequency: 523 }));
});
afterAll(() => fs.rmSync(fixtures, { recursive: true, force: true }));

/** Path and query of an absolute URL, for inject(). */
const local = (url: string) => {
  const u = new URL(url);
  return `${u.pathname}${u.search}`;
};

describe('signed device downloads', () => {
  let t: TestApp;
  let clock: ManualClock;
  let item: MediaJson;
  let logLines: string[];
  beforeAll(async () => {
    clock = new ManualClock();
    logLines = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, done) {
        logLines.push(chunk.toString('utf8'));
        done();
      },
    });
    t = await createTestApp({ clock, listen: true, logger: { level: 'warn', stream } });
    item = (
      await upload(t, t.adminToken, { bytes: wav, filename: 'Thông báo mất điện.wav' })
    ).json<MediaJson>();
  });
  afterAll(async () => t.close());

  const urlFor = (validForMs = 600_000, sha256 = item.rendition.sha256) =>
    t.app.services.media.links.urlFor(sha256, new Date(clock.now().getTime() + validForMs));

  it('serves the rendition without a token over a real socket, on the listening address when PUBLIC_URL is unset', async () => {
    const url = urlFor();
    const address = t.app.server.address();
    expect(
      typeof address === 'object' && address && url.startsWith(`http://127.0.0.1:${address.port}/downloads/`),
    ).toBe(true);
    expect(url).toMatch(/\/downloads\/[0-9a-f]{64}\.mp3\?expires=\d+&signature=[\w-]{43}$/);
    const warnings = logLines.filter((l) => l.includes('PUBLIC_URL is unset'));
    expect(warnings).toHaveLength(1);

    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(res.headers.get('content-type')).toBe('audio/mpeg');
    expect(res.headers.get('content-length')).toBe(String(item.rendition.sizeBytes));
    expect(res.headers.get('etag')).toBe(`"${item.rendition.sha256}"`);
    expect(res.headers.get('accept-ranges')).toBe('bytes');
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(sha256Of(bytes)).toBe(item.rendition.sha256);
  });

  it('resumes with Range (206), answers If-None-Match with 304 and HEAD without a body', async () => {
    const url = local(urlFor());
    const first = await t.app.inject({ method: 'GET', url, headers: { range: 'bytes=0-999' } });
    expect(first.statusCode).toBe(206);
    expect(first.headers['content-range']).toBe(`bytes 0-999/${item.rendition.sizeBytes}`);
    const rest = await t.app.inject({ method: 'GET', url, headers: { range: 'bytes=1000-' } });
    expect(rest.statusCode).toBe(206);
    expect(rest.headers['content-length']).toBe(String(item.rendition.sizeBytes - 1000));
    expect(sha256Of(Buffer.concat([first.rawPayload, rest.rawPayload]))).toBe(item.rendition.sha256);

    // If-Range naming another version: the whole file, not a piece of something else.
    const stale = await t.app.inject({
      method: 'GET',
      url,
      headers: { range: 'bytes=1000-', 'if-range': '"other"' },
    });
    expect(stale.statusCode).toBe(200);
    expect(stale.rawPayload.length).toBe(item.rendition.sizeBytes);

    const cached = await t.app.inject({
      method: 'GET',
      url,
      headers: { 'if-none-match': `"${item.rendition.sha256}"` },
    });
    expect(cached.statusCode).toBe(304);
    expect(cached.headers.etag).toBe(`"${item.rendition.sha256}"`);

    const head = await t.app.inject({ method: 'HEAD', url });
    expect(head.statusCode).toBe(200);
    expect(head.headers['content-length']).toBe(String(item.rendition.sizeBytes));
    expect(head.rawPayload.length).toBe(0);

    const beyond = await t.app.inject({ method: 'GET', url, headers: { range: 'bytes=99999999-' } });
    expect(beyond.statusCode).toBe(416);
    expect(problem(beyond).code).toBe('range_not_satisfiable');
  });

  it('refuses a bad, missing or borrowed signature with 403 invalid_signature', async () => {
    const good = new URL(urlFor());
    const signature = good.searchParams.get('signature') ?? '';
    const flipped = `${signature.slice(0, -2)}${signature.endsWith('AA') ? 'AB' : 'AA'}`;
    const otherHash = item.sha256; // the original: stored, but this link was not signed for it
    const cases = [
      `${good.pathname}?expires=${good.searchParams.get('expires')}&signature=${flipped}`,
      `${good.pathname}?expires=${good.searchParams.get('expires')}`,
      `${good.pathname}?signature=${signature}`,
      `${good.pathname}?expires=${Number(good.searchParams.get('expires')) + 3600}&signature=${signature}`,
      `/downloads/${otherHash}.mp3${good.search}`,
      `/downloads/not-a-hash.mp3${good.search}`,
    ];
    for (const url of cases) {
      const res = await t.app.inject({ method: 'GET', url });
      expect(res.statusCode, url).toBe(403);
      expect(problem(res).code).toBe('invalid_signature');
    }
  });

  it('refuses an expired link (the injected clock decides)', async () => {
    const url = local(urlFor(60_000));
    expect((await t.app.inject({ method: 'GET', url })).statusCode).toBe(200);
    clock.advance(61_000);
    const res = await t.app.inject({ method: 'GET', url });
    expect(res.statusCode).toBe(403);
    expect(problem(res)).toMatchObject({ code: 'invalid_signature' });
    expect(problem(res).detail).toMatch(/expired/);
  });
});

describe('download link settings', () => {
  it('uses PUBLIC_URL as the base and MEDIA_URL_SECRET as the key', async () => {
    const t = await createTestApp({
      env: {
        PUBLIC_URL: 'https://loa.example.vn/',
        MEDIA_URL_SECRET: 'một-bí-mật-đủ-dài-cho-khóa-hmac-0123456789',
      },
    });
    try {
      const url = t.app.services.media.links.urlFor('ab'.repeat(32), new Date(Date.now() + 60_000));
      expect(url.startsWith(`https://loa.example.vn/downloads/${'ab'.repeat(32)}.mp3?expires=`)).toBe(true);
      expect(fs.existsSync(path.join(t.dataDir, 'media-url.secret'))).toBe(false);
    } finally {
      await t.close();
    }
  });

  it('keeps a generated secret in DATA_DIR/media-url.secret (0600) and reuses it', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-secret-'));
    try {
      const first = loadUrlSecret(undefined, dir);
      const file = path.join(dir, 'media-url.secret');
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      expect(loadUrlSecret(undefined, dir).equals(first)).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('derives the listening address: a wildcard becomes the first external IPv4', () => {
    const interfaces = {
      lo: [{ address: '127.0.0.1', family: 'IPv4', internal: true }],
      eth0: [
        { address: 'fe80::1', family: 'IPv6', internal: false },
        { address: '10.0.0.7', family: 'IPv4', internal: false },
      ],
    } as unknown as NodeJS.Dict<os.NetworkInterfaceInfo[]>;
    expect(listeningBaseUrl({ address: '0.0.0.0', family: 'IPv4', port: 3000 }, 1, interfaces)).toBe(
      'http://10.0.0.7:3000',
    );
    expect(listeningBaseUrl({ address: '::', family: 'IPv6', port: 3000 }, 1, { lo: interfaces.lo })).toBe(
      'http://127.0.0.1:3000',
    );
    expect(listeningBaseUrl({ address: '::1', family: 'IPv6', port: 8080 }, 1, interfaces)).toBe(
      'http://[::1]:8080',
    );
    expect(listeningBaseUrl(null, 3000, interfaces)).toBe('http://127.0.0.1:3000');
  });
});

describe('store clean-up', () => {
  let t: TestApp;
  let clock: ManualClock;
  beforeAll(async () => {
    clock = new ManualClock(new Date().toISOString());
    t = await createTestApp({ clock });
  });
  afterAll(async () => t.close());

  /** Stores random bytes as if some earlier upload had left them, `ageMs` old by the test clock. */
  async function storeFile(ageMs: number): Promise<string> {
    const temp = t.app.services.media.store.tempPath();
    fs.writeFileSync(temp, `${Math.random()} Thôn Đông`);
    const { sha256, path: file } = await t.app.services.media.store.putFile(temp);
    const at = new Date(clock.now().getTime() - ageMs);
    fs.utimesSync(file, at, at);
    return sha256;
  }
  const HOUR = 3_600_000;

  it('removes files nothing references, keeps referenced, young and live-command files', async () => {
    const item = (await upload(t, t.adminToken, { bytes: wav, filename: 'giữ lại.wav' })).json<MediaJson>();
    for (const sha of [item.sha256, item.rendition.sha256]) {
      const file = t.app.services.media.store.pathOf(sha);
      const old = new Date(clock.now().getTime() - 2 * HOUR);
      fs.utimesSync(file, old, old);
    }
    const unreferenced = await storeFile(2 * HOUR);
    const young = await storeFile(10 * 60_000);
    const named = await storeFile(2 * HOUR);
    const expiresAt = new Date(clock.now().getTime() + 10 * 60_000);
    t.app.db
      .insert(commands)
      .values({
        id: 'cmd_cleanup_test',
        type: 'play',
        priority: 'normal',
        params: {
          source: { kind: 'media', url: 'https://x.example/a.mp3', sha256: named, durationMs: 1000 },
        },
        createdAt: clock.now(),
        expiresAt,
        targetCount: 1,
      })
      .run();

    const result = await t.app.services.media.cleanup();
    expect(result).toMatchObject({ removed: 1 });
    const left = storeContents(t.dataDir).hashes;
    expect(left).not.toContain(unreferenced);
    expect(left).toEqual(expect.arrayContaining([item.sha256, item.rendition.sha256, young, named]));

    // The command's links stay valid LINK_MARGIN_MS after it expires; the file goes after that, by the
    // hourly job on the injected clock.
    clock.advance(10 * 60_000 + LINK_MARGIN_MS - 1_000);
    await t.app.services.media.cleanup();
    // The young file has now aged past the hour; the command's file is still kept.
    expect(storeContents(t.dataDir).hashes).not.toContain(young);
    expect(storeContents(t.dataDir).hashes).toContain(named);
    clock.advance(HOUR);
    await waitFor(() => !storeContents(t.dataDir).hashes.includes(named), 'the hourly clean-up');

    // Deleting the media row frees its files.
    expect((await t.request('DELETE', `/api/v1/media/${item.id}`, { token: t.adminToken })).statusCode).toBe(
      204,
    );
    const after = await t.app.services.media.cleanup();
    expect(after.removed).toBe(2);
    expect(storeContents(t.dataDir).hashes).toEqual([]);
  });
});
