/**
 * Audio: what a file really is (inspect), the device rendition (render) and its loudness, with the real
 * ffmpeg/ffprobe on real files generated here.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Audio } from '../src/media/audio.js';
import { runTool, type AudioTools } from '../src/media/tools.js';
import { AppError } from '../src/errors.js';
import {
  audioTools,
  INSPECTED_FORMAT,
  makeLoud,
  makePng,
  makeQuiet,
  makeSilence,
  makeSilentVideo,
  makeSine,
  makeTextFile,
  makeTruncatedMp3,
  probe,
  type FixtureFormat,
} from './support/audio.js';

const SETTINGS = { bitrateKbps: 64, loudnessLufs: -16, maxDurationMs: 60_000 };

let tools: AudioTools;
let audio: Audio;
let dir: string;

beforeAll(async () => {
  tools = await audioTools();
  audio = new Audio(tools, SETTINGS);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-audio-'));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The AppError a promise rejects with (fails the test if it resolves or throws something else). */
async function appError(promise: Promise<unknown>): Promise<AppError> {
  const err = await promise.then(
    () => new Error('expected a rejection'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

describe('inspect', () => {
  const cases: { format: FixtureFormat; sampleRate: number; channels: 1 | 2 }[] = [
    { format: 'wav', sampleRate: 48000, channels: 2 },
    { format: 'mp3', sampleRate: 44100, channels: 1 },
    { format: 'ogg-vorbis', sampleRate: 44100, channels: 2 },
    { format: 'ogg-opus', sampleRate: 48000, channels: 1 },
    { format: 'm4a', sampleRate: 44100, channels: 2 },
    { format: 'flac', sampleRate: 22050, channels: 1 },
  ];

  it.each(cases)('reads $format: real format, decoded duration, channels, rate', async (c) => {
    const file = await makeSine(dir, {
      seconds: 2,
      format: c.format,
      sampleRate: c.sampleRate,
      channels: c.channels,
    });
    const info = await audio.inspect(file);
    expect(info.format).toBe(INSPECTED_FORMAT[c.format]);
    expect(info.durationMs).toBeGreaterThanOrEqual(1950);
    expect(info.durationMs).toBeLessThanOrEqual(2060);
    expect(info.channels).toBe(c.channels);
    expect(info.sampleRate).toBe(c.sampleRate);
    expect(info.codec).toMatch(/pcm_s16le|mp3|vorbis|opus|aac|flac/);
  });

  it('trusts the content, not the name: an OGG named .mp3 is ogg/vorbis', async () => {
    const file = await makeSine(dir, { seconds: 1, format: 'ogg-vorbis', name: 'Thông báo – Thôn Đông.mp3' });
    expect((await audio.inspect(file)).format).toBe('ogg/vorbis');
  });

  it('refuses a text file renamed .mp3 with 415 naming text', async () => {
    const err = await appError(audio.inspect(makeTextFile(dir)));
    expect(err.code).toBe('unsupported_media_type');
    expect(err.status).toBe(415);
    expect(err.detail).toMatch(/plain text/);
  });

  it('refuses an image and a video without sound with 415 naming what was found', async () => {
    const png = await appError(audio.inspect(await makePng(dir)));
    expect(png.status).toBe(415);
    expect(png.detail).toMatch(/png/);
    expect(png.detail).toMatch(/image/);

    const video = await appError(audio.inspect(await makeSilentVideo(dir)));
    expect(video.status).toBe(415);
    expect(video.detail).toMatch(/video without an audio track/);
  });

  it('refuses an empty file and unknown binary data with 415', async () => {
    const empty = path.join(dir, 'empty.mp3');
    fs.writeFileSync(empty, '');
    expect((await appError(audio.inspect(empty))).code).toBe('unsupported_media_type');

    const binary = path.join(dir, 'random.mp3');
    fs.writeFileSync(binary, Buffer.from(Array.from({ length: 2048 }, (_, i) => (i * 7919 + 13) % 251)));
    const err = await appError(audio.inspect(binary));
    expect(err.code).toBe('unsupported_media_type');
    expect(err.detail).toMatch(/not audio/);
  });

  it('refuses a playlist in disguise that names another file on the server', async () => {
    // An HLS playlist is text, refused as such; with one byte that is not UTF-8 it is not text any more, and
    // ffmpeg would follow it to the file it names if anything but the upload itself could be opened.
    const secret = await makeSine(dir, { seconds: 1, format: 'mp3', name: 'not-yours.mp3' });
    const playlist = path.join(dir, 'playlist.mp3');
    fs.writeFileSync(
      playlist,
      Buffer.concat([
        Buffer.from('#EXTM3U\n#EXT-X-TARGETDURATION:1\n# '),
        Buffer.from([0xff, 0xfe]),
        Buffer.from(`\n#EXTINF:1,\nfile:${secret}\n#EXT-X-ENDLIST\n`),
      ]),
    );
    expect((await appError(audio.inspect(playlist))).code).toBe('unsupported_media_type');
  });

  it('refuses a truncated MP3 with 422, saying how much was declared and how much decodes', async () => {
    const err = await appError(audio.inspect(await makeTruncatedMp3(dir, { seconds: 4 })));
    expect(err.code).toBe('audio_undecodable');
    expect(err.status).toBe(422);
    expect(err.detail).toMatch(/truncated: declared 4(\.\d)? s, only [12](\.\d)? s decodable/);
  });

  it('refuses an M4A cut before its index with 422', async () => {
    const whole = await makeSine(dir, { seconds: 2, format: 'm4a' });
    const bytes = fs.readFileSync(whole);
    const cut = path.join(dir, 'cut.m4a');
    fs.writeFileSync(cut, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const err = await appError(audio.inspect(cut));
    expect(err.code).toBe('audio_undecodable');
    expect(err.status).toBe(422);
  });

  it('refuses audio longer than the limit with 422', async () => {
    const short = new Audio(tools, { ...SETTINGS, maxDurationMs: 3000 });
    for (const format of ['wav', 'mp3'] as const) {
      const err = await appError(short.inspect(await makeSine(dir, { seconds: 5, format })));
      expect(err.code).toBe('audio_too_long');
      expect(err.status).toBe(422);
      expect(err.detail).toMatch(/limit is 3 s/);
    }
    // At the limit is fine.
    expect((await short.inspect(await makeSine(dir, { seconds: 3 }))).durationMs).toBe(3000);
  });
});

describe('render', () => {
  /** Sizes of every MPEG frame: a CBR stream at 64 kb/s and 44.1 kHz has 208- or 209-byte frames only. */
  async function frameSizes(file: string): Promise<Set<number>> {
    const { stdout } = await runTool(
      tools.ffprobe,
      ['-v', 'error', '-select_streams', 'a:0', '-show_entries', 'packet=size', '-of', 'csv=p=0', file],
      { timeoutMs: 30_000 },
    );
    // csv lines may carry a trailing separator or be blank (side data): keep the numbers.
    const sizes = stdout
      .toString('utf8')
      .split('\n')
      .map((line) => Number.parseInt(line, 10))
      .filter((size) => Number.isFinite(size));
    expect(sizes.length).toBeGreaterThan(100);
    return new Set(sizes);
  }

  it.each([
    ['quiet (-35 LUFS)', makeQuiet],
    ['loud (-7 LUFS)', makeLoud],
  ] as const)('brings a %s recording within 1 LU of -16 LUFS, mono 44.1 kHz CBR', async (_, make) => {
    const source = await make(dir, { seconds: 4, format: 'flac' });
    const before = await audio.loudness(source);
    expect(Math.abs((before ?? 0) - -16)).toBeGreaterThan(8);

    const out = path.join(dir, `rendered-${path.basename(source)}.mp3`);
    const result = await audio.render([{ file: source }], out);
    expect(result.loudnessLufs).not.toBeNull();
    expect(Math.abs((result.loudnessLufs ?? 0) - -16)).toBeLessThanOrEqual(1);
    const measured = await audio.loudness(out);
    expect(Math.abs((measured ?? 0) - -16)).toBeLessThanOrEqual(1);

    const probed = await probe(out);
    expect(probed).toMatchObject({
      formatName: 'mp3',
      codec: 'mp3',
      sampleRate: 44100,
      channels: 1,
      bitRate: 64000,
    });
    expect([...(await frameSizes(out))].every((size) => size === 208 || size === 209)).toBe(true);
    expect(Math.abs(result.durationMs - 4000)).toBeLessThanOrEqual(100);
  });

  it('uses the configured bitrate', async () => {
    const at32 = new Audio(tools, { ...SETTINGS, bitrateKbps: 32 });
    const out = path.join(dir, 'at32.mp3');
    await at32.render([{ file: await makeSine(dir, { seconds: 2 }) }], out);
    expect((await probe(out)).bitRate).toBe(32000);
  });

  it('joins files of any format, rate and channels with silences; the duration is the sum', async () => {
    const first = await makeSine(dir, { seconds: 2, format: 'mp3', frequency: 440 });
    const second = await makeSine(dir, {
      seconds: 1,
      format: 'flac',
      sampleRate: 22050,
      channels: 2,
      frequency: 660,
    });
    const third = await makeSine(dir, { seconds: 1, format: 'ogg-opus', amplitude: 0.05 });
    const out = path.join(dir, 'bulletin.mp3');
    const result = await audio.render(
      [{ file: first }, { silenceMs: 1500 }, { file: second }, { silenceMs: 250 }, { file: third }],
      out,
    );
    expect(Math.abs(result.durationMs - 5750)).toBeLessThanOrEqual(100);
    expect(Math.abs((result.loudnessLufs ?? 0) - -16)).toBeLessThanOrEqual(1);
    const info = await audio.inspect(out);
    expect(info).toMatchObject({ format: 'mp3', channels: 1, sampleRate: 44100 });
    expect(Math.abs(info.durationMs - 5750)).toBeLessThanOrEqual(100);
  });

  it('cuts the output at maxDurationMs', async () => {
    const out = path.join(dir, 'cut.mp3');
    const result = await audio.render(
      [{ file: await makeSine(dir, { seconds: 5 }) }, { silenceMs: 1000 }],
      out,
      {
        maxDurationMs: 2000,
      },
    );
    expect(Math.abs(result.durationMs - 2000)).toBeLessThanOrEqual(100);
    expect(Math.abs((await audio.inspect(out)).durationMs - 2000)).toBeLessThanOrEqual(100);
  });

  it('renders silence alone without failing; its loudness is null', async () => {
    const out = path.join(dir, 'silence.mp3');
    const result = await audio.render(
      [{ silenceMs: 1000 }, { file: await makeSilence(dir, { seconds: 1 }) }],
      out,
    );
    expect(result.loudnessLufs).toBeNull();
    expect(Math.abs(result.durationMs - 2000)).toBeLessThanOrEqual(100);
    expect(await audio.loudness(out)).toBeNull();
  });

  it('leaves nothing behind when a part cannot be read', async () => {
    const sub = fs.mkdtempSync(path.join(dir, 'fail-'));
    const out = path.join(sub, 'out.mp3');
    await expect(
      audio.render(
        [{ file: await makeSine(dir, { seconds: 1 }) }, { file: path.join(sub, 'missing.wav') }],
        out,
      ),
    ).rejects.toThrow();
    expect(fs.readdirSync(sub)).toEqual([]);
  });
});

describe('loudness', () => {
  it('measures integrated loudness close to what the fixtures ask for, and null for silence', async () => {
    const tone = await makeSine(dir, { seconds: 3, lufs: -20 });
    expect(Math.abs(((await audio.loudness(tone)) ?? 0) - -20)).toBeLessThanOrEqual(0.5);
    expect(await audio.loudness(await makeSilence(dir, { seconds: 1, format: 'mp3' }))).toBeNull();
  });
});
