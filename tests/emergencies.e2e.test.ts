/**
 * Emergencies end to end (issue 9): the real server process on its own SQLite file and embedded broker,
 * firmware-sim loudspeakers over MQTT that download the rendered warning from the signed link and play it
 * in real time, and the HTTP API as an operator's screen uses it. Each scenario has a commune of its own,
 * so an emergency sent in one never reaches the devices of another.
 *
 * Nothing asserts a duration: every wait is for a state (a device's log, a count in
 * GET /api/v1/emergencies/:id). Two things can only be seen after real time has passed: a device that comes
 * back after an expiry (the shortest expiry the API takes is 60 s), and the `partial` outcome of an
 * interrupted scheduled occurrence (decided a minute after its slot closes, docs/schedules.md). Both are
 * started early in the file and checked by its last two tests, so the minute passes while the other
 * scenarios run instead of being waited for on its own.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, type CommandEvent } from '../firmware-sim/src/index.js';
import { derivedId } from '../src/lib/ids.js';
import { localDateTime } from '../src/modules/schedules/timing.js';
import type { PlaybackLogEntry } from '../src/protocol/index.js';
import { ApiClient, serverOnDisk, type ServerOnDisk } from './support/server-api.js';
import { openEventStream } from './support/sse.js';
import { waitFor } from './support/wait.js';

type Counts = Record<
  'queued' | 'sent' | 'received' | 'playing' | 'played' | 'stopped' | 'failed' | 'undelivered',
  number
>;

/** What the progress stream's snapshot and progress events carry. */
interface StreamData {
  emergencyId: string;
  status: string;
  targetCount: number;
  counts: Counts;
  reached: number;
  percent: number;
  devices?: { deviceId: string; status: string; at: string }[];
}

interface EmergencyView {
  id: string;
  title: string;
  text: string | null;
  exercise: boolean;
  label: string;
  status: 'active' | 'expired' | 'cancelled';
  revision: number;
  /** One play of the rendered file (attention signal and message). */
  durationMs: number;
  targetCount: number;
  commandId: string;
  expiresAt: string;
  counts: Counts;
  reached: number;
  percent: number;
}

interface EmergencyDetail extends EmergencyView {
  notReached: { deviceId: string; status: string; online: boolean; lastSeenAt: string | null }[];
  cancel: { commandId: string; reason: string | null; counts: Record<string, number> } | null;
}

interface RecordView {
  sessionId: string;
  commandId: string;
  device: { id: string; name: string };
  scheduleId: string | null;
  emergency: { id: string; title: string | null; exercise: boolean } | null;
  joinedAtMs: number | null;
  interruptions: number;
  outcome: string;
  reason: string | null;
}

interface CommandDetail {
  devices: { deviceId: string; status: string }[];
}

interface PlayCommand {
  id: string;
  type: 'play';
  priority: string;
  params: {
    sessionId: string;
    offsetMs?: number;
    startAt?: string;
    repeat?: number;
    source: { kind: string; sha256?: string };
  };
}

/** One simulated loudspeaker and everything it did. */
interface Loudspeaker {
  id: string;
  name: string;
  password: string;
  sim: SimDevice;
  /** Commands it took on (a re-sent duplicate is answered, not listed: see `sim.counters`). */
  commands: CommandEvent[];
  logs: PlaybackLogEntry[];
}

const PROGRAMME_TITLE = 'Tiếp sóng Đài Tiếng nói Việt Nam – Thời sự trưa, Thôn Đông';

