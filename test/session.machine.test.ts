import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { FerryError } from '../transport/errors.js';
import { encode, frameHeader, preamble } from '../transport/native-codec.js';
import { DEFAULT_LIMITS, FrameType, PREAMBLE_MAGIC } from '../transport/frames.js';
import type { MediaOutcome } from '../machines/session.machine.js';
import { MessageJournal } from '../media/message-journal.js';
import { batchMessages } from '../machines/actors/session-connection.js';
import { content, deferred, finalFiles, partialFiles, removeTempDirs, sha256, within } from './helpers/async.js';
import { SessionHarness, type SessionHarnessOptions } from './helpers/session-harness.js';

const harnesses: SessionHarness[] = [];

function start(opts?: SessionHarnessOptions): SessionHarness {
  const h = new SessionHarness(opts);
  harnesses.push(h);
  return h;
}

afterEach(() => {
  vi.useRealTimers();
  for (const h of harnesses.splice(0)) h.dispose();
  removeTempDirs();
});

/** One macrotask turn: everything the memory transport can deliver has been delivered. Only used to show that something did NOT happen. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** The client finishes its side after the server's; the session then ends. */
async function closeFromClient(h: SessionHarness): Promise<void> {
  await within(h.client.ended.promise, 'the server to end its side');
  h.clientEnd.end();
  await h.done();
}

const frames = {
  message: (id: number, text: string) => encode.message(id, text),
  offer: (id: number, name: string, size: number) => encode.uploadOffer({ id, name, size }),
  data: (chunk: Buffer) => Buffer.concat([encode.dataHeader(chunk.length), chunk]),
  end: (id: number, hash: string) => encode.uploadEnd(id, hash),
  bye: () => encode.bye(),
  hello: () => encode.hello({ version: 1, agent: 'again' }),
};

/** Every conversation frame, with the token the session sees for it. */
const conversation: { token: string; frame: () => Buffer }[] = [
  { token: 'hello', frame: frames.hello },
  // A header whose body has not come yet; a whole message comes as `messages`.
  { token: 'message-header', frame: () => frames.message(1, 'hi').subarray(0, 6) },
  { token: 'messages', frame: () => frames.message(1, 'hi') },
  { token: 'upload-offer', frame: () => frames.offer(1, 'a.txt', 1) },
  { token: 'data', frame: () => frames.data(Buffer.from('x')) },
  { token: 'upload-end', frame: () => frames.end(1, '0'.repeat(64)) },
  { token: 'open-request', frame: () => encode.open(1, 'a.txt') },
  { token: 'bye', frame: frames.bye },
];

async function expectUnexpectedFrame(h: SessionHarness, token: string, frame: Buffer): Promise<void> {
  const seen = h.processed(token);
  h.client.write(frame);
  const snapshot = await seen;
  expect(snapshot.value).toBe('closing');
  const error = await h.client.expect('error');
  expect(error.error.code).toBe('E_UNEXPECTED_FRAME');
  expect(error.error.message).toContain(token);
  expect(h.logged('protocol-error')).toContainEqual(expect.objectContaining({ code: 'E_UNEXPECTED_FRAME', frame: token }));
  await closeFromClient(h);
  expect(h.value()).toBe('closed');
}

/** Offers a file and waits until the session streams (the accept reply has arrived). */
async function beginUpload(h: SessionHarness, id: number, name: string, size: number, open = false): Promise<void> {
  const offered = h.processed('upload-offer');
  h.client.write(open ? encode.uploadOffer({ id, name, size, open: true }) : frames.offer(id, name, size));
  expect((await offered).value).toEqual({ receivingFile: 'opening' });
  const accept = await h.client.expect('upload-accept');
  expect(accept).toEqual({ type: 'upload-accept', id, offset: 0 });
  expect(h.value()).toEqual({ receivingFile: 'streaming' });
}

