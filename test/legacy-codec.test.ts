import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { bytewise, feedAll, normalise, plain, splitAt } from './helpers/tokens.js';
import { caught, expectProtocolError } from './helpers/errors.js';
import { ErrorCodes, ProtocolError, type ErrorCode } from '../transport/errors.js';
import { DEFAULT_LIMITS, type ServerToken, type UploadResultInfo } from '../transport/frames.js';
import {
  LEGACY_EXIT_COMMAND,
  LEGACY_FILE_COMMAND,
  LegacyClientDecoder,
  LegacyServerDecoder,
  encodeLegacyFileHeader,
  encodeLegacyMessage,
  legacyNameFits,
  legacyReplies,
  type LegacyLimits,
} from '../transport/legacy-codec.js';

// Every byte fixture below is written by hand from /work/shared/LEGACY-WIRE.md, never with the encoders under test.

// ---------------------------------------------------------------------------------------------
// Helpers

const LIMITS: LegacyLimits = { ...DEFAULT_LIMITS };
const HELLO: ServerToken = { type: 'hello', info: { version: 0, agent: 'original' } };

function b(text: string): Buffer {
  return Buffer.from(text, 'utf8');
}

function cat(...parts: (Buffer | string)[]): Buffer {
  return Buffer.concat(parts.map((p) => (typeof p === 'string' ? b(p) : p)));
}

/** Whole, one byte at a time, and cut in two at every point. */
function chunkings(buf: Buffer): { label: string; chunks: Buffer[] }[] {
  const out = [
    { label: 'whole', chunks: [buf] },
    { label: 'bytewise', chunks: bytewise(buf) },
  ];
  for (let i = 1; i < buf.length; i++) out.push({ label: `split at ${i}`, chunks: splitAt(buf, [i]) });
  return out;
}

/** Feeds `stream` every way and expects the same tokens each time; also that the decoder ends idle. */
function expectDecodesEveryWay(stream: Buffer, expected: readonly ServerToken[], limits: LegacyLimits = LIMITS): void {
  const want = normalise(expected);
  for (const { label, chunks } of chunkings(stream)) {
    const decoder = new LegacyServerDecoder(limits);
    const got = normalise(feedAll(decoder, chunks));
    expect(got, label).toEqual(want);
    expect(decoder.idle, label).toBe(true);
  }
}

/**
 * Feeds `stream` every way and expects a ProtocolError with `code`, thrown no earlier than the feed
 * that delivers byte `failsAt` (0-based index of the first byte that makes the stream unacceptable)
 * and no later; afterwards further feeds keep throwing the same error.
 */
function expectFailsEveryWay(stream: Buffer, code: ErrorCode, failsAt: number, limits: LegacyLimits = LIMITS): void {
  for (const { label, chunks } of chunkings(stream)) {
    const decoder = new LegacyServerDecoder(limits);
    let consumed = 0;
    let error: unknown;
    for (const chunk of chunks) {
      const before = consumed;
      consumed += chunk.length;
      try {
        decoder.feed(chunk);
      } catch (err) {
        error = err;
        // The feed that threw carried the offending byte.
        expect(before <= failsAt && failsAt < consumed, `${label}: threw on bytes ${before}..${consumed - 1}`).toBe(true);
        break;
      }
      expect(consumed <= failsAt, `${label}: no throw after byte ${failsAt}`).toBe(true);
    }
    const first = expectProtocolError(error, code);
    expect(caught(() => decoder.feed(b('0000000001a'))), label).toBe(first);
    expect(caught(() => decoder.feed(Buffer.alloc(0))), label).toBe(first);
  }
}

function message(id: number, header: string, text: string, length: number): ServerToken[] {
  return [
    { type: 'message-header', length },
    { type: 'message', id, text, raw: cat(header, text) },
  ];
}

