/**
 * Times API requests for bench/health.ts from a process of its own, so that the timing is not delayed by
 * the 10,000 simulated devices that share the bench process's event loop: a response that arrives while
 * that loop is busy sending telemetry would be read late and charged to the server.
 *
 * The bench (bench/lib/health-probes.ts) starts it as `node --import tsx bench/lib/health-probe.ts` with
 * an IPC channel and sends it one job; it answers with every latency and exits when the bench
 * disconnects or sends SIGTERM.
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ProbeReply, ProbeRequest, ProbeResult } from './health-probes.js';

const send = (reply: ProbeReply): void => {
  process.send?.(reply);
};

/** One GET, timed from just before the request leaves until the whole body is read. */
async function timed(url: string, token: string): Promise<{ ms: number; status: number; body: string }> {
  const t0 = performance.now();
  const response = await fetch(url, {
    headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
  });
  const body = await response.text();
  return { ms: performance.now() - t0, status: response.status, body };
}

/**
 * A pause drawn from an exponential distribution of the given mean (capped at 5 × the mean, so one draw
 * cannot stall the run): the requests then form a Poisson process, whose arrivals are independent of
 * anything periodic in the server. By the PASTA property (Poisson arrivals see time averages) their
 * latencies sample the server's states as a random technician's request would meet them: in the middle
 * of a one-second telemetry flush as often as that flush really occupies the event loop, and with as
 * much unflushed telemetry as there usually is. Fixed gaps could instead lock onto the server's 1 s
 * cycle and always land just before, or just after, a flush.
 */
function exponentialGap(meanMs: number): number {
  return Math.min(-Math.log(1 - Math.random()) * meanMs, 5 * meanMs);
}

/** Fisher–Yates: each round visits every endpoint once, in a fresh random order. */
function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i -= 1) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

async function run(job: Extract<ProbeRequest, { type: 'run' }>): Promise<void> {
  const results: ProbeResult[] = job.endpoints.map((e) => ({
    name: e.name,
    latenciesMs: [],
    errors: 0,
    lastBody: '',
  }));
  // Unrecorded rounds first: they JIT-compile the routes, open the keep-alive connection and prepare
  // the statements, none of which a server in service pays per request.
  for (let round = -job.warmup; round < job.samples; round += 1) {
    // A random order each round: a fixed one would time each endpoint always right after the same other
    // one. That matters here, because GET /areas/:id/summary writes all pending telemetry before it
    // answers, so an endpoint timed right after it always meets a server with nothing left to write.
    for (const i of shuffled(job.endpoints.map((_e, i) => i))) {
      const endpoint = job.endpoints[i];
      const result = results[i];
      if (!endpoint || !result) continue;
      const { ms, status, body } = await timed(`${job.api}${endpoint.path}`, job.token);
      if (round >= 0) {
        if (status === 200) result.latenciesMs.push(ms);
        else result.errors += 1;
      }
      if (status !== 200 && result.errors <= 3)
        process.stderr.write(`${endpoint.name}: HTTP ${status}: ${body.slice(0, 200)}\n`);
      result.lastBody = body;
      await sleep(exponentialGap(job.gapMs));
    }
  }
  send({ type: 'done', results });
}

if (!process.send) {
  console.error('health-probe must be started with an IPC channel (by bench/health.ts)');
  process.exit(64);
}
process.on('message', (message: ProbeRequest) => {
  switch (message.type) {
    case 'run':
      run(message).catch((err: unknown) => {
        send({ type: 'failed', error: err instanceof Error ? err.message : String(err) });
      });
      return;
  }
});
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
send({ type: 'ready' });
