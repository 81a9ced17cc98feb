/**
 * What Loa does with audio: finds out what an uploaded file really is, and renders programmes into the one
 * format devices play (MP3, mono, 44.1 kHz, constant bitrate, loudness-normalised per EBU R128).
 *
 * Everything runs through ffmpeg/ffprobe (src/media/tools.ts: argument arrays, time limits, bounded output).
 * Time limits grow with the audio's duration: decoding runs at well over 10× real time even on a small
 * server, so a 2-hour recording gets minutes, while a stuck run on a short clip is killed quickly.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { AppError } from '../errors.js';
import { runTool, ToolError, type AudioTools } from './tools.js';

export interface AudioInfo {
  /** 'mp3' | 'wav' | 'ogg/vorbis' | 'ogg/opus' | 'm4a/aac' | 'flac' */
  format: string;
  codec: string;
  /** Decoded duration (what a player will actually play), not what the header claims. */
  durationMs: number;
  channels: number;
  sampleRate: number;
}

/**
 * A file (with its decoded duration when known: it sets the time limits, and a header's claim can be far
 * off, e.g. MP3s joined by `cat` declare the first one's length) or a silence.
 */
export type RenderPart = { file: string; durationMs?: number } | { silenceMs: number };

export interface RenderResult {
  durationMs: number;
  loudnessLufs: number | null;
}

export interface AudioSettings {
  bitrateKbps: number;
  loudnessLufs: number;
  maxDurationMs: number;
}

const ACCEPTED = 'accepted formats are MP3, WAV, OGG (Vorbis or Opus), M4A/AAC and FLAC';
/** Sample rate of the device format. */
const RATE = 44100;
/** Peak ceiling of the normalised output (-1.5 dBFS, as a linear sample value); leaves headroom for
 *  inter-sample peaks and the MP3 encoder's overshoot. */
const LIMIT = 10 ** (-1.5 / 20);
/** Below this the EBU R128 absolute gate leaves nothing to measure: the audio is silence. */
const SILENCE_LUFS = -69.9;
/** A header duration this much longer than what decodes means the file was cut short. */
const TRUNCATION_TOLERANCE_MS = 500;
const TRUNCATION_TOLERANCE_RATIO = 0.05;
/** A file may run this much over the limit (codec priming, rounding) before it is refused. */
const OVER_LIMIT_GRACE_MS = 500;

/** Time allowed for a run over `durationMs` of audio: a fixed start-up allowance plus 1/5 of real time. */
function timeLimitFor(durationMs: number): number {
  return 30_000 + Math.ceil(Math.max(0, durationMs) / 5);
}

const seconds = (ms: number) => (ms / 1000).toFixed(1).replace(/\.0$/, '');

interface ProbeJson {
  format?: { format_name?: string; duration?: string };
  streams?: {
    index: number;
    codec_type?: string;
    codec_name?: string;
    sample_rate?: string;
    channels?: number;
    disposition?: { attached_pic?: number };
  }[];
}

interface Meter {
  durationMs: number;
  /** Integrated loudness (LUFS); null for silence. */
  lufs: number | null;
}

/** BS.1770 meter (integrated loudness, EBU R128 gating). framelog=verbose keeps its ten lines a
 *  second below the log level, while its summary is logged at `info`. */
const METER = 'ebur128=framelog=verbose';
/** Results closer than this to the target are left alone (the meter reads to 0.1 LU). */
const CORRECTION_THRESHOLD = 0.3;
const MAX_CORRECTIONS = 2;
/** A correction step never adds more than this (a quiet recording is not blown up by a bad estimate). */
const MAX_EXTRA_GAIN_DB = 10;

const volume = (db: number) => `volume=${db.toFixed(2)}dB`;

export class Audio {
  constructor(
    private readonly tools: AudioTools,
    private readonly settings: AudioSettings,
  ) {}

  /** The ffmpeg binary, for the few callers that generate audio rather than convert it (emergency tones). */
  get ffmpegPath(): string {
    return this.tools.ffmpeg;
  }

