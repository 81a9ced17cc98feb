import { describe, expect, it } from 'vitest';
import { BatchWriter } from '../src/db/batch-writer.js';
import { compareNames, sortKey } from '../src/lib/text.js';

// Real commune, ward, hamlet and village names: D/Đ, U/Ư, O/Ô/Ơ, A/Ă/Â, every tone, hamlet numbers, case.
const PLACE_NAMES = [
  'Xã Đông Hà',
  'Xã Dương Thủy',
  'Xã Đồng Lê',
  'Xã Dũng Tiến',
  'Xã Đa Phước',
  'Xã Da Phước',
  'Phường Đông Lễ',
  'Phường Đông Giang',
  'Xã Ưng Hòe',
  'Xã Ứng Hòa',
  'Xã Uy Nỗ',
  'Xã Ước Lễ',
  'Xã Ơn Thành',
  'Xã Ô Diên',
  'Xã Ốc Eo',
  'Xã Ông Đình',
  'Xã Ân Nghĩa',
  'Xã Ấn Sơn',
  'Xã Ẵm Bồng',
  'Xã Ăn Nhàn',
  'Xã An Bình',
  'Xã Á Nam',
  'Xã Ả Hiền',
  'Xã Ạ Đông',
  'Xã Ải Lâm',
  'Thôn 2',
  'Thôn 10',
  'Thôn 1',
  'Thôn 02',
  'Thôn 21',
  'Thôn 3A',
  'Thôn 3B',
  'Thôn 3',
  'Thôn Đông',
  'Thôn Dương',
  'Thôn Tây',
  'Thôn Bắc',
  'thôn an',
  'Thôn Ấp',
  'Thôn An Lợi',
  'Thôn An-Lợi',
  'Thôn Ân Phú',
  'Bản Mường Tè',
  'Bản Mương',
  'Bản Mưởng',
  'Bản Muôn',
  'Tổ dân phố 5',
  'Tổ dân phố 12',
  'Tổ Dân Phố 5',
  'Khu phố Quang Trung',
  'Ấp Phú Hòa',
  'Ấp Phú Hoà',
  'Ấp Phú Hóa',
  'Ấp Phủ Hòa',
  'Xã Hải Lăng',
  'Xã Hải Phú',
  'Xã Hải Thượng',
  'Xã Hải Thương',
  'Xã Hai Bà Trưng',
  'Huyện Hải Lăng',
  'Làng Ơ Lôi',
  'Làng Ô Lâm',
  'Làng O Long',
  'Xóm Gò Đình',
  'Xóm Gio Linh',
  'Xóm Bà Rịa (cũ)',
  'Xã Đắk Glei',
  'Xã Đăk Hà',
  'Xã Đak Pơ',
  'Xã Ea Súp',
  'Xã Ia Grai',
  'Xã Ya Xiêr',
  'Xã Yên Thế',
  'Thôn “Mới”',
  'Thôn ‘Cũ’',
  "Thôn 'Cũ'",
  'Khu tái định cư…',
  'Khu tái định cư...',
];

const byKey = (a: string, b: string) => {
  const ka = sortKey(a);
  const kb = sortKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
};

