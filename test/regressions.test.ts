/**
 * One test per bug that was fixed, each written so that it fails on the old behaviour:
 * - the client's retry budget counted from the last connect instead of from the drop;
 * - work handed to a client in `online.closing` vanished instead of failing with E_CLOSED;
 * - tokens held while a session paused were handed over mid-transition, and some were dropped;
 * - a ping before the hello made the server send its preamble twice;
 * - closing a client during an upload wrote BYE between DATA frames;
 * - a protocol error during an upload was answered with the upload's id.
 * (A finished client refusing new work at once is pinned in integration.test.ts.)
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import { createClient, createServer, type FerryClient, type FerryServer } from '../index.js';
import { ClientDecoder, encode, frameHeader, nativeConnectionReplies, preamble } from '../transport/native-codec.js';
import { DEFAULT_LIMITS, PREAMBLE_MAGIC, type ClientToken } from '../transport/frames.js';
import { AsyncQueue, closeAll, content, finalFiles, partialFiles, removeTempDirs, tempDir, within } from './helpers/async.js';
import { ClientHarness, refused, type ClientHarnessOptions } from './helpers/client-harness.js';
import { SessionHarness, type SessionHarnessOptions } from './helpers/session-harness.js';

const clientHarnesses: ClientHarness[] = [];
const sessionHarnesses: SessionHarness[] = [];
const servers: FerryServer[] = [];
const clients: FerryClient[] = [];

function startClient(opts?: ClientHarnessOptions): ClientHarness {
  const h = new ClientHarness(opts);
  clientHarnesses.push(h);
  return h.start();
}

function startSession(opts?: SessionHarnessOptions): SessionHarness {
  const h = new SessionHarness(opts);
  sessionHarnesses.push(h);
  return h;
}

afterEach(async () => {
  vi.useRealTimers();
  for (const h of clientHarnesses.splice(0)) h.dispose();
  for (const h of sessionHarnesses.splice(0)) h.dispose();
  await closeAll(clients, servers);
  removeTempDirs();
});

function localFile(bytes: Buffer, name = 'file.bin'): string {
  const p = path.join(tempDir(), name);
  fs.writeFileSync(p, bytes);
  return p;
}

/** Every occurrence of the preamble's magic in `bytes`. */
function preambleOffsets(bytes: Buffer): number[] {
  const out: number[] = [];
  for (let i = bytes.indexOf(PREAMBLE_MAGIC); i >= 0; i = bytes.indexOf(PREAMBLE_MAGIC, i + 1)) out.push(i);
  return out;
}

describe('regression: the client retry budget counts from the drop', () => {
  it('a drop long after connecting retries, and gives up only after forMs of failures', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const h = startClient({ retry: { initialMs: 100, maxMs: 200, forMs: 1_000 } });
    let gaveUpAt: number | undefined;
    h.actor.on('disconnected', () => (gaveUpAt = Date.now()));
    const conn = await h.connect();

    // Connected for much longer than the retry budget.
    await vi.advanceTimersByTimeAsync(5_000);
    expect(h.value()).toEqual({ online: { connected: 'idle' } });
    expect(h.server.dials).toBe(1);

    h.server.refuseAll = refused();
    const droppedAt = Date.now();
    const down = h.processed('link.down');
    conn.transport.reset();
    // Old behaviour: the budget counted from the connect, so the client gave up on the spot.
    expect((await down).value).toBe('retrying');
    expect(h.all('disconnected')).toEqual([]);
    expect((await h.next('retrying')).attempt).toBe(1);

    // Still trying, and dialling again, within the budget.
    await vi.advanceTimersByTimeAsync(900);
    expect(h.actor.getSnapshot().status).toBe('active');
    expect(h.all('disconnected')).toEqual([]);
    expect(h.server.dials).toBeGreaterThan(1);

    await vi.advanceTimersByTimeAsync(2_000);
    expect(h.actor.getSnapshot().status).toBe('done');
    const disconnected = h.all('disconnected');
    expect(disconnected).toHaveLength(1);
    expect(disconnected[0]!.error?.code).toBe('E_GAVE_UP');
    expect(gaveUpAt! - droppedAt).toBeGreaterThanOrEqual(1_000);
    expect(h.all('retrying').length).toBeGreaterThanOrEqual(2);
  });
});

