/**
 * The firmware simulator against a bare Aedes broker, with an MQTT.js client playing the server: every
 * rule of protocol.md the simulator claims to follow, and each injectable fault. Simulated time runs
 * 1,000 times faster than real time; nothing asserts on timings, only on what was said and in what order.
 */
import net from 'node:net';
import { once } from 'node:events';
import { Aedes, type AuthenticateError } from 'aedes';
import { connectAsync, type MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ackSchema,
  logSchema,
  parseDeviceTopic,
  stateSchema,
  telemetrySchema,
  topics,
  type Ack,
  type DeviceState,
  type PlaybackLogEntry,
  type Priority,
  type Telemetry,
} from '../src/protocol/index.js';
import { SimDevice, type SimDeviceOptions } from '../firmware-sim/src/device.js';
import { Fleet } from '../firmware-sim/src/fleet.js';

const SPEED = 1_000;
const SHA = 'ab'.repeat(32);

interface Message {
  deviceId: string;
  channel: 'ack' | 'state' | 'telemetry' | 'log';
  payload: unknown;
}

/** The server's side of the wire: publishes commands, records everything devices say, validated. */
class ServerSide {
  readonly messages: Message[] = [];
  private waiters: { match: (m: Message) => boolean; resolve: (m: Message) => void }[] = [];

  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload) => {
      const parsed = parseDeviceTopic(topic);
      if (!parsed || parsed.channel === 'cmd') return;
      const channel = parsed.channel as Message['channel'];
      const json: unknown = JSON.parse(payload.toString('utf8'));
      // Every device message must satisfy the protocol schema the real server uses.
      const schema = { ack: ackSchema, state: stateSchema, telemetry: telemetrySchema, log: logSchema }[
        channel
      ];
      const message: Message = { deviceId: parsed.deviceId, channel, payload: schema.parse(json) };
      this.messages.push(message);
      for (const waiter of [...this.waiters]) {
        if (waiter.match(message)) {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          waiter.resolve(message);
        }
      }
    });
  }

  static async connect(url: string): Promise<ServerSide> {
    const client = await connectAsync(url, {
      clientId: 'loa-server',
      protocolVersion: 4,
      reconnectPeriod: 0,
    });
    await client.subscribeAsync('loa/v1/devices/+/+', { qos: 1 });
    return new ServerSide(client);
  }

  async send(deviceId: string, command: object | string | Buffer): Promise<void> {
    const payload =
      typeof command === 'string' || Buffer.isBuffer(command) ? command : JSON.stringify(command);
    await this.client.publishAsync(topics.cmd(deviceId), payload, { qos: 1 });
  }

  /** Resolves with the first message (already received or still to come) that matches. */
  waitFor(match: (m: Message) => boolean, what = 'message', timeoutMs = 5_000): Promise<Message> {
    const found = this.messages.find(match);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      const waiter = {
        match,
        resolve: (m: Message) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      this.waiters.push(waiter);
    });
  }

  async ack(deviceId: string, commandId: string, status: Ack['status']): Promise<Ack> {
    const m = await this.waitFor(
      (m) => m.deviceId === deviceId && m.channel === 'ack' && isAck(m.payload, commandId, status),
      `ack ${status} of ${commandId} from ${deviceId}`,
    );
    return m.payload as Ack;
  }

  async log(
    deviceId: string,
    match: (e: PlaybackLogEntry) => boolean,
    what: string,
  ): Promise<PlaybackLogEntry> {
    const m = await this.waitFor(
      (m) => m.deviceId === deviceId && m.channel === 'log' && match(m.payload as PlaybackLogEntry),
      `log ${what} from ${deviceId}`,
    );
    return m.payload as PlaybackLogEntry;
  }

  /** Waits for a state message that matches, counting only those after the `after`-th message. */
  async state(deviceId: string, match: (s: DeviceState) => boolean, after = 0): Promise<DeviceState> {
    const m = await this.waitFor(
      (m) =>
        this.messages.indexOf(m) >= after &&
        m.deviceId === deviceId &&
        m.channel === 'state' &&
        match(m.payload as DeviceState),
      `state from ${deviceId}`,
    );
    return m.payload as DeviceState;
  }

  acksOf(deviceId: string, commandId: string): Ack[] {
    return this.of<Ack>(deviceId, 'ack').filter((a) => a.id === commandId);
  }

  logsOf(deviceId: string): PlaybackLogEntry[] {
    return this.of<PlaybackLogEntry>(deviceId, 'log');
  }

  telemetryOf(deviceId: string): Telemetry[] {
    return this.of<Telemetry>(deviceId, 'telemetry');
  }

  private of<T>(deviceId: string, channel: Message['channel']): T[] {
    return this.messages
      .filter((m) => m.deviceId === deviceId && m.channel === channel)
      .map((m) => m.payload as T);
  }
}

