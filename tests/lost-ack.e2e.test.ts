/**
 * A final ack lost in a crash (protocol.md §3.1 rule 2). The real server process is frozen (SIGSTOP)
 * after it stored a device's `received`, so the device's `done` goes no further than the server's socket
 * buffer; then it is killed (SIGKILL) and started again on the same data. The device reconnects, the
 * server re-sends the command it has no final ack for, the device answers its final ack again, and the
 * delivery ends `done`.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { commandSchema, topics, type Ack, type Command } from '../src/protocol/index.js';
import { connectDevice } from './support/mqtt.js';
import { freePort, startServer } from './support/processes.js';
import { waitFor } from './support/wait.js';

const PASSWORD = 'lost-ack-Mật-khẩu-1';

/** Resolves with the next command on the device's cmd topic. */
function nextCommand(client: MqttClient, what: string): Promise<Command> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no command: ${what}`)), 15_000);
    client.once('message', (_topic, payload) => {
      clearTimeout(timer);
      resolve(commandSchema.parse(JSON.parse(String(payload))));
    });
  });
}

describe('an ack lost in a server crash', () => {
  const children: ChildProcess[] = [];
  const clients: MqttClient[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
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
    const mqttUrl = `mqtt://127.0.0.1:${mqttPort}`;
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
    })) as { id: string; credentials: { clientId: string; username: string; password: string } };
    const ack = (client: MqttClient, id: string, status: Ack['status']) => {
      const payload: Ack = { id, status, at: new Date().toISOString() };
      return client.publish(topics.ack(device.id), JSON.stringify(payload), { qos: 1 });
    };
    const deliveryStatus = async (commandId: string) => {
      const detail = (await call('GET', `/api/v1/commands/${commandId}`)) as {
        devices: { deviceId: string; status: string }[];
      };
      return detail.devices.find((d) => d.deviceId === device.id)?.status;
    };

    const before = await connectDevice(mqttUrl, device.credentials);
    clients.push(before);
    const received = nextCommand(before, 'the play was not sent');
    await before.subscribeAsync(topics.cmd(device.id), { qos: 1 });
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
    const play = await received;
    expect(play.id).toBe(sent.id);
    ack(before, play.id, 'received');
    await waitFor(async () => (await deliveryStatus(play.id)) === 'received', '`received` stored');

    // Frozen: the server reads nothing more. The `done` leaves the device and waits in the server's socket.
    first.child.kill('SIGSTOP');
    const socket = before.stream as net.Socket;
    const written = socket.bytesWritten;
    ack(before, play.id, 'done');
    await waitFor(() => socket.bytesWritten > written && socket.writableLength === 0, '`done` written');
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe('SIGKILL');
    await before.endAsync(true);

    await start();
    expect(await deliveryStatus(play.id)).toBe('received');
    const after = await connectDevice(mqttUrl, device.credentials);
    clients.push(after);
    const resent = nextCommand(after, 'the play still `received` was not re-sent');
    await after.subscribeAsync(topics.cmd(device.id), { qos: 1 });
    const again = await resent;
    expect(again).toMatchObject({ id: play.id, type: 'play' });
    // protocol.md rule 2: a command id already handled is answered with its final ack, not ignored.
    ack(after, again.id, 'done');
    await waitFor(async () => (await deliveryStatus(play.id)) === 'done', 'delivery done');
  });
});