describe('regression: work handed to a closing client', () => {
  it('fails message, upload and open at once with E_CLOSED, and still disconnects cleanly', async () => {
    const h = startClient();
    const conn = await h.connect();
    h.actor.send({ type: 'close' });
    expect(h.value()).toEqual({ online: 'closing' });

    h.actor.send({ type: 'message', id: 1, text: 'too late' });
    h.actor.send({ type: 'upload', id: 2, path: localFile(Buffer.from('late file')) });
    h.actor.send({ type: 'open', id: 3, name: 'late.png' });
    for (const id of [1, 2, 3]) {
      expect(await h.next('failed', (e) => e.id === id)).toMatchObject({ id, error: { code: 'E_CLOSED' } });
    }
    expect(h.value()).toEqual({ online: 'closing' });

    await conn.expect('bye');
    await within(conn.ended.promise, 'the client to end its side');
    const down = h.processed('link.down');
    conn.reply({ type: 'bye' });
    conn.transport.end();
    expect((await down).value).toBe('disconnected');
    expect(await h.next('disconnected')).toEqual({ type: 'disconnected', error: undefined });
    // Each was reported once, and none of them went to the server.
    expect(h.all('failed').map((e) => e.id)).toEqual([1, 2, 3]);
    expect(conn.tokens.all.map((t) => t.type)).toEqual(['hello', 'bye']);
    expect(conn.decodeError).toBeUndefined();
  });
});

describe('regression: pipelined requests to a session that pauses between them', () => {
  it('answers three OPEN requests written together, in order', async () => {
    const h = startSession({ realDispatch: true, media: { enabled: false } });
    await h.handshake();
    for (const name of ['a.png', 'b.png', 'c.png']) fs.writeFileSync(path.join(h.root, name), 'stored earlier');
    h.client.write(Buffer.concat([encode.open(1, 'a.png'), encode.open(2, 'b.png'), encode.open(3, 'c.png')]));
    for (const id of [1, 2, 3]) {
      expect(await h.client.expect('open-result')).toMatchObject({ id, result: { opened: false, code: 'E_OPEN_DISABLED' } });
    }
    await h.reach('awaitingHeader');
    expect(h.steps.filter((s) => s.event.type === 'open-request')).toHaveLength(3);
    expect(h.client.decodeError).toBeUndefined();
  });

  it('answers messages and OPEN requests interleaved in one write, in order', async () => {
    const h = startSession({ realDispatch: true });
    await h.handshake();
    h.client.write(
      Buffer.concat([encode.open(1, 'missing-1.png'), encode.message(2, 'two'), encode.open(3, 'missing-3.png'), encode.message(4, 'four'), encode.message(5, 'five'), encode.open(6, 'missing-6.png')]),
    );
    const replies: string[] = [];
    for (let i = 0; i < 6; i++) {
      const token = await h.client.tokens.next(() => true, `reply ${i + 1}`);
      replies.push(token.type === 'open-result' || token.type === 'message-ack' ? `${token.type} ${token.id}` : token.type);
    }
    expect(replies).toEqual(['open-result 1', 'message-ack 2', 'open-result 3', 'message-ack 4', 'message-ack 5', 'open-result 6']);
    expect(h.emitted.flatMap((e) => (e.type === 'messages' ? e.messages.map((m) => m.id) : [-1]))).toEqual([2, 4, 5]);
  });
});

