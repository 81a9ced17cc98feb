/**
 * The embedded MQTT broker (Aedes) and everything the device protocol says about connections: who may
 * connect, what each device may subscribe and publish to, and who is online. It knows the protocol but
 * not the database: it asks `authenticate` about credentials and reports what devices say as events.
 * Keeping the broker behind this one plugin is what lets a later deployment swap in a clustered broker.
 */
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { createWebSocketStream } from 'ws';
import fp from 'fastify-plugin';
import websocket from '@fastify/websocket';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import type { FastifyBaseLogger } from 'fastify';
import { AppError } from '../errors.js';
import { LogWindow } from '../lib/log-window.js';
import { TLS_SERVER_OPTIONS, trackHandshakes, type CertificatePair } from '../lib/tls.js';
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

/** Why the broker turned a connection away before it became a device session (a metrics label). */
export type RefusalReason =
  | 'packet_too_large'
  | 'connect_rate_address'
  | 'connect_rate_global'
  | 'connections_per_address'
  | 'keepalive';

export const REFUSAL_REASONS: readonly RefusalReason[] = [
  'packet_too_large',
  'connect_rate_address',
  'connect_rate_global',
  'connections_per_address',
  'keepalive',
];

export interface BrokerOptions {
  host: string;
  /** The plain MQTT listener; null: none (MQTT_PORT=off, devices use MQTT over TLS). */
  port: number | null;
  /** MQTT over TLS, listening only when `tls` is given. */
  tlsPort: number;
  /** The certificate for MQTT over TLS; null or absent: no TLS listener. */
  tls?: CertificatePair | null;
  /** CONNECTs accepted per second from all addresses together. */
  maxConnectsPerSecond: number;
  /** CONNECTs accepted per second from one address, charged before the global cap; 0: no cap. */
  maxConnectsPerAddressPerSecond: number;
  /**
   * Open connections one address may hold on the MQTT ports (plain and TLS) and the HTTP port together (the
   * HTTP port carries MQTT over WebSocket, the API and /docs); 0: no cap.
   */
  maxConnectionsPerAddress: number;
  /** Largest MQTT packet accepted, counted as its remaining length (everything after the fixed header). */
  maxPacketBytes: number;
  /** How long a connection may stay open without sending CONNECT. */
  connectTimeoutMs: number;
  /** Checks a device's credentials; returns false for an unknown device or a wrong secret. */
  authenticate: (deviceId: string, secret: string) => boolean;
  /** Reads the time for the connect-rate windows; tests pass a ManualClock to freeze a window. */
  clock?: { now(): Date };
  /** Told about every connection turned away, for /metrics. */
  onRefused?: (reason: RefusalReason) => void;
  /** Told about every subscription refused (SUBACK 0x80), for /metrics. */
  onSubscriptionRefused?: () => void;
}

// CONNACK return codes (MQTT 3.1.1, 3.2.2.3); the typings model them as a const enum. 3.1.1 has only
// codes 0-5: Aedes' own keepalive refusal uses 6, which 3.1.1 clients may reject as a protocol error.
const CONNACK_SERVER_UNAVAILABLE = 3 as AuthenticateError['returnCode'];
const CONNACK_BAD_USERNAME_OR_PASSWORD = 4 as AuthenticateError['returnCode'];
const CONNACK_NOT_AUTHORIZED = 5 as AuthenticateError['returnCode'];
// Device ids issued by the API are 24 characters; leave room for a longer format in future.
const MAX_CLIENT_ID_LENGTH = 64;
// The protocol's keepalive is at most 120 s; refuse clients that ask for longer.
const KEEPALIVE_LIMIT_S = 120;
// The fixed header's longest form: one byte of type and flags, four of remaining length (3.1.1 §2.2.3).
const MAX_FIXED_HEADER_BYTES = 5;
// A connection's first packet is its CONNECT, which for a device is well under 1 KB (a 64-character id
// twice and a secret). Before authentication nobody may make the server hold more than this.
export const MAX_CONNECT_BYTES = 4 * 1024;
// A device that is refused this often on one connection (subscriptions outside its cmd topic, or its cmd
// topic unsubscribed and subscribed again, each of which re-sends its pending commands) is closed.
export const MAX_STRIKES_PER_CONNECTION = 20;
// Warnings about one device's misbehaviour: at most one line per device and window.
const LOG_WINDOW_MS = 60_000;
const DEVICE_CHANNELS = new Set<string>(DEVICE_PUBLISH_CHANNELS);

