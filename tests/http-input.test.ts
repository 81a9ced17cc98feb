/**
 * Bad input over HTTP: whatever a client sends, the answer is problem+json from the catalogue, and nothing
 * malformed is parsed, acted on or stored.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { connectDevice, end } from './support/mqtt.js';

let t: TestApp;
let tree: Awaited<ReturnType<typeof createAreaTree>>;

beforeAll(async () => {
  t = await createTestApp({ listen: true });
  tree = await createAreaTree(t);
});
afterAll(async () => {
  await t.close();
});

const get = (url: string) =>
  t.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${t.adminToken}` } });

/** Sends raw bytes to the listening HTTP server and resolves with everything it answers before closing. */
function rawHttp(request: string): Promise<{ status: number; headers: string; body: string }> {
  const { port } = t.app.server.address() as net.AddressInfo;
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('end', () => {
      socket.destroy();
      const text = Buffer.concat(chunks).toString('utf8');
      const [head = '', body = ''] = text.split('\r\n\r\n');
      resolve({ status: Number(head.split(' ')[1]), headers: head, body });
    });
    socket.write(request);
  });
}

describe("Fastify's own errors are problem+json", () => {
  it('answers a malformed %-escape in the path with 400 bad_request', async () => {
    for (const url of ['/api/v1/devices/%E0%A4%A', '/api/v1/areas/abc%zz']) {
      const res = await get(url);
      expect(res.statusCode).toBe(400);
      expect(problem(res)).toMatchObject({ code: 'bad_request', instance: expect.any(String) as string });
    }
  });

  it('answers a 400-character id with a 400 that names the parameter', async () => {
    const res = await get(`/api/v1/devices/dev_${'x'.repeat(396)}`);
    expect(res.statusCode).toBe(400);
    const body = problem(res);
    expect(body.code).toBe('validation_failed');
    expect(body.errors?.map((e) => e.field)).toEqual(['path.id']);
  });

  it('answers a plain HTTP request to the MQTT WebSocket endpoint with 400 problem+json', async () => {
    const res = await get('/mqtt');
    expect(res.statusCode).toBe(400);
    expect(problem(res).detail).toContain('MQTT over WebSocket');
    expect(res.headers['x-request-id']).toEqual(expect.any(String));
  });

  it('answers a path segment over the router limit with 414 uri_too_long', async () => {
    const res = await get(`/api/v1/areas/${'a'.repeat(5_000)}/summary`);
    expect(res.statusCode).toBe(414);
    expect(problem(res).code).toBe('uri_too_long');
  });

  it('answers a 60 KB query, refused by the HTTP parser itself, with 431 problem+json', async () => {
    const res = await rawHttp(
      `GET /api/v1/devices?firmware=${'9'.repeat(60_000)} HTTP/1.1\r\nHost: localhost\r\n\r\n`,
    );
    expect(res.status).toBe(431);
    expect(res.headers.toLowerCase()).toContain('content-type: application/problem+json');
    expect(JSON.parse(res.body)).toMatchObject({
      type: 'urn:loa:problem:headers_too_large',
      status: 431,
      code: 'headers_too_large',
    });
  });

  it('answers bytes that are not HTTP with 400 problem+json', async () => {
    const res = await rawHttp('HELLO WORLD\r\n\r\n');
    expect(res.status).toBe(400);
    expect(JSON.parse(res.body)).toMatchObject({ status: 400, code: 'bad_request' });
  });
});

describe('bodies that are not JSON', () => {
  it('refuses a text/plain credentials rotation with 415 and leaves the old credentials working', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông 1');
    const url = `/api/v1/devices/${device.id}/credentials`;
    const auth = { authorization: `Bearer ${t.adminToken}` };
    for (const request of [
      { headers: { ...auth, 'content-type': 'text/plain' }, payload: 'rotate please' },
      { headers: { ...auth, 'content-type': 'text/plain' } },
      { headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=1' },
      { headers: { ...auth, 'content-type': 'multipart/form-data; boundary=x' }, payload: '--x--' },
      { headers: { ...auth, 'content-length': '3' }, payload: 'abc' },
    ]) {
      const res = await t.app.inject({ method: 'POST', url, ...request });
      expect([request.headers, res.statusCode]).toEqual([request.headers, 415]);
      expect(problem(res)).toMatchObject({
        code: 'unsupported_media_type',
        detail: expect.stringContaining('application/json') as string,
      });
    }
    // Still the old secret: the device connects with it.
    const client = await connectDevice(`mqtt://127.0.0.1:${t.app.broker.port}`, device.credentials);
    await end(client);
  });

  it('still accepts the rotation as a bodiless POST or with a JSON content type', async () => {
    const device = await t.createDevice(tree.hamletA.id, 'Cụm loa thôn Đông 2');
    const res = await t.app.inject({
      method: 'POST',
      url: `/api/v1/devices/${device.id}/credentials`,
      headers: { authorization: `Bearer ${t.adminToken}` },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json<{ password: string }>().password).not.toBe(device.credentials.password);
  });
});

describe('text that is not well-formed Unicode', () => {
  const send = (method: 'POST' | 'PATCH', url: string, json: string) =>
    t.app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${t.adminToken}`, 'content-type': 'application/json' },
      payload: json,
    });

  it('refuses a lone surrogate in an area name with 400 naming the field, and stores nothing', async () => {
    const res = await send(
      'POST',
      '/api/v1/areas',
      `{"name":"Thôn \\ud800x","level":"hamlet","parentId":"${tree.communeA.id}"}`,
    );
    expect(res.statusCode).toBe(400);
    const body = problem(res);
    expect(body.code).toBe('validation_failed');
    expect(body.errors).toEqual([
      { field: 'body.name', message: expect.stringContaining('surrogate') as string },
    ]);
    expect(t.query(`SELECT count(*) AS n FROM areas WHERE name LIKE 'Thôn %x'`)).toEqual([{ n: 0 }]);
  });

  it('refuses a lone low surrogate in a device name, and names every bad field', async () => {
    const device = await t.createDevice(tree.hamletB.id, 'Cụm loa thôn Tây');
    const res = await send('PATCH', `/api/v1/devices/${device.id}`, '{"name":"Loa \\udc00 Tây"}');
    expect(res.statusCode).toBe(400);
    expect(problem(res).errors?.map((e) => e.field)).toEqual(['body.name']);
    const multi = await send(
      'POST',
      '/api/v1/devices',
      `{"name":"\\ud83d","kind":"cluster","areaId":"${tree.hamletB.id}","extra":["ok","\\udfff"]}`,
    );
    expect(multi.statusCode).toBe(400);
    expect(problem(multi).errors?.map((e) => e.field)).toEqual(['body.name', 'body.extra.1']);
    expect((await get(`/api/v1/devices/${device.id}`)).json<{ name: string }>().name).toBe(
      'Cụm loa thôn Tây',
    );
  });

  it('accepts Vietnamese text and characters outside the BMP written as surrogate pairs', async () => {
    const res = await send(
      'POST',
      '/api/v1/areas',
      `{"name":"Thôn Đông \\ud83d\\udce2","level":"hamlet","parentId":"${tree.communeB.id}"}`,
    );
    expect(res.statusCode).toBe(201);
    expect(res.json<{ name: string }>().name).toBe('Thôn Đông 📢');
  });
});
