/**
 * firmware-sim and scheduled plays (protocol.md §3.1 `startAt`, §4 scheduled plays), on the app's embedded
 * broker: a play sent ahead of its slot is fetched at once and goes on air at its `startAt`; one received
 * late joins where the broadcast is; a resume (same session, new command id) plays like any other play;
 * a stop cancels a waiting play; log entries made offline reach the server on reconnect, oldest first.
 *
 * The commands are published through the broker as the server would (the dispatcher is not involved),
 * and the device's wall clock is a ManualClock shared with the app: moving it past a `startAt` is what
 * starts a waiting play, so nothing here waits for real time or asserts on timings.
 */
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, type DownloadEvent } from '../firmware-sim/src/device.js';
import type { Ack, PlaybackLogEntry, Priority } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { waitFor } from './support/wait.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');
const MINUTE = 60_000;

/** Serves files from memory, counting requests per path; a held file is answered on release(). */
class FileServer {
  private readonly files = new Map<string, { body: Buffer; hold: boolean }>();
  private readonly held: (() => void)[] = [];
  readonly requests: string[] = [];
  private readonly server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    this.requests.push(path);
    const file = this.files.get(path);
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    const send = () =>
      res
        .writeHead(200, { 'content-length': String(file.body.length), etag: `"${sha(file.body)}"` })
        .end(file.body);
    if (file.hold) this.held.push(send);
    else send();
  });
  base = '';

  async start(): Promise<void> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  release(): void {
    for (const send of this.held.splice(0)) send();
  }

  async close(): Promise<void> {
    this.release();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  add(name: string, body: Buffer, hold = false): string {
    this.files.set(`/downloads/${name}`, { body, hold });
    return `${this.base}/downloads/${name}?expires=4102444800&signature=dGVzdA`;
  }
}

interface Sim {
  id: string;
  sim: SimDevice;
  acks: Ack[];
  logs: PlaybackLogEntry[];
  downloads: DownloadEvent[];
}

