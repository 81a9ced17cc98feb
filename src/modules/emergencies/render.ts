/**
 * Emergency audio: the one device file an emergency plays, rendered at once when it is sent.
 *
 *   attention signal · pause · [exercise: "Đây là diễn tập." · pause] · message · [exercise: pause · "Đây là diễn tập."]
 *
 * The message is text spoken by the Vietnamese TTS, a media item, or an approved programme's rendition. The
 * file is made by Audio.render, the code path bulletins use (one ffmpeg graph, loudness-normalised MP3), so an
 * emergency sounds like everything else devices play and nothing new touches ffmpeg's arguments.
 *
 * Speed matters (an officer presses send during a flash flood): the attention signal and the exercise phrase
 * are made once and kept in the content-addressed store, so sending a warning costs one TTS run and one
 * render. What is kept is remembered by hash in memory only; `touch` before each use refreshes it against the
 * store's clean-up and finds out when it was removed after all (it is then made again: same bytes, same hash).
 */
import fs from 'node:fs/promises';
import type { MediaRow } from '../../db/schema/index.js';
import { AppError, invalid } from '../../errors.js';
import type { Actor } from '../../lib/scope.js';
import type { RenderPart, RenderResult } from '../../media/audio.js';
import { runTool, ToolError } from '../../media/tools.js';
import type { PlaySource } from '../../protocol/index.js';
import type { Voice } from '../tts/engines.js';

/** Said before and after an exercise's message, so that a drill can never be taken for a real alert. */
export const EXERCISE_PHRASE = 'Đây là diễn tập.';

/** The built-in attention signal: a hi-lo alternation of the two broadcast emergency tones (EAS: 853 and
 *  960 Hz, chosen because together they are unpleasant and unmistakable), 0.5 s each, for 3 s. */
export const ATTENTION_TONE = { lowHz: 853, highHz: 960, stepS: 0.5, seconds: 3, fadeS: 0.02 } as const;

/** Pause after the attention signal, and around the exercise phrase. */
export const PAUSE_AFTER_SIGNAL_MS = 700;
export const PAUSE_AROUND_PHRASE_MS = 500;

/** What the renderer needs of the media module (MediaService and its parts) and of the TTS. */
export interface EmergencyRenderDeps {
  media: {
    /** The media item if the actor may use it; AppError not_found otherwise (MediaService.getUsable). */
    getUsable(actor: Actor, mediaId: string): MediaRow;
    readonly store: {
      pathOf(sha256: string): string;
      tempPath(suffix?: string): string;
      putFile(tempFile: string): Promise<{ sha256: string; sizeBytes: number }>;
      /** Marks a stored file as just used; false if it is gone. */
      touch(sha256: string): Promise<boolean>;
    };
    readonly links: { urlFor(sha256: string, validUntil: Date): string };
    readonly audio: {
      render(parts: RenderPart[], outFile: string): Promise<RenderResult>;
    };
  };
  /** The text-to-speech engine (TtsService.speak): a WAV file the caller deletes. */
  speech: {
    speak(text: string, options: { voice?: Voice }): Promise<string>;
  };
  /** The ffmpeg binary (AudioTools.ffmpeg) that generates the built-in attention tone. */
  ffmpeg: string;
}

export interface EmergencyRenderOptions {
  /**
   * A media item to use as the attention signal instead of the built-in tone (proposed:
   * EMERGENCY_ATTENTION_MEDIA_ID), with the server's own lookup of it (no actor: the operator configured it).
   */
  attentionMediaId?: string | undefined;
  findMedia?: (mediaId: string) => MediaRow | undefined;
}

/** The message of an emergency: exactly one of text, a media item or an approved programme's rendition. */
export interface EmergencyMessage {
  text?: string | undefined;
  voice?: Voice | undefined;
  /** A media item the actor may use (404 naming body.mediaId otherwise). */
  mediaId?: string | undefined;
  /** An approved bulletin's rendition, as ProgrammesService.playSource resolved it for the actor. */
  rendition?: { sha256: string; durationMs: number } | undefined;
  exercise: boolean;
}