describe('session: handshaking', () => {
  it('starts in handshaking and answers hello with a welcome, then awaits a header', async () => {
    const h = start();
    expect(h.value()).toBe('handshaking');
    const hello = h.processed('hello');
    h.client.hello('client/9');
    expect((await hello).value).toBe('awaitingHeader');
    const welcome = await h.client.expect('welcome');
    expect(welcome.info).toEqual({ version: 1, agent: 'test', session: 'session-1', maxMessage: DEFAULT_LIMITS.maxMessage, maxFrame: DEFAULT_LIMITS.maxFrame });
    expect(h.client.firstByte).toBe(PREAMBLE_MAGIC[0]);
    expect(h.actor.getSnapshot().context.format).toBe('native');
    expect(h.logged('hello')).toEqual([expect.objectContaining({ format: 'native', agent: 'client/9' })]);
  });

  it('completes the handshake when the hello arrives byte by byte', async () => {
    const h = start({ splitAt: 1 });
    await h.handshake();
    expect(h.value()).toBe('awaitingHeader');
  });

  it('answers a ping before the hello and keeps waiting for the hello', async () => {
    const h = start();
    const ping = h.processed('ping');
    h.client.write(preamble(), encode.ping(Buffer.from('abc')));
    expect((await ping).value).toBe('handshaking');
    const pong = await h.client.expect('pong');
    expect(pong.payload.toString()).toBe('abc');
    expect(h.client.firstByte).toBe(PREAMBLE_MAGIC[0]);
    const hello = h.processed('hello');
    h.client.write(encode.hello({ version: 1, agent: 'late' }));
    expect((await hello).value).toBe('awaitingHeader');
  });

  it('closes quietly when no hello arrives within handshakeMs (simulated clock)', async () => {
    const h = start({ handshakeMs: 500 });
    h.clock.increment(499);
    expect(h.value()).toBe('handshaking');
    h.clock.increment(1);
    expect(h.value()).toBe('closing');
    expect(h.logged('handshake-timeout')).toEqual([expect.objectContaining({ ms: 500 })]);
    await closeFromClient(h);
    expect(h.client.tokens.all).toEqual([]);
  });

  it('closes when no hello arrives within handshakeMs (vitest fake timers)', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const h = start({ handshakeMs: 200, realClock: true });
    await vi.advanceTimersByTimeAsync(199);
    expect(h.value()).toBe('handshaking');
    await vi.advanceTimersByTimeAsync(1);
    expect(h.value()).toBe('closing');
    await closeFromClient(h);
  });

  it('cancels the handshake timer once the welcome went out: no handshake.expired ever reaches the session', async () => {
    const h = start({ handshakeMs: 500 });
    await h.handshake();
    h.clock.increment(10_000);
    expect(h.value()).toBe('awaitingHeader');
    expect(h.steps.map((s) => s.event.type)).not.toContain('handshake.expired');
  });

  it.each(conversation.filter((c) => c.token !== 'hello'))('refuses $token before the hello with E_UNEXPECTED_FRAME', async ({ token, frame }) => {
    const h = start();
    h.client.write(preamble());
    await expectUnexpectedFrame(h, token, frame());
  });

  it('closes quietly on shutdown before the hello', async () => {
    const h = start();
    h.actor.send({ type: 'shutdown' });
    expect(h.value()).toBe('closing');
    await closeFromClient(h);
    expect(h.client.tokens.all).toEqual([]);
  });

  it.each([
    { what: 'an unknown first byte', bytes: () => Buffer.from([0x00, 1, 2, 3]), code: 'E_BAD_PREAMBLE' },
    { what: 'the original wire format', bytes: () => Buffer.from('12hello world'), code: 'E_LEGACY_REFUSED' },
  ])('closes without a reply on $what ($code): no codec to answer in', async ({ bytes, code }) => {
    const h = start();
    const failed = h.processed('protocol-error');
    h.client.write(bytes());
    expect((await failed).value).toBe('closing');
    expect(h.logged('protocol-error')).toContainEqual(expect.objectContaining({ code }));
    await closeFromClient(h);
    expect(h.client.tokens.all).toEqual([]);
    expect(h.actor.getSnapshot().context.format).toBeUndefined();
  });

  it.each([
    { what: 'a broken magic', bytes: () => Buffer.from([0xf0, 0x41, 0x41, 0x41, 0x41, 0x41, 1, 0]), code: 'E_BAD_PREAMBLE' },
    { what: 'another protocol version', bytes: () => Buffer.from([...PREAMBLE_MAGIC, 9, 0]), code: 'E_UNSUPPORTED_VERSION' },
    { what: 'a malformed hello', bytes: () => Buffer.concat([preamble(), frameHeader(FrameType.HELLO, 3), Buffer.from('{{{')]), code: 'E_BAD_FRAME' },
    { what: 'an unknown frame type', bytes: () => Buffer.concat([preamble(), frameHeader(0x7f, 0)]), code: 'E_UNKNOWN_FRAME' },
  ])('answers $what with $code and closes', async ({ bytes, code }) => {
    const h = start();
    const failed = h.processed('protocol-error');
    h.client.write(bytes());
    expect((await failed).value).toBe('closing');
    const error = await h.client.expect('error');
    expect(error.error.code).toBe(code);
    // The server's preamble goes ahead of an error sent before the welcome, so a client can read it.
    expect(h.client.firstByte).toBe(PREAMBLE_MAGIC[0]);
    expect(error.error.id).toBeUndefined();
    expect(h.logged('protocol-error')).toContainEqual(expect.objectContaining({ code }));
    await closeFromClient(h);
  });
});