describe('firmware-sim: scheduled plays', () => {
  const files = new FileServer();
  const clock = new ManualClock('2026-12-01T05:58:00+07:00');
  let t: TestApp;
  let hamletId: string;
  let mqttUrl: string;
  const sims: SimDevice[] = [];
  let n = 0;
  const nextId = (prefix: string) => `${prefix}_lich_${process.pid}_${++n}`;

  beforeAll(async () => {
    await files.start();
    t = await createTestApp({ clock, listen: true });
    hamletId = (await createAreaTree(t)).hamletA.id;
    mqttUrl = `mqtt://127.0.0.1:${t.app.broker.port}`;
  });
  afterAll(async () => {
    await t.close();
    await files.close();
  });
  afterEach(async () => {
    await Promise.all(sims.splice(0).map((s) => s.close()));
  });

  async function device(options: { noDownload?: boolean } = {}): Promise<Sim> {
    const created = await t.createDevice(hamletId, `Cụm loa Thôn Đông – lịch ${sims.length + 1}`);
    const sim = new SimDevice({
      id: created.id,
      password: created.credentials.password,
      mqttUrl,
      clock,
      // 10 minutes of audio last 6 real seconds: still playing whenever a test looks.
      speed: 100,
      reconnectPeriodMs: 100,
      noDownload: options.noDownload ?? true,
    });
    sims.push(sim);
    const d: Sim = { id: created.id, sim, acks: [], logs: [], downloads: [] };
    sim.on('ack', (ack) => d.acks.push(ack));
    sim.on('log', (entry) => d.logs.push(entry));
    sim.on('download', (event) => d.downloads.push(event));
    await sim.connect();
    await waitFor(() => t.app.broker.isReady(created.id), 'device ready');
    return d;
  }

  /** Publishes a command to the device through the broker, as the server does. */
  function send(d: Sim, command: object): void {
    expect(t.app.broker.publishCommand([d.id], Buffer.from(JSON.stringify(command)))).toEqual([d.id]);
  }

  function play(
    params: {
      sessionId?: string;
      url?: string;
      sha256?: string;
      durationMs?: number;
      stream?: boolean;
      offsetMs?: number;
      startAt?: Date;
      repeat?: number;
    },
    priority: Priority = 'normal',
    id = nextId('cmd'),
  ) {
    const source = params.stream
      ? { kind: 'stream', url: 'https://radio.example.vn/vov1' }
      : {
          kind: 'media',
          url: params.url ?? 'https://media.example.vn/ban-tin-sang.mp3',
          sha256: params.sha256 ?? 'ab'.repeat(32),
          durationMs: params.durationMs ?? 600_000,
        };
    return {
      id,
      type: 'play',
      issuedAt: clock.now().toISOString(),
      expiresAt: new Date(clock.now().getTime() + 30 * MINUTE).toISOString(),
      priority,
      params: {
        sessionId: params.sessionId ?? nextId('ses'),
        source,
        ...(params.offsetMs !== undefined ? { offsetMs: params.offsetMs } : {}),
        ...(params.startAt ? { startAt: params.startAt.toISOString() } : {}),
        ...(params.repeat ? { repeat: params.repeat } : {}),
      },
    };
  }

  function stop(sessionId: string | undefined, priority: Priority = 'normal') {
    return {
      id: nextId('cmd'),
      type: 'stop',
      issuedAt: clock.now().toISOString(),
      priority,
      params: sessionId ? { sessionId } : {},
    };
  }

  const statuses = (d: Sim, id: string) =>
    d.acks.filter((a) => a.id === id).map((a) => (a.reason ? `${a.status}:${a.reason}` : a.status));
  const final = (d: Sim, id: string) =>
    waitFor(() => (statuses(d, id).length >= 2 ? statuses(d, id) : null), `final ack of ${id}`);
  const events = (d: Sim) => d.logs.map((e) => `${e.event} ${e.commandId}${e.reason ? ` ${e.reason}` : ''}`);
  const inFuture = (ms: number) => new Date(clock.now().getTime() + ms);
  /** A command that every device answers at once: once its ack is in, all before it were handled. */
  async function settle(d: Sim): Promise<void> {
    const ping = { id: nextId('cmd'), type: 'ping', issuedAt: clock.now().toISOString(), priority: 'normal' };
    send(d, { ...ping, params: {} });
    await final(d, ping.id);
  }

  it('fetches a play with a future startAt at once, keeps what plays on air, and starts it at startAt', async () => {
    const d = await device({ noDownload: false });
    const relay = play({ stream: true });
    send(d, relay);
    expect(await final(d, relay.id)).toEqual(['received', 'done']);

    const body = randomBytes(64 * 1024);
    const url = files.add('ban-tin-sang-thon-dong.mp3', body);
    const startAt = inFuture(MINUTE);
    const bulletin = play({ url, sha256: sha(body), startAt });
    send(d, bulletin);
    // The file is fetched now, a minute ahead, and verified; the relay goes on meanwhile.
    await waitFor(() => d.downloads.length === 1, 'download');
    expect(d.downloads[0]).toMatchObject({ commandId: bulletin.id, bytes: body.length, fromCache: false });
    await settle(d);
    expect(statuses(d, bulletin.id)).toEqual(['received']);
    expect(d.sim.state.playing).toMatchObject({ commandId: relay.id });

    clock.advance(MINUTE - 1);
    await settle(d);
    expect(statuses(d, bulletin.id)).toEqual(['received']);

    clock.advance(1);
    expect(await final(d, bulletin.id)).toEqual(['received', 'done']);
    expect(d.sim.state.playing).toMatchObject({ commandId: bulletin.id, startedAt: startAt.toISOString() });
    expect(d.sim.state.playing!.positionMs).toBeLessThan(600_000);
    expect(events(d)).toEqual([
      `started ${relay.id}`,
      `interrupted ${relay.id} preempted`,
      `started ${bulletin.id}`,
    ]);
    expect(d.logs.at(-1)!.at).toBe(startAt.toISOString());
    expect(files.requests.filter((p) => p.endsWith('ban-tin-sang-thon-dong.mp3'))).toHaveLength(1);
  });

  it('starts a play whose download outlasts its startAt once verified, where the broadcast then is', async () => {
    const d = await device({ noDownload: false });
    const body = randomBytes(32 * 1024);
    const url = files.add('thong-bao-tiem-phong-dai.mp3', body, true);
    const bulletin = play({ url, sha256: sha(body), startAt: inFuture(MINUTE) }, 'priority');
    send(d, bulletin);
    await waitFor(() => files.requests.some((p) => p.endsWith('thong-bao-tiem-phong-dai.mp3')), 'request');
    clock.advance(MINUTE + 15_000);
    await settle(d);
    expect(statuses(d, bulletin.id)).toEqual(['received']);
    // Due but still downloading, it counts as what plays: a routine play is refused meanwhile.
    const routine = play({ stream: true }, 'normal');
    send(d, routine);
    expect(await final(d, routine.id)).toEqual(['received', 'rejected:lower_priority']);
    files.release();
    expect(await final(d, bulletin.id)).toEqual(['received', 'done']);
    expect(d.sim.state.playing).toMatchObject({ commandId: bulletin.id });
    expect(d.sim.state.playing!.positionMs).toBeGreaterThanOrEqual(15_000);
  });

  it('joins a play received after its startAt where the broadcast is, and refuses one whose content has ended', async () => {
    const d = await device();
    // Sent 90 s late (a server restart) with the offset it had at startAt: it joins at 30 + 90 s.
    const late = play({ startAt: inFuture(-90_000), offsetMs: 30_000 });
    send(d, late);
    expect(await final(d, late.id)).toEqual(['received', 'done']);
    expect(d.sim.state.playing!.positionMs).toBeGreaterThanOrEqual(120_000);
    expect(d.sim.state.playing!.positionMs).toBeLessThan(600_000);

    // Repeats count: 700 s into two rounds of 600 s is the second round.
    const repeated = play({ startAt: inFuture(-700_000), repeat: 2 });
    send(d, repeated);
    expect(await final(d, repeated.id)).toEqual(['received', 'done']);
    expect(d.sim.state.playing!.positionMs).toBeGreaterThanOrEqual(700_000);

    const ended = play({ startAt: inFuture(-700_000) }, 'emergency');
    send(d, ended);
    expect(await final(d, ended.id)).toEqual(['received', 'rejected:offset_past_end']);
    expect(d.sim.state.playing).toMatchObject({ commandId: repeated.id });
    expect(d.logs.map((e) => e.event)).toEqual(['started', 'interrupted', 'started']);
  });

  it('does not resume on its own after pre-emption; a resume with the same session and a new command id plays from its offset', async () => {
    const d = await device();
    const sessionId = nextId('ses');
    const scheduled = play({ sessionId, startAt: clock.now() });
    send(d, scheduled);
    expect(await final(d, scheduled.id)).toEqual(['received', 'done']);

    const warning = play({ stream: true }, 'emergency');
    send(d, warning);
    expect(await final(d, warning.id)).toEqual(['received', 'done']);
    const end = stop(warning.params.sessionId, 'emergency');
    send(d, end);
    expect(await final(d, end.id)).toEqual(['received', 'done']);
    await settle(d);
    // The device stays silent: resuming is the server's decision.
    expect(d.sim.state.playing).toBeNull();

    const resume = play({ sessionId, offsetMs: 200_000, startAt: clock.now() }, 'normal');
    send(d, resume);
    expect(await final(d, resume.id)).toEqual(['received', 'done']);
    expect(d.sim.state.playing).toMatchObject({ sessionId, commandId: resume.id });
    expect(d.sim.state.playing!.positionMs).toBeGreaterThanOrEqual(200_000);
    expect(d.logs.map((e) => [e.seq, e.event, e.sessionId, e.commandId, e.reason])).toEqual([
      [1, 'started', sessionId, scheduled.id, undefined],
      [2, 'interrupted', sessionId, scheduled.id, 'preempted'],
      [3, 'started', warning.params.sessionId, warning.id, undefined],
      [4, 'interrupted', warning.params.sessionId, warning.id, 'stopped'],
      [5, 'started', sessionId, resume.id, undefined],
    ]);
  });

  it('treats a waiting play as arriving at its startAt: a lower play meanwhile is pre-empted then, a higher one keeps the air', async () => {
    const d = await device();
    const startAt = inFuture(MINUTE);
    const bulletin = play({ startAt }, 'priority');
    send(d, bulletin);
    // A routine play that begins during the wait is not refused: it airs until the bulletin's start.
    const routine = play({ durationMs: 600_000 });
    send(d, routine);
    expect(await final(d, routine.id)).toEqual(['received', 'done']);
    clock.advance(MINUTE);
    expect(await final(d, bulletin.id)).toEqual(['received', 'done']);
    expect(events(d)).toEqual([
      `started ${routine.id}`,
      `interrupted ${routine.id} preempted`,
      `started ${bulletin.id}`,
    ]);

    // Two plays sent ahead, back to back (an appended schedule): both air, each at its own start.
    const first = play({ startAt: inFuture(MINUTE), durationMs: 30_000 }, 'priority');
    const second = play({ startAt: inFuture(MINUTE + 30_000) }, 'priority');
    send(d, first);
    send(d, second);
    await settle(d);
    clock.advance(MINUTE);
    expect(await final(d, first.id)).toEqual(['received', 'done']);
    clock.advance(30_000);
    expect(await final(d, second.id)).toEqual(['received', 'done']);
    expect(d.sim.state.playing).toMatchObject({ commandId: second.id });

    // An emergency still on air at a waiting play's start keeps it; the play is refused then.
    const later = play({ startAt: inFuture(MINUTE) }, 'priority');
    send(d, later);
    const emergency = play({ stream: true }, 'emergency');
    send(d, emergency);
    expect(await final(d, emergency.id)).toEqual(['received', 'done']);
    clock.advance(MINUTE);
    expect(await final(d, later.id)).toEqual(['received', 'rejected:lower_priority']);
    expect(d.sim.state.playing).toMatchObject({ commandId: emergency.id });
  });

  it('cancels a waiting play on a stop of at least its priority, and only then', async () => {
    const d = await device();
    const bulletin = play({ startAt: inFuture(MINUTE) }, 'priority');
    send(d, bulletin);
    const routine = stop(undefined, 'normal');
    send(d, routine);
    expect(await final(d, routine.id)).toEqual(['received', 'rejected:lower_priority']);

    const authorised = stop(bulletin.params.sessionId, 'priority');
    send(d, authorised);
    expect(await final(d, authorised.id)).toEqual(['received', 'done']);
    expect(await final(d, bulletin.id)).toEqual(['received', 'failed:stopped']);
    expect(events(d)).toEqual([`interrupted ${bulletin.id} stopped`]);
    clock.advance(MINUTE);
    await settle(d);
    expect(d.sim.state.playing).toBeNull();

    // A stop without a session ends the wait too.
    const next = play({ startAt: inFuture(MINUTE) });
    send(d, next);
    const all = stop(undefined);
    send(d, all);
    expect(await final(d, next.id)).toEqual(['received', 'failed:stopped']);
    clock.advance(MINUTE);
    await settle(d);
    expect(d.sim.state.playing).toBeNull();
  });

  it('keeps log entries made offline, a scheduled start included, and delivers them on reconnect, oldest first', async () => {
    const d = await device();
    const morning = play({ durationMs: 600_000 });
    send(d, morning);
    await final(d, morning.id);
    const startAt = inFuture(MINUTE);
    // 20 s of audio: 200 real ms at speed 100.
    const bulletin = play({ startAt, durationMs: 20_000 });
    send(d, bulletin);
    await settle(d);

    d.sim.disconnect();
    await waitFor(() => !t.app.broker.isOnline(d.id), 'device offline');
    // The link is down at the slot: the device starts on its own clock, and finishes, offline.
    clock.advance(MINUTE);
    await waitFor(
      () => d.logs.some((e) => e.commandId === bulletin.id && e.event === 'finished'),
      'bulletin finished',
    );
    const stored = () =>
      t.query(
        `SELECT seq, command_id AS commandId, event, reason FROM playback_events
         WHERE device_id = '${d.id}' ORDER BY id`,
      ) as { seq: number; commandId: string; event: string; reason: string | null }[];
    expect(stored()).toEqual([{ seq: 1, commandId: morning.id, event: 'started', reason: null }]);

    await d.sim.reconnect();
    await waitFor(() => stored().length === 4, 'offline entries stored');
    expect(stored()).toEqual([
      { seq: 1, commandId: morning.id, event: 'started', reason: null },
      { seq: 2, commandId: morning.id, event: 'interrupted', reason: 'preempted' },
      { seq: 3, commandId: bulletin.id, event: 'started', reason: null },
      { seq: 4, commandId: bulletin.id, event: 'finished', reason: null },
    ]);
    expect(d.sim.counters.droppedOutbox).toBe(0);
  });
});
