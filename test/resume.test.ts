/**
 * Nothing lost, nothing twice: resumable uploads and exactly-once messages.
 * - the upload store's keyed partials (resume offset from disk, restart on another size, refusal of an
 *   over-long partial, takeover by a newer connection, kept on a hash mismatch, expiry);
 * - the client's ResumeBook (stable keys across instances, new key for a changed file, forget, a
 *   corrupt book);
 * - the library over real loopback sockets through a TCP proxy the test can freeze and reset: uploads
 *   cut at several offsets resume from what reached the server's disk, messages survive resets before
 *   the welcome, in the middle of a frame and after the server handled them, each logged once.
 * Synchronises on promises, log lines, file sizes and proxy counters, never on sleeps.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { InspectionEvent } from 'xstate';
import { createClient, createServer, FerryError, type ClientOptions, type FerryClient, type FerryServer } from '../index.js';
import { UploadStore } from '../media/upload-store.js';
import { ResumeBook } from '../media/resume-book.js';
import { ServerDecoder } from '../transport/native-codec.js';
import { DEFAULT_LIMITS } from '../transport/frames.js';
import { closeAll, content, finalFiles, partialFiles, removeTempDirs, sha256, tempDir } from './helpers/async.js';
import { rejection, thrown } from './helpers/errors.js';
import { send } from './helpers/uploads.js';
import { hashFile, writeSeededFile } from './helpers/files.js';

const servers: FerryServer[] = [];
const clients: FerryClient[] = [];
const proxies: CutProxy[] = [];

afterEach(async () => {
  vi.restoreAllMocks();
  for (const proxy of proxies.splice(0)) proxy.close();
  await closeAll(clients, servers);
  removeTempDirs();
});

const KEY = '0123456789abcdef0123456789abcdef';
const OTHER_KEY = 'fedcba9876543210fedcba9876543210';

function partialPath(root: string, key: string, ext: 'part' | 'json'): string {
  return path.join(root, '.ferry', 'partial', `${key}.${ext}`);
}

describe('UploadStore: keyed partial uploads', () => {
  it('keeps the partial of an aborted keyed upload; the same key resumes from the bytes on disk and ends with the whole file’s SHA-256', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const body = content(300_000, 7);
    const first = await store.begin({ name: 'movie.bin', size: body.length, key: KEY });
    expect(first.resumedFrom).toBe(0);
    await send(first, body.subarray(0, 123_457));
    await first.abort();
    expect(fs.statSync(partialPath(root, KEY, 'part')).size).toBe(123_457);
    expect(fs.existsSync(partialPath(root, KEY, 'json'))).toBe(true);
    expect(finalFiles(root)).toEqual([]);

    // A second store on the same folder: the offset comes from the disk, as after a restart.
    const again = await new UploadStore({ root }).begin({ name: 'movie.bin', size: body.length, key: KEY });
    expect(again.received).toBe(123_457);
    expect(again.resumedFrom).toBe(123_457);
    await send(again, body.subarray(123_457));
    const saved = await again.finish(sha256(body));
    expect(saved).toMatchObject({ savedAs: 'movie.bin', bytes: body.length, sha256: sha256(body) });
    expect(fs.readFileSync(saved.path).equals(body)).toBe(true);
    expect(partialFiles(root)).toEqual([]);
  });

  it('a partial rebuilt from disk is checked against the whole file: a resumed upload with wrong early bytes fails the hash', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const body = content(10_000, 3);
    const first = await store.begin({ name: 'a.bin', size: body.length, key: KEY });
    await send(first, body.subarray(0, 4_000));
    await first.abort();
    // Someone else's bytes where the first 4,000 should be.
    fs.writeFileSync(partialPath(root, KEY, 'part'), content(4_000, 99));
    const again = await store.begin({ name: 'a.bin', size: body.length, key: KEY });
    expect(again.resumedFrom).toBe(4_000);
    await send(again, body.subarray(4_000));
    expect((await rejection(again.finish(sha256(body)))).code).toBe('E_HASH_MISMATCH');
    expect(finalFiles(root)).toEqual([]);
  });

  it('the same key with another size starts over from zero', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const first = await store.begin({ name: 'x.bin', size: 50_000, key: KEY });
    await send(first, content(20_000, 1));
    await first.abort();

    const other = content(30_000, 2);
    const again = await store.begin({ name: 'x.bin', size: other.length, key: KEY });
    expect(again.resumedFrom).toBe(0);
    expect(again.received).toBe(0);
    expect(fs.statSync(partialPath(root, KEY, 'part')).size).toBe(0);
    await send(again, other);
    const saved = await again.finish(sha256(other));
    expect(fs.readFileSync(saved.path).equals(other)).toBe(true);
    expect(partialFiles(root)).toEqual([]);
  });

  it('refuses a partial longer than the announced size with E_UPLOAD_SIZE and leaves it untouched', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const first = await store.begin({ name: 'y.bin', size: 1_000, key: KEY });
    await send(first, content(600, 4));
    await first.abort();
    // The partial grew behind the store's back.
    fs.appendFileSync(partialPath(root, KEY, 'part'), content(700, 5));
    const partBefore = fs.readFileSync(partialPath(root, KEY, 'part'));
    const metaBefore = fs.readFileSync(partialPath(root, KEY, 'json'));

    const error = await rejection(store.begin({ name: 'y.bin', size: 1_000, key: KEY }));
    expect(error.code).toBe('E_UPLOAD_SIZE');
    expect(error.message).toMatch(/1300.*1000/);
    expect(fs.readFileSync(partialPath(root, KEY, 'part')).equals(partBefore)).toBe(true);
    expect(fs.readFileSync(partialPath(root, KEY, 'json')).equals(metaBefore)).toBe(true);
    expect(finalFiles(root)).toEqual([]);
  });

  it('takeover: a second begin() with the same key stops the first (its write() throws) and continues alone, without interleaving', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const body = content(200_000, 11);
    const older = await store.begin({ name: 'z.bin', size: body.length, key: KEY });
    await send(older, body.subarray(0, 70_000));

    const newer = await store.begin({ name: 'z.bin', size: body.length, key: KEY });
    // Everything the first connection wrote was flushed before the offset was taken.
    expect(newer.resumedFrom).toBe(70_000);
    expect(thrown(() => older.write(Buffer.from('late bytes from the old connection'))).code).toBe('E_STORE_FAILED');
    expect((await rejection(older.finish(sha256(body)))).code).toBe('E_STORE_FAILED');

    await send(newer, body.subarray(70_000, 150_000));
    // The old connection's late cleanup must not take the partial away from the new one.
    await older.abort();
    expect(() => older.write(Buffer.from('x'))).toThrow(FerryError);
    await send(newer, body.subarray(150_000));
    const saved = await newer.finish(sha256(body));
    expect(saved.sha256).toBe(sha256(body));
    expect(fs.readFileSync(saved.path).equals(body)).toBe(true);
    expect(partialFiles(root)).toEqual([]);
  });

  it('keys are independent: a begin() with another key does not touch an open upload', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const a = content(5_000, 1);
    const b = content(6_000, 2);
    const ua = await store.begin({ name: 'a.bin', size: a.length, key: KEY });
    await send(ua, a.subarray(0, 2_000));
    const ub = await store.begin({ name: 'b.bin', size: b.length, key: OTHER_KEY });
    await send(ua, a.subarray(2_000));
    await send(ub, b);
    expect((await ua.finish(sha256(a))).sha256).toBe(sha256(a));
    expect((await ub.finish(sha256(b))).sha256).toBe(sha256(b));
    expect(finalFiles(root)).toEqual(['a.bin', 'b.bin']);
  });

  it('a hash mismatch on a keyed upload stores nothing and leaves the partial (data and record) in place', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const body = content(40_000, 8);
    const upload = await store.begin({ name: 'h.bin', size: body.length, key: KEY });
    await send(upload, body);
    const error = await rejection(upload.finish('0'.repeat(64)));
    expect(error.code).toBe('E_HASH_MISMATCH');
    expect(finalFiles(root)).toEqual([]);
    expect(fs.readFileSync(partialPath(root, KEY, 'part')).equals(body)).toBe(true);
    expect(fs.existsSync(partialPath(root, KEY, 'json'))).toBe(true);
    // An unkeyed upload with a mismatch leaves nothing, as before.
    const plain = await store.begin({ name: 'p.bin', size: 3 });
    plain.write(Buffer.from('abc'));
    expect((await rejection(plain.finish('0'.repeat(64)))).code).toBe('E_HASH_MISMATCH');
    expect(partialFiles(root).sort()).toEqual([`${KEY}.json`, `${KEY}.part`]);
  });

  it('expirePartials removes partials untouched for longer than the age, keeps fresh ones and any upload in progress', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const DAY = 24 * 3600_000;
    const oldKey = 'a'.repeat(32);
    const freshKey = 'b'.repeat(32);
    const activeKey = 'c'.repeat(32);

    for (const key of [oldKey, freshKey]) {
      const u = await store.begin({ name: `${key.slice(0, 1)}.bin`, size: 1_000, key });
      await send(u, content(400, 1));
      await u.abort();
    }
    const active = await store.begin({ name: 'c.bin', size: 1_000, key: activeKey });
    await send(active, content(400, 2));
    // A stray temp file of an unkeyed upload that died with its server.
    const stray = path.join(root, '.ferry', 'partial', 'd'.repeat(32) + '.part');
    fs.writeFileSync(stray, 'left over');

    const twoDaysAgo = (Date.now() - 2 * DAY) / 1000;
    for (const file of [partialPath(root, oldKey, 'part'), partialPath(root, oldKey, 'json'), partialPath(root, activeKey, 'part'), partialPath(root, activeKey, 'json'), stray]) {
      fs.utimesSync(file, twoDaysAgo, twoDaysAgo);
    }

    expect(await store.expirePartials(DAY)).toBe(2);
    expect(partialFiles(root).sort()).toEqual([`${freshKey}.json`, `${freshKey}.part`, `${activeKey}.json`, `${activeKey}.part`].sort());

    // Seen from two days later, the fresh one is old too; the upload in progress is still kept.
    expect(await store.expirePartials(DAY, Date.now() + 2 * DAY)).toBe(1);
    expect(partialFiles(root).sort()).toEqual([`${activeKey}.json`, `${activeKey}.part`]);
    // Nothing younger than the age is touched, whatever `now` says.
    expect(await store.expirePartials(DAY, Date.now() - 3 * DAY)).toBe(0);

    const rest = content(600, 3);
    await send(active, rest);
    const saved = await active.finish(sha256(Buffer.concat([content(400, 2), rest])));
    expect(saved.bytes).toBe(1_000);
    expect(partialFiles(root)).toEqual([]);
  });
});

describe('ResumeBook', () => {
  async function localFile(dir: string, name: string, body: Buffer): Promise<{ path: string; size: number; mtimeMs: number }> {
    const file = path.join(dir, name);
    fs.writeFileSync(file, body);
    const stat = await fs.promises.stat(file);
    return { path: file, size: stat.size, mtimeMs: stat.mtimeMs };
  }

  it('gives the same file for the same server the same key, also in a new instance reading the same book file', async () => {
    const dir = tempDir();
    const bookFile = path.join(dir, 'state', 'uploads.json');
    const file = await localFile(dir, 'f.bin', content(100, 1));
    const first = new ResumeBook(bookFile);
    const key = await first.keyFor(file, '127.0.0.1:9098');
    expect(key).toMatch(/^[0-9a-f]{32}$/);
    expect(await first.keyFor(file, '127.0.0.1:9098')).toBe(key);
    // Relative and absolute spellings of the path are the same file.
    expect(await first.keyFor({ ...file, path: path.relative(process.cwd(), file.path) }, '127.0.0.1:9098')).toBe(key);

    const second = new ResumeBook(bookFile);
    expect(await second.keyFor(file, '127.0.0.1:9098')).toBe(key);
    const other = await second.keyFor(file, '127.0.0.1:9099');
    expect(other).not.toBe(key);
    expect(await new ResumeBook(bookFile).keyFor(file, '127.0.0.1:9099')).toBe(other);
  });

  it('a changed file (new mtime or size) gets a new key, and its old entry is dropped', async () => {
    const dir = tempDir();
    const bookFile = path.join(dir, 'uploads.json');
    const file = await localFile(dir, 'f.bin', content(100, 1));
    const book = new ResumeBook(bookFile);
    const key = await book.keyFor(file, 'srv');
    const touched = await book.keyFor({ ...file, mtimeMs: file.mtimeMs + 1000 }, 'srv');
    expect(touched).not.toBe(key);
    const grown = await book.keyFor({ ...file, mtimeMs: file.mtimeMs + 1000, size: 101 }, 'srv');
    expect(grown).not.toBe(touched);
    const saved = JSON.parse(fs.readFileSync(bookFile, 'utf8')) as { uploads: { key: string }[] };
    expect(saved.uploads.map((e) => e.key)).toEqual([grown]);
    // Going back to the first version does not bring its old key back either.
    expect(await new ResumeBook(bookFile).keyFor(file, 'srv')).not.toBe(key);
  });

  it('forget removes a key, in the book file too', async () => {
    const dir = tempDir();
    const bookFile = path.join(dir, 'uploads.json');
    const a = await localFile(dir, 'a.bin', content(10, 1));
    const b = await localFile(dir, 'b.bin', content(20, 2));
    const book = new ResumeBook(bookFile);
    const keyA = await book.keyFor(a, 'srv');
    const keyB = await book.keyFor(b, 'srv');
    await book.forget(keyA);
    await book.forget('not-a-known-key');
    const reread = new ResumeBook(bookFile);
    expect(await reread.keyFor(b, 'srv')).toBe(keyB);
    const newA = await reread.keyFor(a, 'srv');
    expect(newA).not.toBe(keyA);
    expect(await book.keyFor(a, 'srv')).not.toBe(keyA);
  });

  it('ignores a corrupt book file and replaces it with a readable one', async () => {
    const dir = tempDir();
    const bookFile = path.join(dir, 'uploads.json');
    const file = await localFile(dir, 'f.bin', content(10, 1));
    for (const junk of ['{"uploads": [ {"key": "', '[]', '{"uploads": [{"key": "not hex", "path": "x"}, 42, null]}', '\u0000\u0001']) {
      fs.writeFileSync(bookFile, junk);
      const key = await new ResumeBook(bookFile).keyFor(file, 'srv');
      expect(key).toMatch(/^[0-9a-f]{32}$/);
      expect(await new ResumeBook(bookFile).keyFor(file, 'srv')).toBe(key);
    }
  });

  it('without a file the keys last only as long as the instance', async () => {
    const dir = tempDir();
    const file = await localFile(dir, 'f.bin', content(10, 1));
    const book = new ResumeBook();
    const key = await book.keyFor(file, 'srv');
    expect(await book.keyFor(file, 'srv')).toBe(key);
    expect(await new ResumeBook().keyFor(file, 'srv')).not.toBe(key);
  });
});

// ---------------------------------------------------------------------------------------------
// A TCP proxy between a real client and a real server that the test can freeze and reset.
// ---------------------------------------------------------------------------------------------

interface LinkPlan {
  /** Forward at most this many DATA payload bytes towards the server; hold everything after. */
  dataLimit?: number;
  /** Forward at most this many raw bytes towards the server; hold everything after. */
  rawLimit?: number;
  /** Forward nothing from the server to the client. */
  holdDown?: boolean;
}

