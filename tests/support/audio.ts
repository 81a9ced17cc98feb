/**
 * Real audio fixtures made with the real ffmpeg (the npm build, or FFMPEG_PATH / FFPROBE_PATH when set),
 * for every test that needs a file to upload, inspect or render. Each maker writes a new file in `dir` and
 * returns its path; files are short (a few seconds) to keep the suite fast.
 *
 *   const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-audio-'));
 *   const wav = await makeSine(dir, { seconds: 2 });
 *   const ogg = await makeSine(dir, { seconds: 2, format: 'ogg-vorbis', lufs: -20 });
 *   const bad = await makeTruncatedMp3(dir, { seconds: 4 });
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { resolveAudioTools, runTool, type AudioTools } from '../../src/media/tools.js';

export type FixtureFormat = 'wav' | 'mp3' | 'ogg-vorbis' | 'ogg-opus' | 'm4a' | 'flac';

/** The `format` that Audio.inspect reports for each fixture format. */
export const INSPECTED_FORMAT: Record<FixtureFormat, string> = {
  wav: 'wav',
  mp3: 'mp3',
  'ogg-vorbis': 'ogg/vorbis',
  'ogg-opus': 'ogg/opus',
  m4a: 'm4a/aac',
  flac: 'flac',
};

const EXTENSION: Record<FixtureFormat, string> = {
  wav: '.wav',
  mp3: '.mp3',
  'ogg-vorbis': '.ogg',
  'ogg-opus': '.opus',
  m4a: '.m4a',
  flac: '.flac',
};

/** Encoder arguments per format. MP3 is VBR so that LAME writes a Xing header with the frame count. */
const ENCODE: Record<FixtureFormat, string[]> = {
  wav: ['-c:a', 'pcm_s16le', '-f', 'wav'],
  mp3: ['-c:a', 'libmp3lame', '-q:a', '4', '-f', 'mp3'],
  'ogg-vorbis': ['-c:a', 'libvorbis', '-q:a', '3', '-f', 'ogg'],
  'ogg-opus': ['-c:a', 'libopus', '-b:a', '64k', '-ar', '48000', '-f', 'ogg'],
  m4a: ['-c:a', 'aac', '-b:a', '96k', '-f', 'ipod'],
  flac: ['-c:a', 'flac', '-f', 'flac'],
};

let tools: Promise<AudioTools> | undefined;

/** The ffmpeg/ffprobe the tests use (resolved once per test file). */
export function audioTools(): Promise<AudioTools> {
  tools ??= resolveAudioTools({
    ffmpegPath: process.env.FFMPEG_PATH || undefined,
    ffprobePath: process.env.FFPROBE_PATH || undefined,
  });
  return tools;
}

function fresh(dir: string, name: string | undefined, extension: string): string {
  return path.join(dir, name ?? `${randomUUID()}${extension}`);
}

async function ffmpeg(args: string[]): Promise<void> {
  const { ffmpeg: bin } = await audioTools();
  await runTool(bin, ['-nostdin', '-hide_banner', '-v', 'error', '-y', ...args], { timeoutMs: 60_000 });
}

export interface SineOptions {
  seconds: number;
  /** Hz; default 1000 (where K-weighting is ~0 dB, so `lufs` comes out close to what was asked). */
  frequency?: number;
  /** Peak amplitude, 0–1 (default 0.25, about -15 LUFS at 1 kHz). Ignored when `lufs` is given. */
  amplitude?: number;
  /** Approximate integrated loudness wanted (exact within ~0.3 LU at 1 kHz). */
  lufs?: number;
  /** Vary the level 3 times a second (like speech) instead of a steady tone. */
  modulated?: boolean;
  format?: FixtureFormat;
  sampleRate?: number;
  channels?: 1 | 2;
  /** File name inside `dir` (default: a random name with the format's extension). */
  name?: string;
}

/** A full-scale sine at 1 kHz measures -3.01 LUFS, so amplitude = 10^((lufs + 3.01) / 20). */
export function amplitudeForLufs(lufs: number): number {
  return 10 ** ((lufs + 3.01) / 20);
}

/** A sine tone (optionally level-modulated) in any accepted format; returns its path. */
export async function makeSine(dir: string, options: SineOptions): Promise<string> {
  const format = options.format ?? 'wav';
  const frequency = options.frequency ?? 1000;
  const rate = options.sampleRate ?? (format === 'ogg-opus' ? 48000 : 44100);
  const channels = options.channels ?? 1;
  let amplitude = options.lufs !== undefined ? amplitudeForLufs(options.lufs) : (options.amplitude ?? 0.25);
  // The modulated tone averages lower than its peak: raise it so that `lufs` still holds roughly.
  if (options.modulated && options.lufs !== undefined) amplitude *= 1.59;
  const envelope = options.modulated ? '*(0.55+0.45*sin(2*PI*3*t))' : '';
  const wave = `${amplitude.toFixed(6)}*sin(2*PI*${frequency}*t)${envelope}`;
  const expr = channels === 2 ? `${wave}|${wave}` : wave;
  const out = fresh(dir, options.name, EXTENSION[format]);
  await ffmpeg([
    '-f',
    'lavfi',
    '-i',
    `aevalsrc=${expr}:s=${rate}:d=${options.seconds}`,
    ...ENCODE[format],
    out,
  ]);
  return out;
}

