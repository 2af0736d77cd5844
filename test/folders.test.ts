/**
 * Uploads into folders: a native offer's name may be a relative path (`photos/2024/a.jpg`), stored in
 * those folders under the upload folder. Traversal, absolute paths, the state folder and links on the
 * way are refused; nothing is ever written outside the upload folder. The upload store directly, and
 * the library over real loopback sockets.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createClient, createServer, type FerryClient, type FerryServer } from '../index.js';
import { UploadStore } from '../media/upload-store.js';
import { closeAll, content, removeTempDirs, sha256, tempDir } from './helpers/async.js';
import { rejection } from './helpers/errors.js';

const servers: FerryServer[] = [];
const clients: FerryClient[] = [];

afterEach(async () => {
  await closeAll(clients, servers);
  removeTempDirs();
});

const KEY = 'abcdef0123456789abcdef0123456789';

/** Every file under `dir`, as relative paths with `/`, leaving out the state folder. */
function tree(dir: string): string[] {
  const out: string[] = [];
  const walk = (sub: string) => {
    for (const entry of fs.readdirSync(path.join(dir, sub), { withFileTypes: true })) {
      const rel = sub ? `${sub}/${entry.name}` : entry.name;
      if (rel === '.ferry') continue;
      if (entry.isDirectory()) walk(rel);
      else out.push(entry.isSymbolicLink() ? `${rel} -> link` : rel);
    }
  };
  if (fs.existsSync(dir)) walk('');
  return out.sort();
}

async function put(store: UploadStore, name: string, body: Buffer, extra: { key?: string } = {}) {
  const file = await store.begin({ name, size: body.length, folders: true, ...extra });
  file.write(body);
  return file.finish(sha256(body));
}

describe('UploadStore: relative paths', () => {
  it('stores a file in its folders, made as needed, and numbers only the file name', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const one = await put(store, 'photos/2024/a.jpg', Buffer.from('one'));
    expect(one).toMatchObject({ savedAs: 'photos/2024/a.jpg', path: path.join(root, 'photos', '2024', 'a.jpg') });
    const two = await put(store, 'photos\\2024\\a.jpg', Buffer.from('two'));
    expect(two.savedAs).toBe('photos/2024/a (1).jpg');
    // A folder name is cleaned like a file name; a folder called like a file is not numbered.
    expect((await put(store, 'CON/notes. ', Buffer.from('x'))).savedAs).toBe('_CON/notes');
    // Names that merely begin with dots are names, not traversal.
    expect((await put(store, '..cache/..x', Buffer.from('y'))).savedAs).toBe('..cache/..x');
    expect(tree(root)).toEqual(['..cache/..x', '_CON/notes', 'photos/2024/a (1).jpg', 'photos/2024/a.jpg']);
  });

  it('without folders (the original format) keeps only the last segment, as before', async () => {
    const root = tempDir();
    const file = await new UploadStore({ root }).begin({ name: 'photos/2024/a.jpg', size: 1 });
    expect(file.name).toBe('a.jpg');
    file.write(Buffer.from('x'));
    expect((await file.finish()).savedAs).toBe('a.jpg');
    expect(tree(root)).toEqual(['a.jpg']);
  });

  it('refuses a path through a link or a file, at the offer, creating nothing', async () => {
    const root = tempDir();
    const outside = tempDir('ferry-outside-');
    fs.symlinkSync(outside, path.join(root, 'linked'));
    fs.mkdirSync(path.join(root, 'real'));
    fs.symlinkSync(outside, path.join(root, 'real', 'deeper'));
    fs.writeFileSync(path.join(root, 'plain'), 'a file');
    const store = new UploadStore({ root });
    for (const [name, what] of [
      ['linked/a.jpg', '"linked" in the upload folder is a link'],
      ['real/deeper/x/a.jpg', '"real/deeper" in the upload folder is a link'],
      ['plain/a.jpg', '"plain" in the upload folder is a file'],
    ] as const) {
      const error = await rejection(store.begin({ name, size: 1, folders: true }));
      expect(error.code).toBe('E_BAD_NAME');
      expect(error.message).toContain(what);
    }
    expect(fs.readdirSync(outside)).toEqual([]);
    expect(tree(root)).toEqual(['linked -> link', 'plain', 'real/deeper -> link']);
  });

  it('a folder swapped for a link while the bytes arrive is still not followed', async () => {
    const root = tempDir();
    const outside = tempDir('ferry-outside-');
    const store = new UploadStore({ root });
    fs.mkdirSync(path.join(root, 'inbox'));
    const file = await store.begin({ name: 'inbox/a.txt', size: 3, folders: true });
    file.write(Buffer.from('abc'));
    fs.rmdirSync(path.join(root, 'inbox'));
    fs.symlinkSync(outside, path.join(root, 'inbox'));
    expect((await rejection(file.finish(sha256(Buffer.from('abc'))))).code).toBe('E_BAD_NAME');
    expect(fs.readdirSync(outside)).toEqual([]);
    expect(fs.readdirSync(path.join(root, '.ferry', 'partial'))).toEqual([]);
  });

  it('refuses traversal, absolute paths and the state folder with E_BAD_NAME before anything is made', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    await store.init();
    for (const name of ['../x', 'a/../../x', '/etc/x', 'C:\\x', '\\\\srv\\x', 'a//x', 'a/./x', '.ferry/partial/x.part', '.FERRY/spare/x', '.ferry/stored/x']) {
      expect((await rejection(store.begin({ name, size: 1, folders: true }))).code, name).toBe('E_BAD_NAME');
    }
    expect(tree(root)).toEqual([]);
    expect(fs.readdirSync(path.join(root, '.ferry')).sort()).toEqual(['partial', 'spare', 'stored.log']);
  });

  it('resumes a keyed upload in a folder, and skips it when offered again with its hash', async () => {
    const root = tempDir();
    const body = content(50_000, 3);
    const first = await new UploadStore({ root }).begin({ name: 'big/part.bin', size: body.length, folders: true, key: KEY });
    first.write(body.subarray(0, 20_000));
    await first.abort();
    const second = new UploadStore({ root });
    const again = await second.begin({ name: 'big/part.bin', size: body.length, folders: true, key: KEY });
    expect(again.resumedFrom).toBe(20_000);
    again.write(body.subarray(20_000));
    expect((await again.finish(sha256(body))).savedAs).toBe('big/part.bin');
    await second.close();
    const skipped = await new UploadStore({ root }).begin({ name: 'big/part.bin', size: body.length, folders: true, sha256: sha256(body) });
    expect(skipped.skipped).toBe(true);
    expect((await skipped.finish()).savedAs).toBe('big/part.bin');
    // Through a folder that became a link, the record is not believed.
    fs.renameSync(path.join(root, 'big'), path.join(root, 'moved'));
    fs.symlinkSync(path.join(root, 'moved'), path.join(root, 'big'));
    expect((await rejection(new UploadStore({ root }).begin({ name: 'big/part.bin', size: body.length, folders: true, sha256: sha256(body) }))).code).toBe('E_BAD_NAME');
  });
});