/** One proxied connection. */
class Link {
  /** Raw bytes forwarded towards the server. */
  upBytes = 0;
  /** DATA payload bytes among them (decoded by a mirror of the server's decoder). */
  dataBytes = 0;
  /** Bytes the server sent, forwarded or held. */
  downBytes = 0;
  /** Set once a limit was reached: nothing more goes up on this link. */
  frozen = false;
  closed = false;
  private readonly mirror = new ServerDecoder(DEFAULT_LIMITS);

  constructor(
    readonly client: net.Socket,
    readonly upstream: net.Socket,
    public plan: LinkPlan,
  ) {
    for (const s of [client, upstream]) s.on('error', () => {});
    client.on('data', (chunk: Buffer) => this.up(chunk));
    upstream.on('data', (chunk: Buffer) => {
      this.downBytes += chunk.length;
      if (!this.plan.holdDown) client.write(chunk);
    });
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('close', () => {
      this.closed = true;
      upstream.destroy();
    });
    upstream.on('close', () => {
      this.closed = true;
      client.destroy();
    });
  }

  private up(chunk: Buffer): void {
    if (this.frozen) return;
    let take = chunk.length;
    const { rawLimit, dataLimit } = this.plan;
    if (rawLimit !== undefined && this.upBytes + take >= rawLimit) {
      take = Math.max(0, rawLimit - this.upBytes);
      this.frozen = true;
    }
    const candidate = chunk.subarray(0, take);
    let tokens: ReturnType<ServerDecoder['feed']> = [];
    try {
      tokens = this.mirror.feed(candidate);
    } catch {
      // Not ours to judge; the server will say.
    }
    for (const token of tokens) {
      if (token.type !== 'data') continue;
      const start = token.chunk.byteOffset - candidate.byteOffset;
      if (dataLimit !== undefined && this.dataBytes + token.chunk.length >= dataLimit) {
        take = start + (dataLimit - this.dataBytes);
        this.dataBytes = dataLimit;
        this.frozen = true;
        break;
      }
      this.dataBytes += token.chunk.length;
    }
    this.upBytes += take;
    if (take > 0) this.upstream.write(chunk.subarray(0, take));
    // Held bytes stay in the client's socket: it sees backpressure, as with a dead path.
    if (this.frozen) this.client.pause();
  }

