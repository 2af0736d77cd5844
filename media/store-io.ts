/** Small file-system helpers shared by the upload store's parts. */
import fs from 'node:fs';
import { FerryError } from '../transport/errors.js';

export function noop(): void {}

export function errorCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code;
  return undefined;
}

/** Turns a file-system failure into one sentence: out of space, or the store failed while `doing`. */
export function storeError(err: unknown, doing: string): FerryError {
  if (err instanceof FerryError) return err;
  const code = errorCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new FerryError(
      'E_NO_SPACE',
      `The disk ran out of space while ${doing}; free some space and send the file again.`,
      { cause: err },
    );
  }
  const detail = code ?? (err instanceof Error ? err.message : String(err));
  return new FerryError(
    'E_STORE_FAILED',
    `The server failed while ${doing} (${detail}); check that the upload folder is writable and send the file again.`,
    { cause: err },
  );
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
