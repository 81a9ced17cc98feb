/**
 * The embedded MQTT broker (Aedes) and everything the device protocol says about connections: who may
 * connect, what each device may subscribe and publish to, and who is online. It knows the protocol but
 * not the database: it asks `authenticate` about credentials and reports what devices say as events.
 * Keeping the broker behind this one plugin is what lets a later deployment swap in a clustered broker.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { createWebSocketStream } from 'ws';
import fp from 'fastify-plugin';
import websocket from '@fastify/websocket';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import type { FastifyBaseLogger } from 'fastify';
import { DEVICE_PUBLISH_CHANNELS, parseDeviceTopic, topics, type DeviceChannel } from '../protocol/index.js';

/** Why a device came online: a fresh connection, or a new connection replacing a live one. */
export type OnlineCause = 'connect' | 'takeover';
/** Why a device's connection ended. */
export type OfflineCause = 'disconnect' | 'keepalive' | KickCause | 'server_restart';
/** Why the server closed a device's connection itself. */
export type KickCause = 'credentials_rotated' | 'deleted';

export interface BrokerEvents {
  online: [deviceId: string, cause: OnlineCause];
  offline: [deviceId: string, cause: OfflineCause];
  /** The device has subscribed to its cmd topic: from now on commands published to it arrive. */
  ready: [deviceId: string];
  message: [deviceId: string, channel: DeviceChannel, payload: Buffer];
}

export interface BrokerOptions {
  host: string;
  port: number;
  maxConnectsPerSecond: number;
  /** Checks a device's credentials; returns false for an unknown device or a wrong secret. */
  authenticate: (deviceId: string, secret: string) => boolean;
}

// CONNACK return codes (MQTT 3.1.1, 3.2.2.3); the typings model them as a const enum.
const CONNACK_BAD_USERNAME_OR_PASSWORD = 4 as AuthenticateError['returnCode'];
const CONNACK_NOT_AUTHORIZED = 5 as AuthenticateError['returnCode'];
// Device ids issued by the API are 24 characters; leave room for a longer format in future.
const MAX_CLIENT_ID_LENGTH = 64;
// The protocol's keepalive is at most 120 s; refuse clients that ask for longer.
const KEEPALIVE_LIMIT_S = 120;
const DEVICE_CHANNELS = new Set<string>(DEVICE_PUBLISH_CHANNELS);

function refuse(returnCode: AuthenticateError['returnCode'], message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode });
}

export class DeviceBroker extends EventEmitter<BrokerEvents> {
  /**
   * The live connection per device. Presence is keyed on the connection, not the id: when a device
   * reconnects before its old connection died, Aedes closes the old one and reports it disconnected,
   * which must not mark the device offline.
   */
  private readonly connections = new Map<string, Client>();
  /**
   * Connections that passed authentication but are not registered yet. When one of them takes over a
   * live connection, Aedes first reports the old one disconnected: that is a take-over, not an outage.
   */
  private readonly incoming = new Map<string, Client>();
  private readonly takingOver = new Set<string>();
  private readonly subscribed = new WeakSet<Client>();
  private readonly keepaliveExpired = new WeakSet<Client>();
  private readonly kicked = new WeakMap<Client, KickCause>();
  private closing = false;
  private tcp: net.Server | undefined;
  private connectWindowStart = 0;
  private connectsInWindow = 0;

  private constructor(
    readonly aedes: Aedes,
    private readonly options: BrokerOptions,
    private readonly log: FastifyBaseLogger,
  ) {
    super();
  }

  static async create(options: BrokerOptions, log: FastifyBaseLogger): Promise<DeviceBroker> {
    const aedes = await Aedes.createBroker({
      maxClientsIdLength: MAX_CLIENT_ID_LENGTH,
      keepaliveLimit: KEEPALIVE_LIMIT_S,
      // One frozen 4G link must not stall delivery to every other loudspeaker.
      drainTimeout: 15_000,
      maxTopicLevels: 8,
      connectTimeout: 15_000,
      // Unlimited: with a limit, device messages that nobody subscribes to (we listen on the 'publish'
      // event) queue behind a broadcast's in-flight deliveries, and mqemitter drains that queue
      // recursively — at 10,000 devices the stack overflowed and the process died (bench:commands).
      concurrency: 0,
    });
    const broker = new DeviceBroker(aedes, options, log);
    broker.wire();
    return broker;
  }