describe('session: messages', () => {
  it('sits in receivingBody between a split header and body, then acknowledges with id and text', async () => {
    const h = start();
    await h.handshake();
    const frame = frames.message(42, 'grüße, world');
    const header = h.processed('message-header');
    h.client.write(frame.subarray(0, 7)); // frame header and half of the id
    expect((await header).value).toBe('receivingBody');
    await within(h.reach('receivingBody'), 'receivingBody');
    await settle();
    expect(h.value()).toBe('receivingBody');
    expect(h.client.tokens.all).toHaveLength(1); // only the welcome so far

    const message = h.processed('message');
    h.client.write(frame.subarray(7));
    expect((await message).value).toBe('awaitingHeader');
    const ack = await h.client.expect('message-ack');
    expect(ack).toEqual({ type: 'message-ack', id: 42, text: 'grüße, world' });
    expect(h.emitted).toEqual([{ type: 'messages', messages: [{ id: 42, text: 'grüße, world' }] }]);
    expect(h.logged('message')).toEqual([expect.objectContaining({ id: 42, text: 'grüße, world' })]);
    expect(h.trace()).toEqual(['handshaking', 'awaitingHeader', 'receivingBody', 'awaitingHeader']);
  });

  it('acknowledges messages delivered byte by byte and pipelined in one write, in order', async () => {
    const h = start({ splitAt: 1 });
    await h.handshake();
    h.client.write(Buffer.concat([frames.message(1, 'one'), frames.message(2, ''), frames.message(3, 'three ✓')]));
    expect(await h.client.expect('message-ack')).toMatchObject({ id: 1, text: 'one' });
    expect(await h.client.expect('message-ack')).toMatchObject({ id: 2, text: '' });
    expect(await h.client.expect('message-ack')).toMatchObject({ id: 3, text: 'three ✓' });
    expect(h.emitted.flatMap((e) => (e.type === 'messages' ? e.messages.map((m) => m.id) : []))).toEqual([1, 2, 3]);
    expect(h.value()).toBe('awaitingHeader');
  });

  it('handles whole messages that arrive in one read as one step: acknowledged and logged each in order, emitted as one event', async () => {
    const h = start();
    await h.handshake();
    const texts = ['one', '', 'three ✓', 'four'];
    const batch = h.processed('messages');
    h.client.write(Buffer.concat(texts.map((t, i) => frames.message(i + 1, t))));
    expect((await batch).value).toBe('awaitingHeader');
    for (const [i, text] of texts.entries()) expect(await h.client.expect('message-ack')).toEqual({ type: 'message-ack', id: i + 1, text });
    // One event tells of the four.
    expect(h.emitted).toEqual([{ type: 'messages', messages: texts.map((text, i) => ({ id: i + 1, text })) }]);
    expect(h.logged('message').map((l) => [l.id, l.text])).toEqual(texts.map((t, i) => [i + 1, t]));
    // One event for the four, and no detour through receivingBody.
    expect(h.steps.filter((s) => s.event.type.startsWith('message')).map((s) => s.event.type)).toEqual(['messages']);
    expect(h.trace()).toEqual(['handshaking', 'awaitingHeader']);
  });

  it('folds every run of whole messages into one event, leaving every other token in its place', () => {
    const header = (length: number) => ({ type: 'message-header' as const, length });
    const message = (id: number) => ({ type: 'message' as const, id, text: `m${id}`, raw: Buffer.from(`m${id}`) });
    const offer = { type: 'upload-offer' as const, offer: { id: 9, name: 'a.bin', size: 1 } };
    const batch = (...ids: number[]) => ({ type: 'messages', messages: ids.map(message) });
    // A lone whole message is a batch of one; the end of a split one stays as it is.
    expect(batchMessages([header(2), message(1)])).toEqual([batch(1)]);
    expect(batchMessages([message(1), header(2), message(2), offer])).toEqual([message(1), batch(2), offer]);
    // The tail of a split message, then a run of two, then an offer, then a header whose body is still to come.
    expect(batchMessages([message(1), header(2), message(2), header(2), message(3), offer, header(2)])).toEqual([message(1), batch(2, 3), offer, header(2)]);
    expect(batchMessages([header(2), message(1), offer, header(2), message(2), header(2), message(3), header(2), message(4)])).toEqual([batch(1), offer, batch(2, 3, 4)]);
    expect(batchMessages([header(2)])).toEqual([header(2)]);
  });

  it('recognises resends inside a batch, also one repeated within the same batch: acknowledged, handled once', async () => {
    const journal = new MessageJournal();
    const h = start({ journal });
    h.client.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'test', clientId: 'batch-client' })]));
    await h.client.expect('welcome');
    h.client.write(Buffer.concat([frames.message(1, 'a'), frames.message(2, 'b')]));
    await h.client.expect('message-ack');
    await h.client.expect('message-ack');
    // After a reconnect a client resends what it has no ack for; here 2 again, then 3 twice.
    h.client.write(Buffer.concat([frames.message(2, 'b'), frames.message(3, 'c'), frames.message(3, 'c')]));
    const acks = [await h.client.expect('message-ack'), await h.client.expect('message-ack'), await h.client.expect('message-ack')];
    expect(acks.map((a) => a.id)).toEqual([2, 3, 3]);
    expect(h.emitted.flatMap((e) => (e.type === 'messages' ? e.messages.map((m) => m.id) : []))).toEqual([1, 2, 3]);
    expect(h.logged('message').map((l) => l.id)).toEqual([1, 2, 3]);
    expect(h.logged('duplicate-message').map((l) => l.id)).toEqual([2, 3]);
  });

  it('refuses a batch of messages in the middle of an upload with E_UNEXPECTED_FRAME', async () => {
    const h = start();
    await h.handshake();
    await beginUpload(h, 1, 'mid.bin', 5);
    await expectUnexpectedFrame(h, 'messages', Buffer.concat([frames.message(1, 'x'), frames.message(2, 'y')]));
    expect(finalFiles(h.root)).toEqual([]);
  });

  it.each(conversation.filter((c) => !['message-header', 'messages', 'upload-offer', 'open-request', 'bye'].includes(c.token)))(
    'refuses $token between commands with E_UNEXPECTED_FRAME',
    async ({ token, frame }) => {
      const h = start();
      await h.handshake();
      await expectUnexpectedFrame(h, token, frame());
    },
  );

  it.each(['hello', 'message-header', 'upload-offer', 'data', 'upload-end', 'open-request', 'bye'] as const)(
    'refuses a %s token in the middle of a message body (cannot come off the wire; sent directly)',
    async (type) => {
      const h = start();
      await h.handshake();
      const header = h.processed('message-header');
      h.client.write(frames.message(5, 'hello').subarray(0, 9));
      await header;
      const events = {
        hello: { type: 'hello', info: { version: 1, agent: 'x' } },
        'message-header': { type: 'message-header', length: 3 },
        'upload-offer': { type: 'upload-offer', offer: { id: 1, name: 'a', size: 1 } },
        data: { type: 'data', chunk: Buffer.from('x') },
        'upload-end': { type: 'upload-end', id: 1 },
        'open-request': { type: 'open-request', id: 1, name: 'a' },
        bye: { type: 'bye' },
      } as const;
      h.actor.send(events[type]);
      expect(h.value()).toBe('closing');
      expect((await h.client.expect('error')).error.code).toBe('E_UNEXPECTED_FRAME');
      await closeFromClient(h);
    },
  );

  it('answers bye with bye and closes', async () => {
    const h = start();
    await h.handshake();
    const bye = h.processed('bye');
    h.client.write(frames.bye());
    expect((await bye).value).toBe('closing');
    await h.client.expect('bye');
    await closeFromClient(h);
    expect(h.trace()).toEqual(['handshaking', 'awaitingHeader', 'closing', 'closed']);
    expect(h.logged('disconnected')).toHaveLength(1);
  });

  it('says bye and closes on shutdown between commands', async () => {
    const h = start();
    await h.handshake();
    h.actor.send({ type: 'shutdown' });
    expect(h.value()).toBe('closing');
    await h.client.expect('bye');
    await closeFromClient(h);
  });

  it('finishes the message under way on shutdown, then says bye', async () => {
    const h = start();
    await h.handshake();
    const frame = frames.message(8, 'last words');
    const header = h.processed('message-header');
    h.client.write(frame.subarray(0, 10));
    await header;
    h.actor.send({ type: 'shutdown' });
    expect(h.value()).toBe('receivingBody');
    expect(h.actor.getSnapshot().context.draining).toBe(true);
    h.client.write(frame.subarray(10));
    expect(await h.client.expect('message-ack')).toMatchObject({ id: 8, text: 'last words' });
    await h.client.expect('bye');
    await closeFromClient(h);
    expect(h.trace()).toEqual(['handshaking', 'awaitingHeader', 'receivingBody', 'closing', 'closed']);
  });

  it('refuses a message over the limit with E_MESSAGE_TOO_LARGE', async () => {
    const h = start();
    await h.handshake();
    const failed = h.processed('protocol-error');
    h.client.write(frameHeader(FrameType.MESSAGE, DEFAULT_LIMITS.maxMessage + 5));
    expect((await failed).value).toBe('closing');
    expect((await h.client.expect('error')).error.code).toBe('E_MESSAGE_TOO_LARGE');
    await closeFromClient(h);
  });

  it('refuses a message that is not UTF-8 with E_BAD_UTF8', async () => {
    const h = start();
    await h.handshake();
    const failed = h.processed('protocol-error');
    const bad = Buffer.concat([frameHeader(FrameType.MESSAGE, 6), Buffer.from([0, 0, 0, 1, 0xc3, 0x28])]);
    h.client.write(bad);
    expect((await failed).value).toBe('closing');
    expect((await h.client.expect('error')).error.code).toBe('E_BAD_UTF8');
    await closeFromClient(h);
  });

  it('closes quietly when the client half-closes between commands', async () => {
    const h = start();
    await h.handshake();
    const ended = h.processed('peer-ended');
    h.clientEnd.end();
    expect((await ended).value).toBe('closing');
    await h.done();
    expect(h.logged('peer-ended')).toEqual([expect.objectContaining({ event: 'peer-ended' })]);
    expect(h.client.tokens.all.map((t) => t.type)).toEqual(['welcome']);
  });

  it('logs an unclean end when the client half-closes in the middle of a message', async () => {
    const h = start();
    await h.handshake();
    const header = h.processed('message-header');
    h.client.write(frames.message(1, 'cut off').subarray(0, 9));
    await header;
    const ended = h.processed('peer-ended');
    h.clientEnd.end();
    expect((await ended).value).toBe('closing');
    await h.done();
    expect(h.logged('peer-ended')).toEqual([expect.objectContaining({ clean: false })]);
    expect(h.emitted).toEqual([]);
  });
});

