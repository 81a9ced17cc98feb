/**
 * Builds a real Loa app on a fresh SQLite file in a temporary folder, and helpers to act as its users.
 * Route tests use inject(); end-to-end tests call listen() to get real ports.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildApp, type AppOptions } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import type { Clock } from '../../src/lib/clock.js';

export const ADMIN_PASSWORD = 'admin-Mật-khẩu-1';
export const USER_PASSWORD = 'người-dùng-pass-1';

export interface TestApp {
  app: FastifyInstance;
  dataDir: string;
  adminToken: string;
  /** Sends a JSON request as the holder of `token` (no token: anonymous). */
  request(
    method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
    url: string,
    options?: { token?: string; body?: unknown },
  ): Promise<LightMyRequestResponse>;
  login(username: string, password: string): Promise<string>;
  createArea(
    body: { name: string; level: string; parentId?: string },
    token?: string,
  ): Promise<{ id: string }>;
  /** Creates a user with the role in the area and returns their token. */
  createUser(role: string, areaId: string | undefined, username?: string): Promise<string>;
  createDevice(
    areaId: string,
    name?: string,
    kind?: 'station' | 'cluster',
  ): Promise<{ id: string; credentials: { clientId: string; username: string; password: string } }>;
  /** Runs a query on the database file through a separate read-only connection, as an outsider would. */
  query(sql: string): unknown[];
  close(): Promise<void>;
}

let userCounter = 0;

export async function createTestApp(
  options: {
    clock?: Clock;
    env?: Record<string, string>;
    listen?: boolean;
    /** Where log lines go, for tests that read them (default: LOG_LEVEL silent). */
    logger?: AppOptions['logger'];
  } = {},
): Promise<TestApp> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-test-'));
  const config = loadConfig({
    DATA_DIR: dataDir,
    PORT: '0',
    MQTT_PORT: '0',
    HOST: '127.0.0.1',
    ADMIN_PASSWORD,
    LOG_LEVEL: 'silent',
    ...options.env,
  });
  const app = await buildApp({
    config,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.logger ? { logger: options.logger } : {}),
  });
  if (options.listen) await app.listen({ host: '127.0.0.1', port: 0 });
  else await app.ready();

  const request: TestApp['request'] = (method, url, opts = {}) =>
    app.inject({
      method,
      url,
      headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {},
      ...(opts.body !== undefined ? { payload: opts.body as object } : {}),
    });

  const expectStatus = (res: LightMyRequestResponse, status: number, what: string) => {
    if (res.statusCode !== status)
      throw new Error(`${what}: expected ${status}, got ${res.statusCode} ${res.body}`);
    return res.json<Record<string, unknown>>();
  };

  const login = async (username: string, password: string) => {
    const res = await request('POST', '/api/v1/auth/login', { body: { username, password } });
    return expectStatus(res, 200, 'login').token as string;
  };

  const adminToken = await login('admin', ADMIN_PASSWORD);

  return {
    app,
    dataDir,
    adminToken,
    request,
    login,
    async createArea(body, token = adminToken) {
      return expectStatus(await request('POST', '/api/v1/areas', { token, body }), 201, 'create area') as {
        id: string;
      };
    },
    async createUser(role, areaId, username = `user${++userCounter}`) {
      const res = await request('POST', '/api/v1/users', {
        token: adminToken,
        body: { username, password: USER_PASSWORD, role, ...(areaId ? { areaId } : {}) },
      });
      expectStatus(res, 201, 'create user');
      return login(username, USER_PASSWORD);
    },
    async createDevice(areaId, name = 'Cụm loa thôn Đông', kind = 'cluster') {
      const res = await request('POST', '/api/v1/devices', {
        token: adminToken,
        body: { name, kind, areaId },
      });
      return expectStatus(res, 201, 'create device') as never;
    },
    query(sql) {
      const db = new Database(config.databaseFile, { readonly: true });
      try {
        return db.prepare(sql).all();
      } finally {
        db.close();
      }
    },
    async close() {
      await app.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A province → district → two communes (each with a hamlet) tree, the shape most tests need. */
export async function createAreaTree(t: TestApp) {
  const province = await t.createArea({ name: 'Tỉnh Quảng Trị', level: 'province' });
  const district = await t.createArea({ name: 'Huyện Hải Lăng', level: 'district', parentId: province.id });
  const communeA = await t.createArea({ name: 'Xã Hải Phú', level: 'commune', parentId: district.id });
  const communeB = await t.createArea({ name: 'Xã Hải Thượng', level: 'commune', parentId: district.id });
  const hamletA = await t.createArea({ name: 'Thôn Đông', level: 'hamlet', parentId: communeA.id });
  const hamletB = await t.createArea({ name: 'Thôn Tây', level: 'hamlet', parentId: communeB.id });
  return { province, district, communeA, communeB, hamletA, hamletB };
}

/** Asserts the RFC 9457 shape and returns the parsed problem. */
export function problem(res: LightMyRequestResponse) {
  const body = res.json<{
    type: string;
    title: string;
    status: number;
    code: string;
    detail?: string;
    errors?: { field: string; message: string }[];
  }>();
  if (!res.headers['content-type']?.toString().startsWith('application/problem+json')) {
    throw new Error(`not problem+json: ${String(res.headers['content-type'])}`);
  }
  if (body.status !== res.statusCode || !body.type || !body.title || !body.code) {
    throw new Error(`malformed problem: ${res.body}`);
  }
  return body;
}
