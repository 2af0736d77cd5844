/**
 * The partial folder's bookkeeping for resumable uploads. An upload with key K keeps its data in
 * `K.part` and its record (name, size, when it began) in `K.json`; once it is stored, `K.done`
 * remembers where, so an offer repeated by a sender that never heard is answered from it. Anything
 * in the folder that is left untouched for long enough is swept away.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FerryError } from '../transport/errors.js';
import type { SavedFile } from './incoming-file.js';
import { noop, storeError } from './store-io.js';

/** What `K.json` says about a resumable upload. */
export interface PartialMeta {
  key: string;
  name: string;
  size: number;
  created: number;
}

const KEY = /^[0-9a-f]{32}$/;

/** Resumable upload keys are 32 lower-case hex digits. */
export function checkKey(key: string): void {
  if (!KEY.test(key)) throw new FerryError('E_BAD_FRAME', 'An upload key must be 32 lower-case hex digits.');
}

/** The files of keyed uploads in one partial folder. */
export class PartialRecords {
  constructor(readonly dir: string) {}

  /** The partial data of the upload with this key. */
  partPath(key: string): string {
    return path.join(this.dir, `${key}.part`);
  }

  /** The record of the upload with this key while it is unfinished. */
  metaPath(key: string): string {
    return path.join(this.dir, `${key}.json`);
  }

  donePath(key: string): string {
    return path.join(this.dir, `${key}.done`);
  }

  /** Where the upload with this key was stored, if it was; undefined when unknown or unreadable. */
  async readDone(key: string): Promise<SavedFile | undefined> {
    try {
      const value = JSON.parse(await fs.promises.readFile(this.donePath(key), 'utf8')) as SavedFile;
      return typeof value.bytes === 'number' && typeof value.sha256 === 'string' && typeof value.path === 'string' ? value : undefined;
    } catch {
      return undefined;
    }
  }

  async writeDone(key: string, saved: SavedFile): Promise<void> {
    try {
      await fs.promises.writeFile(this.donePath(key), JSON.stringify(saved));
    } catch {
      // Without the record a repeated offer stores the file again; that costs space, not data.
    }
  }

  async readMeta(key: string): Promise<PartialMeta | undefined> {
    try {
      const value = JSON.parse(await fs.promises.readFile(this.metaPath(key), 'utf8')) as PartialMeta;
      return typeof value.size === 'number' ? value : undefined;
    } catch {
      return undefined;
    }
  }

  /** @throws FerryError `E_NO_SPACE` or `E_STORE_FAILED`. */
  async writeMeta(meta: PartialMeta): Promise<void> {
    try {
      await fs.promises.writeFile(this.metaPath(meta.key), JSON.stringify(meta));
    } catch (err) {
      throw storeError(err, 'recording the partial upload');
    }
  }

  /**
   * Deletes every upload in the folder whose files were all untouched for `maxAgeMs` or longer.
   * Files are grouped by stem (an upload's data, record and completion age together, by the newest
   * of them); `inUse(stem)` protects the uploads in progress, asked both before and after the
   * folder is read. Returns how many uploads were removed.
   */
  async expire(maxAgeMs: number, now: number, inUse: (stem: string) => boolean): Promise<number> {
    const groups = new Map<string, { files: string[]; newest: number }>();
    for (const entry of await fs.promises.readdir(this.dir)) {
      const stem = entry.replace(/\.(part|json|done)$/, '');
      if (inUse(stem)) continue;
      try {
        const stat = await fs.promises.stat(path.join(this.dir, entry));
        const group = groups.get(stem) ?? { files: [], newest: 0 };
        group.files.push(entry);
        group.newest = Math.max(group.newest, stat.mtimeMs);
        groups.set(stem, group);
      } catch {
        // Gone meanwhile.
      }
    }
    let removed = 0;
    for (const [stem, { files, newest }] of groups) {
      // Asked again here: an upload may have begun while the folder was being read (a spare file
      // moved into place keeps the time it was made, which can look old).
      if (now - newest < maxAgeMs || inUse(stem)) continue;
      for (const entry of files) await fs.promises.rm(path.join(this.dir, entry), { force: true }).catch(noop);
      removed++;
    }
    return removed;
  }
}
