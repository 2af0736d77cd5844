/**
 * The sanitiser (apps/inspect/sanitize.ts): what it does to each kind of value, and, by property,
 * that whatever goes in, what comes out is plain JSON-safe data holding no planted secret.
 */
import fs from 'node:fs';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { createActor, createMachine } from 'xstate';
import { REDACTED, sanitize } from '../apps/inspect/sanitize.js';

const SECRET = 'tok-3f9a8c1d2e7b';

describe('sanitize', () => {
  it('summarises Buffers, typed arrays and ArrayBuffers instead of dumping them', () => {
    const out = sanitize({ chunk: Buffer.alloc(65536), view: new Uint8Array(12), raw: new ArrayBuffer(3), list: [Buffer.from('abc')] });
    expect(out).toEqual({ chunk: '<Buffer 65536 bytes>', view: '<Uint8Array 12 bytes>', raw: '<ArrayBuffer 3 bytes>', list: ['<Buffer 3 bytes>'] });
  });

  it('turns sockets, streams, loggers, transports and other class instances into their class name', () => {
    const socket = new net.Socket();
    const logger = pino({ level: 'silent' });
    class Store {
      root = '/secret/place';
    }
    const transportLike = { remote: '1.2.3.4:5', write: () => true, on: () => transportLike };
    const stream = fs.createReadStream(fileURLToPath(import.meta.url));
    const out = sanitize({ socket, stream, logger, child: logger.child({ a: 1 }), store: new Store(), transportLike, map: new Map([[1, 2]]), set: new Set([1]) });
    expect(out).toEqual({
      socket: '<Socket>',
      stream: '<ReadStream>',
      logger: '<Pino>',
      child: '<Pino>',
      store: '<Store>',
      transportLike: '<Object>',
      map: '<Map 1 entries>',
      set: '<Set 1 items>',
    });
    socket.destroy();
    stream.destroy();
  });

  it('drops functions and symbols, keeps plain data, arrays and Errors (without their stack)', () => {
    const error = Object.assign(new RangeError('too big'), { code: 'E_TOO_BIG' });
    const out = sanitize({ n: 1, ok: true, none: null, fn: () => 1, sym: Symbol('s'), list: [1, () => 2, 'x'], error, big: 10n, when: new Date(0) });
    expect(out).toEqual({ n: 1, ok: true, none: null, list: [1, 'x'], error: { name: 'RangeError', message: 'too big', code: 'E_TOO_BIG' }, big: '10', when: '1970-01-01T00:00:00.000Z' });
  });

  it('redacts strings equal to or containing a secret, and anything under secret-sounding keys', () => {
    const out = sanitize(
      {
        a: SECRET,
        b: `Bearer ${SECRET} here`,
        c: 'harmless',
        token: 'abc',
        password: 12345,
        Secret: { nested: true },
        key: 'k',
        apiKey: 'x',
        auth_token: 'y',
        keyframes: 'kept',
        tokens: 3,
        nothing: { token: undefined, password: null },
        [`path-${SECRET}`]: 1,
      },
      { secrets: [SECRET, ''] },
    );
    expect(out).toEqual({
      a: REDACTED,
      b: REDACTED,
      c: 'harmless',
      token: REDACTED,
      password: REDACTED,
      Secret: REDACTED,
      key: REDACTED,
      apiKey: REDACTED,
      auth_token: REDACTED,
      keyframes: 'kept',
      tokens: 3,
      nothing: { password: null },
      [REDACTED]: 1,
    });
    expect(JSON.stringify(out)).not.toContain(SECRET);
  });

  it('is cycle-safe and depth-, width- and length-limited', () => {
    const cyclic: Record<string, unknown> = { name: 'loop' };
    cyclic.self = cyclic;
    cyclic.list = [cyclic];
    expect(sanitize(cyclic)).toEqual({ name: 'loop', self: '[Circular]', list: ['[Circular]'] });

    const shared = { x: 1 };
    expect(sanitize({ a: shared, b: shared })).toEqual({ a: { x: 1 }, b: { x: 1 } });

    const deep = { l1: { l2: { l3: { l4: 'deep' } } }, arr: [[[1]]] };
    expect(sanitize(deep, { maxDepth: 2 })).toEqual({ l1: { l2: '[Object]' }, arr: ['[Array]'] });

    expect(sanitize(Array.from({ length: 5 }, (_, i) => i), { maxItems: 3 })).toEqual([0, 1, 2, '… 2 more items']);
    expect(sanitize({ a: 1, b: 2, c: 3 }, { maxItems: 2 })).toEqual({ a: 1, b: 2, '…': '1 more keys' });
    expect(sanitize('x'.repeat(1000), { maxString: 10 })).toBe(`${'x'.repeat(10)}… (1000 chars)`);
  });

  it('does not modify its input', () => {
    const input = { token: 'abc', data: Buffer.from('hi'), nested: { fn: () => 1 } };
    sanitize(input, { secrets: ['abc'] });
    expect(input.token).toBe('abc');
    expect(Buffer.isBuffer(input.data)).toBe(true);
    expect(typeof input.nested.fn).toBe('function');
  });

  it('reduces a machine snapshot to its JSON form (no machine, no functions) and actor refs to their id', () => {
    const child = createMachine({ id: 'child' });
    const machine = createMachine({ id: 'parent', context: { blob: Buffer.alloc(9) }, invoke: { id: 'kid', src: child } });
    const actor = createActor(machine).start();
    const out = sanitize(actor.getSnapshot()) as Record<string, unknown>;
    actor.stop();
    expect(out).toMatchObject({ status: 'active', value: {}, context: { blob: '<Buffer 9 bytes>' }, children: { kid: { id: 'kid' } } });
    expect(out).not.toHaveProperty('machine');
    expect(out).not.toHaveProperty('matches');
  });
});

