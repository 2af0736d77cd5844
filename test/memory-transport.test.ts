import { describe, expect, it } from 'vitest';
import { memoryPair } from '../transport/memory-transport.js';
import type { Transport } from '../transport/transport.js';
import { next } from './helpers/transport-events.js';

/** Records every event on `t`, in order. */
function record(t: Transport): { log: string[]; chunks: Buffer[]; errors: Error[] } {
  const out = { log: [] as string[], chunks: [] as Buffer[], errors: [] as Error[] };
  t.on('data', (chunk) => {
    out.log.push('data');
    out.chunks.push(chunk);
  });
  t.on('drain', () => out.log.push('drain'));
  t.on('end', () => out.log.push('end'));
  t.on('error', (err) => {
    out.log.push('error');
    out.errors.push(err);
  });
  t.on('close', (hadError) => out.log.push(`close(${hadError})`));
  return out;
}

/**
 * Delivery happens in microtasks, so once a macrotask turn has passed everything deliverable has
 * been delivered. Used only to show that something did NOT arrive.
 */
function afterMicrotasks(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

function receive(t: Transport, bytes: number): Promise<Buffer[]> {
  const chunks: Buffer[] = [];
  let total = 0;
  return new Promise((resolve) => {
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      total += chunk.length;
      if (total >= bytes) {
        t.off('data', onData);
        resolve(chunks);
      }
    };
    t.on('data', onData);
  });
}

const sample = Buffer.from(Array.from({ length: 61 }, (_, i) => (i * 37 + 11) & 0xff));
const writes = [sample.subarray(0, 1), sample.subarray(1, 14), sample.subarray(14, 15), sample.subarray(15)];

describe('memoryPair delivery', () => {
  for (let splitAt = 1; splitAt <= 7; splitAt++) {
    it(`delivers every byte in order with splitAt=${splitAt}`, async () => {
      const [a, b] = memoryPair({ splitAt });
      const got = receive(b, sample.length);
      for (const w of writes) a.write(w);
      const chunks = await got;
      expect(Buffer.concat(chunks)).toEqual(sample);
      for (const c of chunks) expect(c.length).toBeLessThanOrEqual(splitAt);
      // Pieces never span two writes.
      const expectedPieces = writes.reduce((n, w) => n + Math.ceil(w.length / splitAt), 0);
      expect(chunks).toHaveLength(expectedPieces);
      expect(a.writtenBytes).toBe(sample.length);
      expect(b.receivedBytes).toBe(sample.length);
      expect(a.writableLength).toBe(0);
    });
  }

  it('delivers each write whole without splitAt, and per end once split is set', async () => {
    const [a, b] = memoryPair();
    const first = receive(b, 20);
    a.write(sample.subarray(0, 20));
    expect((await first).map((c) => c.length)).toEqual([20]);

    b.split = 3;
    const back = receive(a, 7);
    b.write(sample.subarray(0, 7));
    expect((await back).map((c) => c.length)).toEqual([3, 3, 1]);
    expect(() => {
      a.split = 0;
    }).toThrow(RangeError);
  });

  it('never delivers inside write()', async () => {
    const [a, b] = memoryPair();
    const seen = record(b);
    a.write(Buffer.from('hi'));
    expect(seen.chunks).toHaveLength(0);
    await afterMicrotasks();
    expect(Buffer.concat(seen.chunks).toString()).toBe('hi');
  });

  it('copies written bytes, so the writer may reuse its buffer', async () => {
    const [a, b] = memoryPair();
    const got = receive(b, 3);
    const buf = Buffer.from('abc');
    let released = false;
    a.write(buf, () => (released = true));
    // Copied at once, so released right after write() returns, never inside it.
    expect(released).toBe(false);
    await Promise.resolve();
    expect(released).toBe(true);
    buf.fill(0);
    expect(Buffer.concat(await got).toString()).toBe('abc');
  });

  it('buffers data written before the peer listens', async () => {
    const [a, b] = memoryPair();
    a.write(Buffer.from('early'));
    await afterMicrotasks();
    expect(a.writableLength).toBe(5);
    expect(Buffer.concat(await receive(b, 5)).toString()).toBe('early');
    expect(a.writableLength).toBe(0);
  });

  it('batches corked writes into one chunk', async () => {
    const [a, b] = memoryPair();
    const seen = record(b);
    a.cork();
    a.write(Buffer.from('head'));
    a.write(Buffer.from('body'));
    expect(a.writableLength).toBe(8);
    await afterMicrotasks();
    expect(seen.chunks).toHaveLength(0);
    a.uncork();
    await afterMicrotasks();
    expect(seen.chunks.map((c) => c.toString())).toEqual(['headbody']);
  });

  it('names the peer in remote', () => {
    const [a, b] = memoryPair();
    expect(a.remote).toMatch(/^memory:\d+$/);
    expect(b.remote).toMatch(/^memory:\d+$/);
    expect(a.remote).not.toBe(b.remote);
  });
});

