/**
 * The folders a stored file's relative path leads through. Each must be a real folder under the
 * root, never a symbolic link or a file, so a path can never lead outside the root.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FerryError } from '../transport/errors.js';
import { errorCode, storeError } from './store-io.js';

/** The file name at the end of a (safe) relative path such as `photos/2024/a.jpg`. */
export function lastSegment(name: string): string {
  return name.slice(name.lastIndexOf('/') + 1);
}

/**
 * The folder under `root` that a (safe) name's file goes in: `root` itself for a plain name, else
 * its folders, each checked with lstat to be a real folder. With `create`, missing folders are made
 * one at a time (each is checked after it is made); without, a missing one is where the walk ends.
 *
 * @throws FerryError `E_BAD_NAME` when a folder on the way is a link or a file; `E_STORE_FAILED` or
 *   `E_NO_SPACE` when one cannot be made or looked at.
 */
export async function folderFor(root: string, name: string, create: boolean): Promise<string> {
  const folders = name.split('/').slice(0, -1);
  let folder = root;
  for (const segment of folders) {
    folder = path.join(folder, segment);
    if (create) {
      try {
        await fs.promises.mkdir(folder);
      } catch (err) {
        if (errorCode(err) !== 'EEXIST') throw storeError(err, 'creating a folder for the received file');
      }
    }
    let stat: fs.Stats;
    try {
      stat = await fs.promises.lstat(folder);
    } catch (err) {
      if (!create && errorCode(err) === 'ENOENT') break;
      throw storeError(err, 'looking at a folder for the received file');
    }
    if (!stat.isDirectory()) {
      const shown = path.relative(root, folder).split(path.sep).join('/');
      throw new FerryError(
        'E_BAD_NAME',
        `${JSON.stringify(shown)} in the upload folder is ${stat.isSymbolicLink() ? 'a link' : 'a file'}, not a folder, so ${JSON.stringify(name)} cannot be stored there; send it under another folder name.`,
      );
    }
  }
  return path.join(root, ...folders);
}
