/**
 * Schedules end to end: the real server process, its embedded broker and SQLite file, and firmware-sim
 * devices. A relay scheduled a few seconds ahead airs on every target loudspeaker without anyone pressing
 * play, and the playback log says `played` for each. Then the server is killed (SIGKILL) in the middle of a
 * slot and started again on the same data: the devices come back, the one that kept playing is sent the
 * same command again and carries on, the one that lost power meanwhile joins at the position the
 * broadcast has reached, and the playback log has that occurrence once per device.
 *
 * Slots are the shortest a relay may have (durationS ≥ 10); nothing here asserts a duration: positions are
 * checked against what had happened before (the kill), and every wait is for a condition.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SimDevice, type CommandEvent } from '../firmware-sim/src/index.js';
import { derivedId } from '../src/lib/ids.js';
import { localDateTime } from '../src/modules/schedules/timing.js';
import type { PlaybackLogEntry } from '../src/protocol/index.js';
import { ApiClient, serverOnDisk, type ServerOnDisk } from './support/server-api.js';
import { waitFor } from './support/wait.js';

interface Credentials {
  id: string;
  password: string;
}

interface RecordView {
  sessionId: string;
  commandId: string;
  device: { id: string; name: string };
  scheduleId: string | null;
  programme: { title: string | null } | null;
  joinedAtMs: number | null;
  startedAt: string | null;
  outcome: string;
  reason: string | null;
}

const PROGRAMME_TITLE = 'Tiếp sóng Đài Tiếng nói Việt Nam – Thời sự sáng, Thôn Đông';

describe('schedules end to end, with the server process and simulated loudspeakers', () => {
  let server: ServerOnDisk;
  let admin: ApiClient;
  let hamletId: string;
  let programmeId: string;
  const devices: Credentials[] = [];
  const sims: SimDevice[] = [];
  /** Every log entry each device wrote, by device id. */
  const logs = new Map<string, PlaybackLogEntry[]>();
  /** Every command each device took on (duplicates are answered, not reported), by device id. */
  const received = new Map<string, CommandEvent[]>();

  const simulate = (credentials: Credentials): SimDevice => {
    const sim = new SimDevice({
      id: credentials.id,
      password: credentials.password,
      mqttUrl: server.mqttUrl,
      // Real time: the playback log compares what aired with the slot's length.
      speed: 1,
      heartbeatS: 3_600,
      // Back quickly once the restarted server listens again.
      reconnectBaseMs: 200,
      reconnectMaxMs: 1_000,
    });
    sim.on('log', (entry) => logs.get(credentials.id)?.push(entry));
    sim.on('command', (event) => received.get(credentials.id)?.push(event));
    sims.push(sim);
    return sim;
  };

  beforeAll(async () => {
    server = await serverOnDisk();
    await server.start();
    admin = await ApiClient.login(server.api, 'admin', server.adminPassword);
    const province = await admin.expect<{ id: string }>(201, 'POST', '/api/v1/areas', {
      name: 'Tỉnh Quảng Trị',
      level: 'province',
    });
    const commune = await admin.expect<{ id: string }>(201, 'POST', '/api/v1/areas', {
      name: 'Xã Vĩnh Thạch',
      level: 'commune',
      parentId: province.id,
    });
    const hamlet = await admin.expect<{ id: string }>(201, 'POST', '/api/v1/areas', {
      name: 'Thôn Đông',
      level: 'hamlet',
      parentId: commune.id,
    });
    hamletId = hamlet.id;
    for (const name of ['Cụm loa chợ Đông', 'Cụm loa nhà văn hoá Thôn Đông']) {
      const device = await admin.expect<{ id: string; credentials: { password: string } }>(
        201,
        'POST',
        '/api/v1/devices',
        { name, kind: 'cluster', areaId: hamletId },
      );
      devices.push({ id: device.id, password: device.credentials.password });
      logs.set(device.id, []);
      received.set(device.id, []);
    }

    // A programme is approved by someone other than its author.
    await admin.expect(201, 'POST', '/api/v1/users', {
      username: 'phat.thanh.vien',
      password: 'Mật-khẩu-phát-thanh-1',
      displayName: 'Nguyễn Thị Hoà',
      role: 'broadcaster',
      areaId: commune.id,
    });
    const broadcaster = await ApiClient.login(server.api, 'phat.thanh.vien', 'Mật-khẩu-phát-thanh-1');
    // A relay needs no rendering; its stream is a port nobody listens on (the probe on save warns only).
    const programme = await broadcaster.expect<{ id: string }>(201, 'POST', '/api/v1/programmes', {
      title: PROGRAMME_TITLE,
      areaId: commune.id,
      category: 'news',
      content: { relay: { url: 'http://127.0.0.1:9/vov1.mp3', name: 'VOV1' } },
    });
    programmeId = programme.id;
    await broadcaster.expect(200, 'POST', `/api/v1/programmes/${programmeId}/submit`, {});
    await admin.expect(200, 'POST', `/api/v1/programmes/${programmeId}/approve`, {});

    for (const credentials of devices) await simulate(credentials).connect();
  }, 60_000);

  afterAll(async () => {
    await Promise.all(sims.map((s) => s.close()));
    await server?.dispose();
  });

  /** A relay on both devices a few seconds from now; its slot and the command id it must go out with. */
  const scheduleSoon = async (durationS: number, note: string) => {
    const slotAt = new Date(Math.ceil((Date.now() + 3_000) / 1_000) * 1_000);
    const schedule = await admin.expect<{ id: string }>(201, 'POST', '/api/v1/schedules', {
      programmeId,
      targets: { areaIds: [hamletId] },
      timing: { once: localDateTime(slotAt) },
      durationS,
      note,
    });
    return {
      scheduleId: schedule.id,
      slotAt,
      commandId: derivedId('cmd', schedule.id, slotAt.toISOString()),
    };
  };

  const records = async (scheduleId: string) =>
    (await admin.expect<{ items: RecordView[] }>(200, 'GET', `/api/v1/playback-log?scheduleId=${scheduleId}`))
      .items;

  const entries = (deviceId: string, commandId: string, event: PlaybackLogEntry['event']) =>
    (logs.get(deviceId) ?? []).filter((e) => e.commandId === commandId && e.event === event);

  it('airs a scheduled relay on every target device, and the playback log says played for each', async () => {
    const { scheduleId, commandId } = await scheduleSoon(10, 'Bản tin thử – lịch phát một lần');

    await waitFor(
      () => devices.every((d) => entries(d.id, commandId, 'finished').length === 1),
      'both devices to play the occurrence to its end',
      40_000,
    );
    // Each device started it once, from the start of the slot.
    for (const d of devices) expect(entries(d.id, commandId, 'started')).toHaveLength(1);

    const closed = await waitFor(
      async () => {
        const items = await records(scheduleId);
        return items.length === devices.length && items.every((r) => r.outcome === 'played') ? items : null;
      },
      'the playback log to record the occurrence as played on both devices',
      20_000,
    );
    expect(closed.map((r) => r.device.id).sort()).toEqual(devices.map((d) => d.id).sort());
    for (const record of closed) {
      expect(record).toMatchObject({
        commandId,
        scheduleId,
        programme: { title: PROGRAMME_TITLE },
        reason: null,
      });
      expect(record.joinedAtMs ?? 0).toBeLessThanOrEqual(2_000);
    }
  }, 90_000);

  it('survives kill -9 mid-slot: devices rejoin at the right position, each occurrence logged once per device', async () => {
    const [keeps, reboots] = devices as [Credentials, Credentials];
    const { scheduleId, slotAt, commandId } = await scheduleSoon(20, 'Bản tin thử – máy chủ khởi động lại');
    const simOf = (id: string) => sims.filter((s) => s.id === id).at(-1);

    await waitFor(
      () => devices.every((d) => simOf(d.id)?.state.playing?.commandId === commandId),
      'both devices to be playing the occurrence',
      20_000,
    );
    // Mid-slot, once the server has recorded both starts: what is tested here is rejoining and counting once,
    // not a device log entry caught in flight by the crash.
    await waitFor(
      async () => (await records(scheduleId)).filter((r) => r.startedAt !== null).length === devices.length,
      'the server to record both starts',
      20_000,
    );
    const keeper = simOf(keeps.id);
    if (!keeper) throw new Error('no simulated device');
    const duplicatesBefore = keeper.counters.duplicateCommands;

    // The crash: no graceful shutdown. Meanwhile the second loudspeaker loses power too, and forgets what
    // it played: it comes back as a fresh boot with the same credentials.
    const killedAt = Date.now();
    await server.kill();
    await simOf(reboots.id)?.close();
    const rebooted = simulate(reboots);

    await server.start();
    await rebooted.connect(20_000);

    // The fresh boot is sent the same command (same id: derived from schedule and slot), positioned where
    // the broadcast is now: at least as far into the slot as it was when the server died.
    const join = await waitFor(
      () => received.get(reboots.id)?.find((e) => e.command.id === commandId && e.at.getTime() > killedAt),
      'the rebooted device to be sent the occurrence again',
      20_000,
    );
    const params = join.command.params as { offsetMs?: number; startAt?: string };
    const position =
      (params.offsetMs ?? 0) +
      (params.startAt === undefined ? 0 : Math.max(0, join.at.getTime() - Date.parse(params.startAt)));
    expect(position).toBeGreaterThanOrEqual(killedAt - slotAt.getTime());
    expect(position).toBeLessThanOrEqual(join.at.getTime() - slotAt.getTime() + 1);
    await waitFor(() => rebooted.state.playing?.commandId === commandId, 'the rebooted device to play again');
    expect(rebooted.state.playing?.positionMs).toBeGreaterThanOrEqual(killedAt - slotAt.getTime());

    // The device that kept playing through the outage is sent the same command id again, answers it as a
    // duplicate and carries on: it never started a second time.
    await waitFor(
      () => keeper.counters.duplicateCommands > duplicatesBefore,
      'the re-sent command to reach the device that kept playing',
      20_000,
    );
    expect(keeper.state.playing?.commandId).toBe(commandId);

    await waitFor(
      () =>
        entries(keeps.id, commandId, 'finished').length === 1 &&
        entries(reboots.id, commandId, 'finished').length === 1,
      'both devices to reach the end of the slot',
      40_000,
    );
    expect(entries(keeps.id, commandId, 'started')).toHaveLength(1);

    // One record per device for the occurrence, opened by its one command; the device that played it
    // through is `played` at once, the rebooted one stays open until the slot's grace has passed.
    let seen: RecordView[] = [];
    const played = await waitFor(
      async () => {
        seen = await records(scheduleId);
        return seen.find((r) => r.device.id === keeps.id)?.outcome === 'played' ? seen : null;
      },
      'the record of the device that kept playing to close as played',
      20_000,
    ).catch((err: unknown) => {
      // Say what the log held instead, so a failure on a loaded machine can be read.
      throw new Error(`${(err as Error).message}; records: ${JSON.stringify(seen)}`, { cause: err });
    });
    expect(played).toHaveLength(2);
    expect(played.map((r) => r.device.id).sort()).toEqual([keeps.id, reboots.id].sort());
    expect(new Set(played.map((r) => r.sessionId)).size).toBe(1);
    for (const record of played) expect(record.commandId).toBe(commandId);
  }, 120_000);
});