describe('Vietnamese name order', () => {
  it('puts every D… before every Đ…, lets tone marks only break ties, and counts hamlet numbers by value', () => {
    const names = [
      'Thôn Tây',
      'Thôn Đông',
      'Thôn 10',
      'Thôn Bắc',
      'Thôn Dương',
      'thôn an',
      'Thôn Ấp',
      'Thôn 2',
    ];
    const expected = [
      'Thôn 2',
      'Thôn 10',
      'thôn an',
      'Thôn Ấp',
      'Thôn Bắc',
      'Thôn Dương',
      'Thôn Đông',
      'Thôn Tây',
    ];
    expect([...names].sort(byKey)).toEqual(expected);
    expect([...names].sort(compareNames)).toEqual(expected);
    // Tones break ties only: the letters of "Xã Ứng Hòa" come first, whatever the tones of "Xã Ưng Hòe".
    expect(['Xã Ưng Hòe', 'Xã Ứng Hòa'].sort(byKey)).toEqual(['Xã Ứng Hòa', 'Xã Ưng Hòe']);
    expect(['Ấp Phú Hòa', 'Ấp Phủ Hòa', 'Ấp Phú Hóa'].sort(byKey)).toEqual([
      'Ấp Phủ Hòa',
      'Ấp Phú Hòa',
      'Ấp Phú Hóa',
    ]);
  });

  it('gives sort keys whose plain string order is Intl.Collator("vi") order, on real place names', () => {
    const collator = new Intl.Collator('vi', { numeric: true });
    // Names the collator deems equal ("Thôn 02", "Thôn 2") may come in either order; nothing else may.
    for (const a of PLACE_NAMES) {
      for (const b of PLACE_NAMES) {
        const expected = Math.sign(collator.compare(a, b));
        if (expected !== 0) expect([a, b, Math.sign(byKey(a, b))]).toEqual([a, b, expected]);
      }
    }
    const sorted = [...PLACE_NAMES].sort(byKey);
    expect(sorted.indexOf('Xã Dương Thủy')).toBeLessThan(sorted.indexOf('Xã Đa Phước'));
    expect(sorted.indexOf('Thôn 3B')).toBeLessThan(sorted.indexOf('Thôn 10'));
  });

  it('sorts the same in SQLite, byte by byte, as in JavaScript', async () => {
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(':memory:');
    try {
      db.exec('CREATE TABLE t (name TEXT NOT NULL, sort_name TEXT NOT NULL)');
      const insert = db.prepare('INSERT INTO t VALUES (?, ?)');
      for (const name of PLACE_NAMES) insert.run(name, sortKey(name));
      const rows = db.prepare('SELECT name FROM t ORDER BY sort_name').pluck().all();
      expect(rows).toEqual([...PLACE_NAMES].sort(byKey));
    } finally {
      db.close();
    }
  });
});

describe('device sort keys stored before the ordering rule changed', () => {
  it('are recomputed at start-up, so the device list follows the one rule', async () => {
    const { default: Database } = await import('better-sqlite3');
    const { createAreaTree, createTestApp } = await import('./support/app.js');
    const t = await createTestApp();
    try {
      const { hamletA } = await createAreaTree(t);
      const names = ['Loa Đông', 'Loa 10', 'Loa Dương', 'Loa 2'];
      for (const name of names) await t.createDevice(hamletA.id, name);
      // The keys the first release stored: Đ folded to D, digits compared as text.
      const oldKey = (name: string) =>
        `${name
          .normalize('NFD')
          .replace(/[\u0300-\u036f]/g, '')
          .replace(/đ/gi, 'd')
          .toLowerCase()}\u0000${name}`;
      const db = new Database(`${t.dataDir}/loa.sqlite`);
      const update = db.prepare('UPDATE devices SET sort_name = ? WHERE name = ?');
      for (const name of names) update.run(oldKey(name), name);
      db.close();
      const list = async () =>
        (await t.request('GET', '/api/v1/devices?sort=name', { token: t.adminToken }))
          .json<{ items: { name: string }[] }>()
          .items.map((d) => d.name);
      expect(await list()).toEqual(['Loa 10', 'Loa 2', 'Loa Đông', 'Loa Dương']);

      // The next start-up (here a second app on the same data) brings them up to date.
      const { buildApp } = await import('../src/app.js');
      const { loadConfig } = await import('../src/config.js');
      const restarted = await buildApp({
        config: loadConfig({ DATA_DIR: t.dataDir, PORT: '0', MQTT_PORT: '0', LOG_LEVEL: 'silent' }),
      });
      await restarted.close();
      expect(await list()).toEqual(['Loa 2', 'Loa 10', 'Loa Dương', 'Loa Đông']);
      expect(t.app.services.devices.refreshSortNames()).toBe(0);
    } finally {
      await t.close();
    }
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
      // One attempt: dropping is what this test is about (retries: tests/batch-writer.test.ts).
      { maxBatch: 3, attempts: 1 },
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
    const { db, sqlite } = await openDatabase(path.join(dir, 'loa.sqlite'));
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
