/** Small file-system helpers shared by the upload store's parts. */
import fs from 'node:fs';
import type { FerryError } from '../transport/errors.js';
import { storeFailure } from '../transport/store-failure.js';

export function noop(): void {}

export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

/** Turns a file-system failure into one sentence: what failed, where, why, and what would fix it. */
export function storeError(err: unknown, doing: string): FerryError {
  return storeFailure(err, doing);
}

export async function removeQuietly(file: string): Promise<void> {
  try {
    await fs.promises.unlink(file);
  } catch {
    // Already gone, or the folder is unusable; a leftover temp file does no harm.
  }
}

/** Creates a file that must not exist yet, for writing; resolves with its descriptor. */
export function openExclusive(file: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, 'wx', 0o666, (err, fd) => (err ? reject(err) : resolve(fd))));
}
