/**
 * The playback log's past for bench:scheduler's CSV figure, and that figure's baseline.
 *
 * A broadcast of a few thousand records is streamed as CSV in a fraction of a second, mostly fixed cost;
 * rows per second means something only over many rows. So the bench can first write a synthetic history
 * (closed records of earlier days: three bulletins a day per device) straight into the server's SQLite
 * file, as the playback log itself would have written it over the weeks. The server runs in WAL mode; this
 * second connection writes in one transaction with a busy timeout, before anything is measured.
 *
 * The baseline reads the same rows with a plain SELECT in this process and encodes them with the same CSV
 * library, without HTTP, authentication, scope or the server's own formatting: the least any CSV export of
 * those rows costs on this machine.
 */
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { stringify } from 'csv-stringify';

const DAY_MS = 86_400_000;
const SLOTS = [
  { hour: 6, minute: 0, title: 'Bản tin sáng – Thông báo lịch tiêm phòng dại' },
  { hour: 11, minute: 30, title: 'Chương trình nông nghiệp: phòng trừ rầy nâu' },
  { hour: 17, minute: 0, title: 'Tiếp sóng Đài Tiếng nói Việt Nam' },
];

/** Writes `days` days of closed records (before `before`) for every device; returns the rows written. */
export function seedHistory(databaseFile: string, days: number, before: Date): number {
  if (days <= 0) return 0;
  const db = new Database(databaseFile, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 10000');
    const devices = db
      .prepare(
        `SELECT d.id AS id, d.name AS name, d.area_id AS areaId, a.path AS path
         FROM devices d JOIN areas a ON a.id = d.area_id`,
      )
      .all() as { id: string; name: string; areaId: string; path: string }[];
    const insert = db.prepare(
      `INSERT INTO playback_log (session_id, command_id, device_id, device_name, area_id, area_path,
         schedule_id, occurrence_id, programme_id, programme_revision_id, programme_title, priority, due_at,
         ends_at, planned_ms, sent_at, received_at, started_at, finished_at, aired_ms, playing_since,
         joined_at_ms, interruptions, outcome, reason, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, ?, 'normal', ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, 0, ?, ?, ?)`,
    );
    // Midnight of `before`'s day in Vietnam (UTC+7, no daylight saving time).
    const midnight = Math.floor((before.getTime() + 7 * 3_600_000) / DAY_MS) * DAY_MS - 7 * 3_600_000;
    let rows = 0;
    db.transaction(() => {
      for (let day = days; day >= 1; day -= 1) {
        for (const [s, slot] of SLOTS.entries()) {
          const due = midnight - day * DAY_MS + (slot.hour * 60 + slot.minute) * 60_000;
          const planned = 600_000;
          const session = `ses_hist_${day}_${s}`;
          for (const [i, device] of devices.entries()) {
            // Mostly played; now and then a device joined late or was offline, as in a real month.
            const kind = (i * 7 + day * 3 + s) % 50;
            const outcome = kind === 0 ? 'undelivered' : kind === 1 ? 'partial' : 'played';
            const late = outcome === 'partial' ? 95_000 : 0;
            const aired = outcome === 'undelivered' ? 0 : planned - late;
            const reason =
              outcome === 'partial'
                ? 'joined 95 s late'
                : outcome === 'undelivered'
                  ? 'device offline'
                  : null;
            const on = outcome !== 'undelivered';
            insert.run(
              session,
              `cmd_hist_${day}_${s}`,
              device.id,
              device.name,
              device.areaId,
              device.path,
              slot.title,
              due,
              due + planned,
              planned,
              on ? due : null,
              on ? due + 150 : null,
              on ? due + late : null,
              on ? due + planned : null,
              aired,
              on ? late : null,
              outcome,
              reason,
              due + planned + 60_000,
            );
            rows += 1;
          }
        }
      }
    })();
    return rows;
  } finally {
    db.close();
  }
}

/**
 * The baseline: the province's records newest first, read with a plain SELECT and encoded by csv-stringify
 * into a sink that only counts. Rows per second of the whole.
 */
export async function rawCsvRowsPerS(
  databaseFile: string,
  areaPathPrefix: string,
): Promise<{ rows: number; ms: number }> {
  const db = new Database(databaseFile, { readonly: true, fileMustExist: true });
  try {
    const t0 = performance.now();
    const select = db.prepare(
      `SELECT * FROM playback_log WHERE area_path LIKE ? || '%' ORDER BY due_at DESC, id DESC`,
    );
    let rows = 0;
    const source = (function* () {
      for (const row of select.iterate(areaPathPrefix) as Iterable<Record<string, unknown>>) {
        rows += 1;
        yield row;
      }
    })();
    const encoder = stringify({ header: true, bom: true });
    const sink = new Writable({
      write(_chunk, _encoding, callback) {
        callback();
      },
    });
    await pipeline(
      async function* () {
        yield* source;
      },
      encoder,
      sink,
    );
    return { rows, ms: performance.now() - t0 };
  } finally {
    db.close();
  }
}