  /** Drops the connection on both sides with a TCP RST. */
  reset(): void {
    this.client.resetAndDestroy();
    this.upstream.resetAndDestroy();
  }
}

class CutProxy {
  readonly links: Link[] = [];
  /** While set, every new connection is reset at once (the path is cut). */
  refusing = false;
  /** How the n-th link (from 0) treats its traffic. */
  plan: (n: number) => LinkPlan = () => ({});
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly target: number) {
    this.server = net.createServer((client) => {
      this.sockets.add(client);
      client.on('close', () => this.sockets.delete(client));
      client.on('error', () => {});
      if (this.refusing) {
        client.resetAndDestroy();
        return;
      }
      const upstream = net.connect({ host: '127.0.0.1', port: this.target });
      this.sockets.add(upstream);
      upstream.on('close', () => this.sockets.delete(upstream));
      this.links.push(new Link(client, upstream, this.plan(this.links.length)));
    });
  }

  async listen(): Promise<number> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return (this.server.address() as net.AddressInfo).port;
  }

  close(): void {
    this.server.close();
    for (const socket of this.sockets) socket.destroy();
  }
}

interface Rig {
  server: FerryServer;
  proxy: CutProxy;
  port: number;
  uploadDir: string;
  logs: Record<string, unknown>[];
  /** Session states seen by the inspector, e.g. 'receivingBody'. */
  sessionStates: Set<string>;
  client(options?: ClientOptions): FerryClient;
  /** `"event":"message"` log lines with this text. */
  messageLines(text: string): Record<string, unknown>[];
  logged(event: string): Record<string, unknown>[];
}