  private wire(): void {
    const { aedes, log } = this;

    aedes.preConnect = (_client, _packet, callback) => {
      // A cap on the connect rate keeps a province-wide reconnect storm (power back after a storm) from
      // starving the event loop; refused devices retry with their normal back-off.
      const now = Date.now();
      if (now - this.connectWindowStart >= 1_000) {
        this.connectWindowStart = now;
        this.connectsInWindow = 0;
      }
      this.connectsInWindow += 1;
      if (this.connectsInWindow > this.options.maxConnectsPerSecond) {
        callback(new Error('connect rate limit reached'), false);
        return;
      }
      callback(null, true);
    };

    aedes.authenticate = (client, username, password, callback) => {
      // protocol.md: clientId = username = device id, password = the device secret.
      if (!username || !password || username !== client.id) {
        callback(refuse(CONNACK_NOT_AUTHORIZED, 'clientId must equal username'), false);
        return;
      }
      let ok = false;
      try {
        ok = this.options.authenticate(username, password.toString('utf8'));
      } catch (err) {
        log.error({ err, deviceId: username }, 'device authentication failed with an error');
      }
      if (!ok) {
        log.warn({ deviceId: username }, 'device refused at CONNECT: bad credentials');
        callback(refuse(CONNACK_BAD_USERNAME_OR_PASSWORD, 'bad device credentials'), false);
        return;
      }
      this.incoming.set(client.id, client);
      callback(null, true);
    };

    aedes.authorizeSubscribe = (client, sub, callback) => {
      // A device may subscribe only to its own cmd topic; anything else (wildcards included) gets SUBACK
      // 0x80 without closing the connection.
      if (sub.topic === topics.cmd(client.id)) {
        callback(null, sub);
        return;
      }
      log.warn({ deviceId: client.id, topic: sub.topic }, 'subscription refused');
      callback(null, null);
    };

    aedes.authorizePublish = (client, packet, callback) => {
      // Also refuses $SYS/ (no device topic starts with it), as a custom authorizePublish must.
      const parsed = parseDeviceTopic(packet.topic);
      if (!client || !parsed || parsed.deviceId !== client.id || !DEVICE_CHANNELS.has(parsed.channel)) {
        log.warn({ deviceId: client?.id, topic: packet.topic }, 'publish refused; closing the connection');
        callback(new Error('publish not authorized'));
        return;
      }
      // No retained messages per device: they make every SUBSCRIBE scan them all (reconnect storms).
      packet.retain = false;
      callback(null);
    };

    aedes.on('client', (client) => {
      if (this.incoming.get(client.id) === client) this.incoming.delete(client.id);
      this.connections.set(client.id, client);
      const cause: OnlineCause = this.takingOver.delete(client.id) ? 'takeover' : 'connect';
      this.emit('online', client.id, cause);
    });

    aedes.on('keepaliveTimeout', (client) => {
      this.keepaliveExpired.add(client);
    });

    aedes.on('clientDisconnect', (client) => {
      if (this.connections.get(client.id) !== client) return;
      this.connections.delete(client.id);
      const successor = this.incoming.get(client.id);
      if (successor && successor !== client && !successor.closed) {
        // [MQTT-3.1.4-2] the same device connected again; the new connection is about to register.
        this.takingOver.add(client.id);
        return;
      }
      const cause: OfflineCause = this.closing
        ? 'server_restart'
        : (this.kicked.get(client) ?? (this.keepaliveExpired.has(client) ? 'keepalive' : 'disconnect'));
      this.emit('offline', client.id, cause);
    });

    aedes.on('subscribe', (subscriptions, client) => {
      const cmdTopic = topics.cmd(client.id);
      // Refused subscriptions come through with qos 128 (SUBACK failure), which the typings do not model.
      if (subscriptions.some((s) => s.topic === cmdTopic && (s.qos as number) !== 128)) {
        this.subscribed.add(client);
        this.emit('ready', client.id);
      }
    });

    aedes.on('publish', (packet, client) => {
      if (!client) return; // our own publications
      const parsed = parseDeviceTopic(packet.topic);
      if (!parsed) return;
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      this.emit('message', parsed.deviceId, parsed.channel as DeviceChannel, payload);
    });

    aedes.on('clientError', (client, err) => {
      log.debug({ deviceId: client.id, err: err.message }, 'mqtt client error');
      this.forgetIncoming(client);
    });
    aedes.on('connectionError', (client, err) => {
      log.debug({ err: err.message }, 'mqtt connection refused');
      this.forgetIncoming(client);
    });
  }