function refuse(returnCode: AuthenticateError['returnCode'], message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode });
}

/**
 * Follows the packet boundaries of one connection's byte stream by reading only fixed headers, and says
 * no as soon as a packet declares a remaining length over the limit. mqtt-packet 9 (Aedes 1.2's parser)
 * has no size limit: it buffers a packet until all its declared bytes have arrived, so ten CONNECTs
 * declaring 250 MB each grew the server by 1.7 GB, before any authentication.
 */
export class PacketSizeGuard {
  private inLength = false;
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  /** Body bytes of the current packet still to come; they are skipped, never inspected. */
  private remaining = 0;
  private rejected = false;
  /** The current packet's limit: the first packet's until its length is read, then `maxBytes`. */
  private limit: number;

  constructor(
    private readonly maxBytes: number,
    firstPacketMaxBytes = maxBytes,
  ) {
    this.limit = Math.min(maxBytes, firstPacketMaxBytes);
  }

  /** False once a packet is too large or its length is malformed; stays false afterwards. */
  accept(chunk: Uint8Array): boolean {
    let i = 0;
    while (i < chunk.length && !this.rejected) {
      if (this.remaining > 0) {
        const skip = Math.min(this.remaining, chunk.length - i);
        this.remaining -= skip;
        i += skip;
        continue;
      }
      const byte = chunk[i++]!;
      if (!this.inLength) {
        // The type-and-flags byte; the remaining length follows.
        this.inLength = true;
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
        continue;
      }
      // Remaining length: 7 bits per byte, least significant first, high bit = more bytes (§2.2.3).
      // Every partial sum is a lower bound, so the packet is refused at the first byte that exceeds.
      this.length += (byte & 0x7f) * this.multiplier;
      this.lengthBytes += 1;
      if (this.length > this.limit) this.rejected = true;
      else if (byte & 0x80) {
        // A fifth length byte is malformed (§2.2.3); mqtt-packet would reject it too.
        if (this.lengthBytes === 4) this.rejected = true;
        this.multiplier *= 128;
      } else {
        this.inLength = false;
        this.remaining = this.length;
        this.limit = this.maxBytes;
      }
    }
    return !this.rejected;
  }
}

/**
 * Puts a PacketSizeGuard in front of Aedes on one connection. Aedes' client pulls bytes with
 * `conn.read(null)` on 'readable' (lib/client.js) and hands them to mqtt-packet, so wrapping `read` sees
 * every byte before the parser buffers it, without a second stream or a copy per connection. While
 * Aedes waits (authentication pauses the client), the stream's own high-water mark bounds what is held.
 * tests/broker-limits.e2e.test.ts fails if a future Aedes reads another way.
 */
function guardPacketSize(conn: Duplex, maxBytes: number, onTooLarge: () => void): void {
  const guard = new PacketSizeGuard(maxBytes, MAX_CONNECT_BYTES);
  const read = conn.read.bind(conn);
  conn.read = (size?: number): unknown => {
    const chunk: unknown = read(size);
    if (chunk === null || !(chunk instanceof Uint8Array) || guard.accept(chunk)) return chunk;
    onTooLarge();
    conn.destroy();
    return null;
  };
}