// --- By shape alone ----------------------------------------------------------------------------

/** A second secret that is never passed in `secrets`: only its key may give it away. */
const KEYED = 'hidden-7c41e09b';

class Holder {
  constructor(readonly inside: unknown) {}
}

/** True if `value` is made only of what JSON has: null, booleans, numbers, strings, arrays, plain objects. */
function isPlainData(value: unknown): boolean {
  if (value === null || value === undefined) return true;
  switch (typeof value) {
    case 'boolean':
    case 'number':
    case 'string':
      return true;
    case 'object': {
      const proto: unknown = Object.getPrototypeOf(value);
      if (Array.isArray(value)) return proto === Array.prototype && value.every(isPlainData);
      return (proto === Object.prototype || proto === null) && Object.values(value).every(isPlainData);
    }
    default:
      return false;
  }
}

const socket = new net.Socket();
const stream = fs.createReadStream(fileURLToPath(import.meta.url));
const logger = pino({ level: 'silent' });
afterAll(() => {
  socket.destroy();
  stream.destroy();
});

/** Keys a secret may hide under: named like a secret (value not listed), containing one, or ordinary. */
const secretKey = fc.constantFrom('token', 'authToken', 'password', 'clientSecret', 'key', 'api_key', 'mac', 'nonce', 'hmacKey', 'Authorization');
const anyKey = fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom('__proto__', 'constructor', 'toJSON', 'type', `at-${SECRET}`, 'keyframes'));
/** Strings that may carry the listed secret anywhere in them. */
const text = fc.oneof(fc.string({ maxLength: 20 }), fc.tuple(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 })).map(([a, b]) => `${a}${SECRET}${b}`));

/** Anything at all: JSON values, odd primitives, handles, binary data, class instances, Errors, collections, with secrets planted. */
const { value: hostile } = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.oneof(text, fc.double(), fc.boolean(), fc.constant(null), fc.constant(undefined), fc.bigInt(), fc.constant(Symbol(SECRET))),
    fc.constantFrom<unknown>(socket, stream, logger, logger.child({ token: SECRET }), () => SECRET, new Map([[SECRET, KEYED]]), new Set([SECRET])),
    fc.nat({ max: 4096 }).map((size) => Buffer.alloc(size, SECRET)),
    fc.nat({ max: 64 }).map((size) => new Uint8Array(size)),
    text.map((message) => Object.assign(new Error(message), { token: KEYED, detail: message })),
    tie('value').map((inside) => new Holder(inside)),
    fc.date({ noInvalidDate: true }),
    fc.array(tie('value'), { maxLength: 5 }),
    fc.dictionary(anyKey, tie('value'), { maxKeys: 5 }),
    fc.tuple(secretKey, fc.oneof(fc.constant(KEYED), tie('value'))).map(([key, inside]) => ({ [key]: KEYED, nested: { [key]: inside } })),
  ),
}));

describe('sanitize, by shape', () => {
  it('knows no machine: any context is reduced by what its values are', () => {
    class Store {
      root = '/srv/upload';
    }
    const context = {
      settings: { host: '127.0.0.1', token: SECRET, store: new Store(), log: logger },
      nonce: 'f'.repeat(64),
      auth: { mac: 'a'.repeat(64), hmacKey: Buffer.alloc(32) },
      peer: { transport: socket, remote: '10.0.0.2:4000' },
      chunk: Buffer.alloc(16),
      onDone: () => undefined,
      machine: 'kept',
    };
    expect(sanitize(context)).toEqual({
      settings: { host: '127.0.0.1', token: REDACTED, store: '<Store>', log: '<Pino>' },
      nonce: REDACTED,
      auth: { mac: REDACTED, hmacKey: REDACTED },
      peer: { transport: '<Socket>', remote: '10.0.0.2:4000' },
      chunk: '<Buffer 16 bytes>',
      machine: 'kept',
    });
  });

  it('passes plain data through unchanged, whatever its keys (`__proto__` included)', () => {
    // Keys of one word with a digit are never secret-sounding; limits are lifted so nothing is cut.
    const key = fc.oneof(fc.stringMatching(/^[a-z]{1,6}[0-9]$/), fc.constant('__proto__'));
    const { value: plain } = fc.letrec<{ value: unknown }>((tie) => ({
      value: fc.oneof(
        { depthSize: 'small' },
        fc.oneof(fc.string(), fc.double({ noNaN: true }), fc.boolean(), fc.constant(null)),
        fc.array(tie('value'), { maxLength: 5 }),
        fc.dictionary(key, tie('value'), { maxKeys: 5, noNullPrototype: true }),
      ),
    }));
    fc.assert(
      fc.property(plain, (value) => {
        expect(sanitize(value, { maxDepth: 1_000, maxString: Infinity, maxItems: Infinity })).toStrictEqual(value);
      }),
      { numRuns: 500 },
    );
  });

  it('always returns plain, JSON-serialisable data without a planted secret, and leaves its input alone', () => {
    fc.assert(
      fc.property(hostile, fc.boolean(), (value, cyclic) => {
        const input: Record<string, unknown> = { value };
        if (cyclic) input.self = input;
        const before = JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));
        const out = sanitize(input, { secrets: [SECRET] });
        expect(isPlainData(out)).toBe(true);
        const json = JSON.stringify(out);
        expect(typeof json).toBe('string');
        expect(json).not.toContain(SECRET);
        expect(json).not.toContain(KEYED);
        expect(JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v))).toBe(before);
      }),
      { numRuns: 500 },
    );
  });
});