async function rig(): Promise<Rig> {
  const uploadDir = path.join(tempDir(), 'upload');
  const logs: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const sessionStates = new Set<string>();
  const server = createServer({
    port: 0,
    uploadDir,
    logger,
    inspect: (ev: InspectionEvent) => {
      if (ev.type !== '@xstate.snapshot') return;
      const value = (ev.snapshot as { value?: unknown }).value;
      if (typeof value === 'string') sessionStates.add(value);
    },
  });
  servers.push(server);
  const { port: serverPort } = await server.listen();
  const proxy = new CutProxy(serverPort);
  proxies.push(proxy);
  const port = await proxy.listen();
  return {
    server,
    proxy,
    port,
    uploadDir,
    logs,
    sessionStates,
    client(options = {}) {
      const c = createClient({ port, retryInitialMs: 20, retryMaxMs: 100, heartbeatMs: 0, ...options });
      clients.push(c);
      return c;
    },
    messageLines: (text) => logs.filter((l) => l.event === 'message' && l.text === text),
    logged: (event) => logs.filter((l) => l.event === event),
  };
}

const WAIT = { timeout: 10_000, interval: 5 };

describe('library: uploads resume after a reset connection', () => {
  const SIZE = 3 * 1024 * 1024 + 12_345;
  const cases: [string, number][] = [
    ['10%', Math.floor(SIZE * 0.1)],
    ['50%', Math.floor(SIZE * 0.5)],
    ['99%', Math.floor(SIZE * 0.99)],
    ['after the last byte, before UPLOAD_END', SIZE],
  ];

  it.each(cases)('cut at %s: finishes with the right hash, resuming from exactly the bytes on the server’s disk', async (_label, cutAt) => {
    const r = await rig();
    const src = path.join(tempDir(), 'big.bin');
    const written = await writeSeededFile(src, SIZE, 42);
    r.proxy.plan = (n) => (n === 0 ? { dataLimit: cutAt } : {});
    const c = r.client();
    const result = c.upload(src);

    await vi.waitFor(() => expect(r.proxy.links[0]?.frozen).toBe(true), WAIT);
    const first = r.proxy.links[0]!;
    expect(first.dataBytes).toBe(cutAt);
    // Reset only once all of it has reached the server's disk.
    const part = () => partialFiles(r.uploadDir).find((name) => name.endsWith('.part'));
    await vi.waitFor(() => expect(fs.statSync(path.join(r.uploadDir, '.ferry', 'partial', part()!)).size).toBe(cutAt), WAIT);
    first.reset();

    const uploaded = await result;
    expect(uploaded).toMatchObject({ file: src, savedAs: 'big.bin', bytes: SIZE, sha256: written.sha256, resumedFrom: cutAt });
    expect(r.proxy.links).toHaveLength(2);
    // Only the rest crossed the second connection.
    expect(r.proxy.links[1]!.dataBytes).toBe(SIZE - cutAt);
    expect(await hashFile(path.join(r.uploadDir, 'big.bin'))).toEqual({ sha256: written.sha256, size: SIZE });
    expect(finalFiles(r.uploadDir)).toEqual(['big.bin']);
    expect(r.logged('file-saved')).toHaveLength(1);
    expect(r.logged('upload-started')).toHaveLength(2);
    await vi.waitFor(() => expect(partialFiles(r.uploadDir)).toEqual([]), WAIT);
  });

  it('resets twice in one upload and still ends with one correct file', async () => {
    const r = await rig();
    const src = path.join(tempDir(), 'twice.bin');
    const written = await writeSeededFile(src, SIZE, 7);
    const cuts = [Math.floor(SIZE * 0.3), Math.floor(SIZE * 0.4)];
    r.proxy.plan = (n) => (n < cuts.length ? { dataLimit: cuts[n]! } : {});
    const c = r.client();
    const result = c.upload(src);
    for (let n = 0; n < cuts.length; n++) {
      await vi.waitFor(() => expect(r.proxy.links[n]?.frozen).toBe(true), WAIT);
      const onDisk = cuts.slice(0, n + 1).reduce((a, b) => a + b, 0);
      await vi.waitFor(() => expect(fs.statSync(path.join(r.uploadDir, '.ferry', 'partial', partialFiles(r.uploadDir).find((f) => f.endsWith('.part'))!)).size).toBe(onDisk), WAIT);
      r.proxy.links[n]!.reset();
    }
    const uploaded = await result;
    expect(uploaded).toMatchObject({ bytes: SIZE, sha256: written.sha256, resumedFrom: cuts[0]! + cuts[1]! });
    expect(r.proxy.links).toHaveLength(3);
    expect((await hashFile(path.join(r.uploadDir, 'twice.bin'))).sha256).toBe(written.sha256);
  });
});

