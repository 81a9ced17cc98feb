/**
 * The baseline of bench/emergency.ts, in its own process: what any MQTT + HTTP server must do at the least
 * to broadcast an emergency, with none of Loa's work (no authentication, ACL, database, rendering, audit).
 *
 * - a bare Aedes broker, as bench/lib/raw-broker.ts (bench:commands' baseline): the bench connects the same
 *   simulated devices to it and asks it over IPC to publish the same play command at QoS 1 to each one;
 * - a bare node:http server that answers GET …/<name> with a file the bench registered, streamed with its
 *   Content-Length (as bench/lib/media-raw-server.ts): the devices download the emergency's audio from it,
 *   so that they do the same work in the bench process as Loa's devices do (receive, ack, download, hash,
 *   play), and so that the broker shares its process with a file server, as Loa's does;
 * - an MQTT publisher for Mosquitto (when the bench runs one): a TCP socket that writes hand-encoded
 *   MQTT 3.1.1 PUBLISH packets, all of a broadcast in one write, so that Mosquitto's fan-out is measured
 *   and not the encoding speed of a JavaScript client.
 *
 * Started by the bench as `node --import tsx bench/lib/emergency-raw-server.ts` with an IPC channel; it
 * prints nothing on success and exits when the bench disconnects or sends SIGTERM.
 */
import { createReadStream, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { pipeline } from 'node:stream';
import { Aedes } from 'aedes';
import { topics } from '../../src/protocol/index.js';
import type { EmergencyRawReply, EmergencyRawRequest } from './emergency-ipc.js';

/** Fastify's default keep-alive, as in media-raw-server.ts: both servers keep idle connections alike. */
const KEEP_ALIVE_TIMEOUT_MS = 72_000;
/** MQTT packet identifiers are 16-bit and non-zero: one broadcast through the publisher uses 1..N. */
const MAX_PACKET_ID = 65_535;

const send = (reply: EmergencyRawReply): void => {
  process.send?.(reply);
};

// ---- MQTT 3.1.1 encoding, the three packets the publisher needs -------------------------------------------

function remainingLength(length: number): Buffer {
  const bytes: number[] = [];
  let x = length;
  do {
    let byte = x % 128;
    x = Math.floor(x / 128);
    if (x > 0) byte |= 0x80;
    bytes.push(byte);
  } while (x > 0);
  return Buffer.from(bytes);
}

function connectPacket(clientId: string): Buffer {
  const id = Buffer.from(clientId, 'utf8');
  const body = Buffer.concat([
    // Protocol name "MQTT", level 4 (3.1.1), flags: clean session, keepalive 0 (none: no PINGREQ needed).
    Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x00]),
    Buffer.from([id.length >> 8, id.length & 0xff]),
    id,
  ]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

/** Every PUBLISH (QoS 1, packet ids 1..N) of one broadcast, back to back in one buffer. */
function publishPackets(deviceIds: readonly string[], payload: Buffer): Buffer {
  const packets = deviceIds.map((deviceId, i) => {
    const topic = Buffer.from(topics.cmd(deviceId), 'utf8');
    const length = 2 + topic.length + 2 + payload.length;
    const header = remainingLength(length);
    const packet = Buffer.allocUnsafe(1 + header.length + length);
    let at = 0;
    packet[at++] = 0x32; // PUBLISH, QoS 1, no DUP, no RETAIN
    at += header.copy(packet, at);
    packet.writeUInt16BE(topic.length, at);
    at += 2;
    at += topic.copy(packet, at);
    packet.writeUInt16BE(i + 1, at);
    at += 2;
    payload.copy(packet, at);
    return packet;
  });
  return Buffer.concat(packets);
}

/**
 * A publisher connection to Mosquitto. It reads only what Mosquitto sends a client with no subscriptions
 * and no keepalive: CONNACK, then one PUBACK per QoS 1 PUBLISH.
 */
class MosquittoPublisher {
  private buffered: Buffer = Buffer.alloc(0);
  private onConnack: ((ok: boolean) => void) | undefined;
  private awaiting = 0;
  private onAllAcked: (() => void) | undefined;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.read(chunk));
  }

  static async connect(port: number): Promise<MosquittoPublisher> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const publisher = new MosquittoPublisher(socket);
    socket.on('error', (err) => send({ type: 'failed', message: `mosquitto publisher: ${err.message}` }));
    const ok = await new Promise<boolean>((resolve) => {
      publisher.onConnack = resolve;
      socket.write(connectPacket(`bench-publisher-${process.pid}`));
    });
    if (!ok) throw new Error('mosquitto refused the publisher (CONNACK return code ≠ 0)');
    return publisher;
  }

  private read(chunk: Buffer): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    // Both packets Mosquitto sends here are 4 bytes: a type byte, remaining length 2, two bytes.
    let at = 0;
    while (this.buffered.length - at >= 4) {
      const type = (this.buffered[at] ?? 0) >> 4;
      if (type === 2) this.onConnack?.(this.buffered[at + 3] === 0);
      else if (type === 4) {
        this.awaiting -= 1;
        if (this.awaiting === 0) this.onAllAcked?.();
      }
      at += 4;
    }
    this.buffered = this.buffered.subarray(at);
  }

  /** Writes every PUBLISH; resolves with the loop's duration and, later, when all are acknowledged. */
  broadcast(
    deviceIds: readonly string[],
    payload: Buffer,
  ): { loopMs: number; bytes: number; acked: Promise<number> } {
    const started = performance.now();
    const packets = publishPackets(deviceIds, payload);
    this.awaiting = deviceIds.length;
    const acked = new Promise<number>((resolve) => {
      const timer = setTimeout(() => resolve(-1), 60_000);
      this.onAllAcked = () => {
        clearTimeout(timer);
        resolve(performance.now() - started);
      };
    });
    this.socket.write(packets);
    return { loopMs: performance.now() - started, bytes: packets.length, acked };
  }

  close(): void {
    this.socket.destroy();
  }
}