function file(id: number, name: string, body: Buffer): ServerToken[] {
  const out: ServerToken[] = [{ type: 'upload-offer', offer: { id, name, size: body.length } }];
  if (body.length > 0) out.push({ type: 'data', chunk: body });
  out.push({ type: 'upload-end', id });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Server side: messages

describe('LegacyServerDecoder: messages', () => {
  it('decodes an ASCII message, with its header token first and raw equal to the bytes received', () => {
    expectDecodesEveryWay(b('0000000005hello'), [HELLO, ...message(1, '0000000005', 'hello', 5)]);
  });

  it('counts code points, not bytes, for Cyrillic text', () => {
    const stream = Buffer.from([...b('0000000004'), 0xd1, 0x84, 0xd0, 0xbe, 0xd1, 0x82, 0xd0, 0xbe]);
    expect(stream.length).toBe(18);
    expectDecodesEveryWay(stream, [
      HELLO,
      { type: 'message-header', length: 4 },
      { type: 'message', id: 1, text: 'фото', raw: stream },
    ]);
  });

  it('counts an emoji (4 bytes) as one character', () => {
    const stream = Buffer.from([...b('0000000001'), 0xf0, 0x9f, 0x98, 0x80]);
    expectDecodesEveryWay(stream, [
      HELLO,
      { type: 'message-header', length: 1 },
      { type: 'message', id: 1, text: '😀', raw: stream },
    ]);
  });

  it('decodes an empty message', () => {
    expectDecodesEveryWay(b('0000000000'), [HELLO, ...message(1, '0000000000', '', 0)]);
  });

  it('decodes several messages back to back, numbering them in order', () => {
    const stream = b('0000000002hi0000000000000000000400\u00e9x0000000003a😀b0000000001\u0000');
    expectDecodesEveryWay(stream, [
      HELLO,
      ...message(1, '0000000002', 'hi', 2),
      ...message(2, '0000000000', '', 0),
      ...message(3, '0000000004', '00\u00e9x', 4),
      ...message(4, '0000000003', 'a😀b', 3),
      ...message(5, '0000000001', '\u0000', 1),
    ]);
  });

  it('keeps a byte order mark in the text and in raw', () => {
    const stream = Buffer.from([...b('0000000002'), 0xef, 0xbb, 0xbf, 0x41]);
    expectDecodesEveryWay(stream, [
      HELLO,
      { type: 'message-header', length: 2 },
      { type: 'message', id: 1, text: '\ufeffA', raw: stream },
    ]);
  });

  it('accepts a header exactly at the message limit', () => {
    const text = 'x'.repeat(100);
    expectDecodesEveryWay(b(`0000000100${text}`), [HELLO, ...message(1, '0000000100', text, 100)], { maxMessage: 100, maxFrame: 0 });
  });

  it('gives raw as its own bytes, unaffected by later reuse of the fed buffer', () => {
    const chunk = b('0000000003abc');
    const decoder = new LegacyServerDecoder(LIMITS);
    const tokens = decoder.feed(chunk);
    chunk.fill(0x21);
    const msg = tokens.find((t) => t.type === 'message');
    expect(plain(msg)).toEqual(plain({ type: 'message', id: 1, text: 'abc', raw: b('0000000003abc') }));
  });
});

// ---------------------------------------------------------------------------------------------
// Server side: files, exit, hello, idle

describe('LegacyServerDecoder: files and exit', () => {
  it('decodes a file: offer, data, end', () => {
    const stream = b('file0000000005               a.txthello');
    expect(stream.length).toBe(4 + 10 + 20 + 5);
    expectDecodesEveryWay(stream, [HELLO, ...file(1, 'a.txt', b('hello'))]);
  });

  it('decodes a zero-byte file: offer then end, with no data', () => {
    expectDecodesEveryWay(b('file0000000000               empty'), [
      HELLO,
      { type: 'upload-offer', offer: { id: 1, name: 'empty', size: 0 } },
      { type: 'upload-end', id: 1 },
    ]);
  });

  it('decodes a name of exactly 20 characters (no padding)', () => {
    const name = 'abcdefghijklmnop.jpg';
    expect(name.length).toBe(20);
    expectDecodesEveryWay(b(`file0000000003${name}xyz`), [HELLO, ...file(1, name, b('xyz'))]);
  });

  it('strips spaces from both ends of the name field, keeping inner ones', () => {
    expectDecodesEveryWay(b('file0000000001      my photo.jpg  Z'), [HELLO, ...file(1, 'my photo.jpg', b('Z'))]);
  });

  it('decodes a non-ASCII name that fits in 20 bytes', () => {
    // 'фото.jpg' is 12 bytes, so 8 spaces pad it.
    expectDecodesEveryWay(b('file0000000001        фото.jpg\u0001'), [HELLO, ...file(1, 'фото.jpg', Buffer.from([1]))]);
  });

  it('passes file bytes through untouched, including bytes that look like commands or are not UTF-8', () => {
    const body = Buffer.from([...b('exit0000'), 0xff, 0x00, 0xc0, ...b('file')]);
    const stream = cat('file0000000015', '          binary.bin', body);
    expectDecodesEveryWay(stream, [HELLO, ...file(1, 'binary.bin', body)]);
  });

  it('decodes a file followed by a message, and a message followed by a file', () => {
    const stream = b('file0000000005               a.txthello0000000003ok!0000000002hifile0000000000                   b');
    expectDecodesEveryWay(stream, [
      HELLO,
      ...file(1, 'a.txt', b('hello')),
      ...message(2, '0000000003', 'ok!', 3),
      ...message(3, '0000000002', 'hi', 2),
      ...file(4, 'b', Buffer.alloc(0)),
    ]);
  });

  it('accepts a file exactly at maxFile', () => {
    expectDecodesEveryWay(b('file0000000004                   cdata'), [HELLO, ...file(1, 'c', b('data'))], { ...LIMITS, maxFile: 4 });
  });

  it('turns exit into a bye token', () => {
    expectDecodesEveryWay(b('exit'), [HELLO, { type: 'bye' }]);
  });

  it('decodes a mixed conversation ending in exit', () => {
    const stream = b(`0000000005hellofile0000000002${' '.repeat(15)}x.pngAB0000000001😀exit`);
    expectDecodesEveryWay(stream, [
      HELLO,
      ...message(1, '0000000005', 'hello', 5),
      ...file(2, 'x.png', b('AB')),
      ...message(3, '0000000001', '😀', 1),
      { type: 'bye' },
    ]);
  });

  it('says hello just before the first readable command, and never again', () => {
    const decoder = new LegacyServerDecoder(LIMITS);
    // A byte or two is not yet a command: no hello, so the handshake timeout still applies.
    expect(decoder.feed(Buffer.alloc(0))).toEqual([]);
    expect(decoder.feed(b('00000'))).toEqual([]);
    expect(plain(decoder.feed(b('00001a')))).toEqual(plain([HELLO, ...message(1, '0000000001', 'a', 1)]));
    expect(decoder.feed(Buffer.alloc(0))).toEqual([]);
    expect(plain(decoder.feed(b('0000000001b')))).toEqual(plain(message(2, '0000000001', 'b', 1)));

    const other = new LegacyServerDecoder(LIMITS);
    expect(other.feed(b('e'))).toEqual([]);
    expect(plain(other.feed(b('xit')))).toEqual(plain([HELLO, { type: 'bye' }]));
  });

  it('is idle only between commands', () => {
    const stream = b('0000000002hifile0000000003                 abcxyzexit0000000000');
    // Offsets just after which a command is complete.
    const ends = new Set([0, 12, 12 + 4 + 10 + 20 + 3, 12 + 37 + 4, 12 + 37 + 4 + 10]);
    expect(stream.length).toBe(12 + 37 + 4 + 10);
    const decoder = new LegacyServerDecoder(LIMITS);
    expect(decoder.idle).toBe(true);
    for (let i = 0; i < stream.length; i++) {
      decoder.feed(stream.subarray(i, i + 1));
      expect(decoder.idle, `after byte ${i}`).toBe(ends.has(i + 1));
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Server side: broken input

describe('LegacyServerDecoder: broken input', () => {
  it('refuses a header with a non-digit (E_BAD_FRAME) once the 10 header bytes are in', () => {
    expectFailsEveryWay(b('00000x0005hi'), 'E_BAD_FRAME', 9);
  });

  it('refuses a file size with a non-digit (E_BAD_FRAME)', () => {
    expectFailsEveryWay(b('file00000 0005               a.txthello'), 'E_BAD_FRAME', 13);
  });

  it('refuses a message longer than the limit on the feed that completes the header, before any text', () => {
    const limits = { maxMessage: 100, maxFrame: 0 };
    expectFailsEveryWay(b(`0000000101${'x'.repeat(101)}`), 'E_MESSAGE_TOO_LARGE', 9, limits);
    const decoder = new LegacyServerDecoder(limits);
    expect(decoder.feed(b('000000010'))).toEqual([]);
    expect(decoder.idle).toBe(false);
    expectProtocolError(caught(() => decoder.feed(b('1'))), 'E_MESSAGE_TOO_LARGE');
  });

  it('refuses a giant header immediately with the default limits', () => {
    const decoder = new LegacyServerDecoder(LIMITS);
    expectProtocolError(caught(() => decoder.feed(b('9999999999'))), 'E_MESSAGE_TOO_LARGE');
    expectFailsEveryWay(b('9999999999'), 'E_MESSAGE_TOO_LARGE', 9);
  });

  it('refuses a file larger than maxFile when the size is read, before the name', () => {
    const limits = { ...LIMITS, maxFile: 4 };
    expectFailsEveryWay(b('file0000000005               a.txthello'), 'E_FILE_TOO_LARGE', 13, limits);
    const decoder = new LegacyServerDecoder(limits);
    expectProtocolError(caught(() => decoder.feed(b('file0000000005'))), 'E_FILE_TOO_LARGE');
  });

  it('refuses a misspelt file or exit command (E_BAD_FRAME)', () => {
    expectFailsEveryWay(b('fil30000000005               a.txthello'), 'E_BAD_FRAME', 3);
    expectFailsEveryWay(b('exiT'), 'E_BAD_FRAME', 3);
    expectFailsEveryWay(b('0000000001aexiT'), 'E_BAD_FRAME', 14);
  });

  it('refuses an unknown first byte of a command (E_BAD_FRAME)', () => {
    expectFailsEveryWay(b('X'), 'E_BAD_FRAME', 0);
    expectFailsEveryWay(b('Xfile'), 'E_BAD_FRAME', 0);
    expectFailsEveryWay(b('0000000002hi '), 'E_BAD_FRAME', 12);
    expectFailsEveryWay(b('exitE'), 'E_BAD_FRAME', 4);
    expectFailsEveryWay(Buffer.from([0xf0, 0x46, 0x45, 0x52, 0x52, 0x59]), 'E_BAD_FRAME', 0);
  });

  it('refuses invalid UTF-8 in a message (E_BAD_UTF8)', () => {
    // A lone continuation byte.
    expectFailsEveryWay(Buffer.from([...b('0000000002a'), 0x80]), 'E_BAD_UTF8', 11);
    // A lead byte that can never start a sequence.
    expectFailsEveryWay(Buffer.from([...b('0000000001'), 0xff]), 'E_BAD_UTF8', 10);
    // A two-byte lead followed by an ASCII byte.
    expectFailsEveryWay(Buffer.from([...b('0000000002'), 0xd1, 0x41]), 'E_BAD_UTF8', 11);
    // An overlong encoding of '/', and an encoded surrogate: well-shaped bytes that are still not UTF-8.
    expectFailsEveryWay(Buffer.from([...b('0000000001'), 0xe0, 0x80, 0xaf]), 'E_BAD_UTF8', 12);
    expectFailsEveryWay(Buffer.from([...b('0000000001'), 0xed, 0xa0, 0x80]), 'E_BAD_UTF8', 12);
  });

  it('refuses a name whose 20-byte field cuts a multi-byte character (E_BAD_NAME)', () => {
    // The original client sends a 21-byte name unpadded: 19 ASCII characters and 'ф' (0xd1 0x84).
    const name = 'abcdefghijklmnopqrs';
    expect(name.length).toBe(19);
    const stream = cat('file0000000003', name, 'ф', 'xyz');
    expectFailsEveryWay(stream, 'E_BAD_NAME', 33);
  });

  it('refuses an all-space name (E_BAD_NAME)', () => {
    expectFailsEveryWay(b(`file0000000002${' '.repeat(20)}hi`), 'E_BAD_NAME', 33);
    expectFailsEveryWay(b(`file0000000000${' '.repeat(20)}`), 'E_BAD_NAME', 33);
  });

  it('keeps throwing the same error after a failure, and reports no tokens from the failing feed', () => {
    const decoder = new LegacyServerDecoder(LIMITS);
    expect(plain(decoder.feed(b('0000000002hi')))).toEqual(plain([HELLO, ...message(1, '0000000002', 'hi', 2)]));
    const first = expectProtocolError(caught(() => decoder.feed(b('0000000001aX'))), 'E_BAD_FRAME');
    expect(caught(() => decoder.feed(b('0000000001a')))).toBe(first);
    expect(caught(() => decoder.feed(b('exit')))).toBe(first);
    expect(caught(() => decoder.feed(Buffer.alloc(0)))).toBe(first);
  });
});

// ---------------------------------------------------------------------------------------------
// Replies

describe('legacyReplies', () => {
  const result: UploadResultInfo = { id: 2, savedAs: 'a.txt', bytes: 5, sha256: '0'.repeat(64) };

  it('echoes a message exactly as received', () => {
    const raw = Buffer.from([...b('0000000004'), 0xd1, 0x84, 0xd0, 0xbe, 0xd1, 0x82, 0xd0, 0xbe]);
    const out = legacyReplies.encode({ type: 'message-ack', id: 1, text: 'фото', raw });
    expect(out?.toString('hex')).toBe(raw.toString('hex'));
  });

  it('acknowledges an upload with 0000000003ACK', () => {
    expect(legacyReplies.encode({ type: 'upload-done', result })?.toString('latin1')).toBe('0000000003ACK');
  });

  it('says nothing for what the original format cannot express', () => {
    expect(legacyReplies.encode({ type: 'welcome', info: { version: 0, agent: 'x', session: 's', maxMessage: 1, maxFrame: 1 } })).toBeUndefined();
    expect(legacyReplies.encode({ type: 'upload-accept', id: 1, offset: 0 })).toBeUndefined();
    expect(legacyReplies.encode({ type: 'error', error: { code: 'E_BAD_FRAME', message: 'no' } })).toBeUndefined();
    expect(legacyReplies.encode({ type: 'pong', payload: Buffer.alloc(0) })).toBeUndefined();
    expect(legacyReplies.encode({ type: 'bye' })).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------------
// Client side

describe('legacy client encoding', () => {
  it('encodes a message with a code-point count header', () => {
    expect(encodeLegacyMessage('hello').toString('hex')).toBe(b('0000000005hello').toString('hex'));
    expect(encodeLegacyMessage('фото').toString('hex')).toBe(
      Buffer.from([...b('0000000004'), 0xd1, 0x84, 0xd0, 0xbe, 0xd1, 0x82, 0xd0, 0xbe]).toString('hex'),
    );
    expect(encodeLegacyMessage('😀').toString('hex')).toBe(Buffer.from([...b('0000000001'), 0xf0, 0x9f, 0x98, 0x80]).toString('hex'));
    expect(encodeLegacyMessage('').toString('latin1')).toBe('0000000000');
  });

  it('encodes a file header: 10-digit size and the name right-justified in 20 bytes', () => {
    expect(encodeLegacyFileHeader(5, 'a.txt').toString('latin1')).toBe('0000000005               a.txt');
    expect(encodeLegacyFileHeader(0, 'b').toString('latin1')).toBe('0000000000                   b');
    expect(encodeLegacyFileHeader(1234567890, 'abcdefghijklmnop.jpg').toString('latin1')).toBe('1234567890abcdefghijklmnop.jpg');
    // 'фото.jpg' is 12 bytes: 8 spaces of padding.
    expect(encodeLegacyFileHeader(7, 'фото.jpg').toString('hex')).toBe(b('0000000007        фото.jpg').toString('hex'));
  });

  it('refuses a name of more than 20 bytes', () => {
    expect(() => encodeLegacyFileHeader(1, 'abcdefghijklmnopq.jpg')).toThrow(RangeError);
    expect(() => encodeLegacyFileHeader(1, `${'a'.repeat(19)}ф`)).toThrow(RangeError);
  });

  it('legacyNameFits counts bytes, not characters', () => {
    expect(legacyNameFits('a.txt')).toBe(true);
    expect(legacyNameFits('a'.repeat(20))).toBe(true);
    expect(legacyNameFits('a'.repeat(21))).toBe(false);
    expect(legacyNameFits('ф'.repeat(10))).toBe(true);
    expect(legacyNameFits(`${'a'.repeat(19)}ф`)).toBe(false);
    expect(legacyNameFits('😀'.repeat(5))).toBe(true);
    expect(legacyNameFits('😀'.repeat(5) + 'a')).toBe(false);
  });

  it('exports the command keywords', () => {
    expect(LEGACY_FILE_COMMAND.toString('latin1')).toBe('file');
    expect(LEGACY_EXIT_COMMAND.toString('latin1')).toBe('exit');
  });
});

describe('LegacyClientDecoder', () => {
  function clientTexts(chunks: readonly Buffer[]): string[] {
    const decoder = new LegacyClientDecoder();
    const out: string[] = [];
    for (const chunk of chunks) out.push(...decoder.feed(chunk));
    return out;
  }

  it('parses echoes and ACK however they are split', () => {
    const stream = Buffer.concat([
      b('0000000005hello'),
      Buffer.from([...b('0000000004'), 0xd1, 0x84, 0xd0, 0xbe, 0xd1, 0x82, 0xd0, 0xbe]),
      b('0000000003ACK'),
      b('0000000000'),
      b('0000000001😀'),
    ]);
    for (const { label, chunks } of chunkings(stream)) {
      expect(clientTexts(chunks), label).toEqual(['hello', 'фото', 'ACK', '', '😀']);
    }
  });

  it('parses ACK split at every point', () => {
    for (const { label, chunks } of chunkings(b('0000000003ACK'))) {
      expect(clientTexts(chunks), label).toEqual(['ACK']);
    }
  });

  it('refuses what an original server never sends', () => {
    expectProtocolError(caught(() => new LegacyClientDecoder().feed(b('exit'))), 'E_BAD_FRAME');
    expectProtocolError(caught(() => new LegacyClientDecoder().feed(b('?'))), 'E_BAD_FRAME');
    expectProtocolError(caught(() => new LegacyClientDecoder().feed(Buffer.from([...b('0000000001'), 0xff]))), 'E_BAD_UTF8');
  });
});

// ---------------------------------------------------------------------------------------------
// Properties

/** Any Unicode scalar value (no lone surrogates), biased towards ASCII. */
const scalar = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 0x00, max: 0x7f }) },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0x7ff }) },
  { weight: 1, arbitrary: fc.integer({ min: 0x800, max: 0xd7ff }) },
  { weight: 1, arbitrary: fc.integer({ min: 0xe000, max: 0xffff }) },
  { weight: 1, arbitrary: fc.integer({ min: 0x10000, max: 0x10ffff }) },
).map((cp) => String.fromCodePoint(cp));

const printable = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c));
/** 1..20 ASCII bytes, no space at either end (the decoder strips those), spaces allowed inside. */
const legacyName = fc
  .tuple(printable, fc.string({ unit: fc.oneof(printable, fc.constant(' ')), maxLength: 18 }), fc.option(printable, { nil: '' }))
  .map(([first, middle, last]) => (last === '' ? first : first + middle + last));

type Command = { kind: 'message'; text: string } | { kind: 'file'; name: string; body: Uint8Array } | { kind: 'exit' };

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 3, arbitrary: fc.string({ unit: scalar, maxLength: 40 }).map((text): Command => ({ kind: 'message', text })) },
  {
    weight: 2,
    arbitrary: fc.record({ name: legacyName, body: fc.uint8Array({ maxLength: 64 }) }).map(({ name, body }): Command => ({ kind: 'file', name, body })),
  },
  { weight: 1, arbitrary: fc.constant<Command>({ kind: 'exit' }) },
);

