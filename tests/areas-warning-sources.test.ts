/**
 * An area a warning source (a national warning system's CAP key, issue 9) is limited to cannot be deleted:
 * the source's row names it by foreign key, so the answer is 409 area_not_empty, not the database's
 * refusal as a 500. Revoked sources count too: their rows stay, for the record of who sent which alert.
 */
import { eq } from 'drizzle-orm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { warningSources } from '../src/db/schema/index.js';
import { newId } from '../src/lib/ids.js';
import { createAreaTree, createTestApp, problem, type TestApp } from './support/app.js';

describe('deleting an area with warning sources', () => {
  let t: TestApp;
  let tree: Awaited<ReturnType<typeof createAreaTree>>;

  beforeEach(async () => {
    t = await createTestApp();
    tree = await createAreaTree(t);
  });
  afterEach(async () => {
    await t.close();
  });

  const remove = (id: string) => t.request('DELETE', `/api/v1/areas/${id}`, { token: t.adminToken });

  function addSource(areaId: string, revoked: boolean): string {
    const id = newId('wsrc');
    t.app.db
      .insert(warningSources)
      .values({
        id,
        name: 'Đài Khí tượng Thủy văn tỉnh Quảng Trị',
        areaId,
        keyHash: `hash-${id}`,
        createdAt: new Date(),
        revokedAt: revoked ? new Date() : null,
      })
      .run();
    return id;
  }

  it('answers 409 area_not_empty while a source, even a revoked one, names the area', async () => {
    const live = addSource(tree.hamletA.id, false);
    const res = await remove(tree.hamletA.id);
    expect(res.statusCode, res.body).toBe(409);
    expect(problem(res)).toMatchObject({
      code: 'area_not_empty',
      detail: expect.stringContaining('1 warning source(s)') as unknown,
    });
    expect(problem(res).detail).toContain('"Thôn Đông"');

    addSource(tree.hamletB.id, true);
    const revoked = await remove(tree.hamletB.id);
    expect(revoked.statusCode, revoked.body).toBe(409);
    expect(problem(revoked).code).toBe('area_not_empty');

    // Both areas are still there, and go once their sources do.
    expect(
      (await t.request('GET', `/api/v1/areas/${tree.hamletA.id}`, { token: t.adminToken })).statusCode,
    ).toBe(200);
    t.app.db.delete(warningSources).where(eq(warningSources.id, live)).run();
    expect((await remove(tree.hamletA.id)).statusCode).toBe(204);
  });
});
