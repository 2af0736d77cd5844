/**
 * Heartbeats and backoff.
 * - The client pings the server; a server that stops sending (stalled, or a path that swallows its
 *   bytes without closing) is noticed after two silent intervals and the client reconnects.
 * - The server pings native clients and drops one that is silent for two intervals, logging
 *   `disconnected` with reason E_TIMEOUT; it never drops original-format connections for silence, nor
 *   a client it is itself not reading from (disk backpressure).
 * - Backoff delays grow exponentially with jitter up to a cap, and start over after a connection worked.
 * Exact timing is checked with fake timers; the end-to-end variants run real sockets with short
 * intervals and only bound the time from above and below.
 */
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createActor, type Actor, type InspectionEvent } from 'xstate';
import { createClient, createServer, type FerryClient, type FerryServer } from '../index.js';
import { backoffDelay, type RetryPolicy } from '../machines/client.machine.js';
import type { sessionMachine } from '../machines/session.machine.js';
import { nativeAndLegacy } from '../machines/actors/session-connection.js';
import type { FileSink } from '../machines/actors/file-receiver.js';
import { UploadStore } from '../media/upload-store.js';
import { encodeLegacyMessage } from '../transport/legacy-codec.js';
import { memoryPair, type MemoryTransport } from '../transport/memory-transport.js';
import { ClientDecoder, encode, preamble } from '../transport/native-codec.js';
import type { ClientToken } from '../transport/frames.js';
import { AsyncQueue, closeAll, content, removeTempDirs, sha256, tempDir, within } from './helpers/async.js';
import { FreezingProxy } from './helpers/freezing-proxy.js';
import { ClientHarness, refused, type ClientHarnessOptions } from './helpers/client-harness.js';
import { ControlledStore, PeerClient, soloSession } from './helpers/session-harness.js';

const FAKE = { toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] } satisfies Parameters<typeof vi.useFakeTimers>[0];
const HB = 1_000;

const harnesses: ClientHarness[] = [];
const sessions: { actor: Actor<typeof sessionMachine>; clientEnd: MemoryTransport }[] = [];
const servers: FerryServer[] = [];
const clients: FerryClient[] = [];
const sockets: net.Socket[] = [];
const cleanups: (() => void)[] = [];

afterEach(async () => {
  vi.useRealTimers();
  vi.restoreAllMocks();
  for (const h of harnesses.splice(0)) h.dispose();
  for (const s of sessions.splice(0)) {
    s.actor.stop();
    s.clientEnd.destroy();
  }
  for (const socket of sockets.splice(0)) socket.destroy();
  for (const cleanup of cleanups.splice(0)) cleanup();
  await closeAll(clients, servers);
  removeTempDirs();
});

function startClient(opts: ClientHarnessOptions, before?: (h: ClientHarness) => void): ClientHarness {
  const h = new ClientHarness(opts);
  harnesses.push(h);
  before?.(h);
  return h.start();
}

/** Flushes microtasks (and due timers) under fake timers. */
const settle = () => vi.advanceTimersByTimeAsync(0);

describe('client heartbeat', () => {
  it('a stalled server is noticed after two silent intervals (not before): link.down E_TIMEOUT, retrying, then the work goes to the next connection', async () => {
    vi.useFakeTimers(FAKE);
    const h = startClient({ heartbeatMs: HB, retry: { initialMs: 100, maxMs: 100 } });
    const conn = await h.connect();

    // A live server answers every ping: the link stays up however long it lasts.
    for (let i = 0; i < 5; i++) {
      await vi.advanceTimersByTimeAsync(HB);
      const ping = await conn.expect('ping');
      conn.reply({ type: 'pong', payload: ping.payload });
      await settle();
    }
    expect(h.value()).toEqual({ online: { connected: 'idle' } });

    // The server's process freezes: nothing it writes reaches the client any more.
    conn.transport.stall();
    h.actor.send({ type: 'message', id: 1, text: 'sent into the void' });
    await settle();
    const down = h.processed('link.down');
    await vi.advanceTimersByTimeAsync(2 * HB);
    // One interval to notice the silence and a second to be sure: still connected.
    expect(h.value()).toEqual({ online: { connected: 'idle' } });
    await vi.advanceTimersByTimeAsync(HB);
    await down;
    expect(h.value()).toBe('retrying');
    const retrying = await h.next('retrying');
    expect(retrying.error.code).toBe('E_TIMEOUT');
    expect(retrying.attempt).toBe(1);
    await conn.closed.promise;

    // The backoff passes; the message that was never acknowledged is sent again.
    await vi.advanceTimersByTimeAsync(100);
    const again = await h.connect();
    await again.expect('message-header');
    const message = await again.expect('message');
    expect(message).toMatchObject({ id: 1, text: 'sent into the void' });
    again.ack(1, 'sent into the void');
    expect(await h.next('replies')).toEqual({ type: 'replies', replies: [{ id: 1, text: 'sent into the void' }] });
  });

  it('with heartbeats off a silent server is never dropped', async () => {
    vi.useFakeTimers(FAKE);
    const h = startClient({ heartbeatMs: 0 });
    const conn = await h.connect();
    conn.transport.stall();
    await vi.advanceTimersByTimeAsync(100 * HB);
    expect(h.value()).toEqual({ online: { connected: 'idle' } });
    expect(conn.tokens.pending.filter((t) => t.type === 'ping')).toEqual([]);
  });
});

