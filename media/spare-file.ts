/**
 * The one empty partial file made ahead of need. Creating a file takes about a millisecond on some
 * disks (ext4 on a virtual disk, for one), which a sender of many small files would wait for on
 * every file; so the store keeps one empty file ready in its own folder, moves it into the partial
 * folder when an upload starts, and begins the next at once. Anything in the spare folder is
 * disposable.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { noop, openExclusive } from './store-io.js';

export class SpareFile {
  readonly #dir: string;
  #spare: { path: string; fd: Promise<number> } | undefined;
  #closed = false;

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** Removes spares left by an earlier run (a killed server cannot clean up after itself). */
  async clear(): Promise<void> {
    let entries: string[];
    try {
      entries = await fs.promises.readdir(this.#dir);
    } catch {
      return;
    }
    await Promise.all(entries.map((entry) => fs.promises.unlink(path.join(this.#dir, entry)).catch(noop)));
  }

  /**
   * Opens a new, empty file at `target` (which must not exist), for writing: the spare moved there
   * when there is one, else a file made the slow way. Starts making the next spare either way.
   */
  async take(target: string): Promise<{ path: string; fd: number }> {
    const spare = this.#spare;
    this.#spare = this.#closed ? undefined : this.#make();
    if (spare) {
      let fd: number | undefined;
      try {
        fd = await spare.fd;
        await fs.promises.rename(spare.path, target);
        return { path: target, fd };
      } catch {
        // Not made, or taken away meanwhile: make one the slow way.
        if (fd !== undefined) fs.close(fd, noop);
        fs.unlink(spare.path, noop);
      }
    }
    return { path: target, fd: await openExclusive(target) };
  }

  /** Closes and removes the spare; no new one is made after this. */
  async close(): Promise<void> {
    this.#closed = true;
    const spare = this.#spare;
    this.#spare = undefined;
    if (!spare) return;
    await spare.fd.then(
      (fd) => new Promise<void>((resolve) => fs.close(fd, () => resolve())),
      noop,
    );
    await fs.promises.unlink(spare.path).catch(noop);
  }

  #make(): { path: string; fd: Promise<number> } {
    const file = path.join(this.#dir, randomBytes(16).toString('hex') + '.part');
    const fd = openExclusive(file);
    fd.catch(noop);
    return { path: file, fd };
  }
}
