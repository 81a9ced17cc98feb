/**
 * Issue 7 end to end: a broadcaster uploads a recording and builds a bulletin around it, an approver signs it
 * off, a play command names the programme, and firmware-sim devices on the app's broker download the
 * rendition from the signed URL, verify its SHA-256 and play it. A rendition altered on disk after approval
 * is refused by every device with `checksum_mismatch` and never played.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SimDevice, type DownloadEvent } from '../firmware-sim/src/index.js';
import type { PlaybackLogEntry } from '../src/protocol/index.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { makeSine } from './support/audio.js';
import { waitFor } from './support/wait.js';
import { upload } from './support/media.js';

type Programme = { id: string; current: { id: string; sha256: string; durationMs: number } };
type Detail = {
  params: { source: { kind: string; url: string; sha256: string; durationMs: number } };
  counts: Record<string, number>;
  devices: { deviceId: string; status: string; reason?: string }[];
};

describe('an approved programme reaches the loudspeakers', () => {
  let fixtures: string;
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let broadcaster: string;
  let approver: string;
  const sims: { id: string; sim: SimDevice; downloads: DownloadEvent[]; logs: PlaybackLogEntry[] }[] = [];

  beforeAll(() => {
    fixtures = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-programme-play-'));
  });
  afterAll(() => fs.rmSync(fixtures, { recursive: true, force: true }));
  beforeEach(async () => {
    t = await createTestApp({ listen: true });
    tree = await createAreaTree(t);
    broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    approver = await t.createUser('approver', tree.communeA.id);
  });
  afterEach(async () => {
    await Promise.all(sims.splice(0).map(({ sim }) => sim.close()));
    await t.close();
  });

  async function devices(count: number) {
    const mqttUrl = `mqtt://127.0.0.1:${t.app.broker.port}`;
    const started = [];
    for (let i = 1; i <= count; i++) {
      const created = await t.createDevice(tree.hamletA.id, `Cụm loa Thôn Đông ${sims.length + 1}`);
      const sim = new SimDevice({
        id: created.id,
        password: created.credentials.password,
        mqttUrl,
        // A few seconds of bulletin play in a few milliseconds; downloads run in real time.
        speed: 1_000,
        reconnectPeriodMs: 100,
      });
      const downloads: DownloadEvent[] = [];
      const logs: PlaybackLogEntry[] = [];
      sim.on('download', (event) => downloads.push(event));
      sim.on('log', (entry) => logs.push(entry));
      const entry = { id: created.id, sim, downloads, logs };
      sims.push(entry);
      started.push(entry);
      await sim.connect();
      await waitFor(() => t.app.broker.isReady(created.id), `device ${created.id} ready`);
    }
    return started;
  }

  /** Upload, bulletin, submit, approve by someone else: what a commune does before anything airs. */
  async function approvedBulletin(): Promise<Programme> {
    const recording = await makeSine(fixtures, { seconds: 2, format: 'mp3', modulated: true, lufs: -23 });
    const uploaded = await upload(
      t,
      broadcaster,
      { bytes: fs.readFileSync(recording), filename: 'lịch tiêm phòng.mp3', contentType: 'audio/mpeg' },
      { title: 'Lịch tiêm phòng dại – bản ghi' },
    );
    expect(uploaded.statusCode, uploaded.body).toBe(201);
    const mediaId = uploaded.json<{ id: string }>().id;

    const created = await t.request('POST', '/api/v1/programmes', {
      token: broadcaster,
      body: {
        title: 'Thông báo lịch tiêm phòng dại – Thôn Đông',
        areaId: tree.communeA.id,
        category: 'health',
        content: { segments: [{ silenceMs: 300 }, { mediaId }, { silenceMs: 300 }] },
      },
    });
    expect(created.statusCode, created.body).toBe(201);
    const programme = created.json<Programme>();
    for (const [step, token] of [
      ['submit', broadcaster],
      ['approve', approver],
    ] as const) {
      const res = await t.request('POST', `/api/v1/programmes/${programme.id}/${step}`, { token, body: {} });
      expect(res.statusCode, `${step}: ${res.body}`).toBe(200);
    }
    return programme;
  }

  async function play(programmeId: string): Promise<string> {
    const res = await t.request('POST', '/api/v1/commands', {
      token: broadcaster,
      body: {
        type: 'play',
        params: { source: { kind: 'programme', programmeId } },
        targets: { areaIds: [tree.hamletA.id] },
      },
    });
    expect(res.statusCode, res.body).toBe(202);
    return res.json<{ id: string }>().id;
  }

  const settled = (id: string, expected: Record<string, number>) =>
    waitFor(
      async () => {
        const d = (await t.request('GET', `/api/v1/commands/${id}`, { token: broadcaster })).json<Detail>();
        return Object.entries(expected).every(([status, n]) => d.counts[status] === n) ? d : null;
      },
      `command ${id} to reach ${JSON.stringify(expected)}`,
      20_000,
    );

  it('devices download the rendition from the signed URL, verify it and ack done', async () => {
    const programme = await approvedBulletin();
    const fleet = await devices(3);
    const id = await play(programme.id);
    const detail = await settled(id, { done: 3 });

    const source = detail.params.source;
    expect(source).toMatchObject({ kind: 'media', sha256: programme.current.sha256 });
    expect(new URL(source.url).pathname).toBe(`/downloads/${programme.current.sha256}.mp3`);
    const rendition = fs.readFileSync(t.app.services.media.store.pathOf(programme.current.sha256));
    for (const { downloads } of fleet) {
      expect(downloads).toEqual([
        { commandId: id, sha256: programme.current.sha256, bytes: rendition.length, fromCache: false },
      ]);
    }
    // The bulletin plays its whole length (in simulated time), then each device logs it finished.
    await waitFor(() => fleet.every(({ logs }) => logs.length === 2), 'bulletin finished everywhere');
    for (const { logs } of fleet) {
      expect(logs.map((l) => [l.event, l.commandId])).toEqual([
        ['started', id],
        ['finished', id],
      ]);
    }
  });

  it('a rendition altered on disk is refused by every device with checksum_mismatch', async () => {
    const programme = await approvedBulletin();
    const file = t.app.services.media.store.pathOf(programme.current.sha256);
    // Same length, one byte changed deep inside the audio: what bit rot or a tampered disk does.
    const bytes = fs.readFileSync(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    fs.chmodSync(file, 0o644);
    fs.writeFileSync(file, bytes);
    expect(createHash('sha256').update(bytes).digest('hex')).not.toBe(programme.current.sha256);

    const fleet = await devices(2);
    const id = await play(programme.id);
    const detail = await settled(id, { failed: 2 });
    expect(detail.devices.map((d) => d.reason)).toEqual(['checksum_mismatch', 'checksum_mismatch']);
    for (const { sim, downloads, logs } of fleet) {
      expect(sim.state.playing).toBeNull();
      expect(downloads).toEqual([expect.objectContaining({ reason: 'checksum_mismatch', fromCache: false })]);
      // Never played: the only log entry is the failure.
      expect(logs).toEqual([expect.objectContaining({ event: 'failed', reason: 'checksum_mismatch' })]);
    }
  });
});
