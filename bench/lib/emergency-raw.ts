/** The bench side of bench:emergency's baseline process (emergency-raw-server.ts): start, aim, trigger. */
import { performance } from 'node:perf_hooks';
import type { EmergencyRawReply, EmergencyRawRequest } from './emergency-ipc.js';
import { Child, LOOPBACK, replies } from './processes.js';

type ReplyOf<T extends EmergencyRawReply['type']> = Extract<EmergencyRawReply, { type: T }>;
const reply = replies<EmergencyRawReply>();

export class EmergencyRaw {
  private constructor(
    readonly child: Child,
    /** mqtt://127.0.0.1:<port> of the bare Aedes broker. */
    readonly mqttUrl: string,
    /** http://127.0.0.1:<port> of the bare file server. */
    readonly httpUrl: string,
  ) {
    // Anything the process reports as failed on its own (the Mosquitto publisher's socket) is printed.
    child.process.on('message', (message: EmergencyRawReply) => {
      if (message.type === 'failed') process.stderr.write(`[raw] ${message.message}\n`);
    });
  }

  static async start(repoRoot: string): Promise<EmergencyRaw> {
    const child = Child.start({
      name: 'raw',
      script: 'bench/lib/emergency-raw-server.ts',
      cwd: repoRoot,
      env: process.env,
      ipc: true,
    });
    try {
      const { mqttPort, httpPort } = await reply(child, 'listening', 60_000);
      return new EmergencyRaw(child, `mqtt://${LOOPBACK}:${mqttPort}`, `http://${LOOPBACK}:${httpPort}`);
    } catch (err) {
      await child.stop();
      throw err;
    }
  }

  /** Tells the broker (and the publisher) which device topics a broadcast goes to, outside any measurement. */
  async setTargets(deviceIds: string[]): Promise<void> {
    const answer = reply(this.child, 'targets', 30_000);
    this.send({ type: 'targets', deviceIds });
    const { count } = await answer;
    if (count !== deviceIds.length)
      throw new Error(`raw took ${count} targets, expected ${deviceIds.length}`);
  }

  /** Serves `path` as …/<name> from now on; resolves with its size. */
  async serveFile(name: string, path: string): Promise<number> {
    const answer = reply(this.child, 'file', 30_000);
    this.send({ type: 'file', name, path });
    return (await answer).sizeBytes;
  }

  /**
   * Triggers one broadcast through the bare Aedes broker. `t0` is taken immediately before the IPC message
   * leaves; `published` resolves when the broker's publish loop is done.
   */
  broadcast(payload: string): { t0: number; published: Promise<ReplyOf<'broadcast'>> } {
    const published = reply(this.child, 'broadcast', 60_000);
    const t0 = performance.now();
    this.send({ type: 'broadcast', payload });
    return { t0, published };
  }

  async connectMosquitto(port: number): Promise<void> {
    // A refused connection is printed by the 'failed' listener above; this then times out.
    const answer = reply(this.child, 'mosquitto-connected', 30_000);
    this.send({ type: 'mosquitto-connect', port });
    await answer;
  }

  /** The same through Mosquitto: `acked` resolves once Mosquitto acknowledged every PUBLISH. */
  broadcastMosquitto(payload: string): { t0: number; acked: Promise<ReplyOf<'mosquitto-broadcast'>> } {
    const acked = reply(this.child, 'mosquitto-broadcast', 90_000);
    const t0 = performance.now();
    this.send({ type: 'mosquitto-broadcast', payload });
    return { t0, acked };
  }

  stop(): Promise<void> {
    return this.child.stop(5_000);
  }

  private send(message: EmergencyRawRequest): void {
    // A false return only means back-pressure: the message is queued and still delivered, in order.
    this.child.process.send(message);
  }
}