  /** A connection that died between authentication and registration; if it was taking over, the device is gone. */
  private forgetIncoming(client: Client): void {
    if (this.incoming.get(client.id) !== client) return;
    this.incoming.delete(client.id);
    if (this.takingOver.delete(client.id) && !this.connections.has(client.id)) {
      this.emit('offline', client.id, 'disconnect');
    }
  }

  async listen(): Promise<number> {
    const server = net.createServer((socket) => {
      this.aedes.handle(socket);
    });
    this.tcp = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return this.port;
  }

  get port(): number {
    const address = this.tcp?.address();
    return address && typeof address === 'object' ? address.port : this.options.port;
  }

  isOnline(deviceId: string): boolean {
    return this.connections.has(deviceId);
  }

  get onlineCount(): number {
    return this.connections.size;
  }

  /** True when a command published now reaches the device (it is connected and subscribed to cmd). */
  isReady(deviceId: string): boolean {
    const client = this.connections.get(deviceId);
    return client !== undefined && this.subscribed.has(client);
  }

  /**
   * Publishes one command payload to each device's cmd topic at QoS 1 and returns the ids it was handed
   * to (the devices that were ready). Each device gets its own message: the topic names the target.
   */
  publishCommand(deviceIds: Iterable<string>, payload: Buffer): string[] {
    const sent: string[] = [];
    for (const deviceId of deviceIds) {
      if (!this.isReady(deviceId)) continue;
      sent.push(deviceId);
      this.aedes.publish(
        { cmd: 'publish', topic: topics.cmd(deviceId), payload, qos: 1, retain: false, dup: false },
        (err) => {
          if (err) this.log.warn({ deviceId, err: err.message }, 'command publish failed');
        },
      );
    }
    return sent;
  }

  /** Closes a device's connection (credentials rotated, device deleted). */
  disconnect(deviceId: string, cause: KickCause): void {
    const client = this.connections.get(deviceId);
    if (!client) return;
    this.kicked.set(client, cause);
    client.close();
  }

  async close(): Promise<void> {
    this.closing = true;
    // Stop accepting first, then close every client, so no device slips in during shutdown.
    const tcp = this.tcp;
    const tcpClosed = tcp ? new Promise<void>((resolve) => tcp.close(() => resolve())) : Promise.resolve();
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
    await tcpClosed;
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    broker: DeviceBroker;
  }
}

/** MQTT over TCP on its own port and over WebSocket at /mqtt on the HTTP port. */
export default fp<BrokerOptions>(
  async (app, options) => {
    const broker = await DeviceBroker.create(options, app.log.child({ component: 'broker' }));
    app.decorate('broker', broker);

    await app.register(websocket, {
      options: {
        // MQTT.js and browsers offer the "mqtt" subprotocol and expect it echoed back.
        handleProtocols: (protocols) => (protocols.has('mqtt') ? 'mqtt' : false),
        maxPayload: 256 * 1024,
      },
    });
    app.get('/mqtt', { websocket: true, schema: { hide: true } }, (socket, request) => {
      broker.aedes.handle(createWebSocketStream(socket), request.raw);
    });

    app.addHook('onReady', async () => {
      const port = await broker.listen();
      app.log.info({ port }, 'MQTT broker listening');
    });
    app.addHook('onClose', async () => {
      await broker.close();
    });
  },
  { name: 'broker', fastify: '5.x' },
);
