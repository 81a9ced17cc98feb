/** The bench side of the bare-Aedes baseline of bench/health.ts (bench/lib/health-raw-broker.ts). */
import { setTimeout as sleep } from 'node:timers/promises';
import { Child, LOOPBACK } from './processes.js';

/** bench → raw broker */
export type RawHealthRequest = { type: 'count' };

/** raw broker → bench */
export type RawHealthReply =
  | { type: 'listening'; port: number }
  /** Publishes received from clients since start: telemetry only, and all of them; clients connected now. */
  | { type: 'count'; telemetry: number; messages: number; clients: number };

type ReplyOf<T extends RawHealthReply['type']> = Extract<RawHealthReply, { type: T }>;

export class RawHealthBroker {
  private constructor(
    readonly child: Child,
    readonly mqttUrl: string,
  ) {}

  static async start(repoRoot: string): Promise<RawHealthBroker> {
    const child = Child.start({
      name: 'raw',
      script: 'bench/lib/health-raw-broker.ts',
      cwd: repoRoot,
      env: process.env,
      ipc: true,
    });
    try {
      const { port } = await reply(child, 'listening', 60_000);
      return new RawHealthBroker(child, `mqtt://${LOOPBACK}:${port}`);
    } catch (err) {
      await child.stop();
      throw err;
    }
  }

  async count(): Promise<ReplyOf<'count'>> {
    const answer = reply(this.child, 'count', 10_000);
    this.child.process.send({ type: 'count' } satisfies RawHealthRequest);
    return answer;
  }

  stop(): Promise<void> {
    return this.child.stop(5_000);
  }
}

/** The next IPC message of a type from the child; fails on timeout or if the child exits first. */
async function reply<T extends RawHealthReply['type']>(
  child: Child,
  type: T,
  timeoutMs: number,
): Promise<ReplyOf<T>> {
  const proc = child.process;
  let onMessage: ((message: RawHealthReply) => void) | undefined;
  let onExit: (() => void) | undefined;
  const abort = new AbortController();
  try {
    return await Promise.race([
      new Promise<ReplyOf<T>>((resolve, reject) => {
        onMessage = (message) => {
          if (message.type === type) resolve(message as ReplyOf<T>);
        };
        onExit = () => reject(new Error(`raw broker exited while we waited for "${type}"`));
        proc.on('message', onMessage);
        proc.once('exit', onExit);
      }),
      sleep(timeoutMs, undefined, { signal: abort.signal }).then(() => {
        throw new Error(`raw broker: no "${type}" within ${timeoutMs} ms`);
      }),
    ]);
  } finally {
    abort.abort();
    if (onMessage) proc.off('message', onMessage);
    if (onExit) proc.off('exit', onExit);
  }
}
