/**
 * Text-to-speech end to end with the real engines (Debian's espeak-ng, the WebAssembly eSpeak NG, an
 * operator's TTS_COMMAND), the real ffmpeg, and the HTTP API on a real SQLite file.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../src/lib/clock.js';
import { runTool } from '../src/media/tools.js';
import {
  findEspeakBinary,
  resolveSpeechEngine,
  splitCommand,
  type EngineKind,
} from '../src/modules/tts/engines.js';
import { TtsRepository } from '../src/modules/tts/tts.repository.js';
import { TtsService } from '../src/modules/tts/tts.service.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { audioTools } from './support/audio.js';

const SENTENCE =
  'Ủy ban nhân dân xã thông báo: ngày 25/11/2026 có bão số 3, đề nghị bà con chằng chống nhà cửa.';
const SPOKEN =
  'Ủy ban nhân dân xã thông báo: ngày hai mươi lăm tháng mười một năm hai nghìn không trăm hai mươi sáu ' +
  'có bão số ba, đề nghị bà con chằng chống nhà cửa.';

/**
 * Debian's espeak-ng is not an npm package: a fresh machine has only the WebAssembly build, and the tests of
 * the binary are left out with a message saying so. .ci/run installs it and sets LOA_REQUIRE_ESPEAK=1, which
 * keeps them in (and failing) when it is missing.
 */
const ESPEAK_REQUIRED = process.env.LOA_REQUIRE_ESPEAK === '1';
const HAS_DEBIAN_ESPEAK = findEspeakBinary() !== null;
if (!HAS_DEBIAN_ESPEAK) {
  console.warn(
    `Debian's espeak-ng not found (apt-get install espeak-ng)` +
      (ESPEAK_REQUIRED
        ? ': LOA_REQUIRE_ESPEAK=1, its tests must run'
        : '; testing the WebAssembly engine only'),
  );
}
const ENGINES: EngineKind[] =
  HAS_DEBIAN_ESPEAK || ESPEAK_REQUIRED ? ['espeak-ng', 'espeak-ng-wasm'] : ['espeak-ng-wasm'];

interface Measured {
  codec: string;
  durationS: number;
  meanDb: number;
  maxDb: number;
}

/** Real format, duration and level of an audio file (ffprobe, ffmpeg volumedetect). */
async function measure(file: string): Promise<Measured> {
  const { ffmpeg, ffprobe } = await audioTools();
  const probe = await runTool(
    ffprobe,
    ['-v', 'error', '-show_entries', 'format=duration:stream=codec_name', '-of', 'json', file],
    { timeoutMs: 30_000 },
  );
  const json = JSON.parse(probe.stdout.toString('utf8')) as {
    format: { duration: string };
    streams: { codec_name: string }[];
  };
  const volume = await runTool(
    ffmpeg,
    ['-nostdin', '-hide_banner', '-i', file, '-af', 'volumedetect', '-f', 'null', '-'],
    { timeoutMs: 30_000 },
  );
  const level = (name: string) => Number(new RegExp(`${name}: (-?[\\d.]+|-inf) dB`).exec(volume.stderr)?.[1]);
  return {
    codec: json.streams[0]?.codec_name ?? '',
    durationS: Number(json.format.duration),
    meanDb: level('mean_volume'),
    maxDb: level('max_volume'),
  };
}

const expectSpeech = (m: Measured) => {
  expect(m.durationS).toBeGreaterThan(3);
  expect(m.durationS).toBeLessThan(20);
  // Silence measures -91 dB (or -inf); speech from eSpeak peaks near full scale.
  expect(m.maxDb).toBeGreaterThan(-20);
  expect(m.meanDb).toBeGreaterThan(-45);
};

let t: TestApp;
const dirs: string[] = [];
const tempDir = (prefix: string) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  dirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

