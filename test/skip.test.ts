/**
 * Skipping a file the server already holds: an offer that names the file's SHA-256 is answered with
 * UPLOAD_DONE `skipped` when the file stored under exactly that name is that very file, unchanged on
 * disk; anything else is stored as usual. Covered at three levels: the upload store, the client's
 * ResumeBook, and the library over real loopback sockets (createServer/createClient).
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { InspectionEvent } from 'xstate';
import { createClient, createServer, FerryError, type ClientOptions, type FerryClient, type FerryServer } from '../index.js';
import { UploadStore, type IncomingFile } from '../media/upload-store.js';
import { ResumeBook } from '../media/resume-book.js';
import { closeAll, content, finalFiles, partialFiles, removeTempDirs, sha256, tempDir } from './helpers/async.js';
import { rejection } from './helpers/errors.js';

const servers: FerryServer[] = [];
const clients: FerryClient[] = [];

afterEach(async () => {
  await closeAll(clients, servers);
  removeTempDirs();
});

const KEY = '0123456789abcdef0123456789abcdef';

/** Stores a file through `s` and closes it, as a server that stops would (its records then are on disk). */
async function store(root: string, name: string, body: Buffer, s = new UploadStore({ root }), key?: string) {
  const file = await s.begin({ name, size: body.length, ...(key ? { key } : {}) });
  file.write(body);
  const saved = await file.finish(sha256(body));
  await s.close();
  return saved;
}

/** Moves a file's modification time, as an edit would. */
function touch(file: string, deltaMs = 5_000): void {
  const later = new Date(fs.statSync(file).mtimeMs + deltaMs);
  fs.utimesSync(file, later, later);
}

describe('UploadStore: an offer with a SHA-256', () => {
  it('of the file stored under that name is skipped: nothing expected, nothing written, the stored file reported', async () => {
    const root = tempDir();
    const body = content(4_000, 1);
    const saved = await store(root, 'a.bin', body);
    const before = fs.statSync(saved.path);

    // Another store on the same folder, as after a restart.
    const file: IncomingFile = await new UploadStore({ root }).begin({ name: 'a.bin', size: body.length, sha256: sha256(body) });
    expect(file.skipped).toBe(true);
    expect([file.received, file.resumedFrom]).toEqual([body.length, 0]);
    expect(() => file.write(Buffer.from('x'))).toThrow(FerryError);
    expect(await file.finish()).toEqual({ ...saved, skipped: true });
    expect(finalFiles(root)).toEqual(['a.bin']);
    expect(partialFiles(root)).toEqual([]);
    expect(fs.statSync(saved.path).mtimeMs).toBe(before.mtimeMs);
  });

  it('the name is the one offered, after the same clean-up as for storing', async () => {
    const root = tempDir();
    const body = content(100, 2);
    await store(root, 'b.txt', body);
    expect((await new UploadStore({ root }).begin({ name: 'b.txt. ', size: body.length, sha256: sha256(body) })).skipped).toBe(true);
    // Under another name the same content is another file.
    const other = await new UploadStore({ root }).begin({ name: 'c.txt', size: body.length, sha256: sha256(body) });
    expect(other.skipped).toBeFalsy();
    await other.abort();
  });

  it('of other content is stored as a new file, numbered, and the name keeps its record', async () => {
    const root = tempDir();
    const s = new UploadStore({ root });
    await store(root, 'a.bin', content(500, 1), new UploadStore({ root }));
    const changed = content(500, 2);
    const file = await s.begin({ name: 'a.bin', size: changed.length, sha256: sha256(changed) });
    expect(file.skipped).toBeFalsy();
    expect(file.resumedFrom).toBe(0);
    file.write(changed);
    expect((await file.finish(sha256(changed))).savedAs).toBe('a (1).bin');
    expect((await s.begin({ name: 'a.bin', size: 500, sha256: sha256(content(500, 1)) })).skipped).toBe(true);
    expect((await s.begin({ name: 'a (1).bin', size: 500, sha256: sha256(changed) })).skipped).toBe(true);
  });

  it('is not trusted once the stored file was changed on the server: the offer is received in full', async () => {
    const root = tempDir();
    const body = content(800, 3);
    const saved = await store(root, 'edited.bin', body);
    // The same bytes written again, which an editor or a sync tool might do: only its mtime moved.
    fs.writeFileSync(saved.path, body);
    touch(saved.path);
    const s = new UploadStore({ root });
    const file = await s.begin({ name: 'edited.bin', size: body.length, sha256: sha256(body) });
    expect(file.skipped).toBeFalsy();
    file.write(body);
    expect((await file.finish(sha256(body))).savedAs).toBe('edited (1).bin');
  });

  it('is not trusted when the file under that name was replaced by another of the same size and time', async () => {
    const root = tempDir();
    const body = content(800, 4);
    const saved = await store(root, 'swap.bin', body);
    const stat = fs.statSync(saved.path);
    const impostor = path.join(root, 'impostor');
    fs.writeFileSync(impostor, content(800, 5));
    fs.utimesSync(impostor, stat.atime, stat.mtime);
    fs.renameSync(impostor, saved.path);
    const file = await new UploadStore({ root }).begin({ name: 'swap.bin', size: body.length, sha256: sha256(body) });
    expect(file.skipped).toBeFalsy();
    await file.abort();
  });

  it('a resumable upload stored already, offered again with its key and hash, is skipped under the name it got', async () => {
    const root = tempDir();
    fs.writeFileSync(path.join(root, 'k.bin'), 'in the way');
    const body = content(3_000, 6);
    const saved = await store(root, 'k.bin', body, new UploadStore({ root }), KEY);
    expect(saved.savedAs).toBe('k (1).bin');
    const file = await new UploadStore({ root }).begin({ name: 'k.bin', size: body.length, key: KEY, sha256: sha256(body) });
    expect(file.skipped).toBe(true);
    expect(file.resumedFrom).toBe(0);
    expect((await file.finish()).savedAs).toBe('k (1).bin');
    // Without the hash the answer comes from the same record the old way: resumed at the end, checked by UPLOAD_END.
    const old = await new UploadStore({ root }).begin({ name: 'k.bin', size: body.length, key: KEY });
    expect([Boolean(old.skipped), old.resumedFrom]).toEqual([false, body.length]);
    expect((await old.finish(sha256(body))).savedAs).toBe('k (1).bin');
    // A stored file that changed since is not answered from the record at all.
    touch(saved.path);
    const again = await new UploadStore({ root }).begin({ name: 'k.bin', size: body.length, key: KEY });
    expect([Boolean(again.skipped), again.resumedFrom]).toEqual([false, 0]);
    await again.abort();
  });

  it('refuses a SHA-256 of the wrong form with E_BAD_FRAME', async () => {
    const root = tempDir();
    for (const bad of ['ab', sha256(Buffer.from('x')).toUpperCase(), 42 as unknown as string]) {
      expect((await rejection(new UploadStore({ root }).begin({ name: 'x', size: 1, sha256: bad }))).code).toBe('E_BAD_FRAME');
    }
  });
});

