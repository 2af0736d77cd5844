import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { NetTransport, dialNet } from '../transport/net-transport.js';
import type { Transport } from '../transport/transport.js';
import { next } from './helpers/transport-events.js';

/** Collects everything `t` receives until the peer ends. */
function readAll(t: Transport): Promise<Buffer> {
  const chunks: Buffer[] = [];
  t.on('data', (chunk) => chunks.push(chunk));
  return next(t, 'end').then(() => Buffer.concat(chunks));
}

const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A loopback server on an ephemeral port that hands each connection, wrapped, to `onTransport`. */
async function startServer(
  onTransport: (t: NetTransport) => void,
  host = '127.0.0.1',
): Promise<{ server: net.Server; port: number }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    onTransport(new NetTransport(socket));
  });
  server.listen(0, host);
  await once(server, 'listening');
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    server.close();
    await once(server, 'close');
  });
  return { server, port: (server.address() as net.AddressInfo).port };
}

async function dial(port: number, host = '127.0.0.1'): Promise<NetTransport> {
  const t = await dialNet({ host, port });
  cleanups.push(() => t.destroy());
  return t;
}

function echo(t: NetTransport): void {
  t.on('data', (chunk) => {
    if (!t.write(chunk)) t.pause();
  });
  t.on('drain', () => t.resume());
  t.on('end', () => t.end());
}

describe('NetTransport over loopback', () => {
  it('round-trips a payload through an echo server', async () => {
    const { port } = await startServer(echo);
    const client = await dial(port);
    const payload = Buffer.alloc(3 * 1024 * 1024 + 7);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 31) & 0xff;

    const received = readAll(client);
    const closed = next(client, 'close');
    for (let off = 0; off < payload.length; off += 64 * 1024) {
      if (!client.write(payload.subarray(off, off + 64 * 1024))) await next(client, 'drain');
    }
    client.end();
    expect((await received).equals(payload)).toBe(true);
    expect(await closed).toEqual([false]);
    expect(client.destroyed).toBe(true);
  });

  it('formats remote as host:port on both sides', async () => {
    let accepted!: (t: NetTransport) => void;
    const serverSide = new Promise<NetTransport>((resolve) => (accepted = resolve));
    const { port } = await startServer((t) => accepted(t));
    const client = await dial(port);
    expect(client.remote).toBe(`127.0.0.1:${port}`);
    expect((await serverSide).remote).toBe(`127.0.0.1:${client.socket.localPort}`);
  });

  it('brackets IPv6 addresses in remote', async (ctx) => {
    const probe = net.createServer();
    const ok = await new Promise<boolean>((resolve) => {
      probe.once('error', () => resolve(false));
      probe.listen(0, '::1', () => probe.close(() => resolve(true)));
    });
    if (!ok) ctx.skip();
    const { port } = await startServer(() => undefined, '::1');
    const client = await dial(port, '::1');
    expect(client.remote).toBe(`[::1]:${port}`);
  });

  it('keeps the remote after the socket is gone', async () => {
    const { port } = await startServer((t) => t.destroy());
    const client = await dial(port);
    client.on('data', () => undefined);
    await next(client, 'close');
    expect(client.remote).toBe(`127.0.0.1:${port}`);
  });

  it('emits close exactly once', async () => {
    const { port } = await startServer(echo);
    const client = await dial(port);
    const closes: boolean[] = [];
    client.on('close', (hadError) => closes.push(hadError));
    client.on('data', () => undefined);
    const closed = next(client, 'close');
    client.end();
    await closed;
    // A second close from the socket (or a late destroy) must not reach listeners.
    client.socket.emit('close', false);
    client.destroy();
    expect(closes).toEqual([false]);
  });

  it('reports destroy(err) as error then close(true)', async () => {
    const { port } = await startServer(() => undefined);
    const client = await dial(port);
    const events: string[] = [];
    client.on('error', (err) => events.push(`error:${err.message}`));
    client.on('close', (hadError) => events.push(`close(${hadError})`));
    const closed = next(client, 'close');
    client.destroy(new Error('boom'));
    expect(client.destroyed).toBe(true);
    await closed;
    expect(events).toEqual(['error:boom', 'close(true)']);
  });

  it('ignores writes after end()', async () => {
    const { port } = await startServer(echo);
    const client = await dial(port);
    const errors: Error[] = [];
    client.on('error', (err) => errors.push(err));
    client.on('data', () => undefined);
    const closed = next(client, 'close');
    client.end();
    expect(client.write(Buffer.from('late'))).toBe(false);
    expect(await closed).toEqual([false]);
    expect(errors).toEqual([]);
  });

  it('calls a write\'s done once the socket let go of the chunk, also for a write it ignored', async () => {
    const { port } = await startServer(echo);
    const client = await dial(port);
    const echoed = readAll(client);
    const calls: string[] = [];
    client.write(Buffer.from('first'), () => calls.push('first'));
    client.write(Buffer.from('second'), () => calls.push('second'));
    // Never inside write(): the caller may still be using the chunk.
    expect(calls).toEqual([]);
    await vi.waitFor(() => expect(calls).toEqual(['first', 'second']));
    client.end();
    expect(client.write(Buffer.from('late'), () => calls.push('late'))).toBe(false);
    expect(calls).toEqual(['first', 'second']);
    await vi.waitFor(() => expect(calls).toEqual(['first', 'second', 'late']));
    expect((await echoed).toString()).toBe('firstsecond');
  });

  it('keeps bytes that arrive before anyone listens', async () => {
    let written!: () => void;
    const flushed = new Promise<void>((resolve) => (written = resolve));
    const { port } = await startServer((t) => {
      t.socket.write('greeting', () => written());
      t.end();
    });
    const client = await dial(port);
    await flushed;
    // Several event-loop turns in which a socket that was already flowing would have read, and
    // with no listener lost, the greeting.
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    // Still open: the server's FIN, like its data, waits until someone reads.
    expect(client.destroyed).toBe(false);
    expect((await readAll(client)).toString()).toBe('greeting');
  });

  it('passes the socket buffers through untouched', async () => {
    const { port } = await startServer(() => undefined);
    const client = await dial(port);
    const seen: Buffer[] = [];
    client.on('data', (chunk) => seen.push(chunk));
    const buf = Buffer.from('as-is');
    client.socket.emit('data', buf);
    expect(seen[0]).toBe(buf);
  });

  it('sets TCP_NODELAY unless asked not to', () => {
    const a = new net.Socket();
    const spyA = vi.spyOn(a, 'setNoDelay');
    new NetTransport(a);
    expect(spyA).toHaveBeenCalledWith(true);
    const b = new net.Socket();
    const spyB = vi.spyOn(b, 'setNoDelay');
    new NetTransport(b, { noDelay: false });
    expect(spyB).not.toHaveBeenCalled();
    a.destroy();
    b.destroy();
  });
});

