import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createActor, fromCallback, type StateValue } from 'xstate';
import { backoffDelay, clientMachine, type RetryPolicy } from '../machines/client.machine.js';
import { encode } from '../transport/native-codec.js';
import { FerryError } from '../transport/errors.js';
import { DEFAULT_LIMITS, PREAMBLE_LENGTH } from '../transport/frames.js';
import { content, removeTempDirs, sha256, tempDir, within } from './helpers/async.js';
import { ClientHarness, FakeServer, refused, type ClientHarnessOptions, type ServerConn } from './helpers/client-harness.js';
import { createClient } from '../index.js';

const harnesses: ClientHarness[] = [];

/** `prepare` runs before the machine starts (and so before its first dial). */
function start(opts?: ClientHarnessOptions, prepare?: (server: FakeServer) => void): ClientHarness {
  const h = new ClientHarness(opts);
  harnesses.push(h);
  prepare?.(h.server);
  return h.start();
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  for (const h of harnesses.splice(0)) h.dispose();
  removeTempDirs();
});

/** The state value of `online.connected.uploading` in the given phase. */
function uploading(phase: StateValue): StateValue {
  return { online: { connected: { uploading: phase } } };
}

function file(bytes: Buffer, name = 'file.bin'): string {
  const p = path.join(tempDir(), name);
  fs.writeFileSync(p, bytes);
  return p;
}

async function messages(conn: ServerConn, n: number): Promise<{ id: number; text: string }[]> {
  const out: { id: number; text: string }[] = [];
  for (let i = 0; i < n; i++) {
    await conn.expect('message-header');
    const m = await conn.expect('message');
    out.push({ id: m.id, text: m.text });
  }
  return out;
}

describe('client: connecting', () => {
  it('dials, says hello, and is connected after the welcome', async () => {
    const h = start();
    expect(h.value()).toEqual({ online: 'connecting' });
    const conn = await h.server.next();
    const hello = await conn.expect('hello');
    expect(hello.info).toEqual({ version: 1, agent: 'test-client', clientId: 'client-1' });
    expect(h.value()).toEqual({ online: 'connecting' });
    const up = h.processed('link.up');
    conn.welcome('session-7', { maxMessage: 1000, maxFrame: 2000 });
    expect((await up).value).toEqual({ online: { connected: 'idle' } });
    expect(await h.next('connected')).toEqual({ type: 'connected', session: 'session-7' });
    expect(h.actor.getSnapshot().context.serverLimits).toEqual({ maxMessage: 1000, maxFrame: 2000 });
  });

  it('sends a message and emits the reply once it is acknowledged', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'message', id: 1, text: 'hello ✓' });
    expect(await messages(conn, 1)).toEqual([{ id: 1, text: 'hello ✓' }]);
    expect(h.actor.getSnapshot().context.inflight).toEqual([{ kind: 'message', id: 1, text: 'hello ✓' }]);
    const acked = h.processed('server.ack');
    conn.ack(1, 'hello ✓');
    expect((await acked).value).toEqual({ online: { connected: 'idle' } });
    expect(await h.next('replies')).toEqual({ type: 'replies', replies: [{ id: 1, text: 'hello ✓' }] });
    expect(h.actor.getSnapshot().context.inflight).toEqual([]);
  });

  it('ignores an acknowledgement for a message it never sent', async () => {
    const h = start();
    const conn = await h.connect();
    const acked = h.processed('server.ack');
    conn.ack(99, 'who?');
    await acked;
    expect(h.all('replies')).toEqual([]);
  });

  it('holds messages handed over while connecting and sends them after the welcome, in order', async () => {
    const h = start();
    const conn = await h.server.next();
    for (const id of [1, 2, 3]) h.actor.send({ type: 'message', id, text: `m${id}` });
    expect(h.actor.getSnapshot().context.queue.map((j) => j.id)).toEqual([1, 2, 3]);
    const hello = await conn.expect('hello');
    // Only the preamble and the hello went out so far.
    expect(conn.clientEnd.writtenBytes).toBe(PREAMBLE_LENGTH + encode.hello(hello.info).length);
    conn.welcome();
    expect(await messages(conn, 3)).toEqual([
      { id: 1, text: 'm1' },
      { id: 2, text: 'm2' },
      { id: 3, text: 'm3' },
    ]);
    for (const id of [1, 2, 3]) conn.ack(id, `m${id}`);
    for (const id of [1, 2, 3]) expect(await h.nextReply()).toMatchObject({ id });
  });

  it('refuses a message over the server limit with E_MESSAGE_TOO_LARGE', async () => {
    const h = start();
    await h.connect('s', { maxMessage: 4, maxFrame: DEFAULT_LIMITS.maxFrame });
    h.actor.send({ type: 'message', id: 1, text: 'too long' });
    expect((await h.next('failed')).error.code).toBe('E_MESSAGE_TOO_LARGE');
    expect(h.actor.getSnapshot().context.inflight).toEqual([]);
  });

  it('refuses a queued message over the server limit once the limit is known', async () => {
    const h = start();
    const conn = await h.server.next();
    h.actor.send({ type: 'message', id: 1, text: 'too long' });
    h.actor.send({ type: 'message', id: 2, text: 'ok' });
    await conn.handshake('s', { maxMessage: 4, maxFrame: DEFAULT_LIMITS.maxFrame });
    expect(await h.next('failed')).toMatchObject({ id: 1, error: { code: 'E_MESSAGE_TOO_LARGE' } });
    expect(await messages(conn, 1)).toEqual([{ id: 2, text: 'ok' }]);
  });

  it('refuses work beyond maxQueued while the server is unreachable', async () => {
    const h = start({ maxQueued: 2 });
    await h.server.next();
    for (const id of [1, 2, 3]) h.actor.send({ type: 'message', id, text: 'x' });
    expect(await h.next('failed')).toMatchObject({ id: 3, error: { code: 'E_CONNECTION_LOST' } });
    expect(h.actor.getSnapshot().context.queue.map((j) => j.id)).toEqual([1, 2]);
  });

  it('fails the jobs of a message the server refuses', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'message', id: 4, text: 'nope' });
    await messages(conn, 1);
    conn.error('E_BAD_UTF8', 'No.', 4);
    expect(await h.next('failed')).toMatchObject({ id: 4, error: { code: 'E_BAD_UTF8', message: 'No.' } });
    expect(h.value()).toEqual({ online: { connected: 'idle' } });
  });
});