describe('memoryPair flow control', () => {
  it('pause() holds bytes back and resume() delivers them in order', async () => {
    const [a, b] = memoryPair({ splitAt: 2 });
    const seen = record(b);
    b.pause();
    a.write(Buffer.from('abcdef'));
    await afterMicrotasks();
    expect(seen.chunks).toHaveLength(0);
    expect(a.writableLength).toBe(6);
    b.resume();
    await afterMicrotasks();
    expect(seen.chunks.map((c) => c.toString())).toEqual(['ab', 'cd', 'ef']);
  });

  it('pausing inside a data listener stops the next piece', async () => {
    const [a, b] = memoryPair({ splitAt: 1 });
    const chunks: string[] = [];
    b.on('data', (c) => {
      chunks.push(c.toString());
      b.pause();
    });
    a.write(Buffer.from('xyz'));
    await afterMicrotasks();
    expect(chunks).toEqual(['x']);
    b.resume();
    await afterMicrotasks();
    expect(chunks).toEqual(['x', 'y']);
  });

  it('write() returns false above the high-water mark and drain follows delivery', async () => {
    const [a, b] = memoryPair({ highWaterMark: 16 });
    const seen = record(b);
    const writer = record(a);
    b.pause();
    expect(a.write(Buffer.alloc(10))).toBe(true);
    expect(a.write(Buffer.alloc(6))).toBe(true);
    expect(a.write(Buffer.alloc(1))).toBe(false);
    expect(a.writableLength).toBe(17);
    await afterMicrotasks();
    expect(writer.log).not.toContain('drain');

    const drained = next(a, 'drain');
    b.resume();
    await drained;
    expect(a.writableLength).toBe(0);
    expect(b.receivedBytes).toBe(17);
    expect(seen.chunks).toHaveLength(3);
    expect(writer.log.filter((e) => e === 'drain')).toHaveLength(1);
  });

  it('does not emit drain when write() never returned false', async () => {
    const [a, b] = memoryPair({ highWaterMark: 16 });
    const writer = record(a);
    const got = receive(b, 4);
    a.write(Buffer.alloc(4));
    await got;
    await afterMicrotasks();
    expect(writer.log).toEqual([]);
  });

  it('stall() freezes the peer until unstall(), whatever the peer does', async () => {
    const [a, b] = memoryPair({ highWaterMark: 8 });
    const seen = record(b);
    a.stall();
    expect(a.write(Buffer.from('0123456789'))).toBe(false);
    b.resume();
    await afterMicrotasks();
    expect(seen.chunks).toHaveLength(0);
    expect(a.writableLength).toBe(10);
    expect(a.destroyed).toBe(false);

    // The other direction keeps working: only a's peer stopped receiving.
    const back = receive(a, 4);
    b.write(Buffer.from('pong'));
    expect(Buffer.concat(await back).toString()).toBe('pong');

    const drained = next(a, 'drain');
    a.unstall();
    await drained;
    expect(Buffer.concat(seen.chunks).toString()).toBe('0123456789');
  });
});

