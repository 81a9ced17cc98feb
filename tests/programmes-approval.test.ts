/**
 * Approval of programmes: draft → submitted → approved | rejected, who may do what where, revisions that
 * leave the approved one airing, and the history. Relays (no rendering) keep most of these fast; one
 * bulletin checks that a play after an edit still sends the approved file.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';

type Revision = {
  id: string;
  number: number;
  status: string;
  sha256: string | null;
  durationMs: number | null;
};
type Programme = {
  id: string;
  status: string;
  title: string;
  revision: number;
  approvedRevision: number | null;
  current: Revision;
  approved: Revision | null;
  history: { action: string; revision: number; by: string; at: string; note: string | null }[];
};

async function closedPortUrl(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/radio`;
}

describe('programme approval', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;
  let url: string;
  /** Tokens by role and area; usernames are fixed so that the history can be checked. */
  let broadcasterA: string;
  let approverA: string;
  let approverB: string;
  let districtOperator: string;

  beforeEach(async () => {
    t = await createTestApp();
    tree = await createAreaTree(t);
    url = await closedPortUrl();
    broadcasterA = await t.createUser('broadcaster', tree.communeA.id, 'phat.thanh.vien');
    approverA = await t.createUser('approver', tree.communeA.id, 'chu.tich.xa');
    approverB = await t.createUser('approver', tree.communeB.id, 'chu.tich.xa.b');
    districtOperator = await t.createUser('district_operator', tree.district.id, 'can.bo.huyen');
  });
  afterEach(async () => t.close());

  const post = (path: string, token: string, body?: unknown) =>
    t.request('POST', `/api/v1/programmes${path}`, { token, ...(body !== undefined ? { body } : {}) });

  async function relay(token = broadcasterA, areaId = tree.communeA.id): Promise<Programme> {
    const res = await post('', token, {
      title: 'Tiếp sóng Đài Tiếng nói Việt Nam',
      areaId,
      category: 'news',
      content: { relay: { url, name: 'VOV1' } },
    });
    expect(res.statusCode).toBe(201);
    return res.json<Programme>();
  }

  it('creates approver accounts through the users API, who may approve but not create', async () => {
    const users = await t.request('GET', '/api/v1/users', { token: t.adminToken });
    expect(users.json<{ items: { username: string; role: string }[] }>().items).toContainEqual(
      expect.objectContaining({ username: 'chu.tich.xa', role: 'approver' }),
    );
    const create = await post('', approverA, {
      title: 'Thông báo',
      areaId: tree.communeA.id,
      category: 'other',
      content: { relay: { url } },
    });
    expect(create.statusCode).toBe(403);
  });

  it('walks draft → submitted → approved with a note, recording who did each step', async () => {
    const programme = await relay();
    const submitted = await post(`/${programme.id}/submit`, broadcasterA);
    expect(submitted.statusCode).toBe(200);
    expect(submitted.json<Programme>()).toMatchObject({
      status: 'submitted',
      current: { status: 'submitted' },
    });

    const approved = await post(`/${programme.id}/approve`, approverA, { note: 'Đồng ý phát sóng' });
    expect(approved.statusCode).toBe(200);
    const body = approved.json<Programme>();
    expect(body).toMatchObject({ status: 'approved', revision: 1, approvedRevision: 1 });
    expect(body.approved?.id).toBe(programme.current.id);
    expect(body.history.map((h) => [h.action, h.revision, h.by, h.note])).toEqual([
      ['created', 1, 'phat.thanh.vien', null],
      ['submitted', 1, 'phat.thanh.vien', null],
      ['approved', 1, 'chu.tich.xa', 'Đồng ý phát sóng'],
    ]);

    const audit = await t.request('GET', `/api/v1/audit?targetType=programme&targetId=${programme.id}`, {
      token: t.adminToken,
    });
    expect(
      audit
        .json<{ items: { action: string }[] }>()
        .items.map((i) => i.action)
        .sort(),
    ).toEqual(['programme.approve', 'programme.create', 'programme.submit']);
  });

  it('never lets anyone approve their own programme, nor approve outside their area or role', async () => {
    // A district operator creates it: they may approve others', never this one.
    const own = await relay(districtOperator);
    expect((await post(`/${own.id}/submit`, districtOperator)).statusCode).toBe(200);
    const self = await post(`/${own.id}/approve`, districtOperator);
    expect(self.statusCode).toBe(403);
    expect(problem(self).detail).toContain('a second person must approve it');

    const programme = await relay();
    expect((await post(`/${programme.id}/submit`, broadcasterA)).statusCode).toBe(200);
    // A broadcaster's role cannot approve at all.
    const otherBroadcaster = await t.createUser('broadcaster', tree.communeA.id);
    const byBroadcaster = await post(`/${programme.id}/approve`, otherBroadcaster);
    expect(byBroadcaster.statusCode).toBe(403);
    expect(problem(byBroadcaster).detail).toContain('roles');
    // An approver of another commune does not even see it.
    expect((await post(`/${programme.id}/approve`, approverB)).statusCode).toBe(404);

    // A district programme is visible from a commune, but approved at the district.
    const districtWide = await relay(t.adminToken, tree.district.id);
    expect((await post(`/${districtWide.id}/submit`, t.adminToken)).statusCode).toBe(200);
    const fromBelow = await post(`/${districtWide.id}/approve`, approverA);
    expect(fromBelow.statusCode).toBe(403);
    expect(problem(fromBelow).detail).toContain('above yours');
    expect((await post(`/${districtWide.id}/approve`, districtOperator)).statusCode).toBe(200);

    // Someone who edited the revision is one of its authors.
    const edited = await relay();
    const patch = await t.request('PATCH', `/api/v1/programmes/${edited.id}`, {
      token: districtOperator,
      body: { title: 'Tiếp sóng VOV1 – bản tin thời sự' },
    });
    expect(patch.statusCode).toBe(200);
    expect(patch.json<Programme>().current.number).toBe(1);
    expect((await post(`/${edited.id}/submit`, broadcasterA)).statusCode).toBe(200);
    expect((await post(`/${edited.id}/approve`, districtOperator)).statusCode).toBe(403);
    expect((await post(`/${edited.id}/approve`, approverA)).statusCode).toBe(200);
  });

  it('needs a reason to reject, and refuses steps out of order with 409 invalid_transition', async () => {
    const programme = await relay();
    const early = await post(`/${programme.id}/approve`, approverA);
    expect(early.statusCode).toBe(409);
    expect(problem(early).code).toBe('invalid_transition');

    expect((await post(`/${programme.id}/submit`, broadcasterA)).statusCode).toBe(200);
    const twice = await post(`/${programme.id}/submit`, broadcasterA);
    expect(twice.statusCode).toBe(409);
    expect(problem(twice).code).toBe('invalid_transition');

    const noReason = await post(`/${programme.id}/reject`, approverA, {});
    expect(noReason.statusCode).toBe(400);
    expect(problem(noReason).errors?.[0]?.field).toBe('body.reason');
    const blank = await post(`/${programme.id}/reject`, approverA, { reason: '   ' });
    expect(problem(blank).errors?.[0]?.field).toBe('body.reason');

    const rejected = await post(`/${programme.id}/reject`, approverA, {
      reason: 'Sai giờ tiêm phòng: sửa thành 7 giờ 30',
    });
    expect(rejected.statusCode).toBe(200);
    expect(rejected.json<Programme>()).toMatchObject({ status: 'rejected', approvedRevision: null });
    expect(rejected.json<Programme>().history.at(-1)).toMatchObject({
      action: 'rejected',
      by: 'chu.tich.xa',
      note: 'Sai giờ tiêm phòng: sửa thành 7 giờ 30',
    });
    // A rejected revision is not approved afterwards, nor submitted again as is: it is edited first.
    expect((await post(`/${programme.id}/approve`, approverA)).statusCode).toBe(409);
    expect((await post(`/${programme.id}/submit`, broadcasterA)).statusCode).toBe(409);
    const fixed = await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
      token: broadcasterA,
      body: { title: 'Tiếp sóng VOV1 (đã sửa)' },
    });
    expect(fixed.json<Programme>()).toMatchObject({ status: 'draft', revision: 2, current: { number: 2 } });
    // A relay stays a relay.
    const toBulletin = await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
      token: broadcasterA,
      body: { content: { segments: [{ silenceMs: 500 }] } },
    });
    expect(toBulletin.statusCode).toBe(400);
    expect(problem(toBulletin).errors?.[0]?.field).toBe('body.content');
    const empty = await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
      token: broadcasterA,
      body: {},
    });
    expect(empty.statusCode).toBe(400);
    expect((await post(`/${programme.id}/submit`, broadcasterA)).statusCode).toBe(200);
  });

  it('keeps the approved revision airing while a new one waits, then switches on approval', async () => {
    const device = await t.createDevice(tree.hamletA.id);
    const created = await post('', broadcasterA, {
      title: 'Thông báo lịch tiêm phòng dại – Thôn Đông',
      areaId: tree.communeA.id,
      category: 'health',
      content: { segments: [{ silenceMs: 1000 }] },
    });
    const programme = created.json<Programme>();
    await post(`/${programme.id}/submit`, broadcasterA);
    await post(`/${programme.id}/approve`, approverA);
    const first = programme.current;

    const play = async () => {
      const res = await t.request('POST', '/api/v1/commands', {
        token: broadcasterA,
        body: {
          type: 'play',
          params: { source: { kind: 'programme', programmeId: programme.id } },
          targets: { deviceIds: [device.id] },
        },
      });
      expect(res.statusCode).toBe(202);
      const detail = await t.request('GET', `/api/v1/commands/${res.json<{ id: string }>().id}`, {
        token: broadcasterA,
      });
      return detail.json<{ params: { source: { sha256: string; durationMs: number } } }>().params.source;
    };

    // Editing an approved programme starts revision 2 as a draft; revision 1 still airs.
    const edited = await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
      token: broadcasterA,
      body: { content: { segments: [{ silenceMs: 2000 }] } },
    });
    expect(edited.statusCode).toBe(200);
    const body = edited.json<Programme>();
    expect(body).toMatchObject({ status: 'draft', revision: 2, approvedRevision: 1 });
    expect(body.approved).toMatchObject({ id: first.id, sha256: first.sha256, status: 'approved' });
    expect(body.current.sha256).not.toBe(first.sha256);
    expect(await play()).toMatchObject({ sha256: first.sha256, durationMs: first.durationMs });

    // A draft is edited in place: still revision 2.
    const again = await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
      token: broadcasterA,
      body: { content: { segments: [{ silenceMs: 2500 }] } },
    });
    expect(again.json<Programme>()).toMatchObject({ revision: 2, current: { number: 2 } });
    const second = again.json<Programme>().current;

    // The approved file is still what the users' audio endpoint gives for ?revision=approved.
    const approvedAudio = await t.request(
      'GET',
      `/api/v1/programmes/${programme.id}/audio?revision=approved`,
      {
        token: broadcasterA,
      },
    );
    expect(approvedAudio.headers.etag).toBe(`"${first.sha256}"`);

    await post(`/${programme.id}/submit`, broadcasterA);
    expect(await play()).toMatchObject({ sha256: first.sha256 });
    await post(`/${programme.id}/approve`, approverA, { note: 'Bản sửa được duyệt' });
    expect(await play()).toMatchObject({ sha256: second.sha256, durationMs: second.durationMs });

    const history = (await t.request('GET', `/api/v1/programmes/${programme.id}`, { token: approverA }))
      .json<Programme>()
      .history.map((h) => [h.action, h.revision, h.by]);
    expect(history).toEqual([
      ['created', 1, 'phat.thanh.vien'],
      ['submitted', 1, 'phat.thanh.vien'],
      ['approved', 1, 'chu.tich.xa'],
      ['edited', 2, 'phat.thanh.vien'],
      ['edited', 2, 'phat.thanh.vien'],
      ['submitted', 2, 'phat.thanh.vien'],
      ['approved', 2, 'chu.tich.xa'],
    ]);
  });
});