export interface EmergencyRendition {
  sha256: string;
  sizeBytes: number;
  durationMs: number;
  loudnessLufs: number | null;
  /** What a play command carries: the signed download link valid until `validUntil`. */
  source: Extract<PlaySource, { kind: 'media' }>;
}

/** A stored file to render from, with its decoded duration (it sets the render's time limit). */
interface Clip {
  sha256: string;
  durationMs: number;
}

export class EmergencyRenderer {
  private tone: Promise<Clip> | null = null;
  private readonly phrases = new Map<Voice, Promise<Clip>>();

  constructor(
    private readonly deps: EmergencyRenderDeps,
    private readonly options: EmergencyRenderOptions = {},
  ) {
    if (options.attentionMediaId !== undefined && !options.findMedia) {
      throw new Error('attentionMediaId needs findMedia to look the media item up');
    }
  }

  /**
   * The attention signal: the configured media item, or the built-in tone (made on first use, in the
   * device format at the loudness target, and kept in the store).
   */
  async attentionSignal(): Promise<Clip> {
    const { attentionMediaId, findMedia } = this.options;
    if (attentionMediaId !== undefined && findMedia) {
      const item = findMedia(attentionMediaId);
      // A configured signal that is gone (deleted, or its file lost) must not stop an alert: the built-in
      // tone plays instead. configuredSignalMissing() lets the server warn about it.
      if (item && (await this.deps.media.store.touch(item.sha256))) {
        return { sha256: item.sha256, durationMs: item.durationMs };
      }
    }
    return this.cached(
      () => this.tone,
      (p) => {
        this.tone = p;
      },
      () => this.makeTone(),
    );
  }

  /** Whether a configured attention media item is missing (the built-in tone plays instead); for a warning. */
  configuredSignalMissing(): boolean {
    const { attentionMediaId, findMedia } = this.options;
    return attentionMediaId !== undefined && !findMedia?.(attentionMediaId);
  }

  /**
   * Renders the emergency into one device file in the store and returns it with its download link.
   * `actor` is the sender (media items are checked against their scope).
   */
  async renderEmergency(
    actor: Actor,
    message: EmergencyMessage,
    validUntil: Date,
  ): Promise<EmergencyRendition> {
    const given = [message.text, message.mediaId, message.rendition].filter((m) => m !== undefined);
    if (given.length !== 1) {
      throw invalid('body', 'give exactly one of text, mediaId or programmeId');
    }
    const voice: Voice = message.voice ?? 'vi';
    const { store } = this.deps.media;

    // Checked first, so that a wrong id fails before anything is spoken or rendered.
    let recording: Clip | null = null;
    if (message.mediaId !== undefined) {
      const item = this.usableMedia(actor, message.mediaId);
      recording = { sha256: item.sha256, durationMs: item.durationMs };
    } else if (message.rendition) {
      recording = message.rendition;
    }

    const temporary: string[] = [];
    try {
      // The cached parts and the speech are made at the same time: on a cold start, the tone and the
      // phrase are rendered while the engine speaks the message.
      const [signal, phrase, spoken] = await Promise.all([
        this.attentionSignal(),
        message.exercise ? this.exercisePhrase(voice) : null,
        message.text !== undefined ? this.speakMessage(message.text.normalize('NFC'), voice) : null,
      ]);
      if (spoken) temporary.push(spoken);
      if (recording) await this.requireStored(recording, 'body.mediaId');

      const file = (clip: Clip): RenderPart => ({
        file: store.pathOf(clip.sha256),
        durationMs: clip.durationMs,
      });
      const body: RenderPart = spoken
        ? { file: spoken, durationMs: await wavDurationMs(spoken) }
        : file(recording as Clip);
      const parts: RenderPart[] = [file(signal), { silenceMs: PAUSE_AFTER_SIGNAL_MS }];
      if (phrase) parts.push(file(phrase), { silenceMs: PAUSE_AROUND_PHRASE_MS });
      parts.push(body);
      if (phrase) parts.push({ silenceMs: PAUSE_AROUND_PHRASE_MS }, file(phrase));

      const out = store.tempPath('.mp3');
      temporary.push(out);
      const result = await this.renderParts(parts, out, 'the emergency');
      const stored = await store.putFile(out);
      return {
        sha256: stored.sha256,
        sizeBytes: stored.sizeBytes,
        durationMs: result.durationMs,
        loudnessLufs: result.loudnessLufs,
        source: {
          kind: 'media',
          url: this.deps.media.links.urlFor(stored.sha256, validUntil),
          sha256: stored.sha256,
          durationMs: result.durationMs,
        },
      };
    } finally {
      await Promise.all(temporary.map((f) => fs.rm(f, { force: true })));
    }
  }