function pad10(n: number): string {
  return String(n).padStart(10, '0');
}

/** The wire bytes and expected tokens, built by hand from the spec. */
function encodeByHand(commands: readonly Command[]): { stream: Buffer; tokens: ServerToken[] } {
  const parts: Buffer[] = [];
  const tokens: ServerToken[] = [HELLO];
  let id = 0;
  for (const c of commands) {
    if (c.kind === 'message') {
      const header = pad10(Array.from(c.text).length);
      parts.push(b(header), b(c.text));
      tokens.push(...message(++id, header, c.text, Array.from(c.text).length));
    } else if (c.kind === 'file') {
      parts.push(b('file'), b(pad10(c.body.length)), b(c.name.padStart(20, ' ')), Buffer.from(c.body));
      tokens.push(...file(++id, c.name, Buffer.from(c.body)));
    } else {
      parts.push(b('exit'));
      tokens.push({ type: 'bye' });
    }
  }
  // No command, no hello: the hello comes just before the first readable command.
  return { stream: Buffer.concat(parts), tokens: commands.length === 0 ? [] : tokens };
}

describe('properties', () => {
  it('decodes random command sequences, split anywhere, to the expected tokens', () => {
    fc.assert(
      fc.property(fc.array(command, { maxLength: 8 }), fc.array(fc.nat(), { maxLength: 12 }), (commands, cuts) => {
        const { stream, tokens } = encodeByHand(commands);
        const decoder = new LegacyServerDecoder(LIMITS);
        const got = feedAll(decoder, splitAt(stream, cuts.map((c) => c % (stream.length + 1))));
        expect(normalise(got)).toEqual(normalise(tokens));
        expect(decoder.idle).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('random garbage only ever decodes or throws a ProtocolError with a known code', () => {
    const fragment = fc.oneof(
      fc.uint8Array({ maxLength: 16 }).map((a) => Buffer.from(a)),
      fc.constantFrom('file', 'exit', 'fil', 'exi', '0000000001', '0000000004', '000000000', '9999999999', '0000000020', ' '.repeat(20), 'ф', '😀').map(b),
      fc.constantFrom([0xd1], [0xf0, 0x9f], [0x80], [0xff], [0xed, 0xa0, 0x80]).map((a) => Buffer.from(a)),
    );
    const limits = fc.record({ maxMessage: fc.integer({ min: 0, max: 64 }), maxFrame: fc.constant(0), maxFile: fc.option(fc.integer({ min: 0, max: 64 }), { nil: undefined }) });
    fc.assert(
      fc.property(fc.array(fragment, { maxLength: 12 }), fc.array(fc.nat(), { maxLength: 12 }), limits, (fragments, cuts, lim) => {
        const stream = Buffer.concat(fragments);
        const decoder = new LegacyServerDecoder(lim);
        let failure: unknown;
        for (const chunk of splitAt(stream, cuts.map((c) => c % (stream.length + 1)))) {
          try {
            for (const token of decoder.feed(chunk)) expect(typeof token.type).toBe('string');
          } catch (err) {
            failure = err;
            break;
          }
        }
        if (failure !== undefined) {
          expect(failure).toBeInstanceOf(ProtocolError);
          expect(Object.keys(ErrorCodes)).toContain((failure as ProtocolError).code);
          expect(caught(() => decoder.feed(Buffer.alloc(0)))).toBe(failure);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('message limit in bytes', () => {
  it('refuses a message whose characters fit the header check but whose bytes exceed the limit', () => {
    const decoder = new LegacyServerDecoder({ maxMessage: 100, maxFrame: 0 });
    const text = Buffer.from('😀'.repeat(100), 'utf8');
    expect(() => decoder.feed(Buffer.concat([Buffer.from('0000000100'), text]))).toThrowError(expect.objectContaining({ code: 'E_MESSAGE_TOO_LARGE' }));
  });
});
