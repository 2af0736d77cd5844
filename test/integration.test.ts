/**
 * The library (createServer/createClient) over real loopback sockets: large and concurrent
 * uploads, clients that die mid-upload, message edge cases, name collisions, shutdown and retry.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createClient, createServer, FerryError, type ClientOptions, type FerryClient, type FerryServer, type ServerOptions } from '../index.js';
import type { ClientToken } from '../transport/frames.js';
import { ClientDecoder, encode, preamble } from '../transport/native-codec.js';
import { hashFile, sha256, tempDir, writeSeededFile } from './helpers/files.js';
import { closeAll } from './helpers/async.js';

const dirs: string[] = [];
const servers: FerryServer[] = [];
const clients: FerryClient[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await closeAll(clients, servers);
  for (const dir of dirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

function scratch(): string {
  const dir = tempDir('ferry-int-');
  dirs.push(dir);
  return dir;
}

async function startServer(options: ServerOptions = {}): Promise<{ server: FerryServer; port: number; uploadDir: string }> {
  const uploadDir = options.uploadDir ?? path.join(scratch(), 'upload');
  const server = createServer({ port: 0, ...options, uploadDir });
  servers.push(server);
  const { port } = await server.listen();
  return { server, port, uploadDir };
}

function client(port: number, options: ClientOptions = {}): FerryClient {
  const c = createClient({ port, retryInitialMs: 20, retryMaxMs: 200, ...options });
  clients.push(c);
  return c;
}

/** Final files in the upload folder (the `.ferry` working folder is not one). */
function finalNames(uploadDir: string): string[] {
  return fs
    .readdirSync(uploadDir)
    .filter((name) => name !== '.ferry')
    .sort();
}

/** Partial data and its records; the `.done` records of stored uploads are not partial data. */
function partials(uploadDir: string): string[] {
  return fs.readdirSync(path.join(uploadDir, '.ferry', 'partial')).filter((name) => !name.endsWith('.done'));
}

/** `promise`, or a rejection naming `what` if it has not settled within `ms` (a guard, not a wait). */
function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}

/** A client speaking the protocol by hand over a raw socket, one token at a time. */
async function rawClient(port: number) {
  const socket = net.connect({ host: '127.0.0.1', port });
  sockets.push(socket);
  await once(socket, 'connect');
  const decoder = new ClientDecoder();
  const tokens: ClientToken[] = [];
  const waiters = new Set<() => void>();
  let closed = false;
  socket.on('data', (chunk: Buffer) => {
    tokens.push(...decoder.feed(chunk));
    for (const w of [...waiters]) w();
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    closed = true;
    for (const w of [...waiters]) w();
  });
  return {
    socket,
    /** The next token of `type`, skipping none: anything else first is a failure. */
    next<T extends ClientToken['type']>(type: T): Promise<Extract<ClientToken, { type: T }>> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const token = tokens.shift();
          if (token) {
            waiters.delete(check);
            if (token.type === type) resolve(token as Extract<ClientToken, { type: T }>);
            else reject(new Error(`expected ${type}, got ${JSON.stringify(token)}`));
          } else if (closed) {
            waiters.delete(check);
            reject(new Error(`connection closed while waiting for ${type}`));
          }
        };
        waiters.add(check);
        check();
      });
    },
    get closed() {
      return closed;
    },
  };
}