describe('client: opening stored files', () => {
  it('sends an open request and emits opened with the outcome', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'open', id: 1, name: 'photo.jpg' });
    expect(await conn.expect('open-request')).toEqual({ type: 'open-request', id: 1, name: 'photo.jpg' });
    expect(h.actor.getSnapshot().context.inflight).toEqual([{ kind: 'open', id: 1, name: 'photo.jpg' }]);
    const result = { opened: true, kind: 'image', mime: 'image/jpeg', app: 'viewer', pid: 7 };
    const opened = h.processed('server.opened');
    conn.openResult(1, result);
    expect((await opened).value).toEqual({ online: { connected: 'idle' } });
    expect(await h.next('opened')).toEqual({ type: 'opened', id: 1, result });
    expect(h.actor.getSnapshot().context.inflight).toEqual([]);
  });

  it('emits opened for a refusal too, and failed for an error', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'open', id: 1, name: 'a.txt' });
    h.actor.send({ type: 'open', id: 2, name: 'b.png' });
    await conn.expect('open-request');
    await conn.expect('open-request');
    conn.openResult(1, { opened: false, code: 'E_NOT_MEDIA', message: 'Not media.' });
    conn.error('E_STORE_FAILED', 'Broken.', 2);
    expect(await h.next('opened')).toMatchObject({ id: 1, result: { opened: false, code: 'E_NOT_MEDIA' } });
    expect(await h.next('failed')).toMatchObject({ id: 2, error: { code: 'E_STORE_FAILED' } });
  });

  it('queues open requests with messages while connecting and sends them in order', async () => {
    const h = start();
    const conn = await h.server.next();
    h.actor.send({ type: 'message', id: 1, text: 'first' });
    h.actor.send({ type: 'open', id: 2, name: 'second.png' });
    h.actor.send({ type: 'message', id: 3, text: 'third' });
    await conn.handshake();
    const order: string[] = [];
    for (let i = 0; i < 3; i++) {
      const token = await conn.tokens.next((t) => t.type === 'message' || t.type === 'open-request', 'a request');
      order.push(token.type === 'message' ? `message ${token.id}` : token.type === 'open-request' ? `open ${token.id}` : token.type);
    }
    expect(order).toEqual(['message 1', 'open 2', 'message 3']);
  });

  it('sends an unanswered open request again after a reconnect', async () => {
    const h = start();
    const first = await h.connect();
    h.actor.send({ type: 'open', id: 4, name: 'again.mp4' });
    await first.expect('open-request');
    first.transport.reset();
    await h.next('retrying');
    const second = await h.connect();
    expect(await second.tokens.next((t) => t.type === 'open-request', 'the open request')).toEqual({ type: 'open-request', id: 4, name: 'again.mp4' });
    second.openResult(4, { opened: false, code: 'E_OPEN_DISABLED', message: 'Off.' });
    expect(await h.next('opened')).toMatchObject({ id: 4 });
  });

  it('asks the server to open an upload when told to, and passes the outcome on', async () => {
    const h = start();
    const conn = await h.connect();
    const body = Buffer.from('an image, say');
    h.actor.send({ type: 'upload', id: 5, path: file(body, 'pic.png'), open: true });
    const { offer } = await conn.expect('upload-offer');
    expect(offer).toEqual({ id: 5, name: 'pic.png', size: body.length, open: true });
    conn.accept(5);
    await conn.receiveUpload();
    const opened = { opened: false, code: 'E_OPEN_DISABLED', message: 'Off.' };
    conn.done({ id: 5, savedAs: 'pic.png', bytes: body.length, sha256: sha256(body), opened });
    expect(await h.next('uploaded')).toMatchObject({ id: 5, result: { opened } });
  });
});