function isAck(payload: unknown, id: string, status: Ack['status']): boolean {
  const ack = payload as Ack;
  return ack.id === id && ack.status === status;
}

let seq = 0;
const nextId = (prefix: string): string => `${prefix}_${process.pid}_${++seq}`;

function command<P extends object>(
  type: string,
  params: P,
  extra: { priority?: Priority; expiresAt?: string; id?: string } = {},
) {
  return {
    id: extra.id ?? nextId('cmd'),
    type,
    issuedAt: new Date().toISOString(),
    priority: extra.priority ?? 'normal',
    ...(extra.expiresAt ? { expiresAt: extra.expiresAt } : {}),
    params,
  };
}

/** A play of a 30 s media file (30 ms at SPEED), or of a stream that plays until stopped. */
function play(
  opts: {
    priority?: Priority;
    sessionId?: string;
    stream?: boolean;
    durationMs?: number;
    repeat?: number;
  } = {},
) {
  const source = opts.stream
    ? { kind: 'stream', url: 'https://radio.example.vn/vov1' }
    : {
        kind: 'media',
        url: 'https://media.example.vn/ban-tin.mp3',
        sha256: SHA,
        durationMs: opts.durationMs ?? 30_000,
      };
  return command(
    'play',
    { sessionId: opts.sessionId ?? nextId('ses'), source, ...(opts.repeat ? { repeat: opts.repeat } : {}) },
    { priority: opts.priority ?? 'normal' },
  );
}

let broker: Aedes;
let tcp: net.Server;
let url: string;
let server: ServerSide;
let devices: SimDevice[] = [];

beforeEach(async () => {
  broker = await Aedes.createBroker();
  tcp = net.createServer((socket) => {
    broker.handle(socket);
  });
  tcp.listen(0, '127.0.0.1');
  await once(tcp, 'listening');
  const address = tcp.address() as net.AddressInfo;
  url = `mqtt://127.0.0.1:${address.port}`;
  server = await ServerSide.connect(url);
});

afterEach(async () => {
  await Promise.all(devices.map((d) => d.close()));
  devices = [];
  await server.client.endAsync(true);
  await new Promise<void>((resolve) => broker.close(() => resolve()));
  await new Promise<void>((resolve) => tcp.close(() => resolve()));
});

async function startDevice(options: Partial<SimDeviceOptions> = {}): Promise<SimDevice> {
  const device = new SimDevice({
    // Placeholder media URLs: this file tests the protocol; firmware-sim-download.test.ts downloads.
    noDownload: true,
    id: nextId('dev'),
    password: 'secret',
    mqttUrl: url,
    speed: SPEED,
    reconnectPeriodMs: 50,
    ...options,
  });
  devices.push(device);
  await device.connect(5_000);
  return device;
}

