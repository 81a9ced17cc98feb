/**
 * The whole slice end to end: the app listening on real ports, firmware-sim devices connected with the
 * credentials the API issued, and commands sent through the API reaching them, obeyed and acknowledged.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SimDevice } from '../firmware-sim/src/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';
import { approvedRelay } from './support/programmes.js';
import { waitFor } from './support/wait.js';

const SPEED = 100; // 30 s of audio plays in 300 ms
const media = (durationMs = 30_000) => ({
  kind: 'media',
  url: 'https://media.loa.example/tin-tuc/bản-tin-sáng.mp3',
  sha256: 'cd'.repeat(32),
  durationMs,
});

type Detail = {
  params: { sessionId?: string };
  counts: Record<string, number>;
  devices: { deviceId: string; status: string; reason?: string }[];
};

describe('devices obey the API', () => {
  let t: TestApp;
  let clock: ManualClock;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let mqttUrl: string;
  const sims: SimDevice[] = [];

  beforeEach(async () => {
    // The server's clock starts at the real time: the simulated devices judge expiresAt by their own.
    clock = new ManualClock(new Date().toISOString());
    t = await createTestApp({ clock, listen: true });
    tree = await createAreaTree(t);
    mqttUrl = `mqtt://127.0.0.1:${t.app.broker.port}`;
  });
  afterEach(async () => {
    await Promise.all(sims.splice(0).map((s) => s.close()));
    await t.close();
  });

  async function device(
    areaId: string,
    name: string,
    faults: ConstructorParameters<typeof SimDevice>[0]['faults'] = {},
  ) {
    const created = await t.createDevice(areaId, name);
    const sim = new SimDevice({
      // Placeholder media URLs: this file tests the protocol; firmware-sim-download.test.ts downloads.
      noDownload: true,
      id: created.id,
      password: created.credentials.password,
      mqttUrl,
      speed: SPEED,
      reconnectPeriodMs: 100,
      faults,
    });
    sims.push(sim);
    await sim.connect();
    await waitFor(() => t.app.broker.isReady(created.id), `${name} ready`);
    return { id: created.id, sim };
  }

  const send = async (body: Record<string, unknown>, token = t.adminToken) => {
    const res = await t.request('POST', '/api/v1/commands', { token, body });
    expect(res.statusCode, res.body).toBe(202);
    return res.json<{ id: string; targets: number; sent: number }>();
  };
  const detail = async (id: string) =>
    (await t.request('GET', `/api/v1/commands/${id}`, { token: t.adminToken })).json<Detail>();
  const settled = (id: string, expected: Record<string, number>) =>
    waitFor(
      async () => {
        const d = await detail(id);
        return Object.entries(expected).every(([status, n]) => d.counts[status] === n) ? d : null;
      },
      `command ${id} to reach ${JSON.stringify(expected)}`,
    );
  const deviceView = async (id: string) =>
    (await t.request('GET', `/api/v1/devices/${id}`, { token: t.adminToken })).json<{
      online: boolean;
      state: {
        volume: number;
        firmware: string;
        playing: { sessionId: string; priority: string } | null;
      } | null;
    }>();

  it('plays, changes volume and stops on every loudspeaker of a commune, and the API shows each ack', async () => {
    const a = await device(tree.hamletA.id, 'Cụm loa thôn Đông 1');
    const b = await device(tree.hamletA.id, 'Cụm loa thôn Đông 2');
    const station = await device(tree.communeA.id, 'Đài xã Hải Phú');
    const elsewhere = await device(tree.hamletB.id, 'Cụm loa thôn Tây');

    const broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    const relay = await approvedRelay(t, broadcaster, tree.communeA.id);
    const play = await send(
      {
        type: 'play',
        params: { source: { kind: 'programme', programmeId: relay.id } },
        targets: { areaIds: [tree.communeA.id] },
      },
      broadcaster,
    );
    expect(play).toMatchObject({ targets: 3, sent: 3 });
    const played = await settled(play.id, { done: 3 });
    const sessionId = played.params.sessionId!;
    for (const d of [a, b, station]) expect(d.sim.state.playing?.sessionId).toBe(sessionId);
    expect(elsewhere.sim.state.playing).toBeNull();
    await waitFor(
      async () => (await deviceView(a.id)).state?.playing?.sessionId === sessionId,
      'state reported',
    );

    const volume = await send(
      { type: 'volume', params: { level: 35 }, targets: { deviceIds: [a.id, b.id] } },
      broadcaster,
    );
    await settled(volume.id, { done: 2 });
    expect(a.sim.state.volume).toBe(35);
    await waitFor(async () => (await deviceView(b.id)).state?.volume === 35, 'volume reported');

    const stop = await send(
      { type: 'stop', params: { sessionId }, targets: { areaIds: [tree.communeA.id] } },
      broadcaster,
    );
    await settled(stop.id, { done: 3 });
    for (const d of [a, b, station]) expect(d.sim.state.playing).toBeNull();
    await waitFor(async () => (await deviceView(station.id)).state?.playing === null, 'stop reported');
  });

  it('lets an emergency pre-empt a normal bulletin, and a normal one is refused during the emergency', async () => {
    const d = await device(tree.hamletA.id, 'Cụm loa chợ');
    const normal = await send({
      type: 'play',
      params: { source: media(600_000) },
      targets: { deviceIds: [d.id] },
    });
    await settled(normal.id, { done: 1 });

    const district = await t.createUser('district_operator', tree.district.id);
    const emergency = await send(
      {
        type: 'play',
        priority: 'emergency',
        params: { source: media(600_000) },
        targets: { areaIds: [tree.district.id] },
      },
      district,
    );
    await settled(emergency.id, { done: 1 });
    expect(d.sim.state.playing?.priority).toBe('emergency');

    const late = await send({ type: 'play', params: { source: media() }, targets: { deviceIds: [d.id] } });
    const refused = await settled(late.id, { rejected: 1 });
    expect(refused.devices[0]).toMatchObject({ status: 'rejected', reason: 'lower_priority' });
  });

  it('reports failed playback and a speaker fault with the device’s reason', async () => {
    const broken = await device(tree.hamletA.id, 'Cụm loa hỏng', { failPlayback: true });
    const mute = await device(tree.hamletA.id, 'Cụm loa mất loa', { speakerFault: true });
    const ok = await device(tree.hamletA.id, 'Cụm loa tốt');
    const play = await send({
      type: 'play',
      params: { source: media() },
      targets: { areaIds: [tree.hamletA.id] },
    });
    const result = await settled(play.id, { done: 1, failed: 2 });
    const byId = new Map(result.devices.map((x) => [x.deviceId, x]));
    expect(byId.get(broken.id)).toMatchObject({ status: 'failed', reason: 'download_failed' });
    expect(byId.get(mute.id)).toMatchObject({ status: 'failed', reason: 'speaker_fault' });
    expect(byId.get(ok.id)?.status).toBe('done');
  });

  it('shows a device that never acknowledges as expired once the command runs out', async () => {
    const silent = await device(tree.hamletA.id, 'Cụm loa im lặng', { dropAcks: true });
    const cmd = await send({
      type: 'volume',
      params: { level: 10 },
      targets: { deviceIds: [silent.id] },
      expiresInS: 60,
    });
    // The device applied it but said nothing: the server cannot know, and says so once it expires.
    await waitFor(() => silent.sim.state.volume === 10, 'volume applied');
    clock.advance(59_000);
    expect((await detail(cmd.id)).counts.pending).toBe(1);
    clock.advance(2_000);
    expect((await detail(cmd.id)).counts).toMatchObject({ pending: 0, expired: 1 });
  });

  it('delivers a command to a loudspeaker whose link was down, when it comes back', async () => {
    const d = await device(tree.hamletA.id, 'Cụm loa vùng núi');
    d.sim.disconnect();
    await waitFor(async () => !(await deviceView(d.id)).online, 'offline');

    const play = await send({
      type: 'play',
      params: { source: media(600_000) },
      targets: { deviceIds: [d.id] },
    });
    expect(play.sent).toBe(0);
    expect((await detail(play.id)).counts.pending).toBe(1);

    await d.sim.reconnect();
    await settled(play.id, { done: 1 });
    expect(d.sim.state.playing).not.toBeNull();
    expect((await deviceView(d.id)).online).toBe(true);
  });

  it('connects over WebSocket too', async () => {
    const created = await t.createDevice(tree.hamletA.id, 'Cụm loa WebSocket');
    const address = t.app.server.address();
    const port = typeof address === 'object' && address ? address.port : 0;
    const sim = new SimDevice({
      noDownload: true,
      id: created.id,
      password: created.credentials.password,
      mqttUrl: `ws://127.0.0.1:${port}/mqtt`,
      speed: SPEED,
    });
    sims.push(sim);
    await sim.connect();
    await waitFor(() => t.app.broker.isReady(created.id), 'ready over websocket');
    const cmd = await send({ type: 'volume', params: { level: 90 }, targets: { deviceIds: [created.id] } });
    await settled(cmd.id, { done: 1 });
  });
});
