/**
 * Real processes for end-to-end tests: the server as `npm start` runs it, and free ports to give it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';

export const root = path.resolve(import.meta.dirname, '../..');

/**
 * Node itself with tsx as a loader, not the tsx CLI: the CLI runs the script in a child process of its own,
 * which signals sent to the CLI (SIGSTOP, SIGKILL in a clean-up) would not reach.
 */
export const withTsx = (script: string) => [process.execPath, ['--import', 'tsx', script]] as const;

/** A port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface ServerProcess {
  child: ChildProcess;
  /** The exit code, or the signal that ended the process. */
  exited: Promise<NodeJS.Signals | number | null>;
  /** Everything it has written to stdout and stderr so far. */
  output(): string;
}

/** Starts `src/server.ts` with these variables on top of the test's environment. */
export function startServer(env: Record<string, string>): ServerProcess {
  const child = spawn(...withTsx('src/server.ts'), {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<NodeJS.Signals | number | null>((resolve) =>
    child.on('exit', (code, signal) => resolve(signal ?? code)),
  );
  return { child, exited, output: () => output };
}

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program (never through a shell), killing it after `timeoutMs`. */
export function run(
  command: string,
  args: string[],
  options: { onStdout?: (chunk: string) => void; timeoutMs?: number } = {},
): { child: ChildProcess; done: Promise<Run>; kill: () => void } {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    options.onStdout?.(chunk);
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 15_000);
  const done = new Promise<Run>((resolve, reject) => {
    child.on('error', (err) => reject(new Error(`${command} could not start: ${err.message}`)));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  return { child, done, kill: () => child.kill('SIGKILL') };
}