describe('client: uploads', () => {
  it('offers, streams on accept, ends with the right sha256, and emits uploaded on upload-done', async () => {
    const h = start();
    const conn = await h.connect();
    const body = content(700_000, 11);
    const p = file(body, 'photo.jpg');
    const entered = h.processed('upload');
    h.actor.send({ type: 'upload', id: 5, path: p });
    expect((await entered).value).toEqual(uploading('offering'));
    expect(h.actor.getSnapshot().context.uploads.map((j) => j.id)).toEqual([5]);
    const { offer } = await conn.expect('upload-offer');
    expect(offer).toEqual({ id: 5, name: 'photo.jpg', size: body.length });
    expect(await h.next('upload-started')).toEqual({ type: 'upload-started', id: 5, size: body.length });

    const accepted = h.processed('server.accept');
    const sent = h.processed('upload.sent');
    conn.accept(5);
    expect((await accepted).value).toEqual(uploading('streaming'));
    const { bytes, end } = await conn.receiveUpload();
    expect((await sent).value).toEqual(uploading({ confirming: 'alone' }));
    expect(bytes.equals(body)).toBe(true);
    expect(end).toEqual({ type: 'upload-end', id: 5, sha256: sha256(body) });
    const progress = h.all('progress');
    expect(progress.length).toBeGreaterThan(1);
    expect(progress.at(-1)).toEqual({ type: 'progress', id: 5, sent: body.length, total: body.length });

    const result = { id: 5, savedAs: 'photo.jpg', bytes: body.length, sha256: sha256(body) };
    const done = h.processed('server.done');
    conn.done(result);
    expect((await done).value).toEqual({ online: { connected: 'idle' } });
    expect(await h.next('uploaded')).toEqual({ type: 'uploaded', id: 5, resumedFrom: 0, result });
    expect(h.actor.getSnapshot().context.uploads).toEqual([]);
  });

  it('offers the name it was given and works through uploads and messages in the order handed over', async () => {
    const h = start();
    const conn = await h.connect();
    const a = file(Buffer.from('aaa'), 'a.txt');
    const b = file(Buffer.from('bbbb'), 'b.txt');
    h.actor.send({ type: 'upload', id: 1, path: a, name: 'renamed.txt' });
    h.actor.send({ type: 'message', id: 2, text: 'after the first' });
    h.actor.send({ type: 'upload', id: 3, path: b });
    h.actor.send({ type: 'message', id: 4, text: 'after the second' });
    expect(h.actor.getSnapshot().context.queue.map((j) => j.id)).toEqual([2, 3, 4]);
    const first = await conn.takeUpload();
    expect(first.offer).toEqual({ id: 1, name: 'renamed.txt', size: 3 });
    expect((await h.next('uploaded')).id).toBe(1);
    // A message handed over during an upload waits for it, then goes out before the next upload.
    expect(await messages(conn, 1)).toEqual([{ id: 2, text: 'after the first' }]);
    const second = await conn.takeUpload();
    expect(second.offer).toEqual({ id: 3, name: 'b.txt', size: 4 });
    expect((await h.next('uploaded')).id).toBe(3);
    expect(await messages(conn, 1)).toEqual([{ id: 4, text: 'after the second' }]);
    expect(h.value()).toEqual({ online: { connected: 'idle' } });
  });

  it('emits failed when the server refuses the upload, and carries on', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'upload', id: 6, path: file(content(1000)) });
    await conn.expect('upload-offer');
    const refusedEvent = h.processed('server.error');
    conn.error('E_NO_SPACE', 'The disk is full.', 6);
    expect((await refusedEvent).value).toEqual({ online: { connected: 'idle' } });
    const failed = await h.next('failed');
    expect(failed.id).toBe(6);
    expect(failed.error.code).toBe('E_NO_SPACE');
    expect(failed.error.message).toBe('The disk is full.');
    h.actor.send({ type: 'message', id: 7, text: 'still here' });
    expect(await messages(conn, 1)).toEqual([{ id: 7, text: 'still here' }]);
  });

  it('emits failed when the server reports a hash mismatch after the data', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'upload', id: 8, path: file(content(5000)) });
    await conn.expect('upload-offer');
    conn.accept(8);
    await conn.receiveUpload();
    conn.error('E_HASH_MISMATCH', 'Bad hash.', 8);
    expect(await h.next('failed')).toMatchObject({ id: 8, error: { code: 'E_HASH_MISMATCH' } });
    expect(h.value()).toEqual({ online: { connected: 'idle' } });
  });

  it('emits failed with E_LOCAL_FILE for a file it cannot read, without offering it', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'upload', id: 9, path: path.join(tempDir(), 'missing.bin') });
    expect(await h.next('failed')).toMatchObject({ id: 9, error: { code: 'E_LOCAL_FILE' } });
    expect(h.value()).toEqual({ online: { connected: 'idle' } });
    h.actor.send({ type: 'message', id: 10, text: 'next' });
    expect(await messages(conn, 1)).toEqual([{ id: 10, text: 'next' }]);
  });
});