  async inspect(file: string): Promise<AudioInfo> {
    const head = await readHead(file, 4096);
    if (head.length === 0) throw new AppError('unsupported_media_type', 'not audio: the file is empty');
    // A text file renamed .mp3 makes ffmpeg's MP3 probe guess with a low score and fail obscurely: say it plainly.
    if (looksLikeText(head)) {
      throw new AppError('unsupported_media_type', 'not audio: the file is plain text');
    }

    const probe = await this.probe(file, head);
    const streams = probe.json.streams ?? [];
    const formatName = probe.json.format?.format_name ?? 'unknown';
    const audio = streams.find((s) => s.codec_type === 'audio');
    if (!audio) throw new AppError('unsupported_media_type', describeNonAudio(formatName, streams));
    const codec = audio.codec_name ?? 'unknown';
    const format = acceptedFormat(formatName, codec);
    if (!format) {
      throw new AppError('unsupported_media_type', `found ${formatName} audio (${codec}); ${ACCEPTED}`);
    }

    // The header's duration is only a claim; when ffprobe had to estimate it from the bitrate it is not
    // even that (a VBR MP3 without a Xing header), so it is not used to detect truncation.
    const declaredSeconds = Number(probe.json.format?.duration);
    const declaredMs =
      Number.isFinite(declaredSeconds) && !/estimating duration from bitrate/i.test(probe.stderr)
        ? Math.round(declaredSeconds * 1000)
        : null;
    const { maxDurationMs } = this.settings;
    if (declaredMs !== null && declaredMs > maxDurationMs + OVER_LIMIT_GRACE_MS) {
      throw tooLong(declaredMs, maxDurationMs);
    }

    // Decode the whole stream once (never beyond the limit): a file is only accepted if it really plays.
    const decodedMs = await this.decodedDuration(file, {
      stream: audio.index,
      budgetMs: Math.min(declaredMs ?? maxDurationMs, maxDurationMs) + 1000,
      stopAfterMs: maxDurationMs + 1000,
    });
    if (decodedMs <= 0) throw new AppError('audio_undecodable', 'no decodable audio in the file');
    if (decodedMs > maxDurationMs + OVER_LIMIT_GRACE_MS) throw tooLong(decodedMs, maxDurationMs);
    if (
      declaredMs !== null &&
      declaredMs - decodedMs > Math.max(TRUNCATION_TOLERANCE_MS, declaredMs * TRUNCATION_TOLERANCE_RATIO)
    ) {
      throw new AppError(
        'audio_undecodable',
        `truncated: declared ${seconds(declaredMs)} s, only ${seconds(decodedMs)} s decodable`,
      );
    }
    return {
      format,
      codec,
      durationMs: decodedMs,
      channels: audio.channels ?? 0,
      sampleRate: Number(audio.sample_rate ?? 0),
    };
  }

