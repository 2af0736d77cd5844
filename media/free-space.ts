/** Whether an upload fits on the disk, counting the space already promised to uploads in progress. */
import fs from 'node:fs';
import { FerryError } from '../transport/errors.js';
import { storeError } from './store-io.js';

/** How long a free-space reading may be reused (for files that need under 1 % of it). */
const FREE_SPACE_REUSE_MS = 1_000;

export class FreeSpace {
  readonly #root: string;
  /** The last free-space reading, reused briefly for small files. */
  #recent: { free: number; at: number } | undefined;

  constructor(root: string) {
    this.#root = root;
  }

  /**
   * Checks that `size` more bytes fit, beside the `reserved` bytes uploads in progress still need.
   *
   * @throws FerryError `E_NO_SPACE`, or `E_STORE_FAILED` when the free space cannot be read.
   */
  async check(size: number, reserved: number): Promise<void> {
    let free: number;
    const recent = this.#recent;
    if (recent && performance.now() - recent.at < FREE_SPACE_REUSE_MS && size < recent.free / 100) {
      // A reading a moment old will do for a file that needs a sliver of it: many small files in a
      // row are not slowed by one statfs each. (Should the disk fill up meanwhile, the write fails
      // with E_NO_SPACE and the partial is removed, as it would be anyway.)
      free = recent.free;
    } else {
      try {
        const stats = await fs.promises.statfs(this.#root);
        free = stats.bavail * stats.bsize;
      } catch (err) {
        throw storeError(err, 'checking the free disk space');
      }
      this.#recent = { free, at: performance.now() };
    }
    const available = Math.max(0, free - reserved);
    if (size > available) {
      throw new FerryError(
        'E_NO_SPACE',
        `The file is ${size} bytes but only ${available} bytes of disk space are free for uploads; free some space and send the file again.`,
      );
    }
  }
}
