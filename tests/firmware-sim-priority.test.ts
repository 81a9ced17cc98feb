/**
 * firmware-sim against a bare Aedes broker, with an MQTT.js client playing the server: the protocol rules
 * added for safety (stop, volume, reboot and identify respect priority, a duplicate id is answered again,
 * a re-sent play starts at its offset) and the reconnect back-off. Nothing asserts on timings: the
 * back-off's jitter is fixed through the `random` option and its delays are read from the device's
 * `reconnecting` events.
 */
import net from 'node:net';
import { once } from 'node:events';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import { connectAsync, type MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  ackSchema,
  parseDeviceTopic,
  stateSchema,
  topics,
  type Ack,
  type DeviceState,
  type Priority,
} from '../src/protocol/index.js';
import {
  backoffDelay,
  SimDevice,
  type ReconnectEvent,
  type SimDeviceOptions,
} from '../firmware-sim/src/device.js';

const SPEED = 1_000;

let broker: Aedes;
let tcp: net.Server;
let url: string;
let server: MqttClient;
let devices: SimDevice[] = [];
const acks: Ack[] = [];
const states: DeviceState[] = [];
let waiters: (() => void)[] = [];

beforeEach(async () => {
  broker = await Aedes.createBroker();
  tcp = net.createServer((socket) => {
    broker.handle(socket);
  });
  tcp.listen(0, '127.0.0.1');
  await once(tcp, 'listening');
  url = `mqtt://127.0.0.1:${(tcp.address() as net.AddressInfo).port}`;
  server = await connectAsync(url, { clientId: 'loa-server', protocolVersion: 4, reconnectPeriod: 0 });
  await server.subscribeAsync('loa/v1/devices/+/+', { qos: 1 });
  server.on('message', (topic, payload) => {
    const channel = parseDeviceTopic(topic)?.channel;
    const json: unknown = JSON.parse(payload.toString('utf8'));
    if (channel === 'ack') acks.push(ackSchema.parse(json));
    else if (channel === 'state') states.push(stateSchema.parse(json));
    for (const wake of waiters) wake();
  });
});

afterEach(async () => {
  await Promise.all(devices.map((d) => d.close()));
  devices = [];
  acks.length = 0;
  states.length = 0;
  waiters = [];
  await server.endAsync(true);
  await new Promise<void>((resolve) => broker.close(() => resolve()));
  await new Promise<void>((resolve) => tcp.close(() => resolve()));
});

/** Resolves once `check` holds, re-checked on every message the server side receives. */
function until(check: () => boolean, what: string): Promise<void> {
  if (check()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 5_000);
    const wake = () => {
      if (!check()) return;
      clearTimeout(timer);
      waiters = waiters.filter((w) => w !== wake);
      resolve();
    };
    waiters.push(wake);
  });
}

const statuses = (id: string) => acks.filter((a) => a.id === id).map((a) => [a.status, a.reason]);
/** Waits for the n-th ack of a command (1-based) and returns all of its acks so far. */
async function acked(id: string, count: number) {
  await until(() => statuses(id).length >= count, `${count} acks of ${id}`);
  return statuses(id);
}

let seq = 0;
const nextId = (prefix: string) => `${prefix}_${process.pid}_${++seq}`;
function command<P extends object>(
  type: string,
  params: P,
  priority: Priority = 'normal',
  id = nextId('cmd'),
) {
  return { id, type, issuedAt: new Date().toISOString(), priority, params };
}
const stream = (priority: Priority) =>
  command(
    'play',
    { sessionId: nextId('ses'), source: { kind: 'stream', url: 'https://radio.example.vn/vov1' } },
    priority,
  );
const send = (deviceId: string, cmd: object) =>
  server.publishAsync(topics.cmd(deviceId), JSON.stringify(cmd), { qos: 1 });

async function startDevice(options: Partial<SimDeviceOptions> = {}) {
  const device = new SimDevice({
    // Placeholder media URLs: this file tests the protocol; firmware-sim-download.test.ts downloads.
    noDownload: true,
    id: nextId('dev'),
    password: 'secret',
    mqttUrl: url,
    speed: SPEED,
    reconnectBaseMs: 20,
    reconnectMaxMs: 100,
    ...options,
  });
  devices.push(device);
  await device.connect(5_000);
  return device;
}

