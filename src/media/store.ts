/**
 * The content-addressed file store under DATA_DIR/media. A file is named by the SHA-256 of its bytes and
 * sharded by the first two hex digits (`ab/abcdef…`, no extension), so the same bytes uploaded twice are one
 * file and a name is its own checksum: devices verify what they download against it, and anything that
 * serves it can say `Cache-Control: immutable`.
 *
 * Files arrive through `<dir>/tmp` (same filesystem, so moving into place is an atomic rename): a reader
 * never sees half a file under a hash name. Which files are still needed is the database's business; the
 * clean-up (MediaService.cleanup) asks `list()` and removes what nothing references.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { AppError } from '../errors.js';

export interface StoredFile {
  sha256: string;
  sizeBytes: number;
  path: string;
}

/** A stream written to a temporary file and hashed on the way; not in the store yet. */
export interface ReceivedFile {
  tempPath: string;
  sha256: string;
  sizeBytes: number;
}

export interface StoreEntry {
  sha256: string;
  path: string;
  sizeBytes: number;
  modifiedAt: Date;
}

const SHA256 = /^[0-9a-f]{64}$/;
const SHARD = /^[0-9a-f]{2}$/;

export const isSha256 = (value: string): boolean => SHA256.test(value);

async function removeQuietly(file: string): Promise<void> {
  await fsp.rm(file, { force: true });
}

/** 413 for a file over the upload limit: the same answer whether the upload declared its size or streamed it. */
export function uploadTooLarge(maxBytes: number): AppError {
  return new AppError(
    'payload_too_large',
    `The file is larger than the limit of ${Math.floor(maxBytes / (1024 * 1024))} MB (MEDIA_MAX_MB)`,
  );
}

export class MediaStore {
  readonly tmpDir: string;

  /** Creates the folders and removes what a previous process left in tmp (uploads it never finished). */
  constructor(readonly dir: string) {
    this.tmpDir = path.join(dir, 'tmp');
    fs.mkdirSync(this.tmpDir, { recursive: true });
    for (const name of fs.readdirSync(this.tmpDir)) {
      fs.rmSync(path.join(this.tmpDir, name), { force: true, recursive: true });
    }
  }

  /** A fresh path in the temporary folder; nothing is created. */
  tempPath(suffix = ''): string {
    return path.join(this.tmpDir, `${randomBytes(12).toString('hex')}${suffix}`);
  }

  pathOf(sha256: string): string {
    if (!isSha256(sha256)) throw new Error(`not a SHA-256: ${sha256}`);
    return path.join(this.dir, sha256.slice(0, 2), sha256);
  }