describe('ResumeBook: stored files', () => {
  function localFile(dir: string, name: string, body: string) {
    const file = path.join(dir, name);
    fs.writeFileSync(file, body);
    const stat = fs.statSync(file);
    return { path: file, size: stat.size, mtimeMs: stat.mtimeMs };
  }

  it('remembers the hash and stored name of exactly this file on this server, in its file too', async () => {
    const dir = tempDir();
    const bookFile = path.join(dir, 'state', 'uploads.json');
    const file = localFile(dir, 'a.txt', 'alpha');
    const book = new ResumeBook(bookFile);
    expect(await book.storedCopy(file, 'srv')).toBeUndefined();
    const copy = { sha256: sha256(Buffer.from('alpha')), savedAs: 'a.txt' };
    await book.rememberStored(file, 'srv', copy);
    expect(await book.storedCopy(file, 'srv')).toEqual(copy);
    // Written shortly, or at once on flush (the client flushes when it is closed).
    await book.flush();
    const reread = new ResumeBook(bookFile);
    expect(await reread.storedCopy(file, 'srv')).toEqual(copy);
    expect(await reread.storedCopy({ ...file, path: path.relative(process.cwd(), file.path) }, 'srv')).toEqual(copy);
    // Another server, another size or modification time: not known.
    expect(await reread.storedCopy(file, 'other')).toBeUndefined();
    expect(await reread.storedCopy({ ...file, size: 6 }, 'srv')).toBeUndefined();
    expect(await reread.storedCopy({ ...file, mtimeMs: file.mtimeMs + 1 }, 'srv')).toBeUndefined();
  });

  it('a newer version replaces the old entry; keys of unfinished uploads are kept beside', async () => {
    const dir = tempDir();
    const bookFile = path.join(dir, 'uploads.json');
    const file = localFile(dir, 'b.txt', 'bravo');
    const book = new ResumeBook(bookFile);
    const key = await book.keyFor(file, 'srv');
    await book.rememberStored(file, 'srv', { sha256: sha256(Buffer.from('bravo')), savedAs: 'b.txt' });
    const newer = { ...file, mtimeMs: file.mtimeMs + 1_000 };
    await book.rememberStored(newer, 'srv', { sha256: sha256(Buffer.from('BRAVO')), savedAs: 'b (1).txt' });
    await book.flush();
    const reread = new ResumeBook(bookFile);
    expect(await reread.storedCopy(file, 'srv')).toBeUndefined();
    expect(await reread.storedCopy(newer, 'srv')).toEqual({ sha256: sha256(Buffer.from('BRAVO')), savedAs: 'b (1).txt' });
    expect(await reread.keyFor(file, 'srv')).toBe(key);
    const saved = JSON.parse(fs.readFileSync(bookFile, 'utf8')) as { stored: unknown[]; uploads: unknown[] };
    expect([saved.stored.length, saved.uploads.length]).toEqual([1, 1]);
  });

  it('writes stored files to its file without a flush too, a moment later', async () => {
    const dir = tempDir();
    const bookFile = path.join(dir, 'uploads.json');
    const file = localFile(dir, 'd.txt', 'delta');
    await new ResumeBook(bookFile).rememberStored(file, 'srv', { sha256: 'd'.repeat(64), savedAs: 'd.txt' });
    await expect.poll(() => fs.existsSync(bookFile) && fs.readFileSync(bookFile, 'utf8'), { timeout: 5_000 }).toContain('d.txt');
  });

  it('ignores stored entries it cannot trust in a damaged book', async () => {
    const dir = tempDir();
    const bookFile = path.join(dir, 'uploads.json');
    const file = localFile(dir, 'c.txt', 'charlie');
    const good = { path: file.path, size: file.size, mtimeMs: file.mtimeMs, server: 'srv', sha256: 'a'.repeat(64), savedAs: 'c.txt', at: Date.now() };
    fs.writeFileSync(bookFile, JSON.stringify({ stored: [{ ...good, sha256: 'not a hash' }, null, 5, { ...good, server: 'other', savedAs: 7 }] }));
    expect(await new ResumeBook(bookFile).storedCopy(file, 'srv')).toBeUndefined();
    fs.writeFileSync(bookFile, JSON.stringify({ stored: [good] }));
    expect(await new ResumeBook(bookFile).storedCopy(file, 'srv')).toEqual({ sha256: good.sha256, savedAs: 'c.txt' });
  });
});