async function main(): Promise<void> {
  if (!process.send) throw new Error('emergency-raw-server must be started with an IPC channel');
  const broker = await Aedes.createBroker({
    // Not tuning, a necessity: Loa issues 24-character device ids and Aedes refuses ids over 23 by default.
    maxClientsIdLength: 64,
    // Unlimited in-flight messages, as bench:commands' raw broker (RAW_AEDES_CONCURRENCY there explains why).
    concurrency: 0,
  });
  const mqttServer = net.createServer((socket) => {
    broker.handle(socket);
  });

  const files = new Map<string, { path: string; size: number }>();
  const httpServer = http.createServer((request, response) => {
    const name = new URL(request.url ?? '/', 'http://x').pathname.split('/').pop() ?? '';
    const file = files.get(name);
    if (request.method !== 'GET' || !file) {
      response.writeHead(request.method === 'GET' ? 404 : 405).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'audio/mpeg', 'content-length': file.size });
    // pipeline destroys the file stream if the client goes away mid-download (no leaked descriptor).
    pipeline(createReadStream(file.path), response, () => undefined);
  });
  httpServer.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;

  const listen = (server: net.Server): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        if (!address || typeof address === 'string') reject(new Error('no TCP address'));
        else resolve(address.port);
      });
    });
  const [mqttPort, httpPort] = await Promise.all([listen(mqttServer), listen(httpServer)]);

  let targets: string[] = [];
  let errors = 0;
  let publisher: MosquittoPublisher | undefined;
  const fail = (err: unknown): void =>
    send({ type: 'failed', message: err instanceof Error ? err.message : String(err) });

  process.on('message', (message: EmergencyRawRequest) => {
    switch (message.type) {
      case 'targets':
        targets = message.deviceIds;
        send({ type: 'targets', count: targets.length });
        return;
      case 'file': {
        const size = statSync(message.path).size;
        files.set(message.name, { path: message.path, size });
        send({ type: 'file', name: message.name, sizeBytes: size });
        return;
      }
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
      case 'mosquitto-connect':
        MosquittoPublisher.connect(message.port).then((p) => {
          publisher?.close();
          publisher = p;
          send({ type: 'mosquitto-connected' });
        }, fail);
        return;
      case 'mosquitto-broadcast': {
        if (!publisher) {
          fail(new Error('mosquitto-broadcast before mosquitto-connect'));
          return;
        }
        if (targets.length > MAX_PACKET_ID) {
          fail(new Error(`the publisher numbers one broadcast's packets 1..${MAX_PACKET_ID}`));
          return;
        }
        const { loopMs, bytes, acked } = publisher.broadcast(targets, Buffer.from(message.payload));
        void acked.then((pubackMs) => send({ type: 'mosquitto-broadcast', loopMs, pubackMs, bytes }));
        return;
      }
    }
  });

  let closing = false;
  const close = (): void => {
    if (closing) return;
    closing = true;
    publisher?.close();
    mqttServer.close();
    httpServer.close();
    httpServer.closeAllConnections();
    broker.close(() => process.exit(0));
    // Clients the bench forgot to close must not keep us alive.
    setTimeout(() => process.exit(0), 5_000).unref();
  };
  process.on('SIGTERM', close);
  process.on('SIGINT', close);
  // The bench died or finished without asking: nobody will ever use this process again.
  process.on('disconnect', close);

  send({ type: 'listening', mqttPort, httpPort });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
