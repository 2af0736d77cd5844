/**
 * The upload store's parts on their own: an incoming file (writing, hashing, verifying, handing
 * over to be placed), the records of resumable uploads and their expiry, the spare partial, and the
 * records of stored files.
 * The store as a whole is covered in upload-store.test.ts and resume.test.ts.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { FerryError } from '../transport/errors.js';
import { CompletedIncoming, hashFilePrefix, Incoming, WRITE_HIGH_WATER_MARK, type SavedFile, type StoreHooks } from '../media/incoming-file.js';
import { checkKey, PartialRecords } from '../media/partial-records.js';
import { SpareFile } from '../media/spare-file.js';
import { StoredRecords } from '../media/stored-records.js';
import { content, removeTempDirs, sha256, tempDir } from './helpers/async.js';
import { rejection } from './helpers/errors.js';

afterEach(() => removeTempDirs());

const KEY = '0123456789abcdef0123456789abcdef';

/** An incoming file writing to `temp`, with hooks that record what the store was asked. */
function incoming(dir: string, size: number, opts: { metaPath?: string } = {}) {
  const temp = path.join(dir, 'upload.part');
  const calls: { placed: string[]; completed: SavedFile[]; released: number } = { placed: [], completed: [], released: 0 };
  const hooks: StoreHooks = {
    place: async (tempPath, name) => {
      calls.placed.push(name);
      const final = path.join(dir, name);
      await fs.promises.link(tempPath, final);
      return { savedAs: name, path: final };
    },
    completed: async (saved) => void calls.completed.push(saved),
    release: () => void calls.released++,
    bufferLimit: () => WRITE_HIGH_WATER_MARK,
  };
  const file = new Incoming({
    name: 'f.bin',
    size,
    tempPath: temp,
    stream: fs.createWriteStream(temp),
    hash: createHash('sha256'),
    offset: 0,
    metaPath: opts.metaPath,
    store: hooks,
  });
  return { file, temp, calls };
}

describe('Incoming', () => {
  it('hashes what it writes, checks it, hands the temp file over to be placed, then removes the temp file', async () => {
    const dir = tempDir();
    const data = content(10_000, 1);
    const { file, temp, calls } = incoming(dir, data.length);
    await file.opened();
    file.write(data.subarray(0, 4_000));
    file.write(data.subarray(4_000));
    expect(file.received).toBe(data.length);
    const saved = await file.finish(sha256(data).toUpperCase());
    expect(saved).toEqual({ savedAs: 'f.bin', path: path.join(dir, 'f.bin'), bytes: data.length, sha256: sha256(data) });
    expect(calls).toEqual({ placed: ['f.bin'], completed: [saved], released: 1 });
    expect(fs.readFileSync(saved.path).equals(data)).toBe(true);
    expect(fs.existsSync(temp)).toBe(false);
    expect(await file.finish()).toBe(saved);
  });

  it('refuses a wrong hash without placing anything; a resumable partial and its record are kept', async () => {
    const dir = tempDir();
    const meta = path.join(dir, 'upload.json');
    fs.writeFileSync(meta, '{}');
    const data = content(500, 2);
    const { file, temp, calls } = incoming(dir, data.length, { metaPath: meta });
    file.write(data);
    expect((await rejection(file.finish(sha256(Buffer.from('other'))))).code).toBe('E_HASH_MISMATCH');
    expect(calls.placed).toEqual([]);
    expect(calls.released).toBe(1);
    expect(fs.readFileSync(temp).equals(data)).toBe(true);
    expect(fs.existsSync(meta)).toBe(true);
  });

  it('refuses a resumable partial that holds other bytes than were written through it', async () => {
    const dir = tempDir();
    const meta = path.join(dir, 'upload.json');
    const data = content(300, 3);
    const { file, temp, calls } = incoming(dir, data.length, { metaPath: meta });
    file.write(data);
    await expect.poll(() => fs.statSync(temp).size).toBe(data.length);
    // Something else appends to the partial behind the upload's back.
    fs.appendFileSync(temp, 'x');
    expect((await rejection(file.finish(sha256(data)))).code).toBe('E_STORE_FAILED');
    expect(calls.placed).toEqual([]);
  });

  it('abort keeps a resumable partial flushed to disk and deletes any other', async () => {
    const dir = tempDir();
    const data = content(2_000, 4);
    const plain = incoming(dir, data.length);
    plain.file.write(data.subarray(0, 1_000));
    await plain.file.abort();
    expect(fs.existsSync(plain.temp)).toBe(false);
    expect(() => plain.file.write(data)).toThrow(FerryError);

    const keyed = incoming(tempDir(), data.length, { metaPath: path.join(dir, 'k.json') });
    keyed.file.write(data.subarray(0, 1_000));
    await keyed.file.abort();
    expect(fs.readFileSync(keyed.temp).equals(data.subarray(0, 1_000))).toBe(true);
    expect(keyed.calls.released).toBe(1);
  });

  it('a completed upload takes no bytes and finishes with its record, if the hash agrees', async () => {
    const saved: SavedFile = { savedAs: 'x.bin', path: '/nowhere/x.bin', bytes: 12, sha256: sha256(Buffer.from('twelve bytes')) };
    const done = new CompletedIncoming('x.bin', saved);
    expect([done.size, done.received, done.resumedFrom]).toEqual([12, 12, 12]);
    expect(() => done.write()).toThrow(FerryError);
    expect(await done.finish(saved.sha256.toUpperCase())).toBe(saved);
    expect((await rejection(done.finish('0'.repeat(64)))).code).toBe('E_HASH_MISMATCH');
  });

  it('hashFilePrefix reads exactly the first bytes', async () => {
    const file = path.join(tempDir(), 'data');
    const data = content(5_000, 5);
    fs.writeFileSync(file, data);
    const hash = createHash('sha256');
    await hashFilePrefix(file, 1_234, hash);
    expect(hash.digest('hex')).toBe(sha256(data.subarray(0, 1_234)));
  });
});