describe('library: messages exactly once across resets', () => {
  it('a reset during the handshake: the queued message is delivered once after the reconnect', async () => {
    const r = await rig();
    r.proxy.plan = (n) => (n === 0 ? { holdDown: true } : {});
    const c = r.client();
    const reply = c.message('queued before the welcome');
    await vi.waitFor(() => expect(r.logged('hello')).toHaveLength(1), WAIT);
    // The server welcomed the client, but the welcome never arrived.
    await vi.waitFor(() => expect(r.proxy.links[0]!.downBytes).toBeGreaterThan(0), WAIT);
    r.proxy.links[0]!.reset();
    expect(await reply).toBe('queued before the welcome');
    expect(r.messageLines('queued before the welcome')).toHaveLength(1);
    expect(r.logged('hello')).toHaveLength(2);
    expect(r.proxy.links).toHaveLength(2);
  });

  it('a reset in the middle of a message frame: the server never handles the half, the resend is handled once', async () => {
    const r = await rig();
    const c = r.client();
    await c.connect();
    const first = r.proxy.links[0]!;
    const big = 'x'.repeat(300_000) + ' end of a long message';
    // Let through the start of the next frame only.
    first.plan = { rawLimit: first.upBytes + 100_000 };
    const reply = c.message(big);
    await vi.waitFor(() => expect(first.frozen).toBe(true), WAIT);
    await vi.waitFor(() => expect(r.sessionStates.has('receivingBody')).toBe(true), WAIT);
    first.reset();
    expect(await reply).toBe(big);
    expect(r.messageLines(big)).toHaveLength(1);
    expect(r.logged('duplicate-message')).toHaveLength(0);
    expect(r.proxy.links).toHaveLength(2);
  });

  it('messages handled but not acknowledged before a reset are acknowledged again without a second "message" line', async () => {
    const r = await rig();
    const c = r.client();
    await c.connect();
    const first = r.proxy.links[0]!;
    first.plan = { holdDown: true };
    const texts = Array.from({ length: 5 }, (_, i) => `handled-${i}`);
    const replies = texts.map((t) => c.message(t));
    await vi.waitFor(() => expect(r.logged('message')).toHaveLength(5), WAIT);
    first.reset();
    expect(await Promise.all(replies)).toEqual(texts);
    for (const text of texts) expect(r.messageLines(text)).toHaveLength(1);
    // They were resent (and recognised), not lost.
    expect(r.logged('duplicate-message').map((l) => l.id)).toEqual(r.logged('message').map((l) => l.id));
    // A new message after all that is handled normally.
    expect(await c.message('after')).toBe('after');
    expect(r.messageLines('after')).toHaveLength(1);
  });

  it('messages sent while the path is cut are delivered exactly once, in order, after it is restored', async () => {
    const r = await rig();
    const c = r.client();
    let retries = 0;
    c.actor.on('retrying', () => void retries++);
    expect(await c.message('before the cut')).toBe('before the cut');
    r.proxy.refusing = true;
    r.proxy.links[0]!.reset();
    const texts = Array.from({ length: 10 }, (_, i) => `while cut ${i}`);
    const replies = texts.map((t) => c.message(t));
    await vi.waitFor(() => expect(retries).toBeGreaterThanOrEqual(3), WAIT);
    expect(r.logged('message')).toHaveLength(1);
    r.proxy.refusing = false;
    expect(await Promise.all(replies)).toEqual(texts);
    expect(r.logged('message').map((l) => l.text)).toEqual(['before the cut', ...texts]);
  });
});