describe('client: losing and regaining the server', () => {
  it('retries a dial that rejects and is online again afterwards', async () => {
    const h = start({}, (server) => server.refusals.push(refused()));
    const retrying = await h.next('retrying');
    expect(retrying.attempt).toBe(1);
    expect(retrying.error.code).toBe('E_CONNECTION_LOST');
    expect(retrying.error.message).toContain('127.0.0.1:9098');
    expect(retrying.delayMs).toBeGreaterThanOrEqual(2);
    expect(retrying.delayMs).toBeLessThanOrEqual(5);
    await h.connect();
    expect(h.server.dials).toBe(2);
    expect(h.actor.getSnapshot().context.attempt).toBe(0);
    const values = h.steps.map((s) => JSON.stringify(s.value));
    expect(values).toContain(JSON.stringify('retrying'));
  });

  it('re-sends unacknowledged messages after a reconnect, in order, then what was queued meanwhile', async () => {
    const h = start();
    const first = await h.connect();
    for (const id of [1, 2, 3]) h.actor.send({ type: 'message', id, text: `m${id}` });
    await messages(first, 3);
    first.ack(1, 'm1');
    await h.nextReply((e) => e.id === 1);
    const down = h.processed('link.down');
    first.transport.reset();
    expect((await down).value).toBe('retrying');
    expect(h.actor.getSnapshot().context.queue.map((j) => j.id)).toEqual([2, 3]);
    h.actor.send({ type: 'message', id: 4, text: 'm4' });
    const second = await h.connect();
    expect(await messages(second, 3)).toEqual([
      { id: 2, text: 'm2' },
      { id: 3, text: 'm3' },
      { id: 4, text: 'm4' },
    ]);
    for (const id of [2, 3, 4]) second.ack(id, `m${id}`);
    for (const id of [2, 3, 4]) await h.nextReply((e) => e.id === id);
    expect(h.replies.all.map((e) => e.id)).toEqual([1, 2, 3, 4]);
    expect(h.all('failed')).toEqual([]);
  });

  it('offers an upload again after the link drops in the middle of it', async () => {
    const h = start();
    const first = await h.connect();
    const body = content(1_500_000, 12);
    h.actor.send({ type: 'upload', id: 5, path: file(body) });
    expect((await first.expect('upload-offer')).offer.id).toBe(5);
    first.accept(5);
    await first.expect('data');
    const down = h.processed('link.down');
    first.transport.reset();
    expect((await down).value).toBe('retrying');
    expect(h.actor.getSnapshot().context.queue).toEqual([expect.objectContaining({ kind: 'upload', id: 5 })]);
    expect(h.actor.getSnapshot().context.uploads).toEqual([]);

    const second = await h.connect();
    const again = await second.takeUpload();
    expect(again.offer).toEqual({ id: 5, name: 'file.bin', size: body.length, key: expect.stringMatching(/^[0-9a-f]{32}$/) });
    expect(again.bytes.equals(body)).toBe(true);
    expect(await h.next('uploaded')).toMatchObject({ id: 5, result: { bytes: body.length, sha256: sha256(body) } });
    expect(h.all('failed')).toEqual([]);
    expect(h.all('upload-started').map((e) => e.id)).toEqual([5, 5]);
  });

  it('retries when the server closes during the handshake', async () => {
    const h = start();
    const first = await h.server.next();
    await first.expect('hello');
    const down = h.processed('link.down');
    first.transport.destroy();
    expect((await down).value).toBe('retrying');
    expect((await h.next('retrying')).error.message).toMatch(/during the handshake/);
    await h.connect();
  });

  it('retries when the server does not answer the hello within handshakeMs', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const h = start({ handshakeMs: 1_000, retry: { initialMs: 10_000, maxMs: 10_000 } });
    const first = await h.server.next();
    await first.expect('hello');
    await vi.advanceTimersByTimeAsync(999);
    expect(h.value()).toEqual({ online: 'connecting' });
    await vi.advanceTimersByTimeAsync(1);
    expect(h.value()).toBe('retrying');
    expect(h.actor.getSnapshot().context.lastError?.code).toBe('E_TIMEOUT');
  });

  it('gives up after retry.forMs and fails everything with E_GAVE_UP', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const started = Date.now();
    const h = start({ retry: { initialMs: 100, maxMs: 400, forMs: 1_000 } }, (server) => (server.refuseAll = refused()));
    h.actor.send({ type: 'message', id: 1, text: 'm1' });
    h.actor.send({ type: 'upload', id: 2, path: '/nowhere/at/all' });
    await vi.advanceTimersByTimeAsync(5_000);
    expect(h.actor.getSnapshot().status).toBe('done');
    expect(h.value()).toBe('disconnected');
    const failed = h.all('failed');
    expect(failed.map((e) => e.id)).toEqual([1, 2]);
    for (const e of failed) expect(e.error.code).toBe('E_GAVE_UP');
    const disconnected = h.all('disconnected');
    expect(disconnected).toHaveLength(1);
    expect(disconnected[0]!.error?.code).toBe('E_GAVE_UP');
    expect(disconnected[0]!.error?.message).toContain('1 s');
    const retries = h.all('retrying');
    expect(retries.length).toBeGreaterThanOrEqual(3);
    expect(retries.map((r) => r.attempt)).toEqual(retries.map((_, i) => i + 1));
    expect(h.server.dials).toBe(retries.length);
    const gaveUpAt = Date.now();
    expect(gaveUpAt - started).toBeGreaterThanOrEqual(1_000);
  });

  it('waits growing, capped delays between attempts', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(1);
    const h = start({ retry: { initialMs: 5, maxMs: 20 } }, (server) => (server.refuseAll = refused()));
    const delays: number[] = [];
    for (let i = 0; i < 5; i++) delays.push((await h.next('retrying')).delayMs);
    expect(delays).toEqual([5, 10, 20, 20, 20]);
  });

  it('gives up as soon as the budget is spent while it waits, without another attempt', async () => {
    const h = start({ simulated: true, retry: { initialMs: 10_000, maxMs: 10_000, forMs: 3_000 } }, (server) => (server.refuseAll = refused()));
    h.actor.send({ type: 'message', id: 1, text: 'never sent' });
    expect((await h.next('retrying')).delayMs).toBeGreaterThanOrEqual(5_000);
    h.clock.increment(2_999);
    expect(h.value()).toBe('retrying');
    h.clock.increment(1);
    expect(h.value()).toBe('disconnected');
    expect(await h.next('failed')).toMatchObject({ id: 1, error: { code: 'E_GAVE_UP' } });
    expect((await h.next('disconnected')).error?.message).toContain('3 s');
    expect(h.server.dials).toBe(1);
  });

  it('starts the budget afresh after a connection that worked', async () => {
    const h = start({ simulated: true, retry: { initialMs: 1_000, maxMs: 1_000, forMs: 1_500 } });
    const first = await h.connect();
    first.transport.reset();
    await h.next('retrying');
    h.clock.increment(1_000);
    // The attempt after the drop works before the budget is spent: the drop's timer is cancelled.
    const second = await h.connect();
    h.clock.increment(1_000);
    expect(h.actor.getSnapshot().context.retryExpired).toBe(false);
    const down = h.processed('link.down');
    second.transport.reset();
    expect((await down).value).toBe('retrying');
    h.clock.increment(1_499);
    expect(h.value()).not.toBe('disconnected');
  });
});

