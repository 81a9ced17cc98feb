import { describe, expect, it } from 'vitest';
import { BatchWriter } from '../src/db/batch-writer.js';
import { sortKey } from '../src/lib/text.js';
import { LoginThrottle } from '../src/modules/auth/login-throttle.js';
import { ManualClock } from './support/clock.js';

describe('sortKey', () => {
  it('orders Vietnamese names as readers expect', () => {
    const names = ['Thôn Tây', 'Thôn Đông', 'Thôn Bắc', 'Thôn Dương', 'thôn an', 'Thôn Ấp'];
    expect([...names].sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : 1))).toEqual([
      'thôn an',
      'Thôn Ấp',
      'Thôn Bắc',
      'Thôn Đông',
      'Thôn Dương',
      'Thôn Tây',
    ]);
  });
});

describe('LoginThrottle', () => {
  it('blocks a username after five failures until the window ends, and forgets on success', () => {
    const clock = new ManualClock();
    const throttle = new LoginThrottle(clock);
    for (let i = 0; i < 4; i++) throttle.fail('an', '10.0.0.1');
    expect(throttle.retryAfterS('an', '10.0.0.1')).toBe(0);
    throttle.fail('an', '10.0.0.1');
    expect(throttle.retryAfterS('an', '10.0.0.1')).toBe(900);
    expect(throttle.retryAfterS('binh', '10.0.0.2')).toBe(0);
    clock.advance(600_000);
    expect(throttle.retryAfterS('an', '10.0.0.1')).toBe(300);
    clock.advance(300_000);
    expect(throttle.retryAfterS('an', '10.0.0.1')).toBe(0);
    throttle.fail('an', '10.0.0.1');
    throttle.succeed('an');
    expect(throttle.retryAfterS('an', '10.0.0.9')).toBe(0);
  });

  it('blocks an address that tries many usernames', () => {
    const throttle = new LoginThrottle(new ManualClock());
    for (let i = 0; i < 20; i++) throttle.fail(`user${i}`, '10.0.0.7');
    expect(throttle.retryAfterS('someone-new', '10.0.0.7')).toBeGreaterThan(0);
    expect(throttle.retryAfterS('someone-new', '10.0.0.8')).toBe(0);
  });
});

describe('BatchWriter', () => {
  it('applies everything pushed in one tick as one batch, in order', async () => {
    const batches: number[][] = [];
    const writer = new BatchWriter<number>(
      (items) => batches.push([...items]),
      () => undefined,
    );
    for (let i = 0; i < 5; i++) writer.push(i);
    expect(batches).toEqual([]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(batches).toEqual([[0, 1, 2, 3, 4]]);
  });

  it('flushes at the batch limit and on demand, and reports failures without losing later batches', () => {
    const applied: number[][] = [];
    const failed: number[][] = [];
    const writer = new BatchWriter<number>(
      (items) => {
        if (items.includes(13)) throw new Error('disk full');
        applied.push([...items]);
      },
      (_err, items) => failed.push([...items]),
      3,
    );
    [1, 2, 3].forEach((n) => writer.push(n));
    expect(applied).toEqual([[1, 2, 3]]);
    writer.push(13);
    writer.flush();
    writer.push(4);
    writer.flush();
    expect(failed).toEqual([[13]]);
    expect(applied).toEqual([[1, 2, 3], [4]]);
    expect(writer.pending).toBe(0);
  });
});

describe('HealthRepository.write', () => {
  it('stores a province-wide outage in one flush (more rows than SQLite binds in one statement)', async () => {
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const { openDatabase } = await import('../src/db/index.js');
    const { HealthRepository } = await import('../src/modules/health/health.repository.js');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'loa-unit-'));
    const { db, sqlite } = openDatabase(path.join(dir, 'loa.sqlite'));
    try {
      const at = new Date('2026-06-01T00:00:00Z');
      const transitions = Array.from({ length: 10_000 }, (_, i) => ({
        deviceId: `dev_${i}`,
        at,
        online: false,
        cause: 'disconnect' as const,
      }));
      new HealthRepository(db).write(new Map(), transitions, []);
      expect(sqlite.prepare('SELECT count(*) AS n FROM presence_transitions').get()).toEqual({ n: 10_000 });
    } finally {
      sqlite.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