interface Refusal {
  returnCode: AuthenticateError['returnCode'];
  reason: RefusalReason;
  message: string;
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
  /** The remote address of each connection, the key of the per-address limits. */
  private readonly addresses = new WeakMap<Client, string>();
  /** Decided in preConnect (which sees the CONNECT packet), answered in authenticate with a CONNACK. */
  private readonly refusals = new WeakMap<Client, Refusal>();
  /** Open sockets per address, on every port: see admitSocket. */
  private readonly openByAddress = new Map<string, number>();
  /** Refusals per connection (see MAX_STRIKES_PER_CONNECTION). */
  private readonly strikes = new WeakMap<Client, number>();
  private readonly subscriptionLog: LogWindow;
  private closing = false;
  private tcp: net.Server | undefined;
  private tlsServer: tls.Server | undefined;
  /** Ends the TLS listener's sockets still in their handshake (close). */
  private endHandshakes: (() => void) | undefined;
  // One fixed one-second window for all connect-rate counting; the per-address map is emptied with it,
  // so it holds at most the addresses seen in one second.
  private connectWindowStart = Number.NEGATIVE_INFINITY;
  private connectsInWindow = 0;
  private readonly connectsByAddress = new Map<string, number>();

  private constructor(
    readonly aedes: Aedes,
    private readonly options: BrokerOptions,
    private readonly log: FastifyBaseLogger,
  ) {
    super();
    this.subscriptionLog = new LogWindow(options.clock ?? { now: () => new Date() }, LOG_WINDOW_MS);
  }