describe('library: uploading a tree', () => {
  async function rig() {
    const uploadDir = path.join(tempDir(), 'upload');
    const server = createServer({ port: 0, uploadDir, heartbeatMs: 0 });
    servers.push(server);
    const { port } = await server.listen();
    const c = createClient({ port, heartbeatMs: 0 });
    clients.push(c);
    return { uploadDir, c };
  }

  function sourceTree(files: Record<string, string>): string {
    const dir = tempDir('ferry-tree-');
    for (const [rel, body] of Object.entries(files)) {
      fs.mkdirSync(path.join(dir, path.dirname(rel)), { recursive: true });
      fs.writeFileSync(path.join(dir, rel), body);
    }
    return dir;
  }

  it('stores each file under its relative path and reports that path as savedAs', async () => {
    const { uploadDir, c } = await rig();
    const files = { 'photos/2024/a.jpg': 'jpeg a', 'photos/2024/b.jpg': 'jpeg b', 'photos/readme.txt': 'read me', 'top.txt': 'top' };
    const src = sourceTree(files);
    const results = await Promise.all(Object.keys(files).map((rel) => c.upload(path.join(src, rel), { name: rel })));
    expect(results.map((r) => r.savedAs)).toEqual(Object.keys(files));
    expect(tree(uploadDir)).toEqual(Object.keys(files).sort());
    for (const [rel, body] of Object.entries(files)) expect(fs.readFileSync(path.join(uploadDir, ...rel.split('/')), 'utf8')).toBe(body);
    // Sent again, unchanged: skipped, file by file.
    const again = await Promise.all(Object.keys(files).map((rel) => c.upload(path.join(src, rel), { name: rel })));
    expect(again.map((r) => [r.savedAs, r.skipped])).toEqual(Object.keys(files).map((rel) => [rel, true]));
    // A fresh copy is numbered in its folder.
    expect((await c.upload(path.join(src, 'photos/2024/a.jpg'), { name: 'photos/2024/a.jpg', fresh: true })).savedAs).toBe('photos/2024/a (1).jpg');
  });

  it('refuses traversal and state-folder names with E_BAD_NAME, and the connection goes on', async () => {
    const { uploadDir, c } = await rig();
    const outside = path.dirname(uploadDir);
    const before = fs.readdirSync(outside).sort();
    const src = sourceTree({ 'x.txt': 'payload' });
    for (const name of ['../escaped.txt', 'a/../../escaped.txt', '/tmp/escaped.txt', 'C:/escaped.txt', '..\\escaped.txt', '.ferry/partial/x.part', 'a//b.txt', 'deep/'.repeat(40) + 'x.txt']) {
      const error = await rejection(c.upload(path.join(src, 'x.txt'), { name }));
      expect(error.code, name).toBe('E_BAD_NAME');
    }
    expect(fs.readdirSync(outside).sort()).toEqual(before);
    expect(tree(uploadDir)).toEqual([]);
    expect(await c.message('still connected')).toBe('still connected');
  });

  it('does not follow a symlinked folder in the upload folder out of it', async () => {
    const { uploadDir, c } = await rig();
    const outside = tempDir('ferry-outside-');
    fs.symlinkSync(outside, path.join(uploadDir, 'shared'));
    const src = sourceTree({ 'x.txt': 'payload' });
    const error = await rejection(c.upload(path.join(src, 'x.txt'), { name: 'shared/x.txt' }));
    expect(error.code).toBe('E_BAD_NAME');
    expect(error.message).toContain('"shared" in the upload folder is a link');
    expect(fs.readdirSync(outside)).toEqual([]);
    expect((await c.upload(path.join(src, 'x.txt'), { name: 'own/x.txt' })).savedAs).toBe('own/x.txt');
  });
});
