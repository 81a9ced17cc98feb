/**
 * Child processes for the benchmarks: both brokers under test run in their own process, started the same
 * way (`node --import tsx <file>`, with an IPC channel), so that their latency and memory are measured
 * alike and neither shares an event loop with the ten thousand simulated clients in the bench process.
 * Each child ends itself when the IPC channel closes, so even a bench killed with SIGKILL leaves nothing
 * running (see raw-broker.ts and tied-to-bench.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';

export const LOOPBACK = '127.0.0.1';

/** Prints a progress line on stderr; stdout is reserved for the JSON results. */
export function progress(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

/**
 * Ports nobody listens on right now: each is bound on port 0 by the kernel, and all are held until every
 * one is known so that the same port cannot be handed out twice, then released for the child to take.
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: count }, async () => {
      const server = net.createServer();
      server.listen(0, LOOPBACK);
      await once(server, 'listening');
      return server;
    }),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    if (!address || typeof address === 'string') throw new Error('could not read a bound port');
    return address.port;
  });
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

export interface Memory {
  /** Resident set size now, in MB. */
  rssMb: number;
  /** Peak resident set size over the process's life, in MB (Linux only; undefined elsewhere). */
  peakRssMb: number | undefined;
}

/**
 * A child's memory as the kernel sees it. /proc/<pid>/status on Linux; `ps -o rss=` elsewhere (no peak).
 * This counts everything the process holds (V8 heap, SQLite page cache, socket buffers), which is what an
 * operator sizing a server cares about.
 */
export async function processMemory(pid: number): Promise<Memory | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string): number | undefined => {
      const match = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status);
      return match?.[1] === undefined ? undefined : Number(match[1]);
    };
    const rss = kb('VmRSS');
    if (rss === undefined) return undefined;
    const peak = kb('VmHWM');
    return { rssMb: rss / 1024, peakRssMb: peak === undefined ? undefined : peak / 1024 };
  } catch {
    // Not Linux: fall back to ps, which every Unix has.
    const child = spawn('ps', ['-o', 'rss=', '-p', String(pid)], { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
    await once(child, 'close');
    const kb = Number(out.trim());
    return Number.isFinite(kb) && kb > 0 ? { rssMb: kb / 1024, peakRssMb: undefined } : undefined;
  }
}

/** This process's soft limit on open files (each MQTT client is one socket), or undefined if unknown. */
export function openFileLimit(): number | undefined {
  try {
    const limits = readFileSync('/proc/self/limits', 'utf8');
    const soft = /^Max open files\s+(\d+|unlimited)/m.exec(limits)?.[1];
    if (soft === undefined) return undefined;
    return soft === 'unlimited' ? Infinity : Number(soft);
  } catch {
    return undefined;
  }
}

/** Copies a child's output to our stderr, line by line with a prefix, keeping our stdout clean for JSON. */
function forward(stream: Readable | null, prefix: string): void {
  if (!stream) return;
  createInterface({ input: stream }).on('line', (line) => process.stderr.write(`[${prefix}] ${line}\n`));
}

const live = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let exitHookInstalled = false;

/**
 * Kills whatever child is still running, and deletes temp directories still there, when the bench process
 * exits for any reason (an uncaught error, the watchdog, process.exit in a signal handler): a benchmark
 * must never leave a broker holding ports, or a database, behind it. Only synchronous work runs on 'exit'.
 */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });
}

/** Deletes the directory when the bench exits, unless `forgetTempDir` is called after removing it. */
export function trackTempDir(dir: string): void {
  installExitHook();
  tempDirs.add(dir);
}

export function forgetTempDir(dir: string): void {
  tempDirs.delete(dir);
}

export interface StartOptions {
  /** Label for forwarded output lines. */
  name: string;
  /** Script run with `node --import tsx`, relative to cwd. */
  script: string;
  /** Arguments after the script. */
  args?: string[];
  cwd: string;
  env: NodeJS.ProcessEnv;
  /** Extra node flags placed before the script (e.g. --cpu-prof). */
  nodeFlags?: string[];
  /** Opens an IPC channel (process.send in the child). */
  ipc?: boolean;
}

/** A child running one broker. */
export class Child {
  private constructor(
    readonly name: string,
    readonly process: ChildProcess,
    /** Resolves when the process has exited, for whatever reason. */
    readonly exited: Promise<void>,
  ) {}