describe('uploads', () => {
  it('a 100 MB file arrives with the same size and SHA-256', async () => {
    const dir = scratch();
    const source = path.join(dir, 'big.bin');
    const size = 100 * 1024 * 1024 + 12_345; // not a multiple of any chunk size
    const written = await writeSeededFile(source, size, 0xfe11);
    expect(written.size).toBe(size);

    const { port, uploadDir } = await startServer();
    const c = client(port);
    let lastProgress = 0;
    const result = await c.upload(source, { onProgress: (sent) => (lastProgress = sent) });

    expect(result).toMatchObject({ file: source, savedAs: 'big.bin', bytes: size, sha256: written.sha256, resumedFrom: 0 });
    expect(lastProgress).toBe(size);
    expect(await hashFile(path.join(uploadDir, 'big.bin'))).toEqual({ sha256: written.sha256, size });
    expect(finalNames(uploadDir)).toEqual(['big.bin']);
    expect(partials(uploadDir)).toEqual([]);
  });

  it('50 clients at once each get their own acknowledgements and files', async () => {
    const { port, uploadDir } = await startServer();
    const src = scratch();
    const work = Array.from({ length: 50 }, async (_, i) => {
      const file = path.join(src, `client-${i}.txt`);
      const body = `client ${i} ${'x'.repeat(i * 37)}\n`;
      fs.writeFileSync(file, body);
      const c = client(port);
      const texts = [`hello from ${i}`, `второе ${i}`, `third ${i} 🚢`];
      const [replies, uploaded] = await Promise.all([Promise.all(texts.map((t) => c.message(t))), c.upload(file)]);
      expect(replies).toEqual(texts);
      expect(uploaded).toMatchObject({ savedAs: `client-${i}.txt`, bytes: Buffer.byteLength(body), sha256: sha256(body) });
      return body;
    });
    const bodies = await Promise.all(work);

    expect(finalNames(uploadDir)).toEqual(bodies.map((_, i) => `client-${i}.txt`).sort());
    bodies.forEach((body, i) => expect(fs.readFileSync(path.join(uploadDir, `client-${i}.txt`), 'utf8')).toBe(body));
  });

  it('the same name uploaded by 10 clients at once is stored as name, name (1) … name (9)', async () => {
    const { port, uploadDir } = await startServer();
    const src = scratch();
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => {
        const folder = path.join(src, String(i));
        fs.mkdirSync(folder);
        const file = path.join(folder, 'report.txt');
        fs.writeFileSync(file, `report number ${i}\n`.repeat(1000 + i));
        return client(port)
          .upload(file)
          .then((result) => ({ i, result }));
      }),
    );

    const expected = ['report.txt', ...Array.from({ length: 9 }, (_, n) => `report (${n + 1}).txt`)].sort();
    expect(results.map((r) => r.result.savedAs).sort()).toEqual(expected);
    expect(finalNames(uploadDir)).toEqual(expected);
    for (const { i, result } of results) {
      const body = `report number ${i}\n`.repeat(1000 + i);
      expect(fs.readFileSync(path.join(uploadDir, result.savedAs), 'utf8')).toBe(body);
      expect(result).toMatchObject({ bytes: Buffer.byteLength(body), sha256: sha256(body) });
    }
    expect(partials(uploadDir)).toEqual([]);
  });

  it('a client killed mid-upload leaves no file behind, and the server serves the next client', async () => {
    const { port, uploadDir } = await startServer();
    const raw = await rawClient(port);
    raw.socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'test/raw' })]));
    const welcome = await raw.next('welcome');
    expect(welcome.info.version).toBe(1);

    const size = 8 * 1024 * 1024;
    raw.socket.write(encode.uploadOffer({ id: 7, name: 'doomed.bin', size }));
    expect(await raw.next('upload-accept')).toEqual({ type: 'upload-accept', id: 7, offset: 0 });
    // The server has opened its temp file by the time it accepts.
    expect(partials(uploadDir)).toHaveLength(1);
    const temp = path.join(uploadDir, '.ferry', 'partial', partials(uploadDir)[0]!);

    const chunk = Buffer.alloc(64 * 1024, 0xab);
    for (let i = 0; i < 16; i++) raw.socket.write(Buffer.concat([encode.dataHeader(chunk.length), chunk]));
    // Really mid-upload: part of the data has reached the disk.
    await vi.waitFor(() => expect(fs.statSync(temp).size).toBeGreaterThan(0), { timeout: 5_000, interval: 10 });
    raw.socket.destroy();

    await vi.waitFor(() => expect(partials(uploadDir)).toEqual([]), { timeout: 5_000, interval: 10 });
    expect(finalNames(uploadDir)).toEqual([]);

    const c = client(port);
    expect(await c.message('still there?')).toBe('still there?');
    const src = path.join(scratch(), 'doomed.bin');
    fs.writeFileSync(src, 'the real thing');
    // The name is free: the broken upload never claimed it.
    expect(await c.upload(src)).toMatchObject({ savedAs: 'doomed.bin', bytes: 14, sha256: sha256('the real thing') });
    expect(finalNames(uploadDir)).toEqual(['doomed.bin']);
    expect(fs.readFileSync(path.join(uploadDir, 'doomed.bin'), 'utf8')).toBe('the real thing');
    expect(partials(uploadDir)).toEqual([]);
  });
});

