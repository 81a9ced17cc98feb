/**
 * Emergency audio with the real parts: the app's media store (a temporary DATA_DIR), Audio.render on the real
 * ffmpeg, the real Vietnamese TTS (Debian's espeak-ng when installed, else the WebAssembly build).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { systemClock } from '../src/lib/clock.js';
import type { Actor } from '../src/lib/scope.js';
import { runTool } from '../src/media/tools.js';
import {
  ATTENTION_TONE,
  EmergencyRenderer,
  PAUSE_AFTER_SIGNAL_MS,
  PAUSE_AROUND_PHRASE_MS,
  type EmergencyRenderDeps,
} from '../src/modules/emergencies/render.js';
import { MediaRepository } from '../src/modules/media/media.repository.js';
import { resolveSpeechEngine } from '../src/modules/tts/engines.js';
import { TtsRepository } from '../src/modules/tts/tts.repository.js';
import { TtsService } from '../src/modules/tts/tts.service.js';
import { createTestApp, type TestApp } from './support/app.js';
import { audioTools, makeSine, probe } from './support/audio.js';
import { upload, type MediaJson } from './support/media.js';

/** A typical warning: about 200 characters, every tone mark, numbers the normaliser reads out. */
const WARNING =
  'Khẩn cấp: bão số 3 sẽ đổ bộ vào huyện lúc 14 giờ chiều nay, gió giật cấp 12. Đề nghị bà con ở vùng ' +
  'trũng thấp sơ tán ngay, chằng chống nhà cửa, không ra sông suối. Thôn Đông tập trung ở trường học.';
const TARGET_LUFS = -16;
/** Joining parts and the MP3 encoder's priming and padding move lengths by a few tens of ms. */
const TOLERANCE_MS = 250;

let t: TestApp;
let actor: Actor;
let deps: EmergencyRenderDeps;
let tts: TtsService;
let dir: string;
const validUntil = new Date(Date.now() + 3_600_000);

/** Integrated loudness (LUFS) and mean level (dB) of a file from `fromS` seconds on. */
async function levels(file: string, fromS = 0): Promise<{ lufs: number; meanDb: number }> {
  const { ffmpeg } = await audioTools();
  const { stderr } = await runTool(
    ffmpeg,
    [
      '-nostdin',
      '-hide_banner',
      '-ss',
      String(fromS),
      '-i',
      file,
      '-af',
      'ebur128,volumedetect',
      '-f',
      'null',
      '-',
    ],
    { timeoutMs: 30_000 },
  );
  const summary = stderr.slice(stderr.lastIndexOf('Summary:'));
  return {
    lufs: Number(/I:\s*(-?[\d.]+) LUFS/.exec(summary)?.[1]),
    meanDb: Number(/mean_volume: (-?[\d.]+) dB/.exec(stderr)?.[1]),
  };
}

/** How long the engine speaks `text` (its WAV, measured by ffprobe). */
async function speechMs(text: string): Promise<number> {
  const wav = await tts.speak(text, { voice: 'vi' });
  try {
    return (await probe(wav)).durationMs;
  } finally {
    fs.rmSync(wav, { force: true });
  }
}

