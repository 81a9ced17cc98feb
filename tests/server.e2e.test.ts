/**
 * The real server process, as `npm start` runs it: configuration errors, start-up on its own ports, and a
 * graceful shutdown on SIGTERM that disconnects devices and leaves the database consistent.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { closed, connectDevice } from './support/mqtt.js';
import { freePort, root, startServer, withTsx } from './support/processes.js';
import { waitFor } from './support/wait.js';

describe('server process', () => {
  const children: ChildProcess[] = [];
  const dirs: string[] = [];
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
    for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
  });

  /** The server on free ports with a fresh data directory; `env` adds or overrides variables. */
  const serve = async (env: Record<string, string> = {}) => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-server-'));
    dirs.push(dataDir);
    const [port, mqttPort] = [await freePort(), await freePort()];
    const server = startServer({
      PORT: String(port),
      MQTT_PORT: String(mqttPort),
      HOST: '127.0.0.1',
      DATA_DIR: dataDir,
      ADMIN_PASSWORD: 'server-test-password',
      LOG_LEVEL: 'info',
      ...env,
    });
    children.push(server.child);
    return { server, port, mqttPort, dataDir };
  };

  it('refuses to start on a bad variable, naming it', async () => {
    const server = startServer({ PORT: 'three thousand', LOG_LEVEL: 'chatty' });
    children.push(server.child);
    expect(await server.exited).toBe(1);
    expect(server.output()).toMatch(/PORT/);
    expect(server.output()).toMatch(/LOG_LEVEL/);
  });

  it('serves, then shuts down gracefully on SIGTERM', async () => {
    const { server, port, mqttPort, dataDir } = await serve();
    const api = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${api}/healthz`)).ok, 'server up', 30_000);

    const post = async (url: string, body: unknown, token?: string) => {
      const res = await fetch(`${api}${url}`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(token ? { authorization: `Bearer ${token}` } : {}),
        },
        body: JSON.stringify(body),
      });
      return res.json() as Promise<Record<string, unknown>>;
    };
    const { token } = (await post('/api/v1/auth/login', {
      username: 'admin',
      password: 'server-test-password',
    })) as { token: string };
    const area = await post('/api/v1/areas', { name: 'Xã Triệu Phong', level: 'commune' }, token);
    const device = (await post(
      '/api/v1/devices',
      { name: 'Cụm loa chợ', kind: 'cluster', areaId: area.id },
      token,
    )) as {
      id: string;
      credentials: { clientId: string; username: string; password: string };
    };
    const client = await connectDevice(`mqtt://127.0.0.1:${mqttPort}`, device.credentials);
    const disconnected = closed(client);

    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    await disconnected;
    await client.endAsync(true);
    expect(server.output()).toContain('shutting down');

    // The database was closed cleanly and holds what was written, Vietnamese intact.
    const db = new Database(path.join(dataDir, 'loa.sqlite'), { readonly: true });
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.prepare('SELECT name FROM areas').all()).toEqual([{ name: 'Xã Triệu Phong' }]);
    expect(db.prepare('SELECT name, online FROM devices').all()).toEqual([
      { name: 'Cụm loa chợ', online: 0 },
    ]);
    db.close();
  });

  it('cuts a request still in flight so that shutdown ends cleanly within SHUTDOWN_TIMEOUT_S', async () => {
    const { server, port, dataDir } = await serve({ SHUTDOWN_TIMEOUT_S: '4' });
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok, 'server ready', 30_000);

    // A client that announced a body and stalled: Fastify's close waits for it.
    const stalled = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve) => stalled.once('connect', resolve));
    const cut = new Promise<void>((resolve) => stalled.once('close', () => resolve()));
    stalled.on('error', () => {});
    // Flowing, so that the end of the connection is seen whatever the server answered before cutting it.
    stalled.resume();
    stalled.write(
      'POST /api/v1/auth/login HTTP/1.1\r\nHost: loa\r\nContent-Type: application/json\r\n' +
        'Content-Length: 100\r\n\r\n{"username":',
    );
    // This request's own log line: the readiness probe above logged an "incoming request" too.
    await waitFor(
      () => /"url":"\/api\/v1\/auth\/login"[^\n]*"msg":"incoming request"/.test(server.output()),
      'request under way',
    );

    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
    await cut;
    expect(server.output()).toContain('cutting HTTP requests still in flight');
    expect(server.output()).not.toContain('shutdown took too long');
    // The database was closed (the last connection checkpoints and removes the WAL), not abandoned.
    expect(fs.existsSync(path.join(dataDir, 'loa.sqlite-wal'))).toBe(false);
  });

  it('the Docker HEALTHCHECK asks the interface HOST names, and fails when nothing answers', async () => {
    // One interface other than 127.0.0.1 (all of 127.0.0.0/8 is loopback on Linux).
    const { port } = await serve({ HOST: '127.0.0.2' });
    const env = { HOST: '127.0.0.2', PORT: String(port) };
    await waitFor(async () => (await fetch(`http://127.0.0.2:${port}/readyz`)).ok, 'server ready', 30_000);

    const healthcheck = (vars: Record<string, string>) => {
      const child = spawn(...withTsx('src/cli/healthcheck.ts'), {
        cwd: root,
        env: { ...process.env, ...vars },
        stdio: 'ignore',
      });
      return new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    };
    expect(await healthcheck(env)).toBe(0);
    expect(await healthcheck({ ...env, PORT: String(await freePort()) })).toBe(1);
  });
});
