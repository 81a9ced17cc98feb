/**
 * The API calls bench:scheduler makes: a second user and an approved relay programme (a programme is
 * approved by someone other than its author), schedules, the calendar, a trivial authenticated GET as
 * its baseline, and the playback log as CSV. Plain fetch; errors carry the server's problem+json.
 */
import { performance } from 'node:perf_hooks';

export class Api {
  constructor(
    readonly base: string,
    private readonly token: string,
  ) {}

  async call<T = Record<string, unknown>>(
    method: 'GET' | 'POST',
    url: string,
    body?: unknown,
    token = this.token,
  ): Promise<T> {
    const response = await fetch(`${this.base}${url}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        accept: 'application/json',
        ...(body === undefined ? {} : { 'content-type': 'application/json; charset=utf-8' }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${url}: HTTP ${response.status}: ${text.slice(0, 400)}`);
    return JSON.parse(text) as T;
  }

  /** The time of one GET whose body is read in full, in ms. */
  async timedGet(url: string): Promise<{ ms: number; body: unknown }> {
    const t0 = performance.now();
    const body = await this.call('GET', url);
    return { ms: performance.now() - t0, body };
  }
}

/** A user of the province who writes programmes (the admin then approves them: never the same person). */
export async function createBroadcaster(api: Api, base: string, areaId: string): Promise<string> {
  const username = 'bench.broadcaster';
  const password = 'bench-broadcaster-password';
  await api.call('POST', '/api/v1/users', {
    username,
    password,
    displayName: 'Phát thanh viên Nguyễn Thị Hoà',
    role: 'broadcaster',
    areaId,
  });
  const response = await fetch(`${base}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (!response.ok) throw new Error(`broadcaster login: HTTP ${response.status}`);
  return ((await response.json()) as { token: string }).token;
}

/**
 * An approved relay: it needs no rendering and devices download nothing, so the bench measures dispatch,
 * not audio. Its URL points at a port nobody listens on: the probe on save fails at once and the
 * programme is saved with a warning, as a stream not on air yet would be.
 */
export async function approvedRelay(
  admin: Api,
  broadcasterToken: string,
  areaId: string,
  title: string,
): Promise<string> {
  const created = await admin.call<{ id: string }>(
    'POST',
    '/api/v1/programmes',
    {
      title,
      areaId,
      category: 'news',
      content: { relay: { url: 'http://127.0.0.1:9/vov1.mp3', name: 'VOV1' } },
    },
    broadcasterToken,
  );
  await admin.call('POST', `/api/v1/programmes/${created.id}/submit`, {}, broadcasterToken);
  await admin.call('POST', `/api/v1/programmes/${created.id}/approve`, {});
  return created.id;
}

/** Runs `task` for 0..count−1 with `concurrency` in flight; stops at the first error. */
export async function inParallel(
  count: number,
  concurrency: number,
  task: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (next < count && !failed) {
      const index = next++;
      try {
        await task(index);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/**
 * GET /api/v1/calendar of an area over [from, to), every page (limit 5,000, the most a page holds), in ms
 * from the first request to the last byte of the last page.
 */
export async function calendarMonth(
  api: Api,
  areaId: string,
  from: string,
  to: string,
): Promise<{ ms: number; items: number; pages: number }> {
  const limit = 5_000;
  const t0 = performance.now();
  let items = 0;
  let pages = 0;
  for (let offset = 0; ; offset += limit) {
    const page = await api.call<{ items: unknown[]; total?: number }>(
      'GET',
      `/api/v1/calendar?areaId=${areaId}&from=${from}&to=${to}&limit=${limit}&offset=${offset}`,
    );
    pages += 1;
    items += page.items.length;
    // `total` when the answer has it; else a short page is the last one.
    if (page.items.length < limit || (page.total !== undefined && offset + limit >= page.total)) break;
  }
  return { ms: performance.now() - t0, items, pages };
}

/**
 * GET /api/v1/playback-log?format=csv, read as a stream: rows are counted as the bytes arrive (newlines
 * outside quoted fields, less the header), nothing is kept. Seconds from the request to the last byte.
 */
export async function csvRows(
  api: Api,
  token: string,
  query: string,
): Promise<{ rows: number; bytes: number; ms: number; bom: boolean }> {
  const t0 = performance.now();
  const response = await fetch(`${api.base}/api/v1/playback-log?${query}&format=csv`, {
    headers: { authorization: `Bearer ${token}` },
  });
  if (!response.ok || !response.body) {
    throw new Error(
      `GET playback-log CSV: HTTP ${response.status}: ${(await response.text()).slice(0, 300)}`,
    );
  }
  let lines = 0;
  let bytes = 0;
  let quoted = false;
  let first: number | undefined;
  let last = 0x0a;
  for await (const chunk of response.body) {
    const bytesOf = chunk as Uint8Array;
    first ??= bytesOf[0];
    bytes += bytesOf.length;
    for (const b of bytesOf) {
      if (b === 0x22) quoted = !quoted;
      else if (b === 0x0a && !quoted) lines += 1;
    }
    if (bytesOf.length > 0) last = bytesOf[bytesOf.length - 1] ?? last;
  }
  const ms = performance.now() - t0;
  // A last line without its newline is a row too.
  if (last !== 0x0a && bytes > 0) lines += 1;
  return { rows: Math.max(0, lines - 1), bytes, ms, bom: first === 0xef };
}