describe('client: fatal errors and closing', () => {
  it('disconnects without retrying when the server does not speak ferry', async () => {
    const h = start();
    const conn = await h.server.next();
    h.actor.send({ type: 'message', id: 1, text: 'lost' });
    await conn.expect('hello');
    const down = h.processed('link.down');
    conn.transport.write(Buffer.from('220 smtp.example.com ESMTP\r\n'));
    expect((await down).value).toBe('disconnected');
    expect(await h.next('failed')).toMatchObject({ id: 1, error: { code: 'E_BAD_PREAMBLE' } });
    const disconnected = await h.next('disconnected');
    expect(disconnected.error?.code).toBe('E_BAD_PREAMBLE');
    expect(disconnected.error?.message).toMatch(/does not speak the ferry protocol/);
    expect(h.actor.getSnapshot().status).toBe('done');
    expect(h.server.dials).toBe(1);
    expect(h.all('retrying')).toEqual([]);
  });

  it('disconnects on an unknown frame after the welcome', async () => {
    const h = start();
    const conn = await h.connect();
    conn.transport.write(Buffer.from([0x7f, 0, 0, 0, 0]));
    expect((await h.next('disconnected')).error?.code).toBe('E_UNKNOWN_FRAME');
    expect(h.value()).toBe('disconnected');
  });

  it('disconnects with the code of a connection-level error the server sends before closing', async () => {
    const h = start();
    const conn = await h.connect();
    conn.error('E_UNEXPECTED_FRAME', 'Broken client.');
    conn.transport.end();
    const disconnected = await h.next('disconnected');
    expect(disconnected.error?.code).toBe('E_UNEXPECTED_FRAME');
    expect(h.all('retrying')).toEqual([]);
  });

  it('retries after a connection-level error that is not fatal', async () => {
    const h = start();
    const conn = await h.connect();
    conn.error('E_STORE_FAILED', 'Try later.');
    conn.transport.end();
    expect((await h.next('retrying')).error.code).toBe('E_STORE_FAILED');
    await h.connect();
  });

  it('says bye on close, waits for the server to close, and disconnects cleanly', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'close' });
    expect(h.value()).toEqual({ online: 'closing' });
    await conn.expect('bye');
    await within(conn.ended.promise, 'the client to end its side');
    expect(h.value()).toEqual({ online: 'closing' });
    const down = h.processed('link.down');
    conn.reply({ type: 'bye' });
    conn.transport.end();
    expect((await down).value).toBe('disconnected');
    expect(await h.next('disconnected')).toEqual({ type: 'disconnected', error: undefined });
    expect(h.actor.getSnapshot().status).toBe('done');
  });

  it('settles an acknowledgement that arrives while closing', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'message', id: 1, text: 'last' });
    await messages(conn, 1);
    h.actor.send({ type: 'close' });
    await conn.expect('bye');
    conn.ack(1, 'last');
    conn.transport.end();
    expect(await h.nextReply()).toMatchObject({ id: 1 });
    expect(await h.next('disconnected')).toEqual({ type: 'disconnected', error: undefined });
    expect(h.all('failed')).toEqual([]);
  });

  it('fails what the server never confirmed with E_CLOSED when closed', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'message', id: 1, text: 'unanswered' });
    await messages(conn, 1);
    h.actor.send({ type: 'close' });
    await conn.expect('bye');
    conn.transport.end();
    expect(await h.next('failed')).toMatchObject({ id: 1, error: { code: 'E_CLOSED' } });
    expect((await h.next('disconnected')).error?.code).toBe('E_CLOSED');
  });

  it('closes at once while connecting, failing queued work with E_CLOSED', async () => {
    const h = start();
    await h.server.next();
    h.actor.send({ type: 'message', id: 1, text: 'queued' });
    h.actor.send({ type: 'close' });
    expect(h.value()).toBe('disconnected');
    expect(await h.next('failed')).toMatchObject({ id: 1, error: { code: 'E_CLOSED' } });
    expect((await h.next('disconnected')).error?.code).toBe('E_CLOSED');
  });

  it('closes at once while retrying', async () => {
    const h = start({ retry: { initialMs: 60_000, maxMs: 60_000 } }, (server) => server.refusals.push(refused()));
    await h.next('retrying');
    expect(h.value()).toBe('retrying');
    h.actor.send({ type: 'close' });
    expect(h.value()).toBe('disconnected');
    expect(await h.next('disconnected')).toEqual({ type: 'disconnected', error: undefined });
  });
});

