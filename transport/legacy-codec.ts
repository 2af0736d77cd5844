import { ProtocolError } from './errors.js';
import type { Limits, ServerToken } from './frames.js';
import { encodeEach, type ReplyEncoder, type SessionReply } from './replies.js';

/**
 * The original Python tool's format (see docs/protocol.md, "The original format"):
 *   message: 10 ASCII digits giving the length in Unicode code points, then the text as UTF-8
 *   file:    `file`, 10 digits giving the size in bytes, 20 bytes of name padded on the left with spaces, the bytes
 *   goodbye: `exit`
 * It has no handshake, no ids and no hashes; this decoder turns it into the same tokens as the
 * native one, so the same session machine serves both.
 */

const HEADER_DIGITS = 10;
const NAME_BYTES = 20;
const FILE = Buffer.from('file');
const EXIT = Buffer.from('exit');
const ACK = Buffer.from('0000000003ACK');
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

type Phase = 'command' | 'keyword' | 'length' | 'text' | 'size' | 'name' | 'data';

export interface LegacyLimits extends Limits {
  /** Largest file, checked when the size is read; the store checks free space on top. */
  maxFile?: number;
}

/** Bytes a UTF-8 sequence starting with this lead byte has, or 0 for a byte that cannot lead one. */
function sequenceLength(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

function isDigits(bytes: Buffer): boolean {
  for (const b of bytes) if (b < 0x30 || b > 0x39) return false;
  return true;
}

/** Decodes what an original client sends. Emits `hello` before its first token, since the format has none of its own. */
export class LegacyServerDecoder {
  private phase: Phase = 'command';
  private greeted = false;
  private readonly field = Buffer.alloc(NAME_BYTES);
  private fieldFill = 0;
  private keyword: Buffer = FILE;
  /** Code points still to read, and continuation bytes still owed by the current one. */
  private codePoints = 0;
  private continuation = 0;
  private textBytes = 0;
  private parts: Buffer[] = [];
  private header = Buffer.alloc(0);
  private remaining = 0;
  private size = 0;
  private sequence = 0;
  private failed: ProtocolError | undefined;

  constructor(private readonly limits: LegacyLimits) {}

  get idle(): boolean {
    return this.phase === 'command';
  }

  feed(chunk: Buffer): ServerToken[] {
    if (this.failed) throw this.failed;
    const out: ServerToken[] = [];
    try {
      this.consume(chunk, out);
    } catch (err) {
      if (err instanceof ProtocolError) this.failed = err;
      throw err;
    }
    // The format has no greeting: a client counts as having said hello once its first command
    // is readable, so one that trickles a byte or two and stops still meets the handshake timeout.
    if (!this.greeted && out.length > 0) {
      this.greeted = true;
      out.unshift({ type: 'hello', info: { version: 0, agent: 'original' } });
    }
    return out;
  }

  private consume(chunk: Buffer, out: ServerToken[]): void {
    let offset = 0;
    while (offset < chunk.length) {
      switch (this.phase) {
        case 'command': {
          const first = chunk[offset]!;
          if (first >= 0x30 && first <= 0x39) this.phase = 'length';
          else if (first === FILE[0]) this.startKeyword(FILE);
          else if (first === EXIT[0]) this.startKeyword(EXIT);
          else throw new ProtocolError('E_BAD_FRAME', `A command began with byte 0x${first.toString(16).padStart(2, '0')}, which is neither a digit, "file" nor "exit".`);
          this.fieldFill = 0;
          break;
        }
        case 'keyword': {
          offset = this.fill(chunk, offset, this.keyword.length);
          if (this.fieldFill < this.keyword.length) return;
          if (!this.field.subarray(0, this.keyword.length).equals(this.keyword)) {
            throw new ProtocolError('E_BAD_FRAME', `Expected "${this.keyword.toString()}" but got ${JSON.stringify(this.field.subarray(0, this.keyword.length).toString('latin1'))}.`);
          }
          this.fieldFill = 0;
          if (this.keyword === EXIT) {
            out.push({ type: 'bye' });
            this.phase = 'command';
          } else {
            this.phase = 'size';
          }
          break;
        }
        case 'length': {
          offset = this.fill(chunk, offset, HEADER_DIGITS);
          if (this.fieldFill < HEADER_DIGITS) return;
          const digits = this.field.subarray(0, HEADER_DIGITS);
          if (!isDigits(digits)) throw new ProtocolError('E_BAD_FRAME', `A message header must be ${HEADER_DIGITS} digits, got ${JSON.stringify(digits.toString('latin1'))}.`);
          const length = Number(digits.toString('latin1'));
          // Every code point is at least one byte, so this bounds the buffer before a byte of text is read.
          if (length > this.limits.maxMessage) {
            throw new ProtocolError('E_MESSAGE_TOO_LARGE', `A message of ${length} characters cannot fit the limit of ${this.limits.maxMessage} bytes.`);
          }
          this.header = Buffer.from(digits);
          this.fieldFill = 0;
          this.codePoints = length;
          this.continuation = 0;
          this.textBytes = 0;
          this.parts = [];
          out.push({ type: 'message-header', length });
          if (length === 0) this.endMessage(out);
          else this.phase = 'text';
          break;
        }
        case 'text': {
          const start = offset;
          while (offset < chunk.length && (this.codePoints > 0 || this.continuation > 0)) {
            const byte = chunk[offset++]!;
            if (this.continuation > 0) {
              if ((byte & 0xc0) !== 0x80) throw new ProtocolError('E_BAD_UTF8', 'A message is not valid UTF-8.');
              this.continuation--;
              continue;
            }
            const length = sequenceLength(byte);
            if (length === 0) throw new ProtocolError('E_BAD_UTF8', 'A message is not valid UTF-8.');
            this.codePoints--;
            this.continuation = length - 1;
          }
          this.parts.push(chunk.subarray(start, offset));
          this.textBytes += offset - start;
          // The header counts characters; the limit is in bytes, like the native format's.
          if (this.textBytes > this.limits.maxMessage) {
            throw new ProtocolError('E_MESSAGE_TOO_LARGE', `A message's text exceeds the limit of ${this.limits.maxMessage} bytes.`);
          }
          if (this.codePoints === 0 && this.continuation === 0) this.endMessage(out);
          break;
        }
        case 'size': {
          offset = this.fill(chunk, offset, HEADER_DIGITS);
          if (this.fieldFill < HEADER_DIGITS) return;
          const digits = this.field.subarray(0, HEADER_DIGITS);
          if (!isDigits(digits)) throw new ProtocolError('E_BAD_FRAME', `A file size must be ${HEADER_DIGITS} digits, got ${JSON.stringify(digits.toString('latin1'))}.`);
          this.size = Number(digits.toString('latin1'));
          if (this.limits.maxFile !== undefined && this.size > this.limits.maxFile) {
            throw new ProtocolError('E_FILE_TOO_LARGE', `A file of ${this.size} bytes exceeds the limit of ${this.limits.maxFile} bytes.`);
          }
          this.fieldFill = 0;
          this.phase = 'name';
          break;
        }
        case 'name': {
          offset = this.fill(chunk, offset, NAME_BYTES);
          if (this.fieldFill < NAME_BYTES) return;
          const name = this.decodeName(this.field);
          this.fieldFill = 0;
          this.sequence++;
          out.push({ type: 'upload-offer', offer: { id: this.sequence, name, size: this.size } });
          this.remaining = this.size;
          if (this.size === 0) this.endFile(out);
          else this.phase = 'data';
          break;
        }
        case 'data': {
          const take = Math.min(this.remaining, chunk.length - offset);
          out.push({ type: 'data', chunk: offset === 0 && take === chunk.length ? chunk : chunk.subarray(offset, offset + take) });
          offset += take;
          this.remaining -= take;
          if (this.remaining === 0) this.endFile(out);
          break;
        }
      }
    }
  }

  private startKeyword(keyword: Buffer): void {
    this.keyword = keyword;
    this.phase = 'keyword';
  }

  private fill(chunk: Buffer, offset: number, want: number): number {
    const take = Math.min(want - this.fieldFill, chunk.length - offset);
    chunk.copy(this.field, this.fieldFill, offset, offset + take);
    this.fieldFill += take;
    return offset + take;
  }

  private decodeName(field: Buffer): string {
    let text: string;
    try {
      text = utf8.decode(field);
    } catch {
      // A multi-byte character cut at byte 20 means the name did not fit and spilled into the data.
      throw new ProtocolError('E_BAD_NAME', 'A file name does not fit the original format\u2019s 20 bytes; the client must use a shorter name.');
    }
    const name = text.replace(/^ +/, '').replace(/ +$/, '');
    if (name.length === 0) throw new ProtocolError('E_BAD_NAME', 'A file arrived without a name.');
    return name;
  }

  private endMessage(out: ServerToken[]): void {
    const body = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts);
    this.parts = [];
    this.phase = 'command';
    let text: string;
    try {
      text = utf8.decode(body);
    } catch {
      throw new ProtocolError('E_BAD_UTF8', 'A message is not valid UTF-8.');
    }
    this.sequence++;
    out.push({ type: 'message', id: this.sequence, text, raw: Buffer.concat([this.header, body]) });
  }

  private endFile(out: ServerToken[]): void {
    this.phase = 'command';
    out.push({ type: 'upload-end', id: this.sequence });
  }
}

