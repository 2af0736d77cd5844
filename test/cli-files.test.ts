/**
 * How `ferry send` turns its arguments into files to upload, on a real folder tree: checks before
 * anything is sent, folders walked in name order under the folder's own name, links to files
 * followed and links to folders left out (and said so), sentences for what cannot be sent.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeLocal, planUploads, type Planned } from '../apps/files.js';
import { humanSizes } from '../apps/units.js';
import { scratchDirs } from './helpers/files.js';

const scratch = scratchDirs('ferry-cli-files-');

afterAll(() => scratch.removeAll());

function summary(planned: Planned[]): (string | [string, string])[] {
  return planned.map((p) => (p.kind === 'file' ? [p.file, p.name ?? ''] : `error: ${p.error.message}`));
}

describe('planUploads', () => {
  it('keeps the order given, and reports what does not exist in place', async () => {
    const dir = scratch();
    fs.writeFileSync(path.join(dir, 'b.txt'), 'b');
    fs.writeFileSync(path.join(dir, 'a.txt'), 'aa');
    const notices: string[] = [];
    const planned = await planUploads([path.join(dir, 'b.txt'), path.join(dir, 'nope.txt'), path.join(dir, 'a.txt')], { folders: true, notice: (t) => notices.push(t) });
    expect(summary(planned)).toEqual([[path.join(dir, 'b.txt'), ''], `error: ${path.join(dir, 'nope.txt')} does not exist; check the path.`, [path.join(dir, 'a.txt'), '']]);
    expect(planned.map((p) => (p.kind === 'file' ? p.size : -1))).toEqual([1, -1, 2]);
    expect(notices).toEqual([]);
  });

  it('walks a folder depth-first by name, every file under the folder’s own name; a link to a folder is left out and said so', async () => {
    const dir = scratch();
    const root = path.join(dir, 'photos');
    fs.mkdirSync(path.join(root, '2024', 'summer'), { recursive: true });
    fs.mkdirSync(path.join(root, 'empty'));
    fs.writeFileSync(path.join(root, 'z.jpg'), 'z');
    fs.writeFileSync(path.join(root, '2024', 'b.jpg'), 'b');
    fs.writeFileSync(path.join(root, '2024', 'summer', 'a.jpg'), 'a');
    fs.symlinkSync(path.join(root, 'z.jpg'), path.join(root, 'link-to-z.jpg'));
    fs.symlinkSync(dir, path.join(root, 'loop'));
    const notices: string[] = [];

    // With and without the trailing slash, the folder's name comes first.
    for (const arg of [root, `${root}${path.sep}`]) {
      notices.length = 0;
      const planned = await planUploads([arg], { folders: true, notice: (t) => notices.push(t) });
      expect(summary(planned)).toEqual([
        [path.join(arg, '2024', 'b.jpg'), 'photos/2024/b.jpg'],
        [path.join(arg, '2024', 'summer', 'a.jpg'), 'photos/2024/summer/a.jpg'],
        [path.join(arg, 'link-to-z.jpg'), 'photos/link-to-z.jpg'],
        [path.join(arg, 'z.jpg'), 'photos/z.jpg'],
      ]);
      expect(notices).toEqual([`skipped ${path.join(arg, 'loop')}: it is a link to a folder, which is not followed.`]);
    }
  });

  it('a folder with no files in it is mentioned, not an error; without folder support a folder is refused', async () => {
    const dir = scratch();
    const empty = path.join(dir, 'empty');
    fs.mkdirSync(path.join(empty, 'inner'), { recursive: true });
    const notices: string[] = [];
    expect(await planUploads([empty], { folders: true, notice: (t) => notices.push(t) })).toEqual([]);
    expect(notices).toEqual([`${empty} holds no files, so nothing was sent from it.`]);

    const refused = await planUploads([empty], { folders: false, notice: () => undefined });
    expect(summary(refused)).toEqual([`error: ${empty} is a folder; send the files in it (for example ${path.join(empty, '*')}).`]);
  });

  it('a broken link inside a folder is an error of its own; the rest is still sent', async () => {
    const dir = scratch();
    const root = path.join(dir, 'docs');
    fs.mkdirSync(root);
    fs.writeFileSync(path.join(root, 'real.txt'), 'real');
    fs.symlinkSync(path.join(dir, 'gone'), path.join(root, 'broken'));
    const planned = await planUploads([root], { folders: true, notice: () => undefined });
    expect(summary(planned)).toEqual([`error: ${path.join(root, 'broken')} does not exist; check the path.`, [path.join(root, 'real.txt'), 'docs/real.txt']]);
  });
});

describe('sentences', () => {
  it('local failures by cause', () => {
    expect(describeLocal('x', Object.assign(new Error('nope'), { code: 'EACCES' }))).toBe('x cannot be read (permission denied); check its permissions.');
    expect(describeLocal('x', Object.assign(new Error('nope'), { code: 'ENOTDIR' }))).toBe('x does not exist (a part of its path is not a folder); check the path.');
    expect(describeLocal('x', Object.assign(new Error('odd'), { code: 'EIO' }))).toBe('x cannot be read (EIO); check the path.');
  });

  it('byte counts of 1 KiB and more are written for people', () => {
    expect(humanSizes('a limit of 1048576 bytes; a 5000000-byte file; 512 bytes; 2048 bytes')).toBe('a limit of 1.00 MiB; a 4.77 MiB file; 512 bytes; 2.00 KiB');
  });
});