describe('session: uploads', () => {
  it('opens, streams, verifies and answers upload-done with the file on disk, skipping the media step nobody asked for (real store)', async () => {
    const h = start({ rawStore: true, splitAt: 1000 });
    await h.handshake();
    const body = content(100_000, 3);
    const offered = h.processed('upload-offer');
    h.client.write(frames.offer(7, 'photo.png', body.length));
    expect((await offered).value).toEqual({ receivingFile: 'opening' });
    expect(await h.client.expect('upload-accept')).toEqual({ type: 'upload-accept', id: 7, offset: 0 });
    expect(h.value()).toEqual({ receivingFile: 'streaming' });

    for (let offset = 0; offset < body.length; offset += 30_000) h.client.write(frames.data(body.subarray(offset, offset + 30_000)));
    h.client.write(frames.end(7, sha256(body)));
    const done = await h.client.expect('upload-done');
    expect(done.result).toEqual({ id: 7, savedAs: 'photo.png', bytes: body.length, sha256: sha256(body) });
    expect(h.value()).toBe('awaitingHeader');

    const file = path.join(h.root, 'photo.png');
    expect(sha256(fs.readFileSync(file))).toBe(sha256(body));
    expect(finalFiles(h.root)).toEqual(['photo.png']);
    expect(partialFiles(h.root)).toEqual([]);
    expect(h.trace()).toEqual([
      'handshaking',
      'awaitingHeader',
      'receivingFile.opening',
      'receivingFile.streaming',
      'receivingFile.verifying',
      'awaitingHeader',
    ]);
    expect(h.emitted).toEqual([{ type: 'file-saved', saved: { savedAs: 'photo.png', path: file, bytes: body.length, sha256: sha256(body) } }]);
    expect(h.logged('file-saved')).toEqual([expect.objectContaining({ id: 7, name: 'photo.png', savedAs: 'photo.png', bytes: body.length, sha256: sha256(body) })]);
    expect(h.logged('upload-started')).toEqual([expect.objectContaining({ id: 7, name: 'photo.png', size: body.length })]);
    expect(h.dispatch.calls).toEqual([]);
    expect(h.actor.getSnapshot().context.upload).toBeUndefined();
  });

  it('passes through each upload step one event at a time, the media step too when the client asks to open the file (gated store and media step)', async () => {
    const h = start();
    await h.handshake();
    const body = content(5000, 4);
    h.store.beginGate = deferred();
    h.store.finishGate = deferred();
    h.dispatch.hold = true;

    const offered = h.processed('upload-offer');
    h.client.write(encode.uploadOffer({ id: 3, name: 'notes.txt', size: body.length, open: true }));
    expect((await offered).value).toEqual({ receivingFile: 'opening' });
    await h.store.begins.next();
    const ready = h.processed('file.ready');
    h.store.beginGate.resolve();
    expect((await ready).value).toEqual({ receivingFile: 'streaming' });
    expect(await h.client.expect('upload-accept')).toMatchObject({ id: 3 });

    const chunk = h.processed('data');
    h.client.write(frames.data(body));
    expect((await chunk).value).toEqual({ receivingFile: 'streaming' });
    const end = h.processed('upload-end');
    h.client.write(frames.end(3, sha256(body)));
    expect((await end).value).toEqual({ receivingFile: 'verifying' });
    expect(await h.store.files[0]!.finishCalled.promise).toBe(sha256(body));

    const saved = h.processed('file.saved');
    h.store.finishGate.resolve();
    expect((await saved).value).toBe('dispatchingMedia');
    expect(finalFiles(h.root)).toEqual(['notes.txt']);
    const gate = await h.dispatch.pending.next();
    expect(h.dispatch.calls).toEqual([expect.objectContaining({ wanted: true, name: 'notes.txt' })]);
    const dispatched = h.processed('xstate.done.actor.*');
    gate.resolve({});
    expect((await dispatched).value).toBe('awaitingHeader');
    expect((await h.client.expect('upload-done')).result).toMatchObject({ id: 3, savedAs: 'notes.txt', bytes: body.length });
  });

  it('reads an offer sent right behind UPLOAD_END only after answering the upload it follows', async () => {
    const h = start({ rawStore: true });
    await h.handshake();
    const a = Buffer.from('first file');
    const b = Buffer.from('second');
    await beginUpload(h, 1, 'a.txt', a.length);
    h.client.write(Buffer.concat([frames.data(a), frames.end(1, sha256(a)), frames.offer(2, 'b.txt', b.length)]));
    expect((await h.client.expect('upload-done')).result).toMatchObject({ id: 1, savedAs: 'a.txt' });
    expect(await h.client.expect('upload-accept')).toEqual({ type: 'upload-accept', id: 2, offset: 0 });
    h.client.write(frames.data(b), frames.end(2, sha256(b)));
    expect((await h.client.expect('upload-done')).result).toMatchObject({ id: 2, savedAs: 'b.txt' });
    expect(finalFiles(h.root)).toEqual(['a.txt', 'b.txt']);
  });

  it('still answers upload-done when the media step fails', async () => {
    const h = start();
    await h.handshake();
    h.dispatch.hold = true;
    const body = Buffer.from('media');
    await beginUpload(h, 4, 'clip.mp4', body.length, true);
    h.client.write(frames.data(body), frames.end(4, sha256(body)));
    const gate = await h.dispatch.pending.next();
    expect(h.value()).toBe('dispatchingMedia');
    const failed = h.processed('xstate.error.actor.*');
    gate.reject(new Error('no app'));
    expect((await failed).value).toBe('awaitingHeader');
    expect((await h.client.expect('upload-done')).result).toMatchObject({ id: 4, savedAs: 'clip.mp4' });
  });

  it('numbers the name of a second upload of the same file', async () => {
    const h = start({ rawStore: true });
    await h.handshake();
    const body = Buffer.from('same');
    for (const id of [1, 2]) {
      await beginUpload(h, id, 'same.txt', body.length);
      h.client.write(frames.data(body), frames.end(id, sha256(body)));
      expect((await h.client.expect('upload-done')).result.id).toBe(id);
    }
    expect(finalFiles(h.root)).toEqual(['same (1).txt', 'same.txt']);
  });

  it('accepts an empty file', async () => {
    const h = start({ rawStore: true });
    await h.handshake();
    await beginUpload(h, 9, 'empty.bin', 0);
    h.client.write(frames.end(9, sha256(Buffer.alloc(0))));
    expect((await h.client.expect('upload-done')).result).toMatchObject({ id: 9, bytes: 0 });
    expect(fs.statSync(path.join(h.root, 'empty.bin')).size).toBe(0);
  });

  it('answers a hash mismatch with E_HASH_MISMATCH, keeps no file, and carries on', async () => {
    const h = start({ rawStore: true });
    await h.handshake();
    const body = content(4096, 5);
    await beginUpload(h, 11, 'bad.bin', body.length);
    h.client.write(frames.data(body));
    const end = h.processed('upload-end');
    h.client.write(frames.end(11, sha256(Buffer.from('something else'))));
    expect((await end).value).toEqual({ receivingFile: 'verifying' });
    const error = await h.client.expect('error');
    expect(error.error).toMatchObject({ code: 'E_HASH_MISMATCH', id: 11 });
    expect(h.value()).toBe('awaitingHeader');
    expect(finalFiles(h.root)).toEqual([]);
    expect(partialFiles(h.root)).toEqual([]);
    expect(h.emitted).toEqual([]);
    expect(h.logged('upload-failed')).toEqual([expect.objectContaining({ id: 11, code: 'E_HASH_MISMATCH' })]);
    h.client.write(frames.message(12, 'still here'));
    expect(await h.client.expect('message-ack')).toMatchObject({ id: 12 });
  });

  it('answers a short file with E_UPLOAD_SIZE and keeps no file', async () => {
    const h = start({ rawStore: true });
    await h.handshake();
    const body = content(100, 6);
    await beginUpload(h, 13, 'short.bin', 200);
    h.client.write(frames.data(body), frames.end(13, sha256(body)));
    expect((await h.client.expect('error')).error).toMatchObject({ code: 'E_UPLOAD_SIZE', id: 13 });
    expect(h.value()).toBe('awaitingHeader');
    expect(finalFiles(h.root)).toEqual([]);
  });

  it('closes with E_UPLOAD_SIZE when more bytes arrive than were offered', async () => {
    const h = start();
    await h.handshake();
    await beginUpload(h, 14, 'long.bin', 3);
    const failed = h.processed('file.failed');
    h.client.write(frames.data(Buffer.from('four')));
    expect((await failed).value).toBe('closing');
    expect((await h.client.expect('error')).error).toMatchObject({ code: 'E_UPLOAD_SIZE', id: 14 });
    await closeFromClient(h);
    await h.store.settled();
    expect(finalFiles(h.root)).toEqual([]);
    expect(partialFiles(h.root)).toEqual([]);
  });

  it('refuses an offer the store refuses and returns to awaitingHeader', async () => {
    const h = start({ rawStore: true });
    await h.handshake();
    const refused = h.processed('file.refused');
    h.client.write(frames.offer(15, 'bad\u0001name', 3));
    expect((await refused).value).toBe('awaitingHeader');
    expect((await h.client.expect('error')).error).toMatchObject({ code: 'E_BAD_NAME', id: 15 });
    expect(h.actor.getSnapshot().context.upload).toBeUndefined();
    h.client.write(frames.message(16, 'next'));
    expect(await h.client.expect('message-ack')).toMatchObject({ id: 16 });
  });

  it('refuses an offer when the store fails to begin (gated)', async () => {
    const h = start();
    await h.handshake();
    h.store.beginGate = deferred();
    const offered = h.processed('upload-offer');
    h.client.write(frames.offer(17, 'big.iso', 10));
    await offered;
    const refused = h.processed('file.refused');
    h.store.beginGate.reject(new FerryError('E_NO_SPACE', 'No room.'));
    expect((await refused).value).toBe('awaitingHeader');
    expect((await h.client.expect('error')).error).toEqual({ code: 'E_NO_SPACE', message: 'No room.', id: 17 });
  });

  it.each(conversation.filter((c) => !['data', 'upload-end'].includes(c.token)))(
    'refuses $token while streaming with E_UNEXPECTED_FRAME and keeps no partial file',
    async ({ token, frame }) => {
      const h = start();
      await h.handshake();
      await beginUpload(h, 1, 'a.txt', 10);
      h.client.write(frames.data(Buffer.from('abc')));
      await expectUnexpectedFrame(h, token, frame());
      await h.store.settled();
      expect(finalFiles(h.root)).toEqual([]);
      expect(partialFiles(h.root)).toEqual([]);
    },
  );

  it('holds frames that arrive while verifying and dispatching until the upload is answered', async () => {
    const h = start();
    await h.handshake();
    h.store.finishGate = deferred();
    const body = Buffer.from('pipelined');
    await beginUpload(h, 20, 'p.txt', body.length);
    const end = h.processed('upload-end');
    h.client.write(frames.data(body), frames.end(20, sha256(body)), frames.message(21, 'after'), frames.bye());
    expect((await end).value).toEqual({ receivingFile: 'verifying' });
    await settle();
    expect(h.value()).toEqual({ receivingFile: 'verifying' });
    expect(h.steps.some((s) => s.event.type === 'message-header')).toBe(false);
    h.store.finishGate.resolve();
    expect((await h.client.expect('upload-done')).result.id).toBe(20);
    expect(await h.client.expect('message-ack')).toMatchObject({ id: 21, text: 'after' });
    await h.client.expect('bye');
    await closeFromClient(h);
  });

  it('stops reading while the disk is busy and resumes when it is writable', async () => {
    const h = start();
    await h.handshake();
    const body = content(3000, 7);
    await beginUpload(h, 30, 'slow.bin', body.length);
    h.store.holdWrites = true;
    const busy = h.processed('file.busy');
    h.client.write(frames.data(body.subarray(0, 1000)));
    expect((await busy).value).toEqual({ receivingFile: 'streaming' });
    h.client.write(frames.data(body.subarray(1000)), frames.end(30, sha256(body)));
    await settle();
    expect(h.steps.filter((s) => s.event.type === 'data')).toHaveLength(1);
    expect(h.clientEnd.writableLength).toBeGreaterThan(0);
    const writable = h.processed('file.writable');
    h.store.files[0]!.releaseDrain();
    expect((await writable).value).toEqual({ receivingFile: 'streaming' });
    expect((await h.client.expect('upload-done')).result).toMatchObject({ id: 30, bytes: body.length, sha256: sha256(body) });
    expect(h.steps.filter((s) => s.event.type === 'data')).toHaveLength(2);
  });

  it('hands upload bytes straight to the file receiver while streaming, and only then', async () => {
    const h = start();
    await h.handshake();
    const body = content(3000, 9);
    // Bytes that arrive before the file is accepted wait, and go by the same route once it is.
    const offered = h.processed('upload-offer');
    h.client.write(frames.offer(32, 'routed.bin', body.length), frames.data(body.subarray(0, 1000)));
    await offered;
    await h.client.expect('upload-accept');
    h.client.write(frames.data(body.subarray(1000, 2000)), frames.data(body.subarray(2000)), frames.end(32, sha256(body)));
    expect((await h.client.expect('upload-done')).result).toMatchObject({ id: 32, bytes: body.length, sha256: sha256(body) });
    // Each chunk reached the receiver without a step of the session itself.
    expect(h.routedData).toBe(3);
    expect(h.steps.filter((s) => s.event.type === 'data')).toHaveLength(3);
    expect(fs.readFileSync(path.join(h.root, 'routed.bin'))).toEqual(body);
    // Back in awaitingHeader the route is gone: stray data is out of turn again.
    h.client.write(frames.data(Buffer.from('late')));
    expect((await h.client.expect('error')).error.code).toBe('E_UNEXPECTED_FRAME');
    expect(h.routedData).toBe(3);
  });

  it('answers a ping in the middle of an upload', async () => {
    const h = start();
    await h.handshake();
    await beginUpload(h, 31, 'x.bin', 2);
    h.client.write(frames.data(Buffer.from('a')), encode.ping(Buffer.from('p')));
    expect((await h.client.expect('pong')).payload.toString()).toBe('p');
    h.client.write(frames.data(Buffer.from('b')), frames.end(31, sha256(Buffer.from('ab'))));
    expect((await h.client.expect('upload-done')).result.id).toBe(31);
  });

  it('lets an upload under way finish on shutdown, then says bye and closes', async () => {
    const h = start();
    await h.handshake();
    const body = content(2000, 8);
    await beginUpload(h, 40, 'keep.bin', body.length);
    h.client.write(frames.data(body.subarray(0, 500)));
    h.actor.send({ type: 'shutdown' });
    expect(h.value()).toEqual({ receivingFile: 'streaming' });
    expect(h.actor.getSnapshot().context.draining).toBe(true);
    h.client.write(frames.data(body.subarray(500)), frames.end(40, sha256(body)));
    expect((await h.client.expect('upload-done')).result).toMatchObject({ id: 40, sha256: sha256(body) });
    await h.client.expect('bye');
    await closeFromClient(h);
    expect(h.trace().slice(-3)).toEqual(['receivingFile.verifying', 'closing', 'closed']);
    expect(finalFiles(h.root)).toEqual(['keep.bin']);
  });

  it('lets an offer that is still opening finish on shutdown', async () => {
    const h = start();
    await h.handshake();
    h.store.beginGate = deferred();
    const offered = h.processed('upload-offer');
    h.client.write(frames.offer(41, 'o.txt', 1));
    await offered;
    h.actor.send({ type: 'shutdown' });
    expect(h.value()).toEqual({ receivingFile: 'opening' });
    h.store.beginGate.resolve();
    await h.client.expect('upload-accept');
    h.client.write(frames.data(Buffer.from('o')), frames.end(41, sha256(Buffer.from('o'))));
    expect((await h.client.expect('upload-done')).result.id).toBe(41);
    await h.client.expect('bye');
    await closeFromClient(h);
  });

  it('ignores a shutdown while closing', async () => {
    const h = start();
    await h.handshake();
    h.client.write(frames.bye());
    await h.reach('closing');
    h.actor.send({ type: 'shutdown' });
    expect(h.value()).toBe('closing');
    await h.client.expect('bye');
    await closeFromClient(h);
    expect(h.client.tokens.all.map((t) => t.type)).toEqual(['welcome', 'bye']);
  });
});