describe('connection', () => {
  it('publishes state right after connecting, then telemetry with plausible values', async () => {
    const device = await startDevice({ firmware: '2.0.1', volume: 55 });
    const state = await server.state(device.id, () => true);
    expect(state).toEqual({ firmware: '2.0.1', volume: 55, playing: null });

    const { payload } = await server.waitFor(
      (m) => m.deviceId === device.id && m.channel === 'telemetry',
      'telemetry',
    );
    const telemetry = payload as Telemetry;
    expect(telemetry.supplyVoltage).toBeGreaterThan(11);
    expect(telemetry.supplyVoltage).toBeLessThan(14);
    expect(telemetry.rssiDbm).toBeLessThan(-40);
    expect(telemetry.onBattery).toBe(false);
    expect(telemetry.speakerFault).toBe(false);
    expect(typeof telemetry.ampTempC).toBe('number');
    expect(device.connected).toBe(true);
  });

  it('rejects connect() when the broker refuses the credentials', async () => {
    broker.authenticate = (_client, _username, _password, done) => {
      const refusal: AuthenticateError = Object.assign(new Error('bad credentials'), {
        returnCode: 4 as const,
      });
      done(refusal, false);
    };
    const device = new SimDevice({
      noDownload: true,
      id: nextId('dev'),
      password: 'wrong',
      mqttUrl: url,
      reconnectPeriodMs: 50,
    });
    devices.push(device);
    await expect(device.connect(5_000)).rejects.toThrow(/Bad username or password|refused/i);
    expect(device.connected).toBe(false);
  });

  it('sends clientId = username = device id and the secret as password', async () => {
    const seen: { clientId: string; username: string | undefined; password: string | undefined }[] = [];
    broker.authenticate = (client, username, password, done) => {
      seen.push({ clientId: client.id, username, password: password?.toString('utf8') });
      done(null, true);
    };
    const device = await startDevice({ password: 'bí mật-1' });
    expect(seen).toEqual([{ clientId: device.id, username: device.id, password: 'bí mật-1' }]);
  });
});

