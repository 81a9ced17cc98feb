/**
 * The real server process on a data directory of its own, started (and started again on the same data)
 * as `npm start` runs it, and a small JSON client for its API: for end-to-end tests that crash the server.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, startServer, type ServerProcess } from './processes.js';
import { waitFor } from './wait.js';

export interface ServerOnDisk {
  api: string;
  mqttUrl: string;
  dataDir: string;
  adminPassword: string;
  /** The running process; replaced by `start()`. */
  current: ServerProcess | undefined;
  /** Starts the server (again) on the same data and ports, and waits until it answers /healthz. */
  start(): Promise<ServerProcess>;
  /** SIGKILL: no graceful shutdown, nothing flushed that was not already committed. */
  kill(): Promise<void>;
  /** Kills the process if it runs and deletes the data directory. */
  dispose(): Promise<void>;
}

export async function serverOnDisk(env: Record<string, string> = {}): Promise<ServerOnDisk> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-e2e-'));
  const [port, mqttPort] = [await freePort(), await freePort()];
  const adminPassword = 'e2e-Mật-khẩu-quản-trị';
  const api = `http://127.0.0.1:${port}`;
  const server: ServerOnDisk = {
    api,
    mqttUrl: `mqtt://127.0.0.1:${mqttPort}`,
    dataDir,
    adminPassword,
    current: undefined,
    async start() {
      const started = startServer({
        PORT: String(port),
        MQTT_PORT: String(mqttPort),
        HOST: '127.0.0.1',
        DATA_DIR: dataDir,
        ADMIN_PASSWORD: adminPassword,
        LOG_LEVEL: 'warn',
        ...env,
      });
      server.current = started;
      let exited = false;
      void started.exited.then(() => (exited = true));
      await waitFor(
        async () => {
          if (exited) throw new Error(`the server exited during start-up:\n${started.output()}`);
          return (await fetch(`${api}/healthz`)).ok;
        },
        'the server to answer /healthz',
        30_000,
      );
      return started;
    },
    async kill() {
      const current = server.current;
      if (!current) return;
      current.child.kill('SIGKILL');
      await current.exited;
      server.current = undefined;
    },
    async dispose() {
      await server.kill();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

export interface Answer<T> {
  status: number;
  body: T;
}

/** JSON requests with a bearer token; the answer's status and parsed body (problem+json included). */
export class ApiClient {
  constructor(
    readonly api: string,
    public token = '',
  ) {}

  static async login(api: string, username: string, password: string): Promise<ApiClient> {
    const client = new ApiClient(api);
    const res = await client.request<{ token: string }>('POST', '/api/v1/auth/login', { username, password });
    if (res.status !== 200)
      throw new Error(`login of ${username}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
    client.token = res.body.token;
    return client;
  }

  async request<T = Record<string, unknown>>(
    method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
    url: string,
    body?: unknown,
  ): Promise<Answer<T>> {
    const res = await fetch(`${this.api}${url}`, {
      method,
      headers: {
        ...(body === undefined ? {} : { 'content-type': 'application/json; charset=utf-8' }),
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
  }

  /** The same, failing unless the status is the expected one; returns the body. */
  async expect<T = Record<string, unknown>>(
    status: number,
    method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
    url: string,
    body?: unknown,
  ): Promise<T> {
    const res = await this.request<T>(method, url, body);
    if (res.status !== status) {
      throw new Error(`${method} ${url}: expected ${status}, got ${res.status}: ${JSON.stringify(res.body)}`);
    }
    return res.body;
  }
}