// --- The library over real sockets -------------------------------------------------------------

interface Rig {
  port: number;
  uploadDir: string;
  logs: Record<string, unknown>[];
  /** Types of the events each server session received, in order (tokens from the client among them). */
  sessionEvents: string[];
  client(options?: ClientOptions): FerryClient;
}

async function rig(): Promise<Rig> {
  const uploadDir = path.join(tempDir(), 'upload');
  const logs: Record<string, unknown>[] = [];
  const sessionEvents: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const server = createServer({
    port: 0,
    uploadDir,
    logger,
    heartbeatMs: 0,
    inspect: (ev: InspectionEvent) => {
      if (ev.type === '@xstate.event' && ev.actorRef.id.startsWith('session')) sessionEvents.push(ev.event.type);
    },
  });
  servers.push(server);
  const { port } = await server.listen();
  return {
    port,
    uploadDir,
    logs,
    sessionEvents,
    client(options = {}) {
      const c = createClient({ port, heartbeatMs: 0, ...options });
      clients.push(c);
      return c;
    },
  };
}

function source(name: string, body: Buffer | string): string {
  const file = path.join(tempDir('ferry-src-'), name);
  fs.writeFileSync(file, body);
  return file;
}

describe('library: a file the server already holds is skipped', () => {
  it('the same unchanged file sent again is answered at once: no accept, no DATA, nothing stored', async () => {
    const r = await rig();
    const body = content(200_000, 7);
    const src = source('photo.jpg', body);
    const c = r.client();
    const first = await c.upload(src);
    expect(first).toMatchObject({ savedAs: 'photo.jpg', bytes: body.length, sha256: sha256(body), resumedFrom: 0, skipped: false });

    const seen = r.sessionEvents.length;
    const progress: number[] = [];
    const again = await c.upload(src, { onProgress: (sent) => progress.push(sent) });
    expect(again).toEqual({ file: src, savedAs: 'photo.jpg', bytes: body.length, sha256: sha256(body), resumedFrom: 0, skipped: true });
    const after = r.sessionEvents.slice(seen);
    expect(after).toContain('upload-offer');
    expect(after).toContain('file.saved');
    expect(after).not.toContain('file.ready');
    expect(after).not.toContain('data');
    expect(after).not.toContain('upload-end');
    expect(progress).toEqual([]);
    expect(finalFiles(r.uploadDir)).toEqual(['photo.jpg']);
    expect(r.logs.filter((l) => l.event === 'upload-started')).toHaveLength(1);
    expect(r.logs.filter((l) => l.event === 'file-saved').map((l) => l.skipped ?? false)).toEqual([false, true]);
    // The connection goes on as usual.
    expect(await c.message('still here')).toBe('still here');
  });

  it('a new client with the same state folder skips it too; a changed local file is stored fresh', async () => {
    const r = await rig();
    const stateDir = tempDir('ferry-state-');
    const src = source('notes.txt', 'first version');
    // One client per run, closed at its end as the CLI does.
    const run = async () => {
      const c = r.client({ stateDir });
      try {
        return await c.upload(src);
      } finally {
        await c.close();
      }
    };
    expect((await run()).skipped).toBe(false);
    expect(await run()).toMatchObject({ savedAs: 'notes.txt', skipped: true });
    const book = JSON.parse(fs.readFileSync(path.join(stateDir, 'uploads.json'), 'utf8')) as { stored: { savedAs: string; sha256: string }[] };
    expect(book.stored).toEqual([expect.objectContaining({ savedAs: 'notes.txt', sha256: sha256('first version') })]);

    fs.writeFileSync(src, 'second version, longer');
    const changed = await run();
    expect(changed).toMatchObject({ savedAs: 'notes (1).txt', skipped: false, sha256: sha256('second version, longer') });
    expect(fs.readFileSync(path.join(r.uploadDir, 'notes (1).txt'), 'utf8')).toBe('second version, longer');
    expect(fs.readFileSync(path.join(r.uploadDir, 'notes.txt'), 'utf8')).toBe('first version');
  });

  it('a file modified on the server is not trusted: the next send stores a fresh copy', async () => {
    const r = await rig();
    const src = source('report.pdf', 'the real report');
    const c = r.client();
    await c.upload(src);
    const stored = path.join(r.uploadDir, 'report.pdf');
    fs.writeFileSync(stored, 'tampered report');
    touch(stored);
    const again = await c.upload(src);
    expect(again).toMatchObject({ savedAs: 'report (1).pdf', skipped: false, sha256: sha256('the real report') });
    expect(fs.readFileSync(path.join(r.uploadDir, 'report (1).pdf'), 'utf8')).toBe('the real report');
    // The offer names report.pdf, which still holds the tampered file: another copy. Offered under
    // the copy's own name, it is skipped.
    expect((await c.upload(src)).savedAs).toBe('report (2).pdf');
    expect(await c.upload(src, { name: 'report (2).pdf' })).toMatchObject({ savedAs: 'report (2).pdf', skipped: true });
  });

  it('fresh: true stores a numbered copy of a file the server holds', async () => {
    const r = await rig();
    const src = source('a.txt', 'alpha');
    const c = r.client();
    await c.upload(src);
    const copy = await c.upload(src, { fresh: true });
    expect(copy).toMatchObject({ savedAs: 'a (1).txt', skipped: false, resumedFrom: 0 });
    expect(finalFiles(r.uploadDir)).toEqual(['a (1).txt', 'a.txt']);
    expect((await c.upload(src)).skipped).toBe(true);
  });

  it('the same large file several times in one run: the first is stored, the rest skipped, none resumed', async () => {
    const r = await rig();
    const body = content(2 * 1024 * 1024 + 5, 8);
    const src = source('big.bin', body);
    const c = r.client();
    const results = await Promise.all([c.upload(src), c.upload(src), c.upload(src)]);
    expect(results.map((x) => [x.savedAs, x.skipped, x.resumedFrom, x.sha256])).toEqual([
      ['big.bin', false, 0, sha256(body)],
      ['big.bin', true, 0, sha256(body)],
      ['big.bin', true, 0, sha256(body)],
    ]);
    expect(finalFiles(r.uploadDir)).toEqual(['big.bin']);
    // With fresh, each one is a copy of its own, none resumed from another.
    const copies = await Promise.all([c.upload(src, { fresh: true }), c.upload(src, { fresh: true })]);
    expect(copies.map((x) => [x.savedAs, x.skipped, x.resumedFrom])).toEqual([
      ['big (1).bin', false, 0],
      ['big (2).bin', false, 0],
    ]);
    for (const name of finalFiles(r.uploadDir)) expect(fs.readFileSync(path.join(r.uploadDir, name)).equals(body)).toBe(true);
  });

  it('the same small file several times in one run is stored once', async () => {
    const r = await rig();
    const src = source('tiny.txt', 'tiny');
    const c = r.client();
    const results = await Promise.all([1, 2, 3, 4].map(() => c.upload(src)));
    expect(results.map((x) => x.skipped)).toEqual([false, true, true, true]);
    expect(finalFiles(r.uploadDir)).toEqual(['tiny.txt']);
  });
});
