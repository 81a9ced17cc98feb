/** The bench side of the bare-Aedes baseline of bench/health.ts (bench/lib/health-raw-broker.ts). */
import { Child, LOOPBACK, replies } from './processes.js';

/** bench → raw broker */
export type RawHealthRequest = { type: 'count' };

/** raw broker → bench */
export type RawHealthReply =
  | { type: 'listening'; port: number }
  /** Publishes received from clients since start: telemetry only, and all of them; clients connected now. */
  | { type: 'count'; telemetry: number; messages: number; clients: number };

type ReplyOf<T extends RawHealthReply['type']> = Extract<RawHealthReply, { type: T }>;
/** The next IPC message of a type from the broker process. */
const reply = replies<RawHealthReply>();

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