beforeAll(async () => {
  t = await createTestApp();
  const found = t.app.services.auth.authenticate(t.adminToken);
  if (!found) throw new Error('admin token not accepted');
  actor = found;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-emergency-'));
  tts = new TtsService(
    new TtsRepository(t.app.db),
    t.app.services.audit,
    await resolveSpeechEngine({}),
    systemClock,
    { audio: t.app.services.media.audio, tmpDir: dir },
  );
  deps = { media: t.app.services.media, speech: tts, ffmpeg: (await audioTools()).ffmpeg };
});
afterAll(async () => {
  await t.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('attention signal', () => {
  it('is generated once: 3 s of the two-tone signal at the loudness target, kept in the store', async () => {
    const renderer = new EmergencyRenderer(deps);
    const started = performance.now();
    const [tone, again] = await Promise.all([renderer.attentionSignal(), renderer.attentionSignal()]);
    console.log(`built-in attention signal generated in ${Math.round(performance.now() - started)} ms`);
    expect(again).toEqual(tone);

    const file = t.app.services.media.store.pathOf(tone.sha256);
    const probed = await probe(file);
    expect(probed).toMatchObject({ codec: 'mp3', channels: 1, sampleRate: 44100 });
    expect(Math.abs(probed.durationMs - ATTENTION_TONE.seconds * 1000)).toBeLessThan(TOLERANCE_MS);
    expect(Math.abs(tone.durationMs - ATTENTION_TONE.seconds * 1000)).toBeLessThan(TOLERANCE_MS);
    expect(Math.abs((await levels(file)).lufs - TARGET_LUFS)).toBeLessThan(1);

    // Both tones are there: most energy passes a band around 853 Hz, and around 960 Hz, but little above.
    const { ffmpeg } = await audioTools();
    const band = async (filter: string) => {
      const { stderr } = await runTool(
        ffmpeg,
        ['-nostdin', '-hide_banner', '-i', file, '-af', `${filter},volumedetect`, '-f', 'null', '-'],
        { timeoutMs: 30_000 },
      );
      return Number(/mean_volume: (-?[\d.]+) dB/.exec(stderr)?.[1]);
    };
    const low = await band('bandpass=f=853:width_type=h:w=30');
    const high = await band('bandpass=f=960:width_type=h:w=30');
    const elsewhere = await band('bandpass=f=2000:width_type=h:w=30');
    expect(Math.abs(low - high)).toBeLessThan(4);
    expect(low - elsewhere).toBeGreaterThan(20);

    // Removed from the store (the clean-up), it is made again: same bytes, same hash.
    fs.rmSync(file);
    const remade = await renderer.attentionSignal();
    expect(remade.sha256).toBe(tone.sha256);
    expect(fs.existsSync(file)).toBe(true);
  });

  it('is the configured media item when one is set, and the built-in tone when that item is gone', async () => {
    const token = t.adminToken;
    const res = await upload(t, token, {
      filename: 'còi-báo-động.wav',
      bytes: fs.readFileSync(await makeSine(dir, { seconds: 2, frequency: 700 })),
    });
    expect(res.statusCode).toBe(201);
    const siren = res.json<MediaJson>();
    const media = new MediaRepository(t.app.db);
    const findMedia = (id: string) => media.findById(id)?.media;

    const configured = new EmergencyRenderer(deps, { attentionMediaId: siren.id, findMedia });
    expect(configured.configuredSignalMissing()).toBe(false);
    expect(await configured.attentionSignal()).toEqual({
      sha256: siren.sha256,
      durationMs: siren.durationMs,
    });
    const rendered = await configured.renderEmergency(
      actor,
      { text: 'Thử còi.', exercise: false },
      validUntil,
    );
    const withTone = await new EmergencyRenderer(deps).renderEmergency(
      actor,
      { text: 'Thử còi.', exercise: false },
      validUntil,
    );
    // A 2 s signal instead of the 3 s tone.
    expect(withTone.durationMs - rendered.durationMs).toBeGreaterThan(1000 - TOLERANCE_MS);
    expect(withTone.durationMs - rendered.durationMs).toBeLessThan(1000 + TOLERANCE_MS);

    const missing = new EmergencyRenderer(deps, { attentionMediaId: 'med_gone', findMedia });
    expect(missing.configuredSignalMissing()).toBe(true);
    const fallback = await missing.attentionSignal();
    expect(Math.abs(fallback.durationMs - ATTENTION_TONE.seconds * 1000)).toBeLessThan(TOLERANCE_MS);
  });
});

describe('rendering an emergency', () => {
  const renderer = () => new EmergencyRenderer(deps);

  it('renders a Vietnamese text warning into one MP3: signal, pause, speech; linked for devices', async () => {
    const r = renderer();
    await r.attentionSignal();
    const started = performance.now();
    const result = await r.renderEmergency(actor, { text: WARNING, exercise: false }, validUntil);
    console.log(
      `a ${WARNING.length}-character warning rendered in ${Math.round(performance.now() - started)} ms ` +
        `(${result.durationMs} ms of audio, attention signal cached)`,
    );

    const file = t.app.services.media.store.pathOf(result.sha256);
    const probed = await probe(file);
    expect(probed).toMatchObject({ formatName: 'mp3', codec: 'mp3', channels: 1, sampleRate: 44100 });
    const expected = ATTENTION_TONE.seconds * 1000 + PAUSE_AFTER_SIGNAL_MS + (await speechMs(WARNING));
    expect(Math.abs(result.durationMs - expected)).toBeLessThan(TOLERANCE_MS);
    expect(Math.abs(probed.durationMs - expected)).toBeLessThan(TOLERANCE_MS);
    expect(result.sizeBytes).toBe(fs.statSync(file).size);
    expect(Math.abs((result.loudnessLufs ?? 0) - TARGET_LUFS)).toBeLessThan(1);
    // The speech after the signal is there, not silence.
    expect((await levels(file, ATTENTION_TONE.seconds + 1)).meanDb).toBeGreaterThan(-40);

    expect(result.source).toMatchObject({
      kind: 'media',
      sha256: result.sha256,
      durationMs: result.durationMs,
    });
    expect(result.source.url).toMatch(
      new RegExp(`/downloads/${result.sha256}\\.mp3\\?expires=\\d+&signature=`),
    );
  });

  it('says "Đây là diễn tập." before and after the message of an exercise, in the chosen voice', async () => {
    const r = renderer();
    const text = 'Diễn tập ứng phó lũ quét ở xã Mường Lống.';
    const real = await r.renderEmergency(
      actor,
      { text, voice: 'vi-vn-x-south', exercise: false },
      validUntil,
    );
    const started = performance.now();
    const drill = await r.renderEmergency(
      actor,
      { text, voice: 'vi-vn-x-south', exercise: true },
      validUntil,
    );
    console.log(`exercise rendered in ${Math.round(performance.now() - started)} ms (phrase spoken first)`);
    const phrase = await r.exercisePhrase('vi-vn-x-south');
    expect(phrase.durationMs).toBeGreaterThan(500);

    expect(drill.sha256).not.toBe(real.sha256);
    const added = drill.durationMs - real.durationMs;
    const expected = 2 * (phrase.durationMs + PAUSE_AROUND_PHRASE_MS);
    expect(Math.abs(added - expected)).toBeLessThan(TOLERANCE_MS);

    // The phrase is kept: a second exercise speaks only the message, and renders the same bytes.
    const again = await r.renderEmergency(
      actor,
      { text, voice: 'vi-vn-x-south', exercise: true },
      validUntil,
    );
    expect(again.sha256).toBe(drill.sha256);
    expect(await r.exercisePhrase('vi-vn-x-south')).toEqual(phrase);
  });

  it('plays a media item or a programme rendition as the message', async () => {
    const res = await upload(
      t,
      t.adminToken,
      {
        filename: 'Cảnh báo lũ – Thôn Đông.wav',
        bytes: fs.readFileSync(await makeSine(dir, { seconds: 2 })),
      },
      { title: 'Cảnh báo lũ – Thôn Đông' },
    );
    expect(res.statusCode).toBe(201);
    const item = res.json<MediaJson>();
    const r = renderer();

    const byMedia = await r.renderEmergency(actor, { mediaId: item.id, exercise: false }, validUntil);
    const expected = ATTENTION_TONE.seconds * 1000 + PAUSE_AFTER_SIGNAL_MS + 2000;
    expect(Math.abs(byMedia.durationMs - expected)).toBeLessThan(TOLERANCE_MS);
    expect((await levels(t.app.services.media.store.pathOf(byMedia.sha256), 4)).meanDb).toBeGreaterThan(-40);

    const byRendition = await r.renderEmergency(
      actor,
      { rendition: { sha256: item.rendition.sha256, durationMs: item.rendition.durationMs }, exercise: true },
      validUntil,
    );
    const phrase = await r.exercisePhrase();
    expect(Math.abs(byRendition.durationMs - expected - 2 * (phrase.durationMs + 500))).toBeLessThan(
      TOLERANCE_MS,
    );

    await expect(
      r.renderEmergency(actor, { mediaId: 'med_không_có', exercise: false }, validUntil),
    ).rejects.toMatchObject({ code: 'not_found', message: `body.mediaId: media med_không_có not found` });
  });

  it('refuses a message that is missing, doubled or unreadable, naming the field', async () => {
    const r = renderer();
    await expect(r.renderEmergency(actor, { exercise: false }, validUntil)).rejects.toMatchObject({
      code: 'validation_failed',
    });
    await expect(
      r.renderEmergency(actor, { text: 'Bão.', mediaId: 'med_x', exercise: false }, validUntil),
    ).rejects.toMatchObject({ code: 'validation_failed' });
    await expect(
      r.renderEmergency(actor, { text: ' … ', exercise: false }, validUntil),
    ).rejects.toMatchObject({
      code: 'validation_failed',
      extra: { errors: [{ field: 'body.text' }] },
    });
  });
});