  async render(
    parts: RenderPart[],
    outFile: string,
    options: { maxDurationMs?: number } = {},
  ): Promise<RenderResult> {
    if (parts.length === 0) throw new Error('render needs at least one part');
    const limitMs = Math.min(
      options.maxDurationMs ?? this.settings.maxDurationMs,
      this.settings.maxDurationMs,
    );
    const expectedMs = Math.min(await this.partsDuration(parts), limitMs);
    const timeoutMs = timeLimitFor(expectedMs);

    // One filter graph does the mixing: every part becomes 44.1 kHz mono float, silences are generated in
    // the graph, concat joins them, atrim applies the duration limit. Both passes use the same graph so
    // that the measurement describes exactly what is encoded.
    const inputs: string[] = [];
    const chains: string[] = [];
    const labels: string[] = [];
    let fileCount = 0;
    parts.forEach((part, i) => {
      const label = `p${i}`;
      if ('file' in part) {
        const input = fileCount++;
        inputs.push(...fileInput(part.file));
        chains.push(
          `[${input}:a:0]aresample=${RATE},aformat=sample_fmts=fltp:sample_rates=${RATE}:channel_layouts=mono[${label}]`,
        );
      } else {
        const duration = Math.max(0, part.silenceMs) / 1000;
        chains.push(
          `anullsrc=r=${RATE}:cl=mono,atrim=duration=${duration},aformat=sample_fmts=fltp[${label}]`,
        );
      }
      labels.push(`[${label}]`);
    });
    const joined = `${labels.join('')}concat=n=${parts.length}:v=0:a=1,atrim=duration=${limitMs / 1000}`;
    const graph = (tail: string) => [...chains, `${joined},${tail}[out]`].join(';');
    const base = inputs;

    // Pass 1: measure the joined programme with ffmpeg's ebur128 (BS.1770-4 integrated loudness), the same
    // meter that checks the result.
    const target = this.settings.loudnessLufs;
    const input = await this.meter([...base, '-filter_complex', graph(METER), '-map', '[out]'], timeoutMs);

    const temp = path.join(
      path.dirname(outFile),
      `.${path.basename(outFile)}.${randomBytes(6).toString('hex')}.tmp`,
    );
    // Pass 2: a gain to the target, then a look-ahead peak limiter at the ceiling. Programmes whose peaks fit
    // under the ceiling after the gain are untouched by the limiter (a purely linear normalisation, keeping
    // their dynamics); peaky ones (eSpeak output reaches 0 dBFS at about -19 LUFS) have only their peaks
    // held down. Silence gets no gain.
    const encode = (gainDb: number) =>
      this.ffmpeg(
        [
          ...base,
          '-filter_complex',
          graph(`${volume(gainDb)},alimiter=limit=${LIMIT.toFixed(4)}:level=false`),
          '-map',
          '[out]',
          '-map_metadata',
          '-1',
          '-c:a',
          'libmp3lame',
          '-b:a',
          `${this.settings.bitrateKbps}k`,
          '-ar',
          String(RATE),
          '-ac',
          '1',
          // No ID3 tag: devices get bare MPEG frames (plus the LAME/Info header, which gives the exact length).
          '-id3v2_version',
          '0',
          '-f',
          'mp3',
          '-y',
          temp,
        ],
        timeoutMs,
      );
    try {
      let gain = input.lufs === null ? 0 : target - input.lufs;
      await encode(gain);
      let output = await this.meterFile(temp, expectedMs);
      // Limiting and the MP3 encoder both lower the loudness a little (the encoder by up to ~0.5 LU on a
      // modulated tone at 64 kb/s, the limiter by more on peaky speech): check the result and correct the gain,
      // at most twice. Loudness grows more slowly than the gain once the limiter works, hence the secant step.
      let previous: { gain: number; lufs: number } | null = null;
      for (let attempt = 0; attempt < MAX_CORRECTIONS; attempt++) {
        if (input.lufs === null || output.lufs === null) break;
        const error = target - output.lufs;
        if (Math.abs(error) < CORRECTION_THRESHOLD) break;
        let slope = 1;
        if (previous && gain !== previous.gain) {
          slope = Math.min(1, Math.max(0.2, (output.lufs - previous.lufs) / (gain - previous.gain)));
        }
        previous = { gain, lufs: output.lufs };
        gain += Math.min(MAX_EXTRA_GAIN_DB, error / slope);
        await encode(gain);
        output = await this.meterFile(temp, expectedMs);
      }
      await fs.rename(temp, outFile);
      return { durationMs: output.durationMs, loudnessLufs: output.lufs };
    } catch (err) {
      await fs.rm(temp, { force: true });
      throw err;
    }
  }

  /** Integrated loudness of a file; `durationMs` (decoded, when known) sets the time limit. */
  async loudness(file: string, durationMs?: number): Promise<number | null> {
    const expectedMs = durationMs ?? (await this.probeDuration(file)) ?? this.settings.maxDurationMs;
    return (await this.meterFile(file, expectedMs)).lufs;
  }

  /** ffprobe, restricted to the few fields used so that its output stays small whatever the file's tags. */
  private async probe(file: string, head: Buffer): Promise<{ json: ProbeJson; stderr: string }> {
    try {
      const { stdout, stderr } = await runTool(
        this.tools.ffprobe,
        [
          '-hide_banner',
          '-v',
          'warning',
          '-print_format',
          'json',
          '-show_entries',
          'format=format_name,duration:stream=index,codec_type,codec_name,sample_rate,channels:stream_disposition=attached_pic',
          ...fileInput(file),
        ],
        { timeoutMs: 30_000, maxOutputBytes: 256 * 1024 },
      );
      return { json: JSON.parse(stdout.toString('utf8')) as ProbeJson, stderr };
    } catch (err) {
      if (!(err instanceof ToolError)) throw err;
      // ffprobe could not read it: a damaged audio file (an M4A cut before its index, an empty Ogg) is
      // undecodable; anything else is not audio at all.
      const kind = sniff(head);
      if (kind.audio)
        throw new AppError('audio_undecodable', `${kind.name} that cannot be read (damaged or truncated)`);
      throw new AppError('unsupported_media_type', `not audio: ${kind.name}`);
    }
  }

