/**
 * corkUntilLater (transport/corked-writer.ts): writes of one tick leave in one piece, every cork is
 * matched by one uncork, and the next tick corks afresh. A recording target with a hand-run
 * `later` pins down the calls; a memory transport and a real socket show the batching itself.
 */
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { corkUntilLater, type Corkable } from '../transport/corked-writer.js';
import { memoryPair } from '../transport/memory-transport.js';

function recorder(): Corkable & { calls: string[] } {
  const calls: string[] = [];
  return { calls, cork: () => calls.push('cork'), uncork: () => calls.push('uncork') };
}

/** A `later` that only runs what it was given when the test says so. */
function handRun() {
  const pending: (() => void)[] = [];
  return {
    later: (callback: () => void) => void pending.push(callback),
    pending,
    runAll: () => {
      for (const callback of pending.splice(0)) callback();
    },
  };
}

const closers: (() => void)[] = [];
afterEach(() => {
  for (const close of closers.splice(0)) close();
});

describe('corkUntilLater', () => {
  it('corks once however often it is called, and uncorks once when `later` runs', () => {
    const target = recorder();
    const clock = handRun();
    const hold = corkUntilLater(target, clock.later);
    expect(target.calls).toEqual([]); // creating it does nothing
    hold();
    hold();
    hold();
    expect(target.calls).toEqual(['cork']);
    expect(clock.pending).toHaveLength(1);
    clock.runAll();
    expect(target.calls).toEqual(['cork', 'uncork']);
  });

  it('corks afresh after the uncork', () => {
    const target = recorder();
    const clock = handRun();
    const hold = corkUntilLater(target, clock.later);
    hold();
    clock.runAll();
    hold();
    hold();
    clock.runAll();
    expect(target.calls).toEqual(['cork', 'uncork', 'cork', 'uncork']);
  });

  it('keeps separate targets apart', () => {
    const a = recorder();
    const b = recorder();
    const clock = handRun();
    const holdA = corkUntilLater(a, clock.later);
    const holdB = corkUntilLater(b, clock.later);
    holdA();
    holdB();
    holdA();
    expect([a.calls, b.calls]).toEqual([['cork'], ['cork']]);
    clock.runAll();
    expect([a.calls, b.calls]).toEqual([
      ['cork', 'uncork'],
      ['cork', 'uncork'],
    ]);
  });

  it('by default uncorks at the end of the tick: writes of one tick arrive as one chunk, the next tick as another', async () => {
    const [near, far] = memoryPair();
    const chunks: string[] = [];
    let arrived = 0;
    const gotTwo = new Promise<void>((resolve) =>
      far.on('data', (chunk: Buffer) => {
        chunks.push(chunk.toString());
        if (++arrived === 2) resolve();
      }),
    );
    const hold = corkUntilLater(near);
    for (const text of ['a', 'b', 'c']) {
      hold();
      near.write(Buffer.from(text));
    }
    await new Promise<void>((resolve) => process.nextTick(resolve));
    hold();
    near.write(Buffer.from('d'));
    hold();
    near.write(Buffer.from('e'));
    await gotTwo;
    expect(chunks).toEqual(['abc', 'de']);
  });

  it.each([
    ['the end of the tick (default)', 3, undefined],
    ['setImmediate', 1, setImmediate],
  ] as const)('on a real socket, with %s, writes from ticks that follow each other are corked %i time(s)', async (_what, corks, later) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    closers.push(() => server.close());
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    closers.push(() => client.destroy());
    await once(client, 'connect');
    const [peer] = await accepted;
    closers.push(() => peer.destroy());

    let received = '';
    const all = new Promise<void>((resolve) => {
      peer.setEncoding('utf8').on('data', (text: string) => {
        received += text;
        if (received.length === 3) resolve();
      });
    });
    let corked = 0;
    const counted: Corkable = {
      cork: () => {
        corked++;
        client.cork();
      },
      uncork: () => client.uncork(),
    };
    const hold = corkUntilLater(counted, later);
    const writes: number[] = [];
    const write = (text: string) => {
      hold();
      writes.push(client.writableCorked);
      client.write(text);
    };
    write('x');
    process.nextTick(() => {
      write('y');
      process.nextTick(() => write('z'));
    });
    await all;
    expect(writes).toEqual([1, 1, 1]); // every write was held back
    expect(corked).toBe(corks);
    expect(received).toBe('xyz');
    expect(client.writableCorked).toBe(0);
  });
});
