/**
 * The speech engines that turn normalised Vietnamese text into a WAV file. All three run as child processes
 * through runTool (argument arrays, never a shell; a time limit; bounded output) and receive the text on
 * stdin, so no text from a user is ever part of a command line.
 *
 *   command         TTS_COMMAND, an operator's own engine (e.g. a neural Piper voice)
 *   espeak-ng       Debian's binary: ESPEAK_NG_PATH, else /usr/bin/espeak-ng or one on PATH
 *   espeak-ng-wasm  the WebAssembly build from the npm package `espeak-ng`, run by espeak-wasm.ts in a child
 *                   Node process; needs nothing but `npm ci`
 *
 * resolveSpeechEngine chooses in that order unless told which one to use.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { runTool } from '../../media/tools.js';

/** eSpeak NG's Vietnamese voices: Northern (Hà Nội), Central (Huế), Southern (Sài Gòn). */
export const VOICES = ['vi', 'vi-vn-x-central', 'vi-vn-x-south'] as const;
export type Voice = (typeof VOICES)[number];

/** Words per minute (espeak -s) and pitch (espeak -p); an operator's command gets them as placeholders. */
export const RATE = { min: 80, max: 450, default: 150 } as const;
export const PITCH = { min: 0, max: 99, default: 50 } as const;

export interface SpeechParams {
  voice: Voice;
  rate: number;
  pitch: number;
}

export type EngineKind = 'command' | 'espeak-ng' | 'espeak-ng-wasm';

export interface SpeechEngine {
  readonly kind: EngineKind;
  /** The program (or, for the WebAssembly build, the child script) that runs. */
  readonly path: string;
  readonly version: string;
  /** Speaks `text` into a WAV file at `outFile`; rejects with a ToolError when the engine fails. */
  render(text: string, outFile: string, params: SpeechParams): Promise<void>;
}

// A 5,000-character segment is a few minutes of speech: eSpeak renders it in seconds, its WebAssembly
// build several times slower, an operator's neural voice possibly much slower on a small server.
const ESPEAK_TIMEOUT_MS = 60_000;
const WASM_TIMEOUT_MS = 180_000;
const COMMAND_TIMEOUT_MS = 300_000;
const OUTPUT_LIMIT = 256 * 1024;

const require = createRequire(import.meta.url);

/**
 * An engine ran but left nothing usable behind. `reason` says what, in words that may be shown to users
 * (no paths); the message adds which engine, for the log.
 */
export class SpeechOutputError extends Error {
  override name = 'SpeechOutputError';
  constructor(
    engine: string,
    readonly reason: string,
  ) {
    super(`${engine} ${reason}`);
  }
}

/**
 * Fails unless the engine left a WAV file behind: some tools exit 0 after writing nothing, and an operator's
 * command may write MP3 or raw PCM where WAV was asked for, which would only fail later, inside ffmpeg,
 * with a far less helpful message.
 */