describe('regression: a ping before the hello', () => {
  it('the connection replies carry exactly one preamble: pong with it, welcome without', () => {
    const replies = nativeConnectionReplies();
    const pong = replies.encode({ type: 'pong', payload: Buffer.from('p') })!;
    const welcome = replies.encode({ type: 'welcome', info: { version: 1, agent: 'a', session: 's', maxMessage: 10, maxFrame: 20 } })!;
    expect(pong.subarray(0, PREAMBLE_MAGIC.length).equals(PREAMBLE_MAGIC)).toBe(true);
    expect(preambleOffsets(welcome)).toEqual([]);
    const decoder = new ClientDecoder(DEFAULT_LIMITS);
    expect(decoder.feed(pong).map((t) => t.type)).toEqual(['pong']);
    expect(decoder.feed(welcome).map((t) => t.type)).toEqual(['welcome']);
  });

  it('a session answered with pong and then welcome sends one preamble, and a client decodes both', async () => {
    const h = startSession();
    const raw: Buffer[] = [];
    h.clientEnd.on('data', (chunk) => raw.push(Buffer.from(chunk)));
    const ping = h.processed('ping');
    h.client.write(preamble(), encode.ping(Buffer.from('early')));
    await ping;
    expect((await h.client.expect('pong')).payload.toString()).toBe('early');
    const hello = h.processed('hello');
    h.client.write(encode.hello({ version: 1, agent: 'late' }));
    await hello;
    await h.client.expect('welcome');

    const bytes = Buffer.concat(raw);
    expect(preambleOffsets(bytes)).toEqual([0]);
    const decoder = new ClientDecoder(DEFAULT_LIMITS);
    const tokens: ClientToken[] = decoder.feed(bytes);
    expect(tokens.map((t) => t.type)).toEqual(['pong', 'welcome']);
    expect(h.client.decodeError).toBeUndefined();
  });
});

describe('regression: closing the client during an upload', () => {
  it('client machine: ends at a frame boundary without BYE; the server sees only DATA after the offer', async () => {
    const h = startClient();
    const conn = await h.connect();
    const body = content(8 * 1024 * 1024, 21);
    let closedAfter: number | undefined;
    const sub = h.actor.on('progress', (e) => {
      sub.unsubscribe();
      closedAfter = e.sent;
      h.actor.send({ type: 'close' });
    });
    h.actor.send({ type: 'upload', id: 7, path: localFile(body, 'big.bin') });
    const { offer } = await conn.expect('upload-offer');
    conn.accept(offer.id);

    await within(conn.ended.promise, 'the client to end its side');
    expect(closedAfter).toBeGreaterThan(0);
    expect(closedAfter!).toBeLessThan(body.length);
    expect(conn.decodeError).toBeUndefined();
    const after = conn.tokens.all.slice(conn.tokens.all.findIndex((t) => t.type === 'upload-offer') + 1);
    expect(after.length).toBeGreaterThan(0);
    expect(after.filter((t) => t.type !== 'data')).toEqual([]);
    const sent = Buffer.concat(after.map((t) => (t.type === 'data' ? t.chunk : Buffer.alloc(0))));
    expect(sent.equals(body.subarray(0, sent.length))).toBe(true);

    conn.transport.end();
    expect(await h.next('failed')).toMatchObject({ id: 7, error: { code: 'E_CLOSED' } });
    expect((await h.next('disconnected')).error?.code).toBe('E_CLOSED');
    expect(h.actor.getSnapshot().status).toBe('done');
  });

  it('FerryClient against a real server: no E_UNEXPECTED_FRAME, a clean end, and no file kept', async () => {
    const uploadDir = path.join(tempDir(), 'upload');
    const logs = new AsyncQueue<Record<string, unknown>>();
    const logger = pino({ level: 'debug' }, { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) });
    const server = createServer({ port: 0, uploadDir, logger, legacy: false });
    servers.push(server);
    const { port } = await server.listen();
    const client = createClient({ port, retryInitialMs: 20, retryMaxMs: 200 });
    clients.push(client);
    await client.connect();

    const body = content(16 * 1024 * 1024, 22);
    let closing: Promise<void> | undefined;
    const upload = client.upload(localFile(body, 'big.bin'), {
      onProgress: () => {
        closing ??= client.close();
      },
    });
    await expect(upload).rejects.toMatchObject({ code: 'E_CLOSED' });
    await within(closing!, 'the client to close');

    const disconnected = await logs.next((line) => line.event === 'disconnected', 'the session to log its end', 10_000);
    expect(disconnected.reason).toBeUndefined();
    expect(logs.all.filter((line) => line.code === 'E_UNEXPECTED_FRAME')).toEqual([]);
    expect(logs.all.filter((line) => line.event === 'protocol-error')).toEqual([]);
    expect(logs.all.filter((line) => line.event === 'upload-started')).toHaveLength(1);
    expect(logs.all.filter((line) => line.event === 'file-saved')).toEqual([]);
    expect(logs.all.filter((line) => line.event === 'peer-ended')).toEqual([expect.objectContaining({ event: 'peer-ended' })]);
    // A clean end (at a frame boundary) is logged without `clean: false`.
    expect(logs.all.find((line) => line.event === 'peer-ended')!.clean).toBeUndefined();
    expect(finalFiles(uploadDir)).toEqual([]);
  });
});