describe('priority of stop and volume', () => {
  it('rejects a stop of lower priority than what plays, and obeys one of equal priority', async () => {
    const device = await startDevice();
    const emergency = stream('emergency');
    await send(device.id, emergency);
    await acked(emergency.id, 2);

    const routine = command('stop', {}, 'priority');
    await send(device.id, routine);
    expect(await acked(routine.id, 2)).toEqual([
      ['received', undefined],
      ['rejected', 'lower_priority'],
    ]);
    const named = command('stop', { sessionId: emergency.params.sessionId }, 'normal');
    await send(device.id, named);
    expect((await acked(named.id, 2))[1]).toEqual(['rejected', 'lower_priority']);
    expect(device.state.playing?.commandId).toBe(emergency.id);

    // A stop naming another session does not touch the emergency, whatever its priority: done, as before.
    const other = command('stop', { sessionId: 'ses_earlier' }, 'normal');
    await send(device.id, other);
    expect((await acked(other.id, 2))[1]).toEqual(['done', undefined]);
    expect(device.state.playing?.commandId).toBe(emergency.id);

    const authorised = command('stop', {}, 'emergency');
    await send(device.id, authorised);
    expect((await acked(authorised.id, 2))[1]).toEqual(['done', undefined]);
    await until(() => states.some((s) => s.playing === null && states.indexOf(s) > 0), 'silence');
    expect(device.state.playing).toBeNull();
  });

  it('rejects a volume of lower priority than what plays; one while silent or of equal priority applies', async () => {
    const device = await startDevice({ volume: 70 });
    const silent = command('volume', { level: 30 }, 'normal');
    await send(device.id, silent);
    expect((await acked(silent.id, 2))[1]).toEqual(['done', undefined]);
    expect(device.state.volume).toBe(30);

    const warning = stream('priority');
    await send(device.id, { ...warning, params: { ...warning.params, volume: 95 } });
    await acked(warning.id, 2);
    const quieter = command('volume', { level: 10 }, 'normal');
    await send(device.id, quieter);
    expect((await acked(quieter.id, 2))[1]).toEqual(['rejected', 'lower_priority']);
    expect(device.state.volume).toBe(95);

    const equal = command('volume', { level: 80 }, 'priority');
    await send(device.id, equal);
    expect((await acked(equal.id, 2))[1]).toEqual(['done', undefined]);
    await until(() => states.some((s) => s.volume === 80), 'volume 80 reported');
    const higher = command('volume', { level: 100 }, 'emergency');
    await send(device.id, higher);
    expect((await acked(higher.id, 2))[1]).toEqual(['done', undefined]);
    expect(device.state.volume).toBe(100);
  });
});

describe('priority of maintenance commands', () => {
  it('rejects a reboot or identify below what plays; answers ping; obeys one while silent or of equal priority', async () => {
    const device = await startDevice();
    const idle = command('identify', {}, 'normal');
    await send(device.id, idle);
    expect((await acked(idle.id, 2))[1]).toEqual(['done', undefined]);
    const emergency = stream('emergency');
    await send(device.id, emergency);
    await acked(emergency.id, 2);

    // A technician's identify would sound a test tone over the warning, and a reboot would end it.
    const identify = command('identify', { durationS: 30 }, 'normal');
    await send(device.id, identify);
    expect(await acked(identify.id, 2)).toEqual([
      ['received', undefined],
      ['rejected', 'lower_priority'],
    ]);
    const reboot = command('reboot', {}, 'priority');
    await send(device.id, reboot);
    expect(await acked(reboot.id, 2)).toEqual([
      ['received', undefined],
      ['rejected', 'lower_priority'],
    ]);
    // ping touches no audio: answered whatever plays.
    const ping = command('ping', {}, 'normal');
    await send(device.id, ping);
    expect((await acked(ping.id, 2))[1]).toEqual(['done', undefined]);
    expect(device.connected).toBe(true);
    expect(device.state.playing?.commandId).toBe(emergency.id);

    const identifyNow = command('identify', {}, 'emergency');
    await send(device.id, identifyNow);
    expect((await acked(identifyNow.id, 2))[1]).toEqual(['done', undefined]);
    const rebooted = new Promise<string>((resolve) => device.once('disconnect', resolve));
    const rebootNow = command('reboot', {}, 'emergency');
    await send(device.id, rebootNow);
    expect((await acked(rebootNow.id, 2))[1]).toEqual(['done', undefined]);
    expect(await rebooted).toBe('rebooting');
    expect(device.state.playing).toBeNull();
  });
});

describe('duplicate command ids', () => {
  it('answers a command id again with its final ack, without running it twice', async () => {
    const device = await startDevice();
    const first = command('volume', { level: 20 });
    await send(device.id, first);
    await acked(first.id, 2);
    const second = command('volume', { level: 45 });
    await send(device.id, second);
    await acked(second.id, 2);

    // The server lost the first answer (a crash before it was stored) and re-sends the command.
    await send(device.id, first);
    expect(await acked(first.id, 3)).toEqual([
      ['received', undefined],
      ['done', undefined],
      ['done', undefined],
    ]);
    expect(device.state.volume).toBe(45);
    expect(device.counters.duplicateCommands).toBe(1);

    const stale = {
      ...command('volume', { level: 5 }),
      expiresAt: new Date(Date.now() - 1_000).toISOString(),
    };
    await send(device.id, stale);
    await acked(stale.id, 2);
    await send(device.id, stale);
    expect((await acked(stale.id, 3))[2]).toEqual(['rejected', 'expired']);
  });
});

