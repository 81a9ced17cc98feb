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
  const response = await fetch(url, { headers: { authorization: `Bearer ${token}`, accept: 'application/json' } });
  const body = await response.text();
  return { ms: performance.now() - t0, status: response.status, body };
}

async function run(job: Extract<ProbeRequest, { type: 'run' }>): Promise<void> {
  const results: ProbeResult[] = job.endpoints.map((e) => ({ name: e.name, latenciesMs: [], errors: 0, lastBody: '' }));
  // Unrecorded rounds first: they JIT-compile the routes, open the keep-alive connection and prepare
  // the statements, none of which a server in service pays per request.
  for (let round = -job.warmup; round < job.samples; round += 1) {
    // Round robin over the endpoints, so that each sees the same moments of the load.
    for (const [i, endpoint] of job.endpoints.entries()) {
      const result = results[i];
      if (!result) continue;
      const { ms, status, body } = await timed(`${job.api}${endpoint.path}`, job.token);
      if (round >= 0) {
        if (status === 200) result.latenciesMs.push(ms);
        else result.errors += 1;
      }
      if (status !== 200 && result.errors <= 3) process.stderr.write(`${endpoint.name}: HTTP ${status}: ${body.slice(0, 200)}\n`);
      result.lastBody = body;
      await sleep(job.gapMs);
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