/**
 * Hands over uploads 1 (`a.bin`) and 2 (`b.bin`, or the path given), takes the first offer, accepts it and
 * receives its bytes: the first upload now waits for the server's verdict.
 */
async function firstOfTwoSent(h: ClientHarness, conn: ServerConn, a: Buffer, second: Buffer | string): Promise<void> {
  h.actor.send({ type: 'upload', id: 1, path: file(a, 'a.bin') });
  h.actor.send({ type: 'upload', id: 2, path: typeof second === 'string' ? second : file(second, 'b.bin') });
  expect((await conn.expect('upload-offer')).offer.id).toBe(1);
  conn.accept(1);
  expect((await conn.receiveUpload()).bytes).toEqual(a);
}

describe('client: uploads one after another', () => {
  it('offers the next upload once the current one is all sent, and streams it on its accept after the first is confirmed', async () => {
    const h = start();
    const conn = await h.connect();
    const a = content(3000, 21);
    const b = content(5000, 22);
    h.actor.send({ type: 'upload', id: 1, path: file(a, 'a.bin') });
    h.actor.send({ type: 'upload', id: 2, path: file(b, 'b.bin') });
    expect((await conn.expect('upload-offer')).offer.id).toBe(1);
    conn.accept(1);
    expect((await conn.receiveUpload()).bytes).toEqual(a);
    // Before the server has said anything about the first, the second is offered.
    expect((await conn.expect('upload-offer')).offer).toEqual({ id: 2, name: 'b.bin', size: b.length });
    expect(h.value()).toEqual(uploading({ confirming: 'withNext' }));
    expect(h.actor.getSnapshot().context.uploads.map((j) => j.id)).toEqual([1, 2]);
    expect(await h.next('upload-started', (e) => e.id === 2)).toEqual({ type: 'upload-started', id: 2, size: b.length });

    const done = h.processed('server.done');
    conn.done({ id: 1, savedAs: 'a.bin', bytes: a.length, sha256: sha256(a) });
    const after = await done;
    // The early offer carries on as the current upload, waiting for its accept without a second offer.
    expect(after.value).toEqual(uploading('offering'));
    expect(after.context.uploads.map((j) => j.id)).toEqual([2]);
    expect((await h.next('uploaded', (e) => e.id === 1)).result.savedAs).toBe('a.bin');

    conn.accept(2);
    const second = await conn.receiveUpload();
    expect(second.bytes).toEqual(b);
    expect(second.end.id).toBe(2);
    conn.done({ id: 2, savedAs: 'b.bin', bytes: b.length, sha256: sha256(b) });
    expect((await h.next('uploaded', (e) => e.id === 2)).result.savedAs).toBe('b.bin');
    await h.reach((s) => s.matches({ online: { connected: 'idle' } }), 'idle');
  });

  it('goes on with the upload offered early when the server refuses the current one', async () => {
    const h = start();
    const conn = await h.connect();
    const b = content(200, 24);
    await firstOfTwoSent(h, conn, content(100, 23), b);
    await conn.expect('upload-offer');
    conn.error('E_HASH_MISMATCH', 'Corrupted on the way.', 1);
    expect(await h.next('failed')).toMatchObject({ id: 1, error: { code: 'E_HASH_MISMATCH' } });
    conn.accept(2);
    expect((await conn.receiveUpload()).bytes).toEqual(b);
    conn.done({ id: 2, savedAs: 'b.bin', bytes: b.length, sha256: sha256(b) });
    expect((await h.next('uploaded')).id).toBe(2);
  });

  it('fails an upload offered early whose file cannot be read, and finishes the current one', async () => {
    const h = start();
    const conn = await h.connect();
    const a = content(100, 25);
    await firstOfTwoSent(h, conn, a, path.join(tempDir(), 'missing.bin'));
    expect(await h.next('failed')).toMatchObject({ id: 2, error: { code: 'E_LOCAL_FILE' } });
    conn.done({ id: 1, savedAs: 'a.bin', bytes: a.length, sha256: sha256(a) });
    expect((await h.next('uploaded')).id).toBe(1);
    await h.reach((s) => s.matches({ online: { connected: 'idle' } }), 'idle');
  });

  it('puts both back in order when the connection drops with an upload offered early, and sends both again', async () => {
    const h = start({ retry: { initialMs: 5, maxMs: 5 } });
    const first = await h.connect();
    const a = content(100, 26);
    const b = content(200, 27);
    await firstOfTwoSent(h, first, a, b);
    await first.expect('upload-offer');
    const down = h.processed('link.down');
    first.transport.reset();
    expect((await down).context.queue.map((j) => j.id)).toEqual([1, 2]);
    const second = await h.server.next();
    await second.handshake();
    expect((await second.takeUpload()).offer.id).toBe(1);
    expect((await second.takeUpload()).offer.id).toBe(2);
    expect((await h.next('uploaded', (e) => e.id === 1)).result.bytes).toBe(a.length);
    expect((await h.next('uploaded', (e) => e.id === 2)).result.bytes).toBe(b.length);
  });

  it('without pipelining, offers the next upload only after the current one is confirmed', async () => {
    const h = start({ pipelineUploads: false });
    const conn = await h.connect();
    const a = content(100, 28);
    h.actor.send({ type: 'upload', id: 1, path: file(a, 'a.bin') });
    h.actor.send({ type: 'upload', id: 2, path: file(content(50, 29), 'b.bin') });
    await conn.expect('upload-offer');
    const sent = h.processed('upload.sent');
    conn.accept(1);
    await conn.receiveUpload();
    const afterSent = await sent;
    expect(afterSent.value).toEqual(uploading({ confirming: 'alone' }));
    expect(afterSent.context.uploads.map((j) => j.id)).toEqual([1]);
    expect(conn.tokens.pending).toEqual([]);
    conn.done({ id: 1, savedAs: 'a.bin', bytes: a.length, sha256: sha256(a) });
    expect((await conn.expect('upload-offer')).offer.id).toBe(2);
  });
});