describe('messages', () => {
  it('round-trips non-ASCII, empty and large texts, in order', async () => {
    const { port } = await startServer();
    const c = client(port);
    const texts = ['фото', '', 'naïve café — 日本語 🚢👩‍👩‍👧', 'e\u0301 \u0000 tab\tnewline\n', '', 'ж'.repeat(300_000)];
    const replies = await Promise.all(texts.map((t) => c.message(t)));
    expect(replies).toEqual(texts);
  });

  it('a message over the server maxMessage fails with E_MESSAGE_TOO_LARGE and the connection keeps working', async () => {
    const { port } = await startServer({ maxMessage: 16 });
    const c = client(port);
    let connects = 0;
    c.actor.on('connected', () => connects++);
    await c.connect();

    // A client that got this wrong would lose its connection and leave later calls hanging: fail fast instead.
    const send = (text: string) => deadline(c.message(text), 5_000, `message ${JSON.stringify(text)}`);
    expect(await send('x'.repeat(16))).toBe('x'.repeat(16)); // exactly at the limit
    const tooLong = send('x'.repeat(17));
    await expect(tooLong).rejects.toBeInstanceOf(FerryError);
    await expect(tooLong).rejects.toMatchObject({ code: 'E_MESSAGE_TOO_LARGE' });
    // The limit is in bytes, not characters: 9 × "é" is 18 bytes.
    await expect(send('é'.repeat(9))).rejects.toMatchObject({ code: 'E_MESSAGE_TOO_LARGE' });

    expect(await send('still here')).toBe('still here');
    expect(connects).toBe(1);
    expect(c.actor.getSnapshot().matches({ online: 'connected' })).toBe(true);
  });

  it('messages made in one tick reach the client machine as one event and keep their order around an upload', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const { port } = await startServer({ logger });
    const file = path.join(scratch(), 'between.bin');
    await writeSeededFile(file, 4096, 5);
    const events: string[] = [];
    const c = client(port, {
      inspect: (ev) => {
        if (ev.type !== '@xstate.event' || ev.actorRef !== c.actor) return;
        const e = ev.event as { type: string; messages?: { text: string }[]; text?: string };
        if (e.type === 'messages') events.push(`messages(${e.messages!.map((m) => m.text).join(',')})`);
        else if (e.type === 'message') events.push(`message(${e.text})`);
        else if (e.type === 'upload') events.push('upload');
      },
    });
    await c.connect();
    const results = Promise.all([c.message('a'), c.message('b'), c.upload(file), c.message('c'), c.message('d')]);
    const [a, b, uploaded, cc, d] = await results;
    expect([a, b, cc, d]).toEqual(['a', 'b', 'c', 'd']);
    expect(uploaded.savedAs).toBe('between.bin');
    expect(events).toEqual(['messages(a,b)', 'upload', 'messages(c,d)']);
    // The server handled them in the order they were made.
    const order = lines.filter((l) => l.event === 'message' || l.event === 'file-saved').map((l) => (l.event === 'message' ? l.text : 'file'));
    expect(order).toEqual(['a', 'b', 'file', 'c', 'd']);
    // One message on its own still goes as a single event.
    expect(await c.message('alone')).toBe('alone');
    expect(events.at(-1)).toBe('message(alone)');
  });

  it('the server itself refuses an oversized message from a client that ignores its limit, and keeps serving', async () => {
    const { port } = await startServer({ maxMessage: 16 });
    const raw = await rawClient(port);
    raw.socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'test/raw' })]));
    expect((await raw.next('welcome')).info.maxMessage).toBe(16);
    raw.socket.write(encode.message(1, 'y'.repeat(17)));
    const refused = await raw.next('error');
    expect(refused.error.code).toBe('E_MESSAGE_TOO_LARGE');
    await vi.waitFor(() => expect(raw.closed).toBe(true), { timeout: 5_000, interval: 10 });

    expect(await client(port).message('next one')).toBe('next one');
  });
});