describe('commands', () => {
  it('acks a play received then done, logs started then finished, and reports state on each change', async () => {
    const device = await startDevice();
    await server.state(device.id, () => true);
    const cmd = play();
    const mark = server.messages.length;
    await server.send(device.id, cmd);

    await server.log(device.id, (e) => e.commandId === cmd.id && e.event === 'finished', 'finished');
    await server.state(device.id, (s) => s.playing === null, mark);
    expect(server.acksOf(device.id, cmd.id).map((a) => a.status)).toEqual(['received', 'done']);
    const logs = server.logsOf(device.id);
    expect(logs.map((e) => e.event)).toEqual(['started', 'finished']);
    expect(logs[1]!.seq).toBe(logs[0]!.seq + 1);

    const states = server.messages
      .filter((m) => m.deviceId === device.id && m.channel === 'state')
      .map((m) => m.payload as DeviceState);
    // On connect, on start, on finish.
    expect(states).toHaveLength(3);
    expect(states[1]!.playing).toMatchObject({
      sessionId: cmd.params.sessionId,
      commandId: cmd.id,
      priority: 'normal',
    });
    expect(states[2]!.playing).toBeNull();
  });

  it('rejects a lower priority play and lets an equal or higher one replace the current, logged interrupted', async () => {
    const device = await startDevice();
    const first = play({ priority: 'priority', stream: true });
    await server.send(device.id, first);
    await server.ack(device.id, first.id, 'done');

    const lower = play({ priority: 'normal' });
    await server.send(device.id, lower);
    const rejected = await server.ack(device.id, lower.id, 'rejected');
    expect(rejected.reason).toBe('lower_priority');
    expect(device.state.playing?.commandId).toBe(first.id);

    const higher = play({ priority: 'emergency', stream: true });
    await server.send(device.id, higher);
    await server.ack(device.id, higher.id, 'done');
    const interrupted = await server.log(
      device.id,
      (e) => e.commandId === first.id && e.event === 'interrupted',
      'interrupted',
    );
    expect(interrupted.sessionId).toBe(first.params.sessionId);

    const equal = play({ priority: 'emergency', stream: true });
    await server.send(device.id, equal);
    await server.ack(device.id, equal.id, 'done');
    await server.log(device.id, (e) => e.commandId === higher.id && e.event === 'interrupted', 'interrupted');
    await server.state(device.id, (s) => s.playing?.commandId === equal.id);
    expect(device.state.playing).toMatchObject({ commandId: equal.id, priority: 'emergency' });
  });

  it('rejects a command past expiresAt without acting on it', async () => {
    const device = await startDevice();
    const cmd = command('volume', { level: 10 }, { expiresAt: new Date(Date.now() - 1_000).toISOString() });
    await server.send(device.id, cmd);
    const ack = await server.ack(device.id, cmd.id, 'rejected');
    expect(ack.reason).toBe('expired');
    expect(server.acksOf(device.id, cmd.id).map((a) => a.status)).toEqual(['received', 'rejected']);
    expect(device.state.volume).toBe(70);
  });

  it('answers a command id it has already handled again, without running it twice (QoS 1 redelivery)', async () => {
    const device = await startDevice();
    const cmd = command('volume', { level: 20 });
    await server.send(device.id, cmd);
    await server.send(device.id, cmd);
    // Acks from one device arrive in order, so once the ping is answered the duplicate would have been too.
    const ping = command('ping', {});
    await server.send(device.id, ping);
    await server.ack(device.id, ping.id, 'done');
    expect(server.acksOf(device.id, cmd.id).map((a) => a.status)).toEqual(['received', 'done', 'done']);
    expect(device.counters.duplicateCommands).toBe(1);
  });

  it('numbers log entries one by one across sessions', async () => {
    const device = await startDevice();
    for (let i = 0; i < 3; i += 1) {
      const cmd = play();
      await server.send(device.id, cmd);
      await server.log(device.id, (e) => e.commandId === cmd.id && e.event === 'finished', 'finished');
    }
    const seqs = server.logsOf(device.id).map((e) => e.seq);
    expect(seqs).toHaveLength(6);
    expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
  });

  it('sets the volume and reports it in state', async () => {
    const device = await startDevice();
    const cmd = command('volume', { level: 35 });
    await server.send(device.id, cmd);
    await server.ack(device.id, cmd.id, 'done');
    const state = await server.state(device.id, (s) => s.volume === 35);
    expect(state.playing).toBeNull();
  });

  it('sets the volume a play asks for', async () => {
    const device = await startDevice();
    const cmd = play({ stream: true });
    await server.send(device.id, { ...cmd, params: { ...cmd.params, volume: 90 } });
    await server.state(device.id, (s) => s.volume === 90 && s.playing?.commandId === cmd.id);
  });

  it('stops only the named session, any session without one, and is idempotent', async () => {
    const device = await startDevice();
    const current = play({ stream: true });
    await server.send(device.id, current);
    await server.ack(device.id, current.id, 'done');

    const other = command('stop', { sessionId: 'ses_not_playing' });
    await server.send(device.id, other);
    await server.ack(device.id, other.id, 'done');
    expect(device.state.playing?.commandId).toBe(current.id);

    const named = command('stop', { sessionId: current.params.sessionId });
    const mark = server.messages.length;
    await server.send(device.id, named);
    await server.ack(device.id, named.id, 'done');
    const entry = await server.log(
      device.id,
      (e) => e.commandId === current.id && e.event === 'interrupted',
      'interrupted',
    );
    expect(entry.reason).toBe('stopped');
    await server.state(device.id, (s) => s.playing === null, mark);

    const again = play({ stream: true });
    await server.send(device.id, again);
    await server.ack(device.id, again.id, 'done');
    const any = command('stop', {});
    await server.send(device.id, any);
    await server.ack(device.id, any.id, 'done');
    await server.log(device.id, (e) => e.commandId === again.id && e.event === 'interrupted', 'interrupted');
    expect(device.state.playing).toBeNull();

    const nothing = command('stop', {});
    await server.send(device.id, nothing);
    await server.ack(device.id, nothing.id, 'done');
  });

  it('answers unknown types rejected/unsupported and implements ping', async () => {
    const device = await startDevice();
    const unknown = command('selfDestruct', {});
    await server.send(device.id, unknown);
    expect((await server.ack(device.id, unknown.id, 'rejected')).reason).toBe('unsupported');

    const ping = command('ping', {});
    await server.send(device.id, ping);
    await server.ack(device.id, ping.id, 'done');

    const basic = await startDevice({ maintenance: false });
    const ping2 = command('ping', {});
    await server.send(basic.id, ping2);
    expect((await server.ack(basic.id, ping2.id, 'rejected')).reason).toBe('unsupported');
  });

  it('rejects bad params', async () => {
    const device = await startDevice();
    const loud = command('volume', { level: 150 });
    await server.send(device.id, loud);
    expect((await server.ack(device.id, loud.id, 'rejected')).reason).toBe('bad_params');

    const noSource = command('play', { sessionId: 'ses_x' });
    await server.send(device.id, noSource);
    expect((await server.ack(device.id, noSource.id, 'rejected')).reason).toBe('bad_params');
    expect(device.state).toMatchObject({ volume: 70, playing: null });
  });

  it('ignores malformed cmd payloads, counts them and keeps working', async () => {
    const device = await startDevice();
    await server.send(device.id, 'not json');
    await server.send(device.id, JSON.stringify({ type: 'play' }));
    await server.send(device.id, Buffer.from([0xff, 0xfe, 0x00]));
    await server.send(device.id, '[1,2,3]');
    const ping = command('ping', {});
    await server.send(device.id, ping);
    await server.ack(device.id, ping.id, 'done');
    expect(device.counters.malformedCommands).toBe(4);
    expect(server.messages.filter((m) => m.deviceId === device.id && m.channel === 'ack')).toHaveLength(2);
  });

  it('reboots: acks done, comes back as a new boot with log seq restarted', async () => {
    const device = await startDevice({ bootS: 1 });
    const first = play();
    await server.send(device.id, first);
    await server.log(device.id, (e) => e.commandId === first.id && e.event === 'finished', 'finished');
    expect(server.logsOf(device.id).map((e) => e.seq)).toEqual([1, 2]);

    const reboot = command('reboot', {});
    const reconnected = once(device, 'connect');
    await server.send(device.id, reboot);
    await server.ack(device.id, reboot.id, 'done');
    await reconnected;

    const after = play();
    await server.send(device.id, after);
    const started = await server.log(
      device.id,
      (e) => e.commandId === after.id && e.event === 'started',
      'started',
    );
    expect(started.seq).toBe(1);
  });
});

