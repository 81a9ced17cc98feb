/**
 * The baseline for bench/commands.ts: a bare Aedes broker with no authentication, no ACL, no database and
 * no HTTP, in its own process. The bench process connects the same simulated devices to it as to Loa and
 * asks it over IPC to broadcast the same payload; what Loa adds on top of this is Loa's overhead.
 *
 * Started by the bench as `node --import tsx bench/lib/raw-broker.ts` with an IPC channel; it prints
 * nothing on success and exits when the bench disconnects or sends SIGTERM.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { Aedes } from 'aedes';
import { topics } from '../../src/protocol/index.js';
import type { RawReply, RawRequest } from './raw-ipc.js';

const send = (reply: RawReply): void => {
  process.send?.(reply);
};

async function main(): Promise<void> {
  if (!process.send) throw new Error('raw-broker must be started with an IPC channel (by bench/commands.ts)');
  // Unset or empty: Aedes' default. 0: unlimited (mqemitter never queues).
  const setting = process.env.RAW_BROKER_CONCURRENCY;
  const concurrency = setting ? Number(setting) : undefined;
  const broker = await Aedes.createBroker({
    // Not tuning, a necessity: Loa issues 24-character device ids and Aedes refuses ids over 23 by default.
    maxClientsIdLength: 64,
    // mqemitter's in-flight message limit; the bench chooses it (see RAW_AEDES_CONCURRENCY in commands.ts).
    ...(concurrency !== undefined && Number.isInteger(concurrency) && concurrency >= 0
      ? { concurrency }
      : {}),
  });
  const server = net.createServer((socket) => {
    broker.handle(socket);
  });
  server.listen(0, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('raw broker: no TCP address');

  let targets: string[] = [];
  // Cumulative: a publish error surfaces asynchronously, after the loop has already reported.
  let errors = 0;
  process.on('message', (message: RawRequest) => {
    switch (message.type) {
      case 'targets':
        targets = message.deviceIds;
        send({ type: 'targets', count: targets.length });
        return;
      case 'broadcast': {
        // The same loop as Loa's DeviceBroker.publishCommand minus its isReady() check: one payload
        // buffer, one QoS 1 publish per device topic.
        const started = performance.now();
        const payload = Buffer.from(message.payload);
        for (const deviceId of targets) {
          broker.publish(
            { cmd: 'publish', topic: topics.cmd(deviceId), payload, qos: 1, retain: false, dup: false },
            (err) => {
              if (err) errors += 1;
            },
          );
        }
        send({ type: 'broadcast', loopMs: performance.now() - started, errors });
        return;
      }
    }
  });

  let closing = false;
  const close = (): void => {
    if (closing) return;
    closing = true;
    server.close();
    broker.close(() => process.exit(0));
    // Clients the bench forgot to close must not keep us alive.
    setTimeout(() => process.exit(0), 5_000).unref();
  };
  process.on('SIGTERM', close);
  process.on('SIGINT', close);
  // The bench died or finished without asking: nobody will ever use this broker again.
  process.on('disconnect', close);

  send({ type: 'listening', port: address.port });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