  /** Decodes stream `stream` to nowhere and returns how many milliseconds of audio came out. */
  private async decodedDuration(
    file: string,
    options: { stream: number; budgetMs: number; stopAfterMs: number },
  ): Promise<number> {
    const timeoutMs = timeLimitFor(options.budgetMs);
    let stdout: Buffer;
    try {
      ({ stdout } = await runTool(
        this.tools.ffmpeg,
        [
          '-nostdin',
          '-hide_banner',
          '-nostats',
          '-v',
          'error',
          ...fileInput(file),
          '-map',
          `0:${options.stream}`,
          '-t',
          String(options.stopAfterMs / 1000),
          '-progress',
          'pipe:1',
          '-f',
          'null',
          '-',
        ],
        { timeoutMs, maxOutputBytes: 1024 * 1024 },
      ));
    } catch (err) {
      if (!(err instanceof ToolError)) throw err;
      if (err.timedOut) {
        throw new AppError('audio_undecodable', `decoding took longer than ${seconds(timeoutMs)} s`);
      }
      throw new AppError('audio_undecodable', 'the audio could not be decoded');
    }
    return progressDurationMs(stdout.toString('utf8'));
  }

  /** Decoded duration and integrated loudness of a file's first audio stream, in one pass. */
  private meterFile(file: string, expectedMs: number): Promise<Meter> {
    return this.meter([...fileInput(file), '-map', '0:a:0', '-af', METER], timeLimitFor(expectedMs));
  }

  /** Runs ffmpeg with `args` (inputs, and a graph ending in METER) into nothing and reads the meter. */
  private async meter(args: string[], timeoutMs: number): Promise<Meter> {
    const { stdout, stderr } = await this.ffmpeg(
      [...args, '-progress', 'pipe:1', '-f', 'null', '-'],
      timeoutMs,
    );
    const summary = stderr.slice(stderr.lastIndexOf('Summary:'));
    const value = (pattern: RegExp) => Number(pattern.exec(summary)?.[1] ?? Number.NaN);
    const lufs = value(/Integrated loudness:\s*I:\s*(\S+) LUFS/);
    const silent = !Number.isFinite(lufs) || lufs <= SILENCE_LUFS;
    return {
      durationMs: progressDurationMs(stdout.toString('utf8')),
      lufs: silent ? null : lufs,
    };
  }

  private async ffmpeg(args: string[], timeoutMs: number) {
    return runTool(this.tools.ffmpeg, ['-nostdin', '-hide_banner', '-nostats', '-v', 'info', ...args], {
      timeoutMs,
      maxOutputBytes: 1024 * 1024,
    });
  }

  /** The header duration of a file, or null when ffprobe cannot tell. */
  private async probeDuration(file: string): Promise<number | null> {
    try {
      const { stdout } = await runTool(
        this.tools.ffprobe,
        ['-v', 'error', '-print_format', 'json', '-show_entries', 'format=duration', ...fileInput(file)],
        { timeoutMs: 30_000, maxOutputBytes: 64 * 1024 },
      );
      const value = Number((JSON.parse(stdout.toString('utf8')) as ProbeJson).format?.duration);
      return Number.isFinite(value) ? Math.round(value * 1000) : null;
    } catch {
      return null;
    }
  }

  /** How long the render should take to plan its time limit; unknown files count as the maximum. */
  private async partsDuration(parts: RenderPart[]): Promise<number> {
    let total = 0;
    for (const part of parts) {
      if (!('file' in part)) total += part.silenceMs;
      else total += part.durationMs ?? (await this.probeDuration(part.file)) ?? this.settings.maxDurationMs;
    }
    return total;
  }
}

