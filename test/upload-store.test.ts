import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, it, expect, vi } from 'vitest';
import { FerryError } from '../transport/errors.js';
import { UploadStore } from '../media/upload-store.js';
import { WRITE_HIGH_WATER_MARK } from '../media/incoming-file.js';
import { content, removeTempDirs, sha256, tempDir } from './helpers/async.js';
import { rejection } from './helpers/errors.js';
import { send } from './helpers/uploads.js';

afterEach(() => {
  vi.restoreAllMocks();
  removeTempDirs();
});

function partialFiles(root: string): string[] {
  return fs.readdirSync(path.join(root, '.ferry', 'partial'));
}

function visibleFiles(root: string): string[] {
  return fs.readdirSync(root).filter((name) => name !== '.ferry').sort();
}

describe('UploadStore', () => {
  it('creates the root and the partial folder', async () => {
    const root = path.join(tempDir(), 'nested', 'uploads');
    const store = new UploadStore({ root });
    await store.init();
    expect(fs.statSync(path.join(root, '.ferry', 'partial')).isDirectory()).toBe(true);
    expect(store.root).toBe(path.resolve(root));
  });

  it('stores a file written in chunks with the right bytes and hash, and nothing under its name before finish', async () => {
    const root = path.join(tempDir(), 'up');
    const store = new UploadStore({ root });
    const data = content(3 * 1024 * 1024 + 17);
    const file = await store.begin({ name: 'dir/photo.png', size: data.length });
    expect(file.name).toBe('photo.png');

    await send(file, data.subarray(0, 1_000_000), 4096);
    expect(file.received).toBe(1_000_000);
    expect(visibleFiles(root)).toEqual([]);
    expect(partialFiles(root)).toHaveLength(1);
    expect(partialFiles(root)[0]).toMatch(/^[0-9a-f]{32}\.part$/);

    await send(file, data.subarray(1_000_000), 3 * 1024 * 1024);
    expect(visibleFiles(root)).toEqual([]);

    const saved = await file.finish(sha256(data).toUpperCase());
    expect(saved).toEqual({
      savedAs: 'photo.png',
      path: path.join(path.resolve(root), 'photo.png'),
      bytes: data.length,
      sha256: sha256(data),
    });
    expect(fs.readFileSync(saved.path).equals(data)).toBe(true);
    expect(visibleFiles(root)).toEqual(['photo.png']);
    expect(partialFiles(root)).toEqual([]);
  });

  it('reports backpressure and calls the drain listener once writing may continue', async () => {
    const store = new UploadStore({ root: tempDir() });
    const data = content(4 * 1024 * 1024);
    const file = await store.begin({ name: 'big.bin', size: data.length });
    expect(file.write(data)).toBe(false);
    let drained = 0;
    await new Promise<void>((resolve) =>
      file.onDrain(() => {
        drained++;
        resolve();
      }),
    );
    expect(drained).toBe(1);
    await file.finish(sha256(data));
  });

  it('shares its buffer budget among the uploads under way and those being set up, so each holds less in memory when many run', async () => {
    const KiB = 1024;
    const root = tempDir();
    const store = new UploadStore({ root, bufferBudget: 1024 * KiB });
    const data = content(256 * KiB + 300 * KiB + 600 * KiB);
    const [first, second, third] = [data.subarray(0, 256 * KiB), data.subarray(256 * KiB, 556 * KiB), data.subarray(556 * KiB)];
    const a = await store.begin({ name: 'a.bin', size: data.length });
    // b's offer is still being set up while a writes, and counts already: 512 KiB each, so the second
    // write finds the first still waiting for the disk.
    const starting = store.begin({ name: 'b.bin', size: 10 });
    expect(a.write(first)).toBe(true);
    expect(a.write(second)).toBe(false);
    // A chunk already on its way still goes in (and must reach the disk too before writing goes on).
    expect(a.write(third.subarray(0, 100 * KiB))).toBe(false);
    await new Promise<void>((resolve) => a.onDrain(resolve));
    // The drain comes once both waiting writes are in the file, not before.
    expect(fs.statSync((a as { tempPath: string }).tempPath).size).toBe(656 * KiB);
    await (await starting).abort();
    // Alone now, it may hold the whole budget; under the old share of 512 KiB this write would wait.
    expect(a.write(third.subarray(100 * KiB))).toBe(true);
    const saved = await a.finish(sha256(data));
    expect(fs.readFileSync(saved.path).equals(data)).toBe(true);
    expect(() => new UploadStore({ root, bufferBudget: 0 })).toThrow(RangeError);
  });

  it('stores an empty file', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const file = await store.begin({ name: 'empty', size: 0 });
    const saved = await file.finish(sha256(Buffer.alloc(0)));
    expect(saved.bytes).toBe(0);
    expect(fs.readFileSync(path.join(root, 'empty')).length).toBe(0);
  });

  it('discards a file whose hash does not match, leaving no final file and no temp', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const data = content(10_000);
    const file = await store.begin({ name: 'x.bin', size: data.length });
    await send(file, data, 1000);
    const err = await rejection(file.finish('0'.repeat(64)));
    expect(err.code).toBe('E_HASH_MISMATCH');
    expect(visibleFiles(root)).toEqual([]);
    expect(partialFiles(root)).toEqual([]);
  });

  it('refuses a short upload with E_UPLOAD_SIZE and leaves nothing behind', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const data = content(1000);
    const file = await store.begin({ name: 'short.bin', size: 2000 });
    await send(file, data);
    const err = await rejection(file.finish());
    expect(err.code).toBe('E_UPLOAD_SIZE');
    expect(err.message).toContain('1000');
    expect(err.message).toContain('2000');
    expect(visibleFiles(root)).toEqual([]);
    expect(partialFiles(root)).toEqual([]);
  });

  it('refuses a chunk that would exceed the announced size without writing it', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const data = content(100);
    const file = await store.begin({ name: 'exact.bin', size: 100 });
    file.write(data.subarray(0, 60));
    let thrown: unknown;
    try {
      file.write(data.subarray(0, 41));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(FerryError);
    expect((thrown as FerryError).code).toBe('E_UPLOAD_SIZE');
    expect(file.received).toBe(60);
    file.write(data.subarray(60));
    const saved = await file.finish(sha256(data));
    expect(fs.readFileSync(saved.path).equals(data)).toBe(true);
  });

  it('returns the same result when finish is called twice and refuses writes afterwards', async () => {
    const store = new UploadStore({ root: tempDir() });
    const file = await store.begin({ name: 'twice.txt', size: 3 });
    file.write(Buffer.from('abc'));
    const first = file.finish();
    const second = file.finish();
    expect(second).toBe(first);
    const saved = await first;
    expect(saved.savedAs).toBe('twice.txt');
    expect(() => file.write(Buffer.from('d'))).toThrow(FerryError);
  });

  it('never overwrites an existing file', async () => {
    const root = tempDir();
    fs.writeFileSync(path.join(root, 'photo.png'), 'original');
    const store = new UploadStore({ root });
    const data = Buffer.from('new content');
    const file = await store.begin({ name: 'photo.png', size: data.length });
    file.write(data);
    const saved = await file.finish(sha256(data));
    expect(saved.savedAs).toBe('photo (1).png');
    expect(fs.readFileSync(path.join(root, 'photo.png'), 'utf8')).toBe('original');
    expect(fs.readFileSync(path.join(root, 'photo (1).png'), 'utf8')).toBe('new content');
  });

  it('lands 20 concurrent uploads of the same name under distinct names with the right content', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const uploads = Array.from({ length: 20 }, (_, i) => content(50_000 + i, i + 1));
    const files = await Promise.all(uploads.map((data) => store.begin({ name: 'same.txt', size: data.length })));
    // Interleave the chunks so the uploads are genuinely in flight together.
    await Promise.all(files.map((file, i) => send(file, uploads[i] ?? Buffer.alloc(0), 7_000)));
    const saved = await Promise.all(files.map((file, i) => file.finish(sha256(uploads[i] ?? Buffer.alloc(0)))));

    const names = saved.map((s) => s.savedAs);
    expect(new Set(names).size).toBe(20);
    expect([...names].sort()).toEqual(
      ['same.txt', ...Array.from({ length: 19 }, (_, i) => `same (${i + 1}).txt`)].sort(),
    );
    saved.forEach((s, i) => {
      expect(fs.readFileSync(s.path).equals(uploads[i] ?? Buffer.alloc(1))).toBe(true);
    });
    expect(partialFiles(root)).toEqual([]);
  });

  it('does not follow a symlink planted under the target name', async () => {
    const outside = tempDir();
    const victim = path.join(outside, 'victim.txt');
    fs.writeFileSync(victim, 'do not touch');
    const root = tempDir();
    fs.symlinkSync(victim, path.join(root, 'report.txt'));
    fs.symlinkSync(path.join(outside, 'missing.txt'), path.join(root, 'dangling.txt'));

    const store = new UploadStore({ root });
    const data = Buffer.from('uploaded');
    const file = await store.begin({ name: 'report.txt', size: data.length });
    file.write(data);
    const saved = await file.finish();
    expect(saved.savedAs).toBe('report (1).txt');
    expect(fs.readFileSync(victim, 'utf8')).toBe('do not touch');
    expect(fs.lstatSync(path.join(root, 'report (1).txt')).isFile()).toBe(true);

    const other = await store.begin({ name: 'dangling.txt', size: data.length });
    other.write(data);
    expect((await other.finish()).savedAs).toBe('dangling (1).txt');
    expect(fs.existsSync(path.join(outside, 'missing.txt'))).toBe(false);
  });

  it('sanitises hostile names so the file lands directly inside the root', async () => {
    const parent = tempDir();
    const root = path.join(parent, 'root');
    const store = new UploadStore({ root });
    for (const name of ['../escape.txt', '..\\escape2.txt', '/etc/passwd', 'C:\\evil.txt']) {
      const file = await store.begin({ name, size: 1 });
      file.write(Buffer.from('!'));
      const saved = await file.finish();
      expect(path.dirname(saved.path)).toBe(path.resolve(root));
    }
    expect(fs.readdirSync(parent)).toEqual(['root']);
    expect(visibleFiles(root)).toEqual(['escape.txt', 'escape2.txt', 'evil.txt', 'passwd']);
  });

  it('refuses a bad name before creating anything', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const err = await rejection(store.begin({ name: '..', size: 1 }));
    expect(err.code).toBe('E_BAD_NAME');
    expect(fs.readdirSync(root)).toEqual([]);
  });

  it.each([-1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 2])('refuses the announced size %d', async (size) => {
    const store = new UploadStore({ root: tempDir() });
    const err = await rejection(store.begin({ name: 'a', size }));
    expect(err.code).toBe('E_UPLOAD_SIZE');
  });

  it('refuses a file larger than maxFileSize, naming both sizes', async () => {
    const root = tempDir();
    const store = new UploadStore({ root, maxFileSize: 1000 });
    const err = await rejection(store.begin({ name: 'big.bin', size: 1001 }));
    expect(err.code).toBe('E_FILE_TOO_LARGE');
    expect(err.message).toContain('1001');
    expect(err.message).toContain('1000');
    const ok = await store.begin({ name: 'fits.bin', size: 1000 });
    await ok.abort();
  });

  it('refuses a file larger than the free disk space', async () => {
    const store = new UploadStore({ root: tempDir() });
    const err = await rejection(store.begin({ name: 'huge.bin', size: Number.MAX_SAFE_INTEGER }));
    expect(err.code).toBe('E_NO_SPACE');
  });

  it('counts space promised to uploads in progress', async () => {
    const root = tempDir();
    const stats = fs.statfsSync(root);
    const free = stats.bavail * stats.bsize;
    const store = new UploadStore({ root });
    // Nothing is written, so the first announcement reserves space without using it.
    const first = await store.begin({ name: 'first.bin', size: Math.floor(free * 0.6) });
    const err = await rejection(store.begin({ name: 'second.bin', size: Math.floor(free * 0.6) }));
    expect(err.code).toBe('E_NO_SPACE');
    await first.abort();
    const second = await store.begin({ name: 'second.bin', size: Math.floor(free * 0.6) });
    await second.abort();
  });

  it('keeps one empty file ready for the next upload, moves it into place when one begins, and removes it on close', async () => {
    const root = tempDir();
    const spares = () => fs.readdirSync(path.join(root, '.ferry', 'spare'));
    const store = new UploadStore({ root });
    const data = content(5000, 3);

    const first = await store.begin({ name: 'first.bin', size: data.length });
    await send(first, data);
    await first.finish(sha256(data));
    await vi.waitFor(() => expect(spares()).toHaveLength(1));
    const [spare] = spares();
    expect(fs.statSync(path.join(root, '.ferry', 'spare', spare!)).size).toBe(0);

    // The next upload writes into that very file (same inode), now in the partial folder.
    const inode = fs.statSync(path.join(root, '.ferry', 'spare', spare!)).ino;
    const second = await store.begin({ name: 'second.bin', size: data.length });
    expect(partialFiles(root)).toHaveLength(1);
    expect(fs.statSync(path.join(root, '.ferry', 'partial', partialFiles(root)[0]!)).ino).toBe(inode);
    expect(spares()).not.toContain(spare);
    await send(second, data);
    const saved = await second.finish(sha256(data));
    expect(fs.readFileSync(saved.path)).toEqual(data);
    expect(fs.statSync(saved.path).ino).toBe(inode);
    expect(partialFiles(root)).toEqual([]);

    await vi.waitFor(() => expect(spares()).toHaveLength(1));
    await store.close();
    expect(spares()).toEqual([]);
    expect(visibleFiles(root)).toEqual(['first.bin', 'second.bin']);
  });

  it('makes a partial file the slow way when the spare was taken away, and clears stale spares when it starts', async () => {
    const root = tempDir();
    const spareDir = path.join(root, '.ferry', 'spare');
    fs.mkdirSync(spareDir, { recursive: true });
    fs.writeFileSync(path.join(spareDir, 'left-by-a-killed-server.part'), '');
    const store = new UploadStore({ root });
    await store.init();
    expect(fs.readdirSync(spareDir)).toEqual([]);

    const data = content(100, 4);
    const first = await store.begin({ name: 'a.bin', size: data.length });
    await send(first, data);
    await first.finish(sha256(data));
    await vi.waitFor(() => expect(fs.readdirSync(spareDir)).toHaveLength(1));
    for (const entry of fs.readdirSync(spareDir)) fs.unlinkSync(path.join(spareDir, entry));

    const second = await store.begin({ name: 'b.bin', size: data.length });
    await send(second, data);
    const saved = await second.finish(sha256(data));
    expect(fs.readFileSync(saved.path)).toEqual(data);
    expect(partialFiles(root)).toEqual([]);
    await store.close();
  });

  it('never sweeps the partial of an upload that is starting, though a spare made long ago looks old', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const data = content(300, 5);
    const first = await store.begin({ name: 'first.bin', size: data.length });
    await send(first, data);
    await first.finish(sha256(data));
    const spareDir = path.join(root, '.ferry', 'spare');
    await vi.waitFor(() => expect(fs.readdirSync(spareDir)).toHaveLength(1));
    // The spare was made two days ago, as far as its times say.
    const twoDaysAgo = new Date(Date.now() - 48 * 3600_000);
    fs.utimesSync(path.join(spareDir, fs.readdirSync(spareDir)[0]!), twoDaysAgo, twoDaysAgo);

    // Hold the upload right after its spare was moved into the partial folder, and sweep then.
    const rename = fs.promises.rename;
    let release!: () => void;
    const moved = new Promise<void>((resolve) => {
      vi.spyOn(fs.promises, 'rename').mockImplementation(async (from, to) => {
        await rename(from, to);
        resolve();
        await new Promise<void>((r) => (release = r));
      });
    });
    const starting = store.begin({ name: 'second.bin', size: data.length });
    await moved;
    expect(partialFiles(root)).toHaveLength(1);
    expect(await store.expirePartials(24 * 3600_000)).toBe(0);
    release();
    const second = await starting;
    // And once it has started, the same holds.
    expect(await store.expirePartials(24 * 3600_000)).toBe(0);
    await send(second, data);
    const saved = await second.finish(sha256(data));
    expect(fs.readFileSync(saved.path)).toEqual(data);
    await store.close();
  });

  it('reuses a free-space reading for a moment only for files that need a sliver of it', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const statfs = vi.spyOn(fs.promises, 'statfs');
    const small = async (name: string) => (await store.begin({ name, size: 10 })).abort();
    await small('one.bin');
    await small('two.bin');
    await small('three.bin');
    expect(statfs).toHaveBeenCalledTimes(1);
    // A file that needs a real share of the disk is always checked against a fresh reading.
    const stats = fs.statfsSync(root);
    const big = await store.begin({ name: 'big.bin', size: Math.floor((stats.bavail * stats.bsize) / 10) });
    await big.abort();
    expect(statfs).toHaveBeenCalledTimes(2);
    await store.close();
  });

  it('removes the temp file on abort, idempotently, and refuses further use', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const file = await store.begin({ name: 'gone.bin', size: 100 });
    file.write(content(50));
    expect(partialFiles(root)).toHaveLength(1);
    await file.abort();
    await file.abort();
    expect(partialFiles(root)).toEqual([]);
    expect(visibleFiles(root)).toEqual([]);
    expect(() => file.write(Buffer.from('x'))).toThrow(FerryError);
    expect((await rejection(file.finish())).code).toBe('E_STORE_FAILED');
  });

  it('keeps a finished file when abort comes afterwards', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const file = await store.begin({ name: 'kept.txt', size: 2 });
    file.write(Buffer.from('ok'));
    const finishing = file.finish();
    await file.abort();
    const saved = await finishing;
    expect(fs.readFileSync(saved.path, 'utf8')).toBe('ok');
  });

  it('reports a root that cannot be created as E_STORE_FAILED', async () => {
    const dir = tempDir();
    const blocker = path.join(dir, 'file');
    fs.writeFileSync(blocker, '');
    const store = new UploadStore({ root: path.join(blocker, 'uploads') });
    const err = await rejection(store.begin({ name: 'a.txt', size: 1 }));
    expect(err.code).toBe('E_STORE_FAILED');
  });

  it('turns a disk write failure into a refused upload instead of a crash', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const file = await store.begin({ name: 'full.bin', size: 2 * WRITE_HIGH_WATER_MARK });
    const noSpace = (): Error => Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
    type Callback = (err: Error | null) => void;
    vi.spyOn(fs, 'write').mockImplementation(((...args: unknown[]) => {
      const callback = args[args.length - 1] as Callback;
      process.nextTick(() => callback(noSpace()));
    }) as unknown as typeof fs.write);
    vi.spyOn(fs, 'writev').mockImplementation(((...args: unknown[]) => {
      const callback = args[args.length - 1] as Callback;
      process.nextTick(() => callback(noSpace()));
    }) as unknown as typeof fs.writev);

    // The listener must run even though the stream will never drain normally.
    expect(file.write(content(WRITE_HIGH_WATER_MARK + 1024))).toBe(false);
    await new Promise<void>((resolve) => file.onDrain(resolve));
    let thrown: unknown;
    try {
      file.write(content(10));
    } catch (err) {
      thrown = err;
    }
    expect((thrown as FerryError).code).toBe('E_NO_SPACE');
    vi.restoreAllMocks();

    const err = await rejection(file.finish());
    expect(err.code).toBe('E_NO_SPACE');
    expect(visibleFiles(root)).toEqual([]);
    expect(partialFiles(root)).toEqual([]);
  });

  it('reports a full disk as such even when the next write finds the stream already destroyed', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const file = await store.begin({ name: 'full.bin', size: 2 * WRITE_HIGH_WATER_MARK });
    type Callback = (err: Error | null) => void;
    vi.spyOn(fs, 'write').mockImplementation(((...args: unknown[]) => {
      const callback = args[args.length - 1] as Callback;
      process.nextTick(() => callback(Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })));
    }) as unknown as typeof fs.write);
    expect(file.write(content(10))).toBe(true);
    // The failed write has destroyed the stream, but its 'error' event waits for the file to close.
    await new Promise((resolve) => setImmediate(resolve));
    expect(file.write(content(WRITE_HIGH_WATER_MARK))).toBe(false);
    await new Promise<void>((resolve) => file.onDrain(resolve));
    vi.restoreAllMocks();
    const err = await rejection(file.finish());
    expect(err.code).toBe('E_NO_SPACE');
    expect(visibleFiles(root)).toEqual([]);
  });

  describe('on a file system without hard links', () => {
    function withoutHardLinks(): void {
      vi.spyOn(fs.promises, 'link').mockRejectedValue(
        Object.assign(new Error('operation not permitted'), { code: 'EPERM' }),
      );
    }

    it('copies the file into place without overwriting or following symlinks', async () => {
      withoutHardLinks();
      const outside = tempDir();
      const victim = path.join(outside, 'victim.txt');
      fs.writeFileSync(victim, 'do not touch');
      const root = tempDir();
      fs.writeFileSync(path.join(root, 'a.txt'), 'original');
      fs.symlinkSync(victim, path.join(root, 'a (1).txt'));

      const store = new UploadStore({ root });
      const data = content(200_000);
      const file = await store.begin({ name: 'a.txt', size: data.length });
      await send(file, data);
      const saved = await file.finish(sha256(data));
      expect(saved.savedAs).toBe('a (2).txt');
      expect(fs.readFileSync(saved.path).equals(data)).toBe(true);
      expect(fs.readFileSync(path.join(root, 'a.txt'), 'utf8')).toBe('original');
      expect(fs.readFileSync(victim, 'utf8')).toBe('do not touch');
      expect(partialFiles(root)).toEqual([]);
    });

    it('keeps concurrent uploads of the same name apart', async () => {
      withoutHardLinks();
      const root = tempDir();
      const store = new UploadStore({ root });
      const uploads = Array.from({ length: 8 }, (_, i) => content(30_000, i + 7));
      const files = await Promise.all(uploads.map((data) => store.begin({ name: 'same', size: data.length })));
      await Promise.all(files.map((file, i) => send(file, uploads[i] ?? Buffer.alloc(0), 5_000)));
      const saved = await Promise.all(files.map((file) => file.finish()));
      expect(new Set(saved.map((s) => s.savedAs)).size).toBe(8);
      saved.forEach((s, i) => expect(fs.readFileSync(s.path).equals(uploads[i] ?? Buffer.alloc(1))).toBe(true));
    });
  });
});
