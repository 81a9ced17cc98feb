/**
 * What happens when rendering a bulletin goes wrong or takes long enough for someone else to act meanwhile:
 * a speech engine that crashes or writes nothing usable, a recording missing from the store, ffmpeg failing
 * on a damaged file, a recording deleted, a programme approved or edited while an edit renders.
 *
 * The speech engine is a real operator command (TTS_COMMAND): a small Node script that asks this test what
 * to do over HTTP before it answers, so that a render can be held "in progress" for exactly as long as a
 * test needs, with no timing involved.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { makeSine } from './support/audio.js';

type Action = 'ok' | 'crash' | 'nothing' | 'garbage';

/** The operator's engine: reports its text and output path, waits for the test's verdict, then obeys it. */
const GATED_ENGINE = `
import fs from 'node:fs';
const [out, gate] = process.argv.slice(2);
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const text = Buffer.concat(chunks).toString('utf8');
const res = await fetch(gate, { method: 'POST', body: JSON.stringify({ out, text }) });
const action = await res.text();
if (action === 'crash') {
  process.stderr.write('segmentation fault (bí mật nội bộ)\\n');
  process.exit(3);
}
if (action === 'nothing') process.exit(0);
if (action === 'garbage') {
  fs.writeFileSync(out, 'ID3 this is not a WAV file at all '.repeat(100));
  process.exit(0);
}
const rate = 22050, n = rate / 2, data = Buffer.alloc(n * 2);
for (let i = 0; i < n; i++) data.writeInt16LE(Math.round(9000 * Math.sin((2 * Math.PI * 330 * i) / rate)), i * 2);
const h = Buffer.alloc(44);
h.write('RIFF', 0); h.writeUInt32LE(36 + data.length, 4); h.write('WAVE', 8); h.write('fmt ', 12);
h.writeUInt32LE(16, 16); h.writeUInt16LE(1, 20); h.writeUInt16LE(1, 22); h.writeUInt32LE(rate, 24);
h.writeUInt32LE(rate * 2, 28); h.writeUInt16LE(2, 32); h.writeUInt16LE(16, 34); h.write('data', 36);
h.writeUInt32LE(data.length, 40);
fs.writeFileSync(out, Buffer.concat([h, data]));
`;

interface Call {
  out: string;
  text: string;
  reply(action: Action): void;
}

/** The test's side of the engine: answers at once with `auto`, or holds calls until the test replies. */
class Gate {
  auto: Action | null = 'ok';
  readonly outputs: string[] = [];
  private readonly held: Call[] = [];
  private readonly waiting: ((call: Call) => void)[] = [];
  readonly server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const { out, text } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        out: string;
        text: string;
      };
      this.outputs.push(out);
      const call: Call = { out, text, reply: (action) => res.end(action) };
      if (this.auto) return call.reply(this.auto);
      const waiter = this.waiting.shift();
      if (waiter) waiter(call);
      else this.held.push(call);
    });
  });

  /** The next call held (auto must be null). */
  next(): Promise<Call> {
    const call = this.held.shift();
    return call ? Promise.resolve(call) : new Promise((resolve) => this.waiting.push(resolve));
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/`;
  }
}

type Programme = {
  id: string;
  status: string;
  revision: number;
  approvedRevision: number | null;
  current: { id: string; number: number; content: { segments: { text?: string }[] }; sha256: string };
  history: { action: string; revision: number; by: string }[];
};

const TITLE = 'Thông báo lịch tiêm phòng dại – Thôn Đông';

async function upload(t: TestApp, token: string, file: string) {
  const boundary = `loa-${randomUUID()}`;
  const res = await t.app.inject({
    method: 'POST',
    url: '/api/v1/media',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': `multipart/form-data; boundary=${boundary}`,
    },
    payload: Buffer.concat([
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\nNhạc hiệu Đài xã\r\n` +
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${path.basename(file)}"\r\n` +
          'Content-Type: application/octet-stream\r\n\r\n',
      ),
      fs.readFileSync(file),
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]),
  });
  if (res.statusCode !== 201) throw new Error(`upload: ${res.statusCode} ${res.body}`);
  return res.json<{ id: string; sha256: string; title: string }>();
}

