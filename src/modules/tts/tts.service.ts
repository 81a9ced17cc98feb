/**
 * Vietnamese text-to-speech: normalises text (normalise.ts) with the built-in and the admins' abbreviations,
 * has the chosen engine (engines.ts) speak it into a WAV file, and encodes previews for trying a voice.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AppError, invalid, notFound } from '../../errors.js';
import type { Clock } from '../../lib/clock.js';
import type { Actor } from '../../lib/scope.js';
import type { Audio } from '../../media/audio.js';
import { ToolError } from '../../media/tools.js';
import type { AuditService } from '../audit/audit.service.js';
import { PITCH, RATE, SpeechOutputError, VOICES, type SpeechEngine, type Voice } from './engines.js';
import {
  BUILT_IN_ABBREVIATIONS,
  compileAbbreviations,
  normaliseVietnamese,
  type AbbreviationMatcher,
} from './normalise.js';
import type { AbbreviationRow, TtsRepository } from './tts.repository.js';
import { MAX_SEGMENT_CHARS, type AbbreviationView } from './tts.schemas.js';

export { VOICES, type Voice } from './engines.js';

export interface SpeakOptions {
  voice?: Voice | undefined;
  rate?: number | undefined;
  pitch?: number | undefined;
}

export interface TtsServiceOptions {
  /** Encodes previews into the device format (the media module's Audio). */
  audio: Pick<Audio, 'render'>;
  /** Where WAV files are written; the OS temporary folder by default. */
  tmpDir?: string;
}

/** A preview is for hearing a voice, not for airing: 60 s is enough and bounds the work. */
export const PREVIEW_MAX_MS = 60_000;
/** Previews rendering at once; more are refused (429) rather than queued behind the programme renders. */
const MAX_CONCURRENT_PREVIEWS = 2;

export class TtsService {
  private matcher: AbbreviationMatcher | null = null;
  private previewsRunning = 0;
  private readonly tmpDir: string;

  constructor(
    private readonly repo: TtsRepository,
    private readonly audit: AuditService,
    private readonly engine: SpeechEngine,
    private readonly clock: Clock,
    private readonly options: TtsServiceOptions,
  ) {
    this.tmpDir = options.tmpDir ?? os.tmpdir();
  }

  /** Which engine speaks, for the start-up log. */
  get engineInfo(): { engine: SpeechEngine['kind']; path: string; version: string } {
    return { engine: this.engine.kind, path: this.engine.path, version: this.engine.version };
  }

  /** Text as the engine will read it: numbers, dates, times, phones and abbreviations in words. */
  normalise(text: string): string {
    this.matcher ??= compileAbbreviations(this.dictionary());
    return normaliseVietnamese(text, this.matcher);
  }

  /**
   * Normalises and speaks `text` into a fresh WAV file and returns its path; the caller deletes it.
   * Inputs are checked here too: programmes call this with text that came through their own schema.
   */
  async speak(text: string, options: SpeakOptions = {}): Promise<string> {
    const params = {
      voice: options.voice ?? 'vi',
      rate: options.rate ?? RATE.default,
      pitch: options.pitch ?? PITCH.default,
    };
    if (!(VOICES as readonly string[]).includes(params.voice)) {
      throw invalid('voice', `must be one of ${VOICES.join(', ')}`);
    }
    if (!Number.isInteger(params.rate) || params.rate < RATE.min || params.rate > RATE.max) {
      throw invalid('rate', `must be a whole number from ${RATE.min} to ${RATE.max}`);
    }
    if (!Number.isInteger(params.pitch) || params.pitch < PITCH.min || params.pitch > PITCH.max) {
      throw invalid('pitch', `must be a whole number from ${PITCH.min} to ${PITCH.max}`);
    }
    if (text.length > MAX_SEGMENT_CHARS) {
      throw invalid('text', `must be at most ${MAX_SEGMENT_CHARS} characters`);
    }
    const spoken = this.normalise(text);
    if (!/[\p{L}\p{N}]/u.test(spoken)) throw invalid('text', 'must contain something to read');

    fs.mkdirSync(this.tmpDir, { recursive: true });
    const out = path.join(this.tmpDir, `loa-tts-${randomUUID()}.wav`);
    try {
      await this.engine.render(spoken, out, params);
    } catch (err) {
      fs.rmSync(out, { force: true });
      throw speechFailure(this.engine.kind, err);
    }
    return out;
  }