describe('UploadStore: keyed uploads under races and repeats', () => {
  it('two offers of the same key at once never both write: the file stored is exactly the file sent', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const body = content(1_000, 11);
    const first = await store.begin({ name: 'r.bin', size: body.length, key: KEY });
    await send(first, body.subarray(0, 400));
    await first.abort();

    const [a, b] = await Promise.all([store.begin({ name: 'r.bin', size: body.length, key: KEY }), store.begin({ name: 'r.bin', size: body.length, key: KEY })]);
    // The second offer took over: the first can no longer write.
    expect(() => a.write(body.subarray(400))).toThrow(FerryError);
    expect(b.resumedFrom).toBe(400);
    await send(b, body.subarray(400));
    const saved = await b.finish(sha256(body));
    expect(fs.readFileSync(saved.path).equals(body)).toBe(true);
  });

  it('an offer repeated after the file was stored (its confirmation lost) is answered from the record, not stored twice', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const body = content(5_000, 12);
    const first = await store.begin({ name: 'done.bin', size: body.length, key: KEY });
    await send(first, body);
    const saved = await first.finish(sha256(body));

    const again = await new UploadStore({ root }).begin({ name: 'done.bin', size: body.length, key: KEY });
    expect(again.resumedFrom).toBe(body.length);
    expect(await again.finish(sha256(body))).toEqual(saved);
    expect(finalFiles(root)).toEqual(['done.bin']);
    const mismatch = await new UploadStore({ root }).begin({ name: 'done.bin', size: body.length, key: KEY });
    expect((await rejection(mismatch.finish(sha256(Buffer.from('other'))))).code).toBe('E_HASH_MISMATCH');
  });

  it('expiry judges an upload by its newest file: a partial resumed recently keeps its record even if the record is old', async () => {
    const root = tempDir();
    const store = new UploadStore({ root });
    const body = content(2_000, 13);
    const first = await store.begin({ name: 'old.bin', size: body.length, key: KEY });
    await send(first, body.subarray(0, 700));
    await first.abort();
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600_000);
    fs.utimesSync(partialPath(root, KEY, 'json'), twoDaysAgo, twoDaysAgo);

    expect(await store.expirePartials(24 * 3600_000)).toBe(0);
    const again = await store.begin({ name: 'old.bin', size: body.length, key: KEY });
    expect(again.resumedFrom).toBe(700);
    await again.abort();

    // Once everything of it is old, it goes as a whole.
    fs.utimesSync(partialPath(root, KEY, 'part'), twoDaysAgo, twoDaysAgo);
    fs.utimesSync(partialPath(root, KEY, 'json'), twoDaysAgo, twoDaysAgo);
    expect(await store.expirePartials(24 * 3600_000)).toBe(1);
    expect(fs.existsSync(partialPath(root, KEY, 'part'))).toBe(false);
    expect(fs.existsSync(partialPath(root, KEY, 'json'))).toBe(false);
  });
});