describe('PartialRecords', () => {
  it('names the files of a key, and reads back the records it wrote', async () => {
    const dir = tempDir();
    const records = new PartialRecords(dir);
    expect([records.partPath(KEY), records.metaPath(KEY), records.donePath(KEY)]).toEqual(
      ['part', 'json', 'done'].map((ext) => path.join(dir, `${KEY}.${ext}`)),
    );
    expect(await records.readMeta(KEY)).toBeUndefined();
    expect(await records.readDone(KEY)).toBeUndefined();
    const meta = { key: KEY, name: 'a.bin', size: 10, created: 1 };
    await records.writeMeta(meta);
    expect(await records.readMeta(KEY)).toEqual(meta);
    const saved = { savedAs: 'a.bin', path: path.join(dir, 'a.bin'), bytes: 10, sha256: 'ab'.repeat(32) };
    await records.writeDone(KEY, saved);
    expect(await records.readDone(KEY)).toEqual(saved);
  });

  it('treats unreadable or incomplete records as none', async () => {
    const dir = tempDir();
    const records = new PartialRecords(dir);
    fs.writeFileSync(records.metaPath(KEY), '{not json');
    fs.writeFileSync(records.donePath(KEY), JSON.stringify({ bytes: 3, sha256: 'x' }));
    expect(await records.readMeta(KEY)).toBeUndefined();
    expect(await records.readDone(KEY)).toBeUndefined();
  });

  it('a record that cannot be written is a store failure', async () => {
    const records = new PartialRecords(path.join(tempDir(), 'missing'));
    expect((await rejection(records.writeMeta({ key: KEY, name: 'a', size: 1, created: 1 }))).code).toBe('E_STORE_FAILED');
  });

  it('expires an upload as a whole by its newest file, and never one in use', async () => {
    const dir = tempDir();
    const records = new PartialRecords(dir);
    const old = new Date(Date.now() - 10_000);
    const other = 'f'.repeat(32);
    const busy = 'e'.repeat(32);
    for (const stem of [KEY, other, busy]) {
      for (const ext of ['part', 'json']) {
        fs.writeFileSync(path.join(dir, `${stem}.${ext}`), '');
        fs.utimesSync(path.join(dir, `${stem}.${ext}`), old, old);
      }
    }
    // One file of `other` was touched just now: the whole upload stays.
    fs.utimesSync(path.join(dir, `${other}.json`), new Date(), new Date());
    expect(await records.expire(5_000, Date.now(), (stem) => stem === busy)).toBe(1);
    expect(fs.readdirSync(dir).sort()).toEqual([`${busy}.json`, `${busy}.part`, `${other}.json`, `${other}.part`]);
  });

  it('checks keys: 32 lower-case hex digits', () => {
    expect(() => checkKey(KEY)).not.toThrow();
    for (const bad of [KEY.toUpperCase(), KEY.slice(1), `${KEY}0`, '../' + KEY.slice(3)]) {
      expect(() => checkKey(bad)).toThrow(expect.objectContaining({ code: 'E_BAD_FRAME' }));
    }
  });
});