describe('emergencies end to end, with the server process and simulated loudspeakers', () => {
  let server: ServerOnDisk;
  let admin: ApiClient;
  /** District staff: who sends warnings (no approval step). */
  let operator: ApiClient;
  const communes = new Map<string, { id: string; hamlets: Map<string, string> }>();
  const speakers = new Map<string, Loudspeaker>();

  const speaker = (name: string): Loudspeaker => {
    const s = speakers.get(name);
    if (!s) throw new Error(`no loudspeaker ${name}`);
    return s;
  };
  const communeId = (name: string): string => {
    const c = communes.get(name);
    if (!c) throw new Error(`no commune ${name}`);
    return c.id;
  };

  /** A short pause between API polls: the machine is shared, the states change in seconds. */
  const poll = <T>(check: () => Promise<T>, what: string, timeoutMs = 20_000) =>
    waitFor(
      async () => {
        await new Promise((resolve) => setTimeout(resolve, 100));
        return check();
      },
      what,
      timeoutMs,
    );

  /** Creates the simulated device for credentials issued by the API (not connected yet). */
  function simulate(id: string, name: string, password: string): Loudspeaker {
    const sim = new SimDevice({
      id,
      password,
      mqttUrl: server.mqttUrl,
      // Real time: the playback log compares what aired with the length of what was sent.
      speed: 1,
      heartbeatS: 3_600,
      reconnectBaseMs: 100,
      reconnectMaxMs: 500,
    });
    const s: Loudspeaker = { id, name, password, sim, commands: [], logs: [] };
    sim.on('command', (e) => s.commands.push(e));
    sim.on('log', (e) => s.logs.push(e));
    speakers.set(name, s);
    return s;
  }

  const plays = (s: Loudspeaker) =>
    s.commands.map((e) => e.command as unknown as PlayCommand).filter((c) => c.type === 'play');
  const entries = (s: Loudspeaker, commandId: string, event?: PlaybackLogEntry['event']) =>
    s.logs.filter((e) => e.commandId === commandId && (event === undefined || e.event === event));

  const send = (body: Record<string, unknown>) =>
    operator.expect<EmergencyView>(201, 'POST', '/api/v1/emergencies', body);
  const detail = (id: string) => operator.expect<EmergencyDetail>(200, 'GET', `/api/v1/emergencies/${id}`);
  /** Waits until the emergency's counts say `want` (the other statuses are checked by the caller). */
  const countsReach = (id: string, want: Partial<Counts>, what: string, timeoutMs = 30_000) =>
    poll(
      async () => {
        const d = await detail(id);
        return Object.entries(want).every(([k, v]) => d.counts[k as keyof Counts] === v) ? d : null;
      },
      what,
      timeoutMs,
    ).catch(async (err: unknown) => {
      // Say where it stood, so a failure on a loaded machine can be read.
      const d = await detail(id).catch(() => null);
      throw new Error(`${(err as Error).message}; counts: ${JSON.stringify(d?.counts)}`, { cause: err });
    });
  const records = async (query: string) =>
    (await admin.expect<{ items: RecordView[] }>(200, 'GET', `/api/v1/playback-log?${query}`)).items;

  async function deviceOnline(id: string, online: boolean): Promise<void> {
    await poll(
      async () =>
        (await admin.expect<{ online: boolean }>(200, 'GET', `/api/v1/devices/${id}`)).online === online,
      `device ${id} to be ${online ? 'online' : 'offline'} at the server`,
    );
  }

  beforeAll(async () => {
    server = await serverOnDisk();
    await server.start();
    admin = await ApiClient.login(server.api, 'admin', server.adminPassword);
    const province = await admin.expect<{ id: string }>(201, 'POST', '/api/v1/areas', {
      name: 'Tỉnh Quảng Trị',
      level: 'province',
    });
    const district = await admin.expect<{ id: string }>(201, 'POST', '/api/v1/areas', {
      name: 'Huyện Vĩnh Linh',
      level: 'district',
      parentId: province.id,
    });

    // One commune per scenario; its hamlets and their loudspeakers.
    const layout: [string, [string, string[]][]][] = [
      [
        'Xã Vĩnh Thạch',
        [
          ['Thôn Đông', ['Cụm loa chợ Đông', 'Cụm loa nhà văn hoá Thôn Đông']],
          ['Thôn Tây', ['Cụm loa bến đò Thôn Tây']],
        ],
      ],
      ['Xã Vĩnh Hiền', [['Thôn Hiền Lương', ['Cụm loa Hiền Lương 1', 'Cụm loa Hiền Lương 2']]]],
      ['Xã Vĩnh Giang', [['Thôn Tùng Luật', ['Cụm loa Tùng Luật 1', 'Cụm loa Tùng Luật 2']]]],
      ['Xã Vĩnh Tú', [['Thôn Tú Tây', ['Cụm loa Tú Tây 1', 'Cụm loa Tú Tây 2']]]],
      ['Xã Vĩnh Chấp', [['Thôn Chấp Bắc', ['Cụm loa Chấp Bắc 1', 'Cụm loa Chấp Bắc 2']]]],
      ['Xã Vĩnh Hoà', [['Thôn Hoà Lý', ['Cụm loa Hoà Lý – diễn tập', 'Cụm loa Hoà Lý – trạm y tế']]]],
      ['Xã Vĩnh Sơn', [['Thôn Sơn Hạ', ['Cụm loa Sơn Hạ 1', 'Cụm loa Sơn Hạ 2']]]],
    ];
    for (const [communeName, hamlets] of layout) {
      const commune = await admin.expect<{ id: string }>(201, 'POST', '/api/v1/areas', {
        name: communeName,
        level: 'commune',
        parentId: district.id,
      });
      const entry = { id: commune.id, hamlets: new Map<string, string>() };
      communes.set(communeName, entry);
      for (const [hamletName, devices] of hamlets) {
        const hamlet = await admin.expect<{ id: string }>(201, 'POST', '/api/v1/areas', {
          name: hamletName,
          level: 'hamlet',
          parentId: commune.id,
        });
        entry.hamlets.set(hamletName, hamlet.id);
        for (const name of devices) {
          const device = await admin.expect<{ id: string; credentials: { password: string } }>(
            201,
            'POST',
            '/api/v1/devices',
            { name, kind: 'cluster', areaId: hamlet.id },
          );
          simulate(device.id, name, device.credentials.password);
        }
      }
    }

    await admin.expect(201, 'POST', '/api/v1/users', {
      username: 'truc.ban.huyen',
      password: 'Mật-khẩu-trực-ban-1',
      displayName: 'Lê Văn Dũng',
      role: 'district_operator',
      areaId: district.id,
    });
    operator = await ApiClient.login(server.api, 'truc.ban.huyen', 'Mật-khẩu-trực-ban-1');

    // Every loudspeaker is up, except the one that only comes online after an expiry (test 2).
    await Promise.all(
      [...speakers.values()].filter((s) => s.name !== 'Cụm loa Hiền Lương 2').map((s) => s.sim.connect()),
    );
  }, 60_000);

  afterAll(async () => {
    await Promise.all([...speakers.values()].map((s) => s.sim.close()));
    await server?.dispose();
  });

  // ---- 1. pre-emption and resume --------------------------------------------------------------------------

  let interruptedScheduleId: string;

  it('interrupts a scheduled relay on some devices, plays on the idle one, and the relay resumes after', async () => {
    const [market, hall, ferry] = [
      speaker('Cụm loa chợ Đông'),
      speaker('Cụm loa nhà văn hoá Thôn Đông'),
      speaker('Cụm loa bến đò Thôn Tây'),
    ];
    const vinhThach = communes.get('Xã Vĩnh Thạch');
    const thonDong = vinhThach?.hamlets.get('Thôn Đông');
    if (!vinhThach || !thonDong) throw new Error('no Thôn Đông');

    // An approved relay, scheduled on Thôn Đông's two loudspeakers a few seconds from now.
    await admin.expect(201, 'POST', '/api/v1/users', {
      username: 'phat.thanh.vien',
      password: 'Mật-khẩu-phát-thanh-1',
      displayName: 'Nguyễn Thị Hoà',
      role: 'broadcaster',
      areaId: vinhThach.id,
    });
    const broadcaster = await ApiClient.login(server.api, 'phat.thanh.vien', 'Mật-khẩu-phát-thanh-1');
    const programme = await broadcaster.expect<{ id: string }>(201, 'POST', '/api/v1/programmes', {
      title: PROGRAMME_TITLE,
      areaId: vinhThach.id,
      category: 'news',
      content: { relay: { url: 'http://127.0.0.1:9/vov1.mp3', name: 'VOV1' } },
    });
    await broadcaster.expect(200, 'POST', `/api/v1/programmes/${programme.id}/submit`, {});
    await admin.expect(200, 'POST', `/api/v1/programmes/${programme.id}/approve`, {});
    const slotAt = new Date(Math.ceil((Date.now() + 3_000) / 1_000) * 1_000);
    const schedule = await admin.expect<{ id: string }>(201, 'POST', '/api/v1/schedules', {
      programmeId: programme.id,
      targets: { areaIds: [thonDong] },
      timing: { once: localDateTime(slotAt) },
      // Long enough to be still open once the warning has played.
      durationS: 20,
      note: 'Tiếp sóng buổi trưa – bị ngắt bởi cảnh báo khẩn cấp',
    });
    interruptedScheduleId = schedule.id;
    const relayId = derivedId('cmd', schedule.id, slotAt.toISOString());
    await waitFor(
      () => [market, hall].every((s) => s.sim.state.playing?.commandId === relayId),
      'the relay to be on air on Thôn Đông',
      20_000,
    );
    const relaySession = plays(market).find((c) => c.id === relayId)?.params.sessionId;
    expect(relaySession).toBeDefined();

    // The warning, to the whole commune: the two devices on air and the idle one.
    const sent = await send({
      title: 'Cảnh báo lũ quét – Xã Vĩnh Thạch',
      text: 'Lũ quét đang về, bà con lên vùng cao ngay.',
      areaIds: [vinhThach.id],
      hazard: 'flood',
      riskLevel: 4,
    });
    expect(sent).toMatchObject({ targetCount: 3, status: 'active', exercise: false, revision: 1 });
    const played = await countsReach(sent.id, { played: 3 }, 'all three devices to play the warning');
    expect(played).toMatchObject({ status: 'active', reached: 3, percent: 100, notReached: [] });

    // Each device got it at emergency priority, from the very start.
    for (const s of [market, hall, ferry]) {
      const play = plays(s).find((c) => c.id === sent.commandId);
      expect(play).toMatchObject({ priority: 'emergency', params: { source: { kind: 'media' } } });
      expect(play?.params.offsetMs).toBeUndefined();
      expect(entries(s, sent.commandId).map((e) => e.event)).toEqual(['started', 'finished']);
    }
    // The relay was cut short where it played; the idle device had nothing to cut.
    for (const s of [market, hall]) {
      expect(entries(s, relayId).map((e) => [e.event, e.reason])).toEqual([
        ['started', undefined],
        ['interrupted', 'preempted'],
      ]);
    }
    expect(plays(ferry).map((c) => c.id)).toEqual([sent.commandId]);

    // After the warning the relay comes back on both, as the same occurrence (same session), by a new command.
    for (const s of [market, hall]) {
      const resume = await waitFor(
        () => plays(s).find((c) => c.params.sessionId === relaySession && c.id !== relayId),
        `${s.name}: the relay to be sent again after the warning`,
        20_000,
      );
      expect(resume.priority).toBe('normal');
      await waitFor(() => entries(s, resume.id, 'started').length === 1, `${s.name}: the relay to resume`);
      expect(s.sim.state.playing?.sessionId).toBe(relaySession);
    }
    // The idle device stays idle: there was nothing to resume there.
    expect(ferry.sim.state.playing).toBeNull();
    expect(plays(ferry)).toHaveLength(1);

    // The server's log: the warning played whole everywhere; the occurrence, still open, was interrupted once
    // and resumed (its outcome is decided when its slot has closed: the last test of this file).
    const warning = await poll(async () => {
      const items = await records(`emergencyId=${sent.id}`);
      return items.length === 3 && items.every((r) => r.outcome === 'played') ? items : null;
    }, 'the playback log to record the warning as played on all three');
    for (const r of warning) {
      expect(r.emergency).toMatchObject({ id: sent.id, exercise: false });
    }
    const occurrence = await poll(async () => {
      const items = await records(`scheduleId=${schedule.id}`);
      return items.length === 2 && items.every((r) => r.reason?.includes('resumed')) ? items : null;
    }, 'the occurrence to be recorded as interrupted and resumed');
    for (const r of occurrence) {
      expect(r).toMatchObject({ sessionId: relaySession, interruptions: 1, outcome: 'pending' });
      expect(r.reason).toContain('preempted');
    }
  }, 60_000);

  // ---- 2. devices offline at the send ----------------------------------------------------------------------

  let lateWarning: EmergencyView;

  it('plays from the start on a device that comes back before the expiry', async () => {
    const [back, never] = [speaker('Cụm loa Hiền Lương 1'), speaker('Cụm loa Hiền Lương 2')];
    // The first loses its link (for a minute, unless it comes back sooner); the second was never connected.
    back.sim.goOffline(60_000);
    await deviceOnline(back.id, false);

    lateWarning = await send({
      title: 'Cảnh báo cháy rừng – Xã Vĩnh Hiền',
      text: 'Cháy rừng gần khu dân cư, bà con tránh xa.',
      areaIds: [communeId('Xã Vĩnh Hiền')],
      hazard: 'fire',
      // The shortest expiry there is: the last tests of this file connect the second device after it.
      expiresInS: 60,
    });
    expect(lateWarning).toMatchObject({ targetCount: 2, status: 'active' });
    expect(lateWarning.counts).toMatchObject({ queued: 2, sent: 0 });
    const waiting = await detail(lateWarning.id);
    expect(waiting.notReached.map((n) => [n.deviceId, n.status]).sort()).toEqual(
      [
        [back.id, 'queued'],
        [never.id, 'queued'],
      ].sort(),
    );
    expect(back.commands).toEqual([]);

    // Back before the expiry but after the warning would have ended where it played at once: it is sent
    // the warning on reconnect all the same, whole and from the start (a broadcast would be joined where it
    // now is, or not at all once over).
    await new Promise((resolve) => setTimeout(resolve, lateWarning.durationMs + 500));
    await back.sim.reconnect();
    const d = await countsReach(lateWarning.id, { played: 1, queued: 1 }, 'the device back to play it');
    expect(d.notReached).toEqual([expect.objectContaining({ deviceId: never.id, status: 'queued' })]);
    const play = plays(back).find((c) => c.id === lateWarning.commandId);
    expect(play?.priority).toBe('emergency');
    expect(play?.params.offsetMs).toBeUndefined();
    expect(play?.params.startAt).toBeUndefined();
    expect(entries(back, lateWarning.commandId).map((e) => e.event)).toEqual(['started', 'finished']);
    const [record] = await records(`emergencyId=${lateWarning.id}&deviceId=${back.id}`);
    // Played whole (`played` allows no late join), not joined where a broadcast would have been by now.
    expect(record).toMatchObject({ outcome: 'played', interruptions: 0 });
  }, 40_000);

  // ---- 3. lost acknowledgements ---------------------------------------------------------------------------

  it('sends again to a device whose acknowledgements were lost, and counts it once it answers', async () => {
    const [silent, fine] = [speaker('Cụm loa Tùng Luật 1'), speaker('Cụm loa Tùng Luật 2')];
    // The device plays what it gets, but the server hears neither `received` nor `done` of the first send.
    silent.sim.setFaults({ dropAcks: { first: 2 } });
    const sent = await send({
      title: 'Cảnh báo sạt lở – Xã Vĩnh Giang',
      text: 'Nguy cơ sạt lở đất, bà con rời khỏi chân đồi.',
      areaIds: [communeId('Xã Vĩnh Giang')],
      hazard: 'landslide',
    });
    expect(sent.targetCount).toBe(2);

    // Re-sent (same command id) because it never answered: the device answers it as a duplicate, without
    // playing it twice, and this time the answer gets through.
    await waitFor(
      () => silent.sim.counters.duplicateCommands >= 1,
      'the warning to be sent again to the device that did not answer',
      20_000,
    );
    const command = await poll(async () => {
      const c = await admin.expect<CommandDetail>(200, 'GET', `/api/v1/commands/${sent.commandId}`);
      return c.devices.every((dev) => dev.status === 'done') ? c : null;
    }, 'both deliveries to be acknowledged done');
    expect(command.devices.map((dev) => dev.deviceId).sort()).toEqual([silent.id, fine.id].sort());
    expect(silent.sim.counters.droppedAcks).toBe(2);
    // The device that answered at once was never sent it again.
    expect(fine.sim.counters.duplicateCommands).toBe(0);

    const d = await countsReach(sent.id, { played: 2 }, 'both devices counted as played');
    expect(d).toMatchObject({ reached: 2, percent: 100, notReached: [] });
    expect(entries(silent, sent.commandId).map((e) => e.event)).toEqual(['started', 'finished']);
  }, 40_000);

  // ---- 4. cancel --------------------------------------------------------------------------------------------

  it('cancels everywhere with a stop: devices are interrupted and each stop is acknowledged', async () => {
    const devices = [speaker('Cụm loa Tú Tây 1'), speaker('Cụm loa Tú Tây 2')];
    const sent = await send({
      title: 'Cảnh báo bão số 5 – Xã Vĩnh Tú',
      text: 'Bão số 5 đổ bộ, bà con ở trong nhà.',
      areaIds: [communeId('Xã Vĩnh Tú')],
      hazard: 'storm',
      // Three plays back to back: surely still on air when it is cancelled.
      repeat: { count: 3, intervalS: 0 },
    });
    await countsReach(sent.id, { playing: 2 }, 'both devices to be playing the warning');

    const cancelled = await operator.expect<EmergencyView>(
      200,
      'POST',
      `/api/v1/emergencies/${sent.id}/cancel`,
      {
        reason: 'Bão đã đổi hướng ra biển',
      },
    );
    expect(cancelled).toMatchObject({ id: sent.id, status: 'cancelled' });

    for (const s of devices) {
      await waitFor(
        () => entries(s, sent.commandId, 'interrupted').length === 1,
        `${s.name}: the warning to stop`,
      );
      expect(entries(s, sent.commandId).map((e) => [e.event, e.reason])).toEqual([
        ['started', undefined],
        ['interrupted', 'stopped'],
      ]);
      expect(s.sim.state.playing).toBeNull();
    }
    const d = await poll(async () => {
      const got = await detail(sent.id);
      return got.cancel?.counts.done === 2 ? got : null;
    }, 'both stops to be acknowledged');
    expect(d).toMatchObject({
      status: 'cancelled',
      cancel: { reason: 'Bão đã đổi hướng ra biển', counts: { done: 2 } },
    });
    const stopId = d.cancel?.commandId;
    for (const s of devices) {
      const stop = s.commands.find((e) => e.command.id === stopId)?.command;
      expect(stop).toMatchObject({ type: 'stop', priority: 'emergency' });
    }
    // Both were cut off by the stop: `stopped`, no longer `playing`; nobody played it to the end, and
    // nothing is left that would sound it again.
    const stopped = await countsReach(sent.id, { stopped: 2 }, 'both devices to count as stopped', 5_000);
    expect(stopped.counts).toMatchObject({ playing: 0, played: 0, queued: 0, sent: 0 });

    const again = await operator.request('POST', `/api/v1/emergencies/${sent.id}/cancel`, {});
    expect(again.status).toBe(409);
  }, 40_000);

  // ---- 5. update --------------------------------------------------------------------------------------------

  it('updates the text as the same emergency: revision 2, one alert, devices play the new text', async () => {
    const devices = [speaker('Cụm loa Chấp Bắc 1'), speaker('Cụm loa Chấp Bắc 2')];
    const vinhChap = communeId('Xã Vĩnh Chấp');
    const sent = await send({
      title: 'Cảnh báo triều cường – Xã Vĩnh Chấp',
      text: 'Triều cường dâng cao, bà con kê cao đồ đạc.',
      areaIds: [vinhChap],
      hazard: 'flood',
      repeat: { count: 2, intervalS: 0 },
    });
    await countsReach(sent.id, { playing: 2 }, 'both devices to be playing the first text');

    const updatedText = 'Triều cường dâng rất cao, bà con đến nhà văn hoá xã ngay.';
    const updated = await operator.expect<EmergencyView>(200, 'PATCH', `/api/v1/emergencies/${sent.id}`, {
      text: updatedText,
    });
    expect(updated).toMatchObject({ id: sent.id, revision: 2, text: updatedText, status: 'active' });
    expect(updated.commandId).not.toBe(sent.commandId);

    const d = await countsReach(sent.id, { played: 2 }, 'both devices to play the new text');
    expect(d).toMatchObject({ revision: 2, text: updatedText, commandId: updated.commandId, targetCount: 2 });
    for (const s of devices) {
      const first = plays(s).find((c) => c.id === sent.commandId);
      const second = plays(s).find((c) => c.id === updated.commandId);
      expect(second).toMatchObject({ priority: 'emergency' });
      // Another rendition: the new text, not the old file again.
      expect(second?.params.source.sha256).not.toBe(first?.params.source.sha256);
      expect(entries(s, updated.commandId).map((e) => e.event)).toEqual(['started', 'finished']);
      // The first text was cut off by the second, not played on top of it or after it.
      expect(entries(s, sent.commandId).map((e) => [e.event, e.reason])).toEqual([
        ['started', undefined],
        ['interrupted', 'preempted'],
      ]);
    }

    // Still one alert, not two.
    const list = await operator.expect<{ items: EmergencyView[] }>(
      200,
      'GET',
      `/api/v1/emergencies?areaId=${vinhChap}`,
    );
    expect(list.items.map((e) => [e.id, e.revision])).toEqual([[sent.id, 2]]);
  }, 60_000);

  // ---- 6. exercise ------------------------------------------------------------------------------------------

  it('sends a drill only to drill participants, labelled as a drill', async () => {
    const [drill, clinic] = [speaker('Cụm loa Hoà Lý – diễn tập'), speaker('Cụm loa Hoà Lý – trạm y tế')];
    await admin.expect(200, 'PATCH', `/api/v1/devices/${drill.id}`, { drillParticipant: true });

    const sent = await send({
      title: 'Diễn tập sơ tán bão',
      text: 'Sơ tán theo phương án phòng chống bão.',
      areaIds: [communeId('Xã Vĩnh Hoà')],
      hazard: 'storm',
      exercise: true,
    });
    expect(sent).toMatchObject({ exercise: true, targetCount: 1, label: 'DIỄN TẬP – Diễn tập sơ tán bão' });

    const d = await countsReach(sent.id, { played: 1 }, 'the drill device to play the drill');
    expect(d).toMatchObject({ exercise: true, targetCount: 1, percent: 100 });
    expect(entries(drill, sent.commandId).map((e) => e.event)).toEqual(['started', 'finished']);
    // The command went to the drill device alone; the other one was never sent anything.
    const command = await admin.expect<CommandDetail>(200, 'GET', `/api/v1/commands/${sent.commandId}`);
    expect(command.devices.map((dev) => dev.deviceId)).toEqual([drill.id]);
    expect(clinic.commands).toEqual([]);

    const [record] = await records(`emergencyId=${sent.id}`);
    expect(record).toMatchObject({
      device: { id: drill.id },
      emergency: { exercise: true },
      outcome: 'played',
    });
    const drills = await operator.expect<{ items: EmergencyView[] }>(
      200,
      'GET',
      '/api/v1/emergencies?exercise=true',
    );
    expect(drills.items.map((e) => e.id)).toEqual([sent.id]);
  }, 40_000);

  // ---- 7. live progress ----------------------------------------------------------------------------------

  it('streams progress over Server-Sent Events up to 100 %, every device played', async () => {
    const [up, late] = [speaker('Cụm loa Sơn Hạ 1'), speaker('Cụm loa Sơn Hạ 2')];
    // One device is away at the send, so the stream has progress to show after its snapshot.
    late.sim.disconnect();
    await deviceOnline(late.id, false);
    const sent = await send({
      title: 'Cảnh báo dịch sốt xuất huyết – Xã Vĩnh Sơn',
      text: 'Bà con diệt lăng quăng, ngủ màn.',
      areaIds: [communeId('Xã Vĩnh Sơn')],
      hazard: 'epidemic',
    });

    const stream = await openStream(sent.id);
    try {
      const snapshot = await stream.next('snapshot');
      expect(snapshot.data).toMatchObject({ emergencyId: sent.id, targetCount: 2, counts: { queued: 1 } });
      expect(snapshot.data.percent).toBeLessThanOrEqual(50);
      expect(snapshot.id).toMatch(/^\d+$/);

      await late.sim.reconnect();
      let last = snapshot;
      const seen = new Set<string>();
      while (!(last.data.counts.played === 2 && last.data.percent === 100)) {
        last = await stream.next('progress', 30_000);
        for (const dev of last.data.devices ?? []) seen.add(`${dev.deviceId}:${dev.status}`);
      }
      expect(last.data).toMatchObject({ status: 'active', targetCount: 2, reached: 2, percent: 100 });
      // Device by device, as it happened: the late one was told received or playing, then played.
      expect(seen).toContain(`${late.id}:played`);
      expect(seen).toContain(`${up.id}:played`);
      expect(entries(late, sent.commandId).map((e) => e.event)).toEqual(['started', 'finished']);
    } finally {
      stream.close();
    }
  }, 60_000);

  // ---- 2 (end). a device back after the expiry ---------------------------------------------------------

  it('never plays on a device that comes back after the expiry: it stays undelivered', async () => {
    const never = speaker('Cụm loa Hiền Lương 2');
    // Real time must pass the expiry; the other scenarios took most of it.
    const remaining = Date.parse(lateWarning.expiresAt) - Date.now();
    if (remaining > 0) await new Promise((resolve) => setTimeout(resolve, remaining));
    const expired = await poll(async () => {
      const d = await detail(lateWarning.id);
      return d.status === 'expired' && d.counts.undelivered === 1 ? d : null;
    }, 'the warning to expire with one device undelivered');
    expect(expired.counts).toMatchObject({ played: 1, undelivered: 1, queued: 0 });

    await never.sim.connect();
    await deviceOnline(never.id, true);
    // A ping sent after it connected reaches it after anything its connection brought (one MQTT session,
    // in order), so once the ping is there, whatever it would have been sent on reconnect is there too.
    const ping = await admin.expect<{ id: string }>(202, 'POST', '/api/v1/commands', {
      type: 'ping',
      targets: { deviceIds: [never.id] },
    });
    await waitFor(() => never.commands.some((e) => e.command.id === ping.id), 'the ping to reach the device');
    expect(never.commands.map((e) => e.command.type)).toEqual(['ping']);
    expect(never.logs).toEqual([]);

    const d = await detail(lateWarning.id);
    expect(d.counts).toMatchObject({ played: 1, undelivered: 1 });
    expect(d.notReached).toEqual([
      expect.objectContaining({ deviceId: never.id, status: 'undelivered', online: true }),
    ]);
  }, 60_000);

  // ---- 1 (end). the interrupted occurrence's outcome -----------------------------------------------------

  it('logs the interrupted scheduled occurrence as partial once its slot has closed', async () => {
    // Decided a minute after the slot closed, by a job that runs every 30 s.
    const closed = await poll(
      async () => {
        const items = await records(`scheduleId=${interruptedScheduleId}`);
        return items.length === 2 && items.every((r) => r.outcome !== 'pending') ? items : null;
      },
      'the occurrence to be decided',
      100_000,
    );
    for (const r of closed) {
      expect(r.outcome).toBe('partial');
      expect(r.interruptions).toBe(1);
      expect(r.reason).toContain('interrupted by a higher-priority broadcast, resumed');
    }
  }, 110_000);

  /** Reads the event stream over real HTTP. */
  async function openStream(id: string) {
    const stream = openEventStream<StreamData>(`${server.api}/api/v1/emergencies/${id}/events`, {
      authorization: `Bearer ${operator.token}`,
    });
    const head = await stream.head;
    expect(head.status).toBe(200);
    expect(head.contentType).toContain('text/event-stream');
    return {
      next: (kind: string, timeoutMs = 20_000) => stream.next(kind, { timeoutMs }),
      close: () => stream.close(),
    };
  }
});