  /**
   * Speaks `text` and returns at most 60 s of it in the device format (MP3 mono 44.1 kHz, loudness
   * normalised), so that what is heard is what would air; nothing is stored.
   */
  async preview(text: string, options: SpeakOptions = {}): Promise<Buffer> {
    if (this.previewsRunning >= MAX_CONCURRENT_PREVIEWS) {
      throw new AppError(
        'too_many_requests',
        'Other previews are being rendered; try again in a few seconds',
        {
          retryAfterS: 5,
        },
      );
    }
    this.previewsRunning++;
    let wav: string | null = null;
    const mp3 = path.join(this.tmpDir, `loa-tts-${randomUUID()}.mp3`);
    try {
      wav = await this.speak(text, options);
      try {
        await this.options.audio.render([{ file: wav }], mp3, { maxDurationMs: PREVIEW_MAX_MS });
      } catch (err) {
        if (err instanceof AppError) throw err;
        throw withCause(
          new AppError(
            'internal',
            `The preview could not be encoded: ffmpeg could not read what the engine (${ENGINE_NAMES[this.engine.kind]}) wrote. It has been logged.`,
          ),
          err,
        );
      }
      return await fs.promises.readFile(mp3);
    } finally {
      this.previewsRunning--;
      if (wav) fs.rmSync(wav, { force: true });
      fs.rmSync(mp3, { force: true });
    }
  }

  /** Built-in and custom entries by abbreviation; a custom entry overrides the built-in one. */
  listAbbreviations(): AbbreviationView[] {
    const custom = new Map(this.repo.list().map((row) => [row.abbreviation, row]));
    const keys = new Set([...Object.keys(BUILT_IN_ABBREVIATIONS), ...custom.keys()]);
    return [...keys].sort((a, b) => a.localeCompare(b, 'vi')).map((key) => toView(key, custom.get(key)));
  }

  setAbbreviation(actor: Actor, abbreviation: string, expansion: string): AbbreviationView {
    const key = abbreviation.normalize('NFC');
    const value = expansion.normalize('NFC');
    const before = this.repo.get(key);
    const row = this.repo.upsert({
      abbreviation: key,
      expansion: value,
      updatedBy: actor.id,
      updatedAt: this.clock.now(),
    });
    this.matcher = null;
    this.audit.record(
      actor,
      'tts.abbreviation_set',
      { type: 'tts_abbreviation', id: key },
      {
        expansion: value,
        previous: before?.expansion ?? BUILT_IN_ABBREVIATIONS[key] ?? null,
      },
    );
    return toView(key, row);
  }

  /** Removes a custom entry (a built-in one it overrode applies again); built-in entries cannot be removed. */
  deleteAbbreviation(actor: Actor, abbreviation: string): void {
    const key = abbreviation.normalize('NFC');
    const builtIn = BUILT_IN_ABBREVIATIONS[key];
    const existed = this.repo.get(key);
    if (!existed) {
      if (builtIn !== undefined) {
        throw new AppError(
          'conflict',
          `"${key}" is built in: it cannot be deleted, only overridden with PUT /api/v1/tts/abbreviations/{abbreviation}`,
        );
      }
      throw notFound(`Abbreviation "${key}"`);
    }
    this.repo.delete(key);
    this.matcher = null;
    this.audit.record(
      actor,
      'tts.abbreviation_delete',
      { type: 'tts_abbreviation', id: key },
      {
        expansion: existed.expansion,
        restoredBuiltIn: builtIn ?? null,
      },
    );
  }

  private dictionary(): Map<string, string> {
    const entries = new Map(Object.entries(BUILT_IN_ABBREVIATIONS));
    for (const row of this.repo.list()) entries.set(row.abbreviation, row.expansion);
    return entries;
  }
}

/** How engines are named to users: the kind, never a path. */
const ENGINE_NAMES: Record<SpeechEngine['kind'], string> = {
  command: 'TTS_COMMAND',
  'espeak-ng': 'espeak-ng',
  'espeak-ng-wasm': 'espeak-ng, WebAssembly build',
};

/** `err` as the cause of `appError`, so that the log of the 500 shows what really happened. */
function withCause(appError: AppError, err: unknown): AppError {
  appError.cause = err;
  return appError;
}

/**
 * An engine failure as a problem a user can read: which engine and what went wrong (crashed, too slow,
 * wrote nothing or not a WAV), without paths or the engine's own output, which go to the log.
 */
export function speechFailure(kind: SpeechEngine['kind'], err: unknown): AppError {
  if (err instanceof AppError) return err;
  let what = 'failed';
  if (err instanceof SpeechOutputError) what = err.reason;
  else if (err instanceof ToolError) {
    if (err.timedOut) what = 'took too long and was stopped';
    else if (err.message.startsWith('could not start')) what = 'could not be started';
    else if (err.message.includes('wrote more than')) what = 'wrote too much output and was stopped';
    else if (err.exitCode !== null) what = `exited with code ${err.exitCode}`;
    else what = 'was killed';
  }
  return withCause(
    new AppError(
      'internal',
      `Text-to-speech failed: the engine (${ENGINE_NAMES[kind]}) ${what}. It has been logged.`,
    ),
    err,
  );
}

function toView(key: string, row: AbbreviationRow | undefined): AbbreviationView {
  const builtIn = BUILT_IN_ABBREVIATIONS[key] ?? null;
  return {
    abbreviation: key,
    expansion: row?.expansion ?? builtIn ?? '',
    source: row ? 'custom' : 'built_in',
    builtInExpansion: builtIn,
    updatedAt: row ? row.updatedAt.toISOString() : null,
    updatedBy: row?.updatedBy ?? null,
  };
}