function assertWritten(outFile: string, engine: string): void {
  let size = 0;
  const head = Buffer.alloc(12);
  try {
    const fd = fs.openSync(outFile, 'r');
    try {
      size = fs.fstatSync(fd).size;
      fs.readSync(fd, head, 0, head.length, 0);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // Reported below.
  }
  // A RIFF/WAVE header alone is 44 bytes: anything at most that long holds no sound.
  if (size <= 44) throw new SpeechOutputError(engine, 'wrote no audio');
  // RIFF (or RF64, for files over 4 GB) … WAVE.
  const riff = head.toString('latin1', 0, 4);
  if ((riff !== 'RIFF' && riff !== 'RF64') || head.toString('latin1', 8, 12) !== 'WAVE') {
    throw new SpeechOutputError(engine, 'wrote something that is not a WAV file');
  }
}

class EspeakBinary implements SpeechEngine {
  readonly kind = 'espeak-ng';
  constructor(
    readonly path: string,
    readonly version: string,
  ) {}

  async render(text: string, outFile: string, p: SpeechParams): Promise<void> {
    // -b 1: stdin is UTF-8 whatever the locale; without it tone marks are read as Latin-1 garbage.
    await runTool(
      this.path,
      ['--stdin', '-b', '1', '-v', p.voice, '-s', String(p.rate), '-p', String(p.pitch), '-w', outFile],
      { timeoutMs: ESPEAK_TIMEOUT_MS, input: Buffer.from(text, 'utf8'), maxOutputBytes: OUTPUT_LIMIT },
    );
    assertWritten(outFile, 'espeak-ng');
  }
}

class EspeakWasm implements SpeechEngine {
  readonly kind = 'espeak-ng-wasm';
  constructor(
    readonly path: string,
    readonly version: string,
    /** Node options the child needs before the script: `--import tsx` when running from sources. */
    private readonly nodeArgs: string[],
  ) {}

  async render(text: string, outFile: string, p: SpeechParams): Promise<void> {
    await runTool(
      process.execPath,
      [...this.nodeArgs, this.path, outFile, p.voice, String(p.rate), String(p.pitch)],
      { timeoutMs: WASM_TIMEOUT_MS, input: Buffer.from(text, 'utf8'), maxOutputBytes: OUTPUT_LIMIT },
    );
    assertWritten(outFile, 'espeak-ng (WebAssembly)');
  }
}

class CommandEngine implements SpeechEngine {
  readonly kind = 'command';
  readonly version = 'operator command (TTS_COMMAND)';
  readonly path: string;
  private readonly args: string[];

  constructor(private readonly template: string) {
    const words = splitCommand(template);
    if (words.length === 0) throw new Error('TTS_COMMAND is empty');
    if (!words.some((w) => w.includes('{output}'))) {
      throw new Error('TTS_COMMAND must contain {output}, where the WAV file is to be written');
    }
    [this.path] = words as [string];
    this.args = words.slice(1);
  }

  async render(text: string, outFile: string, p: SpeechParams): Promise<void> {
    const values: Record<string, string> = {
      output: outFile,
      voice: p.voice,
      rate: String(p.rate),
      pitch: String(p.pitch),
    };
    // Placeholders are replaced inside one argument each: a value can never become two arguments.
    const args = this.args.map((arg) =>
      arg.replace(/\{(output|voice|rate|pitch)\}/g, (_m, k: string) => values[k] ?? ''),
    );
    await runTool(this.path, args, {
      timeoutMs: COMMAND_TIMEOUT_MS,
      input: Buffer.from(text, 'utf8'),
      maxOutputBytes: 4 * 1024 * 1024,
    });
    assertWritten(outFile, `TTS_COMMAND (${this.path})`);
  }
}

/**
 * Splits a command template into words as a POSIX shell would for quoting only: 'single' and "double"
 * quotes and backslash escapes group characters; nothing is expanded ($VAR, globs, pipes stay literal).
 */
export function splitCommand(template: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < template.length; i++) {
    const c = template[i] as string;
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < template.length) word += template[++i];
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < template.length) {
      word += template[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = '';
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) throw new Error(`TTS_COMMAND has an unclosed ${quote} quote`);
  if (inWord) words.push(word);
  return words;
}

function executable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Debian's espeak-ng: /usr/bin first (what the Dockerfile installs), then the PATH. */
export function findEspeakBinary(): string | null {
  const candidates = [
    '/usr/bin/espeak-ng',
    ...(process.env.PATH ?? '')
      .split(path.delimiter)
      .filter(Boolean)
      .map((dir) => path.join(dir, 'espeak-ng')),
  ];
  return candidates.find(executable) ?? null;
}

async function espeakVersion(file: string): Promise<string> {
  const { stdout } = await runTool(file, ['--version'], { timeoutMs: 10_000, maxOutputBytes: 64 * 1024 });
  // "eSpeak NG text-to-speech: 1.51  Data at: /usr/lib/…" → "eSpeak NG text-to-speech: 1.51"
  return (stdout.toString('utf8').split('\n')[0] ?? '').replace(/\s+Data at:.*$/, '').trim() || 'unknown';
}

/** The child script next to this module: .js in the build, .ts when running from sources (tsx, vitest). */
function wasmEngine(): EspeakWasm {
  const here = fileURLToPath(import.meta.url);
  const fromSources = here.endsWith('.ts');
  const script = path.join(path.dirname(here), fromSources ? 'espeak-wasm.ts' : 'espeak-wasm.js');
  const nodeArgs = fromSources ? ['--import', pathToFileURL(require.resolve('tsx')).href] : [];
  const pkg = require('espeak-ng/package.json') as { version: string };
  return new EspeakWasm(script, `espeak-ng ${pkg.version} (npm, WebAssembly)`, nodeArgs);
}

export interface EngineOptions {
  /** TTS_COMMAND. */
  command?: string | undefined;
  /** ESPEAK_NG_PATH. */
  espeakPath?: string | undefined;
  /** Use this engine whatever else is available (tests exercise each). */
  force?: EngineKind | undefined;
}

/**
 * Chooses the engine: TTS_COMMAND, else Debian's espeak-ng, else the WebAssembly build. A configured
 * engine that cannot be used stops start-up (a server that cannot speak should say so now, not at the
 * first bulletin).
 */
export async function resolveSpeechEngine(options: EngineOptions): Promise<SpeechEngine> {
  const kind: EngineKind =
    options.force ??
    (options.command ? 'command' : options.espeakPath || findEspeakBinary() ? 'espeak-ng' : 'espeak-ng-wasm');
  switch (kind) {
    case 'command': {
      if (!options.command) throw new Error('the command engine needs TTS_COMMAND');
      return new CommandEngine(options.command);
    }
    case 'espeak-ng': {
      const file = options.espeakPath ?? findEspeakBinary();
      if (!file) throw new Error('espeak-ng is not installed (set ESPEAK_NG_PATH)');
      return new EspeakBinary(file, await espeakVersion(file));
    }
    case 'espeak-ng-wasm':
      return wasmEngine();
  }
}