describe('dialNet', () => {
  it('rejects with ECONNREFUSED when nothing listens', async () => {
    const probe = net.createServer();
    probe.listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const { port } = probe.address() as net.AddressInfo;
    probe.close();
    await once(probe, 'close');
    await expect(dialNet({ host: '127.0.0.1', port })).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('rejects with AbortError when aborted while connecting', async () => {
    let accepted = 0;
    const { port } = await startServer(() => accepted++);
    const controller = new AbortController();
    const dialing = dialNet({ host: '127.0.0.1', port, signal: controller.signal });
    controller.abort();
    await expect(dialing).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    // A later dial still works, so the aborted attempt left nothing behind that breaks the server.
    const ok = await dial(port);
    expect(ok.destroyed).toBe(false);
  });

  it('rejects at once with an already aborted signal', async () => {
    const { port } = await startServer(() => undefined);
    const reason = new Error('gave up');
    await expect(dialNet({ host: '127.0.0.1', port, signal: AbortSignal.abort(reason) })).rejects.toMatchObject({
      name: 'AbortError',
      cause: reason,
    });
  });

  it('stops listening to the signal once connected', async () => {
    const { port } = await startServer(() => undefined);
    const controller = new AbortController();
    const client = await dialNet({ host: '127.0.0.1', port, signal: controller.signal, timeoutMs: 10_000 });
    cleanups.push(() => client.destroy());
    controller.abort();
    expect(client.destroyed).toBe(false);
    expect(client.socket.listenerCount('error')).toBe(1);
  });
});
