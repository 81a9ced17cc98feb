/**
 * `POST /commands` with `source.kind = "programme"`: only approved programmes play; the server fills in the
 * device source (a signed download link valid past the command's expiry, the hash and the duration, or a
 * relay's stream) and records which programme and revision the command airs.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { ManualClock } from './support/clock.js';

type Programme = { id: string; current: { id: string; sha256: string; durationMs: number } };

describe('play commands naming a programme', () => {
  let t: TestApp;
  let clock: ManualClock;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let broadcaster: string;
  let approver: string;
  let device: { id: string };

  beforeEach(async () => {
    clock = new ManualClock('2026-06-01T01:00:00.000Z');
    t = await createTestApp({ clock, env: { PUBLIC_URL: 'https://loa.quangtri.example' } });
    tree = await createAreaTree(t);
    broadcaster = await t.createUser('broadcaster', tree.communeA.id);
    approver = await t.createUser('approver', tree.communeA.id);
    device = await t.createDevice(tree.hamletA.id);
  });
  afterEach(async () => t.close());

  async function programme(content: unknown, approve = true): Promise<Programme> {
    const res = await t.request('POST', '/api/v1/programmes', {
      token: broadcaster,
      body: {
        title: 'Thông báo lịch tiêm phòng dại – Thôn Đông',
        areaId: tree.communeA.id,
        category: 'health',
        content,
      },
    });
    expect(res.statusCode).toBe(201);
    const created = res.json<Programme>();
    if (approve) {
      expect(
        (await t.request('POST', `/api/v1/programmes/${created.id}/submit`, { token: broadcaster }))
          .statusCode,
      ).toBe(200);
      expect(
        (await t.request('POST', `/api/v1/programmes/${created.id}/approve`, { token: approver })).statusCode,
      ).toBe(200);
    }
    return created;
  }

  const play = (programmeId: string, token = broadcaster, extra: Record<string, unknown> = {}) =>
    t.request('POST', '/api/v1/commands', {
      token,
      body: {
        type: 'play',
        params: { source: { kind: 'programme', programmeId }, volume: 80 },
        targets: { deviceIds: [device.id] },
        ...extra,
      },
    });

  it('sends an approved bulletin as a signed download with its hash and duration', async () => {
    const bulletin = await programme({ segments: [{ silenceMs: 1200 }] });
    const res = await play(bulletin.id, broadcaster, { expiresInS: 900 });
    expect(res.statusCode).toBe(202);
    const { id } = res.json<{ id: string }>();

    const detail = await t.request('GET', `/api/v1/commands/${id}`, { token: broadcaster });
    const params = detail.json<{
      params: {
        sessionId: string;
        volume: number;
        source: { kind: string; url: string; sha256: string; durationMs: number };
      };
    }>().params;
    expect(params.sessionId).toMatch(/^ses_/);
    expect(params.volume).toBe(80);
    expect(params.source).toMatchObject({
      kind: 'media',
      sha256: bulletin.current.sha256,
      durationMs: bulletin.current.durationMs,
    });
    expect(Object.keys(params.source).sort()).toEqual(['durationMs', 'kind', 'sha256', 'url']);
    const url = new URL(params.source.url);
    expect(url.origin).toBe('https://loa.quangtri.example');
    expect(url.pathname).toBe(`/downloads/${bulletin.current.sha256}.mp3`);
    expect(url.searchParams.get('signature')).toMatch(/^[\w-]{43}$/);
    // Valid until the command's expiry (15 min) plus an hour's margin for a late download.
    expect(Number(url.searchParams.get('expires'))).toBe(Date.parse('2026-06-01T02:15:00.000Z') / 1000);

    // What is stored is what devices get, and the row names the programme and revision it airs.
    expect(t.query(`SELECT programme_id, programme_revision_id FROM commands WHERE id = '${id}'`)).toEqual([
      { programme_id: bulletin.id, programme_revision_id: bulletin.current.id },
    ]);

    // The link works without a token and serves the very bytes the hash names.
    const download = await t.app.inject({ method: 'GET', url: `${url.pathname}${url.search}` });
    expect(download.statusCode).toBe(200);
    expect(createHash('sha256').update(download.rawPayload).digest('hex')).toBe(bulletin.current.sha256);

    const audit = await t.request('GET', `/api/v1/audit?targetType=command&targetId=${id}`, {
      token: t.adminToken,
    });
    expect(JSON.stringify(audit.json())).toContain(bulletin.current.sha256);
  });

  it('sends an approved relay as a stream', async () => {
    const station = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'audio/mpeg' });
      res.end();
    });
    await new Promise<void>((resolve) => station.listen(0, '127.0.0.1', resolve));
    const streamUrl = `http://127.0.0.1:${(station.address() as AddressInfo).port}/vov1`;
    try {
      const relay = await programme({ relay: { url: streamUrl, name: 'VOV1' } });
      const res = await play(relay.id);
      expect(res.statusCode).toBe(202);
      const detail = await t.request('GET', `/api/v1/commands/${res.json<{ id: string }>().id}`, {
        token: broadcaster,
      });
      expect(detail.json<{ params: { source: unknown } }>().params.source).toEqual({
        kind: 'stream',
        url: streamUrl,
      });
    } finally {
      await new Promise<void>((resolve) => station.close(() => resolve()));
    }
  });

  it('refuses a programme that is not approved (409), unknown or out of sight (404)', async () => {
    const draft = await programme({ segments: [{ silenceMs: 500 }] }, false);
    const res = await play(draft.id);
    expect(res.statusCode).toBe(409);
    expect(problem(res).code).toBe('not_approved');
    await t.request('POST', `/api/v1/programmes/${draft.id}/submit`, { token: broadcaster });
    expect(problem(await play(draft.id)).code).toBe('not_approved');
    // Nothing was sent or stored.
    expect(t.query('SELECT count(*) AS n FROM commands')).toEqual([{ n: 0 }]);

    const unknown = await play('prg_nothing');
    expect(unknown.statusCode).toBe(404);
    expect(problem(unknown).detail).toContain('programmeId');

    // A broadcaster of the neighbouring commune cannot see it, so cannot play it either.
    const neighbour = await t.createUser('broadcaster', tree.communeB.id);
    const theirDevice = await t.createDevice(tree.hamletB.id, 'Cụm loa thôn Tây');
    const approvedElsewhere = await programme({ segments: [{ silenceMs: 500 }] });
    const hidden = await play(approvedElsewhere.id, neighbour, { targets: { deviceIds: [theirDevice.id] } });
    expect(hidden.statusCode).toBe(404);

    const malformed = await t.request('POST', '/api/v1/commands', {
      token: broadcaster,
      body: { type: 'play', params: { source: { kind: 'programme' } }, targets: { deviceIds: [device.id] } },
    });
    expect(malformed.statusCode).toBe(400);
    expect(problem(malformed).errors?.[0]?.field).toBe('body.params.source.programmeId');
  });

  it('refuses to delete a programme while a play of it has not expired', async () => {
    const bulletin = await programme({ segments: [{ silenceMs: 500 }] });
    expect((await play(bulletin.id, broadcaster, { expiresInS: 60 })).statusCode).toBe(202);
    const refused = await t.request('DELETE', `/api/v1/programmes/${bulletin.id}`, { token: broadcaster });
    expect(refused.statusCode).toBe(409);
    expect(problem(refused).code).toBe('in_use');

    clock.advance(61_000);
    const deleted = await t.request('DELETE', `/api/v1/programmes/${bulletin.id}`, { token: broadcaster });
    expect(deleted.statusCode).toBe(204);
    // Gone for new plays; the record of the old one stays.
    expect((await play(bulletin.id)).statusCode).toBe(404);
    expect(t.query(`SELECT count(*) AS n FROM commands WHERE programme_id = '${bulletin.id}'`)).toEqual([
      { n: 1 },
    ]);
  });
  it('acts once for a programme play sent twice with one Idempotency-Key, and keeps stop and volume plain', async () => {
    const bulletin = await programme({ segments: [{ silenceMs: 800 }] });
    const send = () =>
      t.app.inject({
        method: 'POST',
        url: '/api/v1/commands',
        headers: { authorization: `Bearer ${broadcaster}`, 'idempotency-key': 'phat-thong-bao-tiem-phong-1' },
        payload: {
          type: 'play',
          params: { source: { kind: 'programme', programmeId: bulletin.id } },
          targets: { deviceIds: [device.id] },
        },
      });
    const first = await send();
    expect(first.statusCode).toBe(202);
    const again = await send();
    expect(again.statusCode).toBe(202);
    expect(again.json<{ id: string }>().id).toBe(first.json<{ id: string }>().id);
    expect(t.query(`SELECT count(*) AS n FROM commands WHERE programme_id = '${bulletin.id}'`)).toEqual([
      { n: 1 },
    ]);

    // A programme names what to play: a stop or a volume change given one plays nothing and records none.
    for (const body of [
      { type: 'stop', params: { source: { kind: 'programme', programmeId: bulletin.id } } },
      { type: 'volume', params: { level: 40, source: { kind: 'programme', programmeId: bulletin.id } } },
    ]) {
      const res = await t.request('POST', '/api/v1/commands', {
        token: broadcaster,
        body: { ...body, targets: { deviceIds: [device.id] } },
      });
      expect(res.statusCode).toBe(202);
      const id = res.json<{ id: string }>().id;
      const [row] = t.query(
        `SELECT programme_id, programme_revision_id, params FROM commands WHERE id = '${id}'`,
      ) as { programme_id: string | null; programme_revision_id: string | null; params: string }[];
      expect(row).toMatchObject({ programme_id: null, programme_revision_id: null });
      expect(row?.params).not.toContain('programme');
    }
  });
});