describe('session: opening stored files', () => {
  it('answers an open request through the media step and returns to awaitingHeader', async () => {
    const h = start();
    await h.handshake();
    h.dispatch.hold = true;
    const requested = h.processed('open-request');
    h.client.write(encode.open(50, 'song.mp3'));
    expect((await requested).value).toBe('dispatchingMedia');
    expect(h.actor.getSnapshot().context.openRequest).toEqual({ id: 50, name: 'song.mp3' });
    const gate = await h.dispatch.pending.next();
    expect(h.dispatch.calls).toEqual([expect.objectContaining({ wanted: true, name: 'song.mp3' })]);
    expect(h.dispatch.calls[0]!.path).toBeUndefined();
    const done = h.processed('xstate.done.actor.*');
    gate.resolve({ outcome: { opened: true, kind: 'audio', mime: 'audio/mpeg', app: 'player', pid: 42 } });
    expect((await done).value).toBe('awaitingHeader');
    expect(await h.client.expect('open-result')).toEqual({ type: 'open-result', id: 50, result: { opened: true, kind: 'audio', mime: 'audio/mpeg', app: 'player', pid: 42 } });
    expect(h.actor.getSnapshot().context.openRequest).toBeUndefined();
    expect(h.logged('media-opened')).toEqual([expect.objectContaining({ file: 'song.mp3', app: 'player' })]);
  });

  it('answers an open request whose media step fails with a refusal', async () => {
    const h = start();
    await h.handshake();
    h.dispatch.hold = true;
    h.client.write(encode.open(51, 'x.png'));
    const gate = await h.dispatch.pending.next();
    const failed = h.processed('xstate.error.actor.*');
    gate.reject(new Error('boom'));
    expect((await failed).value).toBe('awaitingHeader');
    expect(await h.client.expect('open-result')).toMatchObject({ id: 51, result: { opened: false, code: 'E_LAUNCH_FAILED' } });
  });

  it('refuses to open a file that is not in the upload folder (real media step)', async () => {
    const h = start({ realDispatch: true, media: { enabled: true } });
    await h.handshake();
    h.client.write(encode.open(52, 'missing.png'));
    expect(await h.client.expect('open-result')).toMatchObject({ id: 52, result: { opened: false, code: 'E_NOT_FOUND' } });
    expect(h.value()).toBe('awaitingHeader');
  });

  it('refuses to open a stored file when opening is off (real media step)', async () => {
    const h = start({ realDispatch: true });
    await h.handshake();
    fs.writeFileSync(path.join(h.root, 'here.png'), 'not really a png');
    h.client.write(encode.open(53, 'here.png'));
    expect(await h.client.expect('open-result')).toMatchObject({ id: 53, result: { opened: false, code: 'E_OPEN_DISABLED' } });
  });

  it('asks the media step to open an upload whose offer asked for it, and reports the outcome in upload-done', async () => {
    const h = start({ realDispatch: true });
    await h.handshake();
    const body = Buffer.from('plain text, not media');
    const offered = h.processed('upload-offer');
    h.client.write(encode.uploadOffer({ id: 54, name: 'o.txt', size: body.length, open: true }));
    await offered;
    await h.client.expect('upload-accept');
    h.client.write(frames.data(body), frames.end(54, sha256(body)));
    const done = await h.client.expect('upload-done');
    expect(done.result).toMatchObject({ id: 54, savedAs: 'o.txt', opened: { opened: false, code: 'E_OPEN_DISABLED' } });
  });

  it('does not ask to open an upload whose offer did not ask for it', async () => {
    const h = start({ realDispatch: true, media: { enabled: true } });
    await h.handshake();
    const body = Buffer.from('quiet');
    await beginUpload(h, 55, 'q.txt', body.length);
    h.client.write(frames.data(body), frames.end(55, sha256(body)));
    const done = await h.client.expect('upload-done');
    expect(done.result).toEqual({ id: 55, savedAs: 'q.txt', bytes: body.length, sha256: sha256(body) });
  });
});

