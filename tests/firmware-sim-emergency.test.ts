/**
 * firmware-sim and emergencies (issue 9), on the app's embedded broker: an emergency play starts on
 * receipt from the start, pre-empts what plays and is acked and logged as any play; its repeats are played
 * with `repeatGapMs` of silence between them, and positions and joins count the gaps; the faults the
 * server's retry tests need (the first acks lost, an outage for a while) behave, and a command re-sent with
 * the same id is answered with the device's last ack, never played twice.
 *
 * Commands are published through the broker as the server does (the dispatcher is not involved), and what
 * the server hears is read from the broker's own `message` events. The devices' wall clock and media time
 * are a ManualClock shared with the app (`playbackTime: 'clock'`): the tests move through plays, gaps and
 * outages by advancing it, so nothing waits for real time or asserts on timings.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Fleet } from '../firmware-sim/src/fleet.js';
import { SimDevice, sessionLengthMs, type Faults } from '../firmware-sim/src/device.js';
import {
  ackSchema,
  logSchema,
  type Ack,
  type DeviceChannel,
  type PlaybackLogEntry,
  type Priority,
} from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { waitFor } from './support/wait.js';

const SECOND = 1_000;
const MINUTE = 60 * SECOND;

interface Sim {
  id: string;
  sim: SimDevice;
  /** Acks and log entries as the device sent them (dropped acks are not among them). */
  acks: Ack[];
  logs: PlaybackLogEntry[];
}