describe('speech engines', () => {
  beforeAll(async () => {
    t = await createTestApp();
  });
  afterAll(async () => t.close());

  const serviceWith = async (force: EngineKind) =>
    new TtsService(
      new TtsRepository(t.app.db),
      t.app.services.audit,
      await resolveSpeechEngine({ force }),
      systemClock,
      { audio: t.app.services.media.audio, tmpDir: tempDir('loa-tts-') },
    );

  it.each(ENGINES)(
    'renders a Vietnamese sentence with tone marks through %s: plausible length, not silence',
    async (kind) => {
      const tts = await serviceWith(kind);
      expect(tts.engineInfo.engine).toBe(kind);
      expect(tts.engineInfo.version).toMatch(/espeak/i);
      const wav = await tts.speak(SENTENCE, { voice: 'vi', rate: 160 });
      try {
        const m = await measure(wav);
        expect(m.codec).toBe('pcm_s16le');
        expectSpeech(m);
      } finally {
        fs.rmSync(wav, { force: true });
      }
    },
  );

  it.each(ENGINES)('reads more slowly at a lower rate, with the Southern voice, through %s', async (kind) => {
    const tts = await serviceWith(kind);
    const fast = await tts.speak('Thông báo lịch tiêm phòng dại – Thôn Đông.', { rate: 300 });
    const slow = await tts.speak('Thông báo lịch tiêm phòng dại – Thôn Đông.', {
      rate: 100,
      voice: 'vi-vn-x-south',
      pitch: 20,
    });
    try {
      expect((await measure(slow)).durationS).toBeGreaterThan((await measure(fast)).durationS * 1.5);
    } finally {
      fs.rmSync(fast, { force: true });
      fs.rmSync(slow, { force: true });
    }
  });

  it('refuses bad options with the field named, leaving no file behind', async () => {
    const dir = tempDir('loa-tts-');
    const tts = new TtsService(
      new TtsRepository(t.app.db),
      t.app.services.audit,
      await resolveSpeechEngine({ force: ENGINES[0] }),
      systemClock,
      { audio: t.app.services.media.audio, tmpDir: dir },
    );
    await expect(tts.speak('xin chào', { voice: 'en' as never })).rejects.toMatchObject({
      code: 'validation_failed',
      extra: { errors: [{ field: 'voice' }] },
    });
    await expect(tts.speak('xin chào', { rate: 10 })).rejects.toMatchObject({
      extra: { errors: [{ field: 'rate' }] },
    });
    await expect(tts.speak('x'.repeat(5_001))).rejects.toMatchObject({
      extra: { errors: [{ field: 'text' }] },
    });
    await expect(tts.speak(' … ')).rejects.toMatchObject({ extra: { errors: [{ field: 'text' }] } });
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('splits TTS_COMMAND like a shell would quote it, without expanding anything', async () => {
    expect(
      splitCommand(`piper --model "/opt/voices/vi vn.onnx" --output_file {output} 'a b' \\$HOME`),
    ).toEqual(['piper', '--model', '/opt/voices/vi vn.onnx', '--output_file', '{output}', 'a b', '$HOME']);
    await expect(resolveSpeechEngine({ command: 'piper --model /opt/vi.onnx' })).rejects.toThrow(
      /\{output\}/,
    );
    await expect(resolveSpeechEngine({ command: 'piper "--model' })).rejects.toThrow(/unclosed/);
  });
});

/** A stand-in for an operator's engine: records its stdin and arguments, writes a 2 s tone as WAV. */
const FAKE_ENGINE = `
import fs from 'node:fs';
const args = process.argv.slice(2);
const out = args[args.indexOf('--out') + 1];
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
fs.writeFileSync(new URL('./received.json', import.meta.url),
  JSON.stringify({ text: Buffer.concat(chunks).toString('utf8'), args }));
const rate = 22050, n = rate * 2, data = Buffer.alloc(n * 2);
for (let i = 0; i < n; i++) data.writeInt16LE(Math.round(12000 * Math.sin((2 * Math.PI * 440 * i) / rate)), i * 2);
const h = Buffer.alloc(44);
h.write('RIFF', 0); h.writeUInt32LE(36 + data.length, 4); h.write('WAVE', 8); h.write('fmt ', 12);
h.writeUInt32LE(16, 16); h.writeUInt16LE(1, 20); h.writeUInt16LE(1, 22); h.writeUInt32LE(rate, 24);
h.writeUInt32LE(rate * 2, 28); h.writeUInt16LE(2, 32); h.writeUInt16LE(16, 34); h.write('data', 36);
h.writeUInt32LE(data.length, 40);
fs.writeFileSync(out, Buffer.concat([h, data]));
`;

describe('TTS_COMMAND', () => {
  afterEach(async () => t.close());

  it('runs the operator command with the exact tone-marked text on stdin, and logs the engine', async () => {
    // A space in the folder name: the template's quotes must keep the path one argument.
    const dir = tempDir('loa tts command-');
    const script = path.join(dir, 'engine.mjs');
    fs.writeFileSync(script, FAKE_ENGINE);
    const lines: Record<string, unknown>[] = [];
    const stream = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        for (const line of chunk.toString('utf8').split('\n'))
          if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
        callback();
      },
    });
    t = await createTestApp({
      env: {
        TTS_COMMAND: `"${process.execPath}" "${script}" --out {output} --voice={voice} --rate {rate} --pitch {pitch}`,
      },
      logger: { level: 'info', stream },
    });
    expect(lines.find((l) => l.msg === 'text-to-speech engine')).toMatchObject({
      engine: 'command',
      path: process.execPath,
    });

    const res = await t.request('POST', '/api/v1/tts/preview', {
      token: t.adminToken,
      body: { text: SENTENCE, voice: 'vi-vn-x-central', rate: 120, pitch: 40 },
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('audio/mpeg');
    const received = JSON.parse(fs.readFileSync(path.join(dir, 'received.json'), 'utf8')) as {
      text: string;
      args: string[];
    };
    expect(received.text).toBe(SPOKEN);
    expect(received.text.normalize('NFC')).toBe(received.text);
    expect(received.args.slice(2)).toEqual(['--voice=vi-vn-x-central', '--rate', '120', '--pitch', '40']);
    // The WAV was written to a temporary file and removed after the preview.
    expect(fs.existsSync(received.args[1] ?? '')).toBe(false);

    const mp3 = path.join(dir, 'preview.mp3');
    fs.writeFileSync(mp3, res.rawPayload);
    const m = await measure(mp3);
    expect(m.codec).toBe('mp3');
    expect(m.durationS).toBeGreaterThan(1.5);
    expect(m.durationS).toBeLessThan(2.5);
  });
});

/** Operator commands that go wrong: each exits after reading its text. */
const BROKEN_ENGINES = {
  crashes: `process.stdin.resume(); process.stdin.on('end', () => { console.error('core dumped at /opt/secret'); process.exit(7); });`,
  'writes nothing': `process.stdin.resume(); process.stdin.on('end', () => process.exit(0));`,
  'writes MP3 instead of WAV': `import fs from 'node:fs';
process.stdin.resume();
process.stdin.on('end', () => { fs.writeFileSync(process.argv[2], Buffer.concat([Buffer.from('ID3'), Buffer.alloc(4000, 0xff)])); });`,
  'floods its output': `process.stdin.resume(); process.stdin.on('end', () => { const line = 'x'.repeat(65536); const go = () => { while (process.stdout.write(line)); process.stdout.once('drain', go); }; go(); });`,
} as const;

describe('TTS_COMMAND that fails', () => {
  afterEach(async () => t.close());

  it.each([
    ['crashes', 'exited with code 7'],
    ['writes nothing', 'wrote no audio'],
    ['writes MP3 instead of WAV', 'wrote something that is not a WAV file'],
    ['floods its output', 'wrote too much output and was stopped'],
  ] as const)('gives a clear error when the command %s, and leaves no file', async (name, words) => {
    const dir = tempDir('loa-tts-broken-');
    const script = path.join(dir, 'engine.mjs');
    fs.writeFileSync(script, BROKEN_ENGINES[name]);
    const out = tempDir('loa-tts-out-');
    t = await createTestApp({ env: { TTS_COMMAND: `"${process.execPath}" "${script}" {output}` } });
    const tts = new TtsService(
      new TtsRepository(t.app.db),
      t.app.services.audit,
      await resolveSpeechEngine({ command: `"${process.execPath}" "${script}" {output}` }),
      systemClock,
      { audio: t.app.services.media.audio, tmpDir: out },
    );
    const failure = tts.speak('Thông báo lịch tiêm phòng dại – Thôn Đông.');
    await expect(failure).rejects.toMatchObject({
      code: 'internal',
      detail: `Text-to-speech failed: the engine (TTS_COMMAND) ${words}. It has been logged.`,
    });
    expect(fs.readdirSync(out)).toEqual([]);

    // Through the API: problem+json with the same words, nothing of the engine's own output or paths.
    const res = await t.request('POST', '/api/v1/tts/preview', {
      token: t.adminToken,
      body: { text: 'Xin chào bà con.' },
    });
    expect(res.statusCode).toBe(500);
    expect(res.headers['content-type']).toContain('application/problem+json');
    expect(problem(res).detail).toContain(words);
    expect(res.body).not.toContain('/opt/secret');
    expect(res.body).not.toContain(dir);
  });
});

describe('TTS_COMMAND that writes a broken WAV', () => {
  afterEach(async () => t.close());

  it('answers a preview with a clear 500 when ffmpeg cannot read what the engine wrote', async () => {
    const dir = tempDir('loa-tts-broken-');
    const script = path.join(dir, 'engine.mjs');
    // The right first twelve bytes, then nothing a decoder can use.
    fs.writeFileSync(
      script,
      `import fs from 'node:fs';
process.stdin.resume();
process.stdin.on('end', () => fs.writeFileSync(process.argv[2], Buffer.concat([Buffer.from('RIFF'), Buffer.alloc(4), Buffer.from('WAVE'), Buffer.alloc(2000, 0x5a)])));`,
    );
    t = await createTestApp({ env: { TTS_COMMAND: `"${process.execPath}" "${script}" {output}` } });
    const res = await t.request('POST', '/api/v1/tts/preview', {
      token: t.adminToken,
      body: { text: 'Xin chào bà con Thôn Đông.' },
    });
    expect(res.statusCode).toBe(500);
    expect(problem(res)).toMatchObject({
      code: 'internal',
      detail:
        'The preview could not be encoded: ffmpeg could not read what the engine (TTS_COMMAND) wrote. It has been logged.',
    });
  });
});

describe('TTS API', () => {
  afterEach(async () => t.close());

  it('previews a long text as audio/mpeg of at most 60 s', async () => {
    t = await createTestApp();
    const line = 'Ủy ban nhân dân xã thông báo lịch tiêm phòng dại cho chó mèo tại Thôn Đông, ';
    // About 700 characters: 70 s or so at 80 words a minute.
    const text = line.repeat(9);
    const res = await t.request('POST', '/api/v1/tts/preview', {
      token: t.adminToken,
      body: { text, rate: 80 },
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('audio/mpeg');
    expect(res.headers['cache-control']).toBe('no-store');
    const file = path.join(tempDir('loa-tts-'), 'long.mp3');
    fs.writeFileSync(file, res.rawPayload);
    const m = await measure(file);
    expect(m.codec).toBe('mp3');
    // The speech is longer than a minute: the preview is cut at 60 s.
    expect(m.durationS).toBeGreaterThan(55);
    expect(m.durationS).toBeLessThanOrEqual(60.1);
    expect(m.maxDb).toBeGreaterThan(-20);
  });

  it('refuses bad input with problem+json naming the field', async () => {
    t = await createTestApp();
    const cases: [unknown, string][] = [
      [{ text: '' }, 'body.text'],
      [{ text: '   ' }, 'body.text'],
      [{ text: 'x'.repeat(1_001) }, 'body.text'],
      [{ text: 'xin chào', voice: 'en-us' }, 'body.voice'],
      [{ text: 'xin chào', rate: 500 }, 'body.rate'],
      [{ text: 'xin chào', pitch: -1 }, 'body.pitch'],
      [{ voice: 'vi' }, 'body.text'],
    ];
    for (const [body, field] of cases) {
      const res = await t.request('POST', '/api/v1/tts/preview', { token: t.adminToken, body });
      expect(res.statusCode).toBe(400);
      expect(problem(res).errors?.map((e) => e.field)).toContain(field);
    }
    const anonymous = await t.request('POST', '/api/v1/tts/preview', { body: { text: 'xin chào' } });
    expect(anonymous.statusCode).toBe(401);
    expect(problem(anonymous).code).toBe('unauthenticated');
  });

  it('lets the roles that write or approve announcements use it, not technicians', async () => {
    t = await createTestApp();
    const tree = await createAreaTree(t);
    const technician = await t.createUser('technician', tree.communeA.id);
    for (const url of ['/api/v1/tts/preview', '/api/v1/tts/normalise']) {
      const res = await t.request('POST', url, { token: technician, body: { text: 'xin chào' } });
      expect(res.statusCode).toBe(403);
      expect(problem(res).code).toBe('forbidden');
    }
    for (const role of ['broadcaster', 'approver', 'district_operator']) {
      const token = await t.createUser(role, tree.communeA.id);
      const res = await t.request('POST', '/api/v1/tts/normalise', { token, body: { text: 'UBND 17h30' } });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ text: 'Ủy ban nhân dân mười bảy giờ ba mươi phút.' });
    }
  });

  it('lets admins add and override abbreviations, which changes what is read, and audits it', async () => {
    t = await createTestApp();
    const put = (abbreviation: string, expansion: unknown, token = t.adminToken) =>
      t.app.inject({
        method: 'PUT',
        url: `/api/v1/tts/abbreviations/${encodeURIComponent(abbreviation)}`,
        headers: { authorization: `Bearer ${token}` },
        payload: { expansion },
      });
    const normalise = async (text: string) =>
      (await t.request('POST', '/api/v1/tts/normalise', { token: t.adminToken, body: { text } })).json<{
        text: string;
      }>().text;

    type Entry = { abbreviation: string; expansion: string; source: string; builtInExpansion: string | null };
    const list = async () =>
      (await t.request('GET', '/api/v1/tts/abbreviations', { token: t.adminToken })).json<{
        items: Entry[];
      }>().items;
    expect((await list()).find((e) => e.abbreviation === 'UBND')).toEqual(
      expect.objectContaining({ expansion: 'Ủy ban nhân dân', source: 'built_in' }),
    );

    // A new entry, with tone marks, stored as sent (NFC) and read from then on.
    expect(await normalise('Họp BCĐ lúc 7 giờ')).toBe('Họp BCĐ lúc bảy giờ.');
    const added = await put('BCĐ', 'Ban chỉ đạo phòng chống dịch');
    expect(added.statusCode).toBe(200);
    expect(added.json()).toMatchObject({ abbreviation: 'BCĐ', source: 'custom', builtInExpansion: null });
    expect(await normalise('Họp BCĐ lúc 7 giờ')).toBe('Họp Ban chỉ đạo phòng chống dịch lúc bảy giờ.');
    expect(t.query(`SELECT abbreviation, expansion FROM tts_abbreviations`)).toEqual([
      { abbreviation: 'BCĐ', expansion: 'Ban chỉ đạo phòng chống dịch' },
    ]);

    // Overriding a built-in one; a key with a slash travels URL-encoded.
    expect((await put('HTX', 'hợp tác xã nông nghiệp')).json()).toMatchObject({
      source: 'custom',
      expansion: 'hợp tác xã nông nghiệp',
      builtInExpansion: 'hợp tác xã',
    });
    expect((await put('km/h', 'cây số một giờ')).statusCode).toBe(200);
    expect(await normalise('HTX Đông, 60km/h')).toBe('hợp tác xã nông nghiệp Đông, sáu mươi cây số một giờ.');

    // Built-in entries are overridden, never deleted; deleting the override restores them.
    const delUbnd = await t.request('DELETE', '/api/v1/tts/abbreviations/UBND', { token: t.adminToken });
    expect(delUbnd.statusCode).toBe(409);
    expect(problem(delUbnd).detail).toContain('built in');
    expect(
      (await t.request('DELETE', '/api/v1/tts/abbreviations/HTX', { token: t.adminToken })).statusCode,
    ).toBe(204);
    expect(await normalise('HTX Đông')).toBe('hợp tác xã Đông.');
    const missing = await t.request('DELETE', '/api/v1/tts/abbreviations/XYZ', { token: t.adminToken });
    expect(missing.statusCode).toBe(404);

    const audit = t.query(
      `SELECT action, target_id AS targetId FROM audit_log WHERE action LIKE 'tts.%' ORDER BY id`,
    );
    expect(audit).toEqual([
      { action: 'tts.abbreviation_set', targetId: 'BCĐ' },
      { action: 'tts.abbreviation_set', targetId: 'HTX' },
      { action: 'tts.abbreviation_set', targetId: 'km/h' },
      { action: 'tts.abbreviation_delete', targetId: 'HTX' },
    ]);
  });

  it('keeps abbreviation changes to admins and validates them', async () => {
    t = await createTestApp();
    const tree = await createAreaTree(t);
    const broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    const put = (abbreviation: string, payload: unknown, token: string) =>
      t.app.inject({
        method: 'PUT',
        url: `/api/v1/tts/abbreviations/${encodeURIComponent(abbreviation)}`,
        headers: { authorization: `Bearer ${token}` },
        payload: payload as object,
      });
    const refused = await put('UBND', { expansion: 'ủy ban' }, broadcaster);
    expect(refused.statusCode).toBe(403);
    expect((await t.request('GET', '/api/v1/tts/abbreviations', { token: broadcaster })).statusCode).toBe(
      200,
    );
    const del = await t.request('DELETE', '/api/v1/tts/abbreviations/UBND', { token: broadcaster });
    expect(del.statusCode).toBe(403);

    const empty = await put('UBND', { expansion: ' ' }, t.adminToken);
    expect(empty.statusCode).toBe(400);
    expect(problem(empty).errors?.map((e) => e.field)).toContain('body.expansion');
    const badKey = await put(' ... ', { expansion: 'chấm' }, t.adminToken);
    expect(badKey.statusCode).toBe(400);
    expect(problem(badKey).errors?.map((e) => e.field)).toContain('path.abbreviation');
    expect(t.query(`SELECT * FROM tts_abbreviations`)).toEqual([]);
  });
});