describe('programmes when rendering fails or races', () => {
  let dir: string;
  let gate: Gate;
  let gateUrl: string;
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let broadcaster: string;
  let approver: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-programme-failures-'));
    fs.writeFileSync(path.join(dir, 'engine.mjs'), GATED_ENGINE);
    gate = new Gate();
    gateUrl = await gate.listen();
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => gate.server.close(() => resolve()));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    gate.auto = 'ok';
    t = await createTestApp({
      env: { TTS_COMMAND: `"${process.execPath}" "${path.join(dir, 'engine.mjs')}" {output} ${gateUrl}` },
    });
    tree = await createAreaTree(t);
    broadcaster = await t.createUser('broadcaster', tree.communeA.id, 'phat.thanh.vien');
    approver = await t.createUser('approver', tree.communeA.id, 'chu.tich.xa');
  });
  afterEach(async () => {
    // Whatever happened, no rendering left a file behind: not the engine's WAVs (in the OS temporary
    // folder), not the half-made MP3s (in the store's own temporary folder).
    for (const out of gate.outputs.splice(0)) expect(fs.existsSync(out), out).toBe(false);
    expect(fs.readdirSync(path.join(t.dataDir, 'media', 'tmp'))).toEqual([]);
    await t.close();
  });

  const create = (segments: unknown[]) =>
    t.request('POST', '/api/v1/programmes', {
      token: broadcaster,
      body: { title: TITLE, areaId: tree.communeA.id, category: 'health', content: { segments } },
    });
  const count = (table: string) => t.query(`SELECT count(*) AS n FROM ${table}`);

  it.each([
    ['crash', 'exited with code 3'],
    ['nothing', 'wrote no audio'],
    ['garbage', 'wrote something that is not a WAV file'],
  ] as const)(
    'answers an engine that does "%s" with a 500 problem naming the segment, and saves nothing',
    async (action, words) => {
      gate.auto = action;
      const res = await create([{ silenceMs: 300 }, { text: 'Kính gửi bà con Thôn Đông.' }]);
      expect(res.statusCode).toBe(500);
      expect(res.headers['content-type']).toContain('application/problem+json');
      const body = problem(res);
      expect(body.code).toBe('internal');
      expect(body.detail).toContain('body.content.segments.1.text');
      expect(body.detail).toContain(`the engine (TTS_COMMAND) ${words}`);
      // The engine's own output and the paths it used stay in the log.
      expect(body.detail).not.toContain('bí mật');
      expect(body.detail).not.toContain(os.tmpdir());
      expect(count('programmes')).toEqual([{ n: 0 }]);
      expect(gate.outputs).toHaveLength(1);
    },
  );

  it('names a recording whose file is missing from the store, and one that ffmpeg cannot read', async () => {
    const tone = await upload(t, broadcaster, await makeSine(dir, { seconds: 1, format: 'wav' }));
    const stored = t.app.services.media.store.pathOf(tone.sha256);

    fs.chmodSync(stored, 0o644);
    fs.writeFileSync(stored, 'RIFF but damaged, as after a disk fault'.repeat(50));
    const damaged = await create([{ mediaId: tone.id }]);
    expect(damaged.statusCode).toBe(500);
    expect(problem(damaged).detail).toMatch(/^Rendering the bulletin failed \(ffmpeg\); nothing was saved/);

    fs.rmSync(stored);
    const missing = await create([{ text: 'Xin chào.' }, { mediaId: tone.id }]);
    expect(missing.statusCode).toBe(500);
    expect(problem(missing)).toMatchObject({ code: 'internal' });
    expect(problem(missing).detail).toContain(
      `body.content.segments.1.mediaId: the file of recording "Nhạc hiệu Đài xã" (${tone.id}) is missing`,
    );
    // Found before anything was spoken.
    expect(gate.outputs).toEqual([]);
    expect(count('programmes')).toEqual([{ n: 0 }]);
  });

  it('refuses to save a bulletin whose recording was deleted while it rendered (409, nothing saved)', async () => {
    const tone = await upload(t, broadcaster, await makeSine(dir, { seconds: 1, format: 'mp3' }));
    gate.auto = null;
    const pending = create([{ mediaId: tone.id }, { text: 'Thông báo của Ủy ban nhân dân xã.' }]);
    const call = await gate.next();
    // Not used by any saved programme yet, so its owner may delete it.
    const del = await t.request('DELETE', `/api/v1/media/${tone.id}`, { token: broadcaster });
    expect(del.statusCode).toBe(204);
    call.reply('ok');
    const res = await pending;
    expect(res.statusCode).toBe(409);
    expect(problem(res)).toMatchObject({ code: 'conflict' });
    expect(problem(res).detail).toContain(
      `media ${tone.id} was deleted while the bulletin was being rendered`,
    );
    expect(count('programmes')).toEqual([{ n: 0 }]);
    expect(count('programme_revisions')).toEqual([{ n: 0 }]);
  });

  it('refuses an edit whose rendering finishes after the programme was approved (409 conflict)', async () => {
    const created = await create([{ text: 'Lịch tiêm phòng dại: 7 giờ 30 sáng thứ Bảy.' }]);
    expect(created.statusCode).toBe(201);
    const programme = created.json<Programme>();
    await t.request('POST', `/api/v1/programmes/${programme.id}/submit`, { token: broadcaster });

    gate.auto = null;
    const edit = t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
      token: broadcaster,
      body: { content: { segments: [{ text: 'Lịch tiêm phòng dại: 8 giờ sáng Chủ nhật.' }] } },
    });
    const call = await gate.next();
    const approved = await t.request('POST', `/api/v1/programmes/${programme.id}/approve`, {
      token: approver,
    });
    expect(approved.statusCode).toBe(200);
    call.reply('ok');
    const res = await edit;
    expect(res.statusCode).toBe(409);
    expect(problem(res).code).toBe('conflict');

    // The approval stands, and no half-made revision 2 exists.
    const now = (
      await t.request('GET', `/api/v1/programmes/${programme.id}`, { token: broadcaster })
    ).json<Programme>();
    expect(now).toMatchObject({ status: 'approved', revision: 1, approvedRevision: 1 });
    expect(now.history.map((h) => h.action)).toEqual(['created', 'submitted', 'approved']);
    expect(count('programme_revisions')).toEqual([{ n: 1 }]);
  });

  it('refuses the later of two edits of a draft that rendered at the same time, keeping the first', async () => {
    const created = await create([{ text: 'Bản nháp đầu tiên.' }]);
    const programme = created.json<Programme>();
    const otherEditor = await t.createUser('broadcaster', tree.communeA.id, 'phat.thanh.vien.hai');

    gate.auto = null;
    const edit = (token: string, text: string) =>
      t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
        token,
        body: { content: { segments: [{ text }] } },
      });
    const first = edit(broadcaster, 'Bản sửa của người thứ nhất.');
    const second = edit(otherEditor, 'Bản sửa của người thứ hai.');
    const calls = [await gate.next(), await gate.next()];
    const byText = (words: string) => calls.find((c) => c.text.includes(words))!;
    byText('người thứ nhất').reply('ok');
    expect((await first).statusCode).toBe(200);
    byText('người thứ hai').reply('ok');
    const late = await second;
    expect(late.statusCode).toBe(409);
    expect(problem(late).code).toBe('conflict');

    const now = (
      await t.request('GET', `/api/v1/programmes/${programme.id}`, { token: broadcaster })
    ).json<Programme>();
    expect(now.current.number).toBe(1);
    expect(now.current.content.segments[0]?.text).toBe('Bản sửa của người thứ nhất.');
    expect(now.history.map((h) => [h.action, h.by])).toEqual([
      ['created', 'phat.thanh.vien'],
      ['edited', 'phat.thanh.vien'],
    ]);
  });

  it('refuses an edit whose rendering finishes after the programme was deleted', async () => {
    const programme = (await create([{ text: 'Thông báo họp thôn.' }])).json<Programme>();
    gate.auto = null;
    const edit = t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
      token: broadcaster,
      body: { content: { segments: [{ text: 'Thông báo họp thôn, đã sửa.' }] } },
    });
    const call = await gate.next();
    expect(
      (await t.request('DELETE', `/api/v1/programmes/${programme.id}`, { token: broadcaster })).statusCode,
    ).toBe(204);
    call.reply('ok');
    expect(problem(await edit).code).toBe('conflict');
    expect(t.query(`SELECT deleted_at IS NOT NULL AS deleted FROM programmes`)).toEqual([{ deleted: 1 }]);
  });
  it('stores and speaks segment texts composed (NFC), and refuses one with nothing to read', async () => {
    const text = 'Ủy ban nhân dân xã thông báo lịch tiêm phòng dại.';
    gate.auto = null;
    const pending = create([{ text: text.normalize('NFD') }]);
    const call = await gate.next();
    expect(call.text).toBe(text);
    call.reply('ok');
    const res = await pending;
    expect(res.statusCode).toBe(201);
    expect(res.json<Programme>().current.content.segments[0]?.text).toBe(text);

    const empty = await create([{ silenceMs: 200 }, { text: ' … – ' }]);
    expect(empty.statusCode).toBe(400);
    expect(problem(empty).errors?.[0]).toEqual({
      field: 'body.content.segments.1.text',
      message: 'must contain something to read',
    });
  });
});