describe('SpareFile', () => {
  it('makes the next spare when one is taken, moves it to the target, and removes it on close', async () => {
    const dir = tempDir();
    const target = tempDir();
    const spare = new SpareFile(dir);
    const first = await spare.take(path.join(target, 'one.part'));
    fs.closeSync(first.fd);
    expect(fs.existsSync(first.path)).toBe(true);
    // Taking started the next one.
    await expect.poll(() => fs.readdirSync(dir)).toHaveLength(1);
    const ino = fs.statSync(path.join(dir, fs.readdirSync(dir)[0]!)).ino;
    const second = await spare.take(path.join(target, 'two.part'));
    fs.closeSync(second.fd);
    expect(fs.statSync(second.path).ino).toBe(ino);
    await spare.close();
    expect(fs.readdirSync(dir)).toEqual([]);
    // Closed: taking still works, but leaves no spare behind.
    const third = await spare.take(path.join(target, 'three.part'));
    fs.closeSync(third.fd);
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(fs.readdirSync(target).sort()).toEqual(['one.part', 'three.part', 'two.part']);
  });

  it('falls back to a new file when its spare vanished, and never takes over an existing target', async () => {
    const dir = tempDir();
    const target = tempDir();
    const spare = new SpareFile(dir);
    fs.closeSync((await spare.take(path.join(target, 'a.part'))).fd);
    await expect.poll(() => fs.readdirSync(dir)).toHaveLength(1);
    for (const entry of fs.readdirSync(dir)) fs.unlinkSync(path.join(dir, entry));
    const b = await spare.take(path.join(target, 'b.part'));
    fs.closeSync(b.fd);
    expect(fs.statSync(b.path).size).toBe(0);
    await spare.close();
    fs.writeFileSync(path.join(target, 'taken.part'), 'keep');
    await expect(spare.take(path.join(target, 'taken.part'))).rejects.toMatchObject({ code: 'EEXIST' });
    expect(fs.readFileSync(path.join(target, 'taken.part'), 'utf8')).toBe('keep');
  });

  it('clear removes what an earlier run left, and is quiet about a missing folder', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'left.part'), '');
    await new SpareFile(dir).clear();
    expect(fs.readdirSync(dir)).toEqual([]);
    await expect(new SpareFile(path.join(dir, 'missing')).clear()).resolves.toBeUndefined();
  });
});