describe('a re-sent play', () => {
  it('starts at its offset, which its state reports', async () => {
    const device = await startDevice({ speed: 1 });
    const play = command('play', {
      sessionId: nextId('ses'),
      source: {
        kind: 'media',
        url: 'https://media.example.vn/ban-tin.mp3',
        sha256: 'ab'.repeat(32),
        durationMs: 600_000,
      },
      offsetMs: 240_000,
    });
    await send(device.id, play);
    await until(() => states.some((s) => s.playing?.commandId === play.id), 'playing state');
    const position = states.find((s) => s.playing?.commandId === play.id)!.playing!.positionMs;
    expect(position).toBeGreaterThanOrEqual(240_000);
    expect(position).toBeLessThan(600_000);
    expect(device.state.playing!.positionMs).toBeGreaterThanOrEqual(240_000);
  });
});

describe('reconnect back-off', () => {
  it('computes full-jitter delays under an exponential ceiling with a cap', () => {
    expect([0, 1, 2, 3, 4, 10].map((n) => backoffDelay(n, 1_000, 60_000, () => 1))).toEqual([
      1_000, 2_000, 4_000, 8_000, 16_000, 60_000,
    ]);
    expect(backoffDelay(3, 1_000, 60_000, () => 0.25)).toBe(2_000);
    expect(backoffDelay(50, 1_000, 60_000, () => 0)).toBe(0);
  });

  function refuse(times: number): void {
    let left = times;
    broker.authenticate = (_client, _username, _password, done) => {
      if (left-- > 0) {
        const busy: AuthenticateError = Object.assign(new Error('server unavailable'), {
          returnCode: 3 as const,
        });
        done(busy, false);
      } else done(null, true);
    };
  }
  function record(device: SimDevice): ReconnectEvent[] {
    const events: ReconnectEvent[] = [];
    device.on('reconnecting', (e) => events.push(e));
    return events;
  }
  // Not events.once: it listens for 'error' too, and a link dropped by the broker is an error (ECONNRESET).
  const next = (device: SimDevice, event: 'connect' | 'disconnect') =>
    new Promise<void>((resolve) => device.once(event, () => resolve()));
  async function dropFromBroker(device: SimDevice): Promise<void> {
    const client = await new Promise<Client>((resolve) => {
      const found = (broker as unknown as { clients: Record<string, Client> }).clients[device.id];
      if (found) resolve(found);
      else broker.once('client', resolve);
    });
    const lost = next(device, 'disconnect');
    client.close();
    await lost;
  }

  it('doubles the wait after each refused connect up to the cap, then connects', async () => {
    refuse(4);
    const device = new SimDevice({
      noDownload: true,
      id: nextId('dev'),
      password: 'secret',
      mqttUrl: url,
      reconnectBaseMs: 10,
      reconnectMaxMs: 40,
      random: () => 1,
    });
    devices.push(device);
    const events = record(device);
    await device.connect(5_000);
    expect(events).toEqual([
      { attempt: 1, delayMs: 10 },
      { attempt: 2, delayMs: 20 },
      { attempt: 3, delayMs: 40 },
      { attempt: 4, delayMs: 40 },
    ]);
  });

  it('starts again from the base after a stable connection, not after one that dropped at once', async () => {
    refuse(2);
    const options = { reconnectBaseMs: 10, reconnectMaxMs: 1_000, random: () => 1 };
    const flaky = new SimDevice({
      id: nextId('dev'),
      password: 's',
      mqttUrl: url,
      noDownload: true,
      ...options,
    });
    devices.push(flaky);
    const flakyEvents = record(flaky);
    await flaky.connect(5_000);
    await dropFromBroker(flaky);
    await next(flaky, 'connect');
    // Two refusals, then a connection that did not hold: the third failure in a row.
    expect(flakyEvents.map((e) => e.delayMs)).toEqual([10, 20, 40]);

    refuse(2);
    const stable = new SimDevice({
      noDownload: true,
      id: nextId('dev'),
      password: 's',
      mqttUrl: url,
      ...options,
      reconnectStableMs: 0,
    });
    devices.push(stable);
    const stableEvents = record(stable);
    await stable.connect(5_000);
    await dropFromBroker(stable);
    await next(stable, 'connect');
    expect(stableEvents.map((e) => e.delayMs)).toEqual([10, 20, 10]);
  });
});