describe('memoryPair closing', () => {
  it('reset() gives ECONNRESET then close(true) on both ends and drops queued data', async () => {
    const [a, b] = memoryPair();
    const sa = record(a);
    const sb = record(b);
    const closedA = next(a, 'close');
    const closedB = next(b, 'close');
    a.write(Buffer.from('lost'));
    b.write(Buffer.from('lost too'));
    a.reset();
    expect(a.destroyed).toBe(true);
    expect(b.destroyed).toBe(true);
    expect(await closedA).toEqual([true]);
    expect(await closedB).toEqual([true]);
    expect(sa.log).toEqual(['error', 'close(true)']);
    expect(sb.log).toEqual(['error', 'close(true)']);
    expect(sa.errors[0]).toMatchObject({ code: 'ECONNRESET' });
    expect(sb.errors[0]).toMatchObject({ code: 'ECONNRESET' });
    expect(a.write(Buffer.from('x'))).toBe(false);
    expect(b.write(Buffer.from('x'))).toBe(false);
  });

  it('half-closes: the peer gets end after the data, may reply, then both close', async () => {
    const [a, b] = memoryPair({ splitAt: 3 });
    const sa = record(a);
    const sb = record(b);
    a.write(Buffer.from('request'));
    a.end();
    expect(a.write(Buffer.from('late'))).toBe(false);
    expect(a.writtenBytes).toBe(7);
    await next(b, 'end');
    expect(Buffer.concat(sb.chunks).toString()).toBe('request');
    expect(sb.log.at(-1)).toBe('end');
    expect(a.destroyed).toBe(false);

    b.write(Buffer.from('reply'));
    const closedA = next(a, 'close');
    const closedB = next(b, 'close');
    b.end();
    expect(await closedA).toEqual([false]);
    expect(await closedB).toEqual([false]);
    expect(Buffer.concat(sa.chunks).toString()).toBe('reply');
    expect(sa.log.slice(-2)).toEqual(['end', 'close(false)']);
    expect(sb.log.slice(-2)).toEqual(['end', 'close(false)']);
    expect(sb.log.filter((e) => e === 'end')).toHaveLength(1);
  });

  it('half-closes the other way round, and end waits for a paused reader', async () => {
    const [a, b] = memoryPair();
    const sa = record(a);
    a.pause();
    b.write(Buffer.from('first'));
    b.end();
    await afterMicrotasks();
    expect(sa.log).toEqual([]);
    a.resume();
    await next(a, 'end');
    expect(sa.log).toEqual(['data', 'end']);
    const closed = next(b, 'close');
    a.end();
    expect(await closed).toEqual([false]);
    expect(a.destroyed).toBe(true);
  });

  it('destroy() closes this end at once; the peer sees data, end, close(false)', async () => {
    const [a, b] = memoryPair();
    const sa = record(a);
    const sb = record(b);
    b.pause();
    a.write(Buffer.from('last words'));
    a.pause();
    b.write(Buffer.from('unheard'));
    a.destroy();
    expect(a.destroyed).toBe(true);
    expect(a.write(Buffer.from('x'))).toBe(false);
    await next(a, 'close');
    expect(sa.log).toEqual(['close(false)']);

    const closedB = next(b, 'close');
    b.resume();
    expect(await closedB).toEqual([false]);
    expect(sb.log).toEqual(['data', 'end', 'close(false)']);
    expect(Buffer.concat(sb.chunks).toString()).toBe('last words');
  });

  it('destroy(err) emits the error then close(true) on this end only', async () => {
    const [a, b] = memoryPair();
    const sa = record(a);
    const sb = record(b);
    const boom = new Error('boom');
    const closedB = next(b, 'close');
    a.destroy(boom);
    await closedB;
    await afterMicrotasks();
    expect(sa.log).toEqual(['error', 'close(true)']);
    expect(sa.errors[0]).toBe(boom);
    expect(sb.log).toEqual(['end', 'close(false)']);
  });

  it('destroy() after the peer already got our end still closes the peer', async () => {
    const [a, b] = memoryPair();
    const sb = record(b);
    a.end();
    await next(b, 'end');
    const closedB = next(b, 'close');
    a.destroy();
    expect(await closedB).toEqual([false]);
    expect(sb.log).toEqual(['end', 'close(false)']);
  });

  it('emits close exactly once per end', async () => {
    const [a, b] = memoryPair();
    const sa = record(a);
    const sb = record(b);
    a.end();
    b.end();
    await Promise.all([next(a, 'close'), next(b, 'close')]);
    a.destroy();
    b.reset();
    a.end();
    await afterMicrotasks();
    expect(sa.log.filter((e) => e.startsWith('close'))).toEqual(['close(false)']);
    expect(sb.log.filter((e) => e.startsWith('close'))).toEqual(['close(false)']);
    expect(sa.errors).toHaveLength(0);
  });
});
