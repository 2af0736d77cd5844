/**
 * A small record for each file the store has placed: its name, size and SHA-256, and the identity
 * of the file on disk (device, inode, modification time). An offer that carries a SHA-256 can then
 * be answered without storing anything when that name still holds exactly that file. A record is
 * only believed while the file on disk is the one it describes: a file that was changed, replaced
 * or removed since is not trusted, and its record is dropped.
 *
 * Records live in `<root>/.ferry/stored/`, one JSON file each, named after the SHA-256 of the
 * stored name (so no peer-chosen text becomes a path).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { SavedFile } from './incoming-file.js';
import { removeQuietly } from './store-io.js';

interface StoredRecord {
  /** The name the file was stored under, relative to the root. */
  name: string;
  size: number;
  sha256: string;
  dev: string;
  ino: string;
  mtimeNs: string;
}

export class StoredRecords {
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** Creates the records folder. */
  async init(): Promise<void> {
    await fs.promises.mkdir(this.#dir, { recursive: true });
  }

  /**
   * Records a file just placed under `saved.savedAs` at `saved.path`. Never fails: without a record
   * the file is simply sent in full next time.
   */
  async remember(saved: SavedFile): Promise<void> {
    try {
      const stat = await fs.promises.lstat(saved.path, { bigint: true });
      if (!stat.isFile()) return;
      const record: StoredRecord = {
        name: saved.savedAs,
        size: saved.bytes,
        sha256: saved.sha256,
        dev: String(stat.dev),
        ino: String(stat.ino),
        mtimeNs: String(stat.mtimeNs),
      };
      await fs.promises.writeFile(this.#recordPath(saved.savedAs), JSON.stringify(record));
    } catch {
      // A missing record costs a full upload later, nothing more.
    }
  }

  /**
   * The file stored under `name` at `file`, when its record says it has this size and SHA-256 and
   * the file on disk is still the one recorded (a regular file, same device, inode, size and
   * modification time). Undefined otherwise; a record found untrue is removed.
   */
  async match(name: string, file: string, size: number, sha256: string): Promise<SavedFile | undefined> {
    const recordPath = this.#recordPath(name);
    let record: StoredRecord;
    try {
      record = JSON.parse(await fs.promises.readFile(recordPath, 'utf8')) as StoredRecord;
    } catch {
      return undefined;
    }
    if (record.name !== name || record.size !== size || record.sha256 !== sha256) return undefined;
    let stat: fs.BigIntStats;
    try {
      stat = await fs.promises.lstat(file, { bigint: true });
    } catch {
      await removeQuietly(recordPath);
      return undefined;
    }
    if (!stat.isFile() || stat.size !== BigInt(size) || String(stat.dev) !== record.dev || String(stat.ino) !== record.ino || String(stat.mtimeNs) !== record.mtimeNs) {
      await removeQuietly(recordPath);
      return undefined;
    }
    return { savedAs: name, path: file, bytes: size, sha256 };
  }

  #recordPath(name: string): string {
    return path.join(this.#dir, createHash('sha256').update(name, 'utf8').digest('hex') + '.json');
  }
}