  static async create(options: BrokerOptions, log: FastifyBaseLogger): Promise<DeviceBroker> {
    const aedes = await Aedes.createBroker({
      maxClientsIdLength: MAX_CLIENT_ID_LENGTH,
      // Off: Aedes refuses with CONNACK 6, which MQTT 3.1.1 lacks. preConnect checks keepalive instead.
      keepaliveLimit: 0,
      // One frozen 4G link must not stall delivery to every other loudspeaker.
      drainTimeout: 15_000,
      maxTopicLevels: 8,
      // A socket that never sends CONNECT holds a file descriptor for nothing: close it soon.
      connectTimeout: options.connectTimeoutMs,
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

    aedes.preConnect = (client, packet, callback) => {
      // protocol.md: sessions are clean. A persistent session (cleanSession = 0) would make Aedes keep
      // subscriptions and queue QoS 1 commands for an offline device without bound in memory, and the
      // server re-sends what matters on reconnect anyway. It is served as a clean session rather than
      // refused: no 3.1.1 CONNACK code means "clean sessions only", and CONNACK's session present = 0
      // tells a compliant client truthfully that no state was kept [MQTT-3.2.2-1], so it subscribes again.
      packet.clean = true;
      const refusal = this.admit(client, packet.keepalive ?? 0);
      if (refusal) this.refusals.set(client, refusal);
      // Refusals are answered in authenticate, which Aedes lets send a CONNACK with a return code.
      callback(null, true);
    };

    aedes.authenticate = (client, username, password, callback) => {
      const refusal = this.refusals.get(client);
      if (refusal) {
        callback(refuse(refusal.returnCode, refusal.message), false);
        return;
      }
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
      callback(null, null);
      this.options.onSubscriptionRefused?.();
      const suppressed = this.subscriptionLog.pass(client.id);
      if (suppressed !== undefined) {
        log.warn(
          { deviceId: client.id, topic: sub.topic, suppressed, windowS: LOG_WINDOW_MS / 1000 },
          'subscription refused (logged once per device and window; suppressed: refused since the last line)',
        );
      }
      this.strike(client, 'subscriptions refused');
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
      // 'ready' re-sends every pending command: once per subscription, or a device (or anyone holding its
      // credentials) subscribing in a loop multiplies them (500 SUBSCRIBEs × 200 pending = 100,000). Only
      // an UNSUBSCRIBE in between earns another re-send, and that costs a strike.
      if (this.subscribed.has(client)) return;
      const cmdTopic = topics.cmd(client.id);
      // Refused subscriptions come through with qos 128 (SUBACK failure), which the typings do not model.
      if (subscriptions.some((s) => s.topic === cmdTopic && (s.qos as number) !== 128)) {
        this.subscribed.add(client);
        this.emit('ready', client.id);
      }
    });

    aedes.on('unsubscribe', (unsubscriptions, client) => {
      // Aedes also reports the subscriptions a closing clean session drops; that is not the device's doing.
      if (client.closed || !this.subscribed.has(client)) return;
      if (!unsubscriptions.includes(topics.cmd(client.id))) return;
      // Commands published from now on would not arrive: they stay pending until it subscribes again.
      this.subscribed.delete(client);
      log.debug({ deviceId: client.id }, 'device unsubscribed from its cmd topic');
      this.strike(client, 'cmd topic unsubscribed and subscribed again');
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

  /**
   * Charges a CONNECT to its address first, then to everyone: a host that floods is stopped by its own
   * cap without using up the global one, so the loudspeakers elsewhere still get in. The global cap keeps
   * a province-wide reconnect storm (power back after a storm) from starving the event loop. Refused
   * devices get CONNACK 3 and retry with their normal back-off.
   */
  private admit(client: Client, keepaliveS: number): Refusal | null {
    const address = this.addresses.get(client) ?? 'unknown';
    const now = this.options.clock ? this.options.clock.now().getTime() : Date.now();
    if (now - this.connectWindowStart >= 1_000 || now < this.connectWindowStart) {
      this.connectWindowStart = now;
      this.connectsInWindow = 0;
      this.connectsByAddress.clear();
    }
    const perAddress = this.options.maxConnectsPerAddressPerSecond;
    const fromAddress = (this.connectsByAddress.get(address) ?? 0) + 1;
    this.connectsByAddress.set(address, fromAddress);
    if (perAddress > 0 && fromAddress > perAddress) {
      // Once per address and window: a flood must not flood the log too.
      if (fromAddress === perAddress + 1) {
        this.log.warn({ address, limit: perAddress }, 'connect rate limit of one address reached');
      }
      return this.refusal('connect_rate_address', CONNACK_SERVER_UNAVAILABLE, 'connect rate limit reached');
    }
    this.connectsInWindow += 1;
    if (this.connectsInWindow > this.options.maxConnectsPerSecond) {
      if (this.connectsInWindow === this.options.maxConnectsPerSecond + 1) {
        this.log.warn({ limit: this.options.maxConnectsPerSecond }, 'global connect rate limit reached');
      }
      return this.refusal('connect_rate_global', CONNACK_SERVER_UNAVAILABLE, 'connect rate limit reached');
    }
    if (!keepaliveS || keepaliveS > KEEPALIVE_LIMIT_S) {
      // 3.1.1 has no code for a keepalive the server will not accept (MQTT 5's is 0x86, Aedes' 6 is
      // outside 3.1.1). 5 "not authorized" (3.2.2.3: the client is not authorized to connect) says that
      // this connection as asked for is not allowed, and unlike 3 it does not invite a retry of the same
      // request. 0 (no keepalive) is refused too: a dead device would stay online for ever.
      return this.refusal('keepalive', CONNACK_NOT_AUTHORIZED, `keepalive must be 1-${KEEPALIVE_LIMIT_S} s`);
    }
    return null;
  }

  /** Counts one refusal against a connection and closes it at the limit: a device that works never gets near. */
  private strike(client: Client, what: string): void {
    const strikes = (this.strikes.get(client) ?? 0) + 1;
    this.strikes.set(client, strikes);
    if (strikes !== MAX_STRIKES_PER_CONNECTION) return;
    this.log.warn(
      { deviceId: client.id, limit: MAX_STRIKES_PER_CONNECTION, last: what },
      'too many refusals on one connection; closing it',
    );
    client.close();
  }

  private refusal(reason: RefusalReason, returnCode: Refusal['returnCode'], message: string): Refusal {
    this.options.onRefused?.(reason);
    return { reason, returnCode, message };
  }

  /**
   * Counts a raw socket against its address until it closes, or destroys it at once when the address
   * already holds its cap: idle sockets cost a file descriptor each, and 20,000 of them from a few
   * addresses once starved every device and /healthz. Every port counts here, into one counter: the MQTT
   * TCP port, the MQTT over TLS port and the HTTP port, which also carries MQTT over WebSocket, so an
   * upgraded WebSocket is counted once, as the socket it is. The count is taken before any header (or TLS
   * handshake) is read, so it sees the peer (a reverse proxy, if there is one), never X-Forwarded-For.
   */
  admitSocket(socket: Duplex, remoteAddress: string | undefined): boolean {
    // A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; one host, one key.
    const key = remoteAddress?.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '') ?? 'unknown';
    const open = this.openByAddress.get(key) ?? 0;
    const cap = this.options.maxConnectionsPerAddress;
    if (cap > 0 && open >= cap) {
      // debug: a host holding its cap and retrying would otherwise write a warning per attempt.
      this.log.debug({ address: key, limit: cap }, 'connection cap of one address reached');
      this.options.onRefused?.('connections_per_address');
      socket.destroy();
      return false;
    }
    this.openByAddress.set(key, open + 1);
    socket.once('close', () => {
      const left = (this.openByAddress.get(key) ?? 1) - 1;
      if (left > 0) this.openByAddress.set(key, left);
      else this.openByAddress.delete(key);
    });
    return true;
  }

  /**
   * Hands a connection (a TCP socket admitted by admitSocket, or a WebSocket stream on an HTTP socket
   * admitted by the HTTP server's count) to Aedes behind the packet-size guard.
   */
  accept(conn: Duplex, address: string | undefined, request?: IncomingMessage): void {
    const key = address ?? 'unknown';
    guardPacketSize(conn, this.options.maxPacketBytes, () => {
      this.log.debug({ address: key, limit: this.options.maxPacketBytes }, 'MQTT packet too large; closing');
      this.options.onRefused?.('packet_too_large');
    });
    const client = this.aedes.handle(conn, request);
    this.addresses.set(client, key);
  }

  /** A connection that died between authentication and registration; if it was taking over, the device is gone. */
  private forgetIncoming(client: Client): void {
    if (this.incoming.get(client.id) !== client) return;
    this.incoming.delete(client.id);
    if (this.takingOver.delete(client.id) && !this.connections.has(client.id)) {
      this.emit('offline', client.id, 'disconnect');
    }
  }

  /** Opens the plain listener (unless MQTT_PORT=off) and the TLS one (when there is a certificate). */
  async listen(): Promise<void> {
    if (this.options.port !== null) {
      this.tcp = net.createServer((socket) => {
        if (this.admitSocket(socket, socket.remoteAddress)) this.accept(socket, socket.remoteAddress);
      });
      await this.listenOn(this.tcp, this.options.port);
    }
    if (this.options.tls) {
      const server = tls.createServer({
        ...this.options.tls,
        ...TLS_SERVER_OPTIONS,
        // A socket that opens and never finishes its handshake holds a file descriptor as one that never
        // sends CONNECT does; both get the same time.
        handshakeTimeout: this.options.connectTimeoutMs,
      });
      // Counted on the raw socket before the handshake, as on the other ports: a flood of handshakes is
      // what costs CPU. A socket that fails its handshake (a client trusting another CA, plain MQTT sent
      // here, a timeout) is destroyed by Node, and its 'close' gives the count back.
      server.on('connection', (socket: net.Socket) => {
        this.admitSocket(socket, socket.remoteAddress);
      });
      // After admitSocket's listener: a socket it refused is already destroyed and not followed.
      this.endHandshakes = trackHandshakes(server);
      server.on('secureConnection', (socket: tls.TLSSocket) => {
        // A socket refused by admitSocket is destroyed before it can get here; checked all the same.
        if (!socket.destroyed) this.accept(socket, socket.remoteAddress);
      });
      server.on('tlsClientError', (err, socket) => {
        this.log.debug({ address: socket.remoteAddress, err: err.message }, 'MQTT TLS handshake failed');
        // With a listener here, Node leaves closing the socket to it (a handshake timeout would hold it open).
        socket.destroy();
      });
      this.tlsServer = server;
      await this.listenOn(server, this.options.tlsPort);
    }
  }

  private async listenOn(server: net.Server, port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.options.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  /** New TLS connections get this certificate; open ones keep the one they shook hands with. */
  setSecureContext(pair: CertificatePair): void {
    this.tlsServer?.setSecureContext({ ...pair, ...TLS_SERVER_OPTIONS });
  }

  /** The plain MQTT port (the bound one once listening); throws when that listener is off (MQTT_PORT=off). */
  get port(): number {
    if (this.options.port === null) throw new Error('the plain MQTT listener is off (MQTT_PORT=off)');
    return boundPort(this.tcp) ?? this.options.port;
  }

  /** The MQTT over TLS port (the bound one once listening); null without a certificate. */
  get tlsPort(): number | null {
    if (!this.options.tls) return null;
    return boundPort(this.tlsServer) ?? this.options.tlsPort;
  }

  /** True while every configured MQTT listener accepts connections (for /readyz). */
  get listening(): boolean {
    const plain = this.options.port === null || (this.tcp?.listening ?? false);
    const secure = !this.options.tls || (this.tlsServer?.listening ?? false);
    return plain && secure && (this.tcp !== undefined || this.tlsServer !== undefined);
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
    const listenersClosed = [this.tcp, this.tlsServer].map((server) =>
      server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve(),
    );
    // No client yet, so Aedes would not close them, and the listener's close would wait for them.
    this.endHandshakes?.();
    await new Promise<void>((resolve) => this.aedes.close(() => resolve()));
    await Promise.all(listenersClosed);
  }
}

function boundPort(server: net.Server | undefined): number | undefined {
  const address = server?.address();
  return address && typeof address === 'object' ? address.port : undefined;
}

declare module 'fastify' {
  interface FastifyInstance {
    broker: DeviceBroker;
  }
}

/**
 * MQTT over TCP on its own port, over TLS on another (with a certificate), and over WebSocket at /mqtt on
 * the HTTP port (WSS when the HTTP port is HTTPS).
 */
export default fp<BrokerOptions>(
  async (app, options) => {
    const broker = await DeviceBroker.create(options, app.log.child({ component: 'broker' }));
    app.decorate('broker', broker);
    // Every socket of the HTTP port, counted when it opens, before it has said anything.
    app.server.on('connection', (socket: net.Socket) => {
      broker.admitSocket(socket, socket.remoteAddress);
    });

    await app.register(websocket, {
      options: {
        // MQTT.js and browsers offer the "mqtt" subprotocol and expect it echoed back.
        handleProtocols: (protocols) => (protocols.has('mqtt') ? 'mqtt' : false),
        // The same limit as on TCP; the guard checks each packet, this bounds what ws buffers first.
        maxPayload: options.maxPacketBytes + MAX_FIXED_HEADER_BYTES,
      },
    });
    app.route({
      method: 'GET',
      url: '/mqtt',
      schema: { hide: true },
      // A plain HTTP request (a browser, a probe) gets an answer from the catalogue like any other error.
      handler: () => {
        throw new AppError(
          'bad_request',
          'This is MQTT over WebSocket: connect with an MQTT client (WebSocket subprotocol "mqtt")',
        );
      },
      wsHandler: (socket, request) => {
        // Already counted as an HTTP socket. request.ip (the client behind a trusted proxy, TRUST_PROXY)
        // keys the connect rate.
        broker.accept(createWebSocketStream(socket), request.ip, request.raw);
      },
    });

    app.addHook('onReady', async () => {
      await broker.listen();
      app.log.info(
        { port: options.port === null ? 'off' : broker.port, tlsPort: broker.tlsPort ?? 'off' },
        'MQTT broker listening',
      );
    });
    app.addHook('onClose', async () => {
      await broker.close();
    });
  },
  { name: 'broker', fastify: '5.x' },
);
