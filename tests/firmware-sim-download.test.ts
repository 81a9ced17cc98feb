/**
 * firmware-sim downloads for real: downloadVerified against a local node:http file server (a few hundred KB
 * of random bytes), then simulated devices on the app's embedded broker playing media through the commands
 * API: verified and played, served from the hash cache, a wrong hash, HTTP errors, a link cut mid-file
 * resumed with Range, a newer command or a stop winning over a download in flight, and --no-download.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DownloadError, HashCache, downloadVerified } from '../firmware-sim/src/download.js';
import { SimDevice, type DownloadEvent, type SimDeviceOptions } from '../firmware-sim/src/device.js';
import { createAreaTree, createTestApp, type TestApp } from './support/app.js';
import { root, withTsx } from './support/processes.js';
import { waitFor } from './support/wait.js';

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** How the file server answers a path: the file, an error status, or a misbehaving link. */
type Behaviour =
  | 'ok'
  | 404
  | 403
  /** Sends half the body, then closes the connection (every time, or only the first time). */
  | 'cut-once'
  | 'cut-always'
  /** Holds the response until release() is called. */
  | 'hold'
  /** Ignores Range: always the whole file with 200. */
  | 'no-range';

interface Seen {
  path: string;
  range: string | undefined;
  ifRange: string | undefined;
}

/** A plain node:http server serving generated files, counting and recording every request. */
class FileServer {
  readonly requests: Seen[] = [];
  private readonly files = new Map<string, { body: Buffer; behaviour: Behaviour; served: number }>();
  private readonly held: (() => void)[] = [];
  private readonly server = http.createServer((req, res) => this.handle(req, res));
  base = '';

  async start(): Promise<void> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.release();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Serves `body` at a fresh path (with a query, like a signed URL) and returns its URL. */
  add(name: string, body: Buffer, behaviour: Behaviour = 'ok'): string {
    this.files.set(`/downloads/${name}`, { body, behaviour, served: 0 });
    return `${this.base}/downloads/${name}?expires=4102444800&signature=dGVzdA`;
  }

  count(name: string): number {
    return this.requests.filter((r) => r.path === `/downloads/${name}`).length;
  }

  release(): void {
    for (const go of this.held.splice(0)) go();
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const range = req.headers.range;
    const ifRange = req.headers['if-range'] as string | undefined;
    this.requests.push({ path: url.pathname, range, ifRange });
    const file = this.files.get(url.pathname);
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    const { body, behaviour } = file;
    file.served += 1;
    if (behaviour === 404 || behaviour === 403) {
      res.writeHead(behaviour, { 'content-type': 'text/plain' }).end('không được');
      return;
    }
    const etag = `"${sha(body)}"`;
    const send = (): void => {
      const resume = /^bytes=(\d+)-$/.exec(range ?? '');
      const honoured = behaviour !== 'no-range' && resume && (ifRange === undefined || ifRange === etag);
      const from = honoured ? Number(resume[1]) : 0;
      const part = body.subarray(from);
      const headers = { 'content-length': String(part.length), etag, 'content-type': 'audio/mpeg' };
      if (honoured)
        res.writeHead(206, {
          ...headers,
          'content-range': `bytes ${from}-${body.length - 1}/${body.length}`,
        });
      else res.writeHead(200, headers);
      const cut = behaviour === 'cut-always' || (behaviour === 'cut-once' && file.served === 1);
      if (!cut) {
        res.end(part);
        return;
      }
      // Half the file leaves, then the link dies: the client sees fewer bytes than Content-Length.
      res.write(part.subarray(0, Math.floor(part.length / 2)), () => res.destroy());
    };
    if (behaviour === 'hold') this.held.push(send);
    else send();
  }
}

