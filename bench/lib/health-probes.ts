/** The bench side of the request-timing process of bench/health.ts (bench/lib/health-probe.ts). */
import { setTimeout as sleep } from 'node:timers/promises';
import { Child } from './processes.js';

export interface ProbeEndpoint {
  name: string;
  /** Path and query, e.g. /api/v1/areas/ar_…/summary */
  path: string;
}

export interface ProbeResult {
  name: string;
  /** Latencies of the 200 answers, in the order they were measured, ms. */
  latenciesMs: number[];
  /** Answers other than 200. */
  errors: number;
  /** The body of the last answer, so the bench can check what the endpoint returned. */
  lastBody: string;
}

/** bench → probe */
export type ProbeRequest = {
  type: 'run';
  api: string;
  token: string;
  endpoints: ProbeEndpoint[];
  /** Measured requests per endpoint. */
  samples: number;
  /** Unmeasured rounds first. */
  warmup: number;
  /** Mean pause after each request, ms (exponentially distributed: see health-probe.ts). */
  gapMs: number;
};

/** probe → bench */
export type ProbeReply =
  { type: 'ready' } | { type: 'done'; results: ProbeResult[] } | { type: 'failed'; error: string };

/**
 * The probe process. Started, and ready, before anything is measured: loading it (tsx compiling
 * TypeScript) takes a second or two of CPU, which must not land in the window the bench measures.
 */
export class Probe {
  private constructor(private readonly child: Child) {}

  static async start(repoRoot: string): Promise<Probe> {
    const child = Child.start({
      name: 'probe',
      script: 'bench/lib/health-probe.ts',
      cwd: repoRoot,
      env: process.env,
      ipc: true,
    });
    const probe = new Probe(child);
    try {
      await probe.next((m) => (m.type === 'ready' ? true : undefined), 60_000);
      return probe;
    } catch (err) {
      await child.stop(2_000);
      throw err;
    }
  }

  /** Runs one job; `timeoutMs` bounds it (a server that stops answering must not hang the bench). */
  async run(job: Omit<ProbeRequest, 'type'>, timeoutMs: number): Promise<ProbeResult[]> {
    const answer = this.next((m) => {
      switch (m.type) {
        case 'done':
          return m.results;
        case 'failed':
          throw new Error(`probe: ${m.error}`);
        case 'ready':
          return undefined;
      }
    }, timeoutMs);
    this.child.process.send({ type: 'run', ...job } satisfies ProbeRequest);
    return answer;
  }

  stop(): Promise<void> {
    return this.child.stop(2_000);
  }

  /** The first IPC message `pick` returns a value for (or throws on); fails on timeout or if the child exits. */
  private async next<T>(pick: (message: ProbeReply) => T | undefined, timeoutMs: number): Promise<T> {
    const proc = this.child.process;
    const abort = new AbortController();
    let onMessage: ((message: ProbeReply) => void) | undefined;
    try {
      return await Promise.race([
        new Promise<T>((resolve, reject) => {
          onMessage = (message) => {
            try {
              const value = pick(message);
              if (value !== undefined) resolve(value);
            } catch (err) {
              reject(err instanceof Error ? err : new Error(String(err)));
            }
          };
          proc.on('message', onMessage);
          void this.child.exited.then(() => reject(new Error('the probe process exited before answering')));
        }),
        sleep(timeoutMs, undefined, { signal: abort.signal }).then(() => {
          throw new Error(`probe: no answer within ${timeoutMs} ms`);
        }),
      ]);
    } finally {
      abort.abort();
      if (onMessage) proc.off('message', onMessage);
    }
  }
}