/** Digital silence in any accepted format. */
export async function makeSilence(
  dir: string,
  options: { seconds: number; format?: FixtureFormat; name?: string },
): Promise<string> {
  const format = options.format ?? 'wav';
  const rate = format === 'ogg-opus' ? 48000 : 44100;
  const out = fresh(dir, options.name, EXTENSION[format]);
  await ffmpeg([
    '-f',
    'lavfi',
    '-i',
    `anullsrc=r=${rate}:cl=mono`,
    '-t',
    String(options.seconds),
    ...ENCODE[format],
    out,
  ]);
  return out;
}

/** A quiet recording: about -35 LUFS (a 1 kHz tone, level-modulated like speech). */
export function makeQuiet(
  dir: string,
  options: { seconds: number; format?: FixtureFormat; name?: string },
): Promise<string> {
  return makeSine(dir, { ...options, lufs: -35, modulated: true });
}

/** A loud recording: about -7 LUFS, peaks near -2 dBFS (a 1 kHz tone, level-modulated like speech). */
export function makeLoud(
  dir: string,
  options: { seconds: number; format?: FixtureFormat; name?: string },
): Promise<string> {
  return makeSine(dir, { ...options, lufs: -7, modulated: true });
}

/** An MP3 (with its Xing header) cut to the first half of its bytes: the header still declares the whole. */
export async function makeTruncatedMp3(
  dir: string,
  options: { seconds: number; name?: string },
): Promise<string> {
  const whole = await makeSine(dir, { seconds: options.seconds, format: 'mp3' });
  const bytes = fs.readFileSync(whole);
  fs.rmSync(whole);
  const out = fresh(dir, options.name, '.mp3');
  fs.writeFileSync(out, bytes.subarray(0, Math.floor(bytes.length / 2)));
  return out;
}

/** A plain UTF-8 text file (Vietnamese) named like an MP3. */
export function makeTextFile(dir: string, options: { name?: string } = {}): string {
  const out = fresh(dir, options.name, '.mp3');
  fs.writeFileSync(
    out,
    'Thông báo lịch tiêm phòng dại – Thôn Đông.\nĐề nghị bà con đưa chó, mèo đến nhà văn hoá lúc 7 giờ sáng.\n',
  );
  return out;
}

/** A small PNG image, named like an MP3 unless `name` says otherwise. */
export async function makePng(dir: string, options: { name?: string } = {}): Promise<string> {
  const png = fresh(dir, undefined, '.png');
  await ffmpeg(['-f', 'lavfi', '-i', 'color=c=red:s=16x16', '-frames:v', '1', '-f', 'image2', png]);
  const out = fresh(dir, options.name, '.mp3');
  fs.renameSync(png, out);
  return out;
}

/** A short MP4 video with no audio track. */
export async function makeSilentVideo(
  dir: string,
  options: { seconds?: number; name?: string } = {},
): Promise<string> {
  const out = fresh(dir, options.name, '.mp4');
  await ffmpeg([
    '-f',
    'lavfi',
    '-i',
    'testsrc=size=64x64:rate=10',
    '-t',
    String(options.seconds ?? 1),
    '-c:v',
    'mpeg4',
    '-f',
    'mp4',
    out,
  ]);
  return out;
}

export interface ProbedAudio {
  formatName: string;
  codec: string;
  sampleRate: number;
  channels: number;
  /** Bits per second as ffprobe reports it for the stream (CBR: the set bitrate). */
  bitRate: number;
  durationMs: number;
}

/** What ffprobe says about a file's first audio stream, for assertions on rendered output. */
export async function probe(file: string): Promise<ProbedAudio> {
  const { ffprobe } = await audioTools();
  const { stdout } = await runTool(
    ffprobe,
    ['-v', 'error', '-print_format', 'json', '-show_format', '-show_streams', file],
    { timeoutMs: 30_000 },
  );
  const json = JSON.parse(stdout.toString('utf8')) as {
    format: { format_name: string; duration?: string };
    streams: {
      codec_type: string;
      codec_name: string;
      sample_rate?: string;
      channels?: number;
      bit_rate?: string;
    }[];
  };
  const audio = json.streams.find((s) => s.codec_type === 'audio');
  if (!audio) throw new Error(`${file} has no audio stream`);
  return {
    formatName: json.format.format_name,
    codec: audio.codec_name,
    sampleRate: Number(audio.sample_rate),
    channels: audio.channels ?? 0,
    bitRate: Number(audio.bit_rate),
    durationMs: Math.round(Number(json.format.duration ?? 0) * 1000),
  };
}

/**
 * A PCM WAV with `channels` channels (9 or more: no standard layout), written byte by byte. ffprobe reads
 * it and it decodes, but ffmpeg cannot mix it down to mono: a file that passes inspection and then fails
 * processing.
 */
export function makeManyChannelWav(dir: string, options: { channels: number; seconds: number }): string {
  const rate = 8000;
  const data = Buffer.alloc(options.channels * 2 * rate * options.seconds);
  for (let i = 0; i < data.length / 2; i++) data.writeInt16LE(Math.round(8000 * Math.sin(i / 7)), i * 2);
  const header = Buffer.alloc(44);
  header.write('RIFF', 0, 'latin1');
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVEfmt ', 8, 'latin1');
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20);
  header.writeUInt16LE(options.channels, 22);
  header.writeUInt32LE(rate, 24);
  header.writeUInt32LE(rate * options.channels * 2, 28);
  header.writeUInt16LE(options.channels * 2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36, 'latin1');
  header.writeUInt32LE(data.length, 40);
  const file = fresh(dir, undefined, '.wav');
  fs.writeFileSync(file, Buffer.concat([header, data]));
  return file;
}