describe('client: messages handed over together', () => {
  it('sends every message of a batch, in order and nothing else, and settles every ack that arrives in one read in one step', async () => {
    const h = start();
    const conn = await h.connect();
    const before = conn.clientEnd.writtenBytes;
    h.actor.send({ type: 'messages', messages: [1, 2, 3].map((id) => ({ id, text: `m${id}` })) });
    expect(await messages(conn, 3)).toEqual([1, 2, 3].map((id) => ({ id, text: `m${id}` })));
    expect(conn.clientEnd.writtenBytes - before).toBe([1, 2, 3].reduce((n, id) => n + encode.message(id, `m${id}`).length, 0));
    expect(h.actor.getSnapshot().context.inflight.map((j) => j.id)).toEqual([1, 2, 3]);

    const acked = h.processed('server.ack');
    conn.transport.write(Buffer.concat([1, 2, 3].map((id) => encode.messageAck(id, `m${id}`))));
    // One event settled all three, and one event reported them.
    expect((await acked).context.inflight).toEqual([]);
    expect(h.all('replies')).toEqual([{ type: 'replies', replies: [1, 2, 3].map((id) => ({ id, text: `m${id}` })) }]);
  });

  it('fails only the messages of a batch that are over the server limit', async () => {
    const h = start();
    const conn = await h.connect('s', { maxMessage: 4, maxFrame: DEFAULT_LIMITS.maxFrame });
    h.actor.send({ type: 'messages', messages: [{ id: 1, text: 'ok' }, { id: 2, text: 'too long' }, { id: 3, text: 'fine' }] });
    expect(await h.next('failed')).toMatchObject({ id: 2, error: { code: 'E_MESSAGE_TOO_LARGE' } });
    expect(await messages(conn, 2)).toEqual([
      { id: 1, text: 'ok' },
      { id: 3, text: 'fine' },
    ]);
  });

  it('queues a batch while connecting as far as maxQueued allows and fails the rest', async () => {
    const h = start({ maxQueued: 3 });
    const conn = await h.server.next();
    h.actor.send({ type: 'message', id: 1, text: 'first' });
    h.actor.send({ type: 'messages', messages: [2, 3, 4, 5].map((id) => ({ id, text: `m${id}` })) });
    expect(h.all('failed').map((e) => [e.id, e.error.code])).toEqual([
      [4, 'E_CONNECTION_LOST'],
      [5, 'E_CONNECTION_LOST'],
    ]);
    expect(h.actor.getSnapshot().context.queue.map((j) => j.id)).toEqual([1, 2, 3]);
    await conn.handshake();
    expect((await messages(conn, 3)).map((m) => m.id)).toEqual([1, 2, 3]);
  });

  it('keeps an open request in its place between queued messages', async () => {
    const h = start();
    const conn = await h.server.next();
    h.actor.send({ type: 'messages', messages: [{ id: 1, text: 'a' }, { id: 2, text: 'b' }] });
    h.actor.send({ type: 'open', id: 3, name: 'photo.jpg' });
    h.actor.send({ type: 'messages', messages: [{ id: 4, text: 'c' }, { id: 5, text: 'd' }] });
    await conn.handshake();
    const order: string[] = [];
    while (order.length < 5) {
      const token = await conn.tokens.next(() => true, 'a frame');
      if (token.type === 'message' || token.type === 'open-request') order.push(`${token.type}#${token.id}`);
    }
    expect(order).toEqual(['message#1', 'message#2', 'open-request#3', 'message#4', 'message#5']);
  });

  it('refuses each message of a batch handed over while closing', async () => {
    const h = start();
    const conn = await h.connect();
    h.actor.send({ type: 'close' });
    await conn.expect('bye');
    h.actor.send({ type: 'messages', messages: [{ id: 7, text: 'late' }, { id: 8, text: 'later' }] });
    expect(h.all('failed').map((e) => [e.id, e.error.code])).toEqual([
      [7, 'E_CLOSED'],
      [8, 'E_CLOSED'],
    ]);
    conn.transport.end();
    expect(await h.next('disconnected')).toEqual({ type: 'disconnected', error: undefined });
  });

  it('resends a batch that was in flight when the connection dropped, in order, after the reconnect', async () => {
    const h = start({ retry: { initialMs: 5, maxMs: 5 } });
    const first = await h.connect();
    h.actor.send({ type: 'messages', messages: [1, 2, 3].map((id) => ({ id, text: `m${id}` })) });
    await messages(first, 3);
    first.transport.reset();
    const second = await h.server.next();
    await second.handshake();
    expect((await messages(second, 3)).map((m) => m.id)).toEqual([1, 2, 3]);
    second.transport.write(Buffer.concat([1, 2, 3].map((id) => encode.messageAck(id, `m${id}`))));
    for (const id of [1, 2, 3]) expect(await h.nextReply((e) => e.id === id)).toMatchObject({ id });
    expect(h.replies.all).toHaveLength(3);
  });
});