describe('firmware-sim: emergencies', () => {
  const clock = new ManualClock('2026-09-14T21:30:00+07:00');
  let t: TestApp;
  let hamletId: string;
  let mqttUrl: string;
  const sims: SimDevice[] = [];
  /** What the server received, per device: acks and log entries off the broker. */
  const heard = new Map<string, { acks: Ack[]; logs: PlaybackLogEntry[] }>();
  let n = 0;
  const nextId = (prefix: string) => `${prefix}_bao_${process.pid}_${++n}`;

  beforeAll(async () => {
    t = await createTestApp({ clock, listen: true });
    hamletId = (await createAreaTree(t)).hamletA.id;
    mqttUrl = `mqtt://127.0.0.1:${t.app.broker.port}`;
    t.app.broker.on('message', (deviceId: string, channel: DeviceChannel, payload: Buffer) => {
      const entry = heard.get(deviceId);
      if (!entry) return;
      const json: unknown = JSON.parse(payload.toString('utf8'));
      if (channel === 'ack') entry.acks.push(ackSchema.parse(json));
      if (channel === 'log') entry.logs.push(logSchema.parse(json));
    });
  });
  afterAll(async () => {
    await t.close();
  });
  beforeEach(() => {
    heard.clear();
  });
  afterEach(async () => {
    await Promise.all(sims.splice(0).map((s) => s.close()));
  });

  async function credentials(name: string) {
    const created = await t.createDevice(hamletId, name);
    heard.set(created.id, { acks: [], logs: [] });
    return created;
  }

  async function device(faults: Partial<Faults> = {}): Promise<Sim> {
    const created = await credentials(`Cụm loa Thôn Đông – khẩn cấp ${sims.length + 1}`);
    const sim = new SimDevice({
      id: created.id,
      password: created.credentials.password,
      mqttUrl,
      clock,
      playbackTime: 'clock',
      reconnectPeriodMs: 50,
      // Placeholder media URLs: firmware-sim-download.test.ts covers the download itself.
      noDownload: true,
      faults,
    });
    sims.push(sim);
    const d: Sim = { id: created.id, sim, acks: [], logs: [] };
    sim.on('ack', (ack) => d.acks.push(ack));
    sim.on('log', (entry) => d.logs.push(entry));
    await sim.connect();
    await waitFor(() => t.app.broker.isReady(created.id), 'device ready');
    return d;
  }

  function send(d: { id: string }, command: object): void {
    expect(t.app.broker.publishCommand([d.id], Buffer.from(JSON.stringify(command)))).toEqual([d.id]);
  }

  /** A 30 s warning (the attention signal and the message, one file), as an emergency is sent: no startAt. */
  function play(
    params: {
      sessionId?: string;
      durationMs?: number;
      repeat?: number;
      repeatGapMs?: number;
      offsetMs?: number;
      startAt?: Date;
      stream?: boolean;
    } = {},
    priority: Priority = 'emergency',
  ) {
    const source = params.stream
      ? { kind: 'stream', url: 'https://radio.example.vn/vov1' }
      : {
          kind: 'media',
          url: 'https://loa.example.vn/downloads/canh-bao-bao-so-3.mp3?expires=4102444800&signature=dGVzdA',
          sha256: 'cd'.repeat(32),
          durationMs: params.durationMs ?? 30 * SECOND,
        };
    return {
      id: nextId('cmd'),
      type: 'play',
      issuedAt: clock.now().toISOString(),
      expiresAt: new Date(clock.now().getTime() + 60 * MINUTE).toISOString(),
      priority,
      params: {
        sessionId: params.sessionId ?? nextId('ses'),
        source,
        volume: 100,
        ...(params.offsetMs !== undefined ? { offsetMs: params.offsetMs } : {}),
        ...(params.startAt ? { startAt: params.startAt.toISOString() } : {}),
        ...(params.repeat !== undefined ? { repeat: params.repeat } : {}),
        ...(params.repeatGapMs !== undefined ? { repeatGapMs: params.repeatGapMs } : {}),
      },
    };
  }

  function stop(sessionId: string | undefined, priority: Priority) {
    const params = sessionId ? { sessionId } : {};
    return { id: nextId('cmd'), type: 'stop', issuedAt: clock.now().toISOString(), priority, params };
  }

  const label = (a: { status?: string; event?: string; reason?: string }) =>
    `${a.status ?? a.event}${a.reason ? `:${a.reason}` : ''}`;
  const statuses = (acks: Ack[], id: string) => acks.filter((a) => a.id === id).map(label);
  const events = (logs: PlaybackLogEntry[], commandId: string) =>
    logs.filter((e) => e.commandId === commandId).map(label);
  /** The acks of a command the server has heard, once there are `count` of them. */
  const serverAcks = (d: Sim, id: string, count: number) =>
    waitFor(() => {
      const got = statuses(heard.get(d.id)?.acks ?? [], id);
      return got.length >= count ? got : null;
    }, `${count} acks of ${id} at the server`);
  const serverEvents = (d: Sim, id: string, count: number) =>
    waitFor(() => {
      const got = events(heard.get(d.id)?.logs ?? [], id);
      return got.length >= count ? got : null;
    }, `${count} log entries of ${id} at the server`);
  /** Once a ping's ack is at the server, everything the device sent before it is there too (QoS 1, in order). */
  async function settle(d: Sim): Promise<void> {
    const ping = { id: nextId('cmd'), type: 'ping', issuedAt: clock.now().toISOString(), priority: 'normal' };
    send(d, { ...ping, params: {} });
    await serverAcks(d, ping.id, 2);
  }

  describe('repeats with gaps', () => {
    it('plays the warning n times with the gap between, from 0 on receipt, and logs finished once after the last', async () => {
      const d = await device();
      const warning = play({ repeat: 3, repeatGapMs: 20 * SECOND });
      send(d, warning);
      expect(await serverAcks(d, warning.id, 2)).toEqual(['received', 'done']);
      expect(await serverEvents(d, warning.id, 1)).toEqual(['started']);
      // No startAt: on air at once, from the very start (nobody may miss the attention signal).
      expect(d.sim.state.playing).toMatchObject({
        sessionId: warning.params.sessionId,
        commandId: warning.id,
        priority: 'emergency',
        positionMs: 0,
      });
      expect(d.sim.state.volume).toBe(100);
      expect(d.sim.playback).toMatchObject({ play: 1, plays: 3, gap: false, totalMs: 130 * SECOND });

      const at = () => {
        const p = d.sim.playback;
        return p && { positionMs: p.positionMs, play: p.play, gap: p.gap };
      };
      clock.advance(30 * SECOND);
      expect(at()).toEqual({ positionMs: 30 * SECOND, play: 1, gap: true });
      clock.advance(20 * SECOND);
      expect(at()).toEqual({ positionMs: 50 * SECOND, play: 2, gap: false });
      clock.advance(45 * SECOND);
      expect(at()).toEqual({ positionMs: 95 * SECOND, play: 2, gap: true });
      clock.advance(34 * SECOND);
      expect(at()).toEqual({ positionMs: 129 * SECOND, play: 3, gap: false });
      expect(d.sim.state.playing?.positionMs).toBe(129 * SECOND);
      // Nothing is logged between plays or during a gap: one session, one started, one finished.
      expect(events(d.logs, warning.id)).toEqual(['started']);

      clock.advance(1 * SECOND);
      expect(d.sim.state.playing).toBeNull();
      expect(events(d.logs, warning.id)).toEqual(['started', 'finished']);
      expect(await serverEvents(d, warning.id, 2)).toEqual(['started', 'finished']);
      clock.advance(10 * MINUTE);
      await settle(d);
      expect(events(heard.get(d.id)?.logs ?? [], warning.id)).toEqual(['started', 'finished']);
    });

    it('counts the gaps in the session length, in offsetMs and in a late join', async () => {
      expect(sessionLengthMs({ source: { durationMs: 30_000 }, repeat: 3, repeatGapMs: 20_000 })).toBe(
        130_000,
      );
      expect(sessionLengthMs({ source: { durationMs: 30_000 }, repeat: 3 })).toBe(90_000);
      expect(sessionLengthMs({ source: { durationMs: 30_000 }, repeatGapMs: 20_000 })).toBe(30_000);
      expect(sessionLengthMs({ source: {}, repeat: 3, repeatGapMs: 20_000 })).toBeUndefined();

      const d = await device();
      // Past durationMs × repeat (90 s) but before the end of the third play (130 s): still on air.
      const resumed = play({ repeat: 3, repeatGapMs: 20 * SECOND, offsetMs: 105 * SECOND });
      send(d, resumed);
      expect(await serverAcks(d, resumed.id, 2)).toEqual(['received', 'done']);
      expect(d.sim.playback).toMatchObject({ positionMs: 105 * SECOND, play: 3, gap: false });
      clock.advance(25 * SECOND - 1);
      expect(d.sim.state.playing?.commandId).toBe(resumed.id);
      clock.advance(1);
      expect(events(d.logs, resumed.id)).toEqual(['started', 'finished']);

      // Joining late (startAt a minute ago): 60 s into the session is 10 s into the second play.
      const late = play({
        repeat: 3,
        repeatGapMs: 20 * SECOND,
        startAt: new Date(clock.now().getTime() - MINUTE),
      });
      send(d, late);
      expect(await serverAcks(d, late.id, 2)).toEqual(['received', 'done']);
      expect(d.sim.playback).toMatchObject({ positionMs: MINUTE, play: 2, gap: false });

      // An offset inside a gap is silence until the next play begins.
      const inGap = play({ repeat: 2, repeatGapMs: 20 * SECOND, offsetMs: 40 * SECOND });
      send(d, inGap);
      expect(await serverAcks(d, inGap.id, 2)).toEqual(['received', 'done']);
      expect(events(d.logs, late.id)).toEqual(['started', 'interrupted:preempted']);
      expect(d.sim.playback).toMatchObject({ positionMs: 40 * SECOND, play: 1, gap: true });
      clock.advance(10 * SECOND);
      expect(d.sim.playback).toMatchObject({ play: 2, gap: false });

      // At or past the end, repeats and gaps included: nothing to play.
      const ended = play({ repeat: 3, repeatGapMs: 20 * SECOND, offsetMs: 130 * SECOND });
      send(d, ended);
      expect(await serverAcks(d, ended.id, 2)).toEqual(['received', 'rejected:offset_past_end']);
      expect(d.sim.state.playing?.commandId).toBe(inGap.id);
    });
  });

  describe('pre-emption', () => {
    it('interrupts a routine play, refuses routine commands meanwhile, and is ended by an emergency play or stop', async () => {
      const d = await device();
      const relay = play({ stream: true }, 'normal');
      send(d, relay);
      expect(await serverAcks(d, relay.id, 2)).toEqual(['received', 'done']);

      const warning = play({ repeat: 2, repeatGapMs: 10 * SECOND });
      send(d, warning);
      expect(await serverAcks(d, warning.id, 2)).toEqual(['received', 'done']);
      expect(await serverEvents(d, relay.id, 2)).toEqual(['started', 'interrupted:preempted']);
      expect(d.sim.playback).toMatchObject({ commandId: warning.id, positionMs: 0 });

      // Neither a routine play nor a routine stop ends the warning (protocol rule 4).
      const routine = play({}, 'priority');
      send(d, routine);
      expect(await serverAcks(d, routine.id, 2)).toEqual(['received', 'rejected:lower_priority']);
      const routineStop = stop(undefined, 'normal');
      send(d, routineStop);
      expect(await serverAcks(d, routineStop.id, 2)).toEqual(['received', 'rejected:lower_priority']);
      // 30 s of warning, 10 s of silence, 5 s into the second play.
      clock.advance(45 * SECOND);
      expect(d.sim.playback).toMatchObject({ commandId: warning.id, play: 2, gap: false });

      // An update of the warning, sent as an emergency play, replaces it.
      const update = play({ sessionId: nextId('ses') });
      send(d, update);
      expect(await serverAcks(d, update.id, 2)).toEqual(['received', 'done']);
      expect(await serverEvents(d, warning.id, 2)).toEqual(['started', 'interrupted:preempted']);

      // The emergency's cancel: a stop at emergency priority.
      const cancel = stop(update.params.sessionId, 'emergency');
      send(d, cancel);
      expect(await serverAcks(d, cancel.id, 2)).toEqual(['received', 'done']);
      expect(await serverEvents(d, update.id, 2)).toEqual(['started', 'interrupted:stopped']);
      expect(d.sim.state.playing).toBeNull();
    });
  });

  describe('retry faults', () => {
    it('drops only the first N acks, then answers a re-send of the same id with its last ack without playing twice', async () => {
      const d = await device({ dropAcks: { first: 2 } });
      const warning = play({ repeat: 2, repeatGapMs: 5 * SECOND });
      send(d, warning);
      // Both acks of the warning are lost; the device plays it all the same.
      await waitFor(() => d.sim.counters.droppedAcks === 2, 'two acks dropped');
      expect(events(d.logs, warning.id)).toEqual(['started']);
      await settle(d);
      expect(statuses(heard.get(d.id)?.acks ?? [], warning.id)).toEqual([]);
      expect(d.sim.counters.droppedAcks).toBe(2);

      clock.advance(10 * SECOND);
      // The server re-sends what it has no answer for, with the same id (and the repeats still due).
      send(d, { ...warning, params: { ...warning.params, repeat: 1 } });
      expect(await serverAcks(d, warning.id, 1)).toEqual(['done']);
      expect(d.sim.counters.duplicateCommands).toBe(1);
      // Not played twice: the same session plays on from where it was, with its own length.
      expect(d.sim.playback).toMatchObject({ commandId: warning.id, positionMs: 10 * SECOND, plays: 2 });
      expect(events(d.logs, warning.id)).toEqual(['started']);

      // Setting the fault again drops that many more; a later re-send is answered again.
      d.sim.setFaults({ dropAcks: { first: 1 } });
      send(d, warning);
      await waitFor(() => d.sim.counters.droppedAcks === 3, 'a third ack dropped');
      send(d, warning);
      expect(await serverAcks(d, warning.id, 2)).toEqual(['done', 'done']);
      clock.advance(55 * SECOND);
      expect(await serverEvents(d, warning.id, 2)).toEqual(['started', 'finished']);
      expect(() => d.sim.setFaults({ dropAcks: { first: -1 } })).toThrow(RangeError);
    });

    it('goes offline for a while on its clock, plays on and keeps its log meanwhile, and comes back by itself', async () => {
      const d = await device();
      const warning = play({ repeat: 2, repeatGapMs: 10 * SECOND });
      send(d, warning);
      expect(await serverAcks(d, warning.id, 2)).toEqual(['received', 'done']);

      d.sim.goOffline(5 * MINUTE);
      expect(d.sim.offline).toBe(true);
      expect(d.sim.connected).toBe(false);
      await waitFor(() => !t.app.broker.isOnline(d.id), 'the broker sees the device gone');
      // Nothing reaches an offline device.
      expect(t.app.broker.publishCommand([d.id], Buffer.from('{}'))).toEqual([]);

      // The warning ends during the outage: logged on the device, not heard by the server yet.
      clock.advance(70 * SECOND);
      expect(events(d.logs, warning.id)).toEqual(['started', 'finished']);
      clock.advance(5 * MINUTE - 70 * SECOND - 1);
      expect(d.sim.offline).toBe(true);
      expect(t.app.broker.isOnline(d.id)).toBe(false);
      expect(events(heard.get(d.id)?.logs ?? [], warning.id)).toEqual(['started']);

      clock.advance(1);
      expect(d.sim.offline).toBe(false);
      await waitFor(() => t.app.broker.isReady(d.id), 'device back');
      expect(await serverEvents(d, warning.id, 2)).toEqual(['started', 'finished']);
      // A re-send after the outage is a duplicate: answered, not played again.
      send(d, warning);
      expect(await serverAcks(d, warning.id, 3)).toEqual(['received', 'done', 'done']);
      expect(d.sim.state.playing).toBeNull();

      // connect() ends an outage early.
      d.sim.goOffline(10 * MINUTE);
      await waitFor(() => !t.app.broker.isOnline(d.id), 'offline again');
      await d.sim.connect();
      expect(d.sim.offline).toBe(false);
      await waitFor(() => t.app.broker.isReady(d.id), 'device back early');
      expect(() => d.sim.goOffline(-1)).toThrow(RangeError);
    });

    it('takes part of a fleet offline', async () => {
      const created = await Promise.all([
        credentials('Cụm loa Thôn Tây – khẩn cấp 1'),
        credentials('Cụm loa Thôn Tây – khẩn cấp 2'),
      ]);
      const fleet = new Fleet(
        created.map((c) => ({ id: c.id, ...c.credentials })),
        { mqttUrl, clock, playbackTime: 'clock', noDownload: true, reconnectPeriodMs: 50 },
      );
      sims.push(...fleet.devices);
      expect((await fleet.connectAll()).connected).toBe(2);
      const [first, second] = created.map((c) => c.id) as [string, string];
      await waitFor(() => t.app.broker.isReady(first) && t.app.broker.isReady(second), 'fleet ready');

      expect(fleet.goOffline(2 * MINUTE, (_device, index) => index === 0)).toBe(1);
      await waitFor(() => !t.app.broker.isOnline(first), 'first device offline');
      expect(t.app.broker.isReady(second)).toBe(true);
      clock.advance(2 * MINUTE);
      await waitFor(() => t.app.broker.isReady(first), 'first device back');
    });
  });
});