  static start(options: StartOptions): Child {
    installExitHook();
    // process.execPath, not `npx tsx`: the pid we measure is then the node process itself, not a wrapper.
    const argv = [...(options.nodeFlags ?? []), '--import', 'tsx', options.script, ...(options.args ?? [])];
    const child = spawn(process.execPath, argv, {
      cwd: options.cwd,
      env: options.env,
      stdio: options.ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
    });
    live.add(child);
    // Failing to spawn, or an IPC send after the child died, arrives as 'error': report it, do not crash.
    child.on('error', (err) => progress(`${options.name}: ${err.message}`));
    forward(child.stdout, options.name);
    forward(child.stderr, options.name);
    const exited = new Promise<void>((resolve) => {
      child.once('exit', (code, signal) => {
        live.delete(child);
        if (code !== 0 && signal === null) progress(`${options.name} exited with code ${code}`);
        resolve();
      });
      child.once('error', () => {
        // Never spawned: there will be no 'exit'.
        if (child.pid === undefined) resolve();
      });
    });
    return new Child(options.name, child, exited);
  }

  get pid(): number {
    const pid = this.process.pid;
    if (pid === undefined) throw new Error(`${this.name} has no pid (it failed to start)`);
    return pid;
  }

  get running(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  /** Asks the child to stop (SIGTERM: graceful close), then kills it if it has not exited in time. */
  async stop(graceMs = 15_000): Promise<void> {
    if (!this.running) return;
    this.process.kill('SIGTERM');
    const timeout = sleep(graceMs, 'timeout' as const, { ref: false });
    if ((await Promise.race([this.exited.then(() => 'exited' as const), timeout])) === 'timeout') {
      progress(`${this.name} did not stop within ${graceMs} ms; killing it`);
      this.process.kill('SIGKILL');
      await this.exited;
    }
  }
}

/**
 * A promise that rejects as soon as any of the children exits, for racing against a measurement: a broker
 * that crashes mid-round must fail the run at once, not after a timeout. It never resolves; call `stop`
 * before shutting the children down on purpose.
 */
export function failOnExit(children: readonly Child[]): { failed: Promise<never>; stop: () => void } {
  let stopped = false;
  const failed = new Promise<never>((_resolve, reject) => {
    for (const child of children) {
      void child.exited.then(() => {
        if (!stopped) reject(new Error(`${child.name} exited unexpectedly (see its output above)`));
      });
    }
  });
  // Rejections after the race is over (or with nobody racing) must not become unhandled ones.
  failed.catch(() => undefined);
  return { failed, stop: () => (stopped = true) };
}

/**
 * Everything a benchmark opens is closed in reverse order, on success, failure or Ctrl-C alike; a run
 * still going after `watchdogMs` gives up rather than keep the machine busy.
 */
export function cleanupScope(watchdogMs: number): {
  cleanups: (() => Promise<void>)[];
  cleanup: () => Promise<void>;
} {
  const cleanups: (() => Promise<void>)[] = [];
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      for (const step of cleanups.reverse()) {
        try {
          await step();
        } catch (err) {
          progress(`clean-up step failed: ${err instanceof Error ? err.message : String(err)}`);
        }
      }
    })());
  const onSignal = (signal: NodeJS.Signals): void => {
    progress(`${signal}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  setTimeout(() => {
    progress(`watchdog: still running after ${Math.round(watchdogMs / 60_000)} min; giving up`);
    process.exit(1);
  }, watchdogMs).unref();
  return { cleanups, cleanup };
}

/**
 * For a child that answers over IPC with messages `{ type, … }`: a function waiting for the next message
 * of a given type, failing on timeout or if the child exits first.
 */
export function replies<M extends { type: string }>() {
  return async <T extends M['type']>(
    child: Child,
    type: T,
    timeoutMs: number,
  ): Promise<Extract<M, { type: T }>> => {
    const proc = child.process;
    let onMessage: ((message: M) => void) | undefined;
    let onExit: (() => void) | undefined;
    const abort = new AbortController();
    try {
      return await Promise.race([
        new Promise<Extract<M, { type: T }>>((resolve, reject) => {
          onMessage = (message) => {
            if (message.type === type) resolve(message as Extract<M, { type: T }>);
          };
          onExit = () => reject(new Error(`${child.name} exited while we waited for "${type}"`));
          proc.on('message', onMessage);
          proc.once('exit', onExit);
        }),
        sleep(timeoutMs, undefined, { signal: abort.signal }).then(() => {
          throw new Error(`${child.name}: no "${type}" within ${timeoutMs} ms`);
        }),
      ]);
    } finally {
      abort.abort();
      if (onMessage) proc.off('message', onMessage);
      if (onExit) proc.off('exit', onExit);
    }
  };
}