/** What an original client understands: the echo of its message, and ACK after a file. Nothing else. */
export const legacyReplies: ReplyEncoder = {
  encode(reply: SessionReply): Buffer | undefined {
    switch (reply.type) {
      case 'message-ack':
        return reply.raw;
      case 'upload-done':
        return ACK;
      default:
        return undefined;
    }
  },
  encodeAll: (replies) => encodeEach(legacyReplies, replies),
};

// ---------------------------------------------------------------------------------------------
// The client side, for talking to an original server.

/** `%010d` of the text's length in code points, then the text as UTF-8. */
export function encodeLegacyMessage(text: string): Buffer {
  const body = Buffer.from(text, 'utf8');
  const header = Buffer.from(String([...text].length).padStart(HEADER_DIGITS, '0'), 'latin1');
  return Buffer.concat([header, body]);
}

export function legacyNameFits(name: string): boolean {
  return Buffer.byteLength(name, 'utf8') <= NAME_BYTES;
}

/** The size and name that follow `file` (which must be written on its own first). */
export function encodeLegacyFileHeader(size: number, name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  if (nameBytes.length > NAME_BYTES) throw new RangeError('name longer than 20 bytes');
  const out = Buffer.alloc(HEADER_DIGITS + NAME_BYTES, 0x20);
  out.write(String(size).padStart(HEADER_DIGITS, '0'), 0, 'latin1');
  nameBytes.copy(out, HEADER_DIGITS + NAME_BYTES - nameBytes.length);
  return out;
}

export const LEGACY_FILE_COMMAND = FILE;
export const LEGACY_EXIT_COMMAND = EXIT;

/** Reads an original server's replies: each is a message (an echo, or `ACK` after a file). */
export class LegacyClientDecoder {
  // Echoes of what we sent; anything bigger than this is not an answer to us.
  private readonly server = new LegacyServerDecoder({ maxMessage: 64 * 1024 * 1024, maxFrame: 0 });

  /** Texts of complete replies in this chunk. */
  feed(chunk: Buffer): string[] {
    const texts: string[] = [];
    for (const token of this.server.feed(chunk)) {
      if (token.type === 'message') texts.push(token.text);
      else if (token.type !== 'hello' && token.type !== 'message-header') {
        throw new ProtocolError('E_BAD_FRAME', 'The server sent something other than a message.');
      }
    }
    return texts;
  }
}