describe('downloadVerified', () => {
  const files = new FileServer();
  const body = randomBytes(300 * 1024);
  const hash = sha(body);
  let n = 0;
  const name = () => `tep-${++n}.mp3`;

  beforeAll(() => files.start());
  afterAll(() => files.close());

  it('streams the file through SHA-256 and answers a second download of the same hash from the cache', async () => {
    const file = name();
    const url = files.add(file, body);
    const cache = new HashCache(16);
    expect(await downloadVerified(url, hash, { cache })).toEqual({ bytes: body.length, fromCache: false });
    // Upper-case hex names the same file.
    expect(await downloadVerified(url, hash.toUpperCase(), { cache })).toEqual({
      bytes: body.length,
      fromCache: true,
    });
    expect(files.count(file)).toBe(1);
    expect(files.requests.find((r) => r.path.endsWith(file))?.range).toBeUndefined();
  });

  it('refuses a file whose hash differs, and does not cache it', async () => {
    const file = name();
    const url = files.add(file, body);
    const cache = new HashCache();
    const wrong = sha(Buffer.from('Bản tin sáng – Thôn Đông'));
    const error = await downloadVerified(url, wrong, { cache }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DownloadError);
    expect(error).toMatchObject({ reason: 'checksum_mismatch' });
    expect((error as Error).message).toContain(hash);
    expect(cache.size).toBe(0);
  });

  it('fails with download_failed on 404, 403 and a refused connection, without the signature in the message', async () => {
    for (const status of [404, 403] as const) {
      const url = files.add(name(), body, status);
      const error = await downloadVerified(url, hash).catch((e: unknown) => e);
      expect(error).toMatchObject({ reason: 'download_failed' });
      expect((error as Error).message).toContain(`HTTP ${status}`);
      expect((error as Error).message).not.toContain('signature');
    }
    const closed = http.createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const refused = await downloadVerified(`http://127.0.0.1:${port}/x.mp3`, hash).catch((e: unknown) => e);
    expect(refused).toMatchObject({ reason: 'download_failed' });
    expect((refused as Error).message).toContain('ECONNREFUSED');
  });

  it('resumes once with Range and If-Range when the link breaks mid-file, hashing on', async () => {
    const file = name();
    const url = files.add(file, body, 'cut-once');
    expect(await downloadVerified(url, hash)).toEqual({ bytes: body.length, fromCache: false });
    const seen = files.requests.filter((r) => r.path.endsWith(file));
    expect(seen).toHaveLength(2);
    expect(seen[0]?.range).toBeUndefined();
    expect(seen[1]?.range).toMatch(/^bytes=\d+-$/);
    expect(Number(/\d+/.exec(seen[1]?.range ?? '')?.[0])).toBeGreaterThan(0);
    expect(seen[1]?.ifRange).toBe(`"${hash}"`);
  });

  it('gives up after one resume, and starts over when the resume answers the whole file', async () => {
    const broken = name();
    const error = await downloadVerified(files.add(broken, body, 'cut-always'), hash).catch(
      (e: unknown) => e,
    );
    expect(error).toMatchObject({ reason: 'download_failed' });
    expect(files.count(broken)).toBe(2);

    // A server that ignores Range: the 200 after the cut is the whole file, hashed from its first byte.
    const ranges: (string | undefined)[] = [];
    const server = http.createServer((req, res) => {
      ranges.push(req.headers.range);
      res.writeHead(200, { 'content-length': String(body.length), etag: `"${hash}"` });
      if (ranges.length === 1) res.write(body.subarray(0, 1000), () => res.destroy());
      else res.end(body);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as AddressInfo;
    try {
      expect(await downloadVerified(`http://127.0.0.1:${port}/tep.mp3`, hash)).toEqual({
        bytes: body.length,
        fromCache: false,
      });
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    expect(ranges).toEqual([undefined, 'bytes=1000-']);
  });

  it('times out a server that never answers, and stops at once when aborted', async () => {
    const file = name();
    const url = files.add(file, body, 'hold');
    const late = await downloadVerified(url, hash, { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(late).toMatchObject({ reason: 'download_failed' });
    expect((late as Error).message).toContain('no response within 200 ms');

    const controller = new AbortController();
    const aborted = downloadVerified(url, hash, { signal: controller.signal }).catch((e: unknown) => e);
    await waitFor(() => files.count(file) === 2, 'second request');
    controller.abort(new Error('lệnh mới hơn'));
    expect(await aborted).toMatchObject({ message: 'lệnh mới hơn' });
    files.release();
  });

  it('keeps the most recently used hashes only', () => {
    const cache = new HashCache(2);
    cache.add('a'.repeat(64), 1);
    cache.add('b'.repeat(64), 2);
    expect(cache.get('a'.repeat(64))).toBe(1);
    cache.add('c'.repeat(64), 3);
    expect(cache.get('b'.repeat(64))).toBeUndefined();
    expect(cache.get('a'.repeat(64))).toBe(1);
    expect(cache.get('c'.repeat(64))).toBe(3);
  });
});

type Detail = {
  counts: Record<string, number>;
  devices: { deviceId: string; status: string; reason?: string }[];
};

describe('simulated devices download what they play', () => {
  const files = new FileServer();
  const body = randomBytes(256 * 1024);
  const hash = sha(body);
  let n = 0;
  const name = () => `ban-tin-${++n}.mp3`;
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let mqttUrl: string;
  const sims: SimDevice[] = [];

  beforeAll(async () => {
    await files.start();
    t = await createTestApp({ listen: true });
    tree = await createAreaTree(t);
    mqttUrl = `mqtt://127.0.0.1:${t.app.broker.port}`;
  });
  afterAll(async () => {
    await t.close();
    await files.close();
  });
  beforeEach(() => files.release());
  afterEach(async () => {
    await Promise.all(sims.splice(0).map((s) => s.close()));
  });

  async function device(options: Partial<SimDeviceOptions> = {}) {
    const created = await t.createDevice(tree.hamletA.id, `Cụm loa Thôn Đông ${sims.length + 1}`);
    const sim = new SimDevice({
      id: created.id,
      password: created.credentials.password,
      mqttUrl,
      // The 10-minute plays below last 6 real seconds: still playing whenever a test looks.
      speed: 100,
      reconnectPeriodMs: 100,
      ...options,
    });
    sims.push(sim);
    const downloads: DownloadEvent[] = [];
    sim.on('download', (event) => downloads.push(event));
    await sim.connect();
    await waitFor(() => t.app.broker.isReady(created.id), 'device ready');
    return { id: created.id, sim, downloads };
  }

  const play = async (deviceIds: string[], url: string, sha256 = hash, priority = 'normal') => {
    const res = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: {
        type: 'play',
        priority,
        params: { source: { kind: 'media', url, sha256, durationMs: 600_000 } },
        targets: { deviceIds },
      },
    });
    expect(res.statusCode, res.body).toBe(202);
    return res.json<{ id: string }>().id;
  };
  const settled = (id: string, expected: Record<string, number>) =>
    waitFor(
      async () => {
        const res = await t.request('GET', `/api/v1/commands/${id}`, { token: t.adminToken });
        const d = res.json<Detail>();
        return Object.entries(expected).every(([status, count]) => d.counts[status] === count) ? d : null;
      },
      `command ${id} to reach ${JSON.stringify(expected)}`,
    );

  it('downloads and verifies before playing, and plays the same file again from its cache', async () => {
    const d = await device();
    const file = name();
    const url = files.add(file, body);
    const first = await play([d.id], url);
    await settled(first, { done: 1 });
    expect(d.sim.state.playing?.commandId).toBe(first);
    expect(d.downloads).toEqual([{ commandId: first, sha256: hash, bytes: body.length, fromCache: false }]);

    const second = await play([d.id], url);
    await settled(second, { done: 1 });
    expect(d.sim.state.playing?.commandId).toBe(second);
    expect(d.downloads[1]).toMatchObject({ commandId: second, fromCache: true });
    expect(files.count(file)).toBe(1);
    expect(d.sim.counters).toMatchObject({ downloads: 1, cacheHits: 1, downloadFailures: 0 });
  });

  it('acks failed with checksum_mismatch for a wrong hash and logs the failed playback', async () => {
    const d = await device();
    const logs: { event: string; reason?: string }[] = [];
    d.sim.on('log', (entry) => logs.push(entry));
    const id = await play([d.id], files.add(name(), body), sha(Buffer.from('tệp khác')));
    const detail = await settled(id, { failed: 1 });
    expect(detail.devices[0]).toMatchObject({ status: 'failed', reason: 'checksum_mismatch' });
    expect(logs).toEqual([expect.objectContaining({ event: 'failed', reason: 'checksum_mismatch' })]);
    expect(d.sim.state.playing).toBeNull();
  });

  it('acks failed with download_failed on 404 and 403 (an expired signature)', async () => {
    const d = await device();
    for (const status of [404, 403] as const) {
      const id = await play([d.id], files.add(name(), body, status));
      const detail = await settled(id, { failed: 1 });
      expect(detail.devices[0]).toMatchObject({ status: 'failed', reason: 'download_failed' });
    }
    expect(d.downloads.map((e) => e.reason)).toEqual(['download_failed', 'download_failed']);
  });

  it('resumes a download cut mid-file with Range and plays it verified', async () => {
    const d = await device();
    const file = name();
    const id = await play([d.id], files.add(file, body, 'cut-once'));
    await settled(id, { done: 1 });
    const seen = files.requests.filter((r) => r.path.endsWith(file));
    expect(seen.map((r) => r.range === undefined)).toEqual([true, false]);
    expect(seen[1]?.range).toMatch(/^bytes=[1-9]\d*-$/);
  });

  it('lets a newer emergency win over a download in flight, and a stop cancel one', async () => {
    const d = await device();
    const slow = name();
    const normal = await play([d.id], files.add(slow, body, 'hold'));
    await waitFor(() => files.count(slow) === 1, 'download started');
    // The routine bulletin is still downloading when an emergency arrives: the newer, higher one wins.
    const emergency = await play([d.id], files.add(name(), body), hash, 'emergency');
    await settled(emergency, { done: 1 });
    const view = await settled(normal, { failed: 1 });
    expect(view.devices[0]).toMatchObject({ reason: 'preempted' });
    files.release();
    expect(d.sim.state.playing).toMatchObject({ commandId: emergency, priority: 'emergency' });

    // A routine play during the emergency is refused; a stop of what plays ends it.
    const refused = await play([d.id], files.add(name(), body));
    expect((await settled(refused, { rejected: 1 })).devices[0]).toMatchObject({ reason: 'lower_priority' });

    const other = await device();
    const held = name();
    const pending = await play([other.id], files.add(held, randomBytes(1024), 'hold'), hash);
    await waitFor(() => files.count(held) === 1, 'second download started');
    const res = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: { type: 'stop', params: {}, targets: { deviceIds: [other.id] } },
    });
    expect(res.statusCode, res.body).toBe(202);
    await settled(res.json<{ id: string }>().id, { done: 1 });
    expect((await settled(pending, { failed: 1 })).devices[0]).toMatchObject({ reason: 'stopped' });
    files.release();
    expect(other.sim.state.playing).toBeNull();
    expect(other.sim.counters.downloadFailures).toBe(0);
  });

  it('forgets a download on reboot, and downloads again when the server re-sends the play', async () => {
    const d = await device({ bootS: 1 });
    const file = name();
    const id = await play([d.id], files.add(file, body, 'hold'));
    await waitFor(() => files.count(file) === 1, 'download started');
    const res = await t.request('POST', '/api/v1/commands', {
      token: t.adminToken,
      body: { type: 'reboot', params: {}, targets: { deviceIds: [d.id] } },
    });
    expect(res.statusCode, res.body).toBe(202);
    await settled(res.json<{ id: string }>().id, { done: 1 });
    // Back from the reboot, the device is sent the play again (it never answered it) and starts afresh.
    await waitFor(() => files.count(file) === 2, 'download after the reboot');
    files.release();
    await settled(id, { done: 1 });
    expect(d.sim.state.playing?.commandId).toBe(id);
    expect(d.downloads).toEqual([
      expect.objectContaining({ commandId: id, fromCache: false, bytes: body.length }),
    ]);
  });

  it('plays without any request with noDownload, and the corruptDownloads fault fails the check', async () => {
    const d = await device({ noDownload: true });
    const file = name();
    const id = await play([d.id], files.add(file, body), sha(Buffer.from('không cần tải')));
    await settled(id, { done: 1 });
    expect(files.count(file)).toBe(0);
    expect(d.downloads).toEqual([]);

    const faulty = await device({ faults: { corruptDownloads: true } });
    const corrupt = name();
    const failed = await play([faulty.id], files.add(corrupt, body));
    expect((await settled(failed, { failed: 1 })).devices[0]).toMatchObject({ reason: 'checksum_mismatch' });
    expect(files.count(corrupt)).toBe(1);
  });

  it('the CLI with --no-download plays without any request', async () => {
    const created = await t.createDevice(tree.hamletA.id, 'Cụm loa CLI – Thôn Đông');
    const credentials = path.join(t.dataDir, 'creds.json');
    writeFileSync(credentials, JSON.stringify([created.credentials]), { mode: 0o600 });
    const [node, args] = withTsx('firmware-sim/src/cli.ts');
    const child = spawn(
      node,
      [...args, '--devices-file', credentials, '--mqtt', mqttUrl, '--no-download', '--summary-s', '0'],
      { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const exited = once(child, 'exit');
    try {
      await waitFor(() => t.app.broker.isReady(created.id), 'CLI device ready', 20_000);
      expect(output).toContain('no downloads');
      const file = name();
      const id = await play([created.id], files.add(file, body));
      await settled(id, { done: 1 });
      expect(files.count(file)).toBe(0);
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
