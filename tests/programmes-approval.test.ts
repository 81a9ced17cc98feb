/**
 * Approval of programmes: draft → submitted → approved | rejected, who may do what where, revisions that
 * leave the approved one airing, and the history. Relays (no rendering) keep most of these fast; one
 * bulletin checks that a play after an edit still sends the approved file.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ProgrammesRepository } from '../src/modules/programmes/programmes.repository.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';
import { closedPortUrl } from './support/programmes.js';

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
  it('lets only one of two approvals made at once through; a revision never moves twice', async () => {
    const programme = await relay();
    expect((await post(`/${programme.id}/submit`, broadcasterA)).statusCode).toBe(200);
    const [a, b] = await Promise.all([
      post(`/${programme.id}/approve`, approverA, { note: 'Đồng ý' }),
      post(`/${programme.id}/approve`, districtOperator, { note: 'Đồng ý (huyện)' }),
    ]);
    expect([a.statusCode, b.statusCode].sort()).toEqual([200, 409]);
    expect(problem([a, b].find((r) => r.statusCode === 409)!).code).toBe('invalid_transition');
    const approvals = t.query(
      `SELECT actor_name FROM programme_events WHERE programme_id = '${programme.id}' AND action = 'approved'`,
    );
    expect(approvals).toHaveLength(1);
    const audit = await t.request('GET', `/api/v1/audit?targetType=programme&targetId=${programme.id}`, {
      token: t.adminToken,
    });
    expect(
      audit.json<{ items: { action: string }[] }>().items.filter((i) => i.action === 'programme.approve'),
    ).toHaveLength(1);

    // The status is checked by the UPDATE itself, as a second server on the same database would need.
    const other = await relay();
    expect((await post(`/${other.id}/submit`, broadcasterA)).statusCode).toBe(200);
    const repo = new ProgrammesRepository(t.app.db);
    const at = { updatedAt: new Date() };
    expect(repo.setStatus(other.id, other.current.id, 'submitted', 'approved', at)).toBe(true);
    expect(repo.setStatus(other.id, other.current.id, 'submitted', 'rejected', at)).toBe(false);
    // A revision that is no longer the programme's current one does not move the programme.
    expect(repo.setStatus(other.id, 'rev_not_current', 'submitted', 'approved', at)).toBe(false);
    expect(t.query(`SELECT status FROM programme_revisions WHERE id = '${other.current.id}'`)).toEqual([
      { status: 'approved' },
    ]);
  });

  it('keeps approvers to approving and broadcasters to editing, and refuses both from below', async () => {
    const programme = await relay();
    const patch = await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
      token: approverA,
      body: { title: 'Sửa bởi người duyệt' },
    });
    expect(patch.statusCode).toBe(403);
    expect((await post(`/${programme.id}/submit`, approverA)).statusCode).toBe(403);
    expect(
      (await t.request('DELETE', `/api/v1/programmes/${programme.id}`, { token: approverA })).statusCode,
    ).toBe(403);

    expect((await post(`/${programme.id}/submit`, broadcasterA)).statusCode).toBe(200);
    const otherBroadcaster = await t.createUser('broadcaster', tree.communeA.id);
    expect((await post(`/${programme.id}/reject`, otherBroadcaster, { reason: 'Không' })).statusCode).toBe(
      403,
    );
    expect((await post(`/${programme.id}/reject`, broadcasterA, { reason: 'Không' })).statusCode).toBe(403);

    // A provincial programme is seen and aired in the commune, but neither changed nor signed off there.
    const provincial = await relay(t.adminToken, tree.province.id);
    expect((await post(`/${provincial.id}/submit`, t.adminToken)).statusCode).toBe(200);
    const seen = await t.request('GET', `/api/v1/programmes/${provincial.id}`, { token: approverA });
    expect(seen.statusCode).toBe(200);
    expect((await post(`/${provincial.id}/reject`, approverA, { reason: 'Không phù hợp' })).statusCode).toBe(
      403,
    );
    expect((await post(`/${provincial.id}/approve`, districtOperator)).statusCode).toBe(403);
    const edit = await t.request('PATCH', `/api/v1/programmes/${provincial.id}`, {
      token: broadcasterA,
      body: { title: 'Sửa từ xã' },
    });
    expect(edit.statusCode).toBe(403);
    expect(problem(edit).detail).toContain('above yours');
    expect(
      (await t.request('DELETE', `/api/v1/programmes/${provincial.id}`, { token: broadcasterA })).statusCode,
    ).toBe(403);
    const provinceApprover = await t.createUser('approver', tree.province.id);
    expect((await post(`/${provincial.id}/approve`, provinceApprover)).statusCode).toBe(200);
  });

  it('records every step with who took it, audits each, stores text composed, and hides what is deleted', async () => {
    // Decomposed (NFD), as a Mac keyboard sends it: stored and returned composed (NFC).
    const title = 'Tiếp sóng Đài Tiếng nói Việt Nam – Thời sự';
    const created = await post('', broadcasterA, {
      title: title.normalize('NFD'),
      areaId: tree.communeA.id,
      category: 'news',
      content: { relay: { url, name: 'Đài Tiếng nói Việt Nam'.normalize('NFD') } },
    });
    const programme = created.json<Programme & { current: { content: { relay: { name: string } } } }>();
    expect(programme.title).toBe(title);
    expect(programme.current.content.relay.name).toBe('Đài Tiếng nói Việt Nam');
    const found = await t.request('GET', `/api/v1/programmes?q=${encodeURIComponent('tiếng nói')}`, {
      token: broadcasterA,
    });
    expect(found.json<{ total: number }>().total).toBe(1);

    await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
      token: broadcasterA,
      body: { category: 'other' },
    });
    await post(`/${programme.id}/submit`, broadcasterA);
    const reason = 'Sai tên đài: sửa thành “VOV1”';
    const rejected = await post(`/${programme.id}/reject`, approverA, { reason: reason.normalize('NFD') });
    expect(rejected.json<Programme>().history.at(-1)?.note).toBe(reason);
    await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
      token: broadcasterA,
      body: { title: 'Tiếp sóng VOV1' },
    });
    await post(`/${programme.id}/submit`, broadcasterA);
    await post(`/${programme.id}/approve`, approverA, { note: 'Đồng ý phát'.normalize('NFD') });
    expect(
      (await t.request('DELETE', `/api/v1/programmes/${programme.id}`, { token: broadcasterA })).statusCode,
    ).toBe(204);

    expect(
      t.query(
        `SELECT action, revision_number AS n, actor_name AS who, note FROM programme_events
         WHERE programme_id = '${programme.id}' ORDER BY id`,
      ),
    ).toEqual([
      { action: 'created', n: 1, who: 'phat.thanh.vien', note: null },
      { action: 'edited', n: 1, who: 'phat.thanh.vien', note: null },
      { action: 'submitted', n: 1, who: 'phat.thanh.vien', note: null },
      { action: 'rejected', n: 1, who: 'chu.tich.xa', note: reason },
      { action: 'edited', n: 2, who: 'phat.thanh.vien', note: 'revision 2 started from revision 1' },
      { action: 'submitted', n: 2, who: 'phat.thanh.vien', note: null },
      { action: 'approved', n: 2, who: 'chu.tich.xa', note: 'Đồng ý phát' },
      { action: 'deleted', n: 2, who: 'phat.thanh.vien', note: null },
    ]);
    const audit = await t.request(
      'GET',
      `/api/v1/audit?targetType=programme&targetId=${programme.id}&limit=50`,
      { token: t.adminToken },
    );
    expect(
      audit
        .json<{ items: { action: string }[] }>()
        .items.map((i) => i.action)
        .sort(),
    ).toEqual([
      'programme.approve',
      'programme.create',
      'programme.delete',
      'programme.reject',
      'programme.submit',
      'programme.submit',
      'programme.update',
      'programme.update',
    ]);

    // Deleted: out of lists, not found for reading, listening, approving or editing.
    const list = await t.request('GET', '/api/v1/programmes', { token: t.adminToken });
    expect(list.json<{ items: { id: string }[] }>().items.map((i) => i.id)).not.toContain(programme.id);
    for (const res of [
      await t.request('GET', `/api/v1/programmes/${programme.id}`, { token: t.adminToken }),
      await t.request('GET', `/api/v1/programmes/${programme.id}/audio`, { token: t.adminToken }),
      await post(`/${programme.id}/approve`, t.adminToken),
      await post(`/${programme.id}/submit`, broadcasterA),
      await t.request('PATCH', `/api/v1/programmes/${programme.id}`, {
        token: broadcasterA,
        body: { title: 'Hồi sinh' },
      }),
      await t.request('DELETE', `/api/v1/programmes/${programme.id}`, { token: broadcasterA }),
    ]) {
      expect(res.statusCode).toBe(404);
    }
  });
});