/** Whether `value` is plain data: no functions, and no objects but plain ones and arrays. */
function isPlainData(value: unknown): boolean {
  if (typeof value === 'function') return false;
  if (value === null || typeof value !== 'object') return true;
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== Array.prototype) return false;
  return Object.values(value).every(isPlainData);
}

describe('client: what its context and its link input hold', () => {
  it('keeps plain data only: the dialler, the resume book and the token reach the link by closure', async () => {
    const server = new FakeServer();
    const client = createClient({ dial: server.dial, token: 'the-secret-token', heartbeatMs: 0 });
    const connected = client.connect();
    const conn = await server.next();
    await conn.handshake();
    await connected;
    const snapshot = client.actor.getSnapshot();
    const link = snapshot.children.link!.getSnapshot() as { input: unknown };
    expect(link.input).toEqual(snapshot.context.settings.link);
    expect(isPlainData(snapshot.context)).toBe(true);
    expect(isPlainData(link.input)).toBe(true);
    expect(JSON.stringify({ context: snapshot.context, input: link.input })).not.toContain('the-secret-token');
    const closed = client.close();
    await conn.expect('bye');
    conn.transport.end();
    await closed;
  });
});

describe('client: without a link', () => {
  it('fails at once, saying how to provide one', () => {
    const actor = createActor(clientMachine, {
      input: { link: { hello: { version: 1, agent: 'a' }, limits: DEFAULT_LIMITS, handshakeMs: 1_000, heartbeatMs: 0 }, retry: { initialMs: 5, maxMs: 5, forMs: undefined }, maxQueued: 10, pipelineUploads: true },
    });
    const errors: unknown[] = [];
    actor.subscribe({ error: (err) => errors.push(err) });
    actor.start();
    expect(actor.getSnapshot().status).toBe('error');
    expect(String(errors[0])).toMatch(/no link: provide one with clientMachine\.provide/);
  });
});

describe('backoffDelay', () => {
  const retry: RetryPolicy = { initialMs: 100, maxMs: 1_000, forMs: undefined };

  it('doubles the ceiling with each attempt up to maxMs', () => {
    const ceilings = [0, 1, 2, 3, 4, 5, 10, 40, 1000].map((n) => backoffDelay(retry, n, () => 1));
    expect(ceilings).toEqual([100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000]);
  });

  it('stays within [ceiling/2, ceiling]', () => {
    for (let attempt = 0; attempt < 12; attempt++) {
      const ceiling = Math.min(retry.maxMs, retry.initialMs * 2 ** attempt);
      expect(backoffDelay(retry, attempt, () => 0)).toBe(ceiling / 2);
      expect(backoffDelay(retry, attempt, () => 1)).toBe(ceiling);
      for (const r of [0.1, 0.25, 0.5, 0.75, 0.999]) {
        const d = backoffDelay(retry, attempt, () => r);
        expect(d).toBeGreaterThanOrEqual(ceiling / 2);
        expect(d).toBeLessThanOrEqual(ceiling);
        expect(d).toBe(Math.round(ceiling / 2 + (r * ceiling) / 2));
      }
    }
  });

  it('grows monotonically for a fixed random value', () => {
    const delays = Array.from({ length: 20 }, (_, n) => backoffDelay(retry, n, () => 0.5));
    for (let i = 1; i < delays.length; i++) expect(delays[i]).toBeGreaterThanOrEqual(delays[i - 1]!);
    expect(delays.at(-1)).toBe(750);
  });

  it('the machine takes its chance from the link.down event: the same events give the same delays', async () => {
    const delaysFor = (jitters: number[]) => {
      const actor = createActor(
        clientMachine.provide({
          actors: {
            link: fromCallback(({ sendBack }) => {
              const jitter = jitters.shift();
              if (jitter !== undefined) queueMicrotask(() => sendBack({ type: 'link.down', error: new FerryError('E_CONNECTION_LOST', 'gone'), jitter }));
            }),
          },
        }),
        { input: { link: { hello: { version: 1, agent: 'a' }, limits: DEFAULT_LIMITS, handshakeMs: 1_000, heartbeatMs: 0 }, retry, maxQueued: 10, pipelineUploads: true } },
      );
      const delays: number[] = [];
      actor.on('retrying', (e) => void delays.push(e.delayMs));
      return { actor, delays };
    };
    vi.useFakeTimers();
    const runs = [delaysFor([0, 1, 0.5]), delaysFor([0, 1, 0.5])];
    for (const { actor } of runs) actor.start();
    for (let i = 0; i < 3; i++) await vi.advanceTimersByTimeAsync(1_000);
    for (const { actor, delays } of runs) {
      // Attempt n's ceiling is 100 · 2ⁿ: 0 picks half of it, 1 all of it, 0.5 three quarters.
      expect(delays).toEqual([50, 200, 300]);
      actor.stop();
    }
  });
});
