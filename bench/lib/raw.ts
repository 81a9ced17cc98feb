/** The bench side of the raw Aedes baseline (bench/lib/raw-broker.ts): start it, aim it, trigger it. */
import { performance } from 'node:perf_hooks';
import { Child, LOOPBACK, replies } from './processes.js';
import type { RawReply, RawRequest } from './raw-ipc.js';

type ReplyOf<T extends RawReply['type']> = Extract<RawReply, { type: T }>;
/** The next IPC message of a type from the broker process. */
const reply = replies<RawReply>();

export class RawBroker {
  private constructor(
    readonly child: Child,
    readonly mqttUrl: string,
  ) {}

  /**
   * Starts the child and waits until it listens. `concurrency` is passed to Aedes (mqemitter's in-flight
   * limit); undefined keeps Aedes' default.
   */
  static async start(options: { repoRoot: string; concurrency: number | undefined }): Promise<RawBroker> {
    const child = Child.start({
      name: 'raw',
      script: 'bench/lib/raw-broker.ts',
      cwd: options.repoRoot,
      env: {
        ...process.env,
        RAW_BROKER_CONCURRENCY: options.concurrency === undefined ? '' : String(options.concurrency),
      },
      ipc: true,
    });
    try {
      const { port } = await reply(child, 'listening', 60_000);
      return new RawBroker(child, `mqtt://${LOOPBACK}:${port}`);
    } catch (err) {
      await child.stop();
      throw err;
    }
  }

  /** Tells the broker which device topics a broadcast goes to (once, outside any measurement). */
  async setTargets(deviceIds: string[]): Promise<void> {
    const answer = reply(this.child, 'targets', 30_000);
    this.send({ type: 'targets', deviceIds });
    const { count } = await answer;
    if (count !== deviceIds.length)
      throw new Error(`raw broker took ${count} targets, expected ${deviceIds.length}`);
  }

  /**
   * Triggers one broadcast. `t0` is taken immediately before the IPC message leaves, the counterpart of
   * taking it immediately before Loa's POST leaves; `published` resolves when the broker's loop is done.
   */
  broadcast(payload: string): { t0: number; published: Promise<ReplyOf<'broadcast'>> } {
    const published = reply(this.child, 'broadcast', 60_000);
    const t0 = performance.now();
    this.send({ type: 'broadcast', payload });
    return { t0, published };
  }

  stop(): Promise<void> {
    return this.child.stop(5_000);
  }

  private send(message: RawRequest): void {
    // A false return only means back-pressure: the message is queued and still delivered, in order.
    this.child.process.send(message);
  }
}