describe('faults', () => {
  it('dropAcks: sends no acks but still plays and logs', async () => {
    const device = await startDevice({ faults: { dropAcks: true } });
    const cmd = play();
    await server.send(device.id, cmd);
    // Acks leave before the log entry, so once the entry is here any ack would be too.
    await server.log(device.id, (e) => e.commandId === cmd.id && e.event === 'started', 'started');
    expect(server.acksOf(device.id, cmd.id)).toEqual([]);
    expect(device.counters.droppedAcks).toBe(2);

    device.setFaults({ dropAcks: 0 });
    const ping = command('ping', {});
    await server.send(device.id, ping);
    await server.ack(device.id, ping.id, 'done');
  });

  it('ackDelayMs: acks still arrive, in order', async () => {
    const device = await startDevice({ faults: { ackDelayMs: 30 } });
    const cmd = command('volume', { level: 40 });
    await server.send(device.id, cmd);
    await server.ack(device.id, cmd.id, 'done');
    expect(server.acksOf(device.id, cmd.id).map((a) => a.status)).toEqual(['received', 'done']);
  });

  it('failPlayback: play acked failed with a reason and logged failed; the device stays idle', async () => {
    const device = await startDevice({ faults: { failPlayback: true } });
    const cmd = play();
    await server.send(device.id, cmd);
    expect((await server.ack(device.id, cmd.id, 'failed')).reason).toBe('download_failed');
    const entry = await server.log(device.id, (e) => e.commandId === cmd.id, 'failed');
    expect(entry).toMatchObject({
      event: 'failed',
      reason: 'download_failed',
      sessionId: cmd.params.sessionId,
    });
    expect(device.state.playing).toBeNull();

    device.setFaults({ failPlayback: 'checksum_mismatch' });
    const next = play();
    await server.send(device.id, next);
    expect((await server.ack(device.id, next.id, 'failed')).reason).toBe('checksum_mismatch');
  });

  it('speakerFault: reported in telemetry, and playback fails with speaker_fault', async () => {
    const device = await startDevice({ faults: { speakerFault: true } });
    await server.waitFor(
      (m) =>
        m.deviceId === device.id &&
        m.channel === 'telemetry' &&
        (m.payload as Telemetry).speakerFault === true,
      'telemetry with speakerFault',
    );
    const cmd = play();
    await server.send(device.id, cmd);
    expect((await server.ack(device.id, cmd.id, 'failed')).reason).toBe('speaker_fault');
    await server.log(
      device.id,
      (e) => e.commandId === cmd.id && e.event === 'failed' && e.reason === 'speaker_fault',
      'failed',
    );
  });

  it('powerCut: telemetry reports running on battery', async () => {
    const device = await startDevice({ faults: { powerCut: true } });
    const { payload } = await server.waitFor(
      (m) => m.deviceId === device.id && m.channel === 'telemetry',
      'telemetry',
    );
    expect((payload as Telemetry).onBattery).toBe(true);
  });

  it('silent: stops telemetry while staying connected and answering commands', async () => {
    const quiet = await startDevice();
    const reference = await startDevice();
    await server.waitFor((m) => m.deviceId === quiet.id && m.channel === 'telemetry', 'first telemetry');
    quiet.setFaults({ silent: true });
    // A device's messages arrive in order: telemetry already on its way arrives before this ping's ack.
    const marker = command('ping', {});
    await server.send(quiet.id, marker);
    await server.ack(quiet.id, marker.id, 'done');
    const before = server.telemetryOf(quiet.id).length;
    const target = server.telemetryOf(reference.id).length + 5;
    // Five heartbeats of the reference device, then a ping the silent one still answers: any telemetry it
    // sent in that time would have arrived before the answer.
    await server.waitFor(() => server.telemetryOf(reference.id).length >= target, 'reference telemetry');
    const ping = command('ping', {});
    await server.send(quiet.id, ping);
    await server.ack(quiet.id, ping.id, 'done');
    expect(server.telemetryOf(quiet.id)).toHaveLength(before);
    expect(quiet.connected).toBe(true);

    quiet.setFaults({ silent: false });
    await server.waitFor(() => server.telemetryOf(quiet.id).length > before, 'telemetry again');
  });

  it('disconnect/reconnect: state again on reconnect, and what happened offline is delivered, seq continuing', async () => {
    const device = await startDevice();
    const cmd = play({ durationMs: 200_000 });
    await server.send(device.id, cmd);
    const started = await server.log(
      device.id,
      (e) => e.commandId === cmd.id && e.event === 'started',
      'started',
    );

    const gone = once(broker, 'clientDisconnect');
    const finishedOffline = new Promise<void>((resolve) => {
      device.on('log', (e) => {
        if (e.event === 'finished') resolve();
      });
    });
    device.disconnect();
    expect(device.connected).toBe(false);
    await gone;
    await finishedOffline;
    expect(server.logsOf(device.id).map((e) => e.event)).toEqual(['started']);

    const mark = server.messages.length;
    await device.reconnect(5_000);
    await server.state(device.id, (s) => s.playing === null, mark);
    const finished = await server.log(
      device.id,
      (e) => e.commandId === cmd.id && e.event === 'finished',
      'finished',
    );
    expect(finished.seq).toBe(started.seq + 1);

    const ping = command('ping', {});
    await server.send(device.id, ping);
    await server.ack(device.id, ping.id, 'done');
  });

  it('flapping: drops and restores the link by itself until switched off', async () => {
    const device = await startDevice();
    let drops = 0;
    let returns = 0;
    device.on('disconnect', () => (drops += 1));
    device.on('connect', () => (returns += 1));
    const twice = new Promise<void>((resolve) => device.on('connect', () => returns >= 2 && resolve()));
    device.setFaults({ flapping: { upMs: 40, downMs: 40 } });
    await twice;
    expect(drops).toBeGreaterThanOrEqual(2);
    device.setFaults({ flapping: null });
    await device.connect(5_000);
    const ping = command('ping', {});
    await server.send(device.id, ping);
    await server.ack(device.id, ping.id, 'done');
  });
});

