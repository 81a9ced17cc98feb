/**
 * The baseline for bench/health.ts: a bare Aedes broker that receives the same telemetry as Loa and does
 * nothing with it (no authentication, no ACL, no payload validation, no health rules, no database, no
 * HTTP), in its own process. Its CPU per message is the floor any MQTT server built on Aedes pays; what
 * Loa spends above it is Loa's own work.
 *
 * Aedes gets the options Loa's broker plugin gives it (src/plugins/broker.ts), so the two brokers differ
 * only by what Loa adds. It counts the publishes it receives from clients and tells the bench on request.
 *
 * Started by bench/lib/health-raw.ts as `node --import tsx bench/lib/health-raw-broker.ts` with an IPC
 * channel; exits when the bench disconnects or sends SIGTERM.
 */
import net from 'node:net';
import { Aedes } from 'aedes';
import type { RawHealthReply, RawHealthRequest } from './health-raw.js';

const send = (reply: RawHealthReply): void => {
  process.send?.(reply);
};

async function main(): Promise<void> {
  if (!process.send)
    throw new Error('health-raw-broker must be started with an IPC channel (by bench/health.ts)');
  const broker = await Aedes.createBroker({
    // The same settings as Loa's DeviceBroker.create.
    maxClientsIdLength: 64,
    keepaliveLimit: 120,
    drainTimeout: 15_000,
    maxTopicLevels: 8,
    connectTimeout: 15_000,
    // Loa's too (0: unlimited). This load has no subscriber at all, so nothing is ever in flight anyway.
    concurrency: 0,
  });
  let telemetry = 0;
  let messages = 0;
  // 'publish' fires once a message has gone through the broker (for Loa that is where its own handling
  // starts); without a client it is the broker's own $SYS traffic, which is not counted.
  broker.on('publish', (packet, client) => {
    if (!client) return;
    messages += 1;
    if (packet.topic.endsWith('/telemetry')) telemetry += 1;
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

  process.on('message', (message: RawHealthRequest) => {
    switch (message.type) {
      case 'count':
        send({ type: 'count', telemetry, messages, clients: broker.connectedClients });
        return;
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
  // The bench died or finished without asking: nobody will use this broker again.
  process.on('disconnect', close);

  send({ type: 'listening', port: address.port });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