describe('StoredRecords', () => {
  async function placed(root: string, name: string, body: string): Promise<SavedFile> {
    const file = path.join(root, name);
    fs.writeFileSync(file, body);
    return { savedAs: name, path: file, bytes: Buffer.byteLength(body), sha256: sha256(Buffer.from(body)) };
  }

  async function opened(log: string): Promise<StoredRecords> {
    const records = new StoredRecords(log);
    await records.init();
    return records;
  }

  it('matches a recorded file by name, size and SHA-256 while it is unchanged on disk, across instances', async () => {
    const root = tempDir();
    const log = path.join(root, 'stored.log');
    const records = await opened(log);
    const saved = await placed(root, 'a.txt', 'alpha');
    await records.remember(saved);
    // It counts at once; its one line is in the log once flushed.
    expect(await records.match('a.txt', saved.path, 5, saved.sha256)).toBeDefined();
    await records.flush();
    expect(fs.readFileSync(log, 'utf8').trim().split('\n')).toEqual([expect.stringContaining('"name":"a.txt"')]);
    expect(await (await opened(log)).match('a.txt', saved.path, 5, saved.sha256)).toEqual({ savedAs: 'a.txt', path: saved.path, bytes: 5, sha256: saved.sha256 });
    // Another size, hash or name is not this file; the record stays.
    expect(await records.match('a.txt', saved.path, 6, saved.sha256)).toBeUndefined();
    expect(await records.match('a.txt', saved.path, 5, sha256(Buffer.from('other')))).toBeUndefined();
    expect(await records.match('b.txt', saved.path, 5, saved.sha256)).toBeUndefined();
    expect(await records.match('a.txt', saved.path, 5, saved.sha256)).toBeDefined();
    await records.close();
  });

  it('does not trust a file changed in place, replaced, swapped for a symlink or removed, and drops its record', async () => {
    const root = tempDir();
    const records = await opened(path.join(root, 'stored.log'));
    const cases: [string, (file: string) => void][] = [
      // Same size, same content even, but written again: its modification time moved.
      ['rewritten.txt', (file) => {
        const later = new Date(fs.statSync(file).mtimeMs + 5_000);
        fs.writeFileSync(file, 'same!');
        fs.utimesSync(file, later, later);
      }],
      ['replaced.txt', (file) => {
        const other = `${file}.new`;
        fs.writeFileSync(other, 'same!');
        fs.utimesSync(other, fs.statSync(file).atime, fs.statSync(file).mtime);
        fs.renameSync(other, file);
      }],
      ['linked.txt', (file) => {
        const target = path.join(tempDir(), 'elsewhere.txt');
        fs.copyFileSync(file, target);
        fs.rmSync(file);
        fs.symlinkSync(target, file);
      }],
      ['removed.txt', (file) => fs.rmSync(file)],
    ];
    for (const [name, change] of cases) {
      const saved = await placed(root, name, 'same!');
      await records.remember(saved);
      expect(await records.match(name, saved.path, 5, saved.sha256), name).toBeDefined();
      change(saved.path);
      expect(await records.match(name, saved.path, 5, saved.sha256), name).toBeUndefined();
      // Dropped: even the original file put back would not be believed without a new record.
    }
    await records.close();
  });

  it('a later record for a name replaces the earlier, in memory and when the log is read again', async () => {
    const root = tempDir();
    const log = path.join(root, 'stored.log');
    const records = await opened(log);
    const first = await placed(root, 'n.txt', 'one');
    await records.remember(first);
    fs.rmSync(first.path);
    const second = await placed(root, 'n.txt', 'two!');
    await records.remember(second);
    await records.close();
    const again = await opened(log);
    expect(await again.match('n.txt', second.path, 4, second.sha256)).toBeDefined();
    expect(await again.match('n.txt', second.path, 3, first.sha256)).toBeUndefined();
  });

  it('skips damaged lines in the log, and remembers nothing for a file that is not there', async () => {
    const root = tempDir();
    const log = path.join(root, 'stored.log');
    const saved = await placed(root, 'ok.txt', 'fine');
    const records = await opened(log);
    await records.remember(saved);
    await records.remember({ savedAs: 'ghost.txt', path: path.join(root, 'ghost.txt'), bytes: 1, sha256: sha256(Buffer.from('x')) });
    await records.close();
    fs.appendFileSync(log, '{not json\n{"name":"x","size":"1"}\n\n');
    expect(fs.readFileSync(log, 'utf8')).not.toContain('ghost.txt');
    expect(await (await opened(log)).match('ok.txt', saved.path, 4, saved.sha256)).toBeDefined();
  });

  it('without a log it can write, it still works for as long as it lives', async () => {
    const root = tempDir();
    const records = await opened(path.join(root, 'missing', 'stored.log'));
    const saved = await placed(root, 'm.txt', 'mem');
    await records.remember(saved);
    expect(await records.match('m.txt', saved.path, 3, saved.sha256)).toBeDefined();
    await records.close();
  });

  it('rewrites a long log compactly, keeping every record', async () => {
    const root = tempDir();
    const log = path.join(root, 'stored.log');
    const records = await opened(log);
    const saved = await placed(root, 'c.txt', 'compact');
    for (let i = 0; i < 1_100; i++) await records.remember(saved);
    await records.close();
    const lines = fs.readFileSync(log, 'utf8').trim().split('\n');
    expect(lines.length).toBeLessThan(1_100);
    expect(await (await opened(log)).match('c.txt', saved.path, 7, saved.sha256)).toBeDefined();
  });
});