describe('Fleet', () => {
  it('connects many devices with bounded concurrency, each answers its own commands, and closes them all', async () => {
    const credentials = Array.from({ length: 25 }, () => {
      const id = nextId('dev');
      return { id, username: id, password: 'secret' };
    });
    const fleet = new Fleet(credentials, {
      mqttUrl: url,
      speed: SPEED,
      noDownload: true,
      connectConcurrency: 4,
      faults: (_c, index) => (index === 0 ? { failPlayback: true } : undefined),
    });
    try {
      const report = await fleet.connectAll();
      expect(report).toMatchObject({ connected: 25, failed: [] });

      const cmd = play({ stream: true });
      await Promise.all(credentials.map((c) => server.send(c.id, cmd)));
      await Promise.all(credentials.slice(1).map((c) => server.ack(c.id, cmd.id, 'done')));
      await server.ack(credentials[0]!.id, cmd.id, 'failed');

      const stats = fleet.stats();
      expect(stats).toMatchObject({ devices: 25, connected: 25, playing: 24, commands: 25 });
      expect(stats.acks).toMatchObject({ received: 25, done: 24, failed: 1 });
    } finally {
      await fleet.closeAll();
    }
    expect(fleet.devices.every((d) => !d.connected)).toBe(true);
  });
});