  /** "Đây là diễn tập." in `voice`, spoken once and kept in the store (the engine's WAV, unprocessed). */
  exercisePhrase(voice: Voice = 'vi'): Promise<Clip> {
    return this.cached(
      () => this.phrases.get(voice) ?? null,
      (p) => {
        if (p) this.phrases.set(voice, p);
        else this.phrases.delete(voice);
      },
      async () => {
        const wav = await this.deps.speech.speak(EXERCISE_PHRASE, { voice });
        try {
          const stored = await this.deps.media.store.putFile(wav);
          return {
            sha256: stored.sha256,
            durationMs: await wavDurationMs(this.deps.media.store.pathOf(stored.sha256)),
          };
        } finally {
          await fs.rm(wav, { force: true });
        }
      },
    );
  }

  /**
   * A clip made once: the same promise for callers that come while it is being made; made again when it
   * failed or when its file has left the store (the clean-up removes what no row names).
   */
  private async cached(
    get: () => Promise<Clip> | null,
    set: (p: Promise<Clip> | null) => void,
    make: () => Promise<Clip>,
  ): Promise<Clip> {
    let pending = get();
    if (pending) {
      try {
        const clip = await pending;
        if (await this.deps.media.store.touch(clip.sha256)) return clip;
      } catch {
        // Made again below.
      }
      if (get() === pending) set(null);
    }
    pending = get();
    if (!pending) {
      pending = make();
      set(pending);
      pending.catch(() => {
        if (get() === pending) set(null);
      });
    }
    return pending;
  }

  /** Generates the built-in tone with ffmpeg and renders it into the device format at the loudness target. */
  private async makeTone(): Promise<Clip> {
    const { store } = this.deps.media;
    const wav = store.tempPath('.wav');
    const mp3 = store.tempPath('.mp3');
    try {
      await runTool(
        this.deps.ffmpeg,
        [
          '-nostdin',
          '-hide_banner',
          '-v',
          'error',
          '-f',
          'lavfi',
          '-i',
          toneSource(),
          '-af',
          `afade=t=in:d=${ATTENTION_TONE.fadeS},afade=t=out:st=${ATTENTION_TONE.seconds - ATTENTION_TONE.fadeS}:d=${ATTENTION_TONE.fadeS}`,
          '-c:a',
          'pcm_s16le',
          '-f',
          'wav',
          '-y',
          wav,
        ],
        { timeoutMs: 30_000, maxOutputBytes: 64 * 1024 },
      );
      const result = await this.renderParts(
        [{ file: wav, durationMs: ATTENTION_TONE.seconds * 1000 }],
        mp3,
        'the attention signal',
      );
      const stored = await store.putFile(mp3);
      return { sha256: stored.sha256, durationMs: result.durationMs };
    } finally {
      await Promise.all([fs.rm(wav, { force: true }), fs.rm(mp3, { force: true })]);
    }
  }