describe('session: the peer vanishing', () => {
  type How = 'reset' | 'destroy';
  const hows: How[] = ['reset', 'destroy'];

  function vanish(h: SessionHarness, how: How): void {
    if (how === 'reset') h.clientEnd.reset();
    else h.clientEnd.destroy();
  }

  /** A reset goes straight to closed; a destroy (FIN) passes through closing. */
  function expectEnd(h: SessionHarness, how: How, from: string): void {
    const trace = h.trace();
    const tail = trace.slice(trace.lastIndexOf(from));
    expect(tail).toEqual(how === 'reset' ? [from, 'closed'] : [from, 'closing', 'closed']);
  }

  it.each(hows)('handshaking: %s → closed', async (how) => {
    const h = start();
    vanish(h, how);
    await h.done();
    expectEnd(h, how, 'handshaking');
    expect(h.logged('disconnected')).toHaveLength(1);
  });

  it('handshaking: a reset is logged with its reason', async () => {
    const h = start();
    h.clientEnd.reset();
    await h.done();
    expect(h.logged('disconnected')).toEqual([expect.objectContaining({ reason: 'ECONNRESET' })]);
  });

  it.each(hows)('awaitingHeader: %s → closed', async (how) => {
    const h = start();
    await h.handshake();
    vanish(h, how);
    await h.done();
    expectEnd(h, how, 'awaitingHeader');
  });

  it.each(hows)('receivingBody: %s → closed without a message', async (how) => {
    const h = start();
    await h.handshake();
    const header = h.processed('message-header');
    h.client.write(frames.message(1, 'never finished').subarray(0, 12));
    await header;
    vanish(h, how);
    await h.done();
    expectEnd(h, how, 'receivingBody');
    expect(h.emitted).toEqual([]);
  });

  it.each(hows)('receivingFile.streaming: %s → closed, partial removed, no final file', async (how) => {
    const h = start();
    await h.handshake();
    await beginUpload(h, 1, 'cut.bin', 1000);
    const chunk = h.processed('data');
    h.client.write(frames.data(content(400)));
    await chunk;
    vanish(h, how);
    await h.done();
    expectEnd(h, how, 'receivingFile.streaming');
    await h.store.settled();
    expect(h.store.files[0]!.aborted).toBeDefined();
    expect(finalFiles(h.root)).toEqual([]);
    expect(partialFiles(h.root)).toEqual([]);
  });

  it.each(hows)('receivingFile.opening: %s → closed once the store answers, no file kept', async (how) => {
    const h = start();
    await h.handshake();
    h.store.beginGate = deferred();
    const offered = h.processed('upload-offer');
    h.client.write(frames.offer(2, 'never.bin', 10));
    await offered;
    vanish(h, how);
    await within(h.client.closed.promise, 'the link to close');
    h.store.beginGate.resolve();
    await h.done();
    await h.store.settled();
    expect(finalFiles(h.root)).toEqual([]);
    expect(partialFiles(h.root)).toEqual([]);
    expect(h.client.tokens.all.map((t) => t.type)).toEqual(['welcome']);
  });

  it.each(hows)('receivingFile.verifying: %s → closed once the store answers, no partial left', async (how) => {
    const h = start();
    await h.handshake();
    h.store.finishGate = deferred();
    const body = Buffer.from('complete');
    await beginUpload(h, 3, 'v.bin', body.length);
    const end = h.processed('upload-end');
    h.client.write(frames.data(body), frames.end(3, sha256(body)));
    await end;
    vanish(h, how);
    await within(h.client.closed.promise, 'the link to close');
    h.store.finishGate.resolve();
    await h.done();
    await h.store.settled();
    expect(partialFiles(h.root)).toEqual([]);
  });

  it.each(hows)('dispatchingMedia: %s → closed once the media step ends', async (how) => {
    const h = start();
    await h.handshake();
    h.dispatch.hold = true;
    const body = Buffer.from('media');
    await beginUpload(h, 4, 'm.bin', body.length, true);
    h.client.write(frames.data(body), frames.end(4, sha256(body)));
    const gate = await h.dispatch.pending.next();
    expect(h.value()).toBe('dispatchingMedia');
    vanish(h, how);
    await within(h.client.closed.promise, 'the link to close');
    gate.resolve({} satisfies MediaOutcome);
    await h.done();
    expect(h.client.tokens.all.map((t) => t.type)).toEqual(['welcome', 'upload-accept']);
  });

  it('closing: a reset → closed', async () => {
    const h = start();
    await h.handshake();
    h.client.write(frames.bye());
    await h.reach('closing');
    h.clientEnd.reset();
    await h.done();
    expectEnd(h, 'reset', 'closing');
  });

  it('closing: a peer that never closes its side is cut off after the grace period', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const h = start({ realClock: true });
    await h.handshake();
    h.client.write(frames.bye());
    await h.reach('closing');
    await within(h.client.ended.promise, 'the server to end its side');
    await vi.advanceTimersByTimeAsync(4_999);
    expect(h.value()).toBe('closing');
    await vi.advanceTimersByTimeAsync(1);
    await h.done();
  });
});