  /**
   * Writes the stream to a temporary file while hashing it, holding no more than the stream's buffers in
   * memory. Over `maxBytes`: the temporary file is removed, the rest of the stream is read and discarded (so
   * that a multipart parser upstream keeps draining the request and the client can read the answer), and
   * the promise rejects with payload_too_large.
   */
  receive(stream: Readable, maxBytes: number): Promise<ReceivedFile> {
    const tempPath = this.tempPath();
    const hash = createHash('sha256');
    const out = fs.createWriteStream(tempPath, { flags: 'wx' });
    let size = 0;
    let settled = false;

    return new Promise<ReceivedFile>((resolve, reject) => {
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        stream.off('data', onData);
        // Keep reading so the producer is never left blocked on a full buffer.
        stream.on('error', () => {});
        stream.resume();
        out.destroy();
        // The write stream may still be opening the file: remove it once it is closed.
        const remove = () => void removeQuietly(tempPath).finally(() => reject(err));
        if (out.closed) remove();
        else out.once('close', remove);
      };
      const onData = (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) {
          fail(uploadTooLarge(maxBytes));
          return;
        }
        hash.update(chunk);
        // Back-pressure: a slow disk pauses the upload instead of buffering it.
        if (!out.write(chunk)) {
          stream.pause();
          out.once('drain', () => {
            if (!settled) stream.resume();
          });
        }
      };
      // A stream destroyed before it reached us (a multipart parser gives up on a part cut short before
      // the route reads it) will send no more events: waiting for its end would wait forever.
      if (stream.destroyed) {
        fail(stream.errored ?? new Error('the stream was closed before it was read'));
        return;
      }
      stream.on('data', onData);
      // `on`, not `once`: a second 'error' with no listener left would crash the process.
      stream.on('error', fail);
      out.on('error', fail);
      // Closed without an end (destroyed with no error): the rest will never come.
      stream.once('close', () => {
        if (!stream.readableEnded) fail(new Error('the stream was closed before its end'));
      });
      stream.once('end', () => {
        if (settled) return;
        out.end((err?: Error | null) => {
          if (err) return fail(err);
          if (settled) return;
          settled = true;
          resolve({ tempPath, sha256: hash.digest('hex'), sizeBytes: size });
        });
      });
    });
  }

  /** Hashes a finished temporary file and moves it into place (or drops it if those bytes are stored). */
  async putFile(tempFile: string): Promise<StoredFile> {
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of fs.createReadStream(tempFile)) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    return this.adopt({ tempPath: tempFile, sha256: hash.digest('hex'), sizeBytes: size });
  }

  /**
   * Moves a received file into place under its hash. When the bytes are already stored the temporary copy
   * is dropped and the stored file's time is refreshed: the clean-up never removes a file younger than an
   * hour, so a file that was unreferenced and is being reused now survives until its new row is written.
   */
  async adopt(received: ReceivedFile): Promise<StoredFile> {
    const target = this.pathOf(received.sha256);
    const stored = { sha256: received.sha256, sizeBytes: received.sizeBytes, path: target };
    try {
      const now = new Date();
      await fsp.utimes(target, now, now);
      await removeQuietly(received.tempPath);
      return stored;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    await fsp.mkdir(path.dirname(target), { recursive: true });
    // Read-only: a stored file must never change under its name.
    await fsp.chmod(received.tempPath, 0o444);
    // The time of arrival in the store, not of the upload's last byte: inspecting and rendering a long
    // recording can take longer than the clean-up's hour, which must not find its original old and unnamed
    // before its row is written.
    const now = new Date();
    await fsp.utimes(received.tempPath, now, now);
    // Atomic: the name shows the whole file or nothing. Two uploads of the same bytes racing here both
    // rename a complete copy; the second replaces the first with identical bytes.
    await fsp.rename(received.tempPath, target);
    return stored;
  }

  /**
   * Marks a stored file as just used (so the clean-up leaves it alone for an hour); false if it is gone.
   */
  async touch(sha256: string): Promise<boolean> {
    try {
      const now = new Date();
      await fsp.utimes(this.pathOf(sha256), now, now);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Removes a temporary file (or nothing, if it was moved into the store or never written). */
  async discard(tempFile: string): Promise<void> {
    await removeQuietly(tempFile);
  }

  /** Every stored file (the temporary folder and anything not named by a hash are skipped). */
  async *list(): AsyncGenerator<StoreEntry> {
    for (const shard of await fsp.readdir(this.dir)) {
      if (!SHARD.test(shard)) continue;
      const shardDir = path.join(this.dir, shard);
      let names: string[];
      try {
        names = await fsp.readdir(shardDir);
      } catch {
        continue;
      }
      for (const name of names) {
        if (!isSha256(name) || !name.startsWith(shard)) continue;
        const file = path.join(shardDir, name);
        try {
          const stat = await fsp.stat(file);
          yield { sha256: name, path: file, sizeBytes: stat.size, modifiedAt: stat.mtime };
        } catch {
          // Removed meanwhile.
        }
      }
    }
  }

  /**
   * Removes a stored file unless it was modified at or after `before` (used again since it was listed:
   * `adopt` and `touch` refresh the time). True if it was removed.
   */
  async removeIfOlderThan(sha256: string, before: Date): Promise<boolean> {
    const file = this.pathOf(sha256);
    try {
      if ((await fsp.stat(file)).mtime >= before) return false;
    } catch {
      return false;
    }
    // Checking the time and then removing would leave a gap in which an upload reuses the file (`adopt`
    // or `touch` refreshes its time and the row follows) and loses it. So the file is first moved out of
    // its name (atomic), and only then checked again: a refresh that came before the move is seen here and
    // the file is put back; one that comes after finds no file, and its upload stores or renders its own.
    const doomed = this.tempPath('.removed');
    try {
      await fsp.rename(file, doomed);
    } catch {
      return false;
    }
    try {
      if ((await fsp.stat(doomed)).mtime >= before) {
        // Back under its name (if an upload has stored the same bytes there meanwhile, they are replaced by
        // the same bytes).
        await fsp.rename(doomed, file);
        return false;
      }
      return true;
    } finally {
      await removeQuietly(doomed);
    }
  }

  /** Removes temporary files older than `before` (uploads or renders that died without cleaning up). */
  async removeTempsOlderThan(before: Date): Promise<number> {
    let removed = 0;
    for (const name of await fsp.readdir(this.tmpDir)) {
      const file = path.join(this.tmpDir, name);
      try {
        const stat = await fsp.stat(file);
        if (stat.mtime < before) {
          await fsp.rm(file, { force: true, recursive: true });
          removed++;
        }
      } catch {
        // Removed meanwhile.
      }
    }
    return removed;
  }
}