describe('regression: a protocol error during an upload', () => {
  it('is answered with an ERROR frame without an id', async () => {
    const h = startSession();
    await h.handshake();
    const offered = h.processed('upload-offer');
    h.client.write(encode.uploadOffer({ id: 9, name: 'g.bin', size: 100 }));
    await offered;
    expect(await h.client.expect('upload-accept')).toEqual({ type: 'upload-accept', id: 9, offset: 0 });
    h.client.data(Buffer.from('some'));

    const failed = h.processed('protocol-error');
    h.client.write(frameHeader(0x7f, 0));
    expect((await failed).value).toBe('closing');
    const error = await h.client.expect('error');
    expect(error.error.code).toBe('E_UNKNOWN_FRAME');
    expect(error.error).not.toHaveProperty('id');
    expect(h.logged('protocol-error')).toContainEqual(expect.objectContaining({ code: 'E_UNKNOWN_FRAME' }));

    await within(h.client.ended.promise, 'the server to end its side');
    h.clientEnd.end();
    await h.done();
    await h.store.settled();
    expect(finalFiles(h.root)).toEqual([]);
    expect(partialFiles(h.root)).toEqual([]);
  });
});

describe('a session that fails ends alone', () => {
  it('an exception in a session action is logged, its socket closed, and the server keeps serving', async () => {
    const { createActor } = await import('xstate');
    const { pino } = await import('pino');
    const { serverLogic } = await import('../machines/server.machine.js');
    const { nativeAndLegacy } = await import('../machines/actors/session-connection.js');
    const { UploadStore } = await import('../media/upload-store.js');
    const { defaultMediaApps } = await import('../media/launcher.js');
    const { createClient } = await import('../index.js');
    const { tempDir } = await import('./helpers/async.js');
    const lines: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => lines.push(line) });
    let failures = 1;
    const logic = serverLogic({
      log,
      store: new UploadStore({ root: tempDir() }),
      codecs: nativeAndLegacy(),
      now: () => Date.now(),
      journal: {
        seen: () => false,
        record: () => {
          if (failures-- > 0) throw new Error('boom');
        },
      },
    });
    const actor = createActor(logic, {
      input: {
        host: '127.0.0.1',
        port: 0,
        tls: false,
        graceMs: 1000,
        session: {
          limits: { maxMessage: 1 << 20, maxFrame: 65536 },
          timeouts: { handshakeMs: 5000 },
          agent: 'test',
          media: { enabled: false, apps: defaultMediaApps(), perMinute: 10 },
          authRequired: false,
          authFailureDelayMs: 1000,
        },
      },
    });
    const errors: unknown[] = [];
    actor.subscribe({ error: (err) => errors.push(err) });
    actor.start();
    const { waitFor } = await import('xstate');
    const port = (await waitFor(actor, (s) => s.matches('listening'))).context.address!.port;
    const client = createClient({ port, retryInitialMs: 10, retryMaxMs: 50, heartbeatMs: 0 });
    try {
      // The first session fails on the message; the client reconnects and the resend is handled.
      expect(await client.message('hi')).toBe('hi');
      expect(errors).toEqual([]);
      expect(actor.getSnapshot().status).toBe('active');
      expect(lines.some((l) => l.includes('"event":"session-failed"') && l.includes('boom'))).toBe(true);
    } finally {
      await client.close();
      actor.stop();
    }
  });
});
