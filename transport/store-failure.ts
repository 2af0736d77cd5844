/**
 * The sentence for a file-system failure on the server while it stores an upload: what it was
 * doing, the path it could not use, the real cause, and what would fix it. Sending the file again
 * only helps once the cause is gone, so that advice is given only for causes that pass by themselves.
 */
import path from 'node:path';
import { FerryError } from './errors.js';

/** The state folder inside the upload folder (partial uploads and records). */
const STATE_DIR = '.ferry';

const CAUSES: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'the file system is read-only',
  ENOENT: 'it does not exist',
  ENOTDIR: 'a part of the path is not a folder',
  EISDIR: 'it is a folder',
  EEXIST: 'it already exists',
  EMFILE: 'the server has too many files open',
  ENFILE: 'the system has too many files open',
  EIO: 'an input/output error',
  ENAMETOOLONG: 'the path is too long',
  EBUSY: 'it is busy',
};

/** Failures that pass by themselves, after which sending the file again works. */
const PASSING = new Set(['EMFILE', 'ENFILE', 'EBUSY', 'EAGAIN', 'EINTR', 'ETIMEDOUT']);

/**
 * `doing` says what the server was doing ("creating a temporary file"). ENOSPC and EDQUOT become
 * E_NO_SPACE; anything else E_STORE_FAILED. A FerryError is returned as it is.
 */
export function storeFailure(err: unknown, doing: string): FerryError {
  if (err instanceof FerryError) return err;
  const e = err as NodeJS.ErrnoException & { dest?: string };
  const code = typeof e?.code === 'string' ? e.code : undefined;
  // A rename, link or copy names its destination, which is usually what could not be made.
  const where = typeof e?.dest === 'string' ? e.dest : typeof e?.path === 'string' ? e.path : undefined;
  const at = where === undefined ? '' : ` at ${where}`;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    const what = code === 'EDQUOT' ? 'the disk quota ran out' : 'the disk ran out of space';
    return new FerryError('E_NO_SPACE', `The server could not store the file: ${what} while ${doing}${at}; free some space on the server and send the file again.`, { cause: err });
  }
  const cause = code === undefined ? (e instanceof Error ? e.message : String(err)) : `${CAUSES[code] ?? (e instanceof Error ? e.message : code)} (${code})`;
  return new FerryError('E_STORE_FAILED', `The server failed while ${doing}${at}: ${cause}; ${advice(code, where)}.`, { cause: err });
}

function advice(code: string | undefined, where: string | undefined): string {
  const folder = where === undefined ? 'its upload folder' : uploadFolderOf(where);
  switch (code) {
    case 'EACCES':
    case 'EPERM':
      return `whoever runs the server must make ${folder} writable for it`;
    case 'EROFS':
      return `whoever runs the server must give it an upload folder on a writable disk (--upload-dir)`;
    case 'ENOENT':
    case 'ENOTDIR':
      return `whoever runs the server must check that ${folder} exists and is a folder`;
    default:
      return code !== undefined && PASSING.has(code) ? 'send the file again in a moment' : `whoever runs the server must check ${folder}`;
  }
}

/** The upload folder a failed path lies in: the parent of its `.ferry` folder, else the path's own folder. */
function uploadFolderOf(file: string): string {
  const parts = file.split(path.sep);
  const state = parts.lastIndexOf(STATE_DIR);
  return state > 0 ? parts.slice(0, state).join(path.sep) : path.dirname(file);
}