/** Starts a session machine over a memory pair with heartbeats, playing the client in the test. */
function startSession(opts: { heartbeatMs: number; store?: FileSink }) {
  const [serverEnd, clientEnd] = memoryPair();
  const logs: Record<string, unknown>[] = [];
  const processed = new AsyncQueue<string>();
  const log = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const { logic, input } = soloSession({
    id: 'session-1',
    transport: serverEnd,
    store: opts.store ?? new UploadStore({ root: tempDir() }),
    log,
    codecs: nativeAndLegacy(),
    timeouts: { handshakeMs: 3600_000, heartbeatMs: opts.heartbeatMs },
  });
  const actor: Actor<typeof sessionMachine> = createActor(logic, {
    input,
    inspect: (ev: InspectionEvent) => {
      if (ev.type === '@xstate.snapshot' && ev.actorRef === actor) processed.push(ev.event.type);
    },
  });
  sessions.push({ actor, clientEnd });
  actor.start();
  return {
    actor,
    clientEnd,
    logs,
    processed,
    active: () => actor.getSnapshot().status === 'active',
    disconnects: () => logs.filter((l) => l.event === 'disconnected'),
  };
}

describe('server heartbeat', () => {
  it('pings a native client and keeps it while it answers; drops it two silent intervals after its last byte, logging reason E_TIMEOUT', async () => {
    vi.useFakeTimers(FAKE);
    const s = startSession({ heartbeatMs: HB });
    const peer = new PeerClient(s.clientEnd);
    peer.hello();
    await peer.expect('welcome');

    for (let i = 0; i < 10; i++) {
      await vi.advanceTimersByTimeAsync(HB);
      const ping = await peer.expect('ping');
      peer.write(encode.pong(ping.payload));
      await settle();
    }
    expect(s.active()).toBe(true);

    // From here on the client says nothing. Its last byte arrived right after a tick.
    await vi.advanceTimersByTimeAsync(3 * HB - 1);
    expect(s.active()).toBe(true);
    expect(s.disconnects()).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    await settle();
    expect(s.active()).toBe(false);
    expect(s.disconnects()).toEqual([expect.objectContaining({ reason: 'E_TIMEOUT' })]);
    await within(peer.closed.promise, 'the client end to close');
  });

  it('a client silent from its hello on is dropped at the third tick, i.e. between two and three intervals', async () => {
    vi.useFakeTimers(FAKE);
    const s = startSession({ heartbeatMs: HB });
    const peer = new PeerClient(s.clientEnd);
    peer.hello();
    await peer.expect('welcome');
    await vi.advanceTimersByTimeAsync(2 * HB);
    expect(s.active()).toBe(true);
    // It was pinged on both ticks.
    expect((await peer.expect('ping')).type).toBe('ping');
    expect((await peer.expect('ping')).type).toBe('ping');
    await vi.advanceTimersByTimeAsync(HB);
    await settle();
    expect(s.active()).toBe(false);
    expect(s.disconnects()).toEqual([expect.objectContaining({ reason: 'E_TIMEOUT' })]);
  });

  it('never drops an original-format connection for silence, and sends it no pings', async () => {
    vi.useFakeTimers(FAKE);
    const s = startSession({ heartbeatMs: HB });
    const received: Buffer[] = [];
    s.clientEnd.on('data', (chunk) => void received.push(chunk));
    const hi = encodeLegacyMessage('hi');
    s.clientEnd.write(hi);
    await settle();
    // The original format acknowledges a message by echoing it.
    expect(Buffer.concat(received)).toEqual(hi);
    await vi.advanceTimersByTimeAsync(20 * HB);
    expect(s.active()).toBe(true);
    expect(s.disconnects()).toEqual([]);
    // Nothing but the echo was sent to it.
    expect(Buffer.concat(received)).toEqual(hi);
    const again = encodeLegacyMessage('still here');
    s.clientEnd.write(again);
    await settle();
    expect(Buffer.concat(received)).toEqual(Buffer.concat([hi, again]));
  });

  it('does not drop a client it is not reading from because the disk is behind, and the upload then completes', async () => {
    vi.useFakeTimers(FAKE);
    const store = new ControlledStore(new UploadStore({ root: tempDir() }));
    const s = startSession({ heartbeatMs: HB, store });
    const peer = new PeerClient(s.clientEnd);
    peer.hello();
    await peer.expect('welcome');

    const body = content(256 * 1024, 5);
    peer.write(encode.uploadOffer({ id: 1, name: 'slow-disk.bin', size: body.length }));
    expect(await peer.expect('upload-accept')).toMatchObject({ id: 1, offset: 0 });
    store.holdWrites = true;
    const busy = s.processed.next((t) => t === 'file.busy', 'the session to see disk backpressure');
    peer.data(body.subarray(0, 64 * 1024));
    await busy;
    // The rest waits in the transport: the client is blocked behind the server's pause, and silent.
    peer.data(body.subarray(64 * 1024));
    peer.write(encode.uploadEnd(1, sha256(body)));

    await vi.advanceTimersByTimeAsync(10 * HB);
    expect(s.active()).toBe(true);
    expect(s.disconnects()).toEqual([]);

    store.files[0]!.releaseDrain();
    const done = await peer.tokens.next((t) => t.type === 'upload-done', 'the upload to complete');
    expect(done).toMatchObject({ type: 'upload-done', result: { id: 1, bytes: body.length, sha256: sha256(body) } });
    expect(s.active()).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// Real sockets with short intervals.
// ---------------------------------------------------------------------------------------------

async function realServer(heartbeatMs: number) {
  const logs: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) });
  const server = createServer({ port: 0, uploadDir: path.join(tempDir(), 'upload'), logger, heartbeatMs });
  servers.push(server);
  const { port } = await server.listen();
  return { server, port, logs };
}

/** A raw socket that has said hello and been welcomed; it decodes what the server sends. */
async function rawNative(port: number) {
  const socket = net.connect({ host: '127.0.0.1', port });
  sockets.push(socket);
  socket.on('error', () => {});
  await once(socket, 'connect');
  const decoder = new ClientDecoder();
  const tokens = new AsyncQueue<ClientToken>();
  socket.on('data', (chunk: Buffer) => {
    for (const token of decoder.feed(chunk)) tokens.push(token);
  });
  socket.write(Buffer.concat([preamble(), encode.hello({ version: 1, agent: 'silent' })]));
  await tokens.next((t) => t.type === 'welcome', 'the welcome');
  return { socket, tokens, closed: once(socket, 'close') };
}

const WAIT = { timeout: 5_000, interval: 5 };

describe('heartbeats end to end', () => {
  it('a path that stops delivering the server’s bytes (without closing) is noticed by the client, which reconnects', async () => {
    const hb = 100;
    const { port: serverPort, logs } = await realServer(hb);
    const proxy = new FreezingProxy(serverPort);
    cleanups.push(() => proxy.close());
    const port = await proxy.listen();
    const client = createClient({ port, heartbeatMs: hb, retryInitialMs: 20, retryMaxMs: 50 });
    clients.push(client);
    const retrying = new AsyncQueue<{ code: string; at: number }>();
    client.actor.on('retrying', (e) => retrying.push({ code: e.error.code, at: performance.now() }));
    expect(await client.message('one')).toBe('one');

    const frozenAt = performance.now();
    proxy.links[0]!.holdDown = true;
    const first = await retrying.next(() => true, 'the client to give the connection up', 5_000);
    expect(first.code).toBe('E_TIMEOUT');
    // Its last sign of life came at most one interval before the freeze: two to three intervals of silence.
    expect(first.at - frozenAt).toBeGreaterThanOrEqual(hb);
    expect(first.at - frozenAt).toBeLessThan(3 * hb + 400);
    expect(await client.message('two')).toBe('two');
    expect(proxy.links).toHaveLength(2);
    // The server kept hearing the client's pings meanwhile: it did not time it out, the client left.
    await vi.waitFor(() => expect(logs.filter((l) => l.event === 'disconnected')).toHaveLength(1), WAIT);
    expect(logs.filter((l) => l.event === 'disconnected')[0]!.reason).not.toBe('E_TIMEOUT');
  });

  it('the server drops silent native clients after two intervals, while an idle original-format connection stays', async () => {
    const hb = 100;
    const { port, logs } = await realServer(hb);
    // An original client connects first and then idles for longer than both native clients below.
    const legacy = net.connect({ host: '127.0.0.1', port });
    sockets.push(legacy);
    legacy.on('error', () => {});
    await once(legacy, 'connect');
    let legacyBytes = '';
    legacy.on('data', (chunk: Buffer) => void (legacyBytes += chunk.toString('latin1')));
    legacy.write(encodeLegacyMessage('old'));
    await vi.waitFor(() => expect(legacyBytes).toBe('0000000003old'), WAIT);

    for (let i = 0; i < 2; i++) {
      const started = performance.now();
      const silent = await rawNative(port);
      await within(silent.closed, 'the server to drop the silent client', 5_000);
      const lasted = performance.now() - started;
      expect(lasted).toBeGreaterThanOrEqual(2 * hb - 10);
      expect(lasted).toBeLessThan(3 * hb + 400);
      expect(silent.tokens.all.filter((t) => t.type === 'ping').length).toBeGreaterThanOrEqual(2);
    }
    await vi.waitFor(() => expect(logs.filter((l) => l.event === 'disconnected')).toHaveLength(2), WAIT);
    for (const line of logs.filter((l) => l.event === 'disconnected')) expect(line.reason).toBe('E_TIMEOUT');

    expect(legacy.destroyed).toBe(false);
    legacy.write(encodeLegacyMessage('still here'));
    await vi.waitFor(() => expect(legacyBytes).toBe('0000000003old0000000010still here'), WAIT);
    expect(logs.filter((l) => l.event === 'disconnected')).toHaveLength(2);
  });
});

describe('backoff', () => {
  const retry: RetryPolicy = { initialMs: 100, maxMs: 5_000, forMs: undefined };

  it('backoffDelay: the ceiling doubles per attempt up to maxMs, and each delay lies in [ceiling/2, ceiling]', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2_000 }), fc.double({ min: 0, max: 1, noNaN: true }), (attempt, r) => {
        const ceiling = Math.min(retry.maxMs, retry.initialMs * 2 ** attempt);
        const delay = backoffDelay(retry, attempt, () => r);
        expect(Number.isInteger(delay)).toBe(true);
        expect(delay).toBeGreaterThanOrEqual(ceiling / 2);
        expect(delay).toBeLessThanOrEqual(ceiling);
      }),
    );
    const ceilings = Array.from({ length: 10 }, (_, n) => backoffDelay(retry, n, () => 1));
    expect(ceilings).toEqual([100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000, 5_000]);
    expect(backoffDelay(retry, Number.MAX_SAFE_INTEGER, () => 1)).toBe(5_000);
    // Jitter spreads clients apart: the same attempt with different random values gives different delays.
    expect(new Set([0, 0.25, 0.5, 0.75, 1].map((r) => backoffDelay(retry, 3, () => r))).size).toBe(5);
  });

  it('the client machine backs off exponentially while dials fail, and starts from the initial delay again after a connection worked', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(1);
    const h = startClient({ retry: { initialMs: 10, maxMs: 1_000 } }, (c) => {
      for (let i = 0; i < 4; i++) c.server.refusals.push(refused());
    });
    const delays: number[] = [];
    for (let i = 1; i <= 4; i++) {
      const r = await h.next('retrying');
      expect(r.attempt).toBe(i);
      delays.push(r.delayMs);
    }
    expect(delays).toEqual([10, 20, 40, 80]);
    const conn = await h.connect();
    expect(h.actor.getSnapshot().context.attempt).toBe(0);

    // The connection drops: the first retry waits the initial delay, not 160 ms.
    conn.transport.reset();
    const afterDrop = await h.next('retrying');
    expect(afterDrop).toMatchObject({ attempt: 1, delayMs: 10 });
    h.server.refusals.push(refused());
    expect(await h.next('retrying')).toMatchObject({ attempt: 2, delayMs: 20 });
    await h.connect();
    // Four refused, one connection, one refused after the drop, one connection.
    expect(h.server.dials).toBe(7);
  });
});