describe('lifecycle', () => {
  it('server.close() with idle clients connected resolves, and the clients see the disconnect', async () => {
    const { server, port } = await startServer({ graceMs: 30_000 });
    const idle = Array.from({ length: 3 }, () => client(port, { retryInitialMs: 60_000 }));
    const dropped = idle.map(
      (c) =>
        new Promise<FerryError>((resolve) => {
          c.actor.on('retrying', (e) => resolve(e.error));
        }),
    );
    await Promise.all(idle.map((c) => c.connect()));
    expect(await idle[0]!.message('ping')).toBe('ping');

    // Idle sessions need no grace period: close() must not wait for it (30 s here).
    await deadline(server.close(), 10_000, 'server.close()');
    expect(server.actor.getSnapshot().status).toBe('done');

    const errors = await Promise.all(dropped);
    for (const [i, error] of errors.entries()) {
      expect(error.code).toBe('E_CONNECTION_LOST');
      expect(idle[i]!.actor.getSnapshot().matches('retrying')).toBe(true);
    }
    // Nothing listens any more.
    const probe = net.connect({ host: '127.0.0.1', port });
    const [err] = (await once(probe, 'error')) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ECONNREFUSED');
  });

  it('a client started before the server connects once the server comes up, and its message gets through', async () => {
    const finder = net.createServer();
    finder.listen(0, '127.0.0.1');
    await once(finder, 'listening');
    const port = (finder.address() as net.AddressInfo).port;
    finder.close();
    await once(finder, 'close');

    const c = client(port, { retryInitialMs: 20, retryMaxMs: 100 });
    let retried = 0;
    const refusedOnce = new Promise<FerryError>((resolve) =>
      c.actor.on('retrying', (e) => {
        retried++;
        resolve(e.error);
      }),
    );
    const reply = c.message('sent before the server existed');
    // Wait until the client has actually been refused at least once.
    expect((await refusedOnce).code).toBe('E_CONNECTION_LOST');

    await startServer({ port });
    expect(await reply).toBe('sent before the server existed');
    expect(retried).toBeGreaterThanOrEqual(1);
    expect(c.actor.getSnapshot().matches({ online: 'connected' })).toBe(true);
  });

  it('a client that gave up or was closed refuses new work at once instead of leaving it pending', async () => {
    const gaveUp = createClient({ port: 1, retryInitialMs: 5, retryMaxMs: 10, retryForMs: 50 });
    await expect(gaveUp.message('a')).rejects.toMatchObject({ code: 'E_GAVE_UP' });
    await expect(gaveUp.message('b')).rejects.toMatchObject({ code: 'E_GAVE_UP' });
    await expect(gaveUp.upload(path.resolve('package.json'))).rejects.toMatchObject({ code: 'E_GAVE_UP' });

    const { port } = await startServer();
    const closed = client(port);
    expect(await closed.message('first')).toBe('first');
    await closed.close();
    await expect(closed.message('after close')).rejects.toMatchObject({ code: 'E_CLOSED' });

    const neverStarted = client(port);
    await neverStarted.close();
    await expect(neverStarted.message('x')).rejects.toBeInstanceOf(FerryError);
  });
});
