/**
 * What `ferry send` was asked to send, checked before anything is handed to the client: missing
 * paths, unreadable files and things that are not files are reported in one sentence each, and a
 * folder becomes the files inside it, each under its path relative to the folder's parent.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FerryError } from '../transport/errors.js';

/** A file to upload: `name` is what the server is asked to store it as (with `/` between folders). */
export interface Sendable {
  kind: 'file';
  file: string;
  name?: string;
  size: number;
}

/** Something that cannot be sent, and why. */
export interface Unsendable {
  kind: 'error';
  file: string;
  error: FerryError;
}

export type Planned = Sendable | Unsendable;

export interface PlanOptions {
  /** Walk folders (the server stores relative paths); without it, a folder is refused. */
  folders: boolean;
  /** Why folders cannot be sent, when they cannot. */
  noFolders?: string;
  /** Told about what is left out on purpose (links to folders, empty folders). */
  notice(text: string): void;
}

/** Folders are sent by their paths; the original tool's format carries a bare file name only. */
export function folderSupport(legacy: boolean): Pick<PlanOptions, 'folders' | 'noFolders'> {
  return legacy ? { folders: false, noFolders: 'the original tool’s format (--legacy) cannot carry folders' } : { folders: true };
}

/** Turns command-line paths into files to send, in order; folders are walked depth-first, by name. */
export async function planUploads(paths: readonly string[], options: PlanOptions): Promise<Planned[]> {
  const planned: Planned[] = [];
  for (const file of paths) {
    let stat: fs.Stats;
    try {
      stat = await fs.promises.stat(file);
    } catch (err) {
      planned.push(unsendable(file, err));
      continue;
    }
    if (stat.isDirectory()) {
      if (!options.folders) {
        const why = options.noFolders ? `, and ${options.noFolders}` : '';
        planned.push({ kind: 'error', file, error: localError(`${file} is a folder${why}; send the files in it (for example ${path.join(file, '*')}).`) });
        continue;
      }
      const before = planned.length;
      // The folder's own name comes first, as rsync does for a folder named without a trailing slash.
      await walk(file, path.basename(path.resolve(file)), planned, options);
      if (planned.length === before) options.notice(`${file} holds no files, so nothing was sent from it.`);
      continue;
    }
    planned.push(await checkFile(file, stat));
  }
  return planned;
}

async function walk(dir: string, prefix: string, planned: Planned[], options: PlanOptions): Promise<void> {
  let entries: fs.Dirent[];
  try {
    entries = await fs.promises.readdir(dir, { withFileTypes: true });
  } catch (err) {
    planned.push(unsendable(dir, err));
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    const full = path.join(dir, entry.name);
    const name = prefix === '' ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) {
      await walk(full, name, planned, options);
      continue;
    }
    let stat: fs.Stats;
    try {
      // A link is followed to the file it points at; a link to a folder is left out (it could loop).
      stat = entry.isSymbolicLink() ? await fs.promises.stat(full) : await fs.promises.lstat(full);
    } catch (err) {
      planned.push(unsendable(full, err));
      continue;
    }
    if (entry.isSymbolicLink() && stat.isDirectory()) {
      options.notice(`skipped ${full}: it is a link to a folder, which is not followed.`);
      continue;
    }
    const checked = await checkFile(full, stat);
    planned.push(checked.kind === 'file' ? { ...checked, name } : checked);
  }
}

async function checkFile(file: string, stat: fs.Stats): Promise<Planned> {
  if (!stat.isFile()) {
    return { kind: 'error', file, error: localError(`${file} is not a regular file (a device, socket or pipe), so it cannot be sent.`) };
  }
  try {
    await fs.promises.access(file, fs.constants.R_OK);
  } catch (err) {
    return unsendable(file, err);
  }
  return { kind: 'file', file, size: stat.size };
}

function unsendable(file: string, err: unknown): Unsendable {
  return { kind: 'error', file, error: localError(describeLocal(file, err)) };
}

/** One sentence for a local path that cannot be used. */
export function describeLocal(file: string, err: unknown): string {
  const code = (err as NodeJS.ErrnoException)?.code;
  switch (code) {
    case 'ENOENT':
      return `${file} does not exist; check the path.`;
    case 'ENOTDIR':
      return `${file} does not exist (a part of its path is not a folder); check the path.`;
    case 'EACCES':
    case 'EPERM':
      return `${file} cannot be read (permission denied); check its permissions.`;
    case 'ELOOP':
      return `${file} is a link that leads round in a circle; check where it points.`;
    default:
      return `${file} cannot be read (${code ?? (err as Error)?.message ?? String(err)}); check the path.`;
  }
}

/**
 * A file that could not be read once its upload began (it was deleted or changed meanwhile): the
 * reason in the same words as the checks before sending, when the file still cannot be found.
 */
export async function explainLocalFailure(file: string, error: unknown): Promise<unknown> {
  if (!(error instanceof FerryError) || error.code !== 'E_LOCAL_FILE') return error;
  try {
    await fs.promises.stat(file);
    return error;
  } catch (err) {
    return localError(describeLocal(file, err));
  }
}

function localError(message: string): FerryError {
  return new FerryError('E_LOCAL_FILE', message);
}