/**
 * A local file as an input. ffmpeg reads `x:y` as protocol `x`: the file protocol names it whatever it is
 * called, and is the only protocol allowed, so that an upload which is a playlist in disguise (HLS, concat)
 * cannot make ffmpeg open another file or a URL.
 */
function fileInput(file: string): string[] {
  return ['-protocol_whitelist', 'file', '-i', `file:${path.resolve(file)}`];
}

function tooLong(durationMs: number, maxDurationMs: number): AppError {
  return new AppError(
    'audio_too_long',
    `${seconds(durationMs)} s long; the limit is ${seconds(maxDurationMs)} s`,
  );
}

async function readHead(file: string, bytes: number): Promise<Buffer> {
  const handle = await fs.open(file, 'r');
  try {
    const buffer = Buffer.alloc(bytes);
    const { bytesRead } = await handle.read(buffer, 0, bytes, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** Valid UTF-8 without NULs or control characters other than whitespace: text, not a binary format. */
function looksLikeText(head: Buffer): boolean {
  for (const byte of head) {
    if (byte < 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d && byte !== 0x0c) return false;
    if (byte === 0x7f) return false;
  }
  try {
    // stream: true tolerates a character cut by the 4 KB boundary.
    new TextDecoder('utf-8', { fatal: true }).decode(head, { stream: true });
    return true;
  } catch {
    return false;
  }
}

/** A name for what the first bytes look like, and whether it is an audio container. */
function sniff(head: Buffer): { name: string; audio: boolean } {
  const ascii = (start: number, end: number) => head.subarray(start, end).toString('latin1');
  if (ascii(0, 3) === 'ID3' || (head[0] === 0xff && ((head[1] ?? 0) & 0xe0) === 0xe0)) {
    return { name: 'an MP3 or AAC stream', audio: true };
  }
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WAVE') return { name: 'a WAV file', audio: true };
  if (ascii(0, 4) === 'OggS') return { name: 'an Ogg file', audio: true };
  if (ascii(0, 4) === 'fLaC') return { name: 'a FLAC file', audio: true };
  if (ascii(4, 8) === 'ftyp') return { name: 'an MP4/M4A file', audio: true };
  if (ascii(0, 5) === '%PDF-') return { name: 'found a PDF document', audio: false };
  if (ascii(0, 4) === 'PK\x03\x04')
    return { name: 'found a ZIP archive (or an office document)', audio: false };
  if (ascii(0, 4) === '\x7fELF' || ascii(0, 2) === 'MZ') return { name: 'found a program', audio: false };
  return { name: 'the content is not a recognised audio format', audio: false };
}

function describeNonAudio(formatName: string, streams: NonNullable<ProbeJson['streams']>): string {
  const video = streams.filter((s) => s.codec_type === 'video');
  const isImage =
    /_pipe$|^image2|^gif$|^webp/.test(formatName) || video.every((s) => s.disposition?.attached_pic);
  if (video.length > 0 && isImage) return `not audio: found ${formatName} (image)`;
  if (video.length > 0) {
    return `not audio: found video without an audio track (${formatName}, ${video[0]?.codec_name ?? 'unknown'})`;
  }
  return `not audio: found ${formatName} without an audio stream`;
}

/** The device-facing name of an accepted container + codec, or null. */
function acceptedFormat(formatName: string, codec: string): string | null {
  const names = formatName.split(',');
  if (names.includes('mp3') && codec === 'mp3') return 'mp3';
  if (names.includes('wav')) return 'wav';
  if (names.includes('ogg') && codec === 'vorbis') return 'ogg/vorbis';
  if (names.includes('ogg') && codec === 'opus') return 'ogg/opus';
  if ((names.includes('mp4') || names.includes('m4a') || names.includes('aac')) && codec === 'aac')
    return 'm4a/aac';
  if (names.includes('flac') && codec === 'flac') return 'flac';
  return null;
}

/** The last `out_time_ms` (microseconds, despite its name) that ffmpeg's -progress reported. */
function progressDurationMs(progress: string): number {
  let last = 0;
  for (const match of progress.matchAll(/^out_time_(?:ms|us)=(\d+)$/gm)) last = Number(match[1]);
  return Math.round(last / 1000);
}
