/**
 * The probe of a relay's stream, against real local HTTP servers: it reads headers only, follows a few
 * redirects to http or https and no further, gives up after its time-out, and reports little: reachable,
 * status, a bounded content type and a reason in words, never what the server sent in its body.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  isSpecialAddress,
  MAX_REDIRECTS,
  probeWarnings,
  relayProber,
} from '../src/modules/programmes/relay-probe.js';

const now = () => new Date('2026-06-01T01:00:00.000Z');

describe('relay probe', () => {
  const servers: http.Server[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  async function serve(handler: http.RequestListener): Promise<string> {
    const server = http.createServer(handler);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  it('does not probe loopback or private addresses unless allowed, however the address is written', async () => {
    let requests = 0;
    const base = await serve((_req, res) => {
      requests++;
      res.writeHead(200, { 'content-type': 'audio/mpeg' });
      res.end();
    });
    const port = new URL(base).port;
    const prober = relayProber({ now });
    for (const host of ['127.0.0.1', 'localhost', '[::ffff:127.0.0.1]', '[::1]', '0.0.0.0']) {
      const probe = await prober(`http://${host}:${port}/vov1`);
      expect(probe, host).toMatchObject({ reachable: false, status: null });
      expect(probe.error, host).toContain('not probed');
    }
    expect(requests).toBe(0);
    // Allowed, the same station answers: nothing else stood in the way.
    expect(await relayProber({ now, allowPrivateNetworks: true })(`${base}/vov1`)).toMatchObject({
      reachable: true,
    });
    expect(requests).toBe(1);
  });

  it('knows which addresses are special', () => {
    for (const address of [
      '10.1.2.3',
      '172.16.0.1',
      '192.168.1.1',
      '127.0.0.1',
      '169.254.169.254',
      '100.64.0.1',
    ]) {
      expect(isSpecialAddress(address), address).toBe(true);
    }
    for (const address of ['::1', 'fe80::1', 'fd00::1', '::ffff:192.168.0.1', '::', 'not an address']) {
      expect(isSpecialAddress(address), address).toBe(true);
    }
    for (const address of ['203.113.131.1', '8.8.8.8', '2001:ee0:4f00::1', '::ffff:203.113.131.1']) {
      expect(isSpecialAddress(address), address).toBe(false);
    }
  });

  it('reads only the headers of a stream that never ends, and records its content type', async () => {
    let bytesSent = 0;
    let closed!: () => void;
    const ended = new Promise<void>((resolve) => (closed = resolve));
    const base = await serve((req, res) => {
      res.writeHead(200, { 'content-type': 'audio/mpeg', 'icy-name': 'VOV1' });
      const timer = setInterval(() => {
        bytesSent += 16_384;
        res.write(Buffer.alloc(16_384));
      }, 5);
      req.socket.on('close', () => {
        clearInterval(timer);
        closed();
      });
    });
    const probe = await relayProber({ now, allowPrivateNetworks: true })(`${base}/vov1`);
    expect(probe).toEqual({
      reachable: true,
      status: 200,
      contentType: 'audio/mpeg',
      checkedAt: '2026-06-01T01:00:00.000Z',
    });
    expect(probeWarnings(probe)).toEqual([]);
    // The probe hung up instead of reading on.
    await ended;
    expect(bytesSent).toBeLessThan(4 * 1024 * 1024);
  });

  it('follows a few redirects to http, and no more than MAX_REDIRECTS', async () => {
    const base = await serve((req, res) => {
      const n = Number(req.url?.slice(1));
      if (n > 0) {
        res.writeHead(302, { location: `/${n - 1}` });
        return res.end();
      }
      res.writeHead(200, { 'content-type': 'application/vnd.apple.mpegurl' });
      res.end('#EXTM3U\n');
    });
    const prober = relayProber({ now, allowPrivateNetworks: true });
    expect(await prober(`${base}/${MAX_REDIRECTS}`)).toMatchObject({
      reachable: true,
      status: 200,
      contentType: 'application/vnd.apple.mpegurl',
    });
    expect(await prober(`${base}/${MAX_REDIRECTS + 1}`)).toMatchObject({
      reachable: false,
      status: 302,
      contentType: null,
      error: `more than ${MAX_REDIRECTS} redirects`,
    });
  });

  it('does not follow a redirect to anything but http or https', async () => {
    const base = await serve((req, res) => {
      const to: Record<string, string> = {
        '/file': 'file:///etc/passwd',
        '/ftp': 'ftp://192.168.1.1/stream.mp3',
        '/data': 'data:audio/mpeg;base64,AAAA',
        '/bad': 'http://[not a host/',
      };
      res.writeHead(301, { location: to[req.url ?? ''] ?? '/' });
      res.end();
    });
    const prober = relayProber({ now, allowPrivateNetworks: true });
    expect((await prober(`${base}/file`)).error).toBe(
      'the server redirected to a file: address; only http and https are followed',
    );
    expect((await prober(`${base}/ftp`)).error).toContain('ftp:');
    expect((await prober(`${base}/data`)).error).toContain('data:');
    expect(await prober(`${base}/bad`)).toMatchObject({
      reachable: false,
      status: 301,
      error: 'the server redirected to an address that is not a URL',
    });
  });

  it('reports an error page by its status only, and bounds a long content type', async () => {
    // Header values are ASCII; the body may say anything.
    const secret = 'admin password: hunter2';
    const base = await serve((req, res) => {
      if (req.url === '/long') {
        res.writeHead(200, { 'content-type': `audio/mpeg; x=${'a'.repeat(5_000)}` });
        return res.end();
      }
      res.writeHead(403, { 'content-type': 'text/html', 'x-internal': secret });
      res.end(`<h1>Cấm truy cập</h1><p>${secret}</p>`);
    });
    const prober = relayProber({ now, allowPrivateNetworks: true });
    const forbidden = await prober(`${base}/admin`);
    expect(forbidden).toMatchObject({
      reachable: false,
      status: 403,
      contentType: 'text/html',
      error: 'the server answered HTTP 403',
    });
    expect(JSON.stringify(forbidden)).not.toContain('hunter2');
    expect(probeWarnings(forbidden)[0]).toContain('the server answered HTTP 403');

    const long = await prober(`${base}/long`);
    expect(long.contentType).toHaveLength(200);
    expect(long.contentType?.startsWith('audio/mpeg; x=aaa')).toBe(true);
  });

  it('gives up after its time-out when the server never answers', async () => {
    const base = await serve(() => {
      // Accepts the request and never answers.
    });
    const probe = await relayProber({ now, timeoutMs: 200, allowPrivateNetworks: true })(`${base}/silent`);
    expect(probe).toMatchObject({
      reachable: false,
      status: null,
      contentType: null,
      error: 'no answer within 0.2 s',
    });
  });
});
