/**
 * A final ack lost in a crash (protocol.md §3.1 rule 2), with firmware-sim as the device. The real server
 * process stores the device's `received` (its first `done` is lost on the link). When the device comes
 * back, the server re-sends the play and firmware-sim answers `done` again, into a server frozen by
 * SIGSTOP: the answer goes no further than the server's socket buffer. The server is killed (SIGKILL) and
 * started again on the same data; the device connects again, the server re-sends the command it has no
 * final ack for, firmware-sim answers its final ack once more without playing twice, and the delivery
 * ends `done`.
 */
import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { SimDevice } from '../firmware-sim/src/index.js';
import type { Ack } from '../src/protocol/index.js';
import { freePort, startServer } from './support/processes.js';
import { waitFor } from './support/wait.js';

const PASSWORD = 'lost-ack-Mật-khẩu-1';

describe('an ack lost in a server crash', () => {
  const children: ChildProcess[] = [];
  const sims: SimDevice[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(sims.splice(0).map((s) => s.close()));
    for (const child of children.splice(0)) {
      child.kill('SIGCONT');
      child.kill('SIGKILL');
    }
    for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('is recovered: the server re-sends the command and the device answers its final ack again', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-lost-ack-'));
    dirs.push(dataDir);
    const [port, mqttPort] = [await freePort(), await freePort()];
    const env = {
      PORT: String(port),
      MQTT_PORT: String(mqttPort),
      HOST: '127.0.0.1',
      DATA_DIR: dataDir,
      ADMIN_PASSWORD: PASSWORD,
      LOG_LEVEL: 'warn',
    };
    const api = `http://127.0.0.1:${port}`;
    const start = async () => {
      const server = startServer(env);
      children.push(server.child);
      await waitFor(async () => (await fetch(`${api}/healthz`)).ok, 'server up', 30_000);
      return server;
    };
    let token = '';
    const call = async (method: 'GET' | 'POST', url: string, body?: unknown) => {
      const res = await fetch(`${api}${url}`, {
        method,
        headers: {
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return res.json() as Promise<Record<string, unknown>>;
    };

    const first = await start();
    token = (await call('POST', '/api/v1/auth/login', { username: 'admin', password: PASSWORD }))
      .token as string;
    const area = await call('POST', '/api/v1/areas', { name: 'Xã Vĩnh Linh', level: 'commune' });
    const device = (await call('POST', '/api/v1/devices', {
      name: 'Cụm loa đầu làng',
      kind: 'cluster',
      areaId: area.id,
    })) as { id: string; credentials: { password: string } };
    const deliveryStatus = async (commandId: string) => {
      const detail = (await call('GET', `/api/v1/commands/${commandId}`)) as {
        devices: { deviceId: string; status: string }[];
      };
      return detail.devices.find((d) => d.deviceId === device.id)?.status;
    };

    const sim = new SimDevice({
      // Placeholder media URLs: this file tests the protocol; firmware-sim-download.test.ts downloads.
      noDownload: true,
      id: device.id,
      password: device.credentials.password,
      mqttUrl: `mqtt://127.0.0.1:${mqttPort}`,
    });
    sims.push(sim);
    const answered: Ack[] = [];
    sim.on('ack', (ack) => answered.push(ack));
    // The first `done` is lost on the radio link (its `received` got through), so that the server holds
    // `received` and re-sends the command when the device connects again.
    const loseDone = (ack: Ack) => {
      if (ack.status !== 'received') return;
      sim.off('ack', loseDone);
      sim.setFaults({ dropAcks: true });
    };
    sim.on('ack', loseDone);
    await sim.connect();
    const sent = await call('POST', '/api/v1/commands', {
      type: 'play',
      priority: 'priority',
      targets: { deviceIds: [device.id] },
      params: {
        source: {
          kind: 'media',
          url: 'https://loa.example/ban-tin-sang.mp3',
          sha256: 'ab'.repeat(32),
          durationMs: 600_000,
        },
      },
    });
    const playId = sent.id as string;
    await waitFor(async () => (await deliveryStatus(playId)) === 'received', '`received` stored');
    expect(sim.counters.droppedAcks).toBe(1);
    expect(sim.state.playing?.commandId).toBe(playId);
    sim.setFaults({ dropAcks: false });

    // The device comes back; the server re-sends the play and firmware-sim answers `done` again. The server
    // is frozen (SIGSTOP) the moment the device answers, before the answer is written: the server reads
    // nothing more, and the `done` waits in the server's socket.
    let socket: net.Socket | undefined;
    let writtenBefore = 0;
    const freeze = (ack: Ack) => {
      if (ack.id !== playId || ack.status !== 'done') return;
      sim.off('ack', freeze);
      first.child.kill('SIGSTOP');
      // The MQTT client is the simulator's own; only its socket tells whether the answer left the device.
      socket = sim['client']?.stream as net.Socket;
      writtenBefore = socket.bytesWritten;
    };
    sim.on('ack', freeze);
    await sim.reconnect();
    await waitFor(
      () => socket !== undefined && socket.bytesWritten > writtenBefore && socket.writableLength === 0,
      'the re-sent play answered `done` again, and the answer written',
    );
    // A clean session discards what is in flight (MQTT-3.1.2-6): the device comes back with a new session,
    // so only its answer to the re-sent command can bring the `done` back, not a replay by its MQTT client.
    sim.disconnect();
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe('SIGKILL');

    await start();
    expect(await deliveryStatus(playId)).toBe('received');
    await sim.connect();
    await waitFor(async () => (await deliveryStatus(playId)) === 'done', 'delivery done');
    // protocol.md rule 2: each re-send was answered with the final ack, and the play was not started again.
    expect(answered.filter((a) => a.id === playId).map((a) => a.status)).toEqual([
      'received',
      'done',
      'done',
    ]);
    expect(sim.counters).toMatchObject({ handledCommands: 1, duplicateCommands: 2, droppedAcks: 1 });
    expect(sim.state.playing?.commandId).toBe(playId);
  });
});
