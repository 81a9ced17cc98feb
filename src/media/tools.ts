/**
 * The external programs Loa runs (ffmpeg, ffprobe, eSpeak NG): where they come from and how they are run.
 *
 * Every run is a child process started with an argument array (never a shell, so no text from a user is
 * ever interpreted), with a time limit after which it is killed, and with its output bounded: a runaway
 * tool can neither hang a request nor fill the server's memory. Runs are queued so that at most one per
 * CPU core works at a time; a burst of uploads waits its turn instead of starving the broker.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';

export class ToolError extends Error {
  override name = 'ToolError';
  constructor(
    message: string,
    /** The last part of what the program wrote on stderr, for logs (never sent to clients). */
    readonly stderr: string,
    readonly exitCode: number | null,
    readonly timedOut: boolean,
  ) {
    super(message);
  }
}

export interface RunOptions {
  timeoutMs: number;
  /** Written to the program's stdin, which is then closed. */
  input?: string | Buffer;
  /** stdout beyond this is an error (the program is killed); stderr keeps only its last part. */
  maxOutputBytes?: number;
  env?: NodeJS.ProcessEnv;
}

export interface RunResult {
  stdout: Buffer;
  stderr: string;
}

const DEFAULT_MAX_OUTPUT = 4 * 1024 * 1024;
const STDERR_KEPT = 16 * 1024;

/** A counting semaphore: `run` waits while `limit` runs are under way. */
class Queue {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

const queue = new Queue(Math.max(1, os.availableParallelism()));

/** Runs `file` with `args`; resolves on exit code 0, rejects with a ToolError otherwise. */
export function runTool(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  return queue.run(() => runNow(file, args, options));
}

function runNow(file: string, args: readonly string[], options: RunOptions): Promise<RunResult> {
  const maxOutput = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      shell: false,
      windowsHide: true,
    });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    let failure: string | null = null;
    let timedOut = false;

    const kill = (why: string) => {
      failure ??= why;
      child.kill('SIGKILL');
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill(`${file} took longer than ${options.timeoutMs} ms`);
    }, options.timeoutMs);

    child.stdout.on('data', (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > maxOutput) kill(`${file} wrote more than ${maxOutput} bytes`);
      else out.push(chunk);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      err = (err + chunk).slice(-STDERR_KEPT);
    });
    // A program that exits without reading its input makes the write fail with EPIPE: not our error.
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');

    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new ToolError(`could not start ${file}: ${e.message}`, err, null, false));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (failure) return reject(new ToolError(failure, err, code, timedOut));
      if (code !== 0) {
        return reject(new ToolError(`${file} exited with ${code ?? signal}`, err, code, false));
      }
      resolve({ stdout: Buffer.concat(out), stderr: err });
    });
  });
}

export interface AudioTools {
  ffmpeg: string;
  ffprobe: string;
  /** First line of each program's `-version`, logged at start-up. */
  ffmpegVersion: string;
  ffprobeVersion: string;
  /** `env` when FFMPEG_PATH / FFPROBE_PATH chose them, `npm` for the packaged builds. */
  source: { ffmpeg: 'env' | 'npm'; ffprobe: 'env' | 'npm' };
}

const require = createRequire(import.meta.url);

function packaged(name: '@ffmpeg-installer/ffmpeg' | '@ffprobe-installer/ffprobe', variable: string): string {
  try {
    return (require(name) as { path: string }).path;
  } catch (err) {
    throw new Error(
      `${name} has no build for ${process.platform}-${process.arch} (${(err as Error).message}); ` +
        `install ffmpeg and set ${variable}`,
      { cause: err },
    );
  }
}

async function versionOf(file: string): Promise<string> {
  const { stdout } = await runTool(file, ['-hide_banner', '-version'], { timeoutMs: 10_000 });
  return stdout.toString('utf8').split('\n')[0]?.trim() ?? 'unknown';
}

/**
 * Finds ffmpeg and ffprobe (FFMPEG_PATH / FFPROBE_PATH, else the npm packages' builds) and checks that
 * they run: a server that cannot process audio should say so at start-up, not at the first upload.
 */
export async function resolveAudioTools(paths: {
  ffmpegPath: string | undefined;
  ffprobePath: string | undefined;
}): Promise<AudioTools> {
  const ffmpeg = paths.ffmpegPath ?? packaged('@ffmpeg-installer/ffmpeg', 'FFMPEG_PATH');
  const ffprobe = paths.ffprobePath ?? packaged('@ffprobe-installer/ffprobe', 'FFPROBE_PATH');
  const [ffmpegVersion, ffprobeVersion] = await Promise.all([versionOf(ffmpeg), versionOf(ffprobe)]);
  return {
    ffmpeg,
    ffprobe,
    ffmpegVersion,
    ffprobeVersion,
    source: { ffmpeg: paths.ffmpegPath ? 'env' : 'npm', ffprobe: paths.ffprobePath ? 'env' : 'npm' },
  };
}