  private async renderParts(parts: RenderPart[], out: string, what: string): Promise<RenderResult> {
    try {
      return await this.deps.media.audio.render(parts, out);
    } catch (err) {
      if (err instanceof AppError) throw err;
      const why = err instanceof ToolError && err.timedOut ? 'took too long and was stopped' : 'failed';
      throw withCause(
        new AppError('internal', `Rendering ${what} ${why} (ffmpeg); nothing was sent. It has been logged.`),
        err,
      );
    }
  }

  /** Speaks the message; a validation error names body.text (or the option at fault). */
  private async speakMessage(text: string, voice: Voice): Promise<string> {
    try {
      return await this.deps.speech.speak(text, { voice });
    } catch (err) {
      if (err instanceof AppError && err.code === 'validation_failed') {
        const problem = err.extra.errors?.[0];
        const field = problem?.field && problem.field !== 'text' ? `body.${problem.field}` : 'body.text';
        throw invalid(field, problem?.message ?? err.detail ?? 'is invalid');
      }
      throw err;
    }
  }

  private usableMedia(actor: Actor, mediaId: string): MediaRow {
    try {
      return this.deps.media.getUsable(actor, mediaId);
    } catch (err) {
      if (err instanceof AppError && err.code === 'not_found') {
        throw new AppError('not_found', `body.mediaId: media ${mediaId} not found`);
      }
      throw err;
    }
  }

  /** The file of a recording must be on disk (and is kept from the clean-up while it is rendered). */
  private async requireStored(clip: Clip, field: string): Promise<void> {
    if (!(await this.deps.media.store.touch(clip.sha256))) {
      throw new AppError(
        'internal',
        `${field}: the recording's file (${clip.sha256}) is missing from the media store; nothing was sent. ` +
          'It has been logged.',
      );
    }
  }
}

/**
 * The hi-lo tone as an ffmpeg source, phase-continuous so that the switches do not click: the frequency is
 * mid ± half the difference following a square wave, and the phase is its integral, mid·t + half·triangle(t).
 */
function toneSource(): string {
  const { lowHz, highHz, stepS, seconds } = ATTENTION_TONE;
  const mid = (lowHz + highHz) / 2;
  const half = (highHz - lowHz) / 2;
  const period = 2 * stepS;
  // ∫ square: rises with t during the high half-period, falls back to 0 during the low one.
  const u = `mod(t,${period})`;
  const triangle = `if(lt(${u},${stepS}),${u},${period}-${u})`;
  // Quoted: the expression's commas would otherwise separate filters.
  return `aevalsrc='0.5*sin(2*PI*(${mid}*t+${half}*${triangle}))':s=44100:d=${seconds}`;
}

/** The duration of a PCM WAV from its header and size (what eSpeak writes), so no ffprobe run is needed. */
async function wavDurationMs(file: string): Promise<number> {
  const handle = await fs.open(file, 'r');
  try {
    const { size: fileBytes } = await handle.stat();
    const head = Buffer.alloc(Math.min(fileBytes, 4096));
    await handle.read(head, 0, head.length, 0);
    let offset = 12;
    let byteRate = 0;
    while (offset + 8 <= head.length) {
      const id = head.toString('latin1', offset, offset + 4);
      const size = head.readUInt32LE(offset + 4);
      if (id === 'fmt ' && offset + 20 <= head.length) byteRate = head.readUInt32LE(offset + 16);
      if (id === 'data' && byteRate > 0) {
        // An engine streaming to a file may leave the size at 0 or 0xFFFFFFFF: count what is there.
        const available = fileBytes - offset - 8;
        const dataBytes = size === 0 || size > available ? available : size;
        return Math.round((dataBytes / byteRate) * 1000);
      }
      offset += 8 + size + (size % 2);
    }
  } finally {
    await handle.close();
  }
  throw new Error(`${file} is not a PCM WAV file`);
}

/** `err` as the cause of `appError`, so that the log of a 500 shows what really happened. */
function withCause(appError: AppError, err: unknown): AppError {
  appError.cause = err;
  return appError;
}
